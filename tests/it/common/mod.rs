//! Helpers shared by the local-stack integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;
use waf_e2e::waf::Faults;
use waf_e2e::report::Progress;
use waf_e2e::outcome::Outcome;
use waf_e2e::runner::{self, RunOptions};
use waf_e2e::scenario::{self, Scenario};
use waf_e2e::stack::local::{LocalOptions, LocalStack};
use waf_e2e::stack::Stack;
use waf_e2e::timeouts::Timeouts;

/// The crate root, so tests find `scenarios/` and `fixtures/` wherever they run from.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Scrape interval for tests: short, so a scenario settles in about a second.
pub const SCRAPE_INTERVAL: Duration = Duration::from_millis(250);

/// A copy of `fixtures/rendered/` with `file` replaced by the contents of `replacement`.
pub fn rendered_with(file: &str, replacement: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(root().join("fixtures/rendered")).expect("list fixtures/rendered") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("file name").to_owned();
        let from = if name.to_str() == Some(file) { replacement.to_path_buf() } else { path };
        std::fs::copy(&from, dir.path().join(&name)).expect("copy a rendered file");
    }
    dir
}

/// Loads one scenario file from `scenarios/`.
pub fn scenario(file: &str) -> Scenario {
    scenario::load_file(&root().join("scenarios").join(file)).unwrap_or_else(|e| panic!("{e}"))
}

/// Local stack options for tests: the `oss` profile's template, the test scrape interval, no faults.
pub fn local_options(rendered: &Path) -> LocalOptions {
    LocalOptions {
        rendered: rendered.to_path_buf(),
        root: root(),
        profile: "oss".into(),
        scrape_interval: SCRAPE_INTERVAL,
        timeouts: Timeouts::default(),
        envoy: None,
        waf_wasm: None,
        waf_flavour: None,
        faults: Faults::default(),
        prometheus_port: None,
        audit_flush: waf_e2e::envoy::AuditFlush::Admin,
        runtime: Default::default(),
    }
}

/// Runs `scenarios` on a fresh local stack built from `rendered` with `faults`, and shuts it down.
pub async fn run_local(rendered: &Path, faults: Faults, scenarios: &[Scenario]) -> Vec<Outcome> {
    run_local_with(LocalOptions { faults, ..local_options(rendered) }, scenarios).await
}

/// Runs `scenarios` on a fresh local stack started with `opts`, and shuts it down.
pub async fn run_local_with(opts: LocalOptions, scenarios: &[Scenario]) -> Vec<Outcome> {
    let timeouts = opts.timeouts.clone();
    let stack = LocalStack::start(&opts).await.unwrap_or_else(|e| panic!("local stack: {e:#}"));
    let run = RunOptions { run_id: "test".into(), jobs: 4, timeouts, diagnostics_dir: None, fail_fast: false };
    let outcomes = runner::run_all(&stack, scenarios, &run, &Progress { quiet: true }).await;
    stack.shutdown().await.expect("stop the local stack");
    outcomes
}

/// The failure messages of an outcome, or a panic saying it did not fail.
pub fn failures(outcome: &Outcome) -> String {
    match &outcome.verdict {
        waf_e2e::outcome::Verdict::Failed(f) => f.join("\n"),
        other => panic!("scenario {} was expected to FAIL, got {other:?}", outcome.name),
    }
}

/// Pids of processes whose command line matches `pattern` (`pgrep -f`), the test process excluded.
pub fn pgrep(pattern: &str) -> Vec<u32> {
    let out = std::process::Command::new("pgrep").arg("-f").arg("--").arg(pattern).output().expect("run pgrep");
    let me = std::process::id();
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).filter(|p| *p != me).collect()
}

/// Asserts that no process's command line names `marker` (a path or port unique to one test).
pub fn assert_no_process(marker: &str) {
    let left = pgrep(marker);
    assert!(left.is_empty(), "processes left behind matching {marker:?}: {left:?}");
}

