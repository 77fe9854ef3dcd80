//! ModSecurity v3 + OWASP CRS (Debian's libmodsecurity 3.0.9 and modsecurity-crs 3.3.4), the engine of the
//! reference WAF service that the stand-in filter asks for decisions (local stack only).
//!
//! Evaluation is always "would this request be interrupted": the rule text the service compiles starts
//! with `SecRuleEngine On` and the policy's own engine lines are taken out (the service reads them, as
//! Coraza would); the policy's mode then decides what happens. That makes would_block exact.
//! A policy's text is compiled in ONE load, so inside it the last value of a setting wins, as in Coraza
//! (across separate ModSecurity loads the first engine setting would win instead).

use super::protocol::Stage;
use anyhow::{Context, Result};
use modsecurity::{ModSecurity, Rules, Transaction};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// CRS's setup file (Debian `modsecurity-crs`).
pub const CRS_SETUP: &str = "/etc/modsecurity/crs/crs-setup.conf";
/// CRS's rules directory (Debian `modsecurity-crs`); its `.data` files sit beside the rules.
pub const CRS_RULES_DIR: &str = "/usr/share/modsecurity-crs/rules";

/// The settings every compiled policy starts with: evaluation always on, ModSecurity's own audit log
/// never written (the service builds Coraza's record itself).
pub const ENGINE_PREAMBLE: &str = "SecRuleEngine On\nSecAuditEngine Off\n";

/// Settings `check_directives` loads before a scenario's directives (the old reference proxy's base).
const CHECK_BASE: &str = r#"
SecRuleEngine On
SecRequestBodyAccess On
SecAuditEngine Off
"#;

/// An interruption, copied out of ModSecurity's Intervention (which is never kept or cloned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interruption {
    /// The stage whose engine call produced it.
    pub phase: Stage,
    /// HTTP status ModSecurity asked for (403 for CRS).
    pub status: u16,
    /// The interrupting rule's id, from `[id "..."]` in the intervention log (0 when absent).
    pub rule_id: u64,
    /// The intervention log: the interrupting rule's message.
    pub log: String,
}

/// The ModSecurity instance and the lock serialising calls into it.
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
            .with_connector_info("waf-e2e reference WAF service (stand-in for coraza-proxy-wasm)")
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

/// The CRS rule files (`*.conf` of the rules directory), sorted.
pub fn crs_rule_files() -> Result<Vec<PathBuf>> {
    let mut rules: Vec<PathBuf> = std::fs::read_dir(CRS_RULES_DIR)
        .with_context(|| format!("reading the CRS rules directory {CRS_RULES_DIR} (install Debian's modsecurity-crs)"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "conf"))
        .collect();
    rules.sort();
    Ok(rules)
}

/// The CRS in load order: setup, then the sorted rule files.
pub fn crs_files() -> Result<Vec<PathBuf>> {
    let mut files = vec![PathBuf::from(CRS_SETUP)];
    files.extend(crs_rule_files()?);
    Ok(files)
}

/// Compiles one ModSecurity text in a single load (`Include` lines inside it are part of the same load).
pub fn compile_text(text: &str) -> Result<PolicyRules> {
    let mut rules = Rules::new();
    rules.add_plain(text).map_err(|e| anyhow::anyhow!("ModSecurity rejected the directives: {}", e.to_string().trim()))?;
    Ok(PolicyRules { rules })
}

/// An `Include` line for a rule file, refusing paths ModSecurity's parser cannot take.
pub fn include_line(file: &std::path::Path) -> Result<String> {
    let path = file.to_str().with_context(|| format!("rule file path is not UTF-8: {}", file.display()))?;
    anyhow::ensure!(!path.contains(['"', '\n']), "rule file path cannot be quoted for ModSecurity: {path}");
    Ok(format!("Include \"{path}\""))
}

