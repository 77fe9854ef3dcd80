//! Keeping the local stack up between runs: `waf-e2e up` serves it, `waf-e2e run --attach` uses it.
//!
//! Design: the `up` process owns the stack and is the only writer of Envoy's watched xDS files and
//! Prometheus' config; it serves a small JSON control API on loopback ([`server`]) whose calls are
//! the [`crate::stack::Stack`] trait's (install / remove a scenario, audit reads, raw stats, health,
//! diagnostics) plus "apply this render". An attached run talks to it through [`client::RemoteStack`],
//! a `Stack` like any other, so the runner and its assertions are exactly those of a fresh run.
//! Chosen over a per-run file merged by `up` because the routes live in one place (no two processes
//! rewrite `lds.json`), a failed install comes back as the call's error at once, and the stack's
//! own health check keeps working for the attached run.
//!
//! The state file (`$XDG_RUNTIME_DIR/waf-e2e/up.json`, else `<tmp>/waf-e2e-up.json`) says where the
//! control API and every part are. Its `pid` is the `up` process: a second `up` refuses to start
//! while it lives.

pub mod client;
pub mod server;
pub mod up;
pub mod watch;

use crate::scenario::Capability;
use crate::stack::local::AttachInfo;
use crate::stack::{Endpoints, FilterInfo};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// What `up` writes for attached runs and people.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UpState {
    /// The `up` process.
    pub pid: u32,
    /// Base URL of the control API (`http://127.0.0.1:PORT`).
    pub control: String,
    /// The stack's name for reports.
    pub stack: String,
    /// Traffic, Prometheus and scrape pool.
    pub endpoints: Endpoints,
    /// The filter (and Envoy) in use.
    pub filter: FilterInfo,
    /// What the filter can do.
    pub capabilities: Vec<Capability>,
    /// Where the parts are.
    pub parts: AttachInfo,
}

/// The default state file: `$XDG_RUNTIME_DIR/waf-e2e/up.json`, else `<tmp>/waf-e2e-up.json`.
pub fn default_state_file() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("waf-e2e").join("up.json"),
        None => std::env::temp_dir().join("waf-e2e-up.json"),
    }
}

/// Reads the state file `up` wrote.
pub fn read_state(path: &Path) -> Result<UpState> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {} (is `waf-e2e up` running? it writes this file once the stack is up)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// Writes the state file atomically (a reader never sees half of it).
pub fn write_state(path: &Path, state: &UpState) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
}

/// `Some(pid)` when the state file names an `up` process that still runs.
pub fn running_up(path: &Path) -> Option<u32> {
    let state = read_state(path).ok()?;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.pid as i32), None).is_ok();
    alive.then_some(state.pid)
}

/// How to attach, for the `up` banner.
pub fn how_to_attach(state_file: &Path, state: &UpState) -> String {
    let p = &state.parts;
    let mut text = format!(
        "local stack up (pid {}); attach with:\n  waf-e2e run --attach --state {}\n\
         control API   {}\ngateway       {}\nPrometheus    {} (config {}, scrape pool {})\n\
         Envoy admin   http://{} (xDS files in {})\naudit file    {}\nrun directory {}\n",
        state.pid, state_file.display(), state.control, state.endpoints.gateway_url, state.endpoints.prometheus_url,
        p.prometheus_config.display(), state.endpoints.scrape_pool, p.envoy_admin, p.envoy_xds_dir.display(),
        p.audit_file.display(), p.run_dir.display());
    if let Some(waf) = p.waf_service {
        text.push_str(&format!("WAF service   http://{waf}\n"));
    }
    text.push_str("Ctrl-C stops everything.\n");
    text
}
