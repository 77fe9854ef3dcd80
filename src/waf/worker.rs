//! The one thread that calls ModSecurity: it owns the engine, the compiled rules and every open
//! transaction, and answers the HTTP handlers' stage requests through a channel (an actor).
//!
//! ModSecurity's `Transaction` borrows its rules, so compiled rules are leaked (`Box::leak`) once per
//! distinct ModSecurity text, and the engine once per process: bounded by the number of policies a run
//! configures (each CRS compile is a few MB). A transaction is dropped when its last stage finishes, and
//! one left unfinished for [`ABANDONED_AFTER`] (a client reset mid-request) is dropped by a sweep.

use super::config::{AuditEngine, EngineMode, PluginConfig, Policy};
use super::engine::{compile_text, Engine, Interruption, LogSink, PolicyRules, RequestLine, WafTransaction};
use super::protocol::{decode_header_map, Stage};
use super::record::{build_record, messages, Transcript};
use super::stats::{decision_stat_name, DecisionStat};
use crate::contract::Mode;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// An unfinished transaction older than this is dropped (its stream was reset).
pub const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// What the filter sent besides the body.
#[derive(Debug, Default, Clone)]
pub struct CalloutHeaders {
    /// `x-waf-e2e-config-length` (request_headers).
    pub config_length: Option<usize>,
    /// `x-waf-e2e-source`.
    pub source: Option<String>,
    /// `x-waf-e2e-destination`.
    pub destination: Option<String>,
    /// `x-waf-e2e-tx` (later stages).
    pub tx: Option<u64>,
    /// `x-waf-e2e-end-of-stream: 1` (response_headers).
    pub end_of_stream: bool,
}

/// The service's answer to one stage.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Answer {
    /// The transaction id (first answer).
    pub tx: Option<u64>,
    /// `Some(status)` to block.
    pub block: Option<u16>,
    /// Stat names to increment by one each.
    pub metrics: Vec<String>,
    /// The Coraza audit JSON to log.
    pub audit: Option<String>,
}

/// One stage request, with where to send the answer.
pub struct Job {
    /// The ReferenceWaf instance asking (its transactions are dropped when it stops).
    pub service: u64,
    /// Which stage.
    pub stage: Stage,
    /// Callout headers.
    pub headers: CalloutHeaders,
    /// Callout body.
    pub body: bytes::Bytes,
    /// Where the answer goes.
    pub reply: tokio::sync::oneshot::Sender<Result<Answer>>,
}

enum Message {
    Job(Job),
    ServiceStopped(u64),
}

struct Handle {
    sender: Mutex<mpsc::Sender<Message>>,
    thread: std::thread::JoinHandle<()>,
    engine: &'static Engine,
}

static WORKER: OnceLock<std::result::Result<Handle, String>> = OnceLock::new();

fn handle() -> Result<&'static Handle> {
    let started = WORKER.get_or_init(|| {
        let engine: &'static Engine = Box::leak(Box::new(Engine::new().map_err(|e| format!("{e:#}"))?));
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("waf-e2e-modsecurity".into())
            .spawn(move || Worker::new(engine).run(receiver))
            .map_err(|e| format!("starting the ModSecurity worker thread: {e}"))?;
        Ok(Handle { sender: Mutex::new(sender), thread, engine })
    });
    started.as_ref().map_err(|e| anyhow::anyhow!("the reference WAF's ModSecurity worker could not start: {e}"))
}

/// Hands a job to the worker (starting it on first use).
pub fn submit(job: Job) -> Result<()> {
    let handle = handle()?;
    let sender = handle.sender.lock().unwrap_or_else(|p| p.into_inner());
    sender.send(Message::Job(job)).map_err(|_| anyhow::anyhow!("the reference WAF's ModSecurity worker thread has exited"))
}

/// Drops the transactions a stopped service left open.
pub fn service_stopped(service: u64) {
    if let Some(Ok(handle)) = WORKER.get() {
        let _ = handle.sender.lock().unwrap_or_else(|p| p.into_inner()).send(Message::ServiceStopped(service));
    }
}

/// `Err` when the worker thread is gone; otherwise libmodsecurity's identification.
pub fn engine_identity() -> Result<String> {
    let handle = handle()?;
    if handle.thread.is_finished() {
        bail!("the reference WAF's ModSecurity worker thread has exited");
    }
    Ok(handle.engine.whoami())
}

