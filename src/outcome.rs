//! What a run reports about each scenario: its verdict, where its time went, what it noted.
//!
//! Below both the runner (which produces outcomes) and the reports (which print them), so neither
//! depends on the other for these types.

use std::path::PathBuf;
use std::time::Duration;

/// How the verdict of a scenario cut short by another's infrastructure failure begins.
pub const NOT_RUN: &str = "not run to the end";

/// How a scenario ended.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Every expectation held.
    Passed,
    /// At least one expectation failed; each message says expected vs observed.
    Failed(Vec<String>),
    /// Not run on this stack, with the reason (e.g. a capability its profile lacks).
    Skipped(String),
    /// The infrastructure failed under it; its verdict cannot be trusted.
    Broken(String),
    /// Never started because the run stopped early (`--fail-fast` after a failure), with the reason.
    NotRun(String),
}

/// One scenario's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario's name.
    pub name: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Wall time of the whole scenario.
    pub duration: Duration,
    /// Where the time went.
    pub timings: Timings,
    /// The diagnostics bundle, when one was written.
    pub diagnostics: Option<PathBuf>,
    /// Expectations the filter in use has no value for: not checked, and never counted as passed.
    pub not_checked: Vec<String>,
    /// What else the run observed (backend reach, how the audit wait ended); the filter is the run's.
    pub notes: Vec<String>,
}

/// Where the time of one scenario went.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Timings {
    /// Installing policy, route and backend.
    pub install: Duration,
    /// Waiting at the gateway's gate: for an exclusive scenario's window, or (exclusive) for the
    /// others' requests to end.
    pub gate: Duration,
    /// Waiting for the target and the baseline scrape.
    pub baseline: Duration,
    /// Sending the traffic.
    pub traffic: Duration,
    /// From the last response to the first scrape after it (the settle latency).
    pub settle: Duration,
    /// The confirming scrape.
    pub confirm: Duration,
    /// Waiting for the audit records and for the log to be flushed after the traffic.
    pub audit: Duration,
    /// From the last response until every expected audit record had been read (none expected: `None`).
    pub audit_latency: Option<Duration>,
}
