//! One mode of a corpus run on a stack: install the mode's policy once, take the counter baseline,
//! send every request (concurrently), flush the audit log once, take the two scrapes, and collect
//! per request its answer, its audit records and whether the backend saw it.

use super::ftw::FtwTest;
use super::send::{self, Answer};
use super::{policy, Mode};
use crate::assert::counters::Snapshot;
use crate::assert::prom::PromClient;
use crate::assert::scrape;
use crate::audit::AuditRecord;
use crate::runner::audit_wait;
use crate::stack::local::LocalStack;
use crate::stack::{BackendReach, ScenarioEnv, Stack};
use crate::timeouts::Timeouts;
use anyhow::{Context, Result};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One request of a mode: which test and stage it belongs to, what came back, what was recorded.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Index of the test in the run's list.
    pub test: usize,
    /// Index of the stage in the test.
    pub stage: usize,
    /// Its `x-waf-e2e-id`.
    pub correlation_id: String,
    /// The request line as sent, for messages.
    pub request_line: String,
    /// The answer.
    pub answer: Answer,
    /// Answers to further requests Envoy parsed from the same bytes (smuggling tests).
    pub pipelined: Vec<u16>,
    /// The audit records carrying its id.
    pub records: Vec<AuditRecord>,
    /// How far the backend saw it.
    pub reach: BackendReach,
}

impl Sent {
    /// Whether the WAF filter ran for it: it left a record, or Envoy passed it on to the backend.
    /// A request with neither was answered by Envoy itself before any filter ran.
    pub fn reached_filter(&self) -> bool {
        !self.records.is_empty() || self.reach != BackendReach::Never
    }
}

/// Everything one mode observed.
pub struct ModeObservation {
    /// The mode.
    pub mode: Mode,
    /// Where its policy was installed.
    pub env: ScenarioEnv,
    /// Every request, in the order they were built.
    pub sent: Vec<Sent>,
    /// Counter snapshots: the baseline, then the first scrape after the traffic and one more.
    pub baseline: Snapshot,
    /// The two scrapes after the traffic.
    pub rounds: [Snapshot; 2],
    /// Audit lines of this policy that name no request of this run, or do not parse.
    pub stray_records: Vec<String>,
    /// How the audit log was known to be complete.
    pub flushed_by: String,
    /// Envoy's own counters of the gateway listener that moved during the traffic (name -> increase):
    /// they corroborate the requests Envoy answered itself (codec errors, no route).
    pub envoy_counters: BTreeMap<String, f64>,
    /// From the first request to the last answer.
    pub traffic: Duration,
    /// From installing the policy to the second scrape and the audit read.
    pub wall: Duration,
}

/// Runs the tests' stages once in `mode` on `stack` (installs and removes the mode's policy).
pub async fn observe(stack: &LocalStack, tests: &[FtwTest], mode: Mode, run_id: &str, concurrency: usize, timeouts: &Timeouts) -> Result<ModeObservation> {
    let started = Instant::now();
    let scenario = policy::scenario(mode)?;
    // Three quarters of the corpus is HTTP/1.0, which Envoy Gateway's default listener answers 426:
    // the corpus gateway carries a ClientTrafficPolicy with `http1.http10` (applied with the install).
    stack.set_client_traffic(crate::envoy::xds::ClientTraffic { accept_http10: true }).await?;
    let env = stack.install_catch_all(&scenario).await.with_context(|| format!("install the corpus policy {}", policy::policy_name(mode)))?;
    let observed = observe_installed(stack, tests, mode, run_id, concurrency, timeouts, env.clone(), started).await;
    let removed = stack.remove_scenario(&env).await;
    let observed = observed?;
    removed?;
    Ok(observed)
}

