//! Running one scenario on a stack: install, baseline, traffic, two scrapes, audit, verdict.

use super::gate::{ExclusiveUse, GateUse};
use super::{audit_wait, expect, reach, traffic};
use crate::assert::audit::{self, ObservedRecord};
use crate::assert::counters::{self, CounterExpectation, Snapshot};
use crate::assert::prom::{quote, PromClient};
use crate::assert::scrape::{self, ScrapeRound, ScrapeTargets};
use crate::contract::{sanitize, DECISIONS, WAF_SERIES_REGEX};
use crate::outcome::Timings;
use crate::scenario::Scenario;
use crate::audit::AuditLines;
use crate::stack::{ScenarioEnv, Stack};
use crate::timeouts::Timeouts;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::time::Instant;

/// What one scenario observed, before the verdict is drawn.
pub struct Observation {
    /// The stack-side placement.
    pub env: ScenarioEnv,
    /// Failures found, each a self-contained message.
    pub failures: Vec<String>,
    /// Expectations this filter has no value for (reported as not checked, never as passed).
    pub not_checked: Vec<String>,
    /// Facts worth reporting even on a pass: backend reach, how the audit wait ended.
    pub notes: Vec<String>,
    /// Phase timings.
    pub timings: Timings,
}

/// Runs `scenario` on `stack`: infrastructure problems are `Err` (a [`crate::error::BrokenResource`]
/// among them is a failed verdict), expectation failures are in the observation.
///
/// An exclusive scenario comes with its `window` open and closes it after the confirming scrape;
/// any other shares the gateway through `gate` while it sends its traffic.
pub async fn observe(stack: &dyn Stack, scenario: &Scenario, run_id: &str, timeouts: &Timeouts, env: ScenarioEnv, gate: GateUse<'_>, window: Option<ExclusiveUse<'_>>) -> Result<Observation> {
    let endpoints = stack.endpoints();
    let prom = PromClient::new(&endpoints.prometheus_url)?;
    let filter = stack.filter();
    let expected = expect::resolve(scenario, &env, &filter.flavour);
    let mut timings = Timings::default();
    // The filter is the run's, in its header and reports (RunInfo::filter), not repeated per scenario.
    let mut notes = Vec::new();

    let started = Instant::now();
    let targets = scrape::target_up(&prom, &endpoints.scrape_pool, timeouts.target_up).await?;
    // Inside an exclusive window, any scrape that began after the last request through the gate
    // ended saw the gateway as this scenario's traffic will find it: after a previous exclusive
    // scenario, its own confirming scrape serves as this baseline. `quiet_for` is measured before
    // the server is asked, so the instant computed is never earlier than the real one.
    let quiet_for = window.as_ref().and_then(ExclusiveUse::quiet_for);
    let before = prom.server_time().await? - quiet_for.map_or(0.0, |q| q.as_secs_f64());
    let baseline_round = scrape::round_after(&prom, &targets, before, timeouts.next_scrape).await.context("baseline scrape")?;
    let baseline = snapshot(&prom, &targets, baseline_round).await?;
    let mut failures = stored_beyond_contract(&prom, &targets, baseline_round, &endpoints.scrape_pool).await?;
    let cursor = stack.audit_cursor().await.context("read audit log position before traffic")?;
    timings.baseline = started.elapsed();

    let (sending, waited) = gate.send(&window).await;
    timings.gate = waited;
    let started = Instant::now();
    let sent = traffic::drive(&endpoints.gateway_url, scenario, &env, run_id, timeouts.request).await?;
    let traffic_done = Instant::now();
    drop(sending);
    timings.traffic = traffic_done - started;
    let flush_mark = stack.audit_flushes().await.context("read the audit log's flush count after the traffic")?;

    let after = prom.server_time().await?;
    let first = scrape::round_after(&prom, &targets, after, timeouts.next_scrape).await.context("first scrape after the traffic")?;
    let first_snapshot = snapshot(&prom, &targets, first).await?;
    timings.settle = traffic_done.elapsed();
    let started = Instant::now();
    let second = scrape::round_after(&prom, &targets, first.at, timeouts.next_scrape).await.context("confirming scrape")?;
    let second_snapshot = snapshot(&prom, &targets, second).await?;
    timings.confirm = started.elapsed();
    let passed_over: u32 = [baseline_round, first, second].iter().map(|r| r.timed_out_before).sum();
    if passed_over > 0 {
        notes.push(format!("{passed_over} scrape(s) timed out and were passed over; every value compared comes from a healthy scrape"));
    }
    if let Some(window) = window {
        notes.push(format!("held the gateway alone for {:.2}s, baseline to confirming scrape (exclusive: gateway-wide series are exact)", window.release().as_secs_f64()));
    }

    let started = Instant::now();
    let expected_ids = audit::expected_ids(&expected.audit, &sent.sent);
    let read = audit_wait::read(stack, &cursor, &expected_ids, traffic_done, flush_mark, timeouts).await?;
    timings.audit = started.elapsed();
    timings.audit_latency = read.latency;
    notes.push(format!("audit log read after: {}", read.flushed_by));

    failures.extend(sent.status_failures.clone());
    let rounds = [first_snapshot, second_snapshot];
    let raw = stack.raw_stats().await.context("read the proxy's raw counters")?;
    for e in &expected.counters {
        if let Err(msg) = counters::check(e, &baseline, &rounds) {
            failures.push(with_raw_diagnosis(msg, e, &raw, &env));
        }
    }
    let accounted: Vec<CounterExpectation> = expected.counters.iter().chain(&expected.unchecked_counters).cloned().collect();
    failures.extend(unexpected_decisions(scenario, &env, &accounted, &baseline, &rounds[1]));
    if scenario.expect.no_decisions {
        failures.extend(raw_decisions_of_policy(&raw, &env));
    }
    let (records, broken) = audit_records(&read.lines, &sent.sent, &env);
    failures.extend(broken);
    let audit_failures = audit::check(&expected.audit, &sent.sent, &records);
    if !read.missing.is_empty() {
        for hint in stack.audit_hints() {
            failures.push(format!("expected audit records never reached the audit log; the rendered resources explain it: {hint}"));
        }
    }
    failures.extend(audit_failures);
    let (reach_failures, reach_notes) = reach::check(stack, &sent.sent, &expected.reaches_backend, &expected.audit).await?;
    failures.extend(reach_failures);
    notes.extend(reach_notes);

    if !failures.is_empty() {
        failures.push(observed_context(&raw, &rounds[1], &records));
    }
    Ok(Observation { env, failures, not_checked: expected.not_checked, notes, timings })
}

