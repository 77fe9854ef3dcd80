//! The kind cluster lifecycle through the `kind` CLI (there is no API): create, reuse, delete, and a guard.
//!
//! Command lines are built by pure functions (tested); running them is a thin `tokio::process` layer.
//! The guard deletes the cluster on drop (so also when a Ctrl-C drops a starting stack) and on teardown, unless kept.

use crate::error::HarnessError;
use anyhow::{anyhow, bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fresh run id: 6 lowercase hex digits.
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

/// The kind cluster name for a run (`waf-e2e-<run id>`).
pub fn cluster_name(run_id: &str) -> String {
    format!("waf-e2e-{run_id}")
}

/// The kubeconfig context kind writes for a cluster (`kind-<name>`).
pub fn context_name(cluster: &str) -> String {
    format!("kind-{cluster}")
}

/// The `kind` executable and the command lines the harness runs with it.
#[derive(Debug, Clone)]
pub struct KindCli {
    /// Path or name of the `kind` binary (looked up on PATH when bare).
    pub binary: PathBuf,
}

impl Default for KindCli {
    fn default() -> Self {
        KindCli { binary: PathBuf::from("kind") }
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

impl KindCli {
    /// `kind create cluster --name N --config C --wait 0s --kubeconfig K` (readiness is waited for by name later).
    pub fn create_args(name: &str, config: &Path, kubeconfig: &Path) -> Vec<OsString> {
        let mut a = os(&["create", "cluster", "--name", name, "--config"]);
        a.push(config.into());
        a.extend(os(&["--wait", "0s", "--kubeconfig"]));
        a.push(kubeconfig.into());
        a
    }

    /// `kind get clusters`.
    pub fn list_args() -> Vec<OsString> {
        os(&["get", "clusters"])
    }

    /// `kind export kubeconfig --name N --kubeconfig K` (for a reused cluster).
    pub fn export_kubeconfig_args(name: &str, kubeconfig: &Path) -> Vec<OsString> {
        let mut a = os(&["export", "kubeconfig", "--name", name, "--kubeconfig"]);
        a.push(kubeconfig.into());
        a
    }

    /// `kind delete cluster --name N --kubeconfig K`.
    pub fn delete_args(name: &str, kubeconfig: &Path) -> Vec<OsString> {
        let mut a = os(&["delete", "cluster", "--name", name, "--kubeconfig"]);
        a.push(kubeconfig.into());
        a
    }

    /// `kind version`.
    pub fn version_args() -> Vec<OsString> {
        os(&["version"])
    }

    /// Runs `kind <args>` with a deadline; returns stdout, or an error with the command and stderr.
    pub async fn run(&self, args: &[OsString], timeout: Duration) -> Result<String> {
        let shown = format!("{} {}", self.binary.display(), args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
        let child = tokio::process::Command::new(&self.binary)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(timeout, child)
            .await
            .map_err(|_| anyhow!("`{shown}` did not finish within {}s", timeout.as_secs()))?
            .with_context(|| format!("cannot run `{shown}` (is kind installed? https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("`{shown}` failed ({}):\n{}", out.status, tail.join("\n"));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Names of the existing kind clusters.
    pub async fn clusters(&self, timeout: Duration) -> Result<Vec<String>> {
        Ok(parse_clusters(&self.run(&Self::list_args(), timeout).await?))
    }
}

/// Cluster names from `kind get clusters` output (one per line; the "none" notice goes to stderr).
pub fn parse_clusters(stdout: &str) -> Vec<String> {
    stdout.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("No kind clusters")).map(String::from).collect()
}

/// What to do about the cluster when the run ends or is interrupted.
#[derive(Debug, Clone)]
struct Cleanup {
    cli: KindCli,
    name: String,
    kubeconfig: PathBuf,
    delete: bool,
    done: bool,
}

impl Cleanup {
    /// The delete command to run now (None when kept or already done) and the line to tell the user.
    fn action(&self) -> (Option<Vec<OsString>>, String) {
        if self.done {
            return (None, String::new());
        }
        if self.delete {
            (Some(KindCli::delete_args(&self.name, &self.kubeconfig)), format!("deleting kind cluster {}", self.name))
        } else {
            (None, keep_message(&self.name))
        }
    }
}

/// What the user sees about a kept cluster: how to reach it and delete it.
pub fn keep_message(name: &str) -> String {
    format!(
        "keeping kind cluster {name}: kubectl --context {} get pods -A; delete it with: kind delete cluster --name {name}",
        context_name(name)
    )
}

/// Owns a kind cluster for a run: deletes it on drop, error and Ctrl-C unless kept.
pub struct ClusterGuard {
    state: Arc<Mutex<Cleanup>>,
    kubeconfig: PathBuf,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for ClusterGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterGuard").field("name", &self.name).field("kubeconfig", &self.kubeconfig).finish()
    }
}

impl ClusterGuard {
    fn new(cli: KindCli, name: String, kubeconfig: PathBuf, delete: bool, dir: Option<tempfile::TempDir>) -> ClusterGuard {
        let state = Arc::new(Mutex::new(Cleanup { cli, name: name.clone(), kubeconfig: kubeconfig.clone(), delete, done: false }));
        ClusterGuard { state, kubeconfig, name, _dir: dir }
    }

    /// The cluster name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kubeconfig written for this run.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kubeconfig context (`kind-<name>`).
    pub fn context(&self) -> String {
        context_name(&self.name)
    }

    /// Whether the cluster will be deleted at the end.
    pub fn deletes(&self) -> bool {
        self.state.lock().map(|s| s.delete).unwrap_or(false)
    }

    /// Keeps the cluster after the run (e.g. `--keep`, or a failure the user wants to debug).
    pub fn keep(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.delete = false;
        }
    }

    /// Deletes the cluster now unless kept; afterwards drop does nothing more.
    pub async fn teardown(&self, timeout: Duration) -> Result<()> {
        let (args, message, cli) = {
            let mut s = self.state.lock().map_err(|_| anyhow!("cluster guard poisoned"))?;
            let (args, message) = s.action();
            s.done = true;
            (args, message, s.cli.clone())
        };
        if !message.is_empty() {
            eprintln!("{message}");
        }
        if let Some(args) = args {
            cli.run(&args, timeout).await.with_context(|| format!("cannot delete kind cluster {}", self.name))?;
        }
        Ok(())
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        let Ok(mut s) = self.state.lock() else { return };
        let (args, message) = s.action();
        s.done = true;
        if !message.is_empty() {
            eprintln!("{message}");
        }
        if let Some(args) = args {
            // Drop cannot await: a blocking call, bounded by kind itself.
            let status = std::process::Command::new(&s.cli.binary).args(&args).stdin(std::process::Stdio::null()).status();
            if !matches!(status, Ok(st) if st.success()) {
                eprintln!("could not delete kind cluster {}; run: kind delete cluster --name {}", s.name, s.name);
            }
        }
    }
}

/// Creates a new cluster `name` from `config`, guarded; the name is printed so users can debug it.
pub async fn create(cli: &KindCli, name: &str, config: &Path, keep: bool, timeout: Duration) -> Result<ClusterGuard> {
    if !config.is_file() {
        return Err(HarnessError::Usage(format!("kind cluster config {} does not exist", config.display())).into());
    }
    let dir = tempfile::Builder::new().prefix("waf-e2e-kubeconfig-").tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    eprintln!("creating kind cluster {name} (kubectl --context {})", context_name(name));
    // Armed before the create: a create that fails half-way is deleted too (kind cleans up what it can).
    let guard = ClusterGuard::new(cli.clone(), name.to_string(), kubeconfig.clone(), !keep, Some(dir));
    cli.run(&KindCli::create_args(name, config, &kubeconfig), timeout).await?;
    Ok(guard)
}

/// Attaches to a kept cluster `name`; it is never deleted by this run.
pub async fn reuse(cli: &KindCli, name: &str, timeout: Duration) -> Result<ClusterGuard> {
    let existing = cli.clusters(timeout).await?;
    if !existing.iter().any(|c| c == name) {
        let listed = if existing.is_empty() { "none".to_string() } else { existing.join(", ") };
        return Err(HarnessError::Usage(format!("--reuse {name}: no such kind cluster (kind get clusters: {listed})")).into());
    }
    let dir = tempfile::Builder::new().prefix("waf-e2e-kubeconfig-").tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    cli.run(&KindCli::export_kubeconfig_args(name, &kubeconfig), timeout).await?;
    eprintln!("reusing kind cluster {name} (kubectl --context {})", context_name(name));
    Ok(ClusterGuard::new(cli.clone(), name.to_string(), kubeconfig, false, Some(dir)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in `kind` that logs its arguments and prints `clusters` for `get clusters`.
    fn fake_kind(dir: &Path, clusters: &str) -> (KindCli, PathBuf) {
        let log = dir.join("kind.log");
        let script = dir.join("kind");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" >> '{}'\nif [ \"$1 $2\" = \"get clusters\" ]; then printf '{clusters}'; fi\n\
                 if [ \"$1\" = fail ]; then echo boom >&2; exit 3; fi\nexit 0\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        (KindCli { binary: script }, log)
    }

    fn log_lines(log: &Path) -> Vec<String> {
        std::fs::read_to_string(log).unwrap_or_default().lines().map(String::from).collect()
    }

    #[test]
    fn the_create_command_names_the_cluster_config_and_kubeconfig_and_does_not_wait() {
        let args = KindCli::create_args("waf-e2e-abc123", Path::new("kind/cluster.yaml"), Path::new("/tmp/k"));
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            ["create", "cluster", "--name", "waf-e2e-abc123", "--config", "kind/cluster.yaml", "--wait", "0s", "--kubeconfig", "/tmp/k"]
        );
    }

    #[test]
    fn run_ids_are_six_hex_digits_and_names_and_contexts_follow_them() {
        let id = new_run_id();
        assert_eq!(id.len(), 6);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(cluster_name("abc123"), "waf-e2e-abc123");
        assert_eq!(context_name("waf-e2e-abc123"), "kind-waf-e2e-abc123");
    }

    #[test]
    fn kind_get_clusters_output_is_parsed_into_names() {
        assert_eq!(parse_clusters("kind\nwaf-e2e-abc123\n\n"), ["kind", "waf-e2e-abc123"]);
        assert!(parse_clusters("No kind clusters found.\n").is_empty());
    }

    #[tokio::test]
    async fn dropping_the_guard_deletes_the_cluster_and_keep_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        let (cli, log) = fake_kind(tmp.path(), "");
        let config = tmp.path().join("cluster.yaml");
        std::fs::write(&config, "kind: Cluster\n").unwrap();

        let guard = create(&cli, "waf-e2e-aaaaaa", &config, false, Duration::from_secs(5)).await.unwrap();
        assert!(guard.kubeconfig().starts_with(std::env::temp_dir()));
        drop(guard);
        let lines = log_lines(&log);
        assert!(lines[0].starts_with("create cluster --name waf-e2e-aaaaaa"), "{lines:?}");
        assert!(lines[1].starts_with("delete cluster --name waf-e2e-aaaaaa --kubeconfig"), "{lines:?}");

        let kept = create(&cli, "waf-e2e-bbbbbb", &config, true, Duration::from_secs(5)).await.unwrap();
        drop(kept);
        assert!(!log_lines(&log).iter().any(|l| l.starts_with("delete cluster --name waf-e2e-bbbbbb")));
    }

    #[tokio::test]
    async fn teardown_deletes_once_and_a_later_drop_does_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (cli, log) = fake_kind(tmp.path(), "");
        let config = tmp.path().join("cluster.yaml");
        std::fs::write(&config, "kind: Cluster\n").unwrap();
        let guard = create(&cli, "waf-e2e-cccccc", &config, false, Duration::from_secs(5)).await.unwrap();
        guard.teardown(Duration::from_secs(5)).await.unwrap();
        drop(guard);
        let deletes = log_lines(&log).iter().filter(|l| l.starts_with("delete")).count();
        assert_eq!(deletes, 1);
    }

    #[tokio::test]
    async fn reusing_an_unknown_cluster_is_a_usage_error_listing_the_existing_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let (cli, _) = fake_kind(tmp.path(), "kind\\nwaf-e2e-dddddd\\n");
        let err = reuse(&cli, "waf-e2e-zzzzzz", Duration::from_secs(5)).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("waf-e2e-zzzzzz") && text.contains("waf-e2e-dddddd"), "{text}");
        assert_eq!(HarnessError::classify(err).exit_code(), 2);
    }

    #[tokio::test]
    async fn a_reused_cluster_gets_a_kubeconfig_and_is_never_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let (cli, log) = fake_kind(tmp.path(), "waf-e2e-eeeeee\\n");
        let guard = reuse(&cli, "waf-e2e-eeeeee", Duration::from_secs(5)).await.unwrap();
        assert!(!guard.deletes());
        drop(guard);
        let lines = log_lines(&log);
        assert!(lines.iter().any(|l| l.starts_with("export kubeconfig --name waf-e2e-eeeeee")), "{lines:?}");
        assert!(!lines.iter().any(|l| l.starts_with("delete")), "{lines:?}");
    }

    #[tokio::test]
    async fn a_failing_kind_command_reports_the_command_line_and_stderr() {
        let tmp = tempfile::tempdir().unwrap();
        let (cli, _) = fake_kind(tmp.path(), "");
        let err = cli.run(&os(&["fail", "now"]), Duration::from_secs(5)).await.unwrap_err().to_string();
        assert!(err.contains("fail now") && err.contains("boom"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_kind_binary_says_how_to_install_it() {
        let cli = KindCli { binary: PathBuf::from("/nonexistent/kind") };
        let err = format!("{:#}", cli.run(&KindCli::version_args(), Duration::from_secs(5)).await.unwrap_err());
        assert!(err.contains("kind.sigs.k8s.io"), "{err}");
    }

    #[test]
    fn the_keep_message_says_how_to_reach_and_delete_the_cluster() {
        let m = keep_message("waf-e2e-abc123");
        assert!(m.contains("kubectl --context kind-waf-e2e-abc123") && m.contains("kind delete cluster --name waf-e2e-abc123"));
    }
}
