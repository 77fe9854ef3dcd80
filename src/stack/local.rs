//! The local stack: real Prometheus (from PATH) scraping the reference proxy, all on loopback.
//!
//! The reference proxy is a STAND-IN for an Envoy Gateway proxy with the WAF filter; Prometheus,
//! the PodMonitor translation, ModSecurity + CRS and HTTP are real.

use super::{AuditCursor, AuditLines, Endpoints, ScenarioEnv, Stack, StackOptions};
use crate::prometheus::PrometheusProcess;
use crate::proxy::{Faults, PolicyAttachment, ProxyConfig, ProxyPorts, ReferenceProxy};
use crate::rendered::{render_scrape_config, PodTarget, RenderedSet};
use crate::scenario::{Capability, Scenario};
use crate::timeouts::Timeouts;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::Mutex;

/// The Gateway the reference proxy plays.
pub const GATEWAY: &str = "waf-e2e-gw";
/// That Gateway's namespace.
pub const GATEWAY_NAMESPACE: &str = "waf-e2e";

/// Options of the local stack.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The rendered resources (the PodMonitor is translated for Prometheus).
    pub rendered: PathBuf,
    /// Prometheus scrape interval.
    pub scrape_interval: Duration,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// Faults injected into the reference proxy (the harness's own negative tests).
    pub faults: Faults,
    /// Fixed loopback ports (`None`: free ones); the fault tests occupy one to see the start fail.
    pub ports: LocalPorts,
}

/// Loopback ports the local stack binds; `None` picks a free one.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalPorts {
    /// The reference proxy's data plane.
    pub gateway: Option<u16>,
    /// The reference proxy's admin (`/stats/prometheus`).
    pub admin: Option<u16>,
    /// Prometheus' web listener.
    pub prometheus: Option<u16>,
}

impl LocalOptions {
    /// The local-stack part of the CLI's stack options.
    pub fn from_stack_options(o: &StackOptions) -> Self {
        LocalOptions { rendered: o.rendered.clone(), scrape_interval: o.scrape_interval, timeouts: o.timeouts.clone(), faults: Faults::default(), ports: LocalPorts::default() }
    }
}

/// Prometheus + reference proxy + echo backend on loopback, with a temporary directory for logs and data.
pub struct LocalStack {
    endpoints: Endpoints,
    proxy: Mutex<Option<ReferenceProxy>>,
    prometheus: Mutex<Option<PrometheusProcess>>,
    admin_addr: std::net::SocketAddr,
    audit_log: PathBuf,
    prometheus_config: String,
    _dir: crate::rundir::RunDir,
}

impl LocalStack {
    /// Starts the proxy, translates the PodMonitor for it, and starts Prometheus scraping it.
    pub async fn start(opts: &LocalOptions) -> Result<LocalStack> {
        let rendered = RenderedSet::load(&opts.rendered).with_context(|| format!("load rendered resources from {}", opts.rendered.display()))?;
        let dir = crate::rundir::RunDir::create_unique("local").context("create the local stack's run directory")?;
        let audit_log = dir.path().join("access_logs").join("envoy.log");
        std::fs::create_dir_all(audit_log.parent().unwrap_or(dir.path())).context("create access_logs directory")?;
        let proxy = ReferenceProxy::start(ProxyConfig {
            gateway: GATEWAY.into(),
            gateway_namespace: GATEWAY_NAMESPACE.into(),
            audit_log: audit_log.clone(),
            faults: opts.faults.clone(),
            ports: ProxyPorts { listen: opts.ports.gateway, admin: opts.ports.admin },
        })
        .await
        .context("start the reference proxy")?;
        let admin_addr = proxy.admin_addr();
        let target = PodTarget::envoy_gateway_proxy(admin_addr.to_string(), GATEWAY, GATEWAY_NAMESPACE);
        let prometheus_config = render_scrape_config(&rendered.podmonitor, &target, opts.scrape_interval)
            .context("translate the PodMonitor into a Prometheus scrape config")?;
        let prometheus = PrometheusProcess::start_on(&prometheus_config, &opts.timeouts, opts.ports.prometheus).await.context("start Prometheus")?;
        let endpoints = Endpoints {
            gateway_url: format!("http://{}", proxy.listen_addr()),
            prometheus_url: prometheus.url().to_string(),
            scrape_pool: rendered.podmonitor.job_name(0),
        };
        Ok(LocalStack {
            endpoints,
            proxy: Mutex::new(Some(proxy)),
            prometheus: Mutex::new(Some(prometheus)),
            admin_addr,
            audit_log,
            prometheus_config,
            _dir: dir,
        })
    }

    /// Prometheus' process id while it runs (fault tests kill it).
    pub async fn prometheus_pid(&self) -> Option<u32> {
        self.prometheus.lock().await.as_ref().and_then(PrometheusProcess::pid)
    }

    /// Prometheus' temporary directory (its command line names it, so a test can `pgrep -f` it).
    pub async fn prometheus_dir(&self) -> Option<PathBuf> {
        self.prometheus.lock().await.as_ref().map(|p| p.dir().to_path_buf())
    }

