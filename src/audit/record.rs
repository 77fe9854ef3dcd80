//! Coraza's audit-log JSON (coraza `internal/auditlog/auditlog.go`), read leniently and written faithfully.
//!
//! Reading must accept real Coraza output from a cluster: every non-essential field defaults,
//! unknown fields are ignored, `null` stands for "empty" (Go marshals nil maps and slices as
//! `null`), and numbers that some producers write as strings (rule ids, severities) are accepted
//! in either spelling.

use crate::contract::Decision;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// One audit record: the transaction and the rules that matched in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// What was requested and answered, and by which engine.
    #[serde(default, deserialize_with = "null_default")]
    pub transaction: AuditTransaction,
    /// The rules that matched (detection rules and the interrupting rule).
    #[serde(default, deserialize_with = "null_default")]
    pub messages: Vec<AuditMessage>,
}

/// The `transaction` object of a Coraza audit record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditTransaction {
    /// Local time of the transaction, `2006/01/02 15:04:05` in Coraza.
    #[serde(default, deserialize_with = "null_default")]
    pub timestamp: String,
    /// Unix time of the transaction (Coraza v3 writes nanoseconds).
    #[serde(default, deserialize_with = "lenient_i64")]
    pub unix_timestamp: i64,
    /// Unique transaction id.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// Downstream client address.
    #[serde(default, deserialize_with = "null_default")]
    pub client_ip: String,
    /// Downstream client port.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub client_port: i64,
    /// Address the request arrived on.
    #[serde(default, deserialize_with = "null_default")]
    pub host_ip: String,
    /// Port the request arrived on.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub host_port: i64,
    /// Server id (`SecServerSignature`-like identity of the WAF instance).
    #[serde(default, deserialize_with = "null_default")]
    pub server_id: String,
    /// The request as the WAF saw it.
    #[serde(default, deserialize_with = "null_default")]
    pub request: AuditRequest,
    /// The response as the WAF saw it (403 when interrupted).
    #[serde(default, deserialize_with = "null_default")]
    pub response: AuditResponse,
    /// Which connector and engine produced the record.
    #[serde(default, deserialize_with = "null_default")]
    pub producer: AuditProducer,
    /// Highest severity among matched rules (Coraza writes a string; numbers are accepted).
    #[serde(default, deserialize_with = "lenient_string")]
    pub highest_severity: String,
    /// True when the WAF interrupted the transaction (engine On).
    #[serde(default, deserialize_with = "null_default")]
    pub is_interrupted: bool,
}

/// The `transaction.request` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRequest {
    /// HTTP method.
    #[serde(default, deserialize_with = "null_default")]
    pub method: String,
    /// Protocol (`HTTP/1.1`).
    #[serde(default, deserialize_with = "null_default")]
    pub protocol: String,
    /// Path and query as received.
    #[serde(default, deserialize_with = "null_default")]
    pub uri: String,
    /// HTTP version (`1.1`).
    #[serde(default, deserialize_with = "null_default")]
    pub http_version: String,
    /// Request headers, name to every value.
    #[serde(default, deserialize_with = "null_default")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Request body as text (empty unless the WAF buffered it).
    #[serde(default, deserialize_with = "null_default")]
    pub body: String,
    /// Uploaded files (multipart), kept as raw JSON.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<serde_json::Value>,
    /// Request arguments, kept as raw JSON (its shape differs between Coraza versions).
    #[serde(default)]
    pub args: serde_json::Value,
    /// Request body length.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub length: i64,
}

/// The `transaction.response` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditResponse {
    /// Protocol (`HTTP/1.1`).
    #[serde(default, deserialize_with = "null_default")]
    pub protocol: String,
    /// Status code sent downstream.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub status: i64,
    /// Response headers, name to every value.
    #[serde(default, deserialize_with = "null_default")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Response body as text (empty unless the WAF buffered it).
    #[serde(default, deserialize_with = "null_default")]
    pub body: String,
}

/// The `transaction.producer` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditProducer {
    /// The connector (e.g. `coraza-proxy-wasm`).
    #[serde(default, deserialize_with = "null_default")]
    pub connector: String,
    /// Connector version.
    #[serde(default, deserialize_with = "null_default")]
    pub version: String,
    /// Server name.
    #[serde(default, deserialize_with = "null_default")]
    pub server: String,
    /// Engine mode: `On`, `DetectionOnly` or `Off`.
    #[serde(default, deserialize_with = "null_default")]
    pub rule_engine: String,
    /// Loaded rule sets (e.g. `OWASP_CRS/4.0.0`).
    #[serde(default, deserialize_with = "null_default")]
    pub rulesets: Vec<String>,
}

