//! The summary table printed after a run, and the run's overall verdict.

use crate::error::HarnessError;
use crate::outcome::{Outcome, Verdict};
use std::fmt::Write;

/// A table of every scenario: verdict, time, where the time went, and failures in full below it.
pub fn summary_table(outcomes: &[Outcome]) -> String {
    let width = outcomes.iter().map(|o| o.name.len()).max().unwrap_or(8).max(8);
    let mut out = String::new();
    let _ = writeln!(out, "{:<width$}  {:<7}  {:>7}  {:>7}  {:>8}  {:>7}  {:>7}  {:>7}  {:>7}  {:>9}", "scenario", "result", "total", "install", "baseline", "traffic", "settle", "confirm", "audit", "audit lat");
    for o in outcomes {
        let t = &o.timings;
        let result = match o.verdict {
            Verdict::Passed if !o.not_checked.is_empty() => "pass*",
            Verdict::Passed => "pass",
            Verdict::Failed(_) => "FAIL",
            Verdict::Skipped(_) => "skip",
            Verdict::Broken(_) => "ERROR",
            Verdict::NotRun(_) => "not run",
        };
        let secs = |d: std::time::Duration| format!("{:.2}s", d.as_secs_f64());
        let latency = t.audit_latency.map_or_else(|| "-".to_string(), secs);
        let _ = writeln!(out, "{:<width$}  {:<7}  {:>7}  {:>7}  {:>8}  {:>7}  {:>7}  {:>7}  {:>7}  {:>9}",
            o.name, result, secs(o.duration), secs(t.install), secs(t.baseline), secs(t.traffic), secs(t.settle), secs(t.confirm), secs(t.audit), latency);
    }
    let count = |f: fn(&Verdict) -> bool| outcomes.iter().filter(|o| f(&o.verdict)).count();
    let _ = writeln!(out, "{} passed, {} failed, {} skipped, {} errors, {} not run",
        count(|v| matches!(v, Verdict::Passed)), count(|v| matches!(v, Verdict::Failed(_))),
        count(|v| matches!(v, Verdict::Skipped(_))), count(|v| matches!(v, Verdict::Broken(_))),
        count(|v| matches!(v, Verdict::NotRun(_))));
    for o in outcomes {
        match &o.verdict {
            Verdict::Failed(failures) => {
                let _ = writeln!(out, "\n--- {} FAILED ---", o.name);
                for f in failures {
                    let _ = writeln!(out, "  * {}", f.trim_end().replace('\n', "\n    "));
                }
            }
            Verdict::Broken(why) => {
                let _ = writeln!(out, "\n--- {} ERROR (infrastructure) ---\n  {why}", o.name);
            }
            Verdict::Skipped(why) => {
                let _ = writeln!(out, "\n--- {} skipped: {why}", o.name);
            }
            Verdict::NotRun(why) => {
                let _ = writeln!(out, "\n--- {} not run: {why}", o.name);
            }
            Verdict::Passed => {}
        }
        if !o.not_checked.is_empty() {
            let _ = writeln!(out, "\n--- {}: {} expectation(s) NOT CHECKED with this filter (not counted as passed) ---", o.name, o.not_checked.len());
            for n in &o.not_checked {
                let _ = writeln!(out, "  - {n}");
            }
        }
        for n in &o.notes {
            let _ = writeln!(out, "  {}: {n}", o.name);
        }
        if let Some(dir) = &o.diagnostics {
            let _ = writeln!(out, "  diagnostics: {}", dir.display());
        }
    }
    out
}

/// The run's verdict: an infrastructure failure (exit 3) outranks scenario failures (exit 1).
pub fn exit_verdict(outcomes: &[Outcome]) -> Result<(), HarnessError> {
    let broken: Vec<(&str, &str)> = outcomes
        .iter()
        .filter_map(|o| match &o.verdict {
            Verdict::Broken(why) => Some((o.name.as_str(), why.as_str())),
            _ => None,
        })
        .collect();
    // Name the scenario that saw the failure, not one that was cut short because of it.
    if let Some((name, why)) = broken.iter().find(|(_, why)| !why.starts_with(crate::outcome::NOT_RUN)).or(broken.first()) {
        return Err(HarnessError::Infrastructure(anyhow::anyhow!("scenario {name}: {why}")));
    }
    let failed = outcomes.iter().filter(|o| matches!(o.verdict, Verdict::Failed(_))).count();
    if failed > 0 {
        return Err(HarnessError::ScenariosFailed(failed));
    }
    Ok(())
}
