//! Infrastructure faults mid-run: each ends as an infrastructure failure (exit 3 / `Verdict::Broken`)
//! naming what broke, promptly (not after every scenario's deadline), and leaves no process behind.
#![cfg(feature = "reference-proxy")]

use crate::common;

use std::path::Path;
use std::time::Duration;
use waf_e2e::error::HarnessError;
use waf_e2e::waf::Faults;
use waf_e2e::report::Progress;
use waf_e2e::outcome::{Outcome, Verdict};
use waf_e2e::runner::{self, RunOptions};
use waf_e2e::scenario::{Capability, Scenario};
use waf_e2e::stack::local::{LocalOptions, LocalStack};
use std::collections::BTreeMap;
use waf_e2e::audit::{AuditCursor, AuditLines};
use waf_e2e::stack::{BackendReach, Endpoints, FilterInfo, ScenarioEnv, Stack};
use waf_e2e::timeouts::Timeouts;

/// Generous bound on how long a faulted run may take on a loaded 2-core CI machine; the runner
/// should fail within a scrape or two, far below the 120 s scenario deadline.
const FAULT_BOUND: Duration = Duration::from_secs(60);

/// The local stack with a fault injected at one point of every scenario: after its baseline, before its traffic.
struct FaultBeforeTraffic {
    inner: LocalStack,
    fault: Fault,
}

#[derive(Clone)]
enum Fault {
    /// SIGKILL the Envoy process, as an OOM kill would.
    KillEnvoy,
}

#[async_trait::async_trait]
impl Stack for FaultBeforeTraffic {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn endpoints(&self) -> Endpoints {
        self.inner.endpoints()
    }
    fn capabilities(&self) -> &[Capability] {
        self.inner.capabilities()
    }
    fn filter(&self) -> &FilterInfo {
        self.inner.filter()
    }
    async fn backend_reach(&self, ids: &[String]) -> anyhow::Result<Option<BTreeMap<String, BackendReach>>> {
        self.inner.backend_reach(ids).await
    }
    async fn audit_flushes(&self) -> anyhow::Result<Option<u64>> {
        self.inner.audit_flushes().await
    }
    fn audit_hints(&self) -> Vec<String> {
        self.inner.audit_hints()
    }
    async fn install_scenario(&self, scenario: &Scenario) -> anyhow::Result<ScenarioEnv> {
        self.inner.install_scenario(scenario).await
    }
    async fn remove_scenario(&self, env: &ScenarioEnv) -> anyhow::Result<()> {
        self.inner.remove_scenario(env).await
    }
    async fn audit_cursor(&self) -> anyhow::Result<AuditCursor> {
        // The runner takes the audit position right after the baseline scrape: the fault strikes here.
        match &self.fault {
            Fault::KillEnvoy => {
                let pid = self.inner.envoy_pid().await.expect("Envoy runs");
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).expect("kill Envoy");
            }
        }
        self.inner.audit_cursor().await
    }
    async fn audit_lines_since(&self, cursor: &AuditCursor) -> anyhow::Result<AuditLines> {
        self.inner.audit_lines_since(cursor).await
    }
    async fn raw_stats(&self) -> anyhow::Result<String> {
        self.inner.raw_stats().await
    }
    async fn diagnostics(&self, env: &ScenarioEnv, dir: &Path) -> anyhow::Result<()> {
        self.inner.diagnostics(env, dir).await
    }
    async fn shutdown(&self) -> anyhow::Result<()> {
        self.inner.shutdown().await
    }
    async fn health(&self) -> anyhow::Result<()> {
        self.inner.health().await
    }
}

fn options(faults: Faults, prometheus_port: Option<u16>) -> LocalOptions {
    LocalOptions { faults, prometheus_port, ..common::local_options(&common::root().join("fixtures/rendered")) }
}