/// One entry of `messages[]`: a rule that matched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditMessage {
    /// Action set (Coraza writes an empty string or `Warning`).
    #[serde(default, deserialize_with = "null_default")]
    pub actionset: String,
    /// The rule's log line.
    #[serde(default, deserialize_with = "null_default")]
    pub message: String,
    /// The rule's details.
    #[serde(default, deserialize_with = "null_default")]
    pub data: AuditMessageData,
}

/// The `messages[].data` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditMessageData {
    /// Rule file.
    #[serde(default, deserialize_with = "null_default")]
    pub file: String,
    /// Line in the rule file.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub line: i64,
    /// Rule id (a number in Coraza; numeric strings are accepted).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub id: u64,
    /// Rule revision.
    #[serde(default, deserialize_with = "lenient_string")]
    pub rev: String,
    /// The rule's `msg`.
    #[serde(default, deserialize_with = "null_default")]
    pub msg: String,
    /// The rule's `logdata`.
    #[serde(default, deserialize_with = "null_default")]
    pub data: String,
    /// Severity 0 (emergency) .. 7 (debug); a number in Coraza.
    #[serde(default, deserialize_with = "lenient_severity")]
    pub severity: u8,
    /// Rule set version (`OWASP_CRS/3.3.4`).
    #[serde(default, deserialize_with = "null_default")]
    pub ver: String,
    /// Maturity.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub maturity: i64,
    /// Accuracy.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub accuracy: i64,
    /// Tags.
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
    /// The raw rule text or log line.
    #[serde(default, deserialize_with = "null_default")]
    pub raw: String,
}

impl AuditRecord {
    /// First value of a request header, matched case-insensitively.
    pub fn request_header(&self, name: &str) -> Option<&str> {
        self.transaction
            .request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, values)| values.first())
            .map(String::as_str)
    }

    /// Every message's rule id, sorted and deduplicated (ids of 0, i.e. missing, are left out).
    pub fn rule_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.messages.iter().map(|m| m.data.id).filter(|id| *id != 0).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The decision the record documents: interrupted = blocked; DetectionOnly with matches = would_block.
    pub fn decision(&self) -> Option<Decision> {
        if self.transaction.is_interrupted {
            Some(Decision::Blocked)
        } else if self.transaction.producer.rule_engine.eq_ignore_ascii_case("DetectionOnly") && !self.messages.is_empty() {
            Some(Decision::WouldBlock)
        } else {
            None
        }
    }
}

/// Name of a severity number, as Coraza's `RuleSeverity.String()` spells it.
pub fn severity_name(severity: u8) -> &'static str {
    match severity {
        0 => "emergency",
        1 => "alert",
        2 => "critical",
        3 => "error",
        4 => "warning",
        5 => "notice",
        6 => "info",
        7 => "debug",
        _ => "unknown",
    }
}

fn severity_from_name(name: &str) -> Option<u8> {
    (0..=7u8).find(|s| severity_name(*s).eq_ignore_ascii_case(name))
}

/// `null` (or a missing field) becomes the type's default.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A number, a numeric string, or `null`, as an unsigned integer.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(0),
        Some(serde_json::Value::Number(n)) => n.as_u64().ok_or_else(|| D::Error::custom(format!("expected an unsigned integer, got {n}"))),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(0),
        Some(serde_json::Value::String(s)) => s.trim().parse().map_err(|_| D::Error::custom(format!("expected an unsigned integer, got {s:?}"))),
        Some(other) => Err(D::Error::custom(format!("expected an unsigned integer, got {other}"))),
    }
}

/// A number, a numeric string, or `null`, as a signed integer (floats are truncated).
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(0),
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| D::Error::custom(format!("expected an integer, got {n}"))),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(0),
        Some(serde_json::Value::String(s)) => s.trim().parse().map_err(|_| D::Error::custom(format!("expected an integer, got {s:?}"))),
        Some(other) => Err(D::Error::custom(format!("expected an integer, got {other}"))),
    }
}

/// A string, a number (written as its digits), or `null`.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(D::Error::custom(format!("expected a string, got {other}"))),
    }
}

/// A severity as a number, a numeric string or a name (`critical`); unknown names become 0.
fn lenient_severity<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(0),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u8::try_from(v).ok())
            .ok_or_else(|| D::Error::custom(format!("expected a severity 0..7, got {n}"))),
        Some(serde_json::Value::String(s)) => {
            let s = s.trim();
            Ok(s.parse::<u8>().ok().or_else(|| severity_from_name(s)).unwrap_or(0))
        }
        Some(other) => Err(D::Error::custom(format!("expected a severity, got {other}"))),
    }
}