#[allow(clippy::too_many_arguments)] // one call site; the pieces are the run's, not a bundle
async fn observe_installed(stack: &LocalStack, tests: &[FtwTest], mode: Mode, run_id: &str, concurrency: usize, timeouts: &Timeouts, env: ScenarioEnv, started: Instant) -> Result<ModeObservation> {
    let endpoints = stack.endpoints();
    let prom = PromClient::new(&endpoints.prometheus_url)?;
    let targets = scrape::target_up(&prom, &endpoints.scrape_pool, timeouts.target_up).await?;
    let before = prom.server_time().await?;
    let baseline_round = scrape::round_after(&prom, &targets, before, timeouts.next_scrape).await.context("baseline scrape")?;
    let baseline = crate::runner::scenario::snapshot(&prom, &targets, baseline_round).await?;
    let cursor = stack.audit_cursor().await.context("read the audit log position before the corpus traffic")?;
    let envoy_before = listener_counters(&stack.raw_stats().await.context("read Envoy's counters before the corpus traffic")?);
    let gateway: SocketAddr = endpoints.gateway_url.trim_start_matches("http://").parse().with_context(|| format!("the gateway URL {}", endpoints.gateway_url))?;

    let mut planned = Vec::new();
    for (t, test) in tests.iter().enumerate() {
        for (s, stage) in test.stages.iter().enumerate() {
            let id = format!("{run_id}-{}-{t}-{s}", mode.as_str());
            let bytes = send::request_bytes(&stage.input, &id);
            let line = String::from_utf8_lossy(bytes.split(|b| *b == b'\n').next().unwrap_or_default()).trim_end().to_string();
            let head = line.trim_start().to_ascii_uppercase().starts_with("HEAD ");
            planned.push((t, s, id, bytes, line, head));
        }
    }
    let traffic_started = Instant::now();
    let answers: Vec<send::Exchange> = futures::stream::iter(planned.iter().map(|(_, _, _, bytes, _, head)| send::send(gateway, bytes, *head, timeouts.request)))
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let traffic_done = Instant::now();
    let traffic = traffic_done - traffic_started;
    let flush_mark = stack.audit_flushes().await.context("read the audit log's flush count after the traffic")?;
    let envoy_after = listener_counters(&stack.raw_stats().await.context("read Envoy's counters after the corpus traffic")?);
    let envoy_counters = envoy_after
        .iter()
        .map(|(k, v)| (k.clone(), v - envoy_before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect();

    let after = prom.server_time().await?;
    let first = scrape::round_after(&prom, &targets, after, timeouts.next_scrape).await.context("first scrape after the corpus traffic")?;
    let first_snapshot = crate::runner::scenario::snapshot(&prom, &targets, first).await?;
    let second = scrape::round_after(&prom, &targets, first.at, timeouts.next_scrape).await.context("confirming scrape")?;
    let second_snapshot = crate::runner::scenario::snapshot(&prom, &targets, second).await?;
    let read = audit_wait::read(stack, &cursor, &[], traffic_done, flush_mark, timeouts).await?;

    let ids: Vec<String> = planned.iter().map(|p| p.2.clone()).collect();
    let reach = stack.backend_reach(&ids).await?.context("the local stack's backend records what reached it")?;
    let (mut by_id, stray_records) = records_by_id(&read.lines.lines, &env, &ids);
    let sent = planned
        .into_iter()
        .zip(answers)
        .map(|((test, stage, correlation_id, _, request_line, _), exchange)| Sent {
            test,
            stage,
            records: by_id.remove(&correlation_id).unwrap_or_default(),
            reach: reach.get(&correlation_id).copied().unwrap_or(BackendReach::Never),
            correlation_id,
            request_line,
            answer: exchange.answer,
            pipelined: exchange.pipelined,
        })
        .collect();
    Ok(ModeObservation {
        mode,
        env,
        sent,
        baseline,
        rounds: [first_snapshot, second_snapshot],
        stray_records,
        flushed_by: read.flushed_by,
        envoy_counters,
        traffic,
        wall: started.elapsed(),
    })
}

/// The records of this policy by correlation id; a record of the policy without an id of this run,
/// or a line of this run that does not parse, is a problem of its own.
fn records_by_id(lines: &[(String, String)], env: &ScenarioEnv, ids: &[String]) -> (BTreeMap<String, Vec<AuditRecord>>, Vec<String>) {
    let known: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let sorted = crate::audit::sort_lines(lines, &known, (&env.namespace, &env.policy), "this run");
    let mut by_id: BTreeMap<String, Vec<AuditRecord>> = BTreeMap::new();
    for (_, id, parsed) in sorted.matched {
        by_id.entry(id).or_default().push(parsed.record);
    }
    (by_id, sorted.problems)
}

/// Envoy's own counters of the gateway listener's HTTP connection manager that tell who answered:
/// requests, responses by class, codec (protocol) errors, requests without a route.
pub fn listener_counters(exposition: &str) -> BTreeMap<String, f64> {
    let prefix = format!("envoy_http_conn_manager_prefix=\"{}\"", crate::envoy::xds::STAT_PREFIX);
    let wanted = ["envoy_http_downstream_rq_total", "envoy_http_downstream_rq_xx", "envoy_http_downstream_cx_protocol_error", "envoy_http_no_route"];
    let mut out = BTreeMap::new();
    for line in exposition.lines().filter(|l| l.contains(&prefix)) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let name = series.split('{').next().unwrap_or_default();
        if !wanted.contains(&name) {
            continue;
        }
        let key = match series.split("envoy_response_code_class=\"").nth(1).and_then(|r| r.split('"').next()) {
            Some(class) => format!("{}{class}xx", name.trim_end_matches("xx").trim_start_matches("envoy_http_")),
            None => name.trim_start_matches("envoy_http_").to_string(),
        };
        if let Ok(v) = value.parse::<f64>() {
            out.insert(key, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::listener_counters;

    #[test]
    fn the_gateway_listeners_own_counters_are_read_by_name_and_response_class() {
        let raw = "envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"http-10080\"} 12\n\
envoy_http_downstream_rq_xx{envoy_response_code_class=\"4\",envoy_http_conn_manager_prefix=\"http-10080\"} 3\n\
envoy_http_downstream_cx_protocol_error{envoy_http_conn_manager_prefix=\"http-10080\"} 2\n\
envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"admin\"} 99\n\
envoy_http_downstream_cx_total{envoy_http_conn_manager_prefix=\"http-10080\"} 14\n";
        let c = listener_counters(raw);
        assert_eq!(c.get("downstream_rq_total"), Some(&12.0));
        assert_eq!(c.get("downstream_rq_4xx"), Some(&3.0));
        assert_eq!(c.get("downstream_cx_protocol_error"), Some(&2.0));
        assert_eq!(c.len(), 3, "the admin listener and other stats are left out: {c:?}");
    }
}
