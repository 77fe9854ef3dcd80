//! `--runtime docker`: Prometheus and Envoy as containers of the images `scripts/local-images.sh`
//! builds from this machine's binaries (no registry is reachable here). The scenarios pass, a broken
//! PodMonitor still fails naming itself, ports are published on loopback only, and neither a run,
//! nor Ctrl-C of a run, of `up` or of `watch`, leaves a container, a network or a process behind; a
//! killed container ends the run (exit 3) naming it.
//!
//! Needs a Docker engine. Without one each test says SKIPPED on stderr (`scripts/test.sh` prints
//! whether the engine answers); with `WAF_E2E_REQUIRE_DOCKER` set, a missing engine fails them.
#![cfg(feature = "reference-proxy")]

use crate::common;

use nix::sys::signal::Signal;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use waf_e2e::container::{Images, Runtime};
use waf_e2e::stack::local::{LocalOptions, LocalStack};
use waf_e2e::stack::Stack;

/// Bound on each wait on a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(120);

/// The label every container and network of the docker runtime carries (its run directory).
const LABEL: &str = "io.waf-e2e.run-dir";

/// The flags `scripts/local-images.sh` prints (building the images first), or `None` with a visible
/// SKIPPED when no Docker engine answers.
fn local_image_flags() -> Option<Vec<String>> {
    let engine = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    if !matches!(&engine, Ok(o) if o.status.success()) {
        assert!(std::env::var_os("WAF_E2E_REQUIRE_DOCKER").is_none(), "WAF_E2E_REQUIRE_DOCKER is set but no Docker engine answers: {engine:?}");
        eprintln!("SKIPPED: no Docker engine answers `docker info`; the container runtime was NOT tested");
        return None;
    }
    // Tests run as parallel processes: one image build at a time.
    let lock = std::env::temp_dir().join("waf-e2e-local-images.lock");
    let out = Command::new("flock").arg(&lock).arg(common::root().join("scripts/local-images.sh")).output().expect("run scripts/local-images.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "scripts/local-images.sh failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().expect("local-images.sh prints the flags last");
    assert!(last.starts_with("--runtime docker "), "the last line is not the flags: {last}");
    Some(last.split_whitespace().map(str::to_string).collect())
}

/// The images named by those flags.
fn images(flags: &[String]) -> Images {
    let after = |flag: &str| flags.iter().skip_while(|f| *f != flag).nth(1).cloned().unwrap_or_else(|| panic!("{flag} missing from {flags:?}"));
    Images { prometheus: after("--prometheus-image"), envoy: after("--envoy-image") }
}

/// `docker ps -a` / `docker network ls` entries (name) whose run-directory label is under `prefix`.
fn docker_objects_under(prefix: &Path) -> Vec<String> {
    let prefix = prefix.display().to_string();
    let mut found = Vec::new();
    for (what, mut args) in [("container", vec!["ps", "-a"]), ("network", vec!["network", "ls"])] {
        let filter = format!("label={LABEL}");
        let format = format!("{{{{.Names}}}}\t{{{{.Label \"{LABEL}\"}}}}");
        let format = if what == "network" { format.replace(".Names", ".Name") } else { format };
        args.extend(["--filter", &filter, "--format", &format]);
        let out = Command::new("docker").args(&args).output().expect("run docker");
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((name, dir)) = line.split_once('\t') {
                if dir.starts_with(&prefix) {
                    found.push(format!("{what} {name}"));
                }
            }
        }
    }
    found
}

/// Removes what `docker_objects_under(prefix)` finds (a failed test's leftovers; never needed when it passes).
struct DockerLeftovers(std::path::PathBuf);

impl Drop for DockerLeftovers {
    fn drop(&mut self) {
        for object in docker_objects_under(&self.0) {
            let (what, name) = object.split_once(' ').unwrap_or(("container", &object));
            let args: Vec<&str> = if what == "network" { vec!["network", "rm", name] } else { vec!["rm", "-f", "-v", name] };
            let _ = Command::new("docker").args(args).output();
        }
    }
}

