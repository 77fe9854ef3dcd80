//! The plan of a kind (or existing-cluster) run: one ordered `Vec<PlanStep>` that `waf-e2e plan` prints
//! and `KindStack::up` executes, so the printed plan is the truth of what runs.

use super::cache::{Cache, CacheState, LockFile};
use super::cluster::{cluster_name, context_name, new_run_id};
use super::objects::{self, ScenarioObjects};
use crate::profile::{lock_path, Download, Install, Profile, SecretKind, WaitSpec};
use super::steps::envoyproxy_log;
use super::ClusterOpts;
use crate::error::HarnessError;
use crate::k8s::AppliedObject;
use crate::rendered::{RenderedDocument, RenderedSet};
use crate::scenario::Scenario;
use anyhow::{Context, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The field manager of every server-side apply the harness does.
pub const FIELD_MANAGER: &str = "waf-e2e";
/// The field manager of the kind-only adjustment of the EnvoyProxy (kept apart from the feature's fields).
pub const KIND_FIELD_MANAGER: &str = "waf-e2e-kind";
/// Envoy Gateway maps listener port 80 to this container port.
pub const GATEWAY_CONTAINER_PORT: u16 = 10080;
/// The proxy's stats port (container port `metrics`).
pub const PROXY_STATS_PORT: u16 = 19001;
/// Prometheus' HTTP port.
pub const PROMETHEUS_PORT: u16 = 9090;
/// The EnvoyProxy the harness creates when the rendered resources carry none.
pub const FALLBACK_ENVOYPROXY: &str = "waf-e2e-kind";

/// Which cluster a run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterTarget {
    /// A new kind cluster, deleted at the end unless kept.
    NewKind {
        /// Cluster name (`waf-e2e-<run id>`).
        name: String,
        /// The kind config file.
        config: PathBuf,
    },
    /// A kept kind cluster (`--reuse NAME`); never deleted by the run.
    ReuseKind {
        /// Cluster name.
        name: String,
    },
    /// Any cluster reachable through a kubeconfig (`--kubeconfig`, `--context`).
    Existing {
        /// Kubeconfig path; the default loading rules when unset.
        kubeconfig: Option<PathBuf>,
        /// Context; the current one when unset.
        context: Option<String>,
    },
}

impl ClusterTarget {
    /// True for kind clusters (new or reused), which have no LoadBalancer.
    pub fn is_kind(&self) -> bool {
        !matches!(self, ClusterTarget::Existing { .. })
    }
}

/// Which pod a port-forward reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRef {
    /// A named pod.
    Name(String),
    /// The first Ready pod matching a label selector.
    Selector(String),
}