/// Every `tigera_waf_*` series of the scrape job as of `round`.
pub async fn snapshot(prom: &PromClient, targets: &ScrapeTargets, round: ScrapeRound) -> Result<Snapshot> {
    let query = format!("{{__name__=~{},job={}}}", quote(WAF_SERIES_REGEX), quote(&targets.job));
    let series = prom.instant(&query, Some(round.at)).await.with_context(|| format!("query {query}"))?;
    Ok(Snapshot { at: round.at, series })
}

/// Series the scrape job stores beyond the contract's (and Prometheus' own `up`/`scrape_*`): a
/// PodMonitor whose `keep` lets Envoy's own stats through fails, naming the first offenders.
async fn stored_beyond_contract(prom: &PromClient, targets: &ScrapeTargets, round: ScrapeRound, pool: &str) -> Result<Vec<String>> {
    let query = format!("count by (__name__) ({{job={},__name__!~{}}})", quote(&targets.job), quote(&format!("{WAF_SERIES_REGEX}|up|scrape_.+")));
    let offenders = prom.instant(&query, Some(round.at)).await.with_context(|| format!("query {query}"))?;
    if offenders.is_empty() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = offenders.iter().map(|s| s.labels.get("__name__").cloned().unwrap_or_default()).collect();
    names.sort();
    let resource = match pool.strip_prefix("podMonitor/").and_then(|rest| rest.rsplit_once('/')) {
        Some((ns_name, _)) => format!("PodMonitor {ns_name}"),
        None => format!("scrape job {pool}"),
    };
    Ok(vec![format!(
        "{resource} lets series beyond the contract into Prometheus: job {} stores {} metric name(s) besides tigera_waf_* (its metricRelabelings must keep only the WAF counters), first: {}",
        targets.job, names.len(), names.iter().take(5).cloned().collect::<Vec<_>>().join(", "))])
}

/// A failed decision expectation with no series at all, explained from the proxy's raw counters:
/// did the WAF decide nothing, or did the relabeling lose what it counted?
fn with_raw_diagnosis(msg: String, e: &CounterExpectation, raw: &str, env: &ScenarioEnv) -> String {
    if e.metric != DECISIONS {
        return msg;
    }
    let counted = raw_decision_lines(raw, &env.policy);
    if counted.is_empty() {
        format!("{msg}    the proxy's raw counters hold no decision for policy {}: the WAF decided nothing for this traffic (the relabeling is not at fault)\n", env.policy)
    } else {
        format!("{msg}    the proxy DID count decisions for policy {} ({}), so the PodMonitor's relabeling lost or changed them\n", env.policy, counted.join("; "))
    }
}