/// The host addresses of every published port of the containers under `prefix`.
fn published_host_ips(prefix: &Path) -> Vec<String> {
    let names: Vec<String> = docker_objects_under(prefix).into_iter().filter_map(|o| o.strip_prefix("container ").map(str::to_string)).collect();
    assert!(!names.is_empty(), "no container runs under {}", prefix.display());
    let mut ips = Vec::new();
    for name in names {
        let out = Command::new("docker").args(["inspect", "--format", "{{range $p, $b := .HostConfig.PortBindings}}{{range $b}}{{.HostIp}} {{end}}{{end}}", &name]).output().expect("docker inspect");
        ips.extend(String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string));
    }
    ips
}

/// `waf-e2e ARGS FLAGS` as a child; what it leaves in Docker is removed when the second value drops.
fn spawn(args: &[&str], flags: &[String]) -> (common::Harness, DockerLeftovers) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(flags.iter().map(String::as_str));
    let harness = common::Harness::spawn(&all);
    let leftovers = DockerLeftovers(harness.tmp.path().to_path_buf());
    (harness, leftovers)
}

/// Ctrl-C of `harness`: it exits with `code` and leaves no Docker object and no process.
async fn interrupt_leaves_nothing(harness: &mut common::Harness, code: i32, what: &str) {
    harness.signal(Signal::SIGINT);
    let status = harness.wait_exit(BOUND).await;
    assert_eq!(status.code(), Some(code), "{}\n{}", harness.stdout(), harness.stderr());
    assert_eq!(docker_objects_under(harness.tmp.path()), Vec::<String>::new(), "Ctrl-C of {what} left Docker objects behind");
    common::assert_no_process(&harness.marker());
}