/// Whether ModSecurity accepts a scenario's `directives` loaded after the base settings (and the CRS when
/// `crs`), for `waf-e2e validate`: `Ok(Err(why))` when it rejects them (`why` carries ModSecurity's
/// `Line: N`, counted within `directives`), `Err` when the rules around them cannot be loaded.
pub fn check_directives(crs: bool, directives: &str) -> Result<std::result::Result<(), String>> {
    let mut base = CHECK_BASE.to_string();
    if crs {
        for file in crs_files()? {
            base.push_str(&include_line(&file)?);
            base.push('\n');
        }
    }
    let mut rules = Rules::new();
    rules.add_plain(&base).map_err(|e| anyhow::anyhow!("{e}")).context("loading the base directives and the CRS")?;
    // A separate load, so ModSecurity's line numbers count within the scenario's directives.
    Ok(rules.add_plain(directives).map(|_| ()).map_err(|e| e.to_string().trim().to_string()))
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

/// The connection and request line, as the WAF sees them.
pub struct RequestLine<'r> {
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
}

fn msc<T>(result: modsecurity::ModSecurityResult<T>, what: &str) -> Result<T> {
    result.map_err(|e| anyhow::anyhow!("{e}")).with_context(|| format!("ModSecurity {what}"))
}

impl WafTransaction<'_> {
    fn with<T>(&mut self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let _guard = self.engine.guard();
        let tx = self.tx.as_mut().context("transaction already finished")?;
        f(tx)
    }

    /// Phase 1: connection, request line and headers (pairs in order; a NUL byte cannot reach C, so such a header is skipped).
    pub fn request_headers(&mut self, line: &RequestLine<'_>, headers: &[(String, String)]) -> Result<Option<Interruption>> {
        self.with(|tx| {
            let (cip, cport) = &line.client;
            let (sip, sport) = &line.server;
            msc(tx.process_connection(cip, i32::from(*cport), sip, i32::from(*sport)), "process_connection")?;
            msc(tx.process_uri(line.uri, line.method, line.http_version), "process_uri")?;
            for (name, value) in headers {
                let _ = tx.add_request_header(name, value);
            }
            msc(tx.process_request_headers(), "process_request_headers")?;
            Ok(take_interruption(tx, Stage::RequestHeaders))
        })
    }

    /// Phase 2 with the complete body (empty for a request without one: CRS's 949110 runs in phase 2 even for GET).
    pub fn request_body(&mut self, body: &[u8]) -> Result<Option<Interruption>> {
        self.with(|tx| {
            if !body.is_empty() {
                msc(tx.append_request_body(body), "append_request_body")?;
            }
            msc(tx.process_request_body(), "process_request_body")?;
            Ok(take_interruption(tx, Stage::RequestBody))
        })
    }

    /// Phase 3 with the upstream's status and headers.
    pub fn response_headers(&mut self, status: u16, headers: &[(String, String)]) -> Result<Option<Interruption>> {
        self.with(|tx| {
            for (name, value) in headers {
                let _ = tx.add_response_header(name, value);
            }
            msc(tx.process_response_headers(i32::from(status), "HTTP/1.1"), "process_response_headers")?;
            Ok(take_interruption(tx, Stage::ResponseHeaders))
        })
    }

    /// Phase 4 with the complete response body (possibly empty).
    pub fn response_body(&mut self, body: &[u8]) -> Result<Option<Interruption>> {
        self.with(|tx| {
            if !body.is_empty() {
                msc(tx.append_response_body(body), "append_response_body")?;
            }
            msc(tx.process_response_body(), "process_response_body")?;
            Ok(take_interruption(tx, Stage::ResponseBody))
        })
    }

    /// Feeds the final status when it differs from what was seen (e.g. 403 after an interruption) and runs the logging phase.
    pub fn finish(&mut self, final_status: Option<u16>) -> Result<()> {
        self.with(|tx| {
            if let Some(status) = final_status {
                msc(tx.process_response_headers(i32::from(status), "HTTP/1.1"), "process_response_headers (final status)")?;
                // Interventions after the decision change nothing; read and free them.
                drop(tx.intervention());
            }
            msc(tx.process_logging(), "process_logging")
        })
    }
}