/// Decision series of this scenario's policy that no expectation accounts for and that moved (or appeared).
fn unexpected_decisions(scenario: &Scenario, env: &ScenarioEnv, expectations: &[CounterExpectation], baseline: &Snapshot, last: &Snapshot) -> Vec<String> {
    let scope = BTreeMap::from([
        ("policy".to_string(), sanitize(&env.policy)),
        ("namespace".to_string(), sanitize(&env.namespace)),
    ]);
    let decision_expectations: Vec<&CounterExpectation> = expectations.iter().filter(|e| e.metric == DECISIONS).collect();
    let mut out = Vec::new();
    for s in last.matching(DECISIONS, &scope) {
        let accounted = decision_expectations.iter().any(|e| e.labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)));
        let before = baseline.series.iter().find(|b| b.labels == s.labels).map_or(0.0, |b| b.value);
        if !accounted && s.value != before {
            let why = if scenario.expect.no_decisions { "the scenario expects no decision series" } else { "no expectation names it" };
            out.push(format!(
                "unexpected decision series {} rose from {before} to {} ({why})",
                counters::format_series(s.name(), &s.labels), s.value
            ));
        }
    }
    out
}

/// Decision counters the proxy itself exposes for this policy: a check of `no_decisions` that does not depend on the relabeling.
fn raw_decisions_of_policy(raw: &str, env: &ScenarioEnv) -> Vec<String> {
    raw_decision_lines(raw, &env.policy)
        .into_iter()
        .map(|l| format!("the proxy counted a decision for policy {} although the scenario expects none: {l}", env.policy))
        .collect()
}

/// Exposition lines of decision counters whose stat name carries `policy=<policy>` (sanitised).
pub fn raw_decision_lines<'a>(exposition: &'a str, policy: &str) -> Vec<&'a str> {
    let key = format!("_policy_{}", sanitize(policy));
    exposition
        .lines()
        .filter(|l| l.starts_with("waf_filter_tx_interruptions_") || l.starts_with("waf_filter_tx_would_block_"))
        .filter(|l| {
            let name = l.split('{').next().unwrap_or(l);
            name.match_indices(&key).any(|(i, _)| {
                let rest = &name[i + key.len()..];
                rest.is_empty() || crate::contract::METRIC_LABEL_KEYS.iter().any(|k| rest.starts_with(&format!("_{k}_")))
            })
        })
        .collect()
}

/// Parses the audit lines that belong to this scenario's requests; broken ones, and records of this
/// policy that carry no correlation id of this scenario, become failures.
fn audit_records(lines: &AuditLines, sent: &[audit::SentRequest], env: &ScenarioEnv) -> (Vec<ObservedRecord>, Vec<String>) {
    let ids: std::collections::HashSet<&str> = sent.iter().map(|s| s.correlation_id.as_str()).collect();
    let sorted = crate::audit::sort_lines(&lines.lines, &ids, (&env.namespace, &env.policy), "this scenario");
    let records = sorted.matched.into_iter().map(|(source, id, parsed)| ObservedRecord {
        source,
        correlation_id: Some(id),
        vm: parsed.vm.clone(),
        decision: parsed.record.decision(),
        rule_ids: parsed.record.rule_ids(),
        uri: parsed.record.transaction.request.uri.clone(),
    }).collect();
    (records, sorted.problems)
}

/// What a person needs beside the failures: every WAF series, the proxy's raw counters, the audit records.
fn observed_context(raw: &str, last: &Snapshot, records: &[ObservedRecord]) -> String {
    let mut out = format!("observed tigera_waf_* series at {}:\n{}", crate::assert::prom::readable_time(last.at), counters::list(last));
    let waf: Vec<&str> = raw.lines().filter(|l| l.starts_with(crate::contract::RAW_PREFIX)).collect();
    out.push_str("raw WAF counters the proxy exposes (/stats/prometheus):\n");
    if waf.is_empty() {
        out.push_str("    (none)\n");
    }
    for l in waf {
        out.push_str(&format!("    {l}\n"));
    }
    out.push_str(&format!("audit records of this scenario's requests: {}\n", records.len()));
    for r in records {
        let decision = r.decision.map_or("none".to_string(), |d| d.to_string());
        out.push_str(&format!("    {} decision={decision} rule_ids={:?} uri={}\n", r.correlation_id.as_deref().unwrap_or("?"), r.rule_ids, r.uri));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::raw_decision_lines;

    const RAW: &str = "waf_filter_tx_total{} 9
waf_filter_tx_interruptions_ruleid_949110_phase_http_request_body_policy_shop_namespace_a{} 1
waf_filter_tx_would_block_ruleid_949110_phase_http_request_body_namespace_a_policy_shop_two{} 2
waf_filter_tx_would_block_ruleid_1_phase_http_request_headers_namespace_a_policy_shop{} 3
";

    #[test]
    fn raw_decision_counters_are_attributed_to_a_policy_by_whole_value() {
        let lines = raw_decision_lines(RAW, "shop");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().all(|l| !l.contains("shop_two")));
        assert_eq!(raw_decision_lines(RAW, "shop-two").len(), 1);
        assert!(raw_decision_lines(RAW, "other").is_empty());
    }
}
