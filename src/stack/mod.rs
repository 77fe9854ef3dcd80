//! Stacks: where a scenario runs. Each starts the moving parts and hands the runner endpoints.

pub mod describe;
pub mod endpoints;
pub mod kind;
#[cfg(feature = "reference-proxy")]
pub mod local;

use crate::audit::{AuditCursor, AuditLines};
use crate::scenario::{Capability, Scenario};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// What the runner talks to on any stack.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Endpoints {
    /// Base URL for gateway traffic (`http://127.0.0.1:PORT`); requests carry the route's Host header.
    pub gateway_url: String,
    /// Prometheus HTTP API base URL.
    pub prometheus_url: String,
    /// The scrape pool the PodMonitor became (`podMonitor/<ns>/<name>/0`), for the `up` check.
    pub scrape_pool: String,
}

/// Where one scenario's objects live on the stack.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScenarioEnv {
    /// The scenario's name.
    pub scenario: String,
    /// Namespace of the WAF policy (the `namespace` label's source).
    pub namespace: String,
    /// The policy name as applied (dashes intact).
    pub policy: String,
    /// Name of the Gateway whose proxy serves the route.
    pub gateway: String,
    /// Namespace of that Gateway.
    pub gateway_namespace: String,
    /// Hostname the scenario's route matches.
    pub host: String,
}

/// Which WAF filter runs on a stack: reports name it, and filter-dependent expectations are chosen by its flavour.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilterInfo {
    /// The flavour scenarios key filter-dependent values by (`stand-in`, `coraza-proxy-wasm-release`, ...).
    pub flavour: String,
    /// What runs, for people (`stand-in filter (waf-e2e) + ModSecurity v3.0.9 + OWASP CRS 3.3.4`).
    pub description: String,
    /// The Envoy that runs it, when known (`1.37.0`).
    pub envoy_version: Option<String>,
}

/// How far one request got to the backend, as the backend recorded it by correlation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendReach {
    /// The backend received the headers and the whole body.
    Complete,
    /// The backend received the headers, but the body never completed.
    HeadersOnly,
    /// The backend never saw the request.
    Never,
}

impl std::fmt::Display for BackendReach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendReach::Complete => "the backend received it complete",
            BackendReach::HeadersOnly => "the backend received only its headers (the body never arrived)",
            BackendReach::Never => "the backend never saw it",
        })
    }
}

/// A place to run scenarios: the local stand-in stack, or a Kubernetes cluster.
#[async_trait::async_trait]
pub trait Stack: Send + Sync {
    /// Short name for reports (`local`, `kind`, `cluster`).
    fn name(&self) -> &str;
    /// Endpoints for traffic, Prometheus and the scrape pool, as they are now (a copy: the local
    /// stack's scrape pool follows a renamed PodMonitor).
    fn endpoints(&self) -> Endpoints;
    /// What this stack's WAF filter can do; scenarios needing more are skipped with the reason.
    fn capabilities(&self) -> &[Capability];
    /// The WAF filter (and Envoy) in use.
    fn filter(&self) -> &FilterInfo;
    /// Installs the scenario's policy, route and backend; returns where they live.
    async fn install_scenario(&self, scenario: &Scenario) -> Result<ScenarioEnv>;
    /// Removes what `install_scenario` created.
    async fn remove_scenario(&self, env: &ScenarioEnv) -> Result<()>;
    /// The current end of every audit source.
    async fn audit_cursor(&self) -> Result<AuditCursor>;
    /// Complete audit-log lines written after `cursor`.
    async fn audit_lines_since(&self, cursor: &AuditCursor) -> Result<AuditLines>;
    /// The proxies' raw `/stats/prometheus` text, for diagnostics.
    async fn raw_stats(&self) -> Result<String>;
    /// Writes a diagnostics bundle for a failed scenario into `dir`.
    async fn diagnostics(&self, env: &ScenarioEnv, dir: &Path) -> Result<()>;
    /// Stops everything the stack started.
    async fn shutdown(&self) -> Result<()>;
    /// How far each of these requests got to the backend; `None` where the stack cannot tell (then
    /// `reaches_backend` expectations are reported as not checked).
    async fn backend_reach(&self, _correlation_ids: &[String]) -> Result<Option<BTreeMap<String, BackendReach>>> {
        Ok(None)
    }
    /// How many times the audit log has been flushed with nothing left buffered (Envoy's
    /// `filesystem.flushed_by_timer` while `write_total_buffered` is 0); `None` where the stack cannot
    /// tell, and the runner then waits for Envoy's flush interval to pass instead.
    async fn audit_flushes(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    /// Makes the proxies write every audit line logged so far, and waits until they have: `Some(how)`
    /// for the report, `None` where this stack does not (the runner then waits for their own flush).
    async fn flush_audit_log(&self) -> Result<Option<String>> {
        Ok(None)
    }
    /// What in the resources under test would keep audit lines from the collector (e.g. an EnvoyProxy
    /// without `--log-path /access_logs/envoy.log`), each naming the resource; added to audit failures.
    fn audit_hints(&self) -> Vec<String> {
        Vec::new()
    }
    /// Files of the running stack that `diagnostics` copies into the bundle: (live path, file name in
    /// the bundle), so failure messages can point at the copy that outlives the run.
    fn bundle_copies(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// What the reports say about the system under test; `None` where the stack does not know.
    fn facts(&self) -> StackFacts {
        let filter = self.filter();
        StackFacts {
            profile: None,
            envoy_version: filter.envoy_version.clone(),
            filter: Some(format!("{} (flavour {})", filter.description, filter.flavour)),
        }
    }
    /// `Err` naming the part that died (e.g. "Prometheus exited"); the runner polls it to fail fast.
    async fn health(&self) -> Result<()> {
        Ok(())
    }
}

/// What a stack knows about the system under test, for the reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackFacts {
    /// The stack profile (`oss`, `tigera`).
    pub profile: Option<String>,
    /// The Envoy version that serves the traffic (`1.37.0`).
    pub envoy_version: Option<String>,
    /// The WAF filter (the real one and its version, or the stand-in).
    pub filter: Option<String>,
}

/// Which stack `run` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StackKind {
    /// A new kind cluster with Calico, Envoy Gateway and Prometheus.
    Kind,
    /// An existing cluster from `--kubeconfig`/`--context`.
    Cluster,
    /// Real Prometheus and the reference proxy (a stand-in for Envoy + WAF) on loopback.
    Local,
    /// A deployment the harness did not start, reached through `--gateway-url`, `--prometheus-url`, ...
    Endpoints,
}

