//! The verdicts the CLI maps to exit codes (design, section 6).

use std::path::PathBuf;

/// Where in an input file a problem sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputLocation {
    /// The file that holds the problem.
    pub file: PathBuf,
    /// 1-based line, 0 when unknown.
    pub line: u64,
    /// 1-based column, 0 when unknown.
    pub column: u64,
}

impl std::fmt::Display for InputLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}", self.file.display()),
            (l, 0) => write!(f, "{}:{l}", self.file.display()),
            (l, c) => write!(f, "{}:{l}:{c}", self.file.display()),
        }
    }
}

/// One problem found in an input file: where, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProblem {
    /// File, line and column.
    pub at: InputLocation,
    /// Dotted path of the field (`traffic[0].repeat`), empty when the whole file is at fault.
    pub field: String,
    /// What is wrong, in a sentence.
    pub message: String,
}

impl std::fmt::Display for InputProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.at, self.message)
        } else {
            write!(f, "{}: field `{}`: {}", self.at, self.field, self.message)
        }
    }
}

/// Every problem found in a set of inputs, reported together.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render_problems(.0))]
pub struct InvalidInput(pub Vec<InputProblem>);

fn render_problems(problems: &[InputProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    format!("invalid input ({} problem(s)):\n  {}", problems.len(), lines.join("\n  "))
}

/// The outcome classes of a CLI invocation, each with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// At least one scenario failed its expectations (exit 1).
    #[error("{0} scenario(s) failed")]
    ScenariosFailed(usize),
    /// FTW tests of a corpus run failed, or a mode's counters disagreed with its audit records (exit 1).
    #[error("{0} corpus test(s) or mode counter check(s) failed")]
    CorpusFailed(usize),
    /// Invalid input or usage (exit 2).
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// Invalid usage that is not tied to a file (exit 2).
    #[error("usage: {0}")]
    Usage(String),
    /// A resource under test is broken before any scenario could run (exit 1, like a failed scenario).
    #[error("every scenario failed: {0}")]
    ResourceBroken(BrokenResource),
    /// Infrastructure could not be started, installed or reached (exit 3).
    #[error("infrastructure failed: {0:#}")]
    Infrastructure(anyhow::Error),
}

impl HarnessError {
    /// The process exit code for this outcome (design, section 6).
    pub fn exit_code(&self) -> i32 {
        match self {
            HarnessError::ScenariosFailed(_) | HarnessError::CorpusFailed(_) | HarnessError::ResourceBroken(_) => 1,
            HarnessError::Invalid(_) | HarnessError::Usage(_) => 2,
            HarnessError::Infrastructure(_) => 3,
        }
    }

    /// Classifies an error from library code: invalid input stays exit 2, a broken resource under
    /// test is a failure (exit 1), everything else is infrastructure.
    pub fn classify(err: anyhow::Error) -> Self {
        if let Some(broken) = BrokenResource::find(&err) {
            return HarnessError::ResourceBroken(broken.clone());
        }
        match err.downcast::<InvalidInput>() {
            Ok(invalid) => HarnessError::Invalid(invalid),
            Err(err) => match err.downcast::<HarnessError>() {
                Ok(h) => h,
                Err(err) => HarnessError::Infrastructure(err),
            },
        }
    }
}

/// A resource under test is broken (a PodMonitor that selects no proxy, a GlobalNetworkPolicy that
/// keeps Prometheus out, an EnvoyProxy that loses the audit lines): the scenario FAILS (exit 1) with
/// this message, never passes and is never reported as infrastructure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{resource}: {problem}")]
pub struct BrokenResource {
    /// Kind and name of the resource, e.g. `PodMonitor tigera-prometheus/tigera-waf-gateway-proxies`.
    pub resource: String,
    /// What is wrong and what was observed, in sentences.
    pub problem: String,
}

impl BrokenResource {
    /// The broken resource in an error chain, if any (the runner turns it into a failed scenario).
    pub fn find(err: &anyhow::Error) -> Option<&BrokenResource> {
        err.chain().find_map(|cause| cause.downcast_ref::<BrokenResource>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_resource_anywhere_in_an_error_chain_is_a_failed_verdict_not_infrastructure() {
        let broken = BrokenResource { resource: "GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics".into(), problem: "keeps Prometheus out".into() };
        let err = anyhow::Error::new(broken).context("wait for scrape pool podMonitor/x/y/0").context("start the kind stack");
        let classified = HarnessError::classify(err);
        assert_eq!(classified.exit_code(), 1);
        assert!(classified.to_string().contains("GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics: keeps Prometheus out"), "{classified}");
        assert_eq!(HarnessError::classify(anyhow::anyhow!("connection refused")).exit_code(), 3);
    }
}
