//! A running local stack taking a changed render (for `waf-e2e up` and attached runs), and what it
//! tells an attaching user.
//!
//! A changed PodMonitor is applied without restarting anything: its new translation is written to
//! Prometheus' config file and Prometheus reloads it (`POST /-/reload`). The scrape pool's series
//! then come from the new relabeling from the next scrape on; the runner's baseline is a scrape
//! after the reload, so the baseline-and-two-scrapes rule holds unchanged.
//!
//! A changed EnvoyProxy changes Envoy's command line: Envoy is restarted (stopped, then started from
//! the new translation on the same admin, metrics and gateway ports, so the endpoints and
//! Prometheus' target stay), and the installed routes are written to it again. The counters start
//! from zero in the new process; the runner's baseline is taken after, so nothing is lost.

use super::parts::Parts;
use super::LocalStack;
use crate::stack::Stack;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the parts of a running local stack are, for people attaching tools to it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AttachInfo {
    /// The stack's run directory (Envoy's bootstrap, xDS files, logs).
    pub run_dir: PathBuf,
    /// Envoy's admin listener.
    pub envoy_admin: SocketAddr,
    /// The directory of Envoy's watched LDS/CDS files.
    pub envoy_xds_dir: PathBuf,
    /// The file the audit collector reads (Envoy's `--log-path`, mapped into the run).
    pub audit_file: PathBuf,
    /// Prometheus' config file (rewritten and reloaded when the PodMonitor changes).
    pub prometheus_config: PathBuf,
    /// The reference WAF service (stand-in filter only).
    pub waf_service: Option<SocketAddr>,
    /// The rendered resources the stack runs now.
    pub rendered: PathBuf,
    /// How Envoy and Prometheus run (`native processes`, `docker containers (...)`), as reports say it.
    pub runtime: String,
}

impl LocalStack {
    /// Where the running parts are.
    pub async fn attach_info(&self) -> Result<AttachInfo> {
        let envoy_admin = self.envoy.lock().await.as_ref().context("Envoy was shut down")?.admin_addr();
        let prometheus_config = self.prometheus.lock().await.as_ref().context("Prometheus was shut down")?.config_path();
        let waf_service = self.waf.lock().await.as_ref().map(crate::waf::ReferenceWaf::addr);
        Ok(AttachInfo {
            run_dir: self.dir.path().to_path_buf(),
            envoy_admin,
            envoy_xds_dir: self.dir.path().join("xds"),
            audit_file: self.parts().audit_file(),
            prometheus_config,
            waf_service,
            rendered: self.rendered_now.lock().await.clone(),
            runtime: self.opts.runtime.describe(),
        })
    }

    /// Whether a scenario of this name is installed now (an attached run must not take over another's).
    pub async fn is_installed(&self, scenario: &str) -> bool {
        self.routes.contains(scenario)
    }

    /// Removes the scenario `name` if it is installed (an attached run knows it by name).
    pub async fn remove_named(&self, name: &str) -> Result<()> {
        if self.routes.contains(name) {
            self.change_routes(super::routes::Change::Remove(name.to_string())).await.with_context(|| format!("remove scenario {name}'s route from Envoy"))?;
        }
        Ok(())
    }

    /// Loads the filter module `module` for every scenario installed from now on. It is copied into the
    /// run under a name made of its content's hash, so Envoy sees a changed configuration and loads it.
    pub async fn swap_module(&self, module: &std::path::Path) -> Result<PathBuf> {
        let copy = copy_module_into(self.dir.path(), module)?;
        *self.module_now.lock().await = Some(copy.clone());
        Ok(copy)
    }

    /// What the offline policy verdict of the render running now fails, if anything: a data-plane
    /// flow the render changes, or the scrape it denies. A running stack keeps the scrape target it
    /// started with (a render applied later is not enforced on it), so callers running scenarios
    /// after [`LocalStack::apply_render`] fail them with this instead of letting them pass.
    pub fn offline_policy_failure(&self) -> Result<Option<crate::error::BrokenResource>> {
        let parts = self.parts();
        let policy = crate::stack::policy::offline(&self.opts.root, &parts.profile, &parts.rendered)?;
        Ok(policy.data_plane_broken().or_else(|| policy.scrape_denied()))
    }

