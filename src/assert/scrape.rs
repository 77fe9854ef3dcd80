//! Scrape rounds: waiting for the proxy targets to be `up`, and for a scrape newer than an instant.

use super::prom::{quote, DroppedTarget, PromClient, Target};
use crate::error::BrokenResource;
use crate::wait::{self, Check};
use anyhow::Result;
use std::time::Duration;

/// The targets of one scrape pool, once they are all up.
#[derive(Debug, Clone)]
pub struct ScrapeTargets {
    /// The pool (`podMonitor/<ns>/<name>/0`).
    pub pool: String,
    /// The `job` label its series carry (the operator sets `<ns>/<name>`).
    pub job: String,
    /// The targets, all healthy when returned.
    pub targets: Vec<Target>,
}

/// A completed scrape round: every target of the pool scraped at or after `after`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScrapeRound {
    /// The instant to evaluate queries at: the newest scrape timestamp of the round.
    pub at: f64,
    /// Rounds passed over before this one because a scrape in them timed out (see [`round_after`]).
    pub timed_out_before: u32,
}

/// Waits until the pool has at least one target and all its targets report `up == 1`.
///
/// When discovery found the proxy but the PodMonitor's relabeling dropped it (its selector or port
/// matches no proxy), that is the resource under test failing: a [`BrokenResource`] naming the
/// PodMonitor, with the proxy's labels and ports beside it.
pub async fn target_up(prom: &PromClient, pool: &str, timeout: Duration) -> Result<ScrapeTargets> {
    let condition = format!("scrape pool {pool} to have its targets up");
    let outcome = wait::until(&condition, timeout, || async {
        let targets = prom.targets(pool).await?;
        if targets.is_empty() {
            let dropped: Vec<DroppedTarget> = prom.dropped_targets(pool).await?.into_iter().filter(is_gateway_proxy).collect();
            if !dropped.is_empty() {
                return Ok(Check::Met(Err(selects_no_proxy(pool, &dropped))));
            }
            return Ok(Check::NotYet(format!("no active target in pool {pool}, and no Envoy Gateway proxy among its dropped ones")));
        }
        let unhealthy: Vec<String> = targets
            .iter()
            .filter(|t| t.health != "up")
            .map(|t| format!("{} health={} lastError={:?}", t.scrape_url, t.health, t.last_error))
            .collect();
        if !unhealthy.is_empty() {
            return Ok(Check::NotYet(unhealthy.join("; ")));
        }
        let job = targets[0].labels.get("job").cloned().unwrap_or_default();
        let ups = prom.instant(&format!("up{{job={}}}", quote(&job)), None).await?;
        if ups.len() < targets.len() || ups.iter().any(|s| s.value != 1.0) {
            return Ok(Check::NotYet(format!("up{{job={job:?}}} = {:?}", ups.iter().map(|s| s.value).collect::<Vec<_>>())));
        }
        Ok(Check::Met(Ok(ScrapeTargets { pool: pool.to_string(), job, targets })))
    })
    .await?;
    Ok(outcome?)
}

/// Whether discovery saw this target on an Envoy Gateway proxy pod (the labels every proxy carries).
fn is_gateway_proxy(t: &DroppedTarget) -> bool {
    let label = |k: &str| t.discovered_labels.get(&format!("__meta_kubernetes_pod_label_{k}")).map(String::as_str);
    label("app_kubernetes_io_component") == Some("proxy") && label("app_kubernetes_io_managed_by") == Some("envoy-gateway")
}

/// The failure for a PodMonitor whose selector or port drops every proxy the discovery found.
pub fn selects_no_proxy(pool: &str, dropped: &[DroppedTarget]) -> BrokenResource {
    let resource = match pool.strip_prefix("podMonitor/").and_then(|rest| rest.rsplit_once('/')) {
        Some((ns_name, _index)) => format!("PodMonitor {ns_name}"),
        None => format!("scrape job {pool}"),
    };
    let mut problem = format!("selects no proxy pod: Prometheus discovered {} target(s) for scrape pool {pool} and its relabeling dropped every one (the selector or the port does not match). What the proxies offer:", dropped.len());
    for t in dropped.iter().take(3) {
        let l = &t.discovered_labels;
        let pod = format!("{}/{}", l.get("__meta_kubernetes_namespace").map_or("?", String::as_str), l.get("__meta_kubernetes_pod_name").map_or("?", String::as_str));
        let labels: Vec<String> = l.iter()
            .filter_map(|(k, v)| k.strip_prefix("__meta_kubernetes_pod_label_").map(|k| format!("{k}={v}")))
            .collect();
        let port = l.get("__meta_kubernetes_pod_container_port_name").map_or("?", String::as_str);
        let number = l.get("__meta_kubernetes_pod_container_port_number").map_or("?", String::as_str);
        problem.push_str(&format!("\n    pod {pod}: labels (sanitised) {{{}}}, container port {port:?} ({number})", labels.join(", ")));
    }
    BrokenResource { resource, problem }
}

