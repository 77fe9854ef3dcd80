//! ModSecurity v3 + OWASP CRS engines for the reference proxy, a STAND-IN for Envoy's Coraza WAF filter (local stack only).
//!
//! Every policy compiles its own rule set with `SecRuleEngine On` first: the engine mode's first
//! value wins across rule loads, so whatever the policy's directives say, evaluation is always
//! "would this request be interrupted". The policy's mode then decides what happens: On blocks,
//! DetectionOnly forwards and counts would_block. That makes would_block exact.

use anyhow::{Context, Result};
use modsecurity::{ModSecurity, Rules, Transaction};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// CRS's setup file (Debian `modsecurity-crs`).
pub const CRS_SETUP: &str = "/etc/modsecurity/crs/crs-setup.conf";
/// CRS's rules directory (Debian `modsecurity-crs`); its `.data` files sit beside the rules.
pub const CRS_RULES_DIR: &str = "/usr/share/modsecurity-crs/rules";

/// Engine settings loaded before anything else (the first engine setting wins).
const BASE_DIRECTIVES: &str = r#"
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit 13107200
SecRequestBodyNoFilesLimit 1048576
SecRequestBodyLimitAction ProcessPartial
SecResponseBodyAccess Off
SecAuditEngine Off
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/(?:[a-z0-9.+-]+\+)?json" "id:99901,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "@rx ^(?:application(?:/soap\+|/)|text/)xml" "id:99902,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
"#;

/// The HTTP processing stage whose call produced an intervention, as the filter's stat names spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `process_request_headers` (SecLang phase 1).
    RequestHeaders,
    /// `process_request_body` (phase 2; CRS's 949110 fires here).
    RequestBody,
    /// `process_response_headers` (phase 3).
    ResponseHeaders,
    /// `process_response_body` (phase 4).
    ResponseBody,
}

impl Phase {
    /// The `<phase>` part of `waf_filter.tx.*_phase=<phase>`.
    pub fn as_stat(self) -> &'static str {
        match self {
            Phase::RequestHeaders => "http_request_headers",
            Phase::RequestBody => "http_request_body",
            Phase::ResponseHeaders => "http_response_headers",
            Phase::ResponseBody => "http_response_body",
        }
    }
}

/// An interruption, copied out of ModSecurity's Intervention (which is never kept or cloned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interruption {
    /// The stage that produced it.
    pub phase: Phase,
    /// HTTP status ModSecurity asked for (403 for CRS).
    pub status: u16,
    /// The interrupting rule's id, from `[id "..."]` in the intervention log (0 when absent).
    pub rule_id: u64,
    /// The intervention log: the interrupting rule's message.
    pub log: String,
}

/// The process-wide ModSecurity instance and the lock serialising calls into it.
pub struct Engine {
    msc: ModSecurity,
    // libmodsecurity's in-memory collections (CRS's initcol) are shared by all transactions;
    // serialising engine calls keeps them safe at ~1 ms per request.
    lock: Mutex<()>,
}

/// One policy's compiled rules (never shared between policies).
pub struct PolicyRules {
    rules: Rules,
}

impl Engine {
    /// Creates the ModSecurity instance with log callbacks enabled (detection rules arrive through them).
    pub fn new() -> Result<Self> {
        let msc = ModSecurity::builder()
            .with_connector_info("waf-e2e reference proxy (stand-in for coraza-proxy-wasm)")
            .context("setting ModSecurity connector info")?
            .with_log_callbacks()
            .build();
        Ok(Engine { msc, lock: Mutex::new(()) })
    }

    /// libmodsecurity's own identification (`ModSecurity v3.0.9 (Linux)`).
    pub fn whoami(&self) -> String {
        self.msc.whoami().to_string()
    }

    fn guard(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a transaction on `rules`; detection messages from the log callback go into the returned sink.
    pub fn transaction<'a>(&'a self, rules: &'a PolicyRules) -> Result<(WafTransaction<'a>, LogSink)> {
        let sink = LogSink::default();
        let writer = sink.clone();
        let _guard = self.guard();
        let tx = self
            .msc
            .transaction_builder()
            .with_rules(&rules.rules)
            .with_logging(move |msg: Option<&str>| {
                if let Some(msg) = msg {
                    writer.push(msg);
                }
            })
            .build()
            .context("creating a ModSecurity transaction")?;
        Ok((WafTransaction { engine: self, tx: Some(tx) }, sink))
    }
}

/// The CRS rule files in load order: setup, then the rules directory's `*.conf` sorted.
pub fn crs_files() -> Result<Vec<PathBuf>> {
    let mut rules: Vec<PathBuf> = std::fs::read_dir(CRS_RULES_DIR)
        .with_context(|| format!("reading the CRS rules directory {CRS_RULES_DIR} (install Debian's modsecurity-crs)"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "conf"))
        .collect();
    rules.sort();
    let mut files = vec![PathBuf::from(CRS_SETUP)];
    files.extend(rules);
    Ok(files)
}

