//! A real Prometheus as a child process (local stack and the harness' own tests), and `promtool`.
//!
//! Its config, TSDB and log live in a run directory (`crate::rundir`), so a SIGKILLed harness's
//! leftovers are removed by the next run. The child runs in its own process group; [`PrometheusProcess::stop`] asks it to exit (SIGTERM) and
//! waits for that as a named condition, and `Drop` kills the group (SIGKILL) and reaps it, so no
//! Prometheus outlives its owner, also when a test panics.

use crate::container::DockerSession;
use crate::process::Supervised;
use crate::rundir::RunDir;
use crate::timeouts::Timeouts;
use crate::wait::{self, Check};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// How long `stop` waits for a graceful exit before SIGKILL.
const GRACEFUL_STOP: Duration = Duration::from_secs(10);

/// Where Prometheus runs: a child process, or a container of `image` in a Docker session.
#[derive(Debug, Clone, Default)]
pub enum PrometheusRuntime {
    /// `prometheus` from PATH.
    #[default]
    Native,
    /// A container of the session's Prometheus image on its network.
    Container(Arc<DockerSession>),
}

/// A running Prometheus on a loopback port, with its config and TSDB in a run directory.
pub struct PrometheusProcess {
    child: Option<Supervised>,
    url: String,
    dir: RunDir,
}

impl std::fmt::Debug for PrometheusProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusProcess").field("url", &self.url).field("pid", &self.pid()).finish()
    }
}

impl PrometheusProcess {
    /// Starts `prometheus` with `config_yaml` on a free 127.0.0.1 port and waits for `/-/ready`
    /// (deadline `timeouts.prometheus_ready`). Fails at once, with the tail of its log, if it exits.
    pub async fn start(config_yaml: &str, timeouts: &Timeouts) -> Result<PrometheusProcess> {
        Self::start_on(config_yaml, timeouts, None).await
    }

    /// Like [`PrometheusProcess::start`], on `port` when given (no retry: a taken port is an error).
    pub async fn start_on(config_yaml: &str, timeouts: &Timeouts, fixed_port: Option<u16>) -> Result<PrometheusProcess> {
        Self::start_in(&PrometheusRuntime::Native, config_yaml, timeouts, fixed_port).await
    }

