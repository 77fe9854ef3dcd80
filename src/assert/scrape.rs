//! Scrape rounds: waiting for the proxy targets to be `up`, and for a scrape newer than an instant.

use super::prom::{quote, PromClient, Target};
use crate::wait::{self, Check};
use anyhow::{bail, Result};
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
}

/// Waits until the pool has at least one target and all its targets report `up == 1`.
pub async fn target_up(prom: &PromClient, pool: &str, timeout: Duration) -> Result<ScrapeTargets> {
    let condition = format!("scrape pool {pool} to have its targets up");
    wait::until(&condition, timeout, || async {
        let targets = prom.targets(pool).await?;
        if targets.is_empty() {
            return Ok(Check::NotYet(format!("no active target in pool {pool}")));
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
        Ok(Check::Met(ScrapeTargets { pool: pool.to_string(), job, targets }))
    })
    .await
}

/// How far Prometheus may move a scrape's timestamp towards its schedule (`ScrapeTimestampTolerance`,
/// 2 ms in 2.x): a stamp must exceed the instant by more than this to prove the scrape began after it.
pub const TIMESTAMP_TOLERANCE: f64 = 0.002;

/// Waits for a scrape round that started strictly after `after` (Prometheus server time) on every target.
///
/// Fails at once, naming the target and its error, when such a scrape failed (`up == 0`).
pub async fn round_after(prom: &PromClient, targets: &ScrapeTargets, after: f64, timeout: Duration) -> Result<ScrapeRound> {
    let job = quote(&targets.job);
    let expected = targets.targets.len();
    let condition = format!("a scrape of job {} newer than t={after:.3}", targets.job);
    let round = wait::until(&condition, timeout, || async {
        let stamps = prom.instant(&format!("timestamp(up{{job={job}}})"), None).await?;
        let newer: Vec<f64> = stamps.iter().map(|s| s.value).filter(|t| *t > after + TIMESTAMP_TOLERANCE).collect();
        if stamps.len() < expected || newer.len() < stamps.len() {
            return Ok(Check::NotYet(format!("{} of {expected} target(s) scraped since", newer.len())));
        }
        Ok(Check::Met(ScrapeRound { at: newer.iter().copied().fold(f64::MIN, f64::max) }))
    })
    .await?;
    let ups = prom.instant(&format!("up{{job={job}}}"), Some(round.at)).await?;
    if let Some(down) = ups.iter().find(|s| s.value != 1.0) {
        let detail = prom.targets(&targets.pool).await.unwrap_or_default().into_iter()
            .map(|t| format!("{} health={} lastError={:?}", t.scrape_url, t.health, t.last_error))
            .collect::<Vec<_>>().join("; ");
        bail!("scrape of {:?} failed (up == 0) at t={:.3}: {detail}", down.labels.get("instance"), round.at);
    }
    Ok(round)
}
