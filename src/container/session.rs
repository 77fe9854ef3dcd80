//! One local stack's Docker resources: the engine connection, the private network, and the
//! containers started on it.

use super::running::RunningContainer;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use testcontainers::bollard::{self, Docker};
use testcontainers::core::{ContainerPort, Mount};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

/// The label naming the run directory a network or container belongs to (see the module docs).
pub const RUN_DIR_LABEL: &str = "io.waf-e2e.run-dir";

/// The private network of one local stack and what it takes to start containers on it.
pub struct DockerSession {
    docker: Docker,
    network: String,
    gateway: IpAddr,
    run_dir: PathBuf,
    images: super::Images,
    started: AtomicUsize,
    removed: AtomicBool,
}

impl std::fmt::Debug for DockerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerSession").field("network", &self.network).field("gateway", &self.gateway).finish()
    }
}

/// A container to start.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Its part in the stack (`envoy`, `prometheus`): in its name and in messages.
    pub role: &'static str,
    /// The image reference.
    pub image: String,
    /// The program to run (the image's binary).
    pub entrypoint: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Host directories bind-mounted at the same path inside.
    pub mounts: Vec<PathBuf>,
    /// Ports published on 127.0.0.1 under the same number.
    pub ports: Vec<u16>,
    /// Where its stdout and stderr go.
    pub log_file: PathBuf,
}

impl DockerSession {
    /// Connects to the Docker engine (`DOCKER_HOST` or the default socket), removes what SIGKILLed
    /// runs left behind, and creates a bridge network for the stack whose run directory is `run_dir`.
    /// Its containers run `images`.
    pub async fn create(run_dir: &Path, images: super::Images) -> Result<Arc<DockerSession>> {
        let docker = testcontainers::core::client::docker_client_instance()
            .await
            .context("connect to the Docker engine (`--runtime docker`; set DOCKER_HOST if it is not at the default socket)")?;
        docker.ping().await.context("the Docker engine does not answer (`--runtime docker`)")?;
        sweep_orphans(&docker).await;
        let suffix = run_dir.file_name().map(|n| n.to_string_lossy().replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-")).unwrap_or_default();
        let network = format!("waf-e2e-{suffix}");
        let labels = HashMap::from([(RUN_DIR_LABEL.to_string(), run_dir.display().to_string())]);
        let request = bollard::models::NetworkCreateRequest {
            name: network.clone(),
            driver: Some("bridge".into()),
            labels: Some(labels),
            ..Default::default()
        };
        docker.create_network(request).await.with_context(|| format!("create the Docker network {network}"))?;
        let mut session = DockerSession { docker, network, gateway: IpAddr::from([0, 0, 0, 0]), run_dir: run_dir.to_path_buf(), images, started: AtomicUsize::new(0), removed: AtomicBool::new(false) };
        // Dropping `session` removes the network, also when the inspection fails.
        session.gateway = session.read_gateway().await?;
        Ok(Arc::new(session))
    }

    async fn read_gateway(&self) -> Result<IpAddr> {
        let info = self.docker.inspect_network(&self.network, None).await.with_context(|| format!("inspect the Docker network {}", self.network))?;
        let gateway = info.ipam.and_then(|i| i.config).unwrap_or_default().into_iter().find_map(|c| c.gateway.and_then(|g| g.parse::<IpAddr>().ok()));
        gateway.with_context(|| format!("the Docker network {} has no IPv4 gateway address", self.network))
    }

    /// The network's gateway address: this host as the containers see it (bind services Envoy calls here).
    pub fn gateway(&self) -> IpAddr {
        self.gateway
    }

    /// The images its containers run.
    pub fn images(&self) -> &super::Images {
        &self.images
    }

    /// The network's name.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The engine client.
    pub(super) fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Starts `spec` on the network as the harness's user and returns once the container runs
    /// (the caller waits for what it serves).
    pub async fn start(self: &Arc<Self>, spec: ContainerSpec) -> Result<RunningContainer> {
        let (repository, tag) = super::split_image(&spec.image).map_err(anyhow::Error::msg)?;
        let number = self.started.fetch_add(1, Ordering::SeqCst);
        let name = format!("{}-{}-{number}", self.network, spec.role);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&spec.log_file)
            .with_context(|| format!("create {}", spec.log_file.display()))?;
        let log = std::sync::Mutex::new(log);
        let consumer = move |frame: &testcontainers::core::logs::LogFrame| {
            use std::io::Write;
            let bytes = match frame {
                testcontainers::core::logs::LogFrame::StdOut(b) | testcontainers::core::logs::LogFrame::StdErr(b) => b,
            };
            if let Ok(mut f) = log.lock() {
                let _ = f.write_all(bytes);
            }
        };
        // The run directory's owner (the harness's user): it can write there and the harness can remove what it wrote.
        let owner = {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(&self.run_dir).with_context(|| format!("stat {}", self.run_dir.display()))?;
            format!("{}:{}", meta.uid(), meta.gid())
        };
        let mut request = GenericImage::new(repository, tag)
            .with_entrypoint(&spec.entrypoint)
            .with_cmd(spec.args.clone())
            .with_network(self.network.clone())
            .with_container_name(name.clone())
            .with_user(owner)
            .with_label(RUN_DIR_LABEL, self.run_dir.display().to_string())
            .with_log_consumer(consumer);
        for dir in &spec.mounts {
            let path = dir.display().to_string();
            request = request.with_mount(Mount::bind_mount(path.clone(), path));
        }
        for port in &spec.ports {
            request = request.with_mapped_port(*port, ContainerPort::Tcp(*port));
        }
        // Published on loopback only: testcontainers would publish on every host address.
        request = request.with_host_config_modifier(|host| {
            for bindings in host.port_bindings.iter_mut().flat_map(|m| m.values_mut()).flatten() {
                for b in bindings {
                    b.host_ip = Some("127.0.0.1".into());
                }
            }
        });
        let container = request.start().await.map_err(|e| start_error(&spec, e))?;
        RunningContainer::new(container, name, self.clone()).await
    }