/// What a run left in `tmp` (its `TMPDIR`): every entry but the run-directory parent, and every
/// run directory in that parent (`waf_e2e::rundir`).
pub fn leftovers(tmp: &Path) -> Vec<String> {
    let names = |dir: &Path| -> Vec<String> {
        match std::fs::read_dir(dir) {
            Ok(entries) => entries.map(|e| e.expect("read a directory entry").file_name().to_string_lossy().into_owned()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("list {}: {e}", dir.display()),
        }
    };
    let runs = waf_e2e::rundir::RUNS_DIR;
    let mut left: Vec<String> = names(tmp).into_iter().filter(|n| n != runs).collect();
    left.extend(names(&tmp.join(runs)).into_iter().map(|n| format!("{runs}/{n}")));
    left.sort();
    left
}

/// `waf-e2e` run as a child with its own `TMPDIR`, its output collected line by line; ended on drop.
pub struct Harness {
    /// The child.
    pub child: std::process::Child,
    /// The `TMPDIR` it runs with (every temporary directory and Prometheus' command line sit under it).
    pub tmp: tempfile::TempDir,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Harness {
    /// Starts `waf-e2e ARGS` in the crate root with a fresh `TMPDIR`.
    pub fn spawn(args: &[&str]) -> Harness {
        Self::spawn_in(tempfile::Builder::new().prefix("waf-e2e-test-").tempdir().expect("test TMPDIR"), args)
    }

    /// Starts `waf-e2e ARGS` in the crate root with `tmp` as its `TMPDIR` (e.g. the one of an earlier run).
    pub fn spawn_in(tmp: tempfile::TempDir, args: &[&str]) -> Harness {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_waf-e2e"))
            .args(args)
            .current_dir(root())
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start waf-e2e");
        let collect = |pipe: Box<dyn std::io::Read + Send>, into: std::sync::Arc<std::sync::Mutex<Vec<String>>>| {
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    match line {
                        Ok(l) => into.lock().unwrap_or_else(|p| p.into_inner()).push(l),
                        Err(_) => break,
                    }
                }
            })
        };
        let stderr = std::sync::Arc::default();
        let stdout = std::sync::Arc::default();
        let readers = vec![
            collect(Box::new(child.stderr.take().expect("stderr piped")), std::sync::Arc::clone(&stderr)),
            collect(Box::new(child.stdout.take().expect("stdout piped")), std::sync::Arc::clone(&stdout)),
        ];
        Harness { child, tmp, stderr, stdout, readers }
    }

    /// The `TMPDIR` path as text (the marker to `pgrep -f` for).
    pub fn marker(&self) -> String {
        self.tmp.path().display().to_string()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }

    /// Waits until a stderr line contains `needle`; panics with the output on timeout or early exit.
    pub async fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let lines = std::sync::Arc::clone(&self.stderr);
        self.wait_for_line("stderr", lines, needle, timeout).await
    }

    /// Waits until a stdout line contains `needle` and returns it; panics as [`Harness::wait_for_stderr`].
    pub async fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> String {
        let lines = std::sync::Arc::clone(&self.stdout);
        self.wait_for_line("stdout", lines, needle, timeout).await
    }

    async fn wait_for_line(&mut self, stream: &str, lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>, needle: &str, timeout: Duration) -> String {
        let condition = format!("a {stream} line containing {needle:?}");
        let child = &mut self.child;
        let seen = waf_e2e::wait::until(&condition, timeout, || {
            let found = lines.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|l| l.contains(needle)).cloned();
            let exited = child.try_wait();
            async move {
                Ok(match (found, exited?) {
                    (Some(line), _) => waf_e2e::wait::Check::Met(Ok(line)),
                    (None, Some(status)) => waf_e2e::wait::Check::Met(Err(status)),
                    (None, None) => waf_e2e::wait::Check::NotYet("not yet".into()),
                })
            }
        })
        .await;
        match seen {
            Ok(Ok(line)) => line,
            Ok(Err(status)) => panic!("waf-e2e exited ({status}) before {condition}:\n{}\n{}", self.stdout(), self.stderr()),
            Err(e) => panic!("{e:#}:\n{}\n{}", self.stdout(), self.stderr()),
        }
    }

    /// Waits until `path` exists (e.g. `up`'s state file); panics if the child exits first or on timeout.
    pub async fn wait_for_file(&mut self, path: &Path, timeout: Duration) {
        let child = &mut self.child;
        waf_e2e::wait::until(&format!("{} to exist", path.display()), timeout, || {
            let written = path.is_file();
            let exited = child.try_wait();
            async move {
                Ok(match (written, exited?) {
                    (true, _) => waf_e2e::wait::Check::Met(()),
                    (false, Some(status)) => panic!("waf-e2e exited ({status}) before writing {}", path.display()),
                    (false, None) => waf_e2e::wait::Check::NotYet("not written".into()),
                })
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Waits for the child to exit and its output to be read; panics with the output on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        let status = waf_e2e::wait::until("waf-e2e to exit", timeout, || {
            let exited = child.try_wait();
            async move { Ok(match exited? { Some(s) => waf_e2e::wait::Check::Met(s), None => waf_e2e::wait::Check::NotYet("running".into()) }) }
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}:\n{}\n{}", self.stdout(), self.stderr()));
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).expect("signal waf-e2e");
    }
}

impl Drop for Harness {
    /// Ends the child and anything it started (found by the unique `TMPDIR` in their command lines), also when a test failed.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for pid in pgrep(&self.marker()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}