struct Live {
    tx: WafTransaction<'static>,
    sink: LogSink,
}

struct Decided {
    stage: Stage,
    hit: Interruption,
}

struct Tx {
    service: u64,
    policy: Arc<Policy>,
    config: Arc<PluginConfig>,
    live: Option<Live>,
    touched: Instant,
    client: (String, u16),
    host: (String, u16),
    method: String,
    uri: String,
    authority: String,
    request_headers: Vec<(String, String)>,
    request_body: Vec<u8>,
    request_body_done: bool,
    status: u16,
    response_headers: Vec<(String, String)>,
    detections: Vec<String>,
    decided: Option<Decided>,
}

struct Worker {
    engine: &'static Engine,
    configs: HashMap<[u8; 32], Arc<PluginConfig>>,
    rules: HashMap<[u8; 32], &'static PolicyRules>,
    txs: HashMap<u64, Tx>,
    next_id: u64,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn address(text: Option<&str>) -> (String, u16) {
    let parsed = text.and_then(|t| t.parse::<std::net::SocketAddr>().ok());
    parsed.map(|a| (a.ip().to_string(), a.port())).unwrap_or_else(|| ("0.0.0.0".to_string(), 0))
}

impl Worker {
    fn new(engine: &'static Engine) -> Worker {
        Worker { engine, configs: HashMap::new(), rules: HashMap::new(), txs: HashMap::new(), next_id: 1 }
    }