fn docker_options(rendered: &Path, flags: &[String]) -> LocalOptions {
    LocalOptions { runtime: Runtime::Docker(images(flags)), ..common::local_options(rendered) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_run_of_the_cli_passes_with_the_local_images_and_leaves_no_container() {
    let Some(flags) = local_image_flags() else { return };
    let (mut run, _cleanup) = spawn(&["run", "--stack", "local", "--scenario", "sqli-blocked", "--scenario", "sqli-post-body-blocked"], &flags);
    let status = run.wait_exit(BOUND).await;
    let output = format!("{}\n{}", run.stdout(), run.stderr());
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("runtime: docker containers (prometheus waf-e2e-local/prometheus:"), "the run says where it ran: {output}");
    assert!(output.contains("2 passed, 0 failed"), "{output}");
    assert_eq!(docker_objects_under(run.tmp.path()), Vec::<String>::new(), "the run left Docker objects behind");
    common::assert_no_process(&run.marker());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_podmonitor_fails_on_containers_naming_it_and_the_ports_are_on_loopback_only() {
    let Some(flags) = local_image_flags() else { return };
    let rendered = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(common::root().join("fixtures/rendered")).expect("list fixtures/rendered") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read fixture");
        let text = if path.ends_with("podmonitor.yaml") { text.replace("- port: metrics\n", "- port: stats\n") } else { text };
        std::fs::write(rendered.path().join(path.file_name().expect("file name")), text).expect("write copy");
    }
    let stack = LocalStack::start(&docker_options(rendered.path(), &flags)).await.unwrap_or_else(|e| panic!("{e:#}"));
    let run_dir = stack.run_dir().to_path_buf();
    let _cleanup = DockerLeftovers(run_dir.clone());
    let ips = published_host_ips(&run_dir);
    assert!(!ips.is_empty() && ips.iter().all(|ip| ip == "127.0.0.1"), "published on {ips:?}");
    let run = waf_e2e::runner::RunOptions { run_id: "test".into(), jobs: 1, timeouts: Default::default(), diagnostics_dir: None, fail_fast: false };
    let outcomes = waf_e2e::runner::run_all(&stack, &[common::scenario("sqli-blocked.yaml")], &run, &waf_e2e::report::Progress { quiet: true }).await;
    stack.shutdown().await.expect("stop the stack");
    let msg = common::failures(&outcomes[0]);
    assert!(msg.contains("PodMonitor tigera-prometheus/tigera-waf-gateway-proxies") && msg.contains("container port \"metrics\""), "{msg}");
    assert_eq!(docker_objects_under(&run_dir), Vec::<String>::new(), "shutdown left Docker objects behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_a_docker_run_leaves_no_container_and_exits_3() {
    let Some(flags) = local_image_flags() else { return };
    let (mut run, _cleanup) = spawn(&["run", "--stack", "local"], &flags);
    run.wait_for_stderr("[ RUN  ]", BOUND).await;
    assert!(!docker_objects_under(run.tmp.path()).is_empty(), "the containers run while scenarios do");
    interrupt_leaves_nothing(&mut run, 3, "a run").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_of_up_on_docker_leaves_no_container_no_network_and_no_process() {
    let Some(flags) = local_image_flags() else { return };
    let state_dir = tempfile::tempdir().expect("state dir");
    let state = state_dir.path().join("up.json").display().to_string();
    let (mut up, _cleanup) = spawn(&["up", "--state", state.as_str()], &flags);
    up.wait_for_file(Path::new(&state), BOUND).await;
    let running = docker_objects_under(up.tmp.path());
    assert_eq!(running.iter().filter(|o| o.starts_with("container ")).count(), 2, "Prometheus and Envoy: {running:?}");
    interrupt_leaves_nothing(&mut up, 0, "up").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_is_neither_here_nor_pullable_is_an_infrastructure_error_that_says_how_to_build_one() {
    let Some(flags) = local_image_flags() else { return };
    let prometheus = images(&flags).prometheus;
    let mut run = common::Harness::spawn(&["run", "--stack", "local", "--scenario", "sqli-blocked", "--runtime", "docker",
        "--prometheus-image", &prometheus, "--envoy-image", "waf-e2e-local/no-such-envoy:v0"]);
    let _cleanup = DockerLeftovers(run.tmp.path().to_path_buf());
    let status = run.wait_exit(BOUND).await;
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("waf-e2e-local/no-such-envoy:v0") && stderr.contains("scripts/local-images.sh"), "{stderr}");
    assert_eq!(docker_objects_under(run.tmp.path()), Vec::<String>::new(), "a failed start left Docker objects behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_a_sigkilled_run_are_removed_by_the_next_docker_run() {
    let Some(flags) = local_image_flags() else { return };
    let args = ["run", "--stack", "local", "--scenario", "sqli-blocked"];
    let (mut killed, _cleanup) = spawn(&args, &flags);
    killed.wait_for_stderr("[ RUN  ]", BOUND).await;
    killed.signal(Signal::SIGKILL);
    killed.wait_exit(BOUND).await;
    let left = docker_objects_under(killed.tmp.path());
    assert_eq!(left.len(), 3, "a SIGKILLed harness cannot remove its two containers and network: {left:?}");
    // The next run, with the same TMPDIR, finds the dead run's directory, deletes it, and with it its containers.
    let tmp = std::mem::replace(&mut killed.tmp, tempfile::tempdir().expect("temp dir"));
    let mut all: Vec<&str> = args.to_vec();
    all.extend(flags.iter().map(String::as_str));
    let mut next = common::Harness::spawn_in(tmp, &all);
    let status = next.wait_exit(BOUND).await;
    assert_eq!(status.code(), Some(0), "{}\n{}", next.stdout(), next.stderr());
    assert_eq!(docker_objects_under(next.tmp.path()), Vec::<String>::new(), "the dead run's containers are still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_envoyproxy_starts_a_new_envoy_container_that_prometheus_scrapes() {
    let Some(flags) = local_image_flags() else { return };
    let dir = common::rendered_with("podmonitor.yaml", &common::root().join("fixtures/rendered/podmonitor.yaml"));
    let stack = LocalStack::start(&docker_options(dir.path(), &flags)).await.unwrap_or_else(|e| panic!("{e:#}"));
    let _cleanup = DockerLeftovers(stack.run_dir().to_path_buf());
    let run = waf_e2e::runner::RunOptions { run_id: "test".into(), jobs: 1, timeouts: Default::default(), diagnostics_dir: None, fail_fast: false };
    let quiet = waf_e2e::report::Progress { quiet: true };
    let envoyproxy = dir.path().join("envoyproxy.yaml");
    let good = std::fs::read_to_string(&envoyproxy).expect("read envoyproxy.yaml");
    std::fs::write(&envoyproxy, good.replacen("wasm: info", "wasm: warn", 1)).expect("write envoyproxy.yaml");
    let changes = stack.apply_render(dir.path()).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(changes.iter().any(|c| c.starts_with("Envoy restarted")), "{changes:?}");
    let broken = waf_e2e::runner::run_all(&stack, &[common::scenario("sqli-blocked.yaml")], &run, &quiet).await;
    let msg = common::failures(&broken[0]);
    assert!(msg.contains("Envoy's `wasm` logger is at `warn`"), "{msg}");

    std::fs::write(&envoyproxy, good).expect("restore envoyproxy.yaml");
    // The new container may get another address on the network; Prometheus' target follows it
    // (a reload when it changed), and the restored scenario's counters are read through Prometheus.
    let changes = stack.apply_render(dir.path()).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(changes.iter().any(|c| c.starts_with("Envoy restarted")), "{changes:?}");
    let restored = waf_e2e::runner::run_all(&stack, &[common::scenario("sqli-blocked.yaml")], &run, &quiet).await;
    assert!(matches!(restored[0].verdict, waf_e2e::outcome::Verdict::Passed), "{:?}", restored[0].verdict);
    let run_dir = stack.run_dir().to_path_buf();
    stack.shutdown().await.expect("stop the stack");
    assert_eq!(docker_objects_under(&run_dir), Vec::<String>::new(), "shutdown left Docker objects behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_docker_runs_its_scenario_and_ctrl_c_leaves_no_container_network_or_process() {
    let Some(flags) = local_image_flags() else { return };
    let work = tempfile::tempdir().expect("work dir");
    let scenarios = work.path().join("scenarios");
    std::fs::create_dir(&scenarios).expect("mkdir");
    std::fs::copy(common::root().join("scenarios/sqli-blocked.yaml"), scenarios.join("sqli-blocked.yaml")).expect("copy the scenario");
    let scenarios = scenarios.display().to_string();
    let (mut watch, _cleanup) = spawn(&["watch", "--scenarios", &scenarios], &flags);
    let seen = watch.wait_for_stdout("initial run (", BOUND).await;
    assert!(seen.contains("PASS (1 passed)"), "{seen}");
    assert_eq!(docker_objects_under(watch.tmp.path()).len(), 3, "two containers and a network while watching");
    interrupt_leaves_nothing(&mut watch, 0, "watch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_container_killed_mid_run_makes_the_run_exit_3_naming_it() {
    let Some(flags) = local_image_flags() else { return };
    let (mut run, _cleanup) = spawn(&["run", "--stack", "local"], &flags);
    run.wait_for_stderr("[ RUN  ]", BOUND).await;
    let envoy = docker_objects_under(run.tmp.path()).into_iter().find_map(|o| o.strip_prefix("container ").filter(|n| n.contains("-envoy-")).map(str::to_string))
        .expect("an Envoy container runs");
    let killed = Command::new("docker").args(["kill", &envoy]).output().expect("docker kill");
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    let status = run.wait_exit(BOUND).await;
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("error: infrastructure failed") && stderr.contains(&format!("Envoy (container {envoy}) exited")), "{stderr}");
    assert_eq!(docker_objects_under(run.tmp.path()), Vec::<String>::new(), "the failed run left Docker objects behind");
}
