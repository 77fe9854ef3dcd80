//! The local stack's backend: an echo server on loopback that records, by correlation id, how far
//! each request got (headers only, or headers and the complete body), so a run can tell whether an
//! attack reached the backend.

use crate::contract::CORRELATION_HEADER;
use crate::stack::BackendReach;
use anyhow::{Context, Result};
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Largest request body the echo reads.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

type Seen = Arc<Mutex<HashMap<String, BackendReach>>>;

/// The running echo backend.
pub struct EchoBackend {
    addr: SocketAddr,
    seen: Seen,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl EchoBackend {
    /// Binds 127.0.0.1:0 and serves every method and path with 200 and a JSON echo.
    pub async fn start() -> Result<EchoBackend> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// [`EchoBackend::start`] on `ip` (a private Docker network's gateway when Envoy runs in a container).
    pub async fn start_on(ip: std::net::IpAddr) -> Result<EchoBackend> {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.with_context(|| format!("bind the echo backend on {ip}"))?;
        let addr = listener.local_addr().context("read the echo backend's address")?;
        let seen = Seen::default();
        let app = axum::Router::new().fallback(echo).with_state(seen.clone());
        let task = tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(EchoBackend { addr, seen, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How far each of `ids` got (`Never` for an id it did not see).
    pub fn reach(&self, ids: &[String]) -> BTreeMap<String, BackendReach> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        ids.iter().map(|id| (id.clone(), seen.get(id).copied().unwrap_or(BackendReach::Never))).collect()
    }

    /// `Err` once the server task ended.
    pub fn health(&self) -> Result<()> {
        anyhow::ensure!(!self.task.is_finished(), "the echo backend on {} stopped serving", self.addr);
        Ok(())
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(State(seen): State<Seen>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let id = parts.headers.get(CORRELATION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let record = |reach: BackendReach| {
        if let Some(id) = &id {
            seen.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), reach);
        }
    };
    // The handler runs once the headers are in; the body may still never complete (the WAF
    // decided on it and Envoy reset the upstream stream).
    record(BackendReach::HeadersOnly);
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("echo: the request body did not complete: {e}")).into_response(),
    };
    record(BackendReach::Complete);
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers.entry(name.as_str().to_string()).or_default().push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(echo.to_string()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_complete_request_and_one_whose_body_never_arrives_are_told_apart() {
        let echo = EchoBackend::start().await.unwrap();
        let client = reqwest::Client::new();
        let resp = client.post(format!("http://{}/login", echo.addr())).header(CORRELATION_HEADER, "whole").body("a=1").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        // Headers announce 100 bytes, 3 arrive, then the connection closes: as when Envoy resets the upstream.
        let mut raw = tokio::net::TcpStream::connect(echo.addr()).await.unwrap();
        raw.write_all(format!("POST /login HTTP/1.1\r\nhost: x\r\n{CORRELATION_HEADER}: cut\r\ncontent-length: 100\r\n\r\nabc").as_bytes()).await.unwrap();
        let reach = crate::wait::until("the echo backend to record the cut request", std::time::Duration::from_secs(5), || {
            let reach = echo.reach(&["cut".to_string()]);
            async move { Ok(if reach["cut"] == BackendReach::HeadersOnly { crate::wait::Check::Met(()) } else { crate::wait::Check::NotYet(format!("{reach:?}")) }) }
        });
        reach.await.unwrap();
        drop(raw);
        let all = echo.reach(&["whole".into(), "cut".into(), "never".into()]);
        assert_eq!(all["whole"], BackendReach::Complete);
        assert_eq!(all["cut"], BackendReach::HeadersOnly);
        assert_eq!(all["never"], BackendReach::Never);
    }
}