    /// Like [`PrometheusProcess::start_on`], as a child process or a container.
    pub async fn start_in(runtime: &PrometheusRuntime, config_yaml: &str, timeouts: &Timeouts, fixed_port: Option<u16>) -> Result<PrometheusProcess> {
        let binary = match runtime {
            PrometheusRuntime::Native => Some(require_on_path("prometheus", std::env::var_os("PATH"))?),
            PrometheusRuntime::Container(..) => None,
        };
        // The port is free when picked and taken by Prometheus a moment later; on the rare race the
        // child exits with "address already in use" and another port is tried.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = RunDir::create_unique("prometheus").context("creating Prometheus' run directory")?;
            let config = dir.path().join("prometheus.yml");
            std::fs::write(&config, config_yaml).with_context(|| format!("writing {}", config.display()))?;
            let port = match fixed_port {
                Some(p) => p,
                None => free_port()?,
            };
            let child = match runtime {
                PrometheusRuntime::Container(session) => {
                    let spec = crate::container::ContainerSpec {
                        role: "prometheus",
                        image: session.images().prometheus.clone(),
                        entrypoint: crate::container::PROMETHEUS_ENTRYPOINT.into(),
                        args: args(dir.path(), &config, &format!("0.0.0.0:{port}")),
                        mounts: vec![dir.path().to_path_buf()],
                        ports: vec![port],
                        log_file: dir.path().join("prometheus.log"),
                    };
                    match session.start(spec).await {
                        Ok(c) => Supervised::Container(Box::new(c)),
                        Err(e) if fixed_port.is_none() && attempt < 3 && format!("{e:#}").contains("already") => {
                            tracing::debug!("prometheus' container lost the race for port {port}, retrying: {e:#}");
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                PrometheusRuntime::Native => {
                    let binary = binary.as_deref().context("the prometheus binary was not resolved")?;
                    Supervised::Process(spawn(binary, dir.path(), &config, port)?)
                }
            };
            let mut process = PrometheusProcess { child: Some(child), url: format!("http://127.0.0.1:{port}"), dir };
            match process.wait_ready(timeouts.prometheus_ready).await {
                Ok(()) => return Ok(process),
                Err(e) if fixed_port.is_none() && attempt < 3 && process.log_tail(50).contains("address already in use") => {
                    tracing::debug!("prometheus lost the race for port {port}, retrying: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The HTTP API base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id, while it runs as a child process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Supervised::pid)
    }

    /// How it exited, if it has (`None` while it runs); a stopped one counts as running no more.
    pub fn exit_status(&mut self) -> Result<Option<String>> {
        match self.child.as_mut() {
            Some(child) => child.exited().context("checking whether Prometheus is still running"),
            None => Ok(None),
        }
    }

    /// Replaces the config with `config_yaml` and applies it without a restart (`POST /-/reload`; it
    /// runs with `--web.enable-lifecycle`). A config Prometheus refuses is an error, and the old one is restored on disk.
    pub async fn reload(&self, config_yaml: &str) -> Result<()> {
        let path = self.dir.path().join("prometheus.yml");
        let old = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        std::fs::write(&path, config_yaml).with_context(|| format!("write {}", path.display()))?;
        let url = format!("{}/-/reload", self.url);
        let answer = async {
            let resp = reqwest::Client::new().post(&url).send().await.with_context(|| format!("POST {url}"))?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                bail!("Prometheus refused the new config (POST {url}: HTTP {status}): {}", body.trim());
            }
            Ok(())
        }
        .await;
        if answer.is_err() {
            std::fs::write(&path, old).with_context(|| format!("restore {}", path.display()))?;
        }
        answer
    }

    /// The file Prometheus reads its config from.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.yml")
    }

    /// The directory holding the config, the TSDB and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of Prometheus' own log (stdout and stderr).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Asks Prometheus to exit (SIGTERM), waits for it, and kills it if it does not exit in time.
    pub async fn stop(mut self) -> Result<()> {
        match self.child.take() {
            Some(child) => child.stop("prometheus", GRACEFUL_STOP).await,
            None => Ok(()),
        }
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let ready = format!("{}/-/ready", self.url);
        let child = &mut self.child;
        // "Met" means settled: ready, or exited (which must end the wait at once, not at the deadline).
        let settled = wait::until(&format!("prometheus ready at {ready}"), timeout, || {
            let exited = child.as_mut().map(Supervised::exited);
            let request = client.get(&ready).send();
            async move {
                match exited {
                    Some(Ok(Some(status))) => return Ok(Check::Met(Err(format!("exited ({status})")))),
                    Some(Err(e)) => return Err(e),
                    _ => {}
                }
                Ok(match request.await {
                    Ok(r) if r.status().is_success() => Check::Met(Ok(())),
                    Ok(r) => Check::NotYet(format!("HTTP {}", r.status())),
                    Err(e) => Check::NotYet(e.to_string()),
                })
            }
        })
        .await;
        match settled {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => bail!("prometheus {why} before it was ready; its log ends with:\n{}", self.log_tail(20)),
            Err(e) => Err(e.context(format!("its log ends with:\n{}", self.log_tail(20)))),
        }
    }

    fn kill_and_reap(&mut self) {
        if let Some(child) = self.child.take() {
            child.kill();
        }
    }
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Prometheus' arguments: the config, the TSDB in `dir`, the listen address, and `/-/reload`.
fn args(dir: &Path, config: &Path, listen: &str) -> Vec<String> {
    vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address={listen}"),
        "--web.enable-lifecycle".into(),
    ]
}

fn spawn(binary: &Path, dir: &Path, config: &Path, port: u16) -> Result<std::process::Child> {
    let log = dir.join("prometheus.log");
    let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(binary);
    cmd.args(args(dir, config, &format!("127.0.0.1:{port}")))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    crate::process::harness_child(&mut cmd);
    cmd.spawn().with_context(|| format!("starting {}", binary.display()))
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// `name` in the directories of `path_var`, or an error that says how to install it.
fn require_on_path(name: &str, path_var: Option<std::ffi::OsString>) -> Result<PathBuf> {
    path_var
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
        .ok_or_else(|| {
            anyhow::anyhow!("`{name}` is not on PATH: install Prometheus 2.x (`apt-get install prometheus`, Debian/Ubuntu)")
        })
}

/// Runs `promtool check config` on `yaml`; the error carries promtool's output.
pub async fn promtool_check_config(yaml: &str) -> Result<()> {
    let promtool = require_on_path("promtool", std::env::var_os("PATH"))?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("prometheus.yml");
    std::fs::write(&file, yaml)?;
    let mut cmd = tokio::process::Command::new(&promtool);
    crate::process::harness_child(cmd.as_std_mut());
    let out = cmd
        .arg("check")
        .arg("config")
        .arg(&file)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", promtool.display()))?;
    if !out.status.success() {
        bail!(
            "promtool check config failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_prometheus_binary_says_how_to_install_it() {
        let err = require_on_path("prometheus", Some("/nonexistent-waf-e2e".into())).unwrap_err().to_string();
        assert!(err.contains("apt-get install prometheus"), "{err}");
        assert!(require_on_path("prometheus", None).is_err());
    }
}
