//! JUnit XML: one testcase per scenario, failures with their full message, skips with their reason;
//! the run's properties (stack, profile, Envoy, filter, run id), timestamp and host on the suite, and
//! each scenario's phase timings as testcase properties.

use super::RunInfo;
use crate::outcome::{Outcome, Verdict};
use anyhow::{Context, Result};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use std::path::Path;

/// Renders the outcomes of the run `info` describes as a JUnit report.
pub fn render_junit(info: &RunInfo, outcomes: &[Outcome]) -> Result<String> {
    let stack = &info.stack;
    let mut suite = TestSuite::new(format!("waf-e2e.{stack}"));
    suite.set_timestamp(info.started_at);
    suite.set_time(info.duration);
    if let Some(host) = &info.hostname {
        suite.extra.insert("hostname".into(), host.as_str().into());
    }
    suite.add_properties(info.properties().into_iter().map(|(k, v)| Property::new(k, v)));
    suite.add_properties(info.policy.iter().map(|v| Property::new(format!("policy.{}", v.id), v.property())));
    for o in outcomes {
        let status = match &o.verdict {
            Verdict::Passed => TestCaseStatus::success(),
            Verdict::Failed(failures) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(failures.first().and_then(|f| f.lines().next()).unwrap_or("failed").to_string());
                s.set_description(failures.join("\n\n"));
                s
            }
            Verdict::Broken(why) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(why.lines().next().unwrap_or("infrastructure failed").to_string());
                s.set_description(why.clone());
                s
            }
            Verdict::Skipped(why) | Verdict::NotRun(why) => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(why.clone());
                s
            }
        };
        let mut case = TestCase::new(o.name.clone(), status);
        case.set_classname(format!("waf-e2e.{stack}"));
        case.set_time(o.duration);
        case.add_properties(phase_properties(o));
        // A pass with unchecked expectations is not a full pass: CI readers see what was left out.
        let mut out: Vec<String> = o.not_checked.iter().map(|n| format!("NOT CHECKED with this filter (not counted as passed): {n}")).collect();
        out.extend(o.notes.iter().cloned());
        out.extend(o.diagnostics.iter().map(|dir| format!("diagnostics: {}", dir.display())));
        if !out.is_empty() {
            case.set_system_out(out.join("\n"));
        }
        suite.add_test_case(case);
    }
    let mut report = Report::new("waf-e2e");
    report.set_timestamp(info.started_at);
    report.add_test_suite(suite);
    report.to_string().context("serialise JUnit report")
}

/// Seconds spent in each phase (`phase.install` ...), and the audit latency when it was measured.
fn phase_properties(o: &Outcome) -> Vec<Property> {
    let t = &o.timings;
    let phases = [("install", t.install), ("gate", t.gate), ("baseline", t.baseline), ("traffic", t.traffic), ("settle", t.settle), ("confirm", t.confirm), ("audit", t.audit)];
    let mut out: Vec<Property> = phases.iter().map(|(name, d)| Property::new(format!("phase.{name}"), format!("{:.3}", d.as_secs_f64()))).collect();
    if let Some(d) = o.timings.audit_latency {
        out.push(Property::new("audit_latency", format!("{:.3}", d.as_secs_f64())));
    }
    out
}

