//! Reports: progress lines while scenarios run, the summary table, JUnit XML.

pub mod junit;
pub mod summary;

pub use junit::write_junit;
pub use summary::{exit_verdict, summary_table};

use crate::runner::{Outcome, Verdict};
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
        };
        let detail = match &o.verdict {
            Verdict::Skipped(r) | Verdict::Broken(r) => format!(": {r}"),
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
