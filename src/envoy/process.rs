//! A real Envoy as a child process, configured like an Envoy Gateway proxy, reconfigured through files.
//!
//! [`EnvoyProcess::start`] writes the bootstrap and the first listener/cluster files into the run
//! directory, starts Envoy (own process group, parent-death signal) and waits until admin `/ready`
//! says LIVE, the gateway listener is bound and the `metrics` listener answers.
//! [`EnvoyProcess::set_routes`] replaces the listener and cluster files (write, then rename into the
//! watched directory) and waits until Envoy applied exactly that version; updates are serialised.
//!
//! Traffic should use a fresh connection per request: a listener update drains connections opened
//! before it (`--drain-strategy immediate`), and a request on such a connection is still served by
//! the previous listener configuration.

use super::admin::Admin;
use super::bootstrap::{bootstrap, BootstrapParams, CDS_FILE, LDS_FILE};
use super::proxy_spec::ProxyLaunch;
use super::xds::{self, RouteSpec};
use crate::timeouts::Timeouts;
use crate::wait::{self, Check};
use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

/// How long `stop` waits for Envoy to exit after SIGTERM before SIGKILL.
const GRACEFUL_STOP: Duration = Duration::from_secs(10);
/// Attempts at free ports (a port picked free can be taken before Envoy binds it).
const PORT_ATTEMPTS: usize = 3;

/// What to start.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// The Envoy binary ([`super::find_envoy`]).
    pub binary: PathBuf,
    /// The run directory: bootstrap, xDS files, Envoy's stdout/stderr and the volume directories live here.
    pub run_dir: PathBuf,
    /// The EnvoyProxy's translation (arguments, stats matcher, volumes).
    pub launch: ProxyLaunch,
    /// `--service-cluster` (Envoy Gateway: the proxy infrastructure's name, e.g. `<gateway ns>/<gateway>`).
    pub service_cluster: String,
    /// `--service-node` (Envoy Gateway: the pod's name).
    pub service_node: String,
    /// The gateway listener's name (Envoy Gateway: `<gateway ns>/<gateway>/<listener>`); also its route config's.
    pub listener_name: String,
    /// Static clusters the filters call (e.g. `waf_e2e_reference_waf`).
    pub extra_clusters: Vec<(String, SocketAddr)>,
    /// Deadlines (`envoy_ready`, `envoy_config_applied`).
    pub timeouts: Timeouts,
}

/// A running Envoy. `Drop` kills and reaps it; [`EnvoyProcess::stop`] ends it gracefully.
pub struct EnvoyProcess {
    child: StdMutex<Option<Child>>,
    pid: u32,
    version: String,
    admin_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    gateway_addr: SocketAddr,
    admin: Admin,
    opts: EnvoyOptions,
    xds_dir: PathBuf,
    applied: tokio::sync::Mutex<u64>,
}

impl std::fmt::Debug for EnvoyProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvoyProcess").field("pid", &self.pid).field("version", &self.version).field("gateway", &self.gateway_addr).finish()
    }
}

/// Which discovery file an update waits for.
#[derive(Clone, Copy)]
enum Resource {
    Clusters,
    Listeners,
}

impl Resource {
    fn prefix(self) -> &'static str {
        match self {
            Resource::Clusters => "cluster_manager.cds",
            Resource::Listeners => "listener_manager.lds",
        }
    }
    fn warming(self) -> &'static str {
        match self {
            Resource::Clusters => "cluster_manager.warming_clusters",
            Resource::Listeners => "listener_manager.total_listeners_warming",
        }
    }
    fn file(self) -> &'static str {
        match self {
            Resource::Clusters => CDS_FILE,
            Resource::Listeners => LDS_FILE,
        }
    }
}

