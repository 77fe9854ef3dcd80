//! Stack profiles (`kind/profiles/<name>.yaml`): pinned installs, gateway, WAF template, capabilities.
//!
//! Shared by every stack: the kind stack installs from it, and every stack that runs the real filter
//! renders each scenario's WAF policy from its template (`waf_policy`).

pub mod waf_policy;

use crate::error::{InputProblem, InvalidInput};
use crate::scenario::Capability;
use crate::timeouts::Timeouts;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A profile: what a kind (or existing-cluster) run installs and how WAF policies are written.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Profile name (`oss`, `tigera`).
    pub name: String,
    /// One line for people.
    pub description: String,
    /// What the profile's WAF filter can do; scenarios needing more are skipped.
    pub capabilities: Vec<Capability>,
    /// Which WAF filter build the profile runs (scenario rule-id/phase expectations depend on it).
    pub filter: FilterSpec,
    /// The Gateway every scenario route attaches to.
    pub gateway: GatewaySpec,
    /// The Prometheus CR the harness queries.
    pub prometheus: PrometheusSpec,
    /// How a scenario's WAF policy is rendered.
    pub waf: WafSpec,
    /// Ordered install steps.
    pub installs: Vec<Install>,
    /// The ephemeral container that reads envoy's log file (`--log-path`) on the proxy pods, if configured.
    pub audit_reader: Option<AuditReaderSpec>,
    /// The file the profile was read from.
    pub file: PathBuf,
}

/// The WAF filter build a profile runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Name of the filter build whose behaviour scenarios' expectations must describe
    /// (`coraza-proxy-wasm-release`: upstream's release image, multiphase evaluation and CRS v4).
    pub flavour: String,
}

/// The shared Gateway and where its proxy pods run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySpec {
    /// Gateway name.
    pub name: String,
    /// Gateway namespace.
    pub namespace: String,
    /// GatewayClass name.
    pub class: String,
    /// Namespace of the proxy pods the controller creates for the Gateway.
    pub proxy_namespace: String,
    /// Manifest (relative to the repository root) holding the GatewayClass/Gateway.
    pub manifest: PathBuf,
}

/// The Prometheus custom resource the harness talks to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSpec {
    /// Prometheus CR name (the pod is `prometheus-<name>-0`).
    pub name: String,
    /// Prometheus CR namespace.
    pub namespace: String,
}

/// The audit reader attached to each proxy pod as an ephemeral container (see `crate::k8s::audit_reader`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditReaderSpec {
    /// Image with `sh`, `wc` and `tail`, pinned by tag or digest (e.g. `busybox:1.36`).
    pub image: String,
}

/// How the WAF policy of a scenario is rendered for this profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WafSpec {
    /// Template file (relative to the repository root) with `{{placeholder}}`s.
    pub template: PathBuf,
    /// Template of a companion object carrying the scenario's SecLang, rendered only when the
    /// scenario has directives (the tigera WAFPlugin, whose CRD rejects an empty one).
    #[serde(default)]
    pub plugin_template: Option<PathBuf>,
    /// OCI image of the WAF filter, when the template needs one.
    #[serde(default)]
    pub wasm_image: Option<String>,
    /// SecLang lines placed first; `{mode}` becomes the engine mode.
    #[serde(default)]
    pub preamble: Vec<String>,
    /// SecLang lines that load the CRS when the scenario asks for it.
    #[serde(default)]
    pub crs: Vec<String>,
}

/// A condition the run waits for, with the timeout taken from [`Timeouts`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WaitSpec {
    /// A CRD (`plural.group`) is Established.
    CrdEstablished(String),
    /// A Deployment (`namespace/name`) is Available.
    DeploymentAvailable(String),
    /// Calico's TigeraStatus reports every component Available.
    CalicoReady,
    /// A GatewayClass is Accepted.
    GatewayClassAccepted(String),
    /// A Gateway (`namespace/name`) is Programmed.
    GatewayProgrammed(String),
    /// A Prometheus CR (`namespace/name`) has ready replicas.
    PrometheusReady(String),
    /// Pods matching `namespace/label-selector` are Ready.
    PodsReady(String),
    /// An HTTPRoute (`namespace/name`) is Accepted by its parent.
    RouteAccepted(String),
    /// The scrape pool has a target with health `up`.
    ScrapeTargetUp(String),
}

