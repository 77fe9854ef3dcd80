//! SIGKILL of a running harness (a CI timeout, the OOM killer): no handler runs, so nothing is
//! cleaned up by the harness itself. Its children must die with it (parent-death signal,
//! `waf_e2e::process::harness_child`), and the next run must remove the run directories it left
//! (`waf_e2e::rundir`).
#![cfg(feature = "reference-proxy")]

use crate::common;

use nix::sys::signal::Signal;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use waf_e2e::wait::{self, Check};

/// Bound on starting the stack and on a whole one-scenario run on a loaded machine.
const BOUND: Duration = Duration::from_secs(90);
/// The bar: the children are gone "within a few seconds" of the SIGKILL.
const CHILDREN_GONE: Duration = Duration::from_secs(5);

fn run_args(diagnostics: &str) -> Vec<String> {
    ["run", "--stack", "local", "--scenario", "benign-traffic", "--scrape-interval-ms", "250", "--diagnostics-dir", diagnostics]
        .map(String::from)
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_no_child_survives_and_the_next_run_removes_the_killed_runs_directories() {
    let diagnostics = tempfile::tempdir().expect("diagnostics dir");
    let args = run_args(&diagnostics.path().display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut killed = common::Harness::spawn(&args);
    let marker = killed.marker();

    // Prometheus' command line names its run directory, which lies under the run's TMPDIR.
    let prometheus = format!("{marker}/{}/prometheus-", waf_e2e::rundir::RUNS_DIR);
    wait::until("the harness's Prometheus child to run", BOUND, || {
        let running = !common::pgrep(&prometheus).is_empty();
        async move { Ok(if running { Check::Met(()) } else { Check::NotYet("no process names Prometheus' run directory".into()) }) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", killed.stderr()));
    // Every child of the run (Prometheus, and Envoy where it runs) names the run's TMPDIR.
    let children = common::pgrep(&marker);
    let left_by_killed = common::leftovers(killed.tmp.path());
    assert!(left_by_killed.iter().any(|d| d.contains("prometheus-")), "Prometheus' run directory exists: {left_by_killed:?}");

    killed.signal(Signal::SIGKILL);
    let status = killed.wait_exit(BOUND).await;
    assert_eq!(status.signal(), Some(9), "the harness died of SIGKILL");
    wait::until(&format!("the killed harness's children {children:?} to exit"), CHILDREN_GONE, || {
        let alive = common::pgrep(&marker);
        async move { Ok(if alive.is_empty() { Check::Met(()) } else { Check::NotYet(format!("still running: {alive:?}")) }) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(common::leftovers(killed.tmp.path()), left_by_killed, "nothing cleaned up after SIGKILL (so the next run has work to do)");

    // The next run, with the same TMPDIR, sweeps the directories whose owner is gone.
    let tmp = std::mem::replace(&mut killed.tmp, tempfile::tempdir().expect("placeholder TMPDIR"));
    let mut next = common::Harness::spawn_in(tmp, &args);
    let status = next.wait_exit(BOUND).await;
    assert_eq!(status.code(), Some(0), "{}\n{}", next.stdout(), next.stderr());
    for dir in &left_by_killed {
        assert!(next.stderr().contains(&format!("{dir} (left by a run that is gone")), "the next run reports removing {dir}:\n{}", next.stderr());
    }
    let left = common::leftovers(next.tmp.path());
    assert!(left.is_empty(), "left after the next run: {left:?}");
}
