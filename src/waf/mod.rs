//! The reference WAF service: ModSecurity v3 + OWASP CRS deciding for the stand-in filter
//! (`filter/standin.c`) that runs in a real Envoy on the local stack.
//!
//! The filter calls it through Envoy (`proxy_http_call` to [`CALLOUT_CLUSTER`]) once per stage of each
//! request, with coraza-proxy-wasm's plugin configuration; the service answers with the action, the
//! stat names to increment and the audit record to log (the protocol: [`protocol`]). Nothing here
//! writes Envoy's exposition or log format: Envoy does.

pub mod config;
pub mod engine;
pub mod msclog;
pub mod protocol;
pub mod record;
pub mod stats;
pub mod worker;

#[cfg(test)]
mod tests;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::Stage;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use worker::{CalloutHeaders, Job};

/// The Envoy cluster name the bootstrap gives the service (the stand-in filter calls this cluster).
pub const CALLOUT_CLUSTER: &str = "waf_e2e_reference_waf";

/// Largest callout body accepted (a request or response body plus the configuration).
const MAX_CALLOUT_BODY: usize = 64 * 1024 * 1024;

/// How long `shutdown` waits for in-flight callouts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Deliberate misbehaviour, so the harness can prove its assertions catch it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Faults {
    /// The filter is told to increment every decision counter twice.
    pub double_count: bool,
    /// No audit record is returned.
    pub drop_audit: bool,
}

struct Shared {
    service: u64,
    faults: Faults,
}

static NEXT_SERVICE: AtomicU64 = AtomicU64::new(1);

/// A running reference WAF service (on 127.0.0.1 unless started elsewhere).
pub struct ReferenceWaf {
    addr: SocketAddr,
    service: u64,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl ReferenceWaf {
    /// Starts the service on 127.0.0.1:0 inside the current Tokio runtime (ModSecurity starts on first use).
    pub fn start(faults: Faults) -> Result<ReferenceWaf> {
        Self::start_on(faults, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// [`ReferenceWaf::start`] on `ip` (a private Docker network's gateway when Envoy runs in a container).
    pub fn start_on(faults: Faults, ip: std::net::IpAddr) -> Result<ReferenceWaf> {
        let runtime = tokio::runtime::Handle::try_current().context("the reference WAF service must be started inside a Tokio runtime")?;
        worker::engine_identity().context("starting ModSecurity")?;
        let listener = std::net::TcpListener::bind((ip, 0)).with_context(|| format!("binding the reference WAF service on {ip}"))?;
        listener.set_nonblocking(true).context("making the reference WAF listener non-blocking")?;
        let addr = listener.local_addr().context("reading the reference WAF listener address")?;
        let service = NEXT_SERVICE.fetch_add(1, Ordering::Relaxed);
        let app = axum::Router::new()
            .route("/v1/{stage}", axum::routing::post(callout))
            .route("/health", axum::routing::get(|| async { "ok\n" }))
            .layer(DefaultBodyLimit::max(MAX_CALLOUT_BODY))
            .with_state(Arc::new(Shared { service, faults }));
        let (stop, mut stopped) = watch::channel(false);
        let task = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        });
        tracing::info!(%addr, "reference WAF service (ModSecurity for the stand-in filter) started");
        Ok(ReferenceWaf { addr, service, stop, task: Some(task) })
    }

    /// Where the service listens (the address of the Envoy cluster [`CALLOUT_CLUSTER`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The engine and rule set, e.g. `ModSecurity v3.0.9 + OWASP CRS 3.3.4`.
    pub fn describe(&self) -> String {
        describe()
    }

    /// `Err` naming what stopped: the listener or the ModSecurity worker.
    pub fn health(&self) -> Result<()> {
        anyhow::ensure!(!*self.stop.borrow(), "the reference WAF service was stopped");
        if self.task.as_ref().is_none_or(|t| t.is_finished()) {
            anyhow::bail!("the reference WAF service's listener on {} exited", self.addr);
        }
        worker::engine_identity().map(|_| ())
    }

    /// Stops the listener, waiting briefly for in-flight callouts, and drops this service's open transactions.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        let result = match self.task.take() {
            Some(task) => {
                let abort = task.abort_handle();
                match tokio::time::timeout(SHUTDOWN_GRACE, task).await {
                    Ok(Ok(served)) => served.context("the reference WAF service's listener failed"),
                    Ok(Err(join)) if join.is_cancelled() => Ok(()),
                    Ok(Err(join)) => Err(anyhow::anyhow!("the reference WAF service's listener panicked: {join}")),
                    Err(_) => {
                        abort.abort();
                        Ok(())
                    }
                }
            }
            None => Ok(()),
        };
        worker::service_stopped(self.service);
        result
    }
}

