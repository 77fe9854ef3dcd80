//! The corpus run's reports: the summary on stdout (per rule family, per mode, overrides, failures),
//! JUnit with one test case per FTW test, and the JSON report.

use super::verdict::TestResult;
use super::{Class, CorpusRun, TestOutcome};
use anyhow::{Context, Result};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// Per rule family: tests, passed, overridden, failed, ... (the summary's rows).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FamilyRow {
    /// Tests.
    pub tests: usize,
    /// Passed in every mode.
    pub passed: usize,
    /// Covered by an override (still differing).
    pub overridden: usize,
    /// Overridden but passing.
    pub override_passes: usize,
    /// Answered by Envoy, not overridden.
    pub envoy: usize,
    /// Failed.
    pub failed: usize,
    /// Disabled by their file.
    pub disabled: usize,
    /// Decisions counted (records with a decision, over the modes).
    pub decisions: usize,
    /// Audit records matched to the family's requests.
    pub records: usize,
}

/// The rows by family, in family order.
pub fn families(tests: &[TestOutcome]) -> BTreeMap<String, FamilyRow> {
    let mut rows: BTreeMap<String, FamilyRow> = BTreeMap::new();
    for t in tests {
        let row = rows.entry(t.family.clone()).or_default();
        row.tests += 1;
        row.decisions += t.decisions;
        row.records += t.records;
        match t.class() {
            Class::Passed => row.passed += 1,
            Class::Overridden => row.overridden += 1,
            Class::OverriddenButPassed => row.override_passes += 1,
            Class::AnsweredByEnvoy => row.envoy += 1,
            Class::Failed => row.failed += 1,
            Class::Disabled => row.disabled += 1,
        }
    }
    rows
}

/// The summary printed after a run.
pub fn summary(run: &CorpusRun) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "CRS corpus run {}: {} test(s)", run.run_id, run.tests.len());
    let _ = writeln!(out, "{:<7} {:>6} {:>7} {:>10} {:>9} {:>6} {:>7} {:>9} {:>10} {:>8}", "family", "tests", "passed", "overridden", "ovr-pass", "envoy", "failed", "disabled", "decisions", "records");
    let rows = families(&run.tests);
    let mut total = FamilyRow::default();
    for (family, r) in &rows {
        let _ = writeln!(out, "{family:<7} {:>6} {:>7} {:>10} {:>9} {:>6} {:>7} {:>9} {:>10} {:>8}", r.tests, r.passed, r.overridden, r.override_passes, r.envoy, r.failed, r.disabled, r.decisions, r.records);
        total = FamilyRow {
            tests: total.tests + r.tests, passed: total.passed + r.passed, overridden: total.overridden + r.overridden,
            override_passes: total.override_passes + r.override_passes, envoy: total.envoy + r.envoy, failed: total.failed + r.failed,
            disabled: total.disabled + r.disabled, decisions: total.decisions + r.decisions, records: total.records + r.records,
        };
    }
    let r = &total;
    let _ = writeln!(out, "{:<7} {:>6} {:>7} {:>10} {:>9} {:>6} {:>7} {:>9} {:>10} {:>8}", "total", r.tests, r.passed, r.overridden, r.override_passes, r.envoy, r.failed, r.disabled, r.decisions, r.records);
    for m in &run.modes {
        let _ = writeln!(out, "mode {}: {} request(s), {} reached the WAF filter, {} answered by Envoy, {} decision(s); traffic {:.1}s ({:.0} requests/s), mode {:.1}s; audit log read after: {}; counters {}",
            m.mode.as_str(), m.requests, m.reached_filter, m.answered_by_envoy, m.decisions, m.traffic_seconds, m.requests_per_second, m.wall_seconds, m.audit_flushed_by,
            if m.failures.is_empty() { "agree with the audit records" } else { "DISAGREE" });
    }
    for m in run.modes.iter().filter(|m| !m.envoy_counters.is_empty()) {
        let counted: Vec<String> = m.envoy_counters.iter().map(|(k, v)| format!("{k} +{v}")).collect();
        let _ = writeln!(out, "mode {}: Envoy's own counters of the gateway listener: {}", m.mode.as_str(), counted.join(", "));
    }
    let _ = writeln!(out, "{:.1}s after the stack was up", run.seconds_after_stack_up);
    for t in run.tests.iter().filter(|t| t.class() == Class::Overridden) {
        let _ = writeln!(out, "OVERRIDDEN {} ({}): {}", t.title, t.at, reasons(t));
    }
    for t in run.tests.iter().filter(|t| t.class() == Class::OverriddenButPassed) {
        let _ = writeln!(out, "OVERRIDE NO LONGER NEEDED {} ({}): it passes; remove {}", t.title, t.at, reasons(t));
    }
    for o in &run.unused_overrides {
        let _ = writeln!(out, "OVERRIDE MATCHES NO TEST of this run: {o}");
    }
    for t in run.tests.iter().filter(|t| matches!(t.class(), Class::Failed | Class::AnsweredByEnvoy)) {
        for m in &t.modes {
            if let TestResult::Failed(msgs) | TestResult::AnsweredByEnvoy(msgs) = &m.result {
                for msg in msgs {
                    let _ = writeln!(out, "FAILED [{}] {msg}", m.mode.as_str());
                }
            }
        }
    }
    for m in &run.modes {
        for f in &m.failures {
            let _ = writeln!(out, "FAILED [{} counters] {}", m.mode.as_str(), f.trim_end());
        }
    }
    // Last, in the plain form CI systems read as a test run's closing line; a mode whose counters
    // disagree counts as one failure, overridden and disabled tests as skipped.
    let failed = r.failed + r.envoy + run.modes.iter().filter(|m| !m.failures.is_empty()).count();
    let _ = writeln!(out, "corpus: {} passed, {failed} failed, {} skipped", r.passed, r.overridden + r.override_passes + r.disabled);
    out
}