impl EnvoyProcess {
    /// Starts Envoy with no routes (the gateway listener answers 404) and waits until it serves.
    pub async fn start(opts: EnvoyOptions) -> Result<EnvoyProcess> {
        let version = super::envoy_version(&opts.binary)?;
        let xds_dir = opts.run_dir.join("xds");
        std::fs::create_dir_all(&xds_dir).with_context(|| format!("create {}", xds_dir.display()))?;
        opts.launch.create_volume_dirs()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (admin_addr, metrics_addr, gateway_addr) = (free_port()?, free_port()?, free_port()?);
            let metrics_addr = opts.launch.prometheus.then_some(metrics_addr);
            let params = BootstrapParams {
                admin: admin_addr, metrics: metrics_addr, stats_matcher: opts.launch.stats_matcher.as_ref(),
                xds_dir: &xds_dir, extra_clusters: &opts.extra_clusters,
            };
            let bootstrap_file = opts.run_dir.join("bootstrap.json");
            write_json(&bootstrap_file, &bootstrap(&params))?;
            write_json(&xds_dir.join(CDS_FILE), &xds::discovery_file(1, Vec::new()))?;
            write_json(&xds_dir.join(LDS_FILE), &xds::discovery_file(1, vec![xds::listener(&opts.listener_name, gateway_addr, &[])?]))?;
            let child = spawn(&opts, &bootstrap_file)?;
            let pid = child.id();
            let admin = Admin::new(admin_addr, opts.timeouts.request)?;
            let process = EnvoyProcess {
                child: StdMutex::new(Some(child)), pid, version: version.clone(), admin_addr, metrics_addr, gateway_addr, admin,
                opts: opts.clone(), xds_dir: xds_dir.clone(), applied: tokio::sync::Mutex::new(1),
            };
            match process.wait_serving().await {
                Ok(()) => return Ok(process),
                Err(e) if attempt < PORT_ATTEMPTS && format!("{e:#}").contains("ddress already in use") => {
                    tracing::debug!("envoy lost a race for a port, retrying: {e:#}");
                }
                Err(e) => return Err(e.context(format!("start Envoy {version} ({})", opts.binary.display()))),
            }
        }
    }

    async fn wait_serving(&self) -> Result<()> {
        let metrics = self.metrics_addr.map(|a| format!("http://{a}/stats/prometheus"));
        let client = reqwest::Client::builder().timeout(self.opts.timeouts.request).build()?;
        let condition = format!("Envoy (pid {}) LIVE on admin {} with the gateway listener bound", self.pid, self.admin_addr);
        // `Met(Err)` ends the wait at once: an exited Envoy or a refused listener never becomes ready.
        let settled = wait::until(&condition, self.opts.timeouts.envoy_ready, || async {
            if let Err(e) = self.health() {
                return Ok(Check::Met(Err(e)));
            }
            let ready = match self.admin.ready().await {
                Ok(r) if r == "LIVE" => r,
                Ok(r) => return Ok(Check::NotYet(format!("/ready says {r}"))),
                Err(e) => return Ok(Check::NotYet(format!("{e:#}"))),
            };
            let stats = self.admin.stats(r"^listener_manager\.lds\.(version_text|update_rejected)$").await?;
            if stats.get("listener_manager.lds.update_rejected").is_some_and(|v| v != "0") {
                let why = self.admin.newest_listener_error().await?.unwrap_or_else(|| "no reason recorded".into());
                return Ok(Check::Met(Err(anyhow!("Envoy refused the gateway listener on {}: {why}", self.gateway_addr))));
            }
            if stats.get("listener_manager.lds.version_text").map(String::as_str) != Some("1") {
                return Ok(Check::NotYet(format!("{ready}, listeners not loaded yet")));
            }
            if let Some(url) = &metrics {
                match client.get(url).send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => return Ok(Check::NotYet(format!("{url}: HTTP {}", r.status()))),
                    Err(e) => return Ok(Check::NotYet(format!("{url}: {e}"))),
                }
            }
            Ok(Check::Met(Ok(())))
        })
        .await;
        match settled {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow!("{e:#}\n{}", self.log_tail_text(20))),
        }
    }

    /// The gateway listener (send requests here with the route's Host header).
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_addr
    }

    /// The `metrics` listener serving `/stats/prometheus` (the scrape target), unless the EnvoyProxy disables it.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The admin listener (127.0.0.1).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The Envoy process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The release of the running binary (`1.37.0`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The EnvoyProxy translation this Envoy runs with (log path, collector path, volumes).
    pub fn launch(&self) -> &ProxyLaunch {
        &self.opts.launch
    }

    /// Envoy's stdout and stderr (its own log goes to the `--log-path` file when the EnvoyProxy sets one).
    pub fn stderr_path(&self) -> PathBuf {
        self.opts.run_dir.join("envoy.stderr.log")
    }

    /// The value of Envoy's counter or gauge `name` (admin `/stats`), absent when there is no such stat.
    pub async fn counter(&self, name: &str) -> Result<Option<u64>> {
        self.admin.counter(name).await.with_context(|| format!("read Envoy stat {name}"))
    }

    /// The admin client, for other reads.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// Ok while Envoy runs; an error naming its exit status and the end of its log once it exited.
    pub fn health(&self) -> Result<()> {
        let mut guard = self.child.lock().map_err(|_| anyhow!("Envoy's process handle was poisoned"))?;
        let Some(child) = guard.as_mut() else { bail!("Envoy (pid {}) was stopped", self.pid) };
        match child.try_wait().context("check whether Envoy runs")? {
            None => Ok(()),
            Some(status) => bail!("Envoy (pid {}) exited ({status}); its log ends with:\n{}", self.pid, self.log_tail_text(20)),
        }
    }

    /// The last `lines` lines of Envoy's stderr and of its `--log-path` file, labelled.
    pub fn log_tail_text(&self, lines: usize) -> String {
        let mut out = format!("{}:\n{}", self.stderr_path().display(), tail(&self.stderr_path(), lines));
        if let Some(log) = &self.opts.launch.log_path {
            out.push_str(&format!("\n{}:\n{}", log.display(), tail(log, lines)));
        }
        out
    }

    /// Replaces every route (and its filters and cluster) and waits until Envoy applied them;
    /// a refused configuration is an error carrying Envoy's reason, and the previous one stays active.
    pub async fn set_routes(&self, routes: &[RouteSpec]) -> Result<()> {
        let mut applied = self.applied.lock().await;
        let version = *applied + 1;
        let listener = xds::listener(&self.opts.listener_name, self.gateway_addr, routes)?;
        // Clusters first: a route naming a cluster Envoy does not know yet is refused.
        self.apply(Resource::Clusters, version, xds::clusters(routes)).await?;
        self.apply(Resource::Listeners, version, vec![listener]).await?;
        let unknown = self.counter("server.dynamic_unknown_fields").await?.unwrap_or(0);
        if unknown > 0 {
            bail!("Envoy ignored {unknown} unknown field(s) in the generated configuration (a harness bug); see {}", self.xds_dir.display());
        }
        *applied = version;
        Ok(())
    }

    async fn apply(&self, what: Resource, version: u64, resources: Vec<Value>) -> Result<()> {
        let prefix = what.prefix();
        let filter = format!("^({}\\.(version_text|update_rejected)|{})$", regex::escape(prefix), regex::escape(what.warming()));
        let rejected_key = format!("{prefix}.update_rejected");
        let rejected_before = self.admin.stats(&filter).await?.get(&rejected_key).cloned().unwrap_or_default();
        let target = self.xds_dir.join(what.file());
        let scratch = self.xds_dir.join(format!(".{}.{version}.tmp", what.file()));
        write_json(&scratch, &xds::discovery_file(version, resources))?;
        // The rename is the event Envoy watches; it never sees a half-written file.
        std::fs::rename(&scratch, &target).with_context(|| format!("rename {} to {}", scratch.display(), target.display()))?;
        let started = Instant::now();
        let want = version.to_string();
        let outcome = wait::until(&format!("Envoy to apply {} version {version}", what.file()), self.opts.timeouts.envoy_config_applied, || async {
            if let Err(e) = self.health() {
                return Ok(Check::Met(Err(e)));
            }
            let stats = self.admin.stats(&filter).await?;
            if stats.get(&rejected_key).is_some_and(|r| *r != rejected_before) {
                return Ok(Check::Met(Ok(false)));
            }
            let seen = stats.get(&format!("{prefix}.version_text")).cloned().unwrap_or_default();
            let warming = stats.get(what.warming()).cloned().unwrap_or_default();
            Ok(if seen == want && warming == "0" { Check::Met(Ok(true)) } else { Check::NotYet(format!("version {seen}, {warming} warming")) })
        })
        .await??;
        if outcome {
            tracing::debug!("envoy applied {} version {version} in {:?}", what.file(), started.elapsed());
            return Ok(());
        }
        let reason = match what {
            Resource::Listeners => self.admin.newest_listener_error().await?,
            Resource::Clusters => None,
        };
        bail!(
            "Envoy refused {} version {version}: {}\n(the refused file: {}; Envoy's log may hold more after its next flush)\n{}",
            what.file(),
            reason.unwrap_or_else(|| "no reason in /config_dump".into()),
            target.display(),
            self.log_tail_text(10)
        )
    }

    /// Asks Envoy to exit (SIGTERM, which flushes its log file), waits for it, then kills it if needed.
    pub async fn stop(self) -> Result<()> {
        let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let exited = wait::until(&format!("Envoy (pid {}) to exit", self.pid), GRACEFUL_STOP, || {
            let status = self.child.lock().ok().and_then(|mut c| c.as_mut().map(Child::try_wait));
            async move {
                Ok(match status {
                    Some(Ok(Some(s))) => Check::Met(s),
                    Some(Ok(None)) => Check::NotYet("still running".into()),
                    Some(Err(e)) => return Err(e.into()),
                    None => Check::Met(std::process::ExitStatus::default()),
                })
            }
        })
        .await;
        self.kill_and_reap();
        exited.map(|_| ())
    }

    fn kill_and_reap(&self) {
        let Ok(mut guard) = self.child.lock() else { return };
        if let Some(mut child) = guard.take() {
            if let Ok(None) = child.try_wait() {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

fn spawn(opts: &EnvoyOptions, bootstrap_file: &Path) -> Result<Child> {
    let log = opts.run_dir.join("envoy.stderr.log");
    let out = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let mut cmd = Command::new(&opts.binary);
    cmd.arg("--service-cluster").arg(&opts.service_cluster)
        .arg("--service-node").arg(&opts.service_node)
        .arg("--config-path").arg(bootstrap_file)
        // Several Envoys on one machine (parallel tests) would share hot-restart base id 0 and its
        // shared memory; in a pod each proxy has its own. This changes nothing else.
        .arg("--use-dynamic-base-id")
        .args(&opts.launch.args)
        .current_dir(&opts.run_dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    crate::process::harness_child(&mut cmd);
    cmd.spawn().with_context(|| format!("start {}", opts.binary.display()))
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).context("serialise Envoy configuration")?;
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

fn free_port() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("find a free loopback port")?;
    Ok(l.local_addr()?)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