impl Drop for ReferenceWaf {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
        worker::service_stopped(self.service);
    }
}

/// The engine and CRS versions (`ModSecurity v3.0.9 + OWASP CRS 3.3.4`), or what could not be read.
pub fn describe() -> String {
    let engine = worker::engine_identity().map(|w| w.trim_end_matches(" (Linux)").to_string()).unwrap_or_else(|e| format!("ModSecurity (unavailable: {e:#})"));
    let crs = std::fs::read_to_string(engine::CRS_SETUP)
        .ok()
        .and_then(|text| {
            let at = text.find("tx.crs_setup_version=")? + "tx.crs_setup_version=".len();
            let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
            (digits.len() == 3).then(|| digits.chars().map(String::from).collect::<Vec<_>>().join("."))
        })
        .unwrap_or_else(|| "(version unknown)".to_string());
    format!("{engine} + OWASP CRS {crs}")
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string())
}

fn callout_headers(headers: &HeaderMap) -> Result<CalloutHeaders> {
    let number = |name: &str| -> Result<Option<u64>> {
        header(headers, name).map(|v| v.parse::<u64>().with_context(|| format!("{name}: `{v}` is not a number"))).transpose()
    };
    Ok(CalloutHeaders {
        config_length: number(protocol::CONFIG_LENGTH)?.map(|n| n as usize),
        source: header(headers, protocol::SOURCE),
        destination: header(headers, protocol::DESTINATION),
        tx: number(protocol::TX)?,
        end_of_stream: header(headers, protocol::END_OF_STREAM).as_deref() == Some("1"),
    })
}

async fn callout(State(shared): State<Arc<Shared>>, Path(stage): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    match answer(&shared, &stage, &headers, body).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(stage, error = %format!("{e:#}"), "reference WAF service failed a callout");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("reference WAF service: {e:#}\n")).into_response()
        }
    }
}

async fn answer(shared: &Shared, stage: &str, headers: &HeaderMap, body: Bytes) -> Result<Response> {
    let stage = Stage::from_path_name(stage).with_context(|| format!("unknown stage `{stage}`"))?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    worker::submit(Job { service: shared.service, stage, headers: callout_headers(headers)?, body, reply })?;
    let mut answer = answer.await.context("the ModSecurity worker dropped the callout")??;
    if shared.faults.double_count {
        answer.metrics = answer.metrics.iter().flat_map(|m| [m.clone(), m.clone()]).collect();
    }
    if shared.faults.drop_audit {
        answer.audit = None;
    }
    let mut response = Response::builder().status(StatusCode::OK);
    if let Some(tx) = answer.tx {
        response = response.header(protocol::TX, tx.to_string());
    }
    response = match answer.block {
        Some(status) => response.header(protocol::ACTION, "block").header(protocol::STATUS, status.to_string()),
        None => response.header(protocol::ACTION, "continue"),
    };
    if !answer.metrics.is_empty() {
        response = response.header(protocol::METRICS, answer.metrics.join(" "));
    }
    response.body(axum::body::Body::from(answer.audit.unwrap_or_default())).context("building the callout answer")
}