impl WaitSpec {
    /// The deadline for this wait.
    pub fn timeout(&self, t: &Timeouts) -> Duration {
        match self {
            WaitSpec::CrdEstablished(_) => t.crd_established,
            WaitSpec::DeploymentAvailable(_) => t.deployment_available,
            WaitSpec::CalicoReady => t.calico_ready,
            WaitSpec::GatewayClassAccepted(_) => t.gateway_class_accepted,
            WaitSpec::GatewayProgrammed(_) => t.gateway_programmed,
            WaitSpec::PrometheusReady(_) => t.prometheus_rollout,
            WaitSpec::PodsReady(_) => t.pods_ready,
            WaitSpec::RouteAccepted(_) => t.route_accepted,
            WaitSpec::ScrapeTargetUp(_) => t.target_up,
        }
    }
}

impl fmt::Display for WaitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitSpec::CrdEstablished(n) => write!(f, "CRD {n} Established"),
            WaitSpec::DeploymentAvailable(n) => write!(f, "Deployment {n} Available"),
            WaitSpec::CalicoReady => write!(f, "Calico ready (TigeraStatus Available)"),
            WaitSpec::GatewayClassAccepted(n) => write!(f, "GatewayClass {n} Accepted"),
            WaitSpec::GatewayProgrammed(n) => write!(f, "Gateway {n} Programmed"),
            WaitSpec::PrometheusReady(n) => write!(f, "Prometheus {n} ready"),
            WaitSpec::PodsReady(n) => write!(f, "pods {n} Ready"),
            WaitSpec::RouteAccepted(n) => write!(f, "HTTPRoute {n} Accepted"),
            WaitSpec::ScrapeTargetUp(n) => write!(f, "scrape pool {n} has a target up"),
        }
    }
}

/// Which credential a secret install step carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    /// The Calico Enterprise LicenseKey manifest.
    License,
    /// The registry `.dockerconfigjson` for `tigera-pull-secret`.
    PullSecret,
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretKind::License => "licence key",
            SecretKind::PullSecret => "registry pull secret",
        })
    }
}

/// A pinned release manifest fetched over the network (cached, checksummed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// Short name (`envoy-gateway`).
    pub name: String,
    /// Release version, for people.
    pub version: String,
    /// Where to fetch it.
    pub url: String,
    /// Pinned sha256 (hex); when unset, the lock file's value is used (trust on first use).
    pub sha256: Option<String>,
}

/// One ordered install step of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// Download, verify and server-side apply a release manifest, then wait.
    Download {
        /// What to fetch.
        download: Download,
        /// Conditions to wait for after the apply.
        waits: Vec<WaitSpec>,
    },
    /// Server-side apply a manifest file from the repository, then wait.
    File {
        /// Path relative to the repository root.
        path: PathBuf,
        /// Conditions to wait for after the apply.
        waits: Vec<WaitSpec>,
    },
    /// Apply a credential read from the file named by an environment variable.
    Secret {
        /// Which credential.
        kind: SecretKind,
        /// The environment variable holding the file path.
        env: String,
    },
    /// Apply the operator-rendered resources under test (`--rendered DIR`).
    Rendered,
    /// Apply the profile's GatewayClass/Gateway and wait for them.
    Gateway,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    #[serde(default)]
    description: String,
    capabilities: Vec<Capability>,
    filter: FilterSpec,
    gateway: GatewaySpec,
    prometheus: PrometheusSpec,
    waf: WafSpec,
    installs: Vec<RawInstall>,
    #[serde(default)]
    audit_reader: Option<AuditReaderSpec>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawInstall {
    Word(String),
    Map(RawInstallMap),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstallMap {
    #[serde(default)]
    download: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    secret: Option<SecretKind>,
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    waits: Vec<WaitSpec>,
}

/// The profile file for `name` under `root` (`<root>/kind/profiles/<name>.yaml`).
pub fn profile_path(root: &Path, name: &str) -> PathBuf {
    root.join("kind").join("profiles").join(format!("{name}.yaml"))
}

/// The trust-on-first-use lock file for `name` (`<root>/kind/profiles/<name>.lock`).
pub fn lock_path(root: &Path, name: &str) -> PathBuf {
    root.join("kind").join("profiles").join(format!("{name}.lock"))
}

/// Names of the profiles available under `root`, sorted.
pub fn available(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("kind").join("profiles"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let is_profile = p.extension().is_some_and(|x| x == "yaml")
                && !p.file_stem().is_some_and(|s| s.to_string_lossy().ends_with("-waf-policy"));
            is_profile.then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned())).flatten()
        })
        .collect();
    names.sort();
    names
}

