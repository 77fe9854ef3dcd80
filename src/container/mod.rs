//! `--runtime docker`: the local stack's Prometheus and Envoy as containers (testcontainers)
//! instead of child processes.
//!
//! Each local stack gets a private bridge network of its own ([`DockerSession`]). Containers run
//! as the harness's user, with the run directories bind-mounted at the same paths, so every path
//! the harness writes into a configuration (bootstrap, xDS files, wasm module, audit log,
//! Prometheus' config and TSDB) means the same file inside. Their listeners bind all interfaces of
//! the container; the harness reaches them through ports published on 127.0.0.1 only, with the
//! same number inside and out, so the traffic, admin and query addresses are the native ones.
//! The two services Envoy calls on the harness (the echo backend and the reference WAF service)
//! bind the network's gateway address, which only this host and that network's containers reach.
//!
//! Containers and the network are removed when the stack stops (also on Ctrl-C, which stops the
//! stack) and, as a last resort, on drop. Those of a SIGKILLed harness are removed by the next
//! `--runtime docker` start: they are labelled with their run directory, which the run-directory
//! sweep (`crate::rundir`) deletes once its owner is gone.

mod running;
mod session;

pub use running::RunningContainer;
pub use session::{ContainerSpec, DockerSession};

/// The Prometheus image of `--runtime docker` unless `--prometheus-image` says otherwise: the
/// official image at the version the kind profile's Prometheus runs (`kind/manifests/prometheus.yaml`,
/// `spec.version`).
pub const DEFAULT_PROMETHEUS_IMAGE: &str = "quay.io/prometheus/prometheus:v3.5.0";

/// The Envoy image of `--runtime docker` unless `--envoy-image` says otherwise: the one Envoy
/// Gateway v1.7.2 (the kind profile's) deploys for its proxies.
pub const DEFAULT_ENVOY_IMAGE: &str = "docker.io/envoyproxy/envoy:distroless-v1.37.0";

/// Where Envoy's binary is in the official images (and in `scripts/local-images.sh`'s).
pub const ENVOY_ENTRYPOINT: &str = "/usr/local/bin/envoy";

/// Where Prometheus' binary is in the official images (and in `scripts/local-images.sh`'s).
pub const PROMETHEUS_ENTRYPOINT: &str = "/bin/prometheus";

/// How the local stack runs Prometheus and Envoy (the `--runtime` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RuntimeKind {
    /// Child processes of the harness (Prometheus from PATH, Envoy from `--envoy` and its fallbacks).
    #[default]
    Native,
    /// Containers through testcontainers, on a private network, removed at the end.
    Docker,
}

/// The images `--runtime docker` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// Prometheus' image (binary at [`PROMETHEUS_ENTRYPOINT`]).
    pub prometheus: String,
    /// Envoy's image (binary at [`ENVOY_ENTRYPOINT`]).
    pub envoy: String,
}

impl Default for Images {
    fn default() -> Self {
        Images { prometheus: DEFAULT_PROMETHEUS_IMAGE.into(), envoy: DEFAULT_ENVOY_IMAGE.into() }
    }
}

/// The local stack's runtime, resolved from the flags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Runtime {
    /// Child processes.
    #[default]
    Native,
    /// Containers of these images.
    Docker(Images),
}

impl Runtime {
    /// The runtime the flags ask for; image flags only make sense with `docker` (an error otherwise).
    pub fn from_flags(kind: RuntimeKind, prometheus_image: Option<&str>, envoy_image: Option<&str>) -> Result<Runtime, String> {
        match kind {
            RuntimeKind::Native => {
                let given: Vec<&str> = [("--prometheus-image", prometheus_image), ("--envoy-image", envoy_image)]
                    .iter().filter(|(_, v)| v.is_some()).map(|(f, _)| *f).collect();
                if given.is_empty() { Ok(Runtime::Native) } else { Err(format!("{} only apply to `--runtime docker`", given.join(" and "))) }
            }
            RuntimeKind::Docker => {
                let defaults = Images::default();
                Ok(Runtime::Docker(Images {
                    prometheus: prometheus_image.map_or(defaults.prometheus, str::to_string),
                    envoy: envoy_image.map_or(defaults.envoy, str::to_string),
                }))
            }
        }
    }

    /// One line for reports: `native` or `docker (prometheus IMAGE, envoy IMAGE)`.
    pub fn describe(&self) -> String {
        match self {
            Runtime::Native => "native processes".into(),
            Runtime::Docker(i) => format!("docker containers (prometheus {}, envoy {})", i.prometheus, i.envoy),
        }
    }
}

/// `repository[:tag]` split for testcontainers (`latest` when there is no tag); a digest stays whole
/// in the tag position (`name@sha256:...` becomes `name`, `@sha256:...` is not supported: an error).
pub fn split_image(image: &str) -> Result<(String, String), String> {
    if image.is_empty() || image.contains(char::is_whitespace) {
        return Err(format!("`{image}` is not an image reference"));
    }
    if image.contains('@') {
        return Err(format!("`{image}`: give the image by tag, not by digest"));
    }
    // A colon after the last slash separates the tag; one before it belongs to a registry's port.
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    Ok(match image[last_slash..].rfind(':') {
        Some(i) => (image[..last_slash + i].to_string(), image[last_slash + i + 1..].to_string()),
        None => (image.to_string(), "latest".to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_at_the_tag_not_at_a_registry_port() {
        assert_eq!(split_image("quay.io/prometheus/prometheus:v3.5.0").unwrap(), ("quay.io/prometheus/prometheus".into(), "v3.5.0".into()));
        assert_eq!(split_image("localhost:5000/envoy").unwrap(), ("localhost:5000/envoy".into(), "latest".into()));
        assert_eq!(split_image("localhost:5000/envoy:v1").unwrap(), ("localhost:5000/envoy".into(), "v1".into()));
        assert!(split_image("envoy@sha256:00").is_err());
        assert!(split_image("").is_err());
    }

    #[test]
    fn image_flags_without_the_docker_runtime_are_refused() {
        let err = Runtime::from_flags(RuntimeKind::Native, Some("p:1"), None).unwrap_err();
        assert!(err.contains("--prometheus-image only apply to `--runtime docker`"), "{err}");
        assert_eq!(Runtime::from_flags(RuntimeKind::Native, None, None).unwrap(), Runtime::Native);
        let docker = Runtime::from_flags(RuntimeKind::Docker, None, Some("e:1")).unwrap();
        assert_eq!(docker, Runtime::Docker(Images { prometheus: DEFAULT_PROMETHEUS_IMAGE.into(), envoy: "e:1".into() }));
    }

    #[test]
    fn the_default_prometheus_image_is_the_kind_profiles_version() {
        let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/kind/manifests/prometheus.yaml")).unwrap();
        let pinned = manifest.lines().find_map(|l| l.trim().strip_prefix("version: ")).expect("the Prometheus CR pins spec.version");
        assert_eq!(split_image(DEFAULT_PROMETHEUS_IMAGE).unwrap().1, pinned.trim());
    }
}
