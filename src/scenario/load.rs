//! Loading and validating scenario files: every problem of a file is reported at once, each with
//! file, line, column and field.

use super::model::{CountExpectation, Scenario};
use crate::error::{InputProblem, InvalidInput};
use crate::input::{located, saphyr_problem, tree, whole_file, yaml_files};
use serde_saphyr::{Location, Spanned};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Loads every scenario under `paths` (files, or directories searched for `*.yaml`/`*.yml`), validating all of them.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Scenario)>, InvalidInput> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        match yaml_files(path) {
            Ok(found) if found.is_empty() => problems.push(InputProblem {
                at: whole_file(path),
                field: String::new(),
                message: "no scenario files (*.yaml, *.yml) found here".into(),
            }),
            Ok(found) => files.extend(found),
            Err(message) => problems.push(InputProblem { at: whole_file(path), field: String::new(), message }),
        }
    }
    let mut scenarios = Vec::new();
    for file in files {
        match load_file(&file) {
            Ok(s) => scenarios.push((file, s)),
            Err(InvalidInput(mut p)) => problems.append(&mut p),
        }
    }
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (file, s) in &scenarios {
        if let Some(first) = seen.insert(s.name().to_string(), file.clone()) {
            problems.push(problem(file, &s.name.referenced, "name",
                format!("duplicate scenario name `{}` (also in {})", s.name(), first.display())));
        }
    }
    if problems.is_empty() { Ok(scenarios) } else { Err(InvalidInput(problems)) }
}

/// Loads and validates one scenario file.
pub fn load_file(path: &Path) -> Result<Scenario, InvalidInput> {
    let text = std::fs::read_to_string(path).map_err(|e| InvalidInput(vec![InputProblem {
        at: whole_file(path),
        field: String::new(),
        message: format!("cannot read: {e}"),
    }]))?;
    let scenario = parse(path, &text)?;
    let problems = check_rules(path, &scenario);
    if problems.is_empty() { Ok(scenario) } else { Err(InvalidInput(problems)) }
}

/// Compiles the policy's directives with the reference proxy's ModSecurity, so a rule it rejects is
/// invalid input (exit 2) at validation, before a run starts anything.
#[cfg(feature = "reference-proxy")]
fn check_rules(path: &Path, s: &Scenario) -> Vec<InputProblem> {
    let Some(directives) = s.policy.rules.directives.as_ref().filter(|d| !d.value.trim().is_empty()) else {
        return Vec::new();
    };
    match crate::waf::engine::check_directives(s.policy.rules.crs, &directives.value) {
        Ok(Ok(())) => Vec::new(),
        Ok(Err(why)) => {
            let (line_in_directives, why) = modsecurity_complaint(&why);
            let at = &directives.referenced;
            let mut loc = located(path, 0, at);
            if let Some(n) = line_in_directives.filter(|_| at.line() > 0) {
                // A block scalar's value starts on its first content line; ModSecurity counts from 1 there.
                loc.line = at.line() + n - 1;
            }
            let which = line_in_directives.map(|n| format!(" (line {n} of them)")).unwrap_or_default();
            vec![InputProblem { at: loc, field: "policy.rules.directives".into(), message: format!("ModSecurity rejects the directives{which}: {why}") }]
        }
        // The CRS itself did not load: an environment problem, reported when the run compiles the policy.
        Err(e) => {
            tracing::warn!("could not check the directives of {}: {e:#}", path.display());
            Vec::new()
        }
    }
}

/// ModSecurity's parse error without its noise (`Error adding plain rules...`, `File: 0x... at line: N`),
/// and the 1-based line within the directives it names.
#[cfg(feature = "reference-proxy")]
fn modsecurity_complaint(raw: &str) -> (Option<u64>, String) {
    let re = regex::Regex::new(r"\s*File: \S* at line: (\d+)\.?").expect("static regex");
    let line = re.captures(raw).and_then(|c| c[1].parse::<u64>().ok()).filter(|n| *n > 0);
    let text = re.replace_all(raw, "");
    let text = text.trim_start_matches("Error adding plain rules to rule set:").trim();
    (line, text.to_string())
}

/// Without the reference proxy there is no SecLang engine to check the directives with.
#[cfg(not(feature = "reference-proxy"))]
fn check_rules(_path: &Path, _s: &Scenario) -> Vec<InputProblem> {
    Vec::new()
}

