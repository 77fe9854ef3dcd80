//! The runner: scenarios on a stack, concurrently where they are isolated, with a verdict each.

pub mod audit_wait;
pub mod expect;
pub mod gate;
pub mod reach;
pub mod scenario;
pub mod traffic;

use crate::outcome::{Outcome, Timings, Verdict, NOT_RUN};
use crate::report::Progress;
use crate::scenario::Scenario;
use crate::stack::Stack;
use crate::timeouts::Timeouts;
use futures::StreamExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Unique id of this run, prefixed to every correlation id.
    pub run_id: String,
    /// How many isolated scenarios run at once.
    pub jobs: usize,
    /// Every deadline.
    pub timeouts: Timeouts,
    /// Where failed scenarios' diagnostics bundles go (one directory each).
    pub diagnostics_dir: Option<PathBuf>,
    /// After the first failed scenario, start no other (`--fail-fast`).
    pub fail_fast: bool,
}

/// Runs every scenario, `jobs` at a time; an exclusive one holds the gateway alone from its
/// baseline scrape to its confirming scrape ([`gate`]).
///
/// After an infrastructure failure nothing new starts: the rest are reported as not run.
pub async fn run_all(stack: &dyn Stack, scenarios: &[Scenario], opts: &RunOptions, progress: &Progress) -> Vec<Outcome> {
    run_until(stack, scenarios, opts, progress, std::future::pending()).await.outcomes
}

/// The outcomes of a run, and what interrupted it, if anything did.
#[derive(Debug)]
pub struct RunResult {
    /// One outcome per scenario, in the scenarios' order, also for those that never ran.
    pub outcomes: Vec<Outcome>,
    /// What `interrupt` resolved with (e.g. `SIGINT`), when it ended the run early.
    pub interrupted: Option<String>,
}

/// Why no new scenario may start.
enum Stop {
    Broken,
    Interrupted(String),
}

/// [`run_all`] that also ends when `interrupt` resolves: scenarios still running are dropped (the
/// stack's shutdown removes what they installed) and, like those never started, reported as errors.
///
/// With `opts.fail_fast`, the first failed scenario lets those already running finish and starts no
/// other: each is reported [`Verdict::NotRun`].
pub async fn run_until(
    stack: &dyn Stack,
    scenarios: &[Scenario],
    opts: &RunOptions,
    progress: &Progress,
    interrupt: impl std::future::Future<Output = String>,
) -> RunResult {
    // Isolated scenarios first: with fewer job slots than scenarios, exclusive ones waiting for
    // their window would otherwise hold slots the isolated ones could use. Every isolated
    // scenario promises its traffic before any starts, so no window opens ahead of that traffic.
    let (exclusive, shared): (Vec<&Scenario>, Vec<&Scenario>) = scenarios.iter().partition(|s| s.exclusive);
    let gate = gate::GatewayGate::default();
    let uses: Vec<(&Scenario, gate::GateUse<'_>)> = shared.into_iter().chain(exclusive).map(|s| (s, gate::GateUse::of(&gate, s.exclusive))).collect();
    let mut interrupt = std::pin::pin!(interrupt);
    let first_failure = std::sync::OnceLock::<String>::new();
    let mut outcomes = Vec::new();
    let mut stop = None;
    {
        // Each future checks for a failure when it is first polled, which is when it would start.
        let mut stream = futures::stream::iter(uses)
            .map(|(s, gate)| {
                let first_failure = &first_failure;
                async move { match first_failure.get() {
                    Some(failed) => not_run(progress, s, failed),
                    None => run_one(stack, s, gate, opts, progress).await,
                } }
            })
            .buffer_unordered(opts.jobs.max(1));
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                why = &mut interrupt => { stop = Some(Stop::Interrupted(why)); break; }
            };
            let Some(outcome) = next else { break };
            stop = note_outcome(&outcome, opts.fail_fast, &first_failure);
            outcomes.push(outcome);
            if stop.is_some() {
                break;
            }
        }
    }
    let cut_short = match &stop {
        Some(Stop::Interrupted(why)) => format!("interrupted by {why}"),
        _ => "the infrastructure failed (see the first error)".to_string(),
    };
    let unfinished: Vec<&Scenario> = scenarios.iter().filter(|s| !outcomes.iter().any(|o| o.name == s.name())).collect();
    outcomes.extend(self::cut_short(unfinished, &cut_short));
    let order = |name: &str| scenarios.iter().position(|s| s.name() == name);
    outcomes.sort_by_key(|o| order(&o.name));
    let interrupted = match stop {
        Some(Stop::Interrupted(why)) => Some(why),
        _ => None,
    };
    RunResult { outcomes, interrupted }
}

/// Error outcomes for scenarios that did not run to the end because `why` (e.g. "interrupted by SIGINT").
pub fn cut_short<'a>(scenarios: impl IntoIterator<Item = &'a Scenario>, why: &str) -> Vec<Outcome> {
    scenarios.into_iter().map(|s| unmeasured(s.name(), Verdict::Broken(format!("{NOT_RUN}: {why}")))).collect()
}