/// Compiles one policy's rules: base settings (engine On), the CRS when asked, then the policy's directives.
pub fn compile(crs: bool, directives: Option<&str>) -> Result<PolicyRules> {
    let mut rules = Rules::new();
    rules.add_plain(BASE_DIRECTIVES).map_err(|e| anyhow::anyhow!("{e}")).context("loading the proxy's base directives")?;
    if crs {
        for file in crs_files()? {
            add_file(&mut rules, &file)?;
        }
    }
    if let Some(directives) = directives.filter(|d| !d.trim().is_empty()) {
        rules
            .add_plain(directives)
            .map_err(|e| anyhow::anyhow!("ModSecurity rejected the policy's directives: {e}"))?;
    }
    Ok(PolicyRules { rules })
}

/// Whether ModSecurity accepts `directives` loaded after the base settings (and the CRS when `crs`):
/// `Ok(Err(why))` when it rejects them, `Err` when the rules around them cannot be loaded.
pub fn check_directives(crs: bool, directives: &str) -> Result<std::result::Result<(), String>> {
    let mut rules = Rules::new();
    rules.add_plain(BASE_DIRECTIVES).map_err(|e| anyhow::anyhow!("{e}")).context("loading the proxy's base directives")?;
    if crs {
        for file in crs_files()? {
            add_file(&mut rules, &file)?;
        }
    }
    Ok(rules.add_plain(directives).map(|_| ()).map_err(|e| e.to_string().trim().to_string()))
}

fn add_file(rules: &mut Rules, file: &Path) -> Result<()> {
    // The crate panics on non-UTF-8 paths; CRS paths are ASCII, but check rather than trust.
    anyhow::ensure!(file.to_str().is_some(), "rule file path is not UTF-8: {}", file.display());
    rules
        .add_file(file)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading rule file {}", file.display()))
}

/// Log lines delivered by ModSecurity's log callback during one transaction.
#[derive(Clone, Default)]
pub struct LogSink(Arc<Mutex<Vec<String>>>);

impl LogSink {
    fn push(&self, msg: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(msg.to_string());
    }

    /// Takes every line received so far.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// One ModSecurity transaction; every call takes the engine lock, and so does the drop.
pub struct WafTransaction<'a> {
    engine: &'a Engine,
    tx: Option<Transaction<'a>>,
}

impl Drop for WafTransaction<'_> {
    fn drop(&mut self) {
        let _guard = self.engine.guard();
        drop(self.tx.take());
    }
}

/// A request as the WAF sees it.
pub struct WafRequest<'r> {
    /// Client address and port.
    pub client: (String, u16),
    /// Server address and port.
    pub server: (String, u16),
    /// Method.
    pub method: &'r str,
    /// Path and query as received.
    pub uri: &'r str,
    /// `1.1`, `2.0`.
    pub http_version: &'r str,
    /// Header name/value pairs, in order.
    pub headers: &'r [(String, String)],
    /// The whole body.
    pub body: &'r [u8],
}

impl WafTransaction<'_> {
    fn with<T>(&mut self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let _guard = self.engine.guard();
        let tx = self.tx.as_mut().context("transaction already finished")?;
        f(tx)
    }

    /// Runs the request phases; stops at, and returns, the first interruption.
    pub fn process_request(&mut self, req: &WafRequest<'_>) -> Result<Option<Interruption>> {
        self.with(|tx| {
            let (cip, cport) = &req.client;
            let (sip, sport) = &req.server;
            tx.process_connection(cip, i32::from(*cport), sip, i32::from(*sport))
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("ModSecurity process_connection")?;
            tx.process_uri(req.uri, req.method, req.http_version)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("ModSecurity process_uri")?;
            for (name, value) in req.headers {
                // A NUL byte cannot reach C; such a header is skipped rather than failing the request.
                let _ = tx.add_request_header(name, value);
            }
            tx.process_request_headers()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("ModSecurity process_request_headers")?;
            if let Some(hit) = take_interruption(tx, Phase::RequestHeaders) {
                return Ok(Some(hit));
            }
            if !req.body.is_empty() {
                tx.append_request_body(req.body)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .context("ModSecurity append_request_body")?;
            }
            // Always, even for GET: CRS's blocking evaluation (949110) runs in phase 2.
            tx.process_request_body()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("ModSecurity process_request_body")?;
            Ok(take_interruption(tx, Phase::RequestBody))
        })
    }

    /// Runs the response phases with the upstream's status and headers (body access is off).
    pub fn process_response(&mut self, status: u16, headers: &[(String, String)], body: &[u8]) -> Result<Option<Interruption>> {
        self.with(|tx| {
            for (name, value) in headers {
                let _ = tx.add_response_header(name, value);
            }
            tx.process_response_headers(i32::from(status), "HTTP/1.1")
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("ModSecurity process_response_headers")?;
            if let Some(hit) = take_interruption(tx, Phase::ResponseHeaders) {
                return Ok(Some(hit));
            }
            if !body.is_empty() {
                tx.append_response_body(body)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .context("ModSecurity append_response_body")?;
            }
            tx.process_response_body()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("ModSecurity process_response_body")?;
            Ok(take_interruption(tx, Phase::ResponseBody))
        })
    }

    /// Feeds the final status (e.g. 403 after an interruption) and runs the logging phase.
    pub fn finish(&mut self, final_status: Option<u16>) -> Result<()> {
        self.with(|tx| {
            if let Some(status) = final_status {
                tx.process_response_headers(i32::from(status), "HTTP/1.1")
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .context("ModSecurity process_response_headers (final status)")?;
                // Interventions after the decision change nothing; read and free them.
                drop(tx.intervention());
            }
            tx.process_logging().map_err(|e| anyhow::anyhow!("{e}")).context("ModSecurity process_logging")
        })
    }
}