/// Parses and validates scenario text; `path` names it in messages.
///
/// Three passes, each reporting every problem it finds: YAML syntax (one problem: the parser
/// cannot go on), the file's shape against the scenario schema (every unknown, missing or
/// mistyped field), then the checks between fields (names, references, contradictions), which
/// need a well-formed scenario to run.
pub fn parse(path: &Path, text: &str) -> Result<Scenario, InvalidInput> {
    let tree = tree::parse(path, text).map_err(|p| InvalidInput(vec![p]))?;
    let shape = tree::schema_problems(path, &tree, super::schema::validator());
    if !shape.is_empty() {
        return Err(InvalidInput(shape));
    }
    // The schema and serde agree by construction; should they not, serde's problem is still located.
    let scenario: Scenario = serde_saphyr::from_str(text).map_err(|e| InvalidInput(vec![saphyr_problem(path, 0, text, &e)]))?;
    let problems = validate(path, &scenario);
    if problems.is_empty() { Ok(scenario) } else { Err(InvalidInput(problems)) }
}

fn validate(path: &Path, s: &Scenario) -> Vec<InputProblem> {
    let mut out = Vec::new();
    let mut bad = |loc: &Location, field: &str, message: String| out.push(problem(path, loc, field, message));

    if !is_dns_label(s.name()) {
        bad(&s.name.referenced, "name", "must be a DNS label: lowercase letters, digits and `-`, at most 40 characters".into());
    }
    if !is_dns_label(&s.policy.name.value) {
        bad(&s.policy.name.referenced, "policy.name", "must be a DNS label: lowercase letters, digits and `-`, at most 40 characters".into());
    }
    for (value, loc, field) in [(s.name(), &s.name.referenced, "name"), (s.policy.name.value.as_str(), &s.policy.name.referenced, "policy.name")] {
        if let Some(key) = crate::contract::embedded_metric_key(value) {
            bad(loc, field, format!(
                "`{value}` contains the word `{key}`: the filter encodes labels in the stat name as `_{key}_<value>`, so the PodMonitor could not tell where a value holding it ends; choose a name without the words {:?}",
                crate::contract::METRIC_LABEL_KEYS));
        }
    }
    let mut tags = HashSet::new();
    for (i, t) in s.tags.iter().enumerate() {
        if !is_dns_label(&t.value) {
            bad(&t.referenced, &format!("tags[{i}]"), format!("`{}` is not a tag: lowercase letters, digits and `-`, at most 40 characters", t.value));
        } else if !tags.insert(t.value.as_str()) {
            bad(&t.referenced, &format!("tags[{i}]"), format!("`{}` is listed twice", t.value));
        }
    }
    let directives_empty = s.policy.rules.directives.as_ref().is_none_or(|d| d.value.trim().is_empty());
    if !s.policy.rules.crs && directives_empty {
        bad(&s.policy.name.referenced, "policy.rules", "loads no rules: set `crs: true` or give `directives`".into());
    }
    if s.traffic.value.is_empty() {
        bad(&s.traffic.referenced, "traffic", "is empty: a scenario sends at least one request".into());
    }
    let mut request_names = HashSet::new();
    for (i, r) in s.traffic.value.iter().enumerate() {
        if !request_names.insert(r.name.value.clone()) {
            bad(&r.name.referenced, &format!("traffic[{i}].name"), format!("duplicate request name `{}`", r.name.value));
        }
        if r.repeat.value == 0 {
            bad(&r.repeat.referenced, &format!("traffic[{i}].repeat"), "must be at least 1".into());
        }
        if !r.path.value.starts_with('/') {
            bad(&r.path.referenced, &format!("traffic[{i}].path"), "must start with `/`".into());
        }
        if !(100..=599).contains(&r.expect_status.value) {
            bad(&r.expect_status.referenced, &format!("traffic[{i}].expect_status"), "must be an HTTP status (100-599)".into());
        }
        if r.method.is_empty() || !r.method.bytes().all(|b| b.is_ascii_uppercase()) {
            bad(&r.name.referenced, &format!("traffic[{i}].method"), format!("`{}` is not an upper-case HTTP method", r.method));
        }
        let by_flavour = match &r.reaches_backend {
            Some(crate::scenario::ReachesBackend::PerFlavour(by_flavour)) => by_flavour.keys().collect(),
            _ => Vec::new(),
        };
        for flavour in by_flavour {
            if let Some(msg) = flavour_problem(flavour) {
                bad(&r.name.referenced, &format!("traffic[{i}].reaches_backend.{flavour}"), msg);
            }
        }
    }
    for (i, d) in s.expect.decisions.iter().enumerate() {
        let field = format!("expect.decisions[{i}]");
        if let Some(msg) = count_problem(d.increase.as_ref(), d.at_least.as_ref()) {
            bad(&s.traffic.referenced, &field, msg);
        }
        for key in d.labels.keys() {
            if !is_label_name(key) {
                bad(&s.traffic.referenced, &format!("{field}.labels.{key}"), "is not a Prometheus label name".into());
            }
            if key == "decision" {
                bad(&s.traffic.referenced, &format!("{field}.labels.decision"), "set `decision:` beside `labels`, not inside it".into());
            }
        }
        for (flavour, labels) in &d.by_filter {
            if let Some(msg) = flavour_problem(flavour) {
                bad(&s.traffic.referenced, &format!("{field}.by_filter.{flavour}"), msg);
            }
            for key in labels.keys() {
                if !is_label_name(key) || key == "decision" {
                    bad(&s.traffic.referenced, &format!("{field}.by_filter.{flavour}.{key}"), "is not a label a filter build can change".into());
                }
                if d.labels.contains_key(key) {
                    bad(&s.traffic.referenced, &format!("{field}.by_filter.{flavour}.{key}"), format!("`{key}` is also in `labels`: give it in one place"));
                }
            }
        }
    }
    if s.expect.no_decisions && !s.expect.decisions.is_empty() {
        bad(&s.traffic.referenced, "expect.no_decisions", "contradicts the listed `expect.decisions`".into());
    }
    if let Some(CountExpectation { increase, at_least }) = &s.expect.transactions {
        if let Some(msg) = count_problem(increase.as_ref(), at_least.as_ref()) {
            bad(&s.traffic.referenced, "expect.transactions", msg);
        }
        if increase.is_some() && !s.exclusive {
            let loc = increase.as_ref().map(|i| i.referenced).unwrap_or(Location::UNKNOWN);
            bad(&loc, "expect.transactions.increase",
                "transactions are gateway-wide: an exact increase needs `exclusive: true` (or use `at_least`)".into());
        }
    }
    let mut audited = HashSet::new();
    for (i, a) in s.expect.audit.iter().enumerate() {
        if !request_names.contains(&a.request.value) {
            bad(&a.request.referenced, &format!("expect.audit[{i}].request"), format!("names no request in `traffic`: `{}`", a.request.value));
        }
        if !audited.insert(a.request.value.clone()) {
            bad(&a.request.referenced, &format!("expect.audit[{i}].request"), format!("`{}` is listed twice", a.request.value));
        }
        if a.rule_ids.is_empty() && a.by_filter.is_empty() {
            bad(&a.request.referenced, &format!("expect.audit[{i}].rule_ids"), "is empty: name the rule ids the record must carry (here or per filter in `by_filter`)".into());
        }
        for (flavour, ids) in &a.by_filter {
            if let Some(msg) = flavour_problem(flavour) {
                bad(&a.request.referenced, &format!("expect.audit[{i}].by_filter.{flavour}"), msg);
            } else if ids.rule_ids.is_empty() {
                bad(&a.request.referenced, &format!("expect.audit[{i}].by_filter.{flavour}.rule_ids"), "is empty".into());
            }
        }
    }
    out
}

fn flavour_problem(flavour: &str) -> Option<String> {
    (!super::model::is_filter_flavour(flavour)).then(|| {
        format!("`{flavour}` is not a filter flavour: use one of {:?} or `custom-<name>` (and run with --waf-flavour <name>)", super::model::KNOWN_FILTER_FLAVOURS)
    })
}

fn count_problem(increase: Option<&Spanned<u64>>, at_least: Option<&Spanned<u64>>) -> Option<String> {
    match (increase, at_least) {
        (Some(_), Some(_)) => Some("give either `increase` or `at_least`, not both".into()),
        (None, None) => Some("needs `increase: N` (exact) or `at_least: N`".into()),
        _ => None,
    }
}

/// A Kubernetes-style DNS label, short enough to prefix with a run id.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn problem(path: &Path, loc: &Location, field: &str, message: String) -> InputProblem {
    InputProblem { at: located(path, 0, loc), field: field.to_string(), message }
}