/// Failed outcomes for scenarios that could not run because a resource under test is broken (`why` names it).
pub fn failed_by<'a>(scenarios: impl IntoIterator<Item = &'a Scenario>, why: &str) -> Vec<Outcome> {
    scenarios.into_iter().map(|s| unmeasured(s.name(), Verdict::Failed(vec![why.to_string()]))).collect()
}

/// The outcome of scenario `name` with `verdict` and nothing measured (it did not run, or not to the end).
fn unmeasured(name: &str, verdict: Verdict) -> Outcome {
    Outcome {
        name: name.to_string(),
        verdict,
        duration: Duration::ZERO,
        timings: Timings::default(),
        not_checked: Vec::new(),
        notes: Vec::new(),
        diagnostics: None,
    }
}

/// Records a failure for `--fail-fast`; `Some` when the run must stop at once (the infrastructure broke).
fn note_outcome(outcome: &Outcome, fail_fast: bool, first_failure: &std::sync::OnceLock<String>) -> Option<Stop> {
    if fail_fast && matches!(outcome.verdict, Verdict::Failed(_)) {
        let _ = first_failure.set(outcome.name.clone());
    }
    matches!(outcome.verdict, Verdict::Broken(_)).then_some(Stop::Broken)
}

/// The outcome of a scenario `--fail-fast` kept from starting after `failed` failed.
fn not_run(progress: &Progress, scenario: &Scenario, failed: &str) -> Outcome {
    let verdict = Verdict::NotRun(format!("--fail-fast: {failed} failed before this scenario started"));
    let outcome = unmeasured(scenario.name(), verdict);
    progress.finished(&outcome);
    outcome
}

/// Runs one scenario to a verdict, within its deadline, and cleans up after it.
///
/// Time spent waiting at the gate is outside the deadline: each holder is bounded by its own.
pub async fn run_one(stack: &dyn Stack, scenario: &Scenario, gate: gate::GateUse<'_>, opts: &RunOptions, progress: &Progress) -> Outcome {
    let started = Instant::now();
    let name = scenario.name().to_string();
    let missing: Vec<String> = scenario.needs().into_iter().filter(|c| !stack.capabilities().contains(c)).map(|c| format!("{c:?}")).collect();
    if !missing.is_empty() {
        let reason = format!("the {} stack lacks {}", stack.name(), missing.join(", "));
        let outcome = Outcome { duration: started.elapsed(), ..unmeasured(&name, Verdict::Skipped(reason)) };
        progress.finished(&outcome);
        return outcome;
    }
    progress.started(&name);
    // On a cluster the install probes the new route through the gateway: requests an exclusive
    // window must not see.
    let (sending, install_gate_wait) = gate.gate.shared().await;
    let install_started = Instant::now();
    let deadline = opts.timeouts.scenario;
    let installed = tokio::select! {
        installed = tokio::time::timeout(deadline, stack.install_scenario(scenario)) => installed,
        failure = infrastructure_failure(stack, deadline) => Ok(Err(failure)),
    };
    drop(sending);
    let env = match installed {
        Ok(Ok(env)) => env,
        Ok(Err(e)) => {
            let why = with_cause(stack, &opts.timeouts, format!("install: {e:#}")).await;
            return finish(progress, name, Verdict::Broken(why), started, Timings::default(), None);
        }
        Err(_) => return finish(progress, name, Verdict::Broken(format!("install did not finish within {deadline:?}")), started, Timings::default(), None),
    };
    let install = install_started.elapsed();
    let (window, window_wait) = gate.window().await;
    let remaining = deadline.saturating_sub(install);
    let observed = tokio::select! {
        observed = tokio::time::timeout(remaining, scenario::observe(stack, scenario, &opts.run_id, &opts.timeouts, env.clone(), gate, window)) => observed,
        failure = infrastructure_failure(stack, remaining) => Ok(Err(failure)),
    };
    let mut not_checked = Vec::new();
    let mut notes = Vec::new();
    let (mut verdict, mut timings) = match observed {
        Ok(Ok(obs)) => {
            not_checked = obs.not_checked;
            notes = obs.notes;
            (if obs.failures.is_empty() { Verdict::Passed } else { Verdict::Failed(obs.failures) }, obs.timings)
        }
        // The resource under test is at fault, not the infrastructure: a failed verdict naming it.
        Ok(Err(e)) if crate::error::BrokenResource::find(&e).is_some() => {
            let broken = crate::error::BrokenResource::find(&e).map(ToString::to_string).unwrap_or_default();
            (Verdict::Failed(vec![broken]), Timings::default())
        }
        Ok(Err(e)) => (Verdict::Broken(with_cause(stack, &opts.timeouts, format!("{e:#}")).await), Timings::default()),
        Err(_) => (Verdict::Broken(with_cause(stack, &opts.timeouts, format!("scenario did not finish within its deadline of {deadline:?}")).await), Timings::default()),
    };
    timings.install = install;
    timings.gate += install_gate_wait + window_wait;
    let mut diagnostics = None;
    if !matches!(verdict, Verdict::Passed) {
        if let Some(dir) = &opts.diagnostics_dir {
            let dir = dir.join(&name);
            match write_diagnostics(stack, &env, &dir, &verdict).await {
                Ok(()) => {
                    // The run's own files are gone after it; point messages at their copies in the bundle.
                    verdict = point_into_bundle(verdict, &stack.bundle_copies(), &dir);
                    diagnostics = Some(dir);
                }
                Err(e) => progress.note(&format!("{name}: diagnostics bundle could not be written: {e:#}")),
            }
        }
    }
    if let Err(e) = stack.remove_scenario(&env).await {
        let msg = format!("remove scenario objects: {e:#}");
        verdict = match verdict {
            Verdict::Passed => Verdict::Broken(msg),
            Verdict::Failed(mut f) => { f.push(msg); Verdict::Failed(f) }
            other => other,
        };
    }
    let mut outcome = finish(progress, name, verdict, started, timings, diagnostics);
    outcome.not_checked = not_checked;
    outcome.notes = notes;
    outcome
}

