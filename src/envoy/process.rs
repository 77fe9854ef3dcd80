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

use super::admin::{Admin, ConfigState};
use super::bootstrap::{bootstrap, BootstrapParams, CDS_FILE, LDS_FILE};
use super::proxy_spec::ProxyLaunch;
use super::xds::{self, RouteSpec};
use crate::timeouts::Timeouts;
use crate::wait::{self, Check};
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use serde_json::Value;
use crate::container::DockerSession;
use crate::process::Supervised;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

/// How long `stop` waits for Envoy to exit after SIGTERM before SIGKILL.
const GRACEFUL_STOP: Duration = Duration::from_secs(10);
/// Attempts at free ports (a port picked free can be taken before Envoy binds it).
const PORT_ATTEMPTS: usize = 3;

/// How Envoy is started.
#[derive(Debug, Clone)]
pub enum EnvoyLauncher {
    /// This binary ([`super::find_envoy`]) as a child process, its listeners on 127.0.0.1.
    Binary(PathBuf),
    /// A container of the session's Envoy image, its listeners on every address of the container
    /// and published on 127.0.0.1 under the same ports.
    Container(Arc<DockerSession>),
}

impl EnvoyLauncher {
    /// The address Envoy's listeners bind.
    fn listen_ip(&self) -> IpAddr {
        match self {
            EnvoyLauncher::Binary(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            EnvoyLauncher::Container(..) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }

    /// The binary or the image, for messages.
    fn describe(&self) -> String {
        match self {
            EnvoyLauncher::Binary(b) => b.display().to_string(),
            EnvoyLauncher::Container(session) => format!("image {}", session.images().envoy),
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// The binary or the image.
    pub launcher: EnvoyLauncher,
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
    /// Admin, metrics and gateway addresses to bind (a restart keeps its predecessor's); `None`: free ports.
    pub ports: Option<[SocketAddr; 3]>,
}

/// A running Envoy. `Drop` kills and reaps it; [`EnvoyProcess::stop`] ends it gracefully.
pub struct EnvoyProcess {
    child: StdMutex<Option<Supervised>>,
    who: String,
    pid: Option<u32>,
    version: String,
    scrape_address: Option<String>,
    admin_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    gateway_addr: SocketAddr,
    admin: Admin,
    opts: EnvoyOptions,
    xds_dir: PathBuf,
    applied: tokio::sync::Mutex<Applied>,
    client_traffic: StdMutex<xds::ClientTraffic>,
}

/// What Envoy runs now: the last configuration it accepted.
struct Applied {
    version: u64,
    clusters: Vec<Value>,
    listener: Value,
}

impl std::fmt::Debug for EnvoyProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvoyProcess").field("who", &self.who).field("version", &self.version).field("gateway", &self.gateway_addr).finish()
    }
}

impl EnvoyProcess {
    /// Starts Envoy with no routes (the gateway listener answers 404) and waits until it serves.
    pub async fn start(opts: EnvoyOptions) -> Result<EnvoyProcess> {
        let known_version = match &opts.launcher {
            EnvoyLauncher::Binary(binary) => Some(super::envoy_version(binary)?),
            EnvoyLauncher::Container(..) => None,
        };
        let listen_ip = opts.launcher.listen_ip();
        let xds_dir = opts.run_dir.join("xds");
        std::fs::create_dir_all(&xds_dir).with_context(|| format!("create {}", xds_dir.display()))?;
        opts.launch.create_volume_dirs()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (admin_addr, metrics_addr, gateway_addr) = match opts.ports {
                Some([admin, metrics, gateway]) => (admin, metrics, gateway),
                None => (free_port()?, free_port()?, free_port()?),
            };
            let metrics_addr = opts.launch.prometheus.then_some(metrics_addr);
            let params = BootstrapParams {
                admin: admin_addr, metrics: metrics_addr, listen: listen_ip, stats_matcher: opts.launch.stats_matcher.as_ref(),
                xds_dir: &xds_dir, extra_clusters: &opts.extra_clusters,
            };
            let bootstrap_file = opts.run_dir.join("bootstrap.json");
            write_json(&bootstrap_file, &bootstrap(&params))?;
            let listener = xds::listener(&opts.listener_name, SocketAddr::new(listen_ip, gateway_addr.port()), &[], xds::ClientTraffic::default())?;
            write_json(&xds_dir.join(CDS_FILE), &xds::discovery_file(1, Vec::new()))?;
            write_json(&xds_dir.join(LDS_FILE), &xds::discovery_file(1, vec![listener.clone()]))?;
            let lost_port_race = |e: &anyhow::Error| {
                let text = format!("{e:#}");
                opts.ports.is_none() && attempt < PORT_ATTEMPTS && (text.contains("ddress already in use") || text.contains("port is already allocated"))
            };
            let started_as = match &known_version {
                Some(v) => format!("start Envoy {v} ({})", opts.launcher.describe()),
                None => format!("start Envoy ({})", opts.launcher.describe()),
            };
            let child = match start_child(&opts, &bootstrap_file, [Some(admin_addr), metrics_addr, Some(gateway_addr)]).await {
                Ok(child) => child,
                Err(e) if lost_port_race(&e) => {
                    tracing::debug!("envoy's container lost a race for a port, retrying: {e:#}");
                    continue;
                }
                Err(e) => return Err(e.context(started_as)),
            };
            let scrape_address = match (&child, metrics_addr) {
                (Supervised::Container(c), Some(m)) => Some(SocketAddr::new(c.ip(), m.port()).to_string()),
                (_, m) => m.map(|m| m.to_string()),
            };
            let admin = Admin::new(admin_addr, opts.timeouts.request)?;
            let mut process = EnvoyProcess {
                who: child.describe(), pid: child.pid(), child: StdMutex::new(Some(child)),
                version: known_version.clone().unwrap_or_default(), scrape_address, admin_addr, metrics_addr, gateway_addr, admin,
                opts: opts.clone(), xds_dir: xds_dir.clone(),
                applied: tokio::sync::Mutex::new(Applied { version: 1, clusters: Vec::new(), listener }),
                client_traffic: StdMutex::new(xds::ClientTraffic::default()),
            };
            match process.wait_serving().await {
                Ok(()) => {
                    if known_version.is_none() {
                        process.version = process.admin.server_version().await.context("read the release of Envoy in the container")?;
                    }
                    return Ok(process);
                }
                Err(e) if lost_port_race(&e) => {
                    tracing::debug!("envoy lost a race for a port, retrying: {e:#}");
                }
                Err(e) => return Err(e.context(started_as)),
            }
        }
    }

    async fn wait_serving(&self) -> Result<()> {
        let metrics = self.metrics_addr.map(|a| format!("http://{a}/stats/prometheus"));
        let client = reqwest::Client::builder().timeout(self.opts.timeouts.request).build()?;
        let condition = format!("Envoy ({}) LIVE on admin {} with the gateway listener bound", self.who, self.admin_addr);
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
            let state = self.admin.config_state().await?;
            let Some(listener) = state.listeners.get(&self.opts.listener_name) else {
                return Ok(Check::NotYet(format!("{ready}, the gateway listener is not loaded yet")));
            };
            if let Some((_, why)) = &listener.error {
                return Ok(Check::Met(Err(anyhow!("Envoy refused the gateway listener on {}: {why}", self.gateway_addr))));
            }
            if listener.active_updated.is_none() || listener.warming {
                return Ok(Check::NotYet(format!("{ready}, the gateway listener is warming")));
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

    /// Admin, metrics (admin's when there is none) and gateway addresses, for a restart on the same ones.
    pub fn ports(&self) -> [SocketAddr; 3] {
        [self.admin_addr, self.metrics_addr.unwrap_or(self.admin_addr), self.gateway_addr]
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The Envoy process id (a child process; `None` for a container).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The address Prometheus scrapes: the `metrics` listener as Prometheus reaches it (loopback
    /// for a child process, the container's address on the private network for a container).
    pub fn scrape_address(&self) -> Option<&str> {
        self.scrape_address.as_deref()
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
        let Some(child) = guard.as_mut() else { bail!("Envoy ({}) was stopped", self.who) };
        match child.exited().context("check whether Envoy runs")? {
            None => Ok(()),
            Some(status) => bail!("Envoy ({}) exited ({status}); its log ends with:\n{}", self.who, self.log_tail_text(20)),
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

    /// The gateway listener's client settings from the next [`EnvoyProcess::set_routes`] on.
    pub fn set_client_traffic(&self, client: xds::ClientTraffic) {
        *self.client_traffic.lock().unwrap_or_else(|p| p.into_inner()) = client;
    }

    /// Replaces every route (and its filters and cluster) and waits until Envoy applied them;
    /// a refused configuration is an error carrying Envoy's reason, and the previous one stays active.
    ///
    /// "Applied" is read from `/config_dump` (which a stats matcher cannot hide): every cluster
    /// active and none warming, the gateway listener updated after the write and not warming. A file
    /// whose resources did not change is not rewritten (Envoy would not update anything).
    pub async fn set_routes(&self, routes: &[RouteSpec]) -> Result<()> {
        let mut applied = self.applied.lock().await;
        self.health()?;
        let version = applied.version + 1;
        let client = *self.client_traffic.lock().unwrap_or_else(|p| p.into_inner());
        let listener = xds::listener(&self.opts.listener_name, SocketAddr::new(self.opts.launcher.listen_ip(), self.gateway_addr.port()), routes, client)?;
        let clusters = xds::clusters(routes);
        // Clusters first: a route naming a cluster Envoy does not know yet is refused.
        if clusters != applied.clusters {
            let changed: Vec<String> =
                clusters.iter().filter(|c| !applied.clusters.contains(c)).filter_map(|c| c["name"].as_str().map(String::from)).collect();
            let names: BTreeSet<String> = clusters.iter().filter_map(|c| c["name"].as_str().map(String::from)).collect();
            let since = self.write(CDS_FILE, version, clusters.clone())?;
            self.wait_applied(CDS_FILE, version, "cluster_manager.cds.update_rejected", |state| {
                let active: BTreeSet<String> = state.clusters.keys().cloned().collect();
                let stale: Vec<&String> = changed.iter().filter(|n| state.clusters.get(*n).is_none_or(|t| t.is_none_or(|t| t < since))).collect();
                if active == names && stale.is_empty() && state.warming_clusters.is_empty() {
                    Ok(true)
                } else {
                    Err(format!("active {active:?}, not yet updated {stale:?}, warming {:?}", state.warming_clusters))
                }
            })
            .await?;
            applied.clusters = clusters;
        }
        if listener != applied.listener {
            let since = self.write(LDS_FILE, version, vec![listener.clone()])?;
            let name = self.opts.listener_name.clone();
            self.wait_applied(LDS_FILE, version, "listener_manager.lds.update_rejected", |state| {
                let Some(l) = state.listeners.get(&name) else { return Err(format!("no listener {name}")) };
                // A refusal after the write is this update's; older ones stay in the dump.
                if l.error.as_ref().is_some_and(|(at, _)| at.is_some_and(|at| at >= since)) {
                    return Ok(false);
                }
                match l.active_updated {
                    Some(t) if t >= since && !l.warming => Ok(true),
                    _ => Err(format!("listener {name} active since {:?}, warming {}", l.active_updated, l.warming)),
                }
            })
            .await?;
            applied.listener = listener;
        }
        applied.version = version;
        let unknown = self.counter("server.dynamic_unknown_fields").await?.unwrap_or(0);
        if unknown > 0 {
            bail!("Envoy ignored {unknown} unknown field(s) in the generated configuration (a harness bug); see {}", self.xds_dir.display());
        }
        Ok(())
    }

    /// Writes a discovery file (write, then rename into the watched directory: the rename is the
    /// event Envoy watches, so it never reads a half-written file); returns the time just before it
    /// became visible, to the millisecond Envoy's `/config_dump` timestamps carry.
    fn write(&self, file: &str, version: u64, resources: Vec<Value>) -> Result<DateTime<Utc>> {
        let target = self.xds_dir.join(file);
        let scratch = self.xds_dir.join(format!(".{file}.{version}.tmp"));
        write_json(&scratch, &xds::discovery_file(version, resources))?;
        let now = Utc::now();
        let since = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        std::fs::rename(&scratch, &target).with_context(|| format!("rename {} to {}", scratch.display(), target.display()))?;
        Ok(since)
    }

    /// Polls `/config_dump` until `done` says applied (`Ok(true)`) or refused (`Ok(false)`); the
    /// `rejected` counter, when the stats matcher leaves it visible, also tells a refusal.
    async fn wait_applied<F>(&self, file: &str, version: u64, rejected: &str, done: F) -> Result<()>
    where
        F: Fn(&ConfigState) -> std::result::Result<bool, String>,
    {
        let rejected_filter = format!("^{}$", regex::escape(rejected));
        let rejected_before = self.admin.stats(&rejected_filter).await?.get(rejected).cloned();
        let started = Instant::now();
        let condition = format!("Envoy to apply {file} version {version}");
        let outcome = wait::until(&condition, self.opts.timeouts.envoy_config_applied, || async {
            if let Err(e) = self.health() {
                return Ok(Check::Met(Err(e)));
            }
            let state = self.admin.config_state().await?;
            let rejected_now = self.admin.stats(&rejected_filter).await?.get(rejected).cloned();
            if rejected_now != rejected_before {
                return Ok(Check::Met(Ok((false, state))));
            }
            Ok(match done(&state) {
                Ok(applied) => Check::Met(Ok((applied, state))),
                Err(seen) => Check::NotYet(seen),
            })
        })
        .await??;
        let (applied, state) = outcome;
        if applied {
            tracing::debug!("envoy applied {file} version {version} in {:?}", started.elapsed());
            return Ok(());
        }
        let reason = state.listeners.get(&self.opts.listener_name).and_then(|l| l.error.as_ref()).map(|(_, why)| why.clone());
        bail!(
            "Envoy refused {file} version {version}: {}\n(the refused file: {}; Envoy's log may hold more after its next flush)\n{}",
            reason.filter(|_| file == LDS_FILE).unwrap_or_else(|| "no reason in /config_dump".into()),
            self.xds_dir.join(file).display(),
            self.log_tail_text(10)
        )
    }

    /// Asks Envoy to exit (SIGTERM, which flushes its log file), waits for it, then kills it if needed.
    /// By reference: an update still holding the process (shared) then finds it stopped.
    pub async fn stop(&self) -> Result<()> {
        let child = self.child.lock().ok().and_then(|mut c| c.take());
        match child {
            Some(child) => child.stop("Envoy", GRACEFUL_STOP).await,
            None => Ok(()),
        }
    }

    fn kill_and_reap(&self) {
        if let Some(child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            child.kill();
        }
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Envoy's command line after the binary.
fn args(opts: &EnvoyOptions, bootstrap_file: &Path) -> Vec<String> {
    let mut args = vec![
        "--service-cluster".to_string(), opts.service_cluster.clone(),
        "--service-node".to_string(), opts.service_node.clone(),
        "--config-path".to_string(), bootstrap_file.display().to_string(),
        // Several Envoys on one machine (parallel tests) would share hot-restart base id 0 and its
        // shared memory; in a pod each proxy has its own. This changes nothing else.
        "--use-dynamic-base-id".to_string(),
    ];
    args.extend(opts.launch.args.iter().cloned());
    args
}

/// Starts Envoy as a child process or a container, its output going to `envoy.stderr.log`.
async fn start_child(opts: &EnvoyOptions, bootstrap_file: &Path, ports: [Option<SocketAddr>; 3]) -> Result<Supervised> {
    match &opts.launcher {
        EnvoyLauncher::Binary(binary) => spawn(binary, opts, bootstrap_file).map(Supervised::Process),
        EnvoyLauncher::Container(session) => {
            let spec = crate::container::ContainerSpec {
                role: "envoy",
                image: session.images().envoy.clone(),
                entrypoint: crate::container::ENVOY_ENTRYPOINT.into(),
                args: args(opts, bootstrap_file),
                // Every path in the bootstrap, the xDS files and the arguments is inside the run directory.
                mounts: vec![opts.run_dir.clone()],
                ports: ports.iter().flatten().map(SocketAddr::port).collect(),
                log_file: opts.run_dir.join("envoy.stderr.log"),
            };
            session.start(spec).await.map(|c| Supervised::Container(Box::new(c)))
        }
    }
}

fn spawn(binary: &Path, opts: &EnvoyOptions, bootstrap_file: &Path) -> Result<Child> {
    let log = opts.run_dir.join("envoy.stderr.log");
    let out = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let mut cmd = Command::new(binary);
    cmd.args(args(opts, bootstrap_file))
        .current_dir(&opts.run_dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    crate::process::harness_child(&mut cmd);
    super::pkeys::deny_pkey_alloc_in(&mut cmd)?;
    cmd.spawn().with_context(|| format!("start {}", binary.display()))
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
