//! The local stack: a real Envoy (the release Envoy Gateway pins) configured from the rendered
//! EnvoyProxy and the profile's WAF policy template as Envoy Gateway would configure it, a real
//! Prometheus fed the PodMonitor's translation, and a recording echo backend, all on loopback.
//!
//! The WAF filter module is the one pluggable part: `--waf-wasm FILE` loads any proxy-wasm filter
//! (then nothing here is simulated); by default the stand-in filter (`filter/standin.c`) asks the
//! reference WAF service (`crate::waf`: ModSecurity + CRS) for each decision.

pub mod echo;
mod parts;
mod policy_enforcement;
mod reload;
mod routes;

pub use reload::AttachInfo;

use super::{BackendReach, Endpoints, FilterInfo, ScenarioEnv, Stack, StackOptions};
use crate::audit::{AuditCursor, AuditLines};
use crate::envoy::{EnvoyProcess, RouteSpec};
use crate::prometheus::PrometheusProcess;
use crate::scenario::{Capability, Scenario};
use crate::timeouts::Timeouts;
use anyhow::{Context, Result};
use echo::EchoBackend;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::Mutex;

/// The Gateway the local Envoy plays.
pub const GATEWAY: &str = "waf-e2e-gw";
/// That Gateway's namespace.
pub const GATEWAY_NAMESPACE: &str = "waf-e2e";
/// The flavour of the default filter, as scenarios key filter-dependent values.
pub const STAND_IN_FLAVOUR: &str = "stand-in";

/// Options of the local stack.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The rendered resources (EnvoyProxy -> Envoy's arguments; PodMonitor -> Prometheus).
    pub rendered: PathBuf,
    /// Where `kind/profiles/` lives (the WAF policy template is the profile's, as on kind).
    pub root: PathBuf,
    /// The profile whose WAF policy template each scenario's policy is rendered from.
    pub profile: String,
    /// Prometheus scrape interval.
    pub scrape_interval: Duration,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// The Envoy binary (`None`: `WAF_E2E_ENVOY`, the project-local install, PATH).
    pub envoy: Option<PathBuf>,
    /// A proxy-wasm filter to load instead of the stand-in.
    pub waf_wasm: Option<PathBuf>,
    /// The flavour of `waf_wasm` (`None`: the profile's filter flavour).
    pub waf_flavour: Option<String>,
    /// Faults injected into the reference WAF service (the harness's own negative tests).
    pub faults: crate::waf::Faults,
    /// Prometheus' port (`None`: a free one); the fault tests occupy one to see the start fail.
    pub prometheus_port: Option<u16>,
    /// Ask Envoy to write its log after the traffic, or wait for its timer.
    pub audit_flush: crate::envoy::AuditFlush,
    /// Child processes, or containers of the given images (`--runtime docker`).
    pub runtime: crate::container::Runtime,
}

impl LocalOptions {
    /// The local-stack part of the CLI's stack options.
    pub fn from_stack_options(o: &StackOptions) -> Self {
        LocalOptions {
            rendered: o.rendered.clone(),
            root: PathBuf::from("."),
            profile: o.profile.clone(),
            scrape_interval: o.scrape_interval,
            timeouts: o.timeouts.clone(),
            envoy: o.envoy.clone(),
            waf_wasm: o.waf_wasm.clone(),
            waf_flavour: o.waf_flavour.clone(),
            faults: crate::waf::Faults::default(),
            prometheus_port: None,
            audit_flush: o.audit_flush,
            runtime: o.runtime.clone(),
        }
    }
}

