//! A started container: its address on the private network, whether it still runs, and its end.

use super::session::DockerSession;
use anyhow::{Context, Result};
use futures::StreamExt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testcontainers::{ContainerAsync, GenericImage};

/// A running container of a [`DockerSession`]; stopping it (or dropping it) removes it.
pub struct RunningContainer {
    // Declared before `session`: the container is removed before the session can remove the network.
    container: Option<ContainerAsync<GenericImage>>,
    name: String,
    ip: IpAddr,
    exited: Arc<Mutex<Option<String>>>,
    watcher: tokio::task::JoinHandle<()>,
    session: Arc<DockerSession>,
}

impl std::fmt::Debug for RunningContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningContainer").field("name", &self.name).field("ip", &self.ip).finish()
    }
}

impl RunningContainer {
    /// Reads the container's address on the session's network and starts watching for its exit.
    pub(super) async fn new(container: ContainerAsync<GenericImage>, name: String, session: Arc<DockerSession>) -> Result<RunningContainer> {
        let id = container.id().to_string();
        let docker = session.docker().clone();
        let exited = Arc::new(Mutex::new(None));
        let watcher = {
            let exited = exited.clone();
            let docker = docker.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let outcome = match docker.wait_container(&id, None).next().await {
                    Some(Ok(r)) => format!("exit code {}", r.status_code),
                    Some(Err(testcontainers::bollard::errors::Error::DockerContainerWaitError { error, code })) => format!("exit code {code} {error}").trim().to_string(),
                    Some(Err(e)) => format!("no longer watchable: {e}"),
                    None => "no longer watchable".to_string(),
                };
                if let Ok(mut e) = exited.lock() {
                    *e = Some(outcome);
                }
            })
        };
        let mut running = RunningContainer { container: Some(container), name, ip: IpAddr::from([0, 0, 0, 0]), exited, watcher, session };
        let info = docker.inspect_container(&id, None).await.with_context(|| format!("inspect container {}", running.name))?;
        let network = running.session.network().to_string();
        let ip = info.network_settings.and_then(|s| s.networks).and_then(|mut n| n.remove(&network)).and_then(|n| n.ip_address).filter(|ip| !ip.is_empty());
        running.ip = ip.and_then(|ip| ip.parse().ok()).with_context(|| format!("container {} has no address on network {network}", running.name))?;
        Ok(running)
    }

    /// The container's name (`waf-e2e-<run>-<role>-<n>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address on the private network (what another container connects to).
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// `Some(how)` once the container stopped by itself, `None` while it runs.
    pub fn exited(&self) -> Option<String> {
        self.exited.lock().ok().and_then(|e| e.clone())
    }

    /// Stops the container (SIGTERM, SIGKILL after `grace`) and removes it.
    pub async fn stop(mut self, grace: Duration) -> Result<()> {
        self.watcher.abort();
        let Some(container) = self.container.take() else { return Ok(()) };
        let seconds = i32::try_from(grace.as_secs().max(1)).unwrap_or(i32::MAX);
        let stopped = container.stop_with_timeout(Some(seconds)).await.with_context(|| format!("stop container {}", self.name));
        let removed = container.rm().await.with_context(|| format!("remove container {}", self.name));
        stopped.and(removed)
    }
}

impl Drop for RunningContainer {
    fn drop(&mut self) {
        self.watcher.abort();
        let Some(container) = self.container.take() else { return };
        // testcontainers removes a dropped container from inside a Tokio runtime; outside one, lend it one.
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(container);
        } else if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            runtime.block_on(async move { drop(container) });
        }
    }
}