/// One action of a run, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanStep {
    /// Create (and later delete) a kind cluster.
    CreateCluster {
        /// Cluster name.
        name: String,
        /// Config file.
        config: PathBuf,
    },
    /// Attach to a kept kind cluster.
    ReuseCluster {
        /// Cluster name.
        name: String,
    },
    /// Connect to an existing cluster.
    ConnectCluster {
        /// Kubeconfig path, if given.
        kubeconfig: Option<PathBuf>,
        /// Context, if given.
        context: Option<String>,
    },
    /// Fetch a release manifest (cache, else network), verifying its sha256.
    Fetch {
        /// What.
        download: Download,
        /// What the cache holds now.
        cache: CacheState,
        /// The lock file recording checksums.
        lock: PathBuf,
    },
    /// Server-side apply a fetched release manifest.
    ApplyDownload {
        /// Manifest name.
        name: String,
        /// Version.
        version: String,
    },
    /// Server-side apply a repository file.
    ApplyFile {
        /// The file (relative to the repository root).
        path: PathBuf,
        /// What it holds (`Kind ns/name`), in order.
        objects: Vec<String>,
    },
    /// Server-side apply the namespaces the rendered objects live in (a namespace that exists is kept).
    EnsureNamespaces {
        /// Namespace names, sorted.
        namespaces: Vec<String>,
    },
    /// Apply a credential read from the file named by an env var (contents never shown).
    ApplySecret {
        /// Which credential.
        kind: SecretKind,
        /// The env var naming the file.
        env: String,
    },
    /// Server-side apply one rendered file under test.
    ApplyRendered {
        /// The file.
        path: PathBuf,
        /// What it holds.
        objects: Vec<String>,
    },
    /// kind only: set the EnvoyProxy's Service to ClusterIP (kind has no LoadBalancer; the Gateway needs an address).
    AdjustEnvoyProxy {
        /// The EnvoyProxy (rendered, or the harness' own when none is rendered).
        target: AppliedObject,
        /// True when the harness creates it.
        create: bool,
    },
    /// Server-side apply the profile's GatewayClass/Gateway.
    ApplyGateway {
        /// The manifest file.
        path: PathBuf,
        /// The EnvoyProxy the GatewayClass references, if any.
        envoyproxy: Option<AppliedObject>,
    },
    /// Wait for a named condition.
    Wait {
        /// The condition.
        wait: WaitSpec,
        /// Its deadline.
        timeout: Duration,
    },
    /// Forward a local port to a pod port.
    PortForward {
        /// `gateway`, `proxy-stats` or `prometheus`.
        name: String,
        /// Pod namespace.
        namespace: String,
        /// Which pod.
        pod: PodRef,
        /// Pod port.
        port: u16,
    },
    /// Attach an ephemeral audit-reader container to each proxy pod, mounting the volume that holds
    /// envoy's `--log-path` file (the distroless envoy image cannot be exec'd), and wait for it to run.
    AttachAuditReader {
        /// The pinned reader image (profile `audit_reader.image`).
        image: String,
        /// The pod volume holding the log, as the rendered EnvoyProxy mounts it (`None`: found at run time).
        volume: Option<String>,
        /// Envoy's `--log-path`.
        log_path: String,
        /// Deadline for the reader to be running.
        timeout: Duration,
    },
    /// A scenario's objects are applied, waited for, and its traffic sent.
    Scenario {
        /// Scenario name.
        name: String,
        /// Its objects.
        objects: ScenarioObjects,
        /// Waits after applying them.
        waits: Vec<(WaitSpec, Duration)>,
        /// Requests sent.
        requests: u64,
    },
    /// A scenario the profile cannot run, reported as skipped.
    SkipScenario {
        /// Scenario name.
        name: String,
        /// Why, in a sentence.
        reason: String,
    },
    /// Delete the scenario namespaces (existing clusters) or the kind cluster, unless kept.
    Teardown {
        /// The kind cluster to delete, when the run created one.
        cluster: Option<String>,
        /// `--keep`.
        keep: bool,
    },
}

/// Everything a run does, in order, plus what executing it needs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Run id (namespaces, cluster name).
    pub run_id: String,
    /// The cluster used.
    pub target: ClusterTarget,
    /// The profile.
    pub profile: Profile,
    /// The rendered resources under test.
    pub rendered: RenderedSet,
    /// Where they were read from (`--rendered`).
    pub rendered_dir: PathBuf,
    /// The repository root holding `kind/`.
    pub root: PathBuf,
    /// The manifest cache.
    pub cache: Cache,
    /// The ordered steps.
    pub steps: Vec<PlanStep>,
}

impl Plan {
    /// The steps that bring the stack up (everything before the first scenario).
    pub fn setup_steps(&self) -> impl Iterator<Item = &PlanStep> {
        self.steps.iter().take_while(|s| !matches!(s, PlanStep::Scenario { .. } | PlanStep::SkipScenario { .. } | PlanStep::Teardown { .. }))
    }

    /// The scrape pool of the rendered PodMonitor.
    pub fn scrape_pool(&self) -> String {
        self.rendered.podmonitor.job_name(0)
    }

    /// The label selector of the Gateway's proxy pods.
    pub fn proxy_selector(&self) -> String {
        proxy_selector(&self.profile)
    }

    /// The audit reader the plan attaches to the proxy pods, if it has that step.
    pub fn audit_reader(&self) -> Option<crate::k8s::AuditReader> {
        self.steps.iter().find_map(|s| match s {
            PlanStep::AttachAuditReader { image, timeout, .. } => {
                Some(crate::k8s::AuditReader { image: image.clone(), running_timeout: *timeout })
            }
            _ => None,
        })
    }
}

/// Envoy Gateway labels a Gateway's proxy pods with its name and namespace.
pub fn proxy_selector(profile: &Profile) -> String {
    format!(
        "gateway.envoyproxy.io/owning-gateway-name={},gateway.envoyproxy.io/owning-gateway-namespace={}",
        profile.gateway.name, profile.gateway.namespace
    )
}