/// Resolves with the stack's health error as soon as a part of it dies; stays pending while it is healthy.
async fn infrastructure_failure(stack: &dyn Stack, within: Duration) -> anyhow::Error {
    let failed = crate::wait::until("a failure of the stack's health check", within, || async move {
        Ok(match stack.health().await {
            Err(e) => crate::wait::Check::Met(e),
            Ok(()) => crate::wait::Check::NotYet("healthy".into()),
        })
    })
    .await;
    match failed {
        Ok(e) => e,
        // Healthy for the whole deadline: the scenario's own timeout decides.
        Err(_) => std::future::pending().await,
    }
}

/// `what` a scenario saw, led by the stack's own diagnosis (e.g. "Prometheus exited") when it has one.
///
/// A dying process resets its connections a moment before it can be reaped, so a transport error
/// may come first: the health check gets `health_settle` to catch up.
async fn with_cause(stack: &dyn Stack, timeouts: &Timeouts, what: String) -> String {
    let cause = crate::wait::until("the stack's health check to explain the failure", timeouts.health_settle, || async {
        Ok(match stack.health().await {
            Err(cause) => crate::wait::Check::Met(cause),
            Ok(()) => crate::wait::Check::NotYet("healthy".into()),
        })
    })
    .await;
    match cause.map_err(|_| ()) {
        Ok(cause) => {
            let cause = format!("{cause:#}");
            if what.contains(&cause) { what } else { format!("{cause} (the scenario saw: {what})") }
        }
        Err(()) => what,
    }
}

fn finish(progress: &Progress, name: String, verdict: Verdict, started: Instant, timings: Timings, diagnostics: Option<PathBuf>) -> Outcome {
    let outcome = Outcome { name, verdict, duration: started.elapsed(), timings, diagnostics, not_checked: Vec::new(), notes: Vec::new() };
    progress.finished(&outcome);
    outcome
}

/// `verdict` with every live path of `copies` replaced by its copy's path in the bundle `dir`.
fn point_into_bundle(verdict: Verdict, copies: &[(String, String)], dir: &std::path::Path) -> Verdict {
    let rewrite = |text: String| {
        copies.iter().filter(|(live, _)| !live.is_empty()).fold(text, |t, (live, copy)| t.replace(live.as_str(), &dir.join(copy).display().to_string()))
    };
    match verdict {
        Verdict::Failed(f) => Verdict::Failed(f.into_iter().map(rewrite).collect()),
        Verdict::Broken(b) => Verdict::Broken(rewrite(b)),
        other => other,
    }
}

async fn write_diagnostics(stack: &dyn Stack, env: &crate::stack::ScenarioEnv, dir: &std::path::Path, verdict: &Verdict) -> anyhow::Result<()> {
    use anyhow::Context;
    tokio::fs::create_dir_all(dir).await.with_context(|| format!("create {}", dir.display()))?;
    let text = match verdict {
        Verdict::Failed(f) => f.join("\n\n"),
        Verdict::Broken(b) => b.clone(),
        _ => String::new(),
    };
    let filter = stack.filter();
    let header = format!("stack: {}\nfilter: {} (flavour `{}`)\nEnvoy: {}\n\n", stack.name(), filter.description, filter.flavour, filter.envoy_version.as_deref().unwrap_or("unknown"));
    tokio::fs::write(dir.join("verdict.txt"), header + &text).await.context("write verdict.txt")?;
    stack.diagnostics(env, dir).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_messages_point_at_the_bundles_copy_of_a_run_file() {
        let copies = vec![("/tmp/waf-e2e-runs/local-1/access-logs/envoy.log".to_string(), "audit-log.txt".to_string())];
        let verdict = Verdict::Failed(vec!["[/tmp/waf-e2e-runs/local-1/access-logs/envoy.log] audit line does not parse".into()]);
        match point_into_bundle(verdict, &copies, std::path::Path::new("diag/sqli-blocked")) {
            Verdict::Failed(f) => assert_eq!(f[0], "[diag/sqli-blocked/audit-log.txt] audit line does not parse"),
            other => panic!("{other:?}"),
        }
    }
}
