//! Every scenario file, run for real on the local stack: one test case per file.
#![cfg(feature = "reference-proxy")]

use crate::common;

use rstest::rstest;
use std::path::PathBuf;
use waf_e2e::waf::Faults;
use waf_e2e::outcome::Verdict;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_passes_on_the_local_stack(#[files("scenarios/*.yaml")] path: PathBuf) {
    let scenario = waf_e2e::scenario::load_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let outcomes = common::run_local(&common::root().join("fixtures/rendered"), Faults::default(), &[scenario]).await;
    let outcome = &outcomes[0];
    match &outcome.verdict {
        Verdict::Passed => {}
        other => panic!("{} did not pass:\n{}", outcome.name, waf_e2e::report::summary_table(&outcomes).trim_end().to_string() + &format!("\n{other:?}")),
    }
}

/// The audit wait's note for `flush`, and the scenario's audit phase.
async fn audit_note_with(flush: waf_e2e::envoy::AuditFlush) -> (String, std::time::Duration) {
    let opts = waf_e2e::stack::local::LocalOptions { audit_flush: flush, ..common::local_options(&common::root().join("fixtures/rendered")) };
    let outcomes = common::run_local_with(opts, &[common::scenario("sqli-blocked.yaml")]).await;
    assert!(matches!(outcomes[0].verdict, Verdict::Passed), "{:?}", outcomes[0].verdict);
    let note = outcomes[0].notes.iter().find(|n| n.starts_with("audit log read after:")).cloned().expect("an audit note");
    (note, outcomes[0].timings.audit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_says_whether_envoy_was_asked_to_flush_its_log_or_its_timer_did() {
    let (asked, asked_audit) = audit_note_with(waf_e2e::envoy::AuditFlush::Admin).await;
    assert!(asked.contains("POST /reopen_logs") && asked.contains("not on its 10 s timer"), "{asked}");
    let (timer, _) = audit_note_with(waf_e2e::envoy::AuditFlush::Timer).await;
    assert!(timer.contains("flushed_by_timer") && !timer.contains("reopen_logs"), "{timer}");
    eprintln!("MEASURE audit phase with --audit-flush admin: {asked_audit:?}");
    assert!(asked_audit < std::time::Duration::from_secs(5), "{asked_audit:?}");
}

/// Exclusive scenarios beside isolated ones: each exclusive window opens after the isolated
/// traffic, one after another, and every gateway-wide count stays exact (`benign-traffic` asserts
/// `transactions` +7 exactly, so a request of another scenario inside a window fails it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_scenarios_count_the_gateway_exactly_while_isolated_ones_run_beside_them() {
    let mut scenarios: Vec<_> = (1..=3)
        .map(|k| {
            let mut s = common::scenario("benign-traffic.yaml");
            s.name.value = format!("benign-traffic-c{k}");
            s
        })
        .collect();
    scenarios.extend(["sqli-blocked.yaml", "xss-blocked.yaml", "get-vs-post-phase.yaml", "sqli-detection-only.yaml"].map(common::scenario));
    let outcomes = common::run_local(&common::root().join("fixtures/rendered"), Faults::default(), &scenarios).await;
    let table = waf_e2e::report::summary_table(&outcomes);
    assert!(outcomes.iter().all(|o| matches!(o.verdict, Verdict::Passed)), "{table}");
    for o in outcomes.iter().filter(|o| o.name.starts_with("benign-traffic")) {
        assert!(o.notes.iter().any(|n| n.starts_with("held the gateway alone for")), "{}: {:?}", o.name, o.notes);
    }
    eprintln!("MEASURE exclusive beside isolated:\n{table}");
}