/// Chooses the cluster from the options; `--reuse` with `--kubeconfig`/`--context` is a usage error.
pub fn target_from(opts: &ClusterOpts, run_id: &str) -> Result<ClusterTarget> {
    let existing = opts.kubeconfig.is_some() || opts.context.is_some();
    match (&opts.reuse, existing) {
        (Some(_), true) => Err(HarnessError::Usage("--reuse names a kind cluster; it cannot be combined with --kubeconfig/--context".into()).into()),
        (Some(name), false) => Ok(ClusterTarget::ReuseKind { name: name.clone() }),
        (None, true) => {
            if let Some(k) = &opts.kubeconfig {
                if !k.is_file() {
                    return Err(HarnessError::Usage(format!("--kubeconfig {}: no such file", k.display())).into());
                }
            }
            Ok(ClusterTarget::Existing { kubeconfig: opts.kubeconfig.clone(), context: opts.context.clone() })
        }
        (None, false) => Ok(ClusterTarget::NewKind { name: cluster_name(run_id), config: PathBuf::from("kind/cluster.yaml") }),
    }
}

/// Builds the plan of a run over `scenarios` without doing anything (reads the profile, rendered dir and cache state).
pub fn build_plan(opts: &ClusterOpts, scenarios: &[Scenario]) -> Result<Plan> {
    let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
    let target = target_from(opts, &run_id)?;
    let profile = Profile::load(&opts.root, &opts.profile)?;
    let rendered = RenderedSet::load(&opts.rendered)?;
    let rendered_envoyproxy = rendered.documents.iter().find(|d| d.kind == "EnvoyProxy");
    let lock = LockFile::load(&lock_path(&opts.root, &profile.name))?;
    let cache = Cache::new(opts.cache_dir.clone().unwrap_or_else(super::cache::default_dir), opts.timeouts.download);
    let template = crate::profile::waf_policy::load_templates(&opts.root, &profile)?;
    let mut steps = Vec::new();
    let t = &opts.timeouts;
    let wait = |w: WaitSpec| PlanStep::Wait { timeout: w.timeout(t), wait: w };

    steps.push(match &target {
        ClusterTarget::NewKind { name, config } => PlanStep::CreateCluster { name: name.clone(), config: config.clone() },
        ClusterTarget::ReuseKind { name } => PlanStep::ReuseCluster { name: name.clone() },
        ClusterTarget::Existing { kubeconfig, context } => PlanStep::ConnectCluster { kubeconfig: kubeconfig.clone(), context: context.clone() },
    });

    let gw = &profile.gateway;
    let gateway_ref = format!("{}/{}", gw.namespace, gw.name);
    let prometheus_ref = format!("{}/{}", profile.prometheus.namespace, profile.prometheus.name);
    if opts.no_install {
        steps.push(wait(WaitSpec::GatewayProgrammed(gateway_ref.clone())));
        steps.push(wait(WaitSpec::PrometheusReady(prometheus_ref.clone())));
    } else {
        let lock_rel = relative(&opts.root, &lock.path);
        for install in &profile.installs {
            match install {
                Install::Download { download, waits } => {
                    steps.push(PlanStep::Fetch { download: download.clone(), cache: cache.state(download, &lock), lock: lock_rel.clone() });
                    steps.push(PlanStep::ApplyDownload { name: download.name.clone(), version: download.version.clone() });
                    steps.extend(waits.iter().cloned().map(wait));
                }
                Install::File { path, waits } => {
                    steps.push(PlanStep::ApplyFile { path: path.clone(), objects: file_objects(&opts.root, path)? });
                    steps.extend(waits.iter().cloned().map(wait));
                }
                Install::Secret { kind, env } => steps.push(PlanStep::ApplySecret { kind: *kind, env: env.clone() }),
                Install::Rendered => {
                    let namespaces: std::collections::BTreeSet<String> = rendered.documents.iter().filter_map(|d| d.namespace.clone()).collect();
                    if !namespaces.is_empty() {
                        steps.push(PlanStep::EnsureNamespaces { namespaces: namespaces.into_iter().collect() });
                    }
                    for (path, objects) in rendered_files(&rendered) {
                        steps.push(PlanStep::ApplyRendered { path, objects });
                    }
                }
                Install::Gateway => {
                    let wires_envoyproxy = std::fs::read_to_string(opts.root.join(&gw.manifest))
                        .map(|t| t.contains("{{envoyproxy_ref}}"))
                        .unwrap_or(false);
                    let envoyproxy = wires_envoyproxy.then(|| {
                        rendered_envoyproxy.map(object_of).unwrap_or_else(|| AppliedObject {
                            api_version: "gateway.envoyproxy.io/v1alpha1".into(),
                            kind: "EnvoyProxy".into(),
                            name: FALLBACK_ENVOYPROXY.into(),
                            namespace: Some(gw.namespace.clone()),
                        })
                    });
                    if let (true, Some(ep)) = (target.is_kind(), &envoyproxy) {
                        steps.push(PlanStep::AdjustEnvoyProxy { target: ep.clone(), create: rendered_envoyproxy.is_none() });
                    }
                    steps.push(PlanStep::ApplyGateway { path: gw.manifest.clone(), envoyproxy });
                    steps.push(wait(WaitSpec::GatewayClassAccepted(gw.class.clone())));
                    steps.push(wait(WaitSpec::GatewayProgrammed(gateway_ref.clone())));
                }
            }
        }
    }
    steps.push(wait(WaitSpec::PodsReady(format!("{}/{}", gw.proxy_namespace, proxy_selector(&profile)))));
    if let (Some(reader), Some((log_path, volume))) = (&profile.audit_reader, rendered_envoyproxy.and_then(|d| envoyproxy_log(&d.value))) {
        steps.push(PlanStep::AttachAuditReader { image: reader.image.clone(), volume, log_path, timeout: t.audit_reader_running });
    }
    for (name, port) in [("gateway", GATEWAY_CONTAINER_PORT), ("proxy-stats", PROXY_STATS_PORT)] {
        steps.push(PlanStep::PortForward {
            name: name.into(),
            namespace: gw.proxy_namespace.clone(),
            pod: PodRef::Selector(proxy_selector(&profile)),
            port,
        });
    }
    steps.push(PlanStep::PortForward {
        name: "prometheus".into(),
        namespace: profile.prometheus.namespace.clone(),
        pod: PodRef::Name(format!("prometheus-{}-0", profile.prometheus.name)),
        port: PROMETHEUS_PORT,
    });
    steps.push(wait(WaitSpec::ScrapeTargetUp(rendered.podmonitor.job_name(0))));

    for s in scenarios {
        let missing = profile.missing(&s.needs());
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|c| serde_json::to_value(c).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()).collect();
            steps.push(PlanStep::SkipScenario {
                name: s.name().to_string(),
                reason: format!("profile {} lacks {} ({})", profile.name, names.join(", "), profile.description),
            });
            continue;
        }
        let objects = objects::render(s, &profile, &template, &run_id)?;
        let route = WaitSpec::RouteAccepted(format!("{}/{}", objects.namespace, objects.route));
        let echo = WaitSpec::DeploymentAvailable(format!("{}/{}", objects.namespace, objects::ECHO_NAME));
        steps.push(PlanStep::Scenario {
            name: s.name().to_string(),
            waits: vec![(echo.clone(), echo.timeout(t)), (route.clone(), route.timeout(t))],
            objects,
            requests: s.request_count(),
        });
    }
    let cluster = match &target {
        ClusterTarget::NewKind { name, .. } => Some(name.clone()),
        _ => None,
    };
    steps.push(PlanStep::Teardown { cluster, keep: opts.keep });
    Ok(Plan { run_id, target, profile, rendered, rendered_dir: opts.rendered.clone(), root: opts.root.clone(), cache, steps })
}

