//! Exact counter deltas from raw samples (design, section 4): baseline, two scrapes after the traffic.

use super::prom::{readable_time, Sample};
use crate::contract::sanitize;
use crate::scenario::Increase;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Every normalised WAF series of the job, as of one scrape round.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The evaluation instant (Prometheus server time, unix seconds).
    pub at: f64,
    /// The series and their values.
    pub series: Vec<Sample>,
}

impl Snapshot {
    /// Sum of the series of `metric` that carry all of `labels`; `None` when no series matches (absent counts as 0).
    pub fn value(&self, metric: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
        let matching: Vec<f64> = self.matching(metric, labels).map(|s| s.value).collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// The series of `metric` that carry all of `labels`.
    pub fn matching<'a>(&'a self, metric: &'a str, labels: &'a BTreeMap<String, String>) -> impl Iterator<Item = &'a Sample> + 'a {
        self.series.iter().filter(move |s| s.name() == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
    }
}

/// One counter expectation: a metric, the labels its series must carry, the increase.
#[derive(Debug, Clone)]
pub struct CounterExpectation {
    /// What this is, for messages (`decision series #1`).
    pub what: String,
    /// The metric name.
    pub metric: String,
    /// Labels the series must carry exactly (others are free).
    pub labels: BTreeMap<String, String>,
    /// The increase.
    pub increase: Increase,
}

impl CounterExpectation {
    /// `metric{k="v",...}`.
    pub fn selector(&self) -> String {
        format_series(&self.metric, &self.labels)
    }
}

/// Checks `expectation` against the baseline and the rounds after the traffic; `Err` holds the failure message.
///
/// Exactly N must hold on every round (the first after the traffic and one more, which catches
/// double counting); at least N must hold on the last.
pub fn check(expectation: &CounterExpectation, baseline: &Snapshot, rounds: &[Snapshot]) -> Result<(), String> {
    let base = baseline.value(&expectation.metric, &expectation.labels).unwrap_or(0.0);
    let observed: Vec<Option<f64>> = rounds.iter().map(|r| r.value(&expectation.metric, &expectation.labels)).collect();
    let holds = |v: &Option<f64>| {
        let delta = v.unwrap_or(0.0) - base;
        match expectation.increase {
            Increase::Exactly(n) => delta == n as f64,
            Increase::AtLeast(n) => delta >= n as f64,
        }
    };
    let ok = match expectation.increase {
        Increase::Exactly(_) => observed.iter().all(holds),
        Increase::AtLeast(_) => observed.last().is_some_and(holds),
    };
    if ok && !rounds.is_empty() {
        return Ok(());
    }
    let mut msg = format!("{} {}: expected {} ", expectation.what, expectation.selector(), expectation.increase);
    let _ = writeln!(msg, "over the baseline, observed:");
    let _ = writeln!(msg, "    baseline ({}): {}", readable_time(baseline.at), show(baseline.value(&expectation.metric, &expectation.labels)));
    for (i, (round, v)) in rounds.iter().zip(&observed).enumerate() {
        let delta = v.unwrap_or(0.0) - base;
        let _ = writeln!(msg, "    scrape {} after traffic ({}): {} (increase {delta})", i + 1, readable_time(round.at), show(*v));
    }
    if let (Increase::Exactly(n), [.., last]) = (expectation.increase, observed.as_slice()) {
        let first = observed.first().copied().flatten().unwrap_or(0.0) - base;
        if first == n as f64 && last.unwrap_or(0.0) - base > n as f64 {
            let _ = writeln!(msg, "    the counter went on rising after the traffic ended: something counts twice or late");
        }
    }
    if observed.iter().all(Option::is_none) {
        let last = rounds.last().unwrap_or(baseline);
        msg.push_str(&nearest(expectation, last));
    }
    Err(msg)
}

fn show(v: Option<f64>) -> String {
    v.map_or_else(|| "absent (counts as 0)".to_string(), |v| v.to_string())
}

/// Explains how the closest series differs from the expectation, naming sanitisation when that is the only difference.
pub fn nearest(expectation: &CounterExpectation, snapshot: &Snapshot) -> String {
    let candidates: Vec<&Sample> = snapshot.series.iter().filter(|s| s.name() == expectation.metric).collect();
    let Some(best) = candidates.iter().max_by_key(|s| expectation.labels.iter().filter(|(k, v)| s.labels.get(*k) == Some(v)).count()) else {
        return format!("    no {} series exists at all\n", expectation.metric);
    };
    let mut out = format!("    nearest series: {} = {}\n", format_series(best.name(), &best.labels), best.value);
    for (k, want) in &expectation.labels {
        match best.labels.get(k) {
            Some(got) if got == want => {}
            Some(got) if *got == sanitize(want) => {
                let _ = writeln!(out, "      label `{k}`: expected {want:?}, the series carries {got:?} — the only difference is sanitisation: Envoy replaces every character outside [a-zA-Z0-9_] with `_` in stat names, and relabeling cannot restore it; expect {got:?}");
            }
            Some(got) => {
                let _ = writeln!(out, "      label `{k}`: expected {want:?}, the series carries {got:?}");
            }
            None => {
                let _ = writeln!(out, "      label `{k}`: missing (expected {want:?}) — the relabeling does not produce it");
            }
        }
    }
    out
}

/// `name{k="v",...}` with labels sorted.
pub fn format_series(name: &str, labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().filter(|(k, _)| *k != "__name__").map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Lists every series of a snapshot, for failure messages.
pub fn list(snapshot: &Snapshot) -> String {
    if snapshot.series.is_empty() {
        return "    (none)\n".to_string();
    }
    let mut lines: Vec<String> = snapshot.series.iter().map(|s| format!("    {} = {}\n", format_series(s.name(), &s.labels), s.value)).collect();
    lines.sort();
    lines.concat()
}
