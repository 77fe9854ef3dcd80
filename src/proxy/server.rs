//! The reference proxy's HTTP data plane and admin listener, a STAND-IN for an Envoy Gateway proxy with the
//! WAF filter (local stack only).
//!
//! Data plane: route by Host to the attached policy (unknown host: 404, no WAF), count the
//! transaction, let ModSecurity decide, then block (403) or forward to the echo backend; for every
//! decision count it and append an audit line, all before answering, so a client that got its
//! response can already observe both. Admin: `GET /stats/prometheus`.

use super::auditlog::AuditWriter;
use crate::waf::record::{build_record, Transcript};
use super::stats::{decision_stat_name, DecisionStat, Stats, TX_TOTAL};
use crate::waf::engine::{Engine, Interruption, PolicyRules, RequestLine};
use super::{Faults, PolicyAttachment};
use crate::audit::format_envoy_line_now;
use crate::scenario::Mode;
use anyhow::{Context, Result};
use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Largest request body the proxy buffers for the WAF.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Envoy Gateway's HTTP connection manager stat prefix for listener port 80 (container port 10080).
const HCM_PREFIX: &str = "http-10080";

/// A policy attached to a host: its rules and the stat labels in this policy's order.
pub struct AttachedPolicy {
    /// What the caller attached.
    pub attachment: PolicyAttachment,
    /// The compiled rules (engine On; the mode is applied by the proxy).
    pub rules: PolicyRules,
    /// `policy`, `namespace` and extra labels in this policy's (deliberately varying) order.
    pub labels: Vec<(String, String)>,
    /// The upstream cluster name Envoy Gateway would use for the route.
    pub cluster: String,
}

/// State shared by every request.
pub struct Shared {
    /// Attached policies by lowercase host (declared first: rule sets drop before the engine).
    pub policies: RwLock<HashMap<String, Arc<AttachedPolicy>>>,
    /// The ModSecurity instance.
    pub engine: Engine,
    /// Counters.
    pub stats: Stats,
    /// The audit log.
    pub audit: AuditWriter,
    /// Injected faults.
    pub faults: Faults,
    /// The echo backend.
    pub backend: SocketAddr,
    /// HTTP client to the backend (no environment proxies).
    pub client: reqwest::Client,
    /// The data plane's own address (the audit record's host).
    pub listen: SocketAddr,
    /// `<gateway namespace>/<gateway>`, for the audit record's producer.
    pub gateway: String,
}

impl Shared {
    fn lookup(&self, host: &str) -> Option<Arc<AttachedPolicy>> {
        self.policies.read().unwrap_or_else(|p| p.into_inner()).get(host).cloned()
    }
}

/// A running listener.
pub struct Served {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The serving task.
    pub task: JoinHandle<std::io::Result<()>>,
}

/// Serves `app` on 127.0.0.1 (`port`, or any free one) until `stop` turns true or its sender is dropped.
pub async fn serve(app: axum::Router, stop: &watch::Sender<bool>, what: &str, port: Option<u16>) -> Result<Served> {
    let on = SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(0)));
    let listener = TcpListener::bind(on).await.with_context(|| format!("binding the {what} listener on {on}"))?;
    let addr = listener.local_addr().with_context(|| format!("reading the {what} listener address"))?;
    let mut rx = stop.subscribe();
    let task = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    Ok(Served { addr, task })
}

/// The data-plane router.
pub fn data_plane(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(route).with_state(shared)
}

/// The admin router (`/stats/prometheus`, `/ready`).
pub fn admin(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/stats/prometheus", axum::routing::get(prometheus))
        .route("/ready", axum::routing::get(|| async { "LIVE\n" }))
        .with_state(shared)
}

async fn prometheus(State(shared): State<Arc<Shared>>) -> Response {
    if shared.faults.scrape_fails.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "reference proxy: injected fault: stats unavailable\n").into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], shared.stats.render()).into_response()
}

async fn route(State(shared): State<Arc<Shared>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    shared.stats.add_envoy("envoy_http_downstream_rq_total", "envoy_http_conn_manager_prefix", HCM_PREFIX, 1);
    let host = request_host(req.headers(), req.uri());
    let Some(policy) = shared.lookup(&host) else {
        return (StatusCode::NOT_FOUND, format!("reference proxy: no route for host {host:?}\n")).into_response();
    };
    match handle(&shared, &policy, peer, req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(host = %host, error = %format!("{e:#}"), "reference proxy failed a request");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("reference proxy error: {e:#}\n")).into_response()
        }
    }
}

/// The upstream's answer.
struct Upstream {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
}