    /// Stops the reference proxy's listeners mid-run, as if the proxy died (fault tests).
    pub async fn kill_proxy(&self) {
        if let Some(proxy) = self.proxy.lock().await.as_ref() {
            proxy.stop_listeners();
        }
    }

    /// The scenario's policy namespace on this stack.
    pub fn namespace_of(scenario: &Scenario) -> String {
        format!("waf-e2e-{}", scenario.name())
    }
}

#[async_trait::async_trait]
impl Stack for LocalStack {
    fn name(&self) -> &str {
        "local"
    }

    fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    fn capabilities(&self) -> &[Capability] {
        &[Capability::Blocking, Capability::WouldBlockCounter, Capability::AuditLog]
    }

    async fn install_scenario(&self, scenario: &Scenario) -> Result<ScenarioEnv> {
        let env = ScenarioEnv {
            scenario: scenario.name().to_string(),
            namespace: Self::namespace_of(scenario),
            policy: scenario.policy.name.value.clone(),
            gateway: GATEWAY.into(),
            gateway_namespace: GATEWAY_NAMESPACE.into(),
            host: format!("{}.waf-e2e.test", scenario.name()),
        };
        let attachment = PolicyAttachment {
            host: env.host.clone(),
            policy: env.policy.clone(),
            namespace: env.namespace.clone(),
            mode: scenario.policy.mode,
            crs: scenario.policy.rules.crs,
            directives: scenario.policy.rules.directives.as_ref().map(|d| d.value.clone()),
            extra_metric_labels: vec![("authority".into(), env.host.clone())],
        };
        let proxy = self.proxy.lock().await;
        let proxy = proxy.as_ref().context("the reference proxy was shut down")?;
        proxy.attach(attachment).await.with_context(|| format!("attach policy {}/{} to host {}", env.namespace, env.policy, env.host))?;
        Ok(env)
    }

    async fn remove_scenario(&self, env: &ScenarioEnv) -> Result<()> {
        if let Some(proxy) = self.proxy.lock().await.as_ref() {
            proxy.detach(&env.host).await;
        }
        Ok(())
    }

    async fn audit_cursor(&self) -> Result<AuditCursor> {
        let len = match tokio::fs::metadata(&self.audit_log).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).with_context(|| format!("stat {}", self.audit_log.display())),
        };
        Ok(AuditCursor([(self.audit_log.display().to_string(), len)].into()))
    }

    async fn audit_lines_since(&self, cursor: &AuditCursor) -> Result<AuditLines> {
        let source = self.audit_log.display().to_string();
        let offset = cursor.0.get(&source).copied().unwrap_or(0);
        let bytes = match tokio::fs::read(&self.audit_log).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("read {}", self.audit_log.display())),
        };
        let read = crate::k8s::audit::plan_read(offset, bytes.len() as u64);
        if read.rotated {
            tracing::warn!("{source} shrank below the audit cursor ({offset} bytes); reading it from the start");
        }
        let from = usize::try_from(read.from).unwrap_or(usize::MAX).min(bytes.len());
        let (lines, _) = crate::k8s::audit::split_complete_lines(read.from, &bytes[from..]);
        Ok(AuditLines { lines: lines.into_iter().map(|l| (source.clone(), l)).collect() })
    }

    async fn raw_stats(&self) -> Result<String> {
        let url = format!("http://{}/stats/prometheus", self.admin_addr);
        let resp = reqwest::get(&url).await.with_context(|| format!("GET {url}"))?;
        resp.text().await.with_context(|| format!("read GET {url}"))
    }

    async fn diagnostics(&self, env: &ScenarioEnv, dir: &Path) -> Result<()> {
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).with_context(|| format!("write {name}"));
        write("prometheus.yml", self.prometheus_config.clone())?;
        write("raw-stats.txt", self.raw_stats().await.unwrap_or_else(|e| format!("could not read: {e:#}")))?;
        let targets = reqwest::get(format!("{}/api/v1/targets", self.endpoints.prometheus_url)).await;
        let targets = match targets {
            Ok(r) => r.text().await.unwrap_or_else(|e| format!("could not read: {e:#}")),
            Err(e) => format!("could not read: {e:#}"),
        };
        write("prometheus-targets.json", targets)?;
        let audit = std::fs::read_to_string(&self.audit_log).unwrap_or_default();
        let ours: Vec<&str> = audit.lines().filter(|l| l.contains(&env.scenario)).collect();
        write("audit-log.txt", ours.join("\n"))
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
        match self.proxy.lock().await.as_ref() {
            None => anyhow::bail!("the reference proxy was shut down"),
            Some(p) => p.health(),
        }
    }

    async fn shutdown(&self) -> Result<()> {
        let mut errors = Vec::new();
        if let Some(p) = self.prometheus.lock().await.take() {
            if let Err(e) = p.stop().await {
                errors.push(format!("stop Prometheus: {e:#}"));
            }
        }
        if let Some(p) = self.proxy.lock().await.take() {
            if let Err(e) = p.shutdown().await {
                errors.push(format!("stop the reference proxy: {e:#}"));
            }
        }
        if errors.is_empty() { Ok(()) } else { anyhow::bail!(errors.join("; ")) }
    }
}
