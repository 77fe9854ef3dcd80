//! `waf-e2e up` keeps the local stack; `waf-e2e run --attach` runs scenarios on it, a changed render
//! (PodMonitor: Prometheus reloaded; EnvoyProxy: Envoy restarted) taking effect between runs; Ctrl-C of `up` leaves no process and no state file.
#![cfg(feature = "reference-proxy")]

use crate::common;

use nix::sys::signal::Signal;
use std::path::Path;
use std::time::Duration;

/// Bound on each wait on a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(90);

/// `up` with its state file in its own TMPDIR; returns once the state file is written.
async fn up() -> (common::Harness, String, tempfile::TempDir) {
    let state_dir = tempfile::tempdir().expect("state dir");
    let state = state_dir.path().join("up.json").display().to_string();
    let mut up = common::Harness::spawn(&["up", "--state", &state]);
    up.wait_for_file(Path::new(&state), BOUND).await;
    (up, state, state_dir)
}

/// One attached run of `sqli-blocked` with `rendered`: its exit code and output.
async fn attached_run(state: &str, rendered: &Path) -> (Option<i32>, String) {
    let diag = tempfile::tempdir().expect("diagnostics dir");
    let mut run = common::Harness::spawn(&["run", "--attach", "--state", state, "--scenario", "sqli-blocked",
        "--rendered", &rendered.display().to_string(), "--diagnostics-dir", &diag.path().display().to_string()]);
    let status = run.wait_exit(BOUND).await;
    (status.code(), format!("{}\n{}", run.stdout(), run.stderr()))
}

/// Ctrl-C of `up`: it exits 0, removes its state file, and nothing it started still runs.
async fn stop(mut up: common::Harness, state: &str) {
    up.signal(Signal::SIGINT);
    let status = up.wait_exit(BOUND).await;
    assert_eq!(status.code(), Some(0), "{}\n{}", up.stdout(), up.stderr());
    common::assert_no_process(&up.marker());
    assert!(!Path::new(state).exists(), "the state file outlived `up`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_podmonitor_between_two_attached_runs_fails_and_the_restored_one_passes() {
    let (up, state, _state_dir) = up().await;
    assert!(up.stdout().contains("waf-e2e run --attach --state"), "{}", up.stdout());
    let good = common::root().join("fixtures/rendered");
    let (code, out) = attached_run(&state, &good).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("the render is unchanged"), "{out}");
    assert!(out.contains("1 scenario(s) on the attached local stack (native processes)"), "the run names the stack it attached to: {out}");

    let broken = common::rendered_with("podmonitor.yaml", &common::root().join("fixtures/broken/podmonitor-no-rule-id.yaml"));
    let (code, out) = attached_run(&state, broken.path()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Prometheus reloaded with the changed PodMonitor"), "{out}");
    assert!(out.contains("label `rule_id`: missing"), "{out}");

    let (code, out) = attached_run(&state, &good).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Prometheus reloaded with the changed PodMonitor"), "{out}");
    stop(up, &state).await;
}

/// The stack `up` started keeps its scrape target: a render whose policies deny the scrape cannot
/// show there as a target down, so the attached run fails on the offline verdict, naming the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_denying_the_scrape_fails_an_attached_run_naming_the_policy() {
    let (up, state, _state_dir) = up().await;
    let denying = crate::policy_trace::render_with("projectcalico.org/name == 'tigera-prometheus'", "projectcalico.org/name == 'monitoring'");
    let (code, out) = attached_run(&state, denying.path()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics"), "{out}");
    assert!(out.contains("0 passed, 1 failed"), "{out}");
    let (code, out) = attached_run(&state, &common::root().join("fixtures/rendered")).await;
    assert_eq!(code, Some(0), "the shipped render passes again on the same stack: {out}");
    stop(up, &state).await;
}

/// A copy of `fixtures/rendered/` whose PodMonitor is `podmonitor` renamed to `name`.
fn renamed(podmonitor: &Path, name: &str) -> tempfile::TempDir {
    let dir = common::rendered_with("podmonitor.yaml", podmonitor);
    let file = dir.path().join("podmonitor.yaml");
    let text = std::fs::read_to_string(&file).expect("read podmonitor.yaml");
    assert!(text.contains("  name: tigera-waf-gateway-proxies\n"), "the fixture's PodMonitor name changed");
    std::fs::write(&file, text.replacen("  name: tigera-waf-gateway-proxies\n", &format!("  name: {name}\n"), 1)).expect("write podmonitor.yaml");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_podmonitor_renamed_between_attached_runs_is_picked_up_and_a_broken_renamed_one_fails() {
    let (up, state, _state_dir) = up().await;
    let good = renamed(&common::root().join("fixtures/rendered/podmonitor.yaml"), "waf-renamed");
    let (code, out) = attached_run(&state, good.path()).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Prometheus reloaded with the changed PodMonitor podMonitor/tigera-prometheus/waf-renamed/0"), "{out}");
    assert!(out.contains("(renamed: the scrape pool was podMonitor/tigera-prometheus/tigera-waf-gateway-proxies/0)"), "{out}");

    let broken = renamed(&common::root().join("fixtures/broken/podmonitor-no-rule-id.yaml"), "waf-renamed-again");
    let (code, out) = attached_run(&state, broken.path()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("podMonitor/tigera-prometheus/waf-renamed-again/0 of") && out.contains("(renamed: the scrape pool was podMonitor/tigera-prometheus/waf-renamed/0)"), "{out}");
    assert!(out.contains("label `rule_id`: missing"), "{out}");
    stop(up, &state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoyproxy_changed_between_attached_runs_restarts_envoy_and_takes_effect() {
    let (up, state, _state_dir) = up().await;
    let dir = common::rendered_with("podmonitor.yaml", &common::root().join("fixtures/rendered/podmonitor.yaml"));
    let envoyproxy = dir.path().join("envoyproxy.yaml");
    let good = std::fs::read_to_string(&envoyproxy).expect("read envoyproxy.yaml");
    assert!(good.contains("wasm: info"), "the fixture logs the wasm logger at info");
    std::fs::write(&envoyproxy, good.replacen("wasm: info", "wasm: warn", 1)).expect("write envoyproxy.yaml");
    let (code, out) = attached_run(&state, dir.path()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Envoy restarted (same ports) with the changed EnvoyProxy"), "{out}");
    assert!(out.contains("Envoy's `wasm` logger is at `warn`"), "{out}");

    std::fs::write(&envoyproxy, good).expect("restore envoyproxy.yaml");
    let (code, out) = attached_run(&state, dir.path()).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Envoy restarted (same ports)"), "{out}");
    stop(up, &state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_attached_run_removes_its_scenario_so_the_next_run_can_install_it() {
    let (up, state, _state_dir) = up().await;
    let good = common::root().join("fixtures/rendered");
    let diag = tempfile::tempdir().expect("diagnostics dir");
    let mut run = common::Harness::spawn(&["run", "--attach", "--state", &state, "--scenario", "sqli-blocked",
        "--rendered", &good.display().to_string(), "--diagnostics-dir", &diag.path().display().to_string()]);
    run.wait_for_stderr("[ RUN  ] sqli-blocked", BOUND).await;
    run.signal(Signal::SIGINT);
    let status = run.wait_exit(BOUND).await;
    assert_eq!(status.code(), Some(3), "{}", run.stderr());
    let (code, out) = attached_run(&state, &good).await;
    assert_eq!(code, Some(0), "{out}");
    stop(up, &state).await;
}