impl Profile {
    /// Loads and validates profile `name` from `<root>/kind/profiles/`; problems are invalid input (exit 2).
    pub fn load(root: &Path, name: &str) -> Result<Profile, InvalidInput> {
        let file = profile_path(root, name);
        let text = std::fs::read_to_string(&file).map_err(|e| {
            let known = available(root);
            problem(&file, "", format!("cannot read profile `{name}`: {e} (available profiles: {})", known.join(", ")))
        })?;
        Profile::parse(&file, &text)
    }

    /// Parses profile text; `file` names it in messages.
    pub fn parse(file: &Path, text: &str) -> Result<Profile, InvalidInput> {
        let raw: RawProfile =
            serde_saphyr::from_str(text).map_err(|e| InvalidInput(vec![crate::input::saphyr_problem(file, 0, text, &e)]))?;
        let mut problems = Vec::new();
        let mut installs = Vec::new();
        for (i, item) in raw.installs.into_iter().enumerate() {
            match convert_install(item) {
                Ok(install) => installs.push(install),
                Err(message) => problems.push(InputProblem {
                    at: crate::input::whole_file(file),
                    field: format!("installs[{i}]"),
                    message,
                }),
            }
        }
        for required in [Install::Rendered, Install::Gateway] {
            if !installs.contains(&required) {
                problems.push(InputProblem {
                    at: crate::input::whole_file(file),
                    field: "installs".into(),
                    message: format!("must contain the step `{}`", if required == Install::Rendered { "rendered" } else { "gateway" }),
                });
            }
        }
        if let Some(reader) = &raw.audit_reader {
            if let Err(message) = check_pinned(&reader.image) {
                problems.push(InputProblem {
                    at: crate::input::whole_file(file),
                    field: "audit_reader.image".into(),
                    message,
                });
            }
        }
        if !problems.is_empty() {
            return Err(InvalidInput(problems));
        }
        Ok(Profile {
            name: raw.name,
            description: raw.description,
            capabilities: raw.capabilities,
            filter: raw.filter,
            gateway: raw.gateway,
            prometheus: raw.prometheus,
            waf: raw.waf,
            installs,
            audit_reader: raw.audit_reader,
            file: file.to_path_buf(),
        })
    }

    /// Every release manifest the profile downloads, in install order.
    pub fn downloads(&self) -> impl Iterator<Item = &Download> {
        self.installs.iter().filter_map(|i| match i {
            Install::Download { download, .. } => Some(download),
            _ => None,
        })
    }

    /// Capabilities `needs` asks for that this profile lacks.
    pub fn missing(&self, needs: &[Capability]) -> Vec<Capability> {
        needs.iter().filter(|c| !self.capabilities.contains(c)).copied().collect()
    }
}

/// An image reference pinned by a tag other than `latest`, or by digest.
fn check_pinned(image: &str) -> Result<(), String> {
    if image.contains("@sha256:") {
        return Ok(());
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if !tag.is_empty() && tag != "latest" => Ok(()),
        _ => Err(format!("`{image}` is not pinned: give a tag other than `latest` (busybox:1.36) or a digest")),
    }
}

fn problem(file: &Path, field: &str, message: String) -> InvalidInput {
    InvalidInput(vec![InputProblem {
        at: crate::input::whole_file(file),
        field: field.to_string(),
        message,
    }])
}