/// Reads the intervention (once) and copies what is needed; the Intervention is dropped here, never cloned.
fn take_interruption(tx: &mut Transaction<'_>, phase: Stage) -> Option<Interruption> {
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

    fn crs_text(extra: &str) -> String {
        let mut text = String::from(ENGINE_PREAMBLE);
        text.push_str("SecRequestBodyAccess On\n");
        for file in crs_files().expect("CRS installed") {
            text.push_str(&include_line(&file).expect("include"));
            text.push('\n');
        }
        text.push_str(extra);
        text
    }

    fn run(rules: &PolicyRules, engine: &Engine, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> (Option<Interruption>, Vec<String>) {
        let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (mut tx, sink) = engine.transaction(rules).expect("transaction");
        let line = RequestLine {
            client: ("127.0.0.1".into(), 40000),
            server: ("127.0.0.1".into(), 10080),
            method,
            uri,
            http_version: "1.1",
        };
        let mut hit = tx.request_headers(&line, &headers).expect("phase 1");
        if hit.is_none() {
            hit = tx.request_body(body).expect("phase 2");
        }
        tx.finish(Some(hit.as_ref().map(|h| h.status).unwrap_or(200))).expect("logging");
        drop(tx);
        (hit, sink.take())
    }

    #[test]
    fn a_detection_only_line_is_overridden_inside_one_load_only_when_it_comes_last() {
        let engine = Engine::new().expect("engine");
        let rule = "SecRule ARGS:x \"@streq 1\" \"id:10001,phase:1,deny,log,msg:'x'\"\n";
        let on_last = compile_text(&format!("SecRuleEngine DetectionOnly\n{ENGINE_PREAMBLE}{rule}")).expect("compile");
        let (hit, _) = run(&on_last, &engine, "GET", "/?x=1", &[("Host", "h")], b"");
        let hit = hit.expect("interrupted");
        assert_eq!((hit.phase, hit.status, hit.rule_id), (Stage::RequestHeaders, 403, 10001));
        let detection_last = compile_text(&format!("{ENGINE_PREAMBLE}SecRuleEngine DetectionOnly\n{rule}")).expect("compile");
        assert_eq!(run(&detection_last, &engine, "GET", "/?x=1", &[("Host", "h")], b"").0, None, "why the service strips the policy's engine lines");
    }

    #[test]
    fn crs_interrupts_a_get_in_the_body_phase_and_reports_detections_through_the_log() {
        let engine = Engine::new().expect("engine");
        let rules = compile_text(&crs_text("")).expect("compile");
        let (hit, logs) = run(&rules, &engine, "GET", "/?id=1'%20OR%20'1'='1", &[("Host", "h"), ("User-Agent", "t"), ("Accept", "*/*")], b"");
        let hit = hit.expect("interrupted");
        assert_eq!((hit.phase, hit.rule_id), (Stage::RequestBody, 949110));
        assert!(logs.iter().any(|l| l.contains("[id \"942100\"]")), "{logs:?}");
        assert!(!logs.iter().any(|l| l.contains("[id \"949110\"]")), "the blocking rule only arrives in the intervention");
    }

    #[test]
    fn non_utf8_bytes_in_matched_data_arrive_hex_escaped_without_aborting() {
        let engine = Engine::new().expect("engine");
        let rules = compile_text(&crs_text("")).expect("compile");
        let (hit, logs) = run(&rules, &engine, "GET", "/?id=%ff%fe'%20or%201=1--%c0%80", &[("Host", "h"), ("User-Agent", "t"), ("Accept", "*/*")], b"");
        assert!(hit.is_some());
        assert!(logs.iter().any(|l| l.contains("\\xff")), "{logs:?}");
    }

    #[test]
    fn a_benign_request_is_not_interrupted() {
        let engine = Engine::new().expect("engine");
        let rules = compile_text(&crs_text("")).expect("compile");
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
    fn a_bad_directive_is_an_error_carrying_modsecuritys_message_and_line() {
        let why = check_directives(false, "SecRuel ARGS x").expect("base loads").expect_err("rejected");
        assert!(why.contains("SecRuel") && why.contains("Line: 1"), "{why}");
        assert!(matches!(check_directives(false, "SecRule ARGS:x \"@streq 1\" \"id:1,phase:1,deny\""), Ok(Ok(()))));
    }
}
