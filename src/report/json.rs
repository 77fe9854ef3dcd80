//! The machine-readable report (`run --report json FILE`): the run's facts and, per scenario, its
//! verdict, failures, phase timings, audit latency and why it did not run, if it did not.

use super::RunInfo;
use crate::outcome::{Outcome, Verdict, NOT_RUN};
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// The version of this report's shape; bumped when a field changes meaning or goes away.
pub const FORMAT: &str = "waf-e2e.report/v1";

/// The whole report.
#[derive(Debug, Serialize)]
pub struct JsonReport {
    /// [`FORMAT`].
    pub format: &'static str,
    /// The run id (the prefix of every correlation id).
    pub run_id: String,
    /// The stack's name.
    pub stack: String,
    /// The stack profile, when the stack has one.
    pub profile: Option<String>,
    /// The Envoy version that served the traffic, when known.
    pub envoy_version: Option<String>,
    /// Which WAF filter ran, when known.
    pub filter: Option<String>,
    /// The machine the harness ran on.
    pub hostname: Option<String>,
    /// When the run began (RFC 3339).
    pub started_at: String,
    /// Wall time of the run, in milliseconds.
    pub duration_ms: u64,
    /// The signal that interrupted the run, if one did.
    pub interrupted: Option<String>,
    /// The offline Calico verdicts of the rendered GlobalNetworkPolicy's flows (added in v1; empty
    /// when the stack applies no policy).
    pub policy: Vec<crate::calico::flows::FlowVerdict>,
    /// How many scenarios ended each way.
    pub totals: Totals,
    /// One entry per scenario, in the scenarios' order.
    pub scenarios: Vec<ScenarioReport>,
}

/// Counts per verdict.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    /// Every expectation held.
    pub passed: usize,
    /// At least one expectation failed.
    pub failed: usize,
    /// Not run on this stack (a capability it lacks).
    pub skipped: usize,
    /// The infrastructure failed under it, or the run was interrupted.
    pub errors: usize,
    /// Never started (`--fail-fast`).
    pub not_run: usize,
}

/// One scenario's result.
#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub name: String,
    /// `passed`, `failed`, `skipped`, `error` or `not_run`.
    pub verdict: &'static str,
    /// Each failed expectation, expected vs observed (empty unless `failed`).
    pub failures: Vec<String>,
    /// Expectations the filter in use has no value for: not checked, and not counted as passed.
    pub not_checked: Vec<String>,
    /// What else the run observed (the filter checked, backend reach, how the audit wait ended).
    pub notes: Vec<String>,
    /// What broke (only for `error`).
    pub error: Option<String>,
    /// Why the scenario did not run, or not to the end (`skipped`, `not_run`, and `error` when cut short).
    pub not_run_reason: Option<String>,
    /// Wall time of the scenario, in milliseconds.
    pub duration_ms: u64,
    /// Where the time went, in milliseconds.
    pub timings: TimingsReport,
    /// From the last response to the last audit record, in milliseconds, when measured.
    pub audit_latency_ms: Option<u64>,
    /// The diagnostics bundle, when one was written.
    pub diagnostics: Option<String>,
}

