//! Coraza-shaped audit records (design 1.2) built from a ModSecurity transaction's messages, for the
//! reference WAF service (the stand-in filter logs them as `AuditLog:<json>`).

use super::msclog;
use crate::audit::{self, AuditMessage, AuditProducer, AuditRecord, AuditRequest, AuditResponse, AuditTransaction};
use crate::contract::Mode;
use std::collections::BTreeMap;

/// Coraza's default `SecAuditLogParts`.
pub const DEFAULT_PARTS: &str = "ABCFHZ";

/// What one decided transaction looked like, for its audit record.
pub struct Transcript<'a> {
    /// Downstream peer address and port.
    pub client: (&'a str, u16),
    /// Listener address and port.
    pub host: (&'a str, u16),
    /// Method.
    pub method: &'a str,
    /// Path and query as received.
    pub uri: &'a str,
    /// `1.1`, `2.0`.
    pub http_version: &'a str,
    /// Request headers in order (lowercase names, as Envoy passes them).
    pub request_headers: &'a [(String, String)],
    /// Request body.
    pub request_body: &'a [u8],
    /// Status sent downstream (the block status when blocked, the backend's otherwise).
    pub status: u16,
    /// Response headers as the WAF saw them (empty before the response).
    pub response_headers: &'a [(String, String)],
    /// The policy's engine mode.
    pub mode: Mode,
    /// True when the request was interrupted.
    pub interrupted: bool,
    /// Log-callback lines (detection rules), in order.
    pub detections: &'a [String],
    /// The interrupting rule's intervention log.
    pub intervention_log: &'a str,
    /// Whether the CRS is loaded.
    pub crs: bool,
    /// `producer.server`.
    pub server: &'a str,
    /// `SecAuditLogParts`: B request headers, C/I request body, F response headers, K messages.
    pub parts: &'a str,
}

/// Messages for the record: detection rules then the interrupting rule, one per rule id, in order.
pub fn messages(detections: &[String], intervention_log: &str) -> Vec<AuditMessage> {
    let mut out: Vec<AuditMessage> = Vec::new();
    for text in detections.iter().map(String::as_str).chain(std::iter::once(intervention_log)) {
        if let Some(m) = msclog::to_message(text) {
            if !out.iter().any(|o| o.data.id == m.data.id) {
                out.push(m);
            }
        }
    }
    out
}

fn header_map(pairs: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in pairs.iter().filter(|(n, _)| !n.starts_with(':')) {
        headers.entry(name.clone()).or_default().push(value.clone());
    }
    headers
}

/// Builds the Coraza-shaped record of a decided transaction; parts the policy leaves out stay empty, as in Coraza.
pub fn build_record(t: &Transcript<'_>) -> AuditRecord {
    let now = chrono::Local::now();
    let part = |p: char| t.parts.contains(p);
    let matched = messages(t.detections, t.intervention_log);
    let highest = matched.iter().map(|m| m.data.severity).min();
    let ver = matched.iter().map(|m| m.data.ver.as_str()).find(|v| !v.is_empty()).unwrap_or("OWASP_CRS").to_string();
    let protocol = format!("HTTP/{}", t.http_version);
    AuditRecord {
        transaction: AuditTransaction {
            timestamp: now.format("%Y/%m/%d %H:%M:%S").to_string(),
            unix_timestamp: now.timestamp_nanos_opt().unwrap_or_else(|| now.timestamp()),
            id: uuid::Uuid::new_v4().simple().to_string(),
            client_ip: t.client.0.to_string(),
            client_port: i64::from(t.client.1),
            host_ip: t.host.0.to_string(),
            host_port: i64::from(t.host.1),
            server_id: String::new(),
            request: AuditRequest {
                method: t.method.to_string(),
                protocol: protocol.clone(),
                uri: t.uri.to_string(),
                http_version: t.http_version.to_string(),
                headers: if part('B') { header_map(t.request_headers) } else { BTreeMap::new() },
                body: if part('C') || part('I') { String::from_utf8_lossy(t.request_body).into_owned() } else { String::new() },
                files: Vec::new(),
                args: serde_json::json!({}),
                length: i64::try_from(t.request_body.len()).unwrap_or(i64::MAX),
            },
            response: AuditResponse {
                protocol,
                status: i64::from(t.status),
                headers: if part('F') { header_map(t.response_headers) } else { BTreeMap::new() },
                body: String::new(),
            },
            producer: AuditProducer {
                connector: "waf-e2e reference WAF service (stand-in for coraza-proxy-wasm)".to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                server: t.server.to_string(),
                rule_engine: t.mode.as_seclang().to_string(),
                rulesets: if t.crs { vec![ver] } else { Vec::new() },
            },
            highest_severity: highest.map(audit::severity_name).unwrap_or_default().to_string(),
            is_interrupted: t.interrupted,
        },
        // Coraza lists matched rules only with part K.
        messages: if part('K') { matched } else { Vec::new() },
    }
}