/// Envoy + Prometheus + echo backend (+ the reference WAF service for the stand-in) on loopback.
pub struct LocalStack {
    /// Behind a lock: a renamed PodMonitor changes the scrape pool (`apply_render`).
    endpoints: std::sync::RwLock<Endpoints>,
    filter: FilterInfo,
    capabilities: Vec<Capability>,
    parts: std::sync::RwLock<std::sync::Arc<parts::Parts>>,
    extra_clusters: Vec<(String, std::net::SocketAddr)>,
    // Shared out of the lock: an update or a flush waits on Envoy without holding up health checks.
    envoy: Mutex<Option<std::sync::Arc<EnvoyProcess>>>,
    prometheus: Mutex<Option<PrometheusProcess>>,
    waf: Mutex<Option<crate::waf::ReferenceWaf>>,
    echo: EchoBackend,
    routes: routes::RouteTable,
    dir: crate::rundir::RunDir,
    audit_flush: crate::envoy::AuditFlush,
    flushes: crate::envoy::log_flush::SharedFlush,
    timeouts: Timeouts,
    opts: LocalOptions,
    scrape_target: Mutex<String>,
    prometheus_config: Mutex<String>,
    rendered_now: Mutex<PathBuf>,
    module_now: Mutex<Option<PathBuf>>,
    // Last: dropped after the containers above, so the network is free to remove.
    docker: Option<std::sync::Arc<crate::container::DockerSession>>,
}

impl LocalStack {
    /// Starts everything and waits until Envoy serves and Prometheus is ready.
    pub async fn start(opts: &LocalOptions) -> Result<LocalStack> {
        let dir = crate::rundir::RunDir::create_unique("local").context("create the local stack's run directory")?;
        let parts = parts::Parts::load(opts, dir.path())?;
        let docker = match &opts.runtime {
            crate::container::Runtime::Docker(images) => Some(crate::container::DockerSession::create(dir.path(), images.clone()).await?),
            crate::container::Runtime::Native => None,
        };
        // Where Envoy reaches the harness: loopback, or the private network's gateway from a container.
        let services_ip = docker.as_ref().map_or(std::net::Ipv4Addr::LOCALHOST.into(), |d| d.gateway());
        let echo = EchoBackend::start_on(services_ip).await.with_context(|| match &docker {
            // Docker Desktop's networks live in its VM: their gateway is no address of this host.
            Some(d) => format!("the Docker network {}'s gateway {services_ip} is not an address of this host (Docker Desktop?); \
                `--runtime docker` needs an engine on this host's kernel (docs/containers.md)", d.network()),
            None => "start the echo backend".to_string(),
        })?;
        let (module, filter, capabilities, waf) = match &opts.waf_wasm {
            Some(file) => {
                let flavour = opts.waf_flavour.clone().unwrap_or_else(|| parts.profile_flavour());
                anyhow::ensure!(file.is_file(), "--waf-wasm {}: no such file", file.display());
                let info = FilterInfo { flavour, description: format!("{} (--waf-wasm)", file.display()), envoy_version: None };
                (file.clone(), info, parts.profile.capabilities.clone(), None)
            }
            None => {
                let module = crate::filter::standin::build_standin(&crate::filter::build::default_cache_dir())?;
                let waf = crate::waf::ReferenceWaf::start_on(opts.faults, services_ip).context("start the reference WAF service")?;
                let info = FilterInfo {
                    flavour: STAND_IN_FLAVOUR.into(),
                    description: format!("stand-in filter (waf-e2e, filter/standin.c) deciding with {}", waf.describe()),
                    envoy_version: None,
                };
                (module, info, vec![Capability::Blocking, Capability::WouldBlockCounter, Capability::AuditLog], Some(waf))
            }
        };
        let extra_clusters: Vec<_> = waf.iter().map(|w| (crate::waf::CALLOUT_CLUSTER.to_string(), w.addr())).collect();
        // A container sees only the run directory: the module goes into it.
        let module = if docker.is_some() { reload::copy_module_into(dir.path(), &module)? } else { module };
        let envoy = parts.start_envoy(opts, dir.path(), extra_clusters.clone(), docker.as_ref()).await?;
        let envoy_version = match &docker {
            Some(session) => format!("{} (container of {})", envoy.version(), session.images().envoy),
            None => envoy.version().to_string(),
        };
        let filter = FilterInfo { envoy_version: Some(envoy_version), ..filter };
        let scrape_target = envoy.scrape_address().map(str::to_string).with_context(|| format!("{} disables the Prometheus endpoint (spec.telemetry.metrics.prometheus.disable), so no proxy can be scraped", parts.launch.source))?;
        // Calico's verdict on Prometheus -> the proxy's metrics port: when the policies deny it, a
        // cluster's Prometheus sees the target down, so this one is given a target that refuses.
        let policy = crate::stack::policy::offline(&opts.root, &parts.profile, &parts.rendered)?;
        let denied = policy.scrape().filter(|v| !v.ok).cloned();
        let refused = denied.as_ref().map(|_| policy_enforcement::refused_target(&scrape_target)).transpose()?;
        let prometheus_target = refused.as_ref().map_or(scrape_target.as_str(), |r| r.address.as_str());
        let prometheus_config = parts.scrape_config(prometheus_target, opts.scrape_interval)?;
        let prometheus_runtime = match &docker {
            Some(session) => crate::prometheus::PrometheusRuntime::Container(session.clone()),
            None => crate::prometheus::PrometheusRuntime::Native,
        };
        let prometheus = PrometheusProcess::start_in(&prometheus_runtime, &prometheus_config, &opts.timeouts, opts.prometheus_port).await.context("start Prometheus")?;
        let endpoints = Endpoints {
            gateway_url: format!("http://{}", envoy.gateway_addr()),
            prometheus_url: prometheus.url().to_string(),
            scrape_pool: parts.rendered.podmonitor.job_name(0),
        };
        if let Some(denied) = denied {
            // Envoy and Prometheus are dropped (killed and reaped) with the error.
            return Err(policy_enforcement::target_down(&endpoints, &denied, opts.timeouts.target_up).await?.into());
        }
        let parts = parts.with_module(module);
        let prometheus_config = Mutex::new(prometheus_config);
        tracing::info!(envoy = %envoy.version(), filter = %filter.description, "local stack up");
        Ok(LocalStack {
            endpoints: std::sync::RwLock::new(endpoints),
            filter,
            capabilities,
            parts: std::sync::RwLock::new(std::sync::Arc::new(parts)),
            extra_clusters,
            envoy: Mutex::new(Some(std::sync::Arc::new(envoy))),
            prometheus: Mutex::new(Some(prometheus)),
            waf: Mutex::new(waf),
            echo,
            routes: routes::RouteTable::default(),
            dir,
            audit_flush: opts.audit_flush,
            flushes: crate::envoy::log_flush::SharedFlush::default(),
            timeouts: opts.timeouts.clone(),
            opts: opts.clone(),
            scrape_target: Mutex::new(scrape_target),
            prometheus_config,
            rendered_now: Mutex::new(opts.rendered.clone()),
            module_now: Mutex::new(None),
            docker,
        })
    }

