//! Reports: progress lines while scenarios run, the summary table, JUnit XML, the JSON report.

pub mod json;
pub mod junit;
pub mod summary;

pub use json::write_json;
pub use junit::write_junit;
pub use summary::{exit_verdict, summary_table};

use crate::outcome::{Outcome, Verdict};
use std::io::Write;

/// Progress lines on stderr, one when a scenario starts and one when it ends.
#[derive(Debug, Default)]
pub struct Progress {
    /// Print nothing (tests).
    pub quiet: bool,
}

impl Progress {
    /// A scenario started.
    pub fn started(&self, name: &str) {
        self.line(&format!("[ RUN  ] {name}"));
    }

    /// A scenario ended.
    pub fn finished(&self, o: &Outcome) {
        let tag = match &o.verdict {
            Verdict::Passed => "[ PASS ]",
            Verdict::Failed(_) => "[ FAIL ]",
            Verdict::Skipped(_) => "[ SKIP ]",
            Verdict::Broken(_) => "[ERROR ]",
            Verdict::NotRun(_) => "[NOTRUN]",
        };
        let detail = match &o.verdict {
            Verdict::Skipped(r) | Verdict::Broken(r) | Verdict::NotRun(r) => format!(": {r}"),
            _ => String::new(),
        };
        self.line(&format!("{tag} {} ({:.1}s){detail}", o.name, o.duration.as_secs_f64()));
    }

    /// A free-form note.
    pub fn note(&self, text: &str) {
        self.line(text);
    }

    fn line(&self, text: &str) {
        if !self.quiet {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{text}");
        }
    }
}

/// What every report says about the run as a whole.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The run id (the prefix of every correlation id).
    pub run_id: String,
    /// The stack's name (`local`, `kind`, `cluster`, `endpoints`).
    pub stack: String,
    /// The stack profile (`oss`, `tigera`), when the stack has one.
    pub profile: Option<String>,
    /// The Envoy version that served the traffic, when the stack knows it.
    pub envoy_version: Option<String>,
    /// Which WAF filter ran (the real one, or the stand-in), when the stack knows it.
    pub filter: Option<String>,
    /// The machine the harness ran on.
    pub hostname: Option<String>,
    /// When the run began.
    pub started_at: chrono::DateTime<chrono::FixedOffset>,
    /// Wall time from the start to the report.
    pub duration: std::time::Duration,
    /// The signal that interrupted the run, if one did.
    pub interrupted: Option<String>,
}

impl RunInfo {
    /// The run's properties as name/value pairs, the absent ones left out (JUnit properties).
    pub fn properties(&self) -> Vec<(&'static str, String)> {
        let optional = [("profile", &self.profile), ("envoy_version", &self.envoy_version), ("filter", &self.filter), ("interrupted", &self.interrupted)];
        let mut out = vec![("run_id", self.run_id.clone()), ("stack", self.stack.clone())];
        out.extend(optional.into_iter().filter_map(|(k, v)| v.clone().map(|v| (k, v))));
        out
    }
}

/// This machine's host name, `None` when the system will not say.
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).filter(|h| !h.is_empty())
}

/// Writes `text` to `path`, creating its directory first (`target/` may not exist when cargo builds elsewhere).
pub fn write_report_file(path: &std::path::Path, text: &str, what: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create the directory of {what} {}", path.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("write {what} {}", path.display()))
}

#[cfg(test)]
mod write_tests {
    #[test]
    fn a_report_in_a_directory_that_does_not_exist_yet_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target/nested/report.xml");
        super::write_report_file(&path, "<x/>", "JUnit report").unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "<x/>");
    }
}
