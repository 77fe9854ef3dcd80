//! Builds Coraza-shaped audit records and appends them as Envoy `AuditLog:` lines, for the reference proxy,
//! a STAND-IN for coraza-proxy-wasm's audit logging through Envoy (local stack only).

use super::msclog;
use crate::audit::{self, AuditMessage, AuditProducer, AuditRecord, AuditRequest, AuditResponse, AuditTransaction};
use crate::scenario::Mode;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Appends complete lines to the audit log file, one `write` per line.
pub struct AuditWriter {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditWriter {
    /// Opens (creating if needed) `path` for appending; existing content is kept.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating audit log directory {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening audit log {}", path.display()))?;
        Ok(AuditWriter { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line` and a newline in a single write, then flushes, so readers never see half a line.
    pub fn append(&self, line: &str) -> Result<()> {
        let mut buf = String::with_capacity(line.len() + 1);
        buf.push_str(line);
        buf.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(buf.as_bytes()).with_context(|| format!("appending to audit log {}", self.path.display()))?;
        file.flush().with_context(|| format!("flushing audit log {}", self.path.display()))
    }
}

/// What one decided transaction looked like, for its audit record.
pub struct Transcript<'a> {
    /// Downstream peer.
    pub client: SocketAddr,
    /// Listener address.
    pub host: SocketAddr,
    /// Method.
    pub method: &'a str,
    /// Path and query as received.
    pub uri: &'a str,
    /// `1.1`, `2.0`.
    pub http_version: &'a str,
    /// Request headers in order (lowercase names, as Envoy passes them).
    pub headers: &'a [(String, String)],
    /// Request body.
    pub body: &'a [u8],
    /// Status sent downstream (403 when blocked, the backend's otherwise).
    pub status: u16,
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

/// Builds the Coraza-shaped record of a decided transaction.
pub fn build_record(t: &Transcript<'_>) -> AuditRecord {
    let now = chrono::Local::now();
    let messages = messages(t.detections, t.intervention_log);
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in t.headers {
        headers.entry(name.clone()).or_default().push(value.clone());
    }
    let highest = messages.iter().map(|m| m.data.severity).min();
    let ver = messages.iter().map(|m| m.data.ver.as_str()).find(|v| !v.is_empty()).unwrap_or("OWASP_CRS");
    AuditRecord {
        transaction: AuditTransaction {
            timestamp: now.format("%Y/%m/%d %H:%M:%S").to_string(),
            unix_timestamp: now.timestamp_nanos_opt().unwrap_or_else(|| now.timestamp()),
            id: uuid::Uuid::new_v4().simple().to_string(),
            client_ip: t.client.ip().to_string(),
            client_port: i64::from(t.client.port()),
            host_ip: t.host.ip().to_string(),
            host_port: i64::from(t.host.port()),
            server_id: String::new(),
            request: AuditRequest {
                method: t.method.to_string(),
                protocol: format!("HTTP/{}", t.http_version),
                uri: t.uri.to_string(),
                http_version: t.http_version.to_string(),
                headers,
                body: String::from_utf8_lossy(t.body).into_owned(),
                files: Vec::new(),
                args: serde_json::json!({}),
                length: i64::try_from(t.body.len()).unwrap_or(i64::MAX),
            },
            response: AuditResponse { protocol: format!("HTTP/{}", t.http_version), status: i64::from(t.status), headers: BTreeMap::new(), body: String::new() },
            producer: AuditProducer {
                connector: "waf-e2e-reference-proxy (stand-in for coraza-proxy-wasm)".to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                server: t.server.to_string(),
                rule_engine: t.mode.as_seclang().to_string(),
                rulesets: if t.crs { vec![ver.to_string()] } else { Vec::new() },
            },
            highest_severity: highest.map(audit::severity_name).unwrap_or_default().to_string(),
            is_interrupted: t.interrupted,
        },
        messages,
    }
}