    /// The translated inputs in force (replaced when an attached run changes the EnvoyProxy).
    fn parts(&self) -> std::sync::Arc<parts::Parts> {
        self.parts.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Prometheus' process id while it runs (fault tests kill it).
    pub async fn prometheus_pid(&self) -> Option<u32> {
        self.prometheus.lock().await.as_ref().and_then(PrometheusProcess::pid)
    }

    /// Prometheus' temporary directory (its command line names it, so a test can `pgrep -f` it).
    pub async fn prometheus_dir(&self) -> Option<PathBuf> {
        self.prometheus.lock().await.as_ref().map(|p| p.dir().to_path_buf())
    }

    /// Envoy's process id while it runs (fault tests kill it).
    pub async fn envoy_pid(&self) -> Option<u32> {
        self.envoy.lock().await.as_deref().and_then(EnvoyProcess::pid)
    }

    /// The run directory (Envoy's bootstrap, xDS files, logs and volumes).
    pub fn run_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The scenario's policy namespace on this stack.
    pub fn namespace_of(scenario: &Scenario) -> String {
        format!("waf-e2e-{}", scenario.name())
    }

    /// Installs `scenario`'s policy on a route that matches every Host (an HTTPRoute without
    /// hostnames: Envoy's `*` virtual host), for traffic that brings its own Host header (the CRS
    /// corpus). Only one such route can be installed at a time.
    pub async fn install_catch_all(&self, scenario: &Scenario) -> Result<ScenarioEnv> {
        self.install_for_host(scenario, "*".into()).await
    }

    /// Sets what a ClientTrafficPolicy on the Gateway would (e.g. accept HTTP/1.0); it takes effect
    /// with the next install or remove.
    pub async fn set_client_traffic(&self, client: crate::envoy::xds::ClientTraffic) -> Result<()> {
        self.envoy_now().await?.set_client_traffic(client);
        Ok(())
    }

    async fn install_for_host(&self, scenario: &Scenario, host: String) -> Result<ScenarioEnv> {
        let env = ScenarioEnv {
            scenario: scenario.name().to_string(),
            namespace: Self::namespace_of(scenario),
            policy: scenario.policy.name.value.clone(),
            gateway: GATEWAY.into(),
            gateway_namespace: GATEWAY_NAMESPACE.into(),
            host,
        };
        let route = match self.module_now.lock().await.as_deref() {
            Some(module) => self.parts().route_with_module(scenario, &env, self.echo.addr(), module),
            None => self.parts().route(scenario, &env, self.echo.addr()),
        };
        let route = route.with_context(|| format!("translate the WAF policy {}/{}", env.namespace, env.policy))?;
        self.change_routes(routes::Change::Put(env.scenario.clone(), route))
            .await
            .with_context(|| format!("configure Envoy with HTTPRoute {}/{} and its WAF policy", env.namespace, env.scenario))?;
        Ok(env)
    }

    /// The running Envoy, out of the lock (a restart or shutdown replaces what the lock holds).
    async fn envoy_now(&self) -> Result<std::sync::Arc<EnvoyProcess>> {
        self.envoy.lock().await.clone().context("Envoy was shut down")
    }

    /// Makes `change` to the installed routes, in one Envoy update with the changes made meanwhile.
    async fn change_routes(&self, change: routes::Change) -> Result<()> {
        self.routes.change(change, |all: Vec<RouteSpec>| async move { self.envoy_now().await?.set_routes(&all).await }).await
    }
}

#[async_trait::async_trait]
impl Stack for LocalStack {
    fn name(&self) -> &str {
        "local"
    }

