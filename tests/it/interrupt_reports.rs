//! An interrupted run still writes its reports: JUnit and JSON name every scenario, the unfinished
//! ones as errors, and carry the signal.
#![cfg(feature = "reference-proxy")]

use crate::common;

use nix::sys::signal::Signal;
use std::time::Duration;

/// Bound on each wait; Prometheus gets up to 10 s to stop gracefully, so allow for that on a loaded machine.
const BOUND: Duration = Duration::from_secs(60);

fn scenario_count() -> usize {
    waf_e2e::input::yaml_files(&common::root().join("scenarios")).expect("scenarios/").len()
}

/// Runs every scenario with both reports, sends `signal` once `wait_for` is on stderr; returns (JUnit, JSON).
async fn interrupted_reports(signal: Signal, wait_for: &str) -> (String, serde_json::Value) {
    let out = tempfile::tempdir().expect("report dir");
    let junit = out.path().join("report.xml");
    let json = out.path().join("report.json");
    let mut run = common::Harness::spawn(&["run", "--stack", "local", "--scrape-interval-ms", "250", "--junit", junit.to_str().unwrap(),
        "--report", "json", json.to_str().unwrap(), "--diagnostics-dir", out.path().join("diag").to_str().unwrap()]);
    run.wait_for_stderr(wait_for, BOUND).await;
    run.signal(signal);
    let status = run.wait_exit(BOUND).await;
    assert_eq!(status.code(), Some(3), "{}", run.stderr());
    common::assert_no_process(&run.marker());
    let xml = std::fs::read_to_string(&junit).unwrap_or_else(|e| panic!("no JUnit report after the interrupt ({e}):\n{}", run.stderr()));
    let report = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("no JSON report after the interrupt ({e}):\n{}", run.stderr()));
    (xml, serde_json::from_str(&report).expect("the JSON report parses"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_writes_junit_and_json_with_the_unfinished_scenarios_as_errors() {
    let (xml, report) = interrupted_reports(Signal::SIGTERM, "[ RUN  ]").await;
    assert_eq!(xml.matches("<testcase ").count(), scenario_count(), "every scenario has a testcase: {xml}");
    let cut = xml.matches("<error message=\"not run to the end: interrupted by SIGTERM\"").count();
    assert!(cut >= 1, "the scenario running at the signal is an error: {xml}");
    assert!(xml.contains("<property name=\"interrupted\" value=\"SIGTERM\"/>") && xml.contains("timestamp=\""), "{xml}");
    assert_eq!(report["interrupted"], "SIGTERM");
    let errors: Vec<&serde_json::Value> = report["scenarios"].as_array().unwrap().iter().filter(|s| s["verdict"] == "error").collect();
    assert_eq!(errors.len(), cut, "{report:#}");
    assert!(errors.iter().all(|s| s["not_run_reason"] == "interrupted by SIGTERM"), "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_while_the_stack_starts_writes_junit_with_every_scenario_as_an_error() {
    let (xml, report) = interrupted_reports(Signal::SIGINT, "scenario(s) on the local stack").await;
    assert_eq!(xml.matches("<testcase ").count(), scenario_count(), "{xml}");
    // The stack usually is still starting; if it won the race, the scenario running is cut short instead.
    assert!(xml.matches("<error message=\"not run to the end: interrupted by SIGINT").count() >= 1, "{xml}");
    assert_eq!(report["interrupted"], "SIGINT");
}
