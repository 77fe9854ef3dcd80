//! Envoy log lines that carry an audit record: `... wasm log <vm> : AuditLog:{json}` (design 1.2),
//! or the bare `... wasm log <vm>: {json}` some public coraza-proxy-wasm builds write.

use super::record::AuditRecord;

/// The marker the WAF filter puts before the JSON (`proxywasm.LogInfo("AuditLog:" + json)`).
pub const AUDIT_MARKER: &str = "AuditLog:";

/// Envoy Gateway's VM name prefix for an EnvoyExtensionPolicy's wasm filter.
pub const VM_PREFIX: &str = "envoyextensionpolicy/";

/// An audit record and the wasm VM (the WAF policy's filter) that logged it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditLine {
    /// The VM name, e.g. `envoyextensionpolicy/shop/block-sqli/wasm/0`; empty when the line has none.
    pub vm: String,
    /// The Coraza audit record.
    pub record: AuditRecord,
}

/// An `AuditLog:` line whose JSON could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit line from {vm:?} has unreadable JSON: {reason} (JSON starts: {snippet:?})")]
pub struct AuditParseError {
    /// The VM name found before the marker (may be empty).
    pub vm: String,
    /// What serde_json reported, with line and column.
    pub reason: String,
    /// The first characters of the JSON, for the failure message.
    pub snippet: String,
}

impl AuditLine {
    /// The request's correlation id (`x-waf-e2e-id`), when the record carries one.
    pub fn correlation_id(&self) -> Option<&str> {
        self.record.request_header(crate::contract::CORRELATION_HEADER)
    }

    /// Whether the WAF policy `namespace/name` logged this line.
    pub fn is_of_policy(&self, namespace: &str, name: &str) -> bool {
        self.policy().is_some_and(|(ns, n)| ns == namespace && n == name)
    }

    /// The WAF policy `(namespace, name)` from an `envoyextensionpolicy/<ns>/<name>/wasm/<i>` VM name.
    pub fn policy(&self) -> Option<(String, String)> {
        let rest = self.vm.strip_prefix(VM_PREFIX)?;
        let mut parts = rest.split('/');
        let namespace = parts.next().filter(|s| !s.is_empty())?;
        let name = parts.next().filter(|s| !s.is_empty())?;
        Some((namespace.to_string(), name.to_string()))
    }
}

/// Reads one log line: `None` when it carries no audit record, `Err` when a record's JSON is broken.
///
/// Two forms are audit lines (coraza-proxy-wasm's `internal/auditlog/serial_writer.go` has written
/// both over time):
/// - `... AuditLog:{json}`: the marker the feature's filter (and newer public filters, overriding
///   Coraza's `serial` writer) put before the JSON; accepted anywhere in the line, after Envoy's
///   file format, container-log prefixes (CRI timestamps, no file part) or nothing.
/// - `... wasm log <vm>: {json}`: a wasm log message that is the bare Coraza JSON (a form older
///   builds wrote; the `oss` kind profile no longer configures any writer: its
///   `@recommended-conf` selects `serial`, which writes `AuditLog:`). To keep other wasm
///   messages out, the JSON must be an object whose `transaction` is an object; a message that
///   starts like Coraza's record (`{"transaction":{`, Coraza's first key) but does not parse is
///   reported as `Err`, so a truncated record is not silently lost.
///
/// Never panics.
pub fn parse_line(line: &str) -> Option<Result<AuditLine, AuditParseError>> {
    if let Some((prefix, message)) = wasm_message(line) {
        if message.starts_with('{') {
            if let Some(parsed) = parse_bare(prefix, message) {
                return Some(parsed);
            }
        }
    }
    let at = line.find(AUDIT_MARKER)?;
    let (prefix, rest) = line.split_at(at);
    let json = rest[AUDIT_MARKER.len()..].trim();
    Some(parse_record(vm_from_prefix(prefix), json))
}

/// Splits a wasm log line into (everything before the message, the message): the message starts
/// after the first `": "` following `wasm log ` (VM names hold no `": "`).
fn wasm_message(line: &str) -> Option<(&str, &str)> {
    let start = line.find("wasm log ")? + "wasm log ".len();
    let colon = line[start..].find(": ")? + start;
    Some((&line[..colon + 1], line[colon + 2..].trim()))
}

/// A bare-JSON wasm message: an audit record, a broken one, or (any other JSON) not an audit line.
fn parse_bare(prefix: &str, json: &str) -> Option<Result<AuditLine, AuditParseError>> {
    let vm = vm_from_prefix(prefix);
    if starts_like_a_record(json) {
        return Some(parse_record(vm, json));
    }
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    if !value.get("transaction").is_some_and(serde_json::Value::is_object) {
        return None;
    }
    Some(parse_record(vm, json))
}

/// True when `json` opens with `{"transaction":{`, whitespace allowed, as Coraza's JSON audit format does.
fn starts_like_a_record(json: &str) -> bool {
    let compact = json.chars().filter(|c| !c.is_whitespace()).take(17).collect::<String>();
    compact.starts_with("{\"transaction\":{")
}

fn parse_record(vm: String, json: &str) -> Result<AuditLine, AuditParseError> {
    match serde_json::from_str::<AuditRecord>(json) {
        Ok(record) => Ok(AuditLine { vm, record }),
        Err(e) => Err(AuditParseError { vm, reason: e.to_string(), snippet: json.chars().take(80).collect() }),
    }
}

/// The VM name between `wasm log ` and the marker; falls back to any `envoyextensionpolicy/...` token.
fn vm_from_prefix(prefix: &str) -> String {
    let after_wasm_log = prefix.rfind("wasm log ").map(|i| &prefix[i + "wasm log ".len()..]);
    let search = after_wasm_log.unwrap_or(prefix);
    let tokens: Vec<&str> = search
        .split_whitespace()
        .map(|t| t.trim_end_matches(':'))
        .filter(|t| !t.is_empty())
        .collect();
    if let Some(vm) = tokens.iter().find(|t| t.starts_with(VM_PREFIX)) {
        return (*vm).to_string();
    }
    match after_wasm_log {
        Some(_) => tokens.first().map(|t| (*t).to_string()).unwrap_or_default(),
        None => String::new(),
    }
}