    fn endpoints(&self) -> Endpoints {
        self.endpoints.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn capabilities(&self) -> &[Capability] {
        &self.capabilities
    }

    fn filter(&self) -> &FilterInfo {
        &self.filter
    }

    async fn install_scenario(&self, scenario: &Scenario) -> Result<ScenarioEnv> {
        self.install_for_host(scenario, format!("{}.waf-e2e.test", scenario.name())).await
    }

    async fn remove_scenario(&self, env: &ScenarioEnv) -> Result<()> {
        if self.routes.contains(&env.scenario) {
            self.change_routes(routes::Change::Remove(env.scenario.clone()))
                .await
                .with_context(|| format!("remove HTTPRoute {}/{} from Envoy", env.namespace, env.scenario))?;
        }
        Ok(())
    }

    async fn audit_cursor(&self) -> Result<AuditCursor> {
        let file = self.parts().audit_file();
        let len = match tokio::fs::metadata(&file).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).with_context(|| format!("stat {}", file.display())),
        };
        Ok(AuditCursor([(file.display().to_string(), len)].into()))
    }

    async fn audit_lines_since(&self, cursor: &AuditCursor) -> Result<AuditLines> {
        let file = self.parts().audit_file();
        let source = file.display().to_string();
        let bytes = match tokio::fs::read(&file).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("read {}", file.display())),
        };
        Ok(crate::audit::offsets::lines_after(cursor, &source, &bytes))
    }

    async fn raw_stats(&self) -> Result<String> {
        let envoy = self.envoy_now().await?;
        envoy.admin().get("/stats/prometheus").await.context("read Envoy's /stats/prometheus")
    }

    async fn backend_reach(&self, correlation_ids: &[String]) -> Result<Option<BTreeMap<String, BackendReach>>> {
        Ok(Some(self.echo.reach(correlation_ids)))
    }

    async fn audit_flushes(&self) -> Result<Option<u64>> {
        let envoy = self.envoy_now().await?;
        let stats = envoy.admin().stats(r"^filesystem\.(flushed_by_timer|write_total_buffered)$").await?;
        let flushed = match stats.get("filesystem.flushed_by_timer") {
            Some(v) => v.parse::<u64>().with_context(|| format!("filesystem.flushed_by_timer is `{v}`"))?,
            None => return Ok(None),
        };
        // A flush counts once its write is done: while bytes are still buffered, the newest flush may not be.
        let buffered = stats.get("filesystem.write_total_buffered").map_or(0, |v| v.parse::<u64>().unwrap_or(u64::MAX));
        Ok(Some(if buffered == 0 { flushed } else { flushed.saturating_sub(1) }))
    }

    async fn flush_audit_log(&self) -> Result<Option<String>> {
        if self.audit_flush != crate::envoy::AuditFlush::Admin {
            return Ok(None);
        }
        // Cloned out of the lock: the flush waits, and must not hold up routes or health checks.
        let admin = self.envoy.lock().await.as_ref().context("Envoy was shut down")?.admin().clone();
        self.flushes.flush(&admin, self.timeouts.audit_flushed).await.map(Some)
    }

    fn bundle_copies(&self) -> Vec<(String, String)> {
        let run = self.dir.path();
        vec![
            (self.parts().audit_file().display().to_string(), "audit-log.txt".into()),
            (run.join("envoy.stderr.log").display().to_string(), "envoy.stderr.log".into()),
            (run.join("bootstrap.json").display().to_string(), "envoy-bootstrap.json".into()),
        ]
    }

    fn audit_hints(&self) -> Vec<String> {
        self.parts().audit_hints()
    }

    async fn diagnostics(&self, env: &ScenarioEnv, dir: &Path) -> Result<()> {
        let raw = self.raw_stats().await.unwrap_or_else(|e| format!("could not read: {e:#}"));
        let (prometheus_log, prometheus_dir) = match self.prometheus.lock().await.as_ref() {
            Some(p) => (p.log_tail(200), Some(p.dir().to_path_buf())),
            None => ("Prometheus was shut down".into(), None),
        };
        let targets = match reqwest::get(format!("{}/api/v1/targets?state=any", self.endpoints().prometheus_url)).await {
            Ok(r) => r.text().await.unwrap_or_else(|e| format!("could not read: {e:#}")),
            Err(e) => format!("could not read: {e:#}"),
        };
        parts::write_bundle(dir, &parts::Bundle {
            run_dir: self.dir.path(),
            audit_file: &self.parts().audit_file(),
            scenario: env,
            raw_stats: &raw,
            prometheus_dir: prometheus_dir.as_deref(),
            prometheus_log: &prometheus_log,
            prometheus_targets: &targets,
        })
    }

    async fn health(&self) -> Result<()> {
        match self.prometheus.lock().await.as_mut() {
            None => anyhow::bail!("Prometheus was shut down"),
            Some(p) => {
                if let Some(status) = p.exit_status()? {
                    anyhow::bail!("Prometheus exited ({status}) during the run; its log ends with:\n{}", p.log_tail(5));
                }
            }
        }
        match self.envoy.lock().await.as_ref() {
            None => anyhow::bail!("Envoy was shut down"),
            Some(e) => e.health()?,
        }
        if let Some(waf) = self.waf.lock().await.as_ref() {
            waf.health()?;
        }
        self.echo.health()
    }

    async fn shutdown(&self) -> Result<()> {
        let mut errors = Vec::new();
        if let Some(p) = self.prometheus.lock().await.take() {
            if let Err(e) = p.stop().await {
                errors.push(format!("stop Prometheus: {e:#}"));
            }
        }
        if let Some(e) = self.envoy.lock().await.take() {
            if let Err(e) = e.stop().await {
                errors.push(format!("stop Envoy: {e:#}"));
            }
        }
        if let Some(w) = self.waf.lock().await.take() {
            if let Err(e) = w.shutdown().await {
                errors.push(format!("stop the reference WAF service: {e:#}"));
            }
        }
        if let Some(docker) = &self.docker {
            if let Err(e) = docker.remove().await {
                errors.push(format!("{e:#}"));
            }
        }
        if errors.is_empty() { Ok(()) } else { anyhow::bail!(errors.join("; ")) }
    }
}
