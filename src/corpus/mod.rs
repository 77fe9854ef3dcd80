//! `waf-e2e corpus`: the OWASP CRS regression corpus (FTW YAML) through the whole pipeline on the
//! local stack. Each test's requests go through a real Envoy and the WAF filter once under a
//! DetectionOnly policy and once under an On policy (the CRS as upstream's regression setup runs
//! it); FTW's own expectations are checked against each request's audit record, and the counters
//! against the records, over the whole corpus.
//!
//! - [`ftw`]: the FTW reader; [`overrides`]: known disagreements;
//! - [`policy`]: the two policies; [`send`]: requests byte for byte over TCP;
//! - [`observe`]: one mode on the stack; [`verdict`]: what it means; [`report`]: summary, JUnit, JSON.

pub mod ftw;
pub mod observe;
pub mod overrides;
pub mod policy;
pub mod report;
pub mod send;
pub mod verdict;

use crate::stack::local::{LocalOptions, LocalStack};
use crate::stack::Stack;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use verdict::TestResult;

/// A policy mode the corpus runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `SecRuleEngine DetectionOnly`: decisions are `would_block`, as upstream ran the corpus.
    Detection,
    /// `SecRuleEngine On`: decisions are `blocked`, and FTW's `status` is checked.
    Blocking,
}

impl Mode {
    /// `detection` / `blocking`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Detection => "detection",
            Mode::Blocking => "blocking",
        }
    }

    /// The decision this mode's policy makes.
    pub fn decision(self) -> crate::contract::Decision {
        match self {
            Mode::Detection => crate::contract::Decision::WouldBlock,
            Mode::Blocking => crate::contract::Decision::Blocked,
        }
    }
}

/// What `waf-e2e corpus` was asked to do.
#[derive(Debug, Clone)]
pub struct CorpusOptions {
    /// FTW files or directories (searched recursively).
    pub paths: Vec<PathBuf>,
    /// The override file, if any.
    pub overrides: Option<PathBuf>,
    /// The modes, in order.
    pub modes: Vec<Mode>,
    /// Only tests whose title matches one of these globs (none: every test).
    pub tests: Vec<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// JUnit report file.
    pub junit: Option<PathBuf>,
    /// JSON report file.
    pub json: Option<PathBuf>,
    /// The local stack.
    pub local: LocalOptions,
}

/// A test's result in one mode, with the override that covers it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModeResult {
    /// The mode.
    pub mode: Mode,
    /// What was observed.
    pub result: TestResult,
    /// The override entry covering the test in this mode (`file:line: reason`).
    pub overridden: Option<String>,
    /// What each of its requests met, in stage order.
    pub requests: Vec<RequestFacts>,
}

/// What one request met, for the JSON report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RequestFacts {
    /// Its `x-waf-e2e-id`.
    pub correlation_id: String,
    /// The request line as sent.
    pub request_line: String,
    /// `status 403` or `no response (...)`.
    pub answer: String,
    /// Statuses of further requests Envoy parsed from its bytes and answered.
    pub pipelined: Vec<u16>,
    /// How far the backend saw it.
    pub backend: crate::stack::BackendReach,
    /// The rule ids of each audit record carrying its id.
    pub records: Vec<Vec<u64>>,
}

impl RequestFacts {
    fn of(s: &observe::Sent) -> RequestFacts {
        RequestFacts {
            correlation_id: s.correlation_id.clone(),
            request_line: s.request_line.clone(),
            answer: match &s.answer {
                send::Answer::Status(c) => format!("status {c}"),
                send::Answer::NoResponse(why) => format!("no response ({why})"),
            },
            pipelined: s.pipelined.clone(),
            backend: s.reach,
            records: s.records.iter().map(|r| r.rule_ids()).collect(),
        }
    }
}

/// One FTW test's outcome over the modes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestOutcome {
    /// `file:line`.
    pub at: String,
    /// `test_title`.
    pub title: String,
    /// The rule family (`942`).
    pub family: String,
    /// Why it did not run (its file says `enabled: false`).
    pub disabled: Option<String>,
    /// Per mode.
    pub modes: Vec<ModeResult>,
    /// Audit records matched to its requests, over the modes.
    pub records: usize,
    /// Decisions among them.
    pub decisions: usize,
}