/// Reads the intervention (once) and copies what is needed; the Intervention is dropped here, never cloned.
fn take_interruption(tx: &mut Transaction<'_>, phase: Phase) -> Option<Interruption> {
    let intervention = tx.intervention()?;
    if !intervention.disruptive() {
        return None;
    }
    let log = intervention.log().unwrap_or_default().to_string();
    let status = u16::try_from(intervention.status()).ok().filter(|s| (100..=599).contains(s)).unwrap_or(403);
    let rule_id = super::msclog::field(&log, "id").and_then(|id| id.parse().ok()).unwrap_or(0);
    Some(Interruption { phase, status, rule_id, log })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rules: &PolicyRules, engine: &Engine, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> (Option<Interruption>, Vec<String>) {
        let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (mut tx, sink) = engine.transaction(rules).expect("transaction");
        let req = WafRequest {
            client: ("127.0.0.1".into(), 40000),
            server: ("127.0.0.1".into(), 10080),
            method,
            uri,
            http_version: "1.1",
            headers: &headers,
            body,
        };
        let hit = tx.process_request(&req).expect("request phases");
        tx.finish(Some(hit.as_ref().map(|h| h.status).unwrap_or(200))).expect("logging");
        drop(tx);
        (hit, sink.take())
    }

    #[test]
    fn the_policys_own_detection_only_cannot_override_the_proxys_engine_on() {
        let engine = Engine::new().expect("engine");
        let rules = compile(false, Some("SecRuleEngine DetectionOnly\nSecRule ARGS:x \"@streq 1\" \"id:10001,phase:1,deny,log,msg:'x'\"")).expect("compile");
        let (hit, _) = run(&rules, &engine, "GET", "/?x=1", &[("Host", "h")], b"");
        let hit = hit.expect("interrupted");
        assert_eq!((hit.phase, hit.status, hit.rule_id), (Phase::RequestHeaders, 403, 10001));
    }

    #[test]
    fn crs_interrupts_a_get_in_the_body_phase_and_reports_detections_through_the_log() {
        let engine = Engine::new().expect("engine");
        let rules = compile(true, None).expect("compile");
        let (hit, logs) = run(&rules, &engine, "GET", "/?id=1'%20OR%20'1'='1", &[("Host", "h"), ("User-Agent", "t"), ("Accept", "*/*")], b"");
        let hit = hit.expect("interrupted");
        assert_eq!((hit.phase, hit.rule_id), (Phase::RequestBody, 949110));
        assert!(logs.iter().any(|l| l.contains("[id \"942100\"]")), "{logs:?}");
        assert!(!logs.iter().any(|l| l.contains("[id \"949110\"]")), "the blocking rule only arrives in the intervention");
    }

    #[test]
    fn non_utf8_bytes_in_matched_data_arrive_hex_escaped_without_aborting() {
        let engine = Engine::new().expect("engine");
        let rules = compile(true, None).expect("compile");
        let (hit, logs) = run(&rules, &engine, "GET", "/?id=%ff%fe'%20or%201=1--%c0%80", &[("Host", "h"), ("User-Agent", "t"), ("Accept", "*/*")], b"");
        assert!(hit.is_some());
        assert!(logs.iter().any(|l| l.contains("\\xff")), "{logs:?}");
    }

    #[test]
    fn a_benign_request_is_not_interrupted() {
        let engine = Engine::new().expect("engine");
        let rules = compile(true, None).expect("compile");
        let (hit, _) = run(&rules, &engine, "GET", "/products?page=2", &[("Host", "h"), ("User-Agent", "t"), ("Accept", "*/*")], b"");
        assert_eq!(hit, None);
    }

    #[test]
    fn crs_files_load_setup_first_then_sorted_rules() {
        let files = crs_files().expect("CRS installed");
        assert_eq!(files[0], PathBuf::from(CRS_SETUP));
        let rules = &files[1..];
        assert!(rules.windows(2).all(|w| w[0] < w[1]));
        assert!(rules.iter().any(|f| f.ends_with("REQUEST-949-BLOCKING-EVALUATION.conf")));
    }

    #[test]
    fn a_bad_directive_is_an_error_carrying_modsecuritys_message() {
        let err = compile(false, Some("SecRuel ARGS x")).err().expect("rejected");
        let text = format!("{err:#}");
        assert!(text.contains("SecRuel") && text.contains("Line: 1"), "{text}");
    }
}
