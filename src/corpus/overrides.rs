//! Known disagreements (after go-ftw's overrides): tests that are known to differ on this stack,
//! each with a reason, optionally in one mode only. An overridden test still runs; its result is
//! reported, and one that now passes is reported so the list can shrink.

use super::Mode;
use crate::error::{InputProblem, InvalidInput};
use crate::input::{saphyr_problem, whole_file};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::path::Path;

/// The override file: `overrides: [...]`.
#[derive(Debug, Default)]
pub struct Overrides {
    /// The entries, in file order.
    pub entries: Vec<Override>,
}

/// One known disagreement.
#[derive(Debug, Clone)]
pub struct Override {
    /// Which tests: an exact title, or a regex over titles.
    pub matcher: TitleMatch,
    /// Why the test differs on this stack (ModSecurity v3 against v2, Envoy's HTTP handling, ...).
    pub reason: String,
    /// The mode it applies to (`None`: both).
    pub mode: Option<Mode>,
    /// `file:line` of the entry, for reports.
    pub at: String,
}

/// How an entry names its tests.
#[derive(Debug, Clone)]
pub enum TitleMatch {
    /// `test: 920100-2`.
    Title(String),
    /// `test_regex: ^920274-`.
    Regex(regex::Regex),
}

impl Override {
    /// Whether this entry covers test `title` in `mode`.
    pub fn covers(&self, title: &str, mode: Mode) -> bool {
        let titled = match &self.matcher {
            TitleMatch::Title(t) => t == title,
            TitleMatch::Regex(r) => r.is_match(title),
        };
        titled && self.mode.is_none_or(|m| m == mode)
    }
}

impl Overrides {
    /// The entry covering `title` in `mode`, if any.
    pub fn find(&self, title: &str, mode: Mode) -> Option<&Override> {
        self.entries.iter().find(|o| o.covers(title, mode))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    overrides: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(default)]
    test: Option<String>,
    #[serde(default)]
    test_regex: Option<String>,
    reason: String,
    #[serde(default)]
    mode: Option<Mode>,
}

/// Reads an override file; every problem with file, line and field (exit 2).
pub fn load(path: &Path) -> Result<Overrides, InvalidInput> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| InvalidInput(vec![InputProblem { at: whole_file(path), field: String::new(), message: format!("cannot read: {e}") }]))?;
    parse(path, &text)
}

/// Reads an override file's text.
pub fn parse(path: &Path, text: &str) -> Result<Overrides, InvalidInput> {
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| InvalidInput(vec![saphyr_problem(path, 0, text, &e)]))?;
    let mut problems = Vec::new();
    let mut entries = Vec::new();
    for (i, e) in raw.overrides.into_iter().enumerate() {
        let at = crate::input::located(path, 0, &e.referenced);
        let mut bad = |field: &str, message: String| problems.push(InputProblem { at: at.clone(), field: format!("overrides[{i}].{field}"), message });
        let entry = e.value;
        if entry.reason.trim().len() < 10 {
            bad("reason", "say why the test differs on this stack (ModSecurity v3 against v2, Envoy's HTTP handling, ...)".into());
        }
        let matcher = match (entry.test, entry.test_regex) {
            (Some(t), None) => TitleMatch::Title(t),
            (None, Some(r)) => match regex::Regex::new(&r) {
                Ok(re) => TitleMatch::Regex(re),
                Err(err) => {
                    bad("test_regex", format!("does not compile: {err}"));
                    continue;
                }
            },
            _ => {
                bad("test", "give exactly one of `test` (a title) and `test_regex`".into());
                continue;
            }
        };
        entries.push(Override { matcher, reason: entry.reason.trim().to_string(), mode: entry.mode, at: at.to_string() });
    }
    if problems.is_empty() { Ok(Overrides { entries }) } else { Err(InvalidInput(problems)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_covers_its_title_or_regex_in_its_mode_only() {
        let text = "overrides:\n  - test: 920100-2\n    reason: Envoy answers a tab before the method itself\n  - test_regex: ^9201\n    mode: blocking\n    reason: the status differs under Envoy\n";
        let o = parse(Path::new("o.yaml"), text).unwrap();
        assert!(o.find("920100-2", Mode::Detection).is_some());
        assert!(o.find("920150-1", Mode::Blocking).is_some());
        assert!(o.find("920150-1", Mode::Detection).is_none());
        assert_eq!(o.entries[1].at, "o.yaml:4:5");
    }

    #[test]
    fn the_shipped_override_file_loads_with_a_reason_for_every_entry() {
        let o = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/overrides.yaml")).unwrap();
        assert!(!o.entries.is_empty());
        assert!(o.entries.iter().all(|e| e.reason.len() >= 40), "every reason says what differs and why");
        assert!(o.find("920280-1", Mode::Detection).is_some() && o.find("942100-1", Mode::Detection).is_none());
    }

    #[test]
    fn an_unknown_field_a_missing_reason_and_a_bad_regex_are_refused_with_their_lines() {
        let unknown = parse(Path::new("o.yaml"), "overrides:\n  - test: a\n    reason: a good reason here\n    why: x\n").unwrap_err();
        assert_eq!((unknown.0[0].at.line, unknown.0[0].field.as_str()), (4, "why"), "{unknown}");
        let bad = parse(Path::new("o.yaml"), "overrides:\n  - test: a\n    reason: x\n  - test_regex: \"(\"\n    reason: a good reason here\n").unwrap_err();
        let fields: Vec<&str> = bad.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["overrides[0].reason", "overrides[1].test_regex"], "{bad}");
        assert_eq!(bad.0[1].at.line, 4);
    }
}