/// What counts for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Every mode passed, no override.
    Passed,
    /// A mode failed, and an override covers it.
    Overridden,
    /// An override covers it, but it passed: the entry can go.
    OverriddenButPassed,
    /// Answered by Envoy before the filter, not overridden.
    AnsweredByEnvoy,
    /// Failed, not overridden.
    Failed,
    /// Not run (its file disables it).
    Disabled,
}

impl TestOutcome {
    /// The test's class for the summary and the exit code.
    pub fn class(&self) -> Class {
        if self.disabled.is_some() {
            return Class::Disabled;
        }
        let unexcused = |want: fn(&TestResult) -> bool| self.modes.iter().any(|m| want(&m.result) && m.overridden.is_none());
        if unexcused(|r| matches!(r, TestResult::Failed(_))) {
            return Class::Failed;
        }
        if unexcused(|r| matches!(r, TestResult::AnsweredByEnvoy(_))) {
            return Class::AnsweredByEnvoy;
        }
        let covered: Vec<&ModeResult> = self.modes.iter().filter(|m| m.overridden.is_some()).collect();
        if covered.is_empty() {
            Class::Passed
        } else if covered.iter().all(|m| m.result == TestResult::Passed) {
            Class::OverriddenButPassed
        } else {
            Class::Overridden
        }
    }
}

/// One mode's totals.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModeSummary {
    /// The mode.
    pub mode: Mode,
    /// Requests sent.
    pub requests: usize,
    /// Requests that reached the WAF filter.
    pub reached_filter: usize,
    /// Requests Envoy answered itself.
    pub answered_by_envoy: usize,
    /// Decisions (records with a decision).
    pub decisions: usize,
    /// Sending the traffic, seconds.
    pub traffic_seconds: f64,
    /// The whole mode (install, baseline, traffic, scrapes, audit read), seconds.
    pub wall_seconds: f64,
    /// Requests per second of the traffic.
    pub requests_per_second: f64,
    /// How the audit log was known to be complete.
    pub audit_flushed_by: String,
    /// Counter and audit failures of the mode as a whole.
    pub failures: Vec<String>,
    /// Envoy's own gateway-listener counters that moved during the traffic (corroboration).
    pub envoy_counters: std::collections::BTreeMap<String, f64>,
}

/// The run's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CorpusRun {
    /// The run id.
    pub run_id: String,
    /// Per test.
    pub tests: Vec<TestOutcome>,
    /// Per mode.
    pub modes: Vec<ModeSummary>,
    /// Override entries that cover no test of the run.
    pub unused_overrides: Vec<String>,
    /// From the stack being up to the end of the last mode, seconds.
    pub seconds_after_stack_up: f64,
}

impl CorpusRun {
    /// Whether every non-overridden test passed and every mode's counters agreed.
    pub fn ok(&self) -> bool {
        self.modes.iter().all(|m| m.failures.is_empty()) && self.tests.iter().all(|t| !matches!(t.class(), Class::Failed | Class::AnsweredByEnvoy))
    }

    /// Failed tests plus failed modes (for the exit message).
    pub fn failure_count(&self) -> usize {
        self.tests.iter().filter(|t| matches!(t.class(), Class::Failed | Class::AnsweredByEnvoy)).count() + self.modes.iter().filter(|m| !m.failures.is_empty()).count()
    }
}

/// Reads the corpus and the overrides (input errors: exit 2), selects the tests.
pub fn load(opts: &CorpusOptions) -> Result<(Vec<ftw::FtwTest>, overrides::Overrides)> {
    let mut tests = ftw::load(&opts.paths)?;
    let overrides = match &opts.overrides {
        Some(p) => overrides::load(p)?,
        None => overrides::Overrides::default(),
    };
    if !opts.tests.is_empty() {
        let mut set = globset::GlobSetBuilder::new();
        for g in &opts.tests {
            set.add(globset::Glob::new(g).map_err(|e| crate::error::HarnessError::Usage(format!("--test {g}: {e}")))?);
        }
        let set = set.build().context("build the --test globs")?;
        tests.retain(|t| set.is_match(&t.title));
        if tests.is_empty() {
            return Err(crate::error::HarnessError::Usage(format!("no FTW test title matches --test {}", opts.tests.join(" --test "))).into());
        }
    }
    Ok((tests, overrides))
}