/// Runs two isolated scenarios on the faulted stack, shuts it down and checks its Prometheus is gone.
async fn run_with_fault(fault: Fault, faults: Faults) -> Vec<Outcome> {
    let stack = LocalStack::start(&options(faults, None)).await.unwrap_or_else(|e| panic!("local stack: {e:#}"));
    let prometheus_dir = stack.prometheus_dir().await.expect("Prometheus runs").display().to_string();
    let stack = FaultBeforeTraffic { inner: stack, fault };
    let scenarios = [common::scenario("sqli-blocked.yaml"), common::scenario("xss-blocked.yaml")];
    let run = RunOptions { run_id: "fault".into(), jobs: 2, timeouts: Timeouts::default(), diagnostics_dir: None, fail_fast: false };
    let outcomes = tokio::time::timeout(FAULT_BOUND, runner::run_all(&stack, &scenarios, &run, &Progress { quiet: true })).await;
    // Shut down before asserting, so a failed assertion leaves nothing running either.
    let shutdown = stack.shutdown().await;
    drop(stack);
    common::assert_no_process(&prometheus_dir);
    shutdown.expect("the stack shuts down after the fault");
    outcomes.unwrap_or_else(|_| panic!("the faulted run did not end within {FAULT_BOUND:?}"))
}

/// The run's exit code and the message the CLI would print.
fn exit_of(outcomes: &[Outcome]) -> (i32, String) {
    let err = waf_e2e::report::exit_verdict(outcomes).expect_err("a faulted run must not pass");
    (err.exit_code(), err.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_envoy_mid_run_is_an_infrastructure_failure_naming_envoy() {
    let outcomes = run_with_fault(Fault::KillEnvoy, Faults::default()).await;
    assert!(outcomes.iter().all(|o| matches!(o.verdict, Verdict::Broken(_))), "{outcomes:#?}");
    let (code, msg) = exit_of(&outcomes);
    assert_eq!(code, 3, "{msg}");
    assert!(msg.contains("Envoy") && msg.contains("exited"), "{msg}");
}

async fn start_with_prometheus_port(port: u16) -> anyhow::Error {
    match tokio::time::timeout(FAULT_BOUND, LocalStack::start(&options(Faults::default(), Some(port)))).await {
        Ok(Ok(stack)) => {
            let _ = stack.shutdown().await;
            panic!("the local stack started although a port it needs was taken")
        }
        Ok(Err(e)) => e,
        Err(_) => panic!("the local stack's start did not end within {FAULT_BOUND:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_occupied_prometheus_port_fails_the_start_with_exit_3_and_address_already_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("occupy a port");
    let port = taken.local_addr().expect("addr").port();
    let err = start_with_prometheus_port(port).await;
    let msg = format!("{err:#}");
    assert_eq!(HarnessError::classify(err).exit_code(), 3, "{msg}");
    assert!(msg.contains("start Prometheus") && msg.to_lowercase().contains("address already in use"), "{msg}");
    common::assert_no_process(&format!("127.0.0.1:{port}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_prometheus_mid_run_makes_the_binary_exit_3_saying_prometheus_exited() {
    let diag = tempfile::tempdir().expect("diagnostics dir");
    let mut run = common::Harness::spawn(&["run", "--stack", "local", "--scrape-interval-ms", "250", "--diagnostics-dir", &diag.path().display().to_string()]);
    run.wait_for_stderr("[ RUN  ]", FAULT_BOUND).await;
    let prometheus = common::pgrep(&format!("config.file={}", run.marker()));
    assert_eq!(prometheus.len(), 1, "exactly one Prometheus reads its config from the run's TMPDIR: {prometheus:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(prometheus[0] as i32), nix::sys::signal::Signal::SIGKILL).expect("kill Prometheus");
    let status = run.wait_exit(FAULT_BOUND).await;
    let (stdout, stderr) = (run.stdout(), run.stderr());
    assert_eq!(status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stderr.contains("error: infrastructure failed") && stderr.contains("Prometheus exited"), "{stderr}");
    common::assert_no_process(&run.marker());
}
