//! Helpers shared by the local-stack integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;
use waf_e2e::proxy::Faults;
use waf_e2e::report::Progress;
use waf_e2e::runner::{self, Outcome, RunOptions};
use waf_e2e::scenario::{self, Scenario};
use waf_e2e::stack::local::{LocalOptions, LocalStack};
use waf_e2e::stack::Stack;
use waf_e2e::timeouts::Timeouts;

/// The crate root, so tests find `scenarios/` and `fixtures/` wherever they run from.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Scrape interval for tests: short, so a scenario settles in about a second.
pub const SCRAPE_INTERVAL: Duration = Duration::from_millis(250);

/// Loads one scenario file from `scenarios/`.
pub fn scenario(file: &str) -> Scenario {
    scenario::load_file(&root().join("scenarios").join(file)).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `scenarios` on a fresh local stack built from `rendered` with `faults`, and shuts it down.
pub async fn run_local(rendered: &Path, faults: Faults, scenarios: &[Scenario]) -> Vec<Outcome> {
    let timeouts = Timeouts::default();
    let opts = LocalOptions { rendered: rendered.to_path_buf(), scrape_interval: SCRAPE_INTERVAL, timeouts: timeouts.clone(), faults };
    let stack = LocalStack::start(&opts).await.unwrap_or_else(|e| panic!("local stack: {e:#}"));
    let run = RunOptions { run_id: "test".into(), jobs: 4, timeouts, diagnostics_dir: None };
    let outcomes = runner::run_all(&stack, scenarios, &run, &Progress { quiet: true }).await;
    stack.shutdown().await.expect("stop the local stack");
    outcomes
}

/// The failure messages of an outcome, or a panic saying it did not fail.
pub fn failures(outcome: &Outcome) -> String {
    match &outcome.verdict {
        runner::Verdict::Failed(f) => f.join("\n"),
        other => panic!("scenario {} was expected to FAIL, got {other:?}", outcome.name),
    }
}
