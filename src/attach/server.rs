//! The control API `waf-e2e up` serves on loopback: the `Stack` calls of an attached run, as JSON.

use crate::stack::local::LocalStack;
use crate::audit::{AuditCursor, AuditLines};
use crate::stack::{ScenarioEnv, Stack};
use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// What `GET /info` answers: the stack as an attached run sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Info {
    /// The stack's name for reports.
    pub name: String,
    /// Traffic, Prometheus and scrape pool.
    pub endpoints: crate::stack::Endpoints,
    /// The filter (and Envoy) in use.
    pub filter: crate::stack::FilterInfo,
    /// What the filter can do.
    pub capabilities: Vec<crate::scenario::Capability>,
    /// Where the parts are.
    pub parts: crate::stack::local::AttachInfo,
}

/// A file path in a request body (a render directory or a scenario file, absolute).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathBody {
    /// The path.
    pub path: PathBuf,
}

/// `POST /diagnostics`: write the bundle of `env` into `dir`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiagnosticsBody {
    /// The failed scenario.
    pub env: ScenarioEnv,
    /// Where the bundle goes.
    pub dir: PathBuf,
}

type Stk = Arc<LocalStack>;
type Answer<T> = Result<Json<T>, (StatusCode, String)>;

fn answer<T>(r: Result<T>) -> Answer<T> {
    r.map(Json).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))
}

/// The running control server; dropping it stops serving.
pub struct ControlServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl ControlServer {
    /// Serves `stack` on a free 127.0.0.1 port.
    pub async fn start(stack: Stk) -> Result<ControlServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("bind the control API on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/info", get(info))
            .route("/render", post(render))
            .route("/install", post(install))
            .route("/remove", post(remove))
            .route("/audit/cursor", get(cursor))
            .route("/audit/lines", post(lines))
            .route("/audit/flushes", get(flushes))
            .route("/audit/flush", post(flush))
            .route("/audit/hints", get(hints))
            .route("/raw_stats", get(raw_stats))
            .route("/reach", post(reach))
            .route("/health", get(health))
            .route("/diagnostics", post(diagnostics))
            .with_state(stack);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async { let _ = stopped.await; }).await;
            if let Err(e) = served {
                tracing::error!("the control API stopped: {e}");
            }
        });
        Ok(ControlServer { addr, stop: Some(stop), task })
    }

    /// The control API's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The stack's info as `GET /info` answers it.
pub async fn info_of(stack: &LocalStack) -> Result<Info> {
    Ok(Info {
        name: stack.name().to_string(),
        endpoints: stack.endpoints(),
        filter: stack.filter().clone(),
        capabilities: stack.capabilities().to_vec(),
        parts: stack.attach_info().await?,
    })
}

async fn info(State(s): State<Stk>) -> Answer<Info> {
    answer(info_of(&s).await)
}

async fn render(State(s): State<Stk>, Json(b): Json<PathBody>) -> Answer<Vec<String>> {
    answer(s.apply_render(&b.path).await)
}

async fn install(State(s): State<Stk>, Json(b): Json<PathBody>) -> Answer<ScenarioEnv> {
    // Read again on every run: an edited scenario file takes effect without restarting `up`.
    let scenario = crate::scenario::load_file(&b.path).map_err(anyhow::Error::from);
    // Spawned, so a client that disconnects (an interrupted run) cannot cut an install in half;
    // that run removes the scenario by name when it stops.
    let installed = tokio::spawn(async move {
        let scenario = scenario?;
        if s.is_installed(scenario.name()).await {
            anyhow::bail!("scenario {} is installed by another attached run right now; wait for it to finish (if none runs, one was killed before removing it: restart `waf-e2e up`)", scenario.name());
        }
        s.install_scenario(&scenario).await
    })
    .await;
    answer(installed.map_err(anyhow::Error::from).and_then(|r| r))
}

async fn remove(State(s): State<Stk>, Json(name): Json<String>) -> Answer<()> {
    answer(s.remove_named(&name).await)
}

async fn cursor(State(s): State<Stk>) -> Answer<AuditCursor> {
    answer(s.audit_cursor().await)
}

async fn lines(State(s): State<Stk>, Json(c): Json<AuditCursor>) -> Answer<AuditLines> {
    answer(s.audit_lines_since(&c).await)
}

async fn flushes(State(s): State<Stk>) -> Answer<Option<u64>> {
    answer(s.audit_flushes().await)
}

async fn flush(State(s): State<Stk>) -> Answer<Option<String>> {
    answer(s.flush_audit_log().await)
}

async fn hints(State(s): State<Stk>) -> Answer<Vec<String>> {
    answer(Ok(s.audit_hints()))
}

async fn raw_stats(State(s): State<Stk>) -> Answer<String> {
    answer(s.raw_stats().await)
}

async fn reach(State(s): State<Stk>, Json(ids): Json<Vec<String>>) -> Answer<Option<BTreeMap<String, crate::stack::BackendReach>>> {
    answer(s.backend_reach(&ids).await)
}

async fn health(State(s): State<Stk>) -> Answer<()> {
    answer(s.health().await)
}

async fn diagnostics(State(s): State<Stk>, Json(b): Json<DiagnosticsBody>) -> Answer<()> {
    answer(s.diagnostics(&b.env, &b.dir).await)
}