    fn run(mut self, receiver: mpsc::Receiver<Message>) {
        loop {
            match receiver.recv_timeout(Duration::from_secs(5)) {
                Ok(Message::Job(job)) => {
                    let answer = self.stage(job.service, job.stage, &job.headers, &job.body);
                    // The handler may have gone (client timeout); nothing to tell then.
                    let _ = job.reply.send(answer);
                }
                Ok(Message::ServiceStopped(service)) => self.txs.retain(|_, tx| tx.service != service),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            self.sweep(Instant::now());
        }
    }

    /// Drops the transactions untouched for [`ABANDONED_AFTER`] at `now` (their streams were reset).
    fn sweep(&mut self, now: Instant) {
        self.txs.retain(|_, tx| now.saturating_duration_since(tx.touched) < ABANDONED_AFTER);
    }

    fn stage(&mut self, service: u64, stage: Stage, headers: &CalloutHeaders, body: &[u8]) -> Result<Answer> {
        if stage == Stage::RequestHeaders {
            return self.begin(service, headers, body);
        }
        let id = headers.tx.with_context(|| format!("stage {} without an x-waf-e2e-tx header", stage.path_name()))?;
        let mut tx = self.txs.remove(&id).with_context(|| format!("unknown transaction {id} (finished, or dropped after {}s unfinished)", ABANDONED_AFTER.as_secs()))?;
        tx.touched = Instant::now();
        let mut answer = Answer::default();
        let finished = match stage {
            Stage::RequestHeaders => unreachable_stage()?,
            Stage::RequestBody => {
                tx.request_body = body.to_vec();
                tx.request_body_done = true;
                let hit = match tx.live.as_mut() {
                    Some(live) => live.tx.request_body(body)?,
                    None => None,
                };
                self.decide(&mut tx, Stage::RequestBody, hit, &mut answer)?
            }
            Stage::ResponseHeaders => {
                let pairs = decode_header_map(body).context("reading the response header map")?;
                tx.status = pairs.iter().find(|(k, _)| k == ":status").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
                tx.response_headers = pairs.into_iter().filter(|(k, _)| !k.starts_with(':')).collect();
                let mut blocked = false;
                if !tx.request_body_done {
                    tx.request_body_done = true;
                    let hit = match tx.live.as_mut() {
                        Some(live) => live.tx.request_body(b"")?,
                        None => None,
                    };
                    blocked = self.decide(&mut tx, Stage::ResponseHeaders, hit, &mut answer)?;
                }
                if !blocked {
                    let hit = match tx.live.as_mut() {
                        Some(live) => live.tx.response_headers(tx.status, &tx.response_headers)?,
                        None => None,
                    };
                    blocked = self.decide(&mut tx, Stage::ResponseHeaders, hit, &mut answer)?;
                }
                if !blocked && headers.end_of_stream {
                    let hit = match tx.live.as_mut() {
                        Some(live) => live.tx.response_body(b"")?,
                        None => None,
                    };
                    blocked = self.decide(&mut tx, Stage::ResponseHeaders, hit, &mut answer)?;
                    if !blocked {
                        self.finish(&mut tx, &mut answer)?;
                    }
                    true
                } else {
                    blocked
                }
            }
            Stage::ResponseBody => {
                let hit = match tx.live.as_mut() {
                    Some(live) => live.tx.response_body(body)?,
                    None => None,
                };
                if !self.decide(&mut tx, Stage::ResponseBody, hit, &mut answer)? {
                    self.finish(&mut tx, &mut answer)?;
                }
                true
            }
        };
        if !finished {
            self.txs.insert(id, tx);
        }
        Ok(answer)
    }

    fn begin(&mut self, service: u64, headers: &CalloutHeaders, body: &[u8]) -> Result<Answer> {
        let length = headers.config_length.context("request_headers without x-waf-e2e-config-length")?;
        anyhow::ensure!(length <= body.len(), "x-waf-e2e-config-length {length} is longer than the body ({} bytes)", body.len());
        let (config_bytes, map) = body.split_at(length);
        let config = match self.configs.entry(digest(config_bytes)) {
            std::collections::hash_map::Entry::Occupied(cached) => cached.get().clone(),
            std::collections::hash_map::Entry::Vacant(slot) => slot.insert(Arc::new(PluginConfig::parse(config_bytes)?)).clone(),
        };
        let pairs = decode_header_map(map).context("reading the request header map")?;
        let header = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let authority = header(":authority");
        let policy = config.for_authority(&authority);
        let mut request_headers: Vec<(String, String)> = pairs.iter().filter(|(k, _)| !k.starts_with(':')).cloned().collect();
        if !authority.is_empty() && !request_headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            // HTTP/2 and Envoy carry the host as :authority; CRS expects a Host header.
            request_headers.push(("host".to_string(), authority.clone()));
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut tx = Tx {
            service,
            policy: policy.clone(),
            config,
            live: None,
            touched: Instant::now(),
            client: address(headers.source.as_deref()),
            host: address(headers.destination.as_deref()),
            method: header(":method"),
            uri: header(":path"),
            authority,
            request_headers,
            request_body: Vec::new(),
            request_body_done: false,
            status: 0,
            response_headers: Vec::new(),
            detections: Vec::new(),
            decided: None,
        };
        let mut answer = Answer { tx: Some(id), ..Answer::default() };
        // Compiled even when Off, so a directive ModSecurity rejects is an error in every mode, as in Coraza.
        let rules = self.rules_for(&policy)?;
        if policy.mode != EngineMode::Off {
            let (waf_tx, sink) = self.engine.transaction(rules)?;
            let mut live = Live { tx: waf_tx, sink };
            let line = RequestLine { client: tx.client.clone(), server: tx.host.clone(), method: &tx.method, uri: &tx.uri, http_version: "1.1" };
            let hit = live.tx.request_headers(&line, &tx.request_headers)?;
            tx.live = Some(live);
            if self.decide(&mut tx, Stage::RequestHeaders, hit, &mut answer)? {
                return Ok(answer);
            }
        }
        self.txs.insert(id, tx);
        Ok(answer)
    }

    fn rules_for(&mut self, policy: &Policy) -> Result<&'static PolicyRules> {
        let key = digest(policy.modsec_text.as_bytes());
        if let Some(rules) = self.rules.get(&key) {
            return Ok(rules);
        }
        let rules: &'static PolicyRules = Box::leak(Box::new(compile_text(&policy.modsec_text).with_context(|| format!("directives_map.{}", policy.name))?));
        self.rules.insert(key, rules);
        Ok(rules)
    }