/// How far Prometheus may move a scrape's timestamp towards its schedule (`ScrapeTimestampTolerance`,
/// 2 ms in 2.x): a stamp must exceed the instant by more than this to prove the scrape began after it.
pub const TIMESTAMP_TOLERANCE: f64 = 0.002;

/// Waits for a scrape round that started strictly after `after` (Prometheus server time) on every target.
///
/// A round in which a scrape failed is a failure at once, naming the target and its error, with
/// one exception: a scrape that timed out (`context deadline exceeded`, or already followed by a
/// healthy one) is passed over and the next round awaited, within `timeout`. Envoy serves
/// `/stats/prometheus` from its main thread, which also applies listener updates: with dozens of
/// scenarios installing at once, one scrape can outlast a short scrape timeout (measured at 500 ms
/// with 50 scenarios on 2 CPUs). A timed-out scrape stores no counter value, only `up == 0`, so
/// passing over it changes no count; every value compared still comes from a healthy scrape.
pub async fn round_after(prom: &PromClient, targets: &ScrapeTargets, after: f64, timeout: Duration) -> Result<ScrapeRound> {
    let job = quote(&targets.job);
    let expected = targets.targets.len();
    let state = std::cell::Cell::new((after, 0u32));
    let condition = format!("a healthy scrape of job {} newer than t={after:.3}", targets.job);
    let found = wait::until(&condition, timeout, || async {
        let (after, timed_out) = state.get();
        let stamps = prom.instant(&format!("timestamp(up{{job={job}}})"), None).await?;
        let newer: Vec<f64> = stamps.iter().map(|s| s.value).filter(|t| *t > after + TIMESTAMP_TOLERANCE).collect();
        if stamps.len() < expected || newer.len() < stamps.len() {
            return Ok(Check::NotYet(format!("{} of {expected} target(s) scraped since t={after:.3}", newer.len())));
        }
        let round = ScrapeRound { at: newer.iter().copied().fold(f64::MIN, f64::max), timed_out_before: timed_out };
        let ups = prom.instant(&format!("up{{job={job}}}"), Some(round.at)).await?;
        let Some(down) = ups.iter().find(|s| s.value != 1.0) else { return Ok(Check::Met(Ok(round))) };
        let instance = down.labels.get("instance").cloned().unwrap_or_default();
        let pool = prom.targets(&targets.pool).await?;
        let target = pool.iter().find(|t| t.labels.get("instance") == Some(&instance));
        if target.is_some_and(|t| passed_over(&t.last_error)) {
            state.set((round.at, timed_out + 1));
            return Ok(Check::NotYet(format!("the scrape of {instance} at t={:.3} timed out; waiting for the next", round.at)));
        }
        let detail = pool.iter().map(|t| format!("{} health={} lastError={:?}", t.scrape_url, t.health, t.last_error)).collect::<Vec<_>>().join("; ");
        let earlier = if timed_out > 0 { format!(" ({timed_out} earlier round(s) timed out)") } else { String::new() };
        Ok(Check::Met(Err(format!("scrape of {instance:?} failed (up == 0) at t={:.3}{earlier}: {detail}", round.at))))
    })
    .await?;
    found.map_err(|msg| anyhow::anyhow!(msg))
}

/// Whether a failed scrape, whose target now reports `last_error`, may be passed over: it timed
/// out, or the target has scraped healthily since (a failure that did not last one interval).
fn passed_over(last_error: &str) -> bool {
    last_error.is_empty() || last_error.contains("context deadline exceeded")
}

#[cfg(test)]
mod tests {
    use super::passed_over;

    #[test]
    fn a_timed_out_scrape_is_passed_over_and_a_refused_or_broken_one_is_not() {
        assert!(passed_over(r#"Get "http://127.0.0.1:37979/stats/prometheus": context deadline exceeded"#));
        assert!(passed_over(""), "healthy again by the next scrape");
        assert!(!passed_over(r#"Get "http://127.0.0.1:9/stats/prometheus": dial tcp 127.0.0.1:9: connect: connection refused"#));
        assert!(!passed_over(r#"expected equal, got "INVALID""#));
        assert!(!passed_over("server returned HTTP status 404 Not Found"));
    }
}
