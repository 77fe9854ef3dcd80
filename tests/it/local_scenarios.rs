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
