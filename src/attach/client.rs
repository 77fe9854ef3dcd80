//! An attached run's view of the stack `waf-e2e up` keeps: a [`Stack`] whose calls go to its control API.

use super::server::{DiagnosticsBody, Info, PathBody};
use crate::scenario::{Capability, Scenario};
use crate::audit::{AuditCursor, AuditLines};
use crate::stack::{BackendReach, Endpoints, FilterInfo, ScenarioEnv, Stack};
use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The stack of a running `waf-e2e up`, reached through its control API.
pub struct RemoteStack {
    base: String,
    client: reqwest::Client,
    info: Info,
    hints: Vec<String>,
    files: BTreeMap<String, PathBuf>,
    /// Scenarios this run asked `up` to install and has not removed (an install cut short by an
    /// interrupt may still complete in `up`, so a name is recorded before the call).
    installed: tokio::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Install requests, each in a task of its own: an interrupt drops the run's future, not the
    /// request, and `shutdown` waits for their answers before removing (else a remove could reach
    /// `up` before the install it undoes, and the scenario would stay installed).
    installs: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// What applying the run's render changed on the stack (for the run's notes).
    pub render_changes: Vec<String>,
}

impl RemoteStack {
    /// Attaches to the `up` of `state_file`, applies the render in `rendered` (reloading what changed),
    /// and knows each scenario's file (`up` reads it again on every install).
    pub async fn attach(state_file: &Path, rendered: &Path, scenarios: &[(PathBuf, Scenario)], request_timeout: Duration) -> Result<RemoteStack> {
        let state = super::read_state(state_file)?;
        let client = reqwest::Client::builder().timeout(request_timeout).build().context("build the control API client")?;
        let mut stack = RemoteStack { base: state.control.clone(), client, info: empty_info(&state), hints: Vec::new(), files: BTreeMap::new(), installed: Default::default(), installs: Default::default(), render_changes: Vec::new() };
        let rendered = std::fs::canonicalize(rendered).with_context(|| format!("--rendered {}", rendered.display()))?;
        stack.render_changes = stack.call("POST", "/render", Some(&PathBody { path: rendered })).await?;
        stack.info = stack.call::<(), Info>("GET", "/info", None).await?;
        stack.hints = stack.call::<(), Vec<String>>("GET", "/audit/hints", None).await?;
        for (path, scenario) in scenarios {
            let path = std::fs::canonicalize(path).with_context(|| format!("scenario file {}", path.display()))?;
            stack.files.insert(scenario.name().to_string(), path);
        }
        Ok(stack)
    }

    /// Where the parts of the attached stack are.
    pub fn info(&self) -> &Info {
        &self.info
    }

    async fn call<B: Serialize, T: DeserializeOwned>(&self, method: &str, path: &str, body: Option<&B>) -> Result<T> {
        call(&self.client, &self.base, method, path, body).await
    }
}

/// `method path` on the control API at `base`, with `body` as JSON; the answer parsed, or `up`'s error.
async fn call<B: Serialize, T: DeserializeOwned>(client: &reqwest::Client, base: &str, method: &str, path: &str, body: Option<&B>) -> Result<T> {
    let url = format!("{base}{path}");
    let request = match method {
        "GET" => client.get(&url),
        _ => client.post(&url),
    };
    let request = match body {
        Some(b) => request.json(b),
        None => request,
    };
    let resp = request.send().await.with_context(|| format!("{method} {url} (does `waf-e2e up` still run?)"))?;
    let status = resp.status();
    let text = resp.text().await.with_context(|| format!("read {method} {url}"))?;
    if !status.is_success() {
        bail!("{text}");
    }
    serde_json::from_str(&text).with_context(|| format!("parse the answer of {method} {url}"))
}

/// The state file's view, until `/info` answers.
fn empty_info(state: &super::UpState) -> Info {
    Info { name: state.stack.clone(), endpoints: state.endpoints.clone(), filter: state.filter.clone(), capabilities: state.capabilities.clone(), parts: state.parts.clone() }
}

#[async_trait::async_trait]
impl Stack for RemoteStack {
    fn name(&self) -> &str {
        &self.info.name
    }
    fn endpoints(&self) -> Endpoints {
        self.info.endpoints.clone()
    }
    fn capabilities(&self) -> &[Capability] {
        &self.info.capabilities
    }
    fn filter(&self) -> &FilterInfo {
        &self.info.filter
    }
    async fn install_scenario(&self, scenario: &Scenario) -> Result<ScenarioEnv> {
        let path = self.files.get(scenario.name()).with_context(|| format!("no file known for scenario {}", scenario.name()))?;
        self.installed.lock().await.insert(scenario.name().to_string());
        let (client, base, body) = (self.client.clone(), self.base.clone(), PathBody { path: path.clone() });
        let (answer, answered) = tokio::sync::oneshot::channel();
        let request = tokio::spawn(async move {
            let _ = answer.send(call::<_, ScenarioEnv>(&client, &base, "POST", "/install", Some(&body)).await);
        });
        self.installs.lock().await.push(request);
        answered.await.context("the install request's task ended without an answer")?
    }
    async fn remove_scenario(&self, env: &ScenarioEnv) -> Result<()> {
        self.call::<_, ()>("POST", "/remove", Some(&env.scenario)).await?;
        self.installed.lock().await.remove(&env.scenario);
        Ok(())
    }
    async fn audit_cursor(&self) -> Result<AuditCursor> {
        self.call::<(), _>("GET", "/audit/cursor", None).await
    }
    async fn audit_lines_since(&self, cursor: &AuditCursor) -> Result<AuditLines> {
        self.call("POST", "/audit/lines", Some(cursor)).await
    }
    async fn raw_stats(&self) -> Result<String> {
        self.call::<(), _>("GET", "/raw_stats", None).await
    }
    async fn diagnostics(&self, env: &ScenarioEnv, dir: &Path) -> Result<()> {
        let dir = std::path::absolute(dir).with_context(|| format!("diagnostics directory {}", dir.display()))?;
        self.call("POST", "/diagnostics", Some(&DiagnosticsBody { env: env.clone(), dir })).await
    }
    /// Leaves the stack to `up`: removes the scenarios this run installed and did not remove yet
    /// (an interrupted run), nothing else.
    async fn shutdown(&self) -> Result<()> {
        for request in self.installs.lock().await.drain(..) {
            // Its own error was the run's to report; here only its end matters.
            let _ = request.await;
        }
        let left: Vec<String> = self.installed.lock().await.iter().cloned().collect();
        let mut errors = Vec::new();
        for name in &left {
            if let Err(e) = self.call::<_, ()>("POST", "/remove", Some(name)).await {
                errors.push(format!("remove scenario {name} from `waf-e2e up`: {e:#}"));
            }
        }
        if errors.is_empty() { Ok(()) } else { bail!(errors.join("; ")) }
    }
    async fn backend_reach(&self, ids: &[String]) -> Result<Option<BTreeMap<String, BackendReach>>> {
        self.call("POST", "/reach", Some(&ids.to_vec())).await
    }
    async fn audit_flushes(&self) -> Result<Option<u64>> {
        self.call::<(), _>("GET", "/audit/flushes", None).await
    }
    async fn flush_audit_log(&self) -> Result<Option<String>> {
        self.call::<(), _>("POST", "/audit/flush", None).await
    }
    fn audit_hints(&self) -> Vec<String> {
        self.hints.clone()
    }
    async fn health(&self) -> Result<()> {
        self.call::<(), _>("GET", "/health", None).await
    }
}