async fn handle(shared: &Shared, policy: &AttachedPolicy, peer: SocketAddr, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return Ok((StatusCode::PAYLOAD_TOO_LARGE, "reference proxy: request body too large or unreadable\n").into_response());
    };
    let uri = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let http_version = match parts.version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2.0",
        Version::HTTP_3 => "3.0",
        _ => "1.1",
    };
    let headers = header_pairs(&parts.headers);
    let mode = policy.attachment.mode;

    shared.stats.add_wasm(TX_TOTAL, 1);
    let (mut tx, sink) = shared.engine.transaction(&policy.rules)?;
    let line = RequestLine {
        client: (peer.ip().to_string(), peer.port()),
        server: (shared.listen.ip().to_string(), shared.listen.port()),
        method: parts.method.as_str(),
        uri: &uri,
        http_version,
    };
    let mut hit: Option<Interruption> = match tx.request_headers(&line, &headers)? {
        Some(hit) => Some(hit),
        None => tx.request_body(&body)?,
    };

    let answer: Upstream = if hit.is_some() && mode == Mode::On {
        let status = hit.as_ref().map(|h| h.status).unwrap_or(403);
        tx.finish(Some(status))?;
        blocked(status)
    } else {
        let forwarded = forward(shared, &parts.method, &uri, &headers, body.clone()).await;
        if forwarded.is_ok() {
            shared.stats.add_envoy("envoy_cluster_upstream_rq_total", "envoy_cluster_name", &policy.cluster, 1);
        }
        match forwarded {
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "reference proxy: upstream failed");
                tx.finish(Some(503))?;
                Upstream { status: 503, headers: Vec::new(), body: Bytes::from_static(b"upstream connect error or disconnect/reset before headers\n") }
            }
            Ok(up) if hit.is_some() => {
                tx.finish(Some(up.status))?;
                up
            }
            Ok(up) => {
                hit = match tx.response_headers(up.status, &up.headers)? {
                    Some(hit) => Some(hit),
                    None => tx.response_body(&up.body)?,
                };
                match &hit {
                    Some(h) if mode == Mode::On => {
                        let status = h.status;
                        tx.finish(Some(status))?;
                        blocked(status)
                    }
                    _ => {
                        tx.finish(None)?;
                        up
                    }
                }
            }
        }
    };
    let detections = sink.take();
    drop(tx);

    if let Some(h) = &hit {
        record_decision(shared, policy, h, &detections, peer, &parts.method, &uri, http_version, &headers, &body, answer.status);
    }
    Ok(respond(answer))
}

#[allow(clippy::too_many_arguments)]
fn record_decision(
    shared: &Shared,
    policy: &AttachedPolicy,
    hit: &Interruption,
    detections: &[String],
    peer: SocketAddr,
    method: &axum::http::Method,
    uri: &str,
    http_version: &str,
    headers: &[(String, String)],
    body: &[u8],
    status: u16,
) {
    let mode = policy.attachment.mode;
    let kind = match mode {
        Mode::On => DecisionStat::Interruptions,
        Mode::DetectionOnly => DecisionStat::WouldBlock,
    };
    let rule_id = if hit.rule_id != 0 {
        hit.rule_id
    } else {
        // No `[id ...]` in the intervention log: attribute to the last detection rule.
        crate::waf::record::messages(detections, "").last().map(|m| m.data.id).unwrap_or(0)
    };
    let by = if shared.faults.double_count { 2 } else { 1 };
    shared.stats.add_wasm(&decision_stat_name(kind, rule_id, hit.phase.as_stat(), &policy.labels), by);
    if shared.faults.drop_audit {
        return;
    }
    let (client_ip, host_ip) = (peer.ip().to_string(), shared.listen.ip().to_string());
    let record = build_record(&Transcript {
        client: (&client_ip, peer.port()),
        host: (&host_ip, shared.listen.port()),
        method: method.as_str(),
        uri,
        http_version,
        request_headers: headers,
        request_body: body,
        status,
        response_headers: &[],
        mode,
        interrupted: mode == Mode::On,
        detections,
        intervention_log: &hit.log,
        crs: policy.attachment.crs,
        server: &shared.gateway,
        parts: "ABIJDEFHKZ",
    });
    let vm = format!("envoyextensionpolicy/{}/{}/wasm/0", policy.attachment.namespace, policy.attachment.policy);
    if let Err(e) = shared.audit.append(&format_envoy_line_now(&vm, &record)) {
        tracing::error!(error = %format!("{e:#}"), "reference proxy could not write an audit line");
    }
}

fn blocked(status: u16) -> Upstream {
    Upstream {
        status,
        headers: vec![("content-type".to_string(), "text/plain".to_string())],
        body: Bytes::from_static(b"Request blocked by the WAF (waf-e2e reference proxy)\n"),
    }
}

fn respond(up: Upstream) -> Response {
    let mut builder = Response::builder().status(StatusCode::from_u16(up.status).unwrap_or(StatusCode::BAD_GATEWAY));
    for (name, value) in &up.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(Body::from(up.body)).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// Headers that belong to one hop and are not forwarded.
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "content-length"];

async fn forward(shared: &Shared, method: &axum::http::Method, uri: &str, headers: &[(String, String)], body: Bytes) -> Result<Upstream> {
    let url = format!("http://{}{}", shared.backend, uri);
    let mut req = shared.client.request(method.clone(), &url).body(body);
    for (name, value) in headers.iter().filter(|(n, _)| !HOP_BY_HOP.contains(&n.as_str())) {
        req = req.header(name.as_str(), value.as_str());
    }
    let resp = req.send().await.with_context(|| format!("forwarding to the echo backend {url}"))?;
    let status = resp.status().as_u16();
    let headers = header_pairs(resp.headers()).into_iter().filter(|(n, _)| !HOP_BY_HOP.contains(&n.as_str())).collect();
    let body = resp.bytes().await.context("reading the echo backend's body")?;
    Ok(Upstream { status, headers, body })
}

/// Header pairs in order, names lowercase (as Envoy hands them to the filter), values lossily UTF-8.
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect()
}

/// The request's host, lowercase, without port: the Host header, else the URI's authority.
pub fn request_host(headers: &HeaderMap, uri: &axum::http::Uri) -> String {
    let raw = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default();
    strip_port(raw.trim()).to_ascii_lowercase()
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split_once(']').map(|(ip, _)| ip).unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_matched_without_port_and_case() {
        let uri: axum::http::Uri = "/x".parse().expect("uri");
        for (raw, want) in [("Shop.Example:8080", "shop.example"), ("shop.example", "shop.example"), ("[::1]:80", "::1"), ("::1", "::1"), ("", "")] {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, raw.parse().expect("header value"));
            assert_eq!(request_host(&headers, &uri), want, "{raw}");
        }
    }
}