/// A rendered document's identity, as the apply steps and messages name it.
pub fn object_of(doc: &RenderedDocument) -> AppliedObject {
    AppliedObject { api_version: doc.api_version.clone(), kind: doc.kind.clone(), namespace: doc.namespace.clone(), name: doc.name.clone() }
}

/// The rendered files in load order (sorted by name), each with the objects it holds, in order.
fn rendered_files(rendered: &RenderedSet) -> Vec<(PathBuf, Vec<String>)> {
    let mut files: Vec<(PathBuf, Vec<String>)> = Vec::new();
    for doc in &rendered.documents {
        match files.last_mut() {
            Some((path, objects)) if *path == doc.file => objects.push(object_of(doc).to_string()),
            _ => files.push((doc.file.clone(), vec![object_of(doc).to_string()])),
        }
    }
    files
}

/// The objects a repository manifest holds, as `Kind ns/name`, in order.
fn file_objects(root: &Path, path: &Path) -> Result<Vec<String>> {
    let full = root.join(path);
    let text = std::fs::read_to_string(&full).with_context(|| format!("cannot read {}", full.display()))?;
    Ok(crate::k8s::parse_manifests(&text, &path.display().to_string())?
        .iter()
        .map(|m| match m.object.metadata.namespace.as_deref() {
            Some(ns) => format!("{} {ns}/{}", m.kind(), m.name()),
            None => format!("{} {}", m.kind(), m.name()),
        })
        .collect())
}

fn relative(root: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(root).map(Path::to_path_buf).unwrap_or_else(|_| p.to_path_buf())
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodRef::Name(n) => write!(f, "pod {n}"),
            PodRef::Selector(s) => write!(f, "a Ready pod with labels {s}"),
        }
    }
}