    /// Removes the network (its containers must be gone); later calls do nothing.
    pub async fn remove(&self) -> Result<()> {
        if self.removed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.docker.remove_network(&self.network).await.with_context(|| format!("remove the Docker network {}", self.network))
    }
}

impl Drop for DockerSession {
    fn drop(&mut self) {
        if self.removed.load(Ordering::SeqCst) {
            return;
        }
        let docker = self.docker.clone();
        let network = self.network.clone();
        // Its own thread and runtime: Drop may run inside or outside a runtime, of either flavour.
        let removed = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(docker.remove_network(&network)).err().map(|e| e.to_string())
        })
        .join();
        if let Ok(Some(e)) = removed {
            tracing::warn!("could not remove the Docker network {}: {e}", self.network);
        }
    }
}

/// Says what failed to start; an image that is neither present nor pullable gets the way out.
fn start_error(spec: &ContainerSpec, e: testcontainers::TestcontainersError) -> anyhow::Error {
    let text = format!("{e:#}");
    let hint = if text.contains("pull") || text.contains("No such image") || text.contains("not found") {
        "\nthe image is not on this machine and could not be pulled: `scripts/local-images.sh` builds local images from the installed binaries and prints the flags that select them"
    } else {
        ""
    };
    anyhow::anyhow!("start the {} container from {}: {text}{hint}", spec.role, spec.image)
}

/// Removes the containers and networks labelled with a run directory that no longer exists (its
/// owner died without removing them, and the run-directory sweep deleted the directory). Failures
/// are logged: they are another run's leftovers, not this run's problem.
async fn sweep_orphans(docker: &Docker) {
    let filters = HashMap::from([("label".to_string(), vec![RUN_DIR_LABEL.to_string()])]);
    let options = bollard::query_parameters::ListContainersOptions { all: true, filters: Some(filters.clone()), ..Default::default() };
    let orphaned = |labels: Option<&HashMap<String, String>>| labels.and_then(|l| l.get(RUN_DIR_LABEL)).is_some_and(|dir| !Path::new(dir).exists());
    match docker.list_containers(Some(options)).await {
        Ok(containers) => {
            for c in containers.into_iter().filter(|c| orphaned(c.labels.as_ref())) {
                let Some(id) = c.id else { continue };
                let force = bollard::query_parameters::RemoveContainerOptions { force: true, v: true, ..Default::default() };
                match docker.remove_container(&id, Some(force)).await {
                    Ok(()) => tracing::info!("removed container {id}, left by a run that is gone"),
                    Err(e) => tracing::warn!("could not remove container {id}, left by a run that is gone: {e}"),
                }
            }
        }
        Err(e) => tracing::warn!("could not list containers left by earlier runs: {e}"),
    }
    let options = bollard::query_parameters::ListNetworksOptions { filters: Some(filters) };
    match docker.list_networks(Some(options)).await {
        Ok(networks) => {
            for n in networks.into_iter().filter(|n| orphaned(n.labels.as_ref())) {
                let Some(name) = n.name else { continue };
                if let Err(e) = docker.remove_network(&name).await {
                    tracing::warn!("could not remove network {name}, left by a run that is gone: {e}");
                }
            }
        }
        Err(e) => tracing::warn!("could not list networks left by earlier runs: {e}"),
    }
}