    /// Applies an interruption found in `stage`; true when the transaction was blocked (and is finished).
    fn decide(&mut self, tx: &mut Tx, stage: Stage, hit: Option<Interruption>, answer: &mut Answer) -> Result<bool> {
        if let Some(live) = tx.live.as_ref() {
            tx.detections.extend(live.sink.take());
        }
        let Some(hit) = hit else { return Ok(false) };
        if tx.decided.is_some() {
            // Only the first would-be interruption of a DetectionOnly transaction counts.
            return Ok(false);
        }
        let rule_id = if hit.rule_id != 0 { hit.rule_id } else { messages(&tx.detections, "").last().map(|m| m.data.id).unwrap_or(0) };
        let kind = if tx.policy.mode == EngineMode::On { DecisionStat::Interruptions } else { DecisionStat::WouldBlock };
        answer.metrics.push(decision_stat_name(kind, rule_id, stage.as_stat(), &tx.config.labels));
        let status = hit.status;
        tx.decided = Some(Decided { stage, hit });
        if tx.policy.mode != EngineMode::On {
            return Ok(false);
        }
        if let Some(live) = tx.live.as_mut() {
            live.tx.finish(Some(status))?;
            tx.detections.extend(live.sink.take());
        }
        tx.status = status;
        answer.block = Some(status);
        answer.audit = self.record(tx)?;
        Ok(true)
    }

    /// The last stage without a block: logging, and the would_block record if any.
    fn finish(&mut self, tx: &mut Tx, answer: &mut Answer) -> Result<()> {
        if let Some(live) = tx.live.as_mut() {
            live.tx.finish(None)?;
            tx.detections.extend(live.sink.take());
        }
        if tx.decided.is_some() {
            answer.audit = self.record(tx)?;
        }
        Ok(())
    }

    fn record(&self, tx: &Tx) -> Result<Option<String>> {
        let Some(decided) = tx.decided.as_ref() else { return Ok(None) };
        if tx.policy.audit == AuditEngine::Off {
            return Ok(None);
        }
        let mode = if tx.policy.mode == EngineMode::On { Mode::On } else { Mode::DetectionOnly };
        let record = build_record(&Transcript {
            client: (&tx.client.0, tx.client.1),
            host: (&tx.host.0, tx.host.1),
            method: &tx.method,
            uri: &tx.uri,
            http_version: "1.1",
            request_headers: &tx.request_headers,
            request_body: &tx.request_body,
            status: tx.status,
            response_headers: &tx.response_headers,
            mode,
            interrupted: mode == Mode::On,
            detections: &tx.detections,
            intervention_log: &decided.hit.log,
            crs: tx.policy.crs,
            server: &tx.authority,
            parts: &tx.policy.parts,
        });
        tracing::debug!(stage = decided.stage.path_name(), rule = decided.hit.rule_id, "reference WAF decision recorded");
        serde_json::to_string(&record).map(Some).context("serialising the audit record")
    }
}

fn unreachable_stage() -> Result<bool> {
    bail!("request_headers is handled by `begin`")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waf::protocol::encode_header_map;

    fn begin(worker: &mut Worker) -> u64 {
        let config = br#"{"directives_map":{"d":["SecRule ARGS:x \"@streq 1\" \"id:7,phase:2,deny\""]},"default_directives":"d"}"#;
        let mut body = config.to_vec();
        body.extend(encode_header_map(&[(":method", "GET"), (":path", "/?x=2"), (":authority", "h")]));
        let headers = CalloutHeaders { config_length: Some(config.len()), ..CalloutHeaders::default() };
        worker.begin(1, &headers, &body).expect("request_headers").tx.expect("a transaction id")
    }

    #[test]
    fn a_transaction_left_unfinished_for_sixty_seconds_is_dropped_and_a_finished_one_at_once() {
        let engine: &'static Engine = Box::leak(Box::new(Engine::new().expect("engine")));
        let mut worker = Worker::new(engine);
        let abandoned = begin(&mut worker);
        worker.sweep(Instant::now() + ABANDONED_AFTER - Duration::from_secs(1));
        assert!(worker.txs.contains_key(&abandoned), "still within its 60 s");
        worker.sweep(Instant::now() + ABANDONED_AFTER);
        assert!(worker.txs.is_empty(), "dropped after 60 s unfinished");

        let finished = begin(&mut worker);
        let next = CalloutHeaders { tx: Some(finished), end_of_stream: true, ..CalloutHeaders::default() };
        let answer = worker.stage(1, Stage::ResponseHeaders, &next, &encode_header_map(&[(":status", "200")])).expect("response_headers");
        assert_eq!(answer.block, None);
        assert!(worker.txs.is_empty(), "the last stage drops the transaction");
        let err = worker.stage(1, Stage::ResponseBody, &next, b"").expect_err("unknown afterwards");
        assert!(format!("{err:#}").contains(&format!("unknown transaction {finished}")), "{err:#}");
    }
}