fn reasons(t: &TestOutcome) -> String {
    let mut rs: Vec<&str> = t.modes.iter().filter_map(|m| m.overridden.as_deref()).collect();
    rs.dedup();
    rs.join("; ")
}

/// JUnit: one test case per FTW test (classname `crs.<family>`), and one per mode for the counters.
pub fn junit(run: &CorpusRun) -> Result<String> {
    let mut suite = TestSuite::new("waf-e2e.corpus");
    suite.add_property(Property::new("run_id", run.run_id.clone()));
    for t in &run.tests {
        let status = match t.class() {
            Class::Passed => TestCaseStatus::success(),
            Class::OverriddenButPassed | Class::Overridden | Class::Disabled => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(match t.class() {
                    Class::Disabled => t.disabled.clone().unwrap_or_default(),
                    Class::OverriddenButPassed => format!("overridden but passing (remove the override): {}", reasons(t)),
                    _ => format!("overridden: {}", reasons(t)),
                });
                s
            }
            Class::Failed | Class::AnsweredByEnvoy => {
                let msgs: Vec<String> = t.modes.iter().flat_map(|m| match &m.result {
                    TestResult::Failed(v) | TestResult::AnsweredByEnvoy(v) => v.iter().map(|x| format!("[{}] {x}", m.mode.as_str())).collect(),
                    TestResult::Passed => Vec::new(),
                }).collect();
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(msgs.first().and_then(|m| m.lines().next()).unwrap_or("failed").to_string());
                s.set_description(msgs.join("\n"));
                s
            }
        };
        let mut case = TestCase::new(t.title.clone(), status);
        case.set_classname(format!("crs.{}", t.family));
        case.add_property(Property::new("file", t.at.clone()));
        suite.add_test_case(case);
    }
    for m in &run.modes {
        let status = if m.failures.is_empty() {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(m.failures[0].lines().next().unwrap_or("counters disagree").to_string());
            s.set_description(m.failures.join("\n"));
            s
        };
        let mut case = TestCase::new(format!("counters agree with the audit records ({} mode)", m.mode.as_str()), status);
        case.set_classname("crs.counters");
        case.set_time(std::time::Duration::from_secs_f64(m.wall_seconds));
        suite.add_test_case(case);
    }
    let mut report = Report::new("waf-e2e");
    report.add_test_suite(suite);
    report.to_string().context("serialise the corpus JUnit report")
}