/// Runs the corpus on a local stack it starts and stops.
pub async fn run(opts: &CorpusOptions) -> Result<CorpusRun> {
    let (tests, overrides) = load(opts)?;
    let stack = LocalStack::start(&opts.local).await.context("start the local stack")?;
    let result = run_on(&stack, &tests, &overrides, opts).await;
    let stopped = stack.shutdown().await;
    let run = result?;
    stopped.context("stop the local stack")?;
    Ok(run)
}

/// Runs `tests` on a running local stack, every mode of `opts`.
pub async fn run_on(stack: &LocalStack, tests: &[ftw::FtwTest], overrides: &overrides::Overrides, opts: &CorpusOptions) -> Result<CorpusRun> {
    let run_id = format!("ftw-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let up = Instant::now();
    let runnable: Vec<ftw::FtwTest> = tests.iter().filter(|t| !t.disabled).cloned().collect();
    let mut outcomes: Vec<TestOutcome> = tests.iter().map(|t| TestOutcome {
        at: format!("{}:{}", t.file.display(), t.line),
        title: t.title.clone(),
        family: t.family.clone(),
        disabled: t.disabled.then(|| format!("{} says `meta.enabled: false` (upstream does not run it either)", t.file.display())),
        modes: Vec::new(),
        records: 0,
        decisions: 0,
    }).collect();
    let index: Vec<usize> = tests.iter().enumerate().filter(|(_, t)| !t.disabled).map(|(i, _)| i).collect();
    let mut modes = Vec::new();
    for &mode in &opts.modes {
        eprintln!("[corpus] {} mode: {} test(s), {} request(s)", mode.as_str(), runnable.len(), runnable.iter().map(|t| t.stages.len()).sum::<usize>());
        let obs = observe::observe(stack, &runnable, mode, &run_id, opts.concurrency, &opts.local.timeouts).await?;
        for (i, test) in runnable.iter().enumerate() {
            let sent: Vec<&observe::Sent> = obs.sent.iter().filter(|s| s.test == i).collect();
            let outcome = &mut outcomes[index[i]];
            outcome.records += sent.iter().map(|s| s.records.len()).sum::<usize>();
            outcome.decisions += sent.iter().flat_map(|s| &s.records).filter(|r| r.decision().is_some()).count();
            let overridden = overrides.find(&test.title, mode).map(|o| format!("{}: {}", o.at, o.reason));
            let requests = sent.iter().map(|s| RequestFacts::of(s)).collect();
            outcome.modes.push(ModeResult { mode, result: verdict::judge(test, &sent, mode), overridden, requests });
        }
        let failures = verdict::check_counters(&obs);
        let requests = obs.sent.len();
        let reached = obs.sent.iter().filter(|s| s.reached_filter()).count();
        let summary = ModeSummary {
            mode,
            requests,
            reached_filter: reached,
            answered_by_envoy: requests - reached,
            decisions: obs.sent.iter().flat_map(|s| &s.records).filter(|r| r.decision().is_some()).count(),
            traffic_seconds: obs.traffic.as_secs_f64(),
            wall_seconds: obs.wall.as_secs_f64(),
            requests_per_second: requests as f64 / obs.traffic.max(Duration::from_millis(1)).as_secs_f64(),
            audit_flushed_by: obs.flushed_by.clone(),
            failures,
            envoy_counters: obs.envoy_counters.clone(),
        };
        eprintln!("[corpus] {} mode done in {:.1}s ({:.0} requests/s)", mode.as_str(), summary.wall_seconds, summary.requests_per_second);
        modes.push(summary);
    }
    // With --test, most entries cover no selected test by design: only a whole run judges the list.
    let unused_overrides = overrides
        .entries
        .iter()
        .filter(|_| opts.tests.is_empty())
        .filter(|o| !tests.iter().any(|t| opts.modes.iter().any(|m| o.covers(&t.title, *m))))
        .map(|o| format!("{}: {}", o.at, o.reason))
        .collect();
    Ok(CorpusRun { run_id, tests: outcomes, modes, unused_overrides, seconds_after_stack_up: up.elapsed().as_secs_f64() })
}
