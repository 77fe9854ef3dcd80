//! The summary table printed after a run, and the run's overall verdict.

use crate::error::HarnessError;
use crate::outcome::{Outcome, Verdict};
use std::fmt::Write;

/// A table of every scenario: verdict, time, where the time went, and failures in full below it.
/// A note every scenario that ran carries word for word is a fact of the run: printed once.
pub fn summary_table(outcomes: &[Outcome]) -> String {
    let shared = shared_notes(outcomes);
    let width = outcomes.iter().map(|o| o.name.len()).max().unwrap_or(8).max(8);
    let mut out = String::new();
    let _ = writeln!(out, "{:<width$}  {:<7}  {:>7}  {:>7}  {:>6}  {:>8}  {:>7}  {:>7}  {:>7}  {:>7}  {:>9}", "scenario", "result", "total", "install", "gate", "baseline", "traffic", "settle", "confirm", "audit", "audit lat");
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
        let _ = writeln!(out, "{:<width$}  {:<7}  {:>7}  {:>7}  {:>6}  {:>8}  {:>7}  {:>7}  {:>7}  {:>7}  {:>9}",
            o.name, result, secs(o.duration), secs(t.install), secs(t.gate), secs(t.baseline), secs(t.traffic), secs(t.settle), secs(t.confirm), secs(t.audit), latency);
    }
    let count = |f: fn(&Verdict) -> bool| outcomes.iter().filter(|o| f(&o.verdict)).count();
    let _ = writeln!(out, "{} passed, {} failed, {} skipped, {} errors, {} not run",
        count(|v| matches!(v, Verdict::Passed)), count(|v| matches!(v, Verdict::Failed(_))),
        count(|v| matches!(v, Verdict::Skipped(_))), count(|v| matches!(v, Verdict::Broken(_))),
        count(|v| matches!(v, Verdict::NotRun(_))));
    for n in &shared {
        let _ = writeln!(out, "every scenario: {n}");
    }
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
        for n in o.notes.iter().filter(|n| !shared.contains(n)) {
            let _ = writeln!(out, "  {}: {n}", o.name);
        }
        if let Some(dir) = &o.diagnostics {
            let _ = writeln!(out, "  diagnostics: {}", dir.display());
        }
    }
    out
}

/// The notes that every scenario with notes carries, when at least two have notes (one scenario's notes are its own).
fn shared_notes(outcomes: &[Outcome]) -> Vec<&String> {
    let mut with_notes = outcomes.iter().filter(|o| !o.notes.is_empty());
    let (Some(first), Some(_)) = (with_notes.next(), with_notes.next()) else { return Vec::new() };
    first.notes.iter().filter(|n| outcomes.iter().filter(|o| !o.notes.is_empty()).all(|o| o.notes.contains(n))).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Timings;
    use std::time::Duration;

    fn passed(name: &str, notes: &[&str]) -> Outcome {
        Outcome {
            name: name.into(),
            verdict: Verdict::Passed,
            duration: Duration::from_secs(1),
            timings: Timings::default(),
            diagnostics: None,
            not_checked: Vec::new(),
            notes: notes.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn a_note_every_scenario_carries_is_printed_once_and_notes_that_differ_per_scenario() {
        let flushed = "audit log read after: Envoy wrote its log at the harness's request";
        let outcomes = [passed("a", &[flushed, "request `a` #1: the backend received it complete"]), passed("b", &[flushed]), passed("c", &[flushed])];
        let table = summary_table(&outcomes);
        assert_eq!(table.matches(flushed).count(), 1, "{table}");
        assert!(table.contains(&format!("every scenario: {flushed}")), "{table}");
        assert!(table.contains("  a: request `a` #1: the backend received it complete"), "{table}");
    }

    #[test]
    fn a_note_one_scenario_lacks_stays_with_each_scenario_that_has_it() {
        let outcomes = [passed("a", &["audit log read after: count 1 -> 2"]), passed("b", &["audit log read after: count 2 -> 3"]), passed("skipped", &[])];
        let table = summary_table(&outcomes);
        assert!(!table.contains("every scenario:"), "{table}");
        assert!(table.contains("  a: audit log read after: count 1 -> 2") && table.contains("  b: audit log read after: count 2 -> 3"), "{table}");
    }

    #[test]
    fn the_notes_of_a_single_scenario_stay_its_own() {
        let table = summary_table(&[passed("a", &["request `a` #1: the backend received it complete"])]);
        assert!(!table.contains("every scenario:") && table.contains("  a: request `a` #1"), "{table}");
    }
}
