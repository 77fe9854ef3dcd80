//! SIGINT or SIGTERM during a run: the harness stops, exits 3 (the run has no trustworthy verdict:
//! an interrupted run is reported like an infrastructure failure, so CI never mistakes it for a
//! pass or a scenario failure), and leaves neither a child process nor a temporary directory.
#![cfg(feature = "reference-proxy")]

use crate::common;

use nix::sys::signal::Signal;
use std::time::Duration;

/// Bound on each wait; Prometheus gets up to 10 s to stop gracefully, so allow for that on a loaded machine.
const BOUND: Duration = Duration::from_secs(60);

async fn interrupt_mid_run(signal: Signal, name: &str) {
    let diag = tempfile::tempdir().expect("diagnostics dir");
    let mut run = common::Harness::spawn(&["run", "--stack", "local", "--scrape-interval-ms", "250", "--diagnostics-dir", &diag.path().display().to_string()]);
    run.wait_for_stderr("[ RUN  ]", BOUND).await;
    assert!(!common::pgrep(&run.marker()).is_empty(), "Prometheus runs with the run's TMPDIR in its command line");
    run.signal(signal);
    let status = run.wait_exit(BOUND).await;
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(3), "{}\n{stderr}", run.stdout());
    assert!(stderr.contains(&format!("interrupted by {name}")), "{stderr}");
    common::assert_no_process(&run.marker());
    let left = common::leftovers(run.tmp.path());
    assert!(left.is_empty(), "temporary directories left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_mid_run_exits_3_and_leaves_no_process_or_temporary_directory() {
    interrupt_mid_run(Signal::SIGINT, "SIGINT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_exits_3_and_leaves_no_process_or_temporary_directory() {
    interrupt_mid_run(Signal::SIGTERM, "SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_while_the_stack_starts_exits_3_and_leaves_no_process_or_temporary_directory() {
    let mut run = common::Harness::spawn(&["run", "--stack", "local"]);
    // The note is printed right before the stack starts (Prometheus takes a moment to be ready).
    run.wait_for_stderr("scenario(s) on the local stack", BOUND).await;
    run.signal(Signal::SIGINT);
    let status = run.wait_exit(BOUND).await;
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("interrupted by SIGINT"), "{stderr}");
    common::assert_no_process(&run.marker());
    let left = common::leftovers(run.tmp.path());
    assert!(left.is_empty(), "temporary directories left behind: {left:?}");
}
