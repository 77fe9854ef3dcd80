//! Choosing scenarios by name glob and tag, the same way for `run`, `plan` and `list`.

use super::model::Scenario;
use crate::error::HarnessError;
use globset::{Glob, GlobMatcher};
use std::path::PathBuf;

/// Which scenarios a command works on: every filter given must hold.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Name globs; a scenario matching any is kept (all when empty).
    pub names: Vec<String>,
    /// Tags; a scenario carrying any is kept (all when empty).
    pub tags: Vec<String>,
    /// Tags; a scenario carrying any is dropped, whatever else matches.
    pub exclude_tags: Vec<String>,
}

impl Selection {
    /// The scenarios of `all` this selection keeps, in their order; `Err` is a usage problem (a bad glob).
    pub fn apply(&self, all: Vec<Scenario>) -> Result<Vec<Scenario>, String> {
        let keeps = self.matcher()?;
        Ok(all.into_iter().filter(|s| keeps(s)).collect())
    }

    /// Whether this selection keeps a scenario; `Err` is a usage problem (a bad glob).
    fn matcher(&self) -> Result<impl Fn(&Scenario) -> bool + '_, String> {
        let globs = self
            .names
            .iter()
            .map(|g| Glob::new(g).map(|g| g.compile_matcher()).map_err(|e| format!("--scenario {g:?}: {e}")))
            .collect::<Result<Vec<GlobMatcher>, _>>()?;
        Ok(move |s: &Scenario| {
            (globs.is_empty() || globs.iter().any(|m| m.is_match(s.name())))
                && (self.tags.is_empty() || self.tags.iter().any(|t| s.has_tag(t)))
                && !self.exclude_tags.iter().any(|t| s.has_tag(t))
        })
    }

    /// The selection in words, for "no scenario matches ..." messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.names.is_empty() {
            parts.push(format!("--scenario {}", self.names.join(", ")));
        }
        if !self.tags.is_empty() {
            parts.push(format!("--tag {}", self.tags.join(", ")));
        }
        if !self.exclude_tags.is_empty() {
            parts.push(format!("--exclude-tag {}", self.exclude_tags.join(", ")));
        }
        if parts.is_empty() { "the scenario files".into() } else { parts.join(" and ") }
    }
}

/// Loads the scenario files under `paths` and keeps those `selection` names, each with the file it
/// came from (an attached stack reads each scenario from its file); none kept is a usage error.
pub fn select_files(paths: &[PathBuf], selection: &Selection) -> Result<Vec<(PathBuf, Scenario)>, HarnessError> {
    let all = super::load_paths(paths)?;
    let keeps = selection.matcher().map_err(HarnessError::Usage)?;
    let selected: Vec<(PathBuf, Scenario)> = all.into_iter().filter(|(_, s)| keeps(s)).collect();
    if selected.is_empty() {
        return Err(HarnessError::Usage(format!("no scenario matches {}", selection.describe())));
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scenario(name: &str, tags: &[&str]) -> Scenario {
        let text = format!(
            "name: {name}\ntags: [{}]\npolicy:\n  name: p\n  mode: On\n  rules:\n    crs: true\ntraffic:\n  - name: a\n    path: /\n    expect_status: 200\nexpect:\n  no_decisions: true\n",
            tags.join(", ")
        );
        crate::scenario::parse(Path::new("t.yaml"), &text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn names(sel: &Selection) -> Vec<String> {
        let all = vec![scenario("sqli-a", &["sqli", "blocking"]), scenario("sqli-b", &["sqli", "detection-only"]), scenario("xss", &["xss", "blocking"])];
        sel.apply(all).unwrap().iter().map(|s| s.name().to_string()).collect()
    }

    #[test]
    fn a_tag_keeps_the_scenarios_carrying_any_of_the_tags_given() {
        assert_eq!(names(&Selection { tags: vec!["blocking".into()], ..Default::default() }), ["sqli-a", "xss"]);
        assert_eq!(names(&Selection { tags: vec!["xss".into(), "detection-only".into()], ..Default::default() }), ["sqli-b", "xss"]);
    }

    #[test]
    fn an_excluded_tag_drops_a_scenario_that_name_and_tag_would_keep() {
        let sel = Selection { names: vec!["sqli-*".into()], tags: vec!["sqli".into()], exclude_tags: vec!["detection-only".into()] };
        assert_eq!(names(&sel), ["sqli-a"]);
    }

    #[test]
    fn no_filter_keeps_every_scenario_and_a_bad_glob_is_a_usage_problem() {
        assert_eq!(names(&Selection::default()).len(), 3);
        let err = Selection { names: vec!["[".into()], ..Default::default() }.apply(Vec::new()).unwrap_err();
        assert!(err.contains("--scenario \"[\""), "{err}");
    }
}