/// The runner's phase timings, in milliseconds.
#[derive(Debug, Serialize)]
pub struct TimingsReport {
    /// Installing policy, route and backend.
    pub install_ms: u64,
    /// Waiting at the gateway's gate (an exclusive scenario's window, or the others' requests).
    pub gate_ms: u64,
    /// Waiting for the target and the baseline scrape.
    pub baseline_ms: u64,
    /// Sending the traffic.
    pub traffic_ms: u64,
    /// From the last response to the first scrape after it.
    pub settle_ms: u64,
    /// The confirming scrape.
    pub confirm_ms: u64,
    /// Waiting for the audit records and for the log to be flushed after the traffic.
    pub audit_ms: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ScenarioReport {
    /// The report entry of one outcome.
    pub fn of(o: &Outcome) -> ScenarioReport {
        let (verdict, failures, error, not_run_reason) = match &o.verdict {
            Verdict::Passed => ("passed", Vec::new(), None, None),
            Verdict::Failed(f) => ("failed", f.clone(), None, None),
            Verdict::Skipped(why) => ("skipped", Vec::new(), None, Some(why.clone())),
            Verdict::NotRun(why) => ("not_run", Vec::new(), None, Some(why.clone())),
            Verdict::Broken(why) => {
                let cut_short = why.strip_prefix(NOT_RUN).map(|rest| rest.trim_start_matches(':').trim().to_string());
                ("error", Vec::new(), Some(why.clone()), cut_short)
            }
        };
        let t = &o.timings;
        ScenarioReport {
            name: o.name.clone(),
            verdict,
            failures,
            not_checked: o.not_checked.clone(),
            notes: o.notes.clone(),
            error,
            not_run_reason,
            duration_ms: ms(o.duration),
            timings: TimingsReport { install_ms: ms(t.install), gate_ms: ms(t.gate), baseline_ms: ms(t.baseline), traffic_ms: ms(t.traffic), settle_ms: ms(t.settle), confirm_ms: ms(t.confirm), audit_ms: ms(t.audit) },
            audit_latency_ms: o.timings.audit_latency.map(ms),
            diagnostics: o.diagnostics.as_ref().map(|d| d.display().to_string()),
        }
    }
}

/// The report of the run `info` describes.
pub fn build_json(info: &RunInfo, outcomes: &[Outcome]) -> JsonReport {
    let scenarios: Vec<ScenarioReport> = outcomes.iter().map(ScenarioReport::of).collect();
    let mut totals = Totals::default();
    for s in &scenarios {
        *match s.verdict {
            "passed" => &mut totals.passed,
            "failed" => &mut totals.failed,
            "skipped" => &mut totals.skipped,
            "not_run" => &mut totals.not_run,
            _ => &mut totals.errors,
        } += 1;
    }
    JsonReport {
        format: FORMAT,
        run_id: info.run_id.clone(),
        stack: info.stack.clone(),
        profile: info.profile.clone(),
        envoy_version: info.envoy_version.clone(),
        filter: info.filter.clone(),
        hostname: info.hostname.clone(),
        started_at: info.started_at.to_rfc3339(),
        duration_ms: ms(info.duration),
        interrupted: info.interrupted.clone(),
        policy: info.policy.clone(),
        totals,
        scenarios,
    }
}

/// Writes the JSON report to `path`.
pub fn write_json(path: &Path, info: &RunInfo, outcomes: &[Outcome]) -> Result<()> {
    let text = serde_json::to_string_pretty(&build_json(info, outcomes)).context("serialise the JSON report")?;
    super::write_report_file(path, &(text + "\n"), "JSON report")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::junit::tests::info;
    use crate::outcome::Timings;

    fn outcome(name: &str, verdict: Verdict) -> Outcome {
        let timings = Timings { traffic: Duration::from_millis(120), ..Timings::default() };
        Outcome { name: name.into(), verdict, duration: Duration::from_millis(2500), timings, diagnostics: None, not_checked: Vec::new(), notes: Vec::new() }
    }

    #[test]
    fn each_verdict_has_its_name_reason_and_timings() {
        let outcomes = [
            outcome("ok", Verdict::Passed),
            outcome("bad", Verdict::Failed(vec!["decision series #1: expected +3, observed +2".into()])),
            outcome("cut", Verdict::Broken(format!("{NOT_RUN}: interrupted by SIGTERM"))),
            outcome("later", Verdict::NotRun("--fail-fast: bad failed before this scenario started".into())),
            outcome("lacking", Verdict::Skipped("the local stack lacks Blocking".into())),
        ];
        let v = serde_json::to_value(build_json(&info(), &outcomes)).unwrap();
        assert_eq!(v["format"], FORMAT);
        assert_eq!(v["run_id"], "0badcafe");
        assert_eq!(v["filter"], serde_json::Value::Null);
        assert_eq!(v["started_at"], "2026-12-01T20:30:00+00:00");
        assert_eq!(v["totals"], serde_json::json!({"passed": 1, "failed": 1, "skipped": 1, "errors": 1, "not_run": 1}));
        let s = &v["scenarios"];
        assert_eq!(s[0]["verdict"], "passed");
        assert_eq!(s[0]["timings"]["traffic_ms"], 120);
        assert_eq!(s[0]["duration_ms"], 2500);
        assert_eq!(s[1]["failures"][0], "decision series #1: expected +3, observed +2");
        assert_eq!(s[2]["verdict"], "error");
        assert_eq!(s[2]["not_run_reason"], "interrupted by SIGTERM");
        assert_eq!(s[3]["verdict"], "not_run");
        assert_eq!(s[4]["not_run_reason"], "the local stack lacks Blocking");
        assert_eq!(s[0]["audit_latency_ms"], serde_json::Value::Null);
    }

    #[test]
    fn a_pass_reports_what_was_not_checked_the_notes_and_the_audit_wait() {
        let timings = Timings { audit: Duration::from_millis(10_400), audit_latency: Some(Duration::from_millis(1300)), ..Timings::default() };
        let o = Outcome { timings, not_checked: vec!["decision series #1: no rule_id for this filter".into()], notes: vec!["audit log flushed after the traffic".into()], ..outcome("ok", Verdict::Passed) };
        let v = serde_json::to_value(build_json(&info(), &[o])).unwrap();
        let s = &v["scenarios"][0];
        assert_eq!(s["not_checked"][0], "decision series #1: no rule_id for this filter");
        assert_eq!(s["notes"][0], "audit log flushed after the traffic");
        assert_eq!(s["timings"]["audit_ms"], 10_400);
        assert_eq!(s["audit_latency_ms"], 1300);
        let plain = serde_json::to_value(build_json(&info(), &[outcome("ok", Verdict::Passed)])).unwrap();
        assert_eq!(plain["scenarios"][0]["not_checked"], serde_json::json!([]));
    }

    #[test]
    fn the_flow_verdicts_are_in_the_report_with_blame_and_problem_when_failed() {
        let info = RunInfo { policy: crate::report::junit::tests::policy(), ..info() };
        let v = serde_json::to_value(build_json(&info, &[outcome("x", Verdict::Passed)])).unwrap();
        assert_eq!(v["policy"][0]["id"], "proxy_to_backend");
        assert_eq!((&v["policy"][0]["ok"], &v["policy"][0]["expected"], &v["policy"][0]["blame"]), (&serde_json::json!(true), &serde_json::json!("unchanged"), &serde_json::Value::Null));
        assert_eq!((&v["policy"][1]["ok"], &v["policy"][1]["blame"]), (&serde_json::json!(false), &serde_json::json!("GlobalNetworkPolicy allow-tigera.x")));
    }

    #[test]
    fn an_error_that_was_not_a_cut_short_has_no_not_run_reason() {
        let v = serde_json::to_value(build_json(&info(), &[outcome("x", Verdict::Broken("Prometheus exited".into()))])).unwrap();
        assert_eq!(v["scenarios"][0]["error"], "Prometheus exited");
        assert_eq!(v["scenarios"][0]["not_run_reason"], serde_json::Value::Null);
    }
}
