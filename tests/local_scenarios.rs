//! Every scenario file, run for real on the local stack: one test case per file.
#![cfg(feature = "reference-proxy")]

mod common;

use rstest::rstest;
use std::path::PathBuf;
use waf_e2e::waf::Faults;
use waf_e2e::runner::Verdict;

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