fn convert_install(item: RawInstall) -> Result<Install, String> {
    let m = match item {
        RawInstall::Word(w) if w == "rendered" => return Ok(Install::Rendered),
        RawInstall::Word(w) if w == "gateway" => return Ok(Install::Gateway),
        RawInstall::Word(w) => return Err(format!("unknown step `{w}` (expected `rendered`, `gateway`, or a map)")),
        RawInstall::Map(m) => m,
    };
    let kinds = [m.download.is_some(), m.file.is_some(), m.secret.is_some()].iter().filter(|b| **b).count();
    if kinds != 1 {
        return Err("exactly one of `download`, `file`, `secret` must be set".into());
    }
    if let Some(name) = m.download {
        let version = m.version.ok_or("`download` needs `version`")?;
        let url = m.url.ok_or("`download` needs `url`")?;
        if !url.starts_with("https://") && !url.starts_with("http://") {
            return Err(format!("`url` must be http(s): {url}"));
        }
        if let Some(sum) = &m.sha256 {
            if sum.len() != 64 || !sum.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
                return Err(format!("`sha256` must be 64 lowercase hex digits, got `{sum}`"));
            }
        }
        return Ok(Install::Download { download: Download { name, version, url, sha256: m.sha256 }, waits: m.waits });
    }
    if let Some(path) = m.file {
        return Ok(Install::File { path, waits: m.waits });
    }
    let kind = m.secret.expect("counted above");
    let env = m.env.ok_or("`secret` needs `env` (the variable naming the file)")?;
    if !m.waits.is_empty() {
        return Err("`secret` steps take no `waits`".into());
    }
    Ok(Install::Secret { kind, env })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn the_oss_profile_loads_and_lacks_only_the_would_block_counter() {
        let p = Profile::load(&root(), "oss").unwrap();
        assert_eq!(p.capabilities, vec![Capability::Blocking, Capability::AuditLog]);
        assert_eq!(p.missing(&[Capability::WouldBlockCounter, Capability::Blocking]), vec![Capability::WouldBlockCounter]);
        let names: Vec<&str> = p.downloads().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["calico-operator-crds", "calico-operator", "calico-custom-resources", "envoy-gateway", "prometheus-operator"]);
        assert!(p.downloads().all(|d| d.sha256.is_none()), "sha256 is recorded in the lock, not guessed");
        assert!(matches!(p.installs[0], Install::Download { ref waits, .. } if waits[0] == WaitSpec::CrdEstablished("installations.operator.tigera.io".into())));
        assert_eq!(p.filter.flavour, "coraza-proxy-wasm-release");
        assert!(p.installs.contains(&Install::Rendered));
    }

    #[test]
    fn the_tigera_profile_loads_with_every_capability_and_its_secrets() {
        let p = Profile::load(&root(), "tigera").unwrap();
        assert!(p.missing(&[Capability::WouldBlockCounter, Capability::Blocking, Capability::AuditLog]).is_empty());
        let secrets: Vec<_> = p.installs.iter().filter(|i| matches!(i, Install::Secret { .. })).collect();
        assert_eq!(secrets.len(), 2);
    }

    #[test]
    fn an_unknown_profile_names_the_available_ones() {
        let err = Profile::load(&root(), "nope").unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("oss") && err.contains("tigera"), "{err}");
    }

    const HEAD: &str = "name: x\ncapabilities: []\nfilter: {flavour: f}\n\
gateway: {name: g, namespace: n, class: c, proxy_namespace: p, manifest: m.yaml}\n\
prometheus: {name: p, namespace: m}\nwaf: {template: t.yaml}\n";

    #[test]
    fn a_download_without_url_and_a_bad_checksum_are_reported_with_their_index() {
        let text = format!("{HEAD}{}", r#"installs:
  - download: a
    version: v1
  - download: b
    version: v1
    url: https://x/y
    sha256: ABC
  - rendered
  - gateway
"#);
        let err = Profile::parse(Path::new("x.yaml"), &text).unwrap_err().to_string();
        assert!(err.contains("installs[0]") && err.contains("needs `url`"), "{err}");
        assert!(err.contains("installs[1]") && err.contains("64 lowercase hex"), "{err}");
    }

    #[test]
    fn both_profiles_pin_the_audit_reader_image() {
        for name in ["oss", "tigera"] {
            let p = Profile::load(&root(), name).unwrap();
            assert_eq!(p.audit_reader.map(|r| r.image).as_deref(), Some("busybox:1.36"), "{name}");
        }
    }

    #[test]
    fn an_unpinned_audit_reader_image_is_rejected() {
        for image in ["busybox", "busybox:latest", "registry:5000/busybox"] {
            let text = format!("{HEAD}audit_reader: {{image: \"{image}\"}}\ninstalls:\n  - rendered\n  - gateway\n");
            let err = Profile::parse(Path::new("x.yaml"), &text).unwrap_err().to_string();
            assert!(err.contains("audit_reader.image") && err.contains("not pinned"), "{image}: {err}");
        }
        for image in ["busybox:1.36", "registry:5000/busybox:1.36", "busybox@sha256:0123"] {
            let text = format!("{HEAD}audit_reader: {{image: \"{image}\"}}\ninstalls:\n  - rendered\n  - gateway\n");
            assert!(Profile::parse(Path::new("x.yaml"), &text).is_ok(), "{image}");
        }
    }

    #[test]
    fn a_profile_without_the_rendered_step_is_rejected() {
        let text = format!("{HEAD}installs:\n  - gateway\n");
        let err = Profile::parse(Path::new("x.yaml"), &text).unwrap_err().to_string();
        assert!(err.contains("`rendered`"), "{err}");
    }
}