/// Writes the JUnit report to `path`.
pub fn write_junit(path: &Path, info: &RunInfo, outcomes: &[Outcome]) -> Result<()> {
    let xml = render_junit(info, outcomes)?;
    super::write_report_file(path, &xml, "JUnit report")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::outcome::Timings;
    use std::time::Duration;

    pub(crate) fn info() -> RunInfo {
        RunInfo {
            run_id: "0badcafe".into(),
            stack: "local".into(),
            profile: Some("oss".into()),
            envoy_version: Some("1.37.0".into()),
            filter: None,
            hostname: Some("ci-7".into()),
            started_at: chrono::DateTime::parse_from_rfc3339("2026-12-01T20:30:00+00:00").unwrap(),
            duration: Duration::from_secs(12),
            interrupted: Some("SIGINT".into()),
            policy: Vec::new(),
        }
    }

    fn outcome(name: &str, verdict: Verdict) -> Outcome {
        let timings = Timings { install: Duration::from_millis(1500), settle: Duration::from_millis(250), ..Timings::default() };
        Outcome { name: name.into(), verdict, duration: Duration::from_secs(2), timings: Timings { audit_latency: Some(Duration::from_millis(40)), ..timings }, diagnostics: None, not_checked: Vec::new(), notes: Vec::new() }
    }

    #[test]
    fn the_suite_carries_timestamp_host_and_run_properties_and_each_case_its_phase_timings() {
        let xml = render_junit(&info(), &[outcome("a", Verdict::Passed)]).unwrap();
        assert!(xml.contains("timestamp=\"2026-12-01T20:30:00"), "{xml}");
        assert!(xml.contains("hostname=\"ci-7\""), "{xml}");
        for p in ["name=\"run_id\" value=\"0badcafe\"", "name=\"stack\" value=\"local\"", "name=\"profile\" value=\"oss\"", "name=\"envoy_version\" value=\"1.37.0\"", "name=\"interrupted\" value=\"SIGINT\""] {
            assert!(xml.contains(p), "{p} missing: {xml}");
        }
        assert!(!xml.contains("name=\"filter\""), "an unknown filter is left out: {xml}");
        assert!(xml.contains("name=\"phase.install\" value=\"1.500\"") && xml.contains("name=\"phase.settle\" value=\"0.250\""), "{xml}");
        assert!(xml.contains("name=\"audit_latency\" value=\"0.040\""), "{xml}");
    }

    /// Two flow verdicts: one that holds, one that failed.
    pub(crate) fn policy() -> Vec<crate::calico::flows::FlowVerdict> {
        use crate::calico::flows::{Expectation, FlowVerdict};
        let ok = FlowVerdict { id: "proxy_to_backend".into(), flow: "p -> b:8080 (TCP)".into(), expected: Expectation::Unchanged,
            with_render: "Allow (ingress decided by the namespace profile)".into(), without_render: "Allow".into(), ok: true, blame: None, problem: None, undecided: None };
        let failed = FlowVerdict { id: "prometheus_to_proxy_metrics".into(), ok: false, expected: Expectation::Allow, with_render: "Deny (...)".into(),
            blame: Some("GlobalNetworkPolicy allow-tigera.x".into()), problem: Some("p -> x:19001 (TCP) must be allowed by the render".into()), ..ok.clone() };
        vec![ok, failed]
    }

    #[test]
    fn each_flow_verdict_is_a_suite_property_saying_ok_or_failed() {
        let xml = render_junit(&RunInfo { policy: policy(), ..info() }, &[outcome("a", Verdict::Passed)]).unwrap();
        assert!(xml.contains("name=\"policy.proxy_to_backend\" value=\"ok: Allow (ingress decided by the namespace profile)\""), "{xml}");
        assert!(xml.contains("name=\"policy.prometheus_to_proxy_metrics\" value=\"FAILED: p -&gt; x:19001 (TCP) must be allowed by the render\""), "{xml}");
    }

    #[test]
    fn a_pass_with_unchecked_expectations_says_so_with_the_audit_wait_time() {
        let o = Outcome { not_checked: vec!["audit rule ids: none for this filter".into()], notes: vec!["flushed".into()], ..outcome("a", Verdict::Passed) };
        let o = Outcome { timings: Timings { audit: Duration::from_millis(10_250), ..o.timings.clone() }, ..o };
        let xml = render_junit(&info(), &[o]).unwrap();
        assert!(xml.contains("NOT CHECKED with this filter (not counted as passed): audit rule ids: none for this filter"), "{xml}");
        assert!(xml.contains("name=\"phase.audit\" value=\"10.250\""), "{xml}");
        let plain = render_junit(&info(), &[outcome("a", Verdict::Passed)]).unwrap();
        assert!(!plain.contains("<system-out"), "{plain}");
    }

    #[test]
    fn scenarios_cut_short_are_errors_and_fail_fast_ones_are_skipped() {
        let outcomes = [
            outcome("cut", Verdict::Broken(format!("{}: interrupted by SIGINT", crate::outcome::NOT_RUN))),
            outcome("later", Verdict::NotRun("--fail-fast: x failed before this scenario started".into())),
        ];
        let xml = render_junit(&info(), &outcomes).unwrap();
        assert!(xml.contains("<error message=\"not run to the end: interrupted by SIGINT\""), "{xml}");
        assert!(xml.contains("<skipped message=\"--fail-fast: x failed"), "{xml}");
    }
}