impl std::fmt::Display for StackKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StackKind::Kind => "kind",
            StackKind::Cluster => "cluster",
            StackKind::Local => "local",
            StackKind::Endpoints => "endpoints",
        })
    }
}

/// Everything a stack needs to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Which stack.
    pub kind: StackKind,
    /// The rendered resources under test.
    pub rendered: std::path::PathBuf,
    /// Prometheus scrape interval (local stack).
    pub scrape_interval: std::time::Duration,
    /// Every deadline.
    pub timeouts: crate::timeouts::Timeouts,
    /// Unique id of this run.
    pub run_id: String,
    /// Leave the cluster after the run.
    pub keep: bool,
    /// Reuse a kept kind cluster.
    pub reuse: Option<String>,
    /// kind profile name.
    pub profile: String,
    /// Existing cluster's kubeconfig.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Context in that kubeconfig.
    pub context: Option<String>,
    /// Skip installing the stack on the cluster.
    pub no_install: bool,
    /// The Envoy binary for the local stack (`None`: `WAF_E2E_ENVOY`, the project-local install, PATH).
    pub envoy: Option<std::path::PathBuf>,
    /// A proxy-wasm WAF filter for the local stack to load instead of the stand-in.
    pub waf_wasm: Option<std::path::PathBuf>,
    /// The flavour of `waf_wasm`, for filter-dependent expectations.
    pub waf_flavour: Option<String>,
    /// How the local stack's audit wait learns the log is complete (ask Envoy, or its timer).
    pub audit_flush: crate::envoy::AuditFlush,
    /// Child processes or containers (local stack).
    pub runtime: crate::container::Runtime,
    /// Where the deployment of the endpoints stack is.
    pub endpoints: endpoints::EndpointsArgs,
}

impl StackOptions {
    /// The kind / existing-cluster part of these options.
    pub fn cluster_opts(&self) -> kind::ClusterOpts {
        kind::ClusterOpts {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            no_install: self.no_install,
            keep: self.keep,
            reuse: self.reuse.clone(),
            profile: self.profile.clone(),
            rendered: self.rendered.clone(),
            run_id: Some(self.run_id.clone()),
            timeouts: self.timeouts.clone(),
            ..kind::ClusterOpts::default()
        }
    }
}

/// Starts the stack `opts.kind` names.
pub async fn start(opts: &StackOptions, scenarios: &[Scenario]) -> Result<Box<dyn Stack>> {
    match opts.kind {
        #[cfg(feature = "reference-proxy")]
        StackKind::Local => Ok(Box::new(local::LocalStack::start(&local::LocalOptions::from_stack_options(opts)).await?)),
        #[cfg(not(feature = "reference-proxy"))]
        StackKind::Local => Err(crate::error::HarnessError::Usage("the local stack needs the `reference-proxy` feature (build without --no-default-features)".into()).into()),
        StackKind::Kind | StackKind::Cluster => Ok(Box::new(kind::KindStack::up(&opts.cluster_opts(), scenarios).await?)),
        StackKind::Endpoints => Ok(Box::new(endpoints::EndpointsStack::connect(&opts.endpoints, &opts.timeouts).await?)),
    }
}