    /// Applies the render in `rendered` to the running stack; says what changed, in sentences.
    pub async fn apply_render(&self, rendered: &std::path::Path) -> Result<Vec<String>> {
        let opts = super::LocalOptions { rendered: rendered.to_path_buf(), ..self.opts.clone() };
        let current = self.parts();
        let next = Parts::load(&opts, self.dir.path())?.with_module(current.module().to_path_buf());
        // A renamed PodMonitor is a new scrape pool (and job): the reload below switches to it.
        let pool = next.rendered.podmonitor.job_name(0);
        let pool_before = self.endpoints().scrape_pool;
        let mut changes = Vec::new();
        if next.launch != current.launch {
            if !next.launch.prometheus {
                bail!("{} disables the Prometheus endpoint (spec.telemetry.metrics.prometheus.disable), so no proxy can be scraped", next.launch.source);
            }
            self.restart_envoy(&opts, &next).await.with_context(|| format!("restart Envoy with the changed {}", next.launch.source))?;
            changes.push(format!("Envoy restarted (same ports) with the changed {} of {}", next.launch.source, rendered.display()));
        }
        let target = self.scrape_target.lock().await.clone();
        let config = next.scrape_config(&target, self.opts.scrape_interval)?;
        let mut config_now = self.prometheus_config.lock().await;
        if *config_now != config {
            let prom = crate::assert::prom::PromClient::new(&self.endpoints().prometheus_url)?;
            let reloaded_at = prom.server_time().await?;
            {
                // Released before the wait below: the health check needs this lock meanwhile.
                let prometheus = self.prometheus.lock().await;
                let prometheus = prometheus.as_ref().context("Prometheus was shut down")?;
                prometheus.reload(&config).await.with_context(|| format!("reload Prometheus with the PodMonitor of {}", rendered.display()))?;
            }
            *config_now = config;
            self.endpoints.write().unwrap_or_else(|p| p.into_inner()).scrape_pool = pool.clone();
            self.previous_series_gone(&prom, reloaded_at).await?;
            let renamed = if pool != pool_before { format!(" (renamed: the scrape pool was {pool_before})") } else { String::new() };
            changes.push(format!("Prometheus reloaded with the changed PodMonitor {} of {}{renamed}", pool, rendered.display()));
        }
        *self.parts.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(next);
        *self.rendered_now.lock().await = rendered.to_path_buf();
        Ok(changes)
    }

    /// Waits until the pool was scraped with the reloaded config and no series of the previous config
    /// remains visible. Measured: a reload writes no staleness markers, so for a scrape or two an
    /// instant query still returned the old relabeling's series beside the new ones, and a baseline
    /// taken then compared the wrong series. After a rename the pool is the new one: the old job's
    /// series linger until stale, but every query of the runner names the pool's job, so none reads them.
    async fn previous_series_gone(&self, prom: &crate::assert::prom::PromClient, reloaded_at: f64) -> Result<()> {
        use crate::assert::prom::quote;
        use crate::wait::{self, Check};
        let pool = &self.endpoints().scrape_pool;
        let deadline = self.timeouts.next_scrape * 2;
        wait::until(&format!("scrape pool {pool} scraped with the reloaded config and the previous config's series stale"), deadline, || async {
            let Some(job) = prom.targets(pool).await?.first().and_then(|t| t.labels.get("job").cloned()) else {
                // No active target: the runner names the PodMonitor that selects no proxy.
                return Ok(Check::Met(()));
            };
            let job = quote(&job);
            let newest = prom.instant(&format!("max(timestamp(up{{job={job}}}))"), None).await?.first().map_or(0.0, |s| s.value);
            if newest <= reloaded_at {
                return Ok(Check::NotYet(format!("newest scrape t={newest:.3}, reloaded at t={reloaded_at:.3}")));
            }
            // timestamp() drops the metric name; keep it in a label so the series stay distinct.
            let query = format!("count(timestamp(label_replace({{job={job}}}, \"metric_name\", \"$1\", \"__name__\", \"(.+)\")) < {newest})");
            let older = prom.instant(&query, None).await?.first().map_or(0.0, |s| s.value);
            Ok(if older == 0.0 { Check::Met(()) } else { Check::NotYet(format!("{older} series older than the newest scrape t={newest:.3}")) })
        })
        .await
    }

    /// Stops Envoy and starts it from `next`'s launch on the same ports, with the routes installed now.
    /// A restart, not a hot restart: no request is in flight between runs, and a hot restart would
    /// need the old process's shared memory and `--restart-epoch` handover for nothing.
    async fn restart_envoy(&self, opts: &super::LocalOptions, next: &Parts) -> Result<()> {
        // Routes before Envoy, the order install_scenario locks them in.
        let held = self.routes.hold().await;
        let mut envoy = self.envoy.lock().await;
        let old = envoy.take().context("Envoy was shut down")?;
        let ports = old.ports();
        old.stop().await.context("stop the running Envoy")?;
        let started = next.start_envoy_on(opts, self.dir.path(), self.extra_clusters.clone(), Some(ports), self.docker.as_ref()).await?;
        // A new container has a new address on the private network; the caller's Prometheus reload follows it.
        if let Some(target) = started.scrape_address() {
            *self.scrape_target.lock().await = target.to_string();
        }
        if !held.routes.is_empty() {
            started.set_routes(&held.routes).await.context("install the current routes in the restarted Envoy")?;
        }
        *envoy = Some(std::sync::Arc::new(started));
        Ok(())
    }
}

/// Copies the filter module `module` into `run_dir/modules/` under a name made of its content's
/// hash (a changed module is a changed configuration to Envoy; a container sees only the run directory).
pub(super) fn copy_module_into(run_dir: &std::path::Path, module: &std::path::Path) -> Result<PathBuf> {
    let bytes = std::fs::read(module).with_context(|| format!("read the filter module {}", module.display()))?;
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let dir = run_dir.join("modules");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let copy = dir.join(format!("{}.wasm", &hash[..16]));
    std::fs::write(&copy, &bytes).with_context(|| format!("write {}", copy.display()))?;
    Ok(copy)
}