impl fmt::Display for PlanStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanStep::CreateCluster { name, config } => write!(
                f,
                "create kind cluster {name} from {} (kubectl --context {})",
                config.display(),
                context_name(name)
            ),
            PlanStep::ReuseCluster { name } => write!(f, "reuse kept kind cluster {name} (kubectl --context {})", context_name(name)),
            PlanStep::ConnectCluster { kubeconfig, context } => write!(
                f,
                "connect to existing cluster (kubeconfig {}, context {})",
                kubeconfig.as_ref().map(|k| k.display().to_string()).unwrap_or_else(|| "default".into()),
                context.as_deref().unwrap_or("current")
            ),
            PlanStep::Fetch { download, cache, lock } => write!(
                f,
                "fetch {} {} from {} [{cache}; sha256 {}]",
                download.name,
                download.version,
                download.url,
                match &download.sha256 {
                    Some(_) => "pinned in the profile".to_string(),
                    None => format!("checked against {}", lock.display()),
                }
            ),
            PlanStep::ApplyDownload { name, version } => write!(f, "server-side apply {name} {version} (field manager {FIELD_MANAGER})"),
            PlanStep::ApplyFile { path, objects } => {
                write!(f, "server-side apply {} (field manager {FIELD_MANAGER}): {}", path.display(), objects.join(", "))
            }
            PlanStep::EnsureNamespaces { namespaces } => write!(
                f,
                "server-side apply namespaces {} (the rendered objects live there; existing ones are kept)",
                namespaces.join(", ")
            ),
            PlanStep::ApplySecret { kind, env } => write!(f, "apply the {kind} from the file named by ${env} (contents never shown)"),
            PlanStep::ApplyRendered { path, objects } => {
                write!(f, "server-side apply rendered {}: {}", path.display(), objects.join(", "))
            }
            PlanStep::AdjustEnvoyProxy { target, create } => write!(
                f,
                "{} {target} with spec.provider.kubernetes.envoyService.type ClusterIP (field manager {KIND_FIELD_MANAGER}; kind has no LoadBalancer)",
                if *create { "create" } else { "adjust" }
            ),
            PlanStep::ApplyGateway { path, envoyproxy } => write!(
                f,
                "server-side apply {}{}",
                path.display(),
                envoyproxy.as_ref().map(|e| format!(" (GatewayClass parametersRef -> {e})")).unwrap_or_default()
            ),
            PlanStep::Wait { wait, timeout } => write!(f, "wait up to {}s: {wait}", timeout.as_secs()),
            PlanStep::PortForward { name, namespace, pod, port } => {
                write!(f, "port-forward {name}: 127.0.0.1:<ephemeral> -> {pod} in {namespace}, port {port}")
            }
            PlanStep::AttachAuditReader { image, volume, log_path, timeout } => write!(
                f,
                "attach audit reader (ephemeral container {image} mounting {}) to each proxy pod, to read {log_path} \
                 (the envoy image is distroless); wait up to {}s for it to run (needs Kubernetes >= 1.25 and patch on pods/ephemeralcontainers)",
                match volume {
                    Some(v) => format!("volume {v}"),
                    None => format!("the pod volume holding {log_path}, found at run time"),
                },
                timeout.as_secs()
            ),
            PlanStep::Scenario { name, objects, waits, requests } => {
                write!(f, "scenario {name}: apply {} in namespace {}", objects.resources.join(", "), objects.namespace)?;
                for (w, t) in waits {
                    write!(f, "; wait up to {}s: {w}", t.as_secs())?;
                }
                write!(f, "; send {requests} request(s) with Host {}; delete namespace {} after", objects.host, objects.namespace)
            }
            PlanStep::SkipScenario { name, reason } => write!(f, "scenario {name}: SKIPPED, {reason}"),
            PlanStep::Teardown { cluster: Some(name), keep: false } => write!(f, "teardown: delete kind cluster {name} (also on failure and Ctrl-C; --keep keeps it)"),
            PlanStep::Teardown { cluster: Some(name), keep: true } => write!(f, "teardown: keep kind cluster {name} (--keep); delete it with: kind delete cluster --name {name}"),
            PlanStep::Teardown { cluster: None, keep } => write!(
                f,
                "teardown: {} the scenario namespaces; the cluster itself is left as found",
                if *keep { "keep (--keep)" } else { "delete" }
            ),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan of a run: profile {} ({}), run id {}", self.profile.name, self.profile.description, self.run_id)?;
        writeln!(f, "scrape pool: {}; rendered resources from {}", self.scrape_pool(), self.rendered_dir.display())?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "{:>3}. {step}", i + 1)?;
        }
        Ok(())
    }
}