/// Writes the JUnit report.
pub fn write_junit(path: &Path, run: &CorpusRun) -> Result<()> {
    crate::report::write_report_file(path, &junit(run)?, "JUnit report")
}

/// Writes the JSON report: the run as data (tests with their per-mode results, modes, families).
pub fn write_json(path: &Path, run: &CorpusRun) -> Result<()> {
    let families: BTreeMap<String, serde_json::Value> = families(&run.tests).into_iter().map(|(f, r)| (f, serde_json::json!({
        "tests": r.tests, "passed": r.passed, "overridden": r.overridden, "overridden_but_passing": r.override_passes,
        "answered_by_envoy": r.envoy, "failed": r.failed, "disabled": r.disabled, "decisions": r.decisions, "audit_records": r.records,
    }))).collect();
    let tests: Vec<serde_json::Value> = run.tests.iter().map(|t| {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        v["class"] = serde_json::to_value(t.class()).unwrap_or_default();
        v
    }).collect();
    let doc = serde_json::json!({
        "run_id": run.run_id, "ok": run.ok(), "seconds_after_stack_up": run.seconds_after_stack_up,
        "modes": run.modes, "families": families, "unused_overrides": run.unused_overrides, "tests": tests,
    });
    let text = serde_json::to_string_pretty(&doc).context("serialise the corpus JSON report")?;
    crate::report::write_report_file(path, &text, "JSON report")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{Mode, ModeResult};

    fn outcome(title: &str, family: &str, result: TestResult, overridden: bool) -> TestOutcome {
        TestOutcome {
            at: format!("f.yaml:{title}"), title: title.into(), family: family.into(), disabled: None,
            modes: vec![ModeResult { mode: Mode::Detection, result, overridden: overridden.then(|| "o.yaml:3:5: v3 differs".into()), requests: vec![] }],
            records: 1, decisions: 1,
        }
    }

    #[test]
    fn families_count_each_class_and_an_override_that_passes_is_told_apart() {
        let tests = vec![
            outcome("942100-1", "942", TestResult::Passed, false),
            outcome("942100-2", "942", TestResult::Failed(vec!["x".into()]), false),
            outcome("942100-3", "942", TestResult::Failed(vec!["x".into()]), true),
            outcome("942100-4", "942", TestResult::Passed, true),
            outcome("920100-2", "920", TestResult::AnsweredByEnvoy(vec!["e".into()]), false),
        ];
        let rows = families(&tests);
        let r = &rows["942"];
        assert_eq!((r.tests, r.passed, r.failed, r.overridden, r.override_passes, r.decisions), (4, 1, 1, 1, 1, 4));
        assert_eq!(rows["920"].envoy, 1);
        let run = CorpusRun { run_id: "r".into(), tests, modes: vec![], unused_overrides: vec![], seconds_after_stack_up: 1.0 };
        assert!(!run.ok());
        let text = summary(&run);
        assert!(text.contains("OVERRIDE NO LONGER NEEDED 942100-4"), "{text}");
        assert!(text.contains("OVERRIDDEN 942100-3") && text.contains("FAILED [detection] x"), "{text}");
        assert_eq!(text.lines().last(), Some("corpus: 1 passed, 2 failed, 2 skipped"), "{text}");
        let xml = junit(&run).unwrap();
        assert_eq!(xml.matches("<testcase").count(), 5, "one test case per FTW test: {xml}");
    }
}
