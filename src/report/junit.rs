//! JUnit XML: one testcase per scenario, failures with their full message, skips with their reason.

use crate::runner::{Outcome, Verdict};
use anyhow::{Context, Result};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use std::path::Path;

/// Renders the outcomes as a JUnit report for stack `stack`.
pub fn render_junit(stack: &str, outcomes: &[Outcome]) -> Result<String> {
    let mut suite = TestSuite::new(format!("waf-e2e.{stack}"));
    for o in outcomes {
        let status = match &o.verdict {
            Verdict::Passed => TestCaseStatus::success(),
            Verdict::Failed(failures) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(failures.first().and_then(|f| f.lines().next()).unwrap_or("failed").to_string());
                s.set_description(failures.join("\n\n"));
                s
            }
            Verdict::Broken(why) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(why.lines().next().unwrap_or("infrastructure failed").to_string());
                s.set_description(why.clone());
                s
            }
            Verdict::Skipped(why) => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(why.clone());
                s
            }
        };
        let mut case = TestCase::new(o.name.clone(), status);
        case.set_classname(format!("waf-e2e.{stack}"));
        case.set_time(o.duration);
        if let Some(dir) = &o.diagnostics {
            case.set_system_out(format!("diagnostics: {}", dir.display()));
        }
        suite.add_test_case(case);
    }
    let mut report = Report::new("waf-e2e");
    report.add_test_suite(suite);
    report.to_string().context("serialise JUnit report")
}

/// Writes the JUnit report to `path`.
pub fn write_junit(path: &Path, stack: &str, outcomes: &[Outcome]) -> Result<()> {
    let xml = render_junit(stack, outcomes)?;
    std::fs::write(path, xml).with_context(|| format!("write JUnit report {}", path.display()))
}
