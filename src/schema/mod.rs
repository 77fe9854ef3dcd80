//! The offline schema check: every object a run would apply, checked against the CRDs of the pinned
//! releases (and the k8s-openapi types for built-in kinds), the way an API server would check it, with
//! unknown fields as errors because a server prunes them silently.
//!
//! `crds` finds the schemas, `structural` and `formats` do the OpenAPI part, `cel_rules` the
//! `x-kubernetes-validations`, `core` the built-in kinds and every object's metadata; this module ties
//! them together into a [`Report`] whose problems name object, file, field path and rule.
//!
//! Not covered here (an API server would check them): admission webhooks, and
//! `x-kubernetes-validations` rules listed in the report as not evaluated. The Calico API server's
//! own validation of projectcalico.org/v3 objects is `crate::calico::validate`, added to the same
//! report by the plan check.

pub mod cel_rules;
pub mod core;
pub mod crds;
pub mod formats;
pub mod structural;

use crate::error::{InputLocation, InputProblem, InvalidInput};
use cel_rules::NotEvaluated;
use crds::{split_api_version, CrdIndex, Lookup};
use serde_json::Value;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One object to check, and the file it comes from (or what generates it).
#[derive(Debug, Clone)]
pub struct Subject {
    /// The file the object is read or rendered from.
    pub file: PathBuf,
    /// The object.
    pub value: Value,
}

/// One problem: which object, in which file, which field, which rule, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `Kind namespace/name` or `Kind name`.
    pub object: String,
    /// The file the object comes from.
    pub file: PathBuf,
    /// 1-based line of the field in the file, 0 when not known (schema problems, generated objects).
    pub line: u64,
    /// Dotted field path, empty for the whole object.
    pub field: String,
    /// The schema rule that failed.
    pub rule: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = if self.field.is_empty() { "(object)" } else { &self.field };
        let at = InputLocation { file: self.file.clone(), line: self.line, column: 0 };
        write!(f, "{} ({at}): field `{field}`: [{}] {}", self.object, self.rule, self.message)
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Objects checked.
    pub objects: usize,
    /// CRDs (group and kind) available.
    pub crds: usize,
    /// Schema files read.
    pub schema_files: usize,
    /// Every problem found.
    pub problems: Vec<Problem>,
    /// CEL rules evaluated.
    pub cel_evaluated: usize,
    /// CEL rules not evaluated, with the object they belong to.
    pub cel_not_evaluated: Vec<(String, NotEvaluated)>,
    /// Objects Calico's own validation (libcalico-go v3.31 rules) checked, offline.
    pub calico_validated: usize,
    /// Calico projectcalico.org/v3 objects checked against the crd.projectcalico.org spec.
    pub calico_backed: Vec<String>,
    /// What was deliberately not checked, and why.
    pub not_checked: Vec<String>,
    /// Objects whose schema check did not run because no CRD for their kind was at hand (only
    /// their metadata was checked); `validate --profile` refuses to pass with any.
    pub schema_not_run: usize,
    /// How long the check took, schema loading included when the caller loaded them.
    pub elapsed: Duration,
    /// How long reading and parsing the schema files took (part of `elapsed`).
    pub schema_load: Duration,
}

/// `Kind namespace/name` (or `Kind name`) of an object.
pub fn object_name(v: &Value) -> String {
    let kind = v["kind"].as_str().unwrap_or("?");
    let name = v["metadata"]["name"].as_str().unwrap_or("?");
    match v["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Whether a check of `subjects` needs the CRD of (group, kind): the kinds they use (and, for Calico
/// `projectcalico.org`, the backing `crd.projectcalico.org` kind).
pub fn needs(subjects: &[Subject]) -> impl Fn(&str, &str) -> bool + '_ {
    move |group: &str, kind: &str| {
        subjects.iter().any(|s| {
            let (g, _) = split_api_version(s.value["apiVersion"].as_str().unwrap_or(""));
            s.value["kind"] == kind && (g == group || (g == crds::CALICO_V3_GROUP && group == crds::CALICO_CRD_GROUP))
        })
    }
}

/// Checks every subject against `index` (custom kinds) and k8s-openapi (built-in kinds).
pub fn check(subjects: &[Subject], index: &CrdIndex) -> Report {
    let started = Instant::now();
    let mut report = Report { objects: subjects.len(), crds: index.found.max(index.len()), schema_files: index.files.len(), ..Report::default() };
    for s in subjects {
        let object = object_name(&s.value);
        let mut push = |field: String, rule: String, message: String| {
            report.problems.push(Problem { object: object.clone(), file: s.file.clone(), line: 0, field, rule, message });
        };
        let (Some(api_version), Some(kind)) = (s.value["apiVersion"].as_str(), s.value["kind"].as_str()) else {
            push(String::new(), "apiVersion/kind".into(), "no apiVersion or kind".into());
            continue;
        };
        let (group, _) = split_api_version(api_version);
        if core::is_built_in(group) {
            match core::check_built_in(api_version, kind, &s.value) {
                Some(findings) => findings.into_iter().for_each(|f| push(f.field, f.rule, f.message)),
                None => push(String::new(), "no schema".into(), format!(
                    "no schema for built-in {api_version} {kind}: the check knows {}", core::known_built_in().join(", "))),
            }
            continue;
        }
        let version = match index.lookup(api_version, kind) {
            Lookup::Found(v) => v,
            Lookup::CalicoBacking(v, backing) => {
                report.calico_backed.push(format!("{object} against {backing} {kind} ({})", v.file.display()));
                v
            }
            Lookup::WrongVersion(served) => {
                push("apiVersion".into(), "served version".into(), format!(
                    "{api_version} is not a served version of {kind} in the schemas given (served: {})", served.join(", ")));
                continue;
            }
            Lookup::Missing => {
                push(String::new(), "no schema".into(), format!(
                    "no CustomResourceDefinition for {api_version} {kind} in the schemas given ({} CRDs from {} files)",
                    index.found.max(index.len()), index.files.len()));
                continue;
            }
        };
        if !version.schema.is_object() {
            push(String::new(), "no schema".into(), format!("the CRD of {kind} in {} has no openAPIV3Schema for this version", version.file.display()));
            continue;
        }
        for f in core::check_metadata(&s.value, Some(version.scope == "Namespaced")) {
            push(f.field, f.rule, f.message);
        }
        let mut value = s.value.clone();
        structural::apply_defaults(&mut value, &version.schema);
        let (mut findings, mut sites) = (Vec::new(), Vec::new());
        structural::validate_object(&value, &version.schema, &mut findings, &mut sites);
        let cel = cel_rules::evaluate(&sites);
        report.cel_evaluated += cel.evaluated;
        for f in findings.into_iter().chain(cel.failures) {
            push(f.field, f.rule, f.message);
        }
        report.cel_not_evaluated.extend(cel.not_evaluated.into_iter().map(|n| (object.clone(), n)));
    }
    report.elapsed = started.elapsed();
    report
}

impl Report {
    /// The problems as invalid input (exit 2), each naming object, file, field and rule.
    pub fn problems_as_invalid_input(&self) -> Option<InvalidInput> {
        (!self.problems.is_empty()).then(|| {
            InvalidInput(
                self.problems
                    .iter()
                    .map(|p| InputProblem {
                        at: InputLocation { file: p.file.clone(), line: p.line, column: 0 },
                        field: p.field.clone(),
                        message: format!("{}: [{}] {}", p.object, p.rule, p.message),
                    })
                    .collect(),
            )
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schema check: {} object(s) against {} CRD(s) from {} file(s) and the k8s-openapi types: {} problem(s); \
             {} CEL rule(s) evaluated, {} not evaluated; {:.2}s ({:.2}s reading the schemas)",
            self.objects, self.crds, self.schema_files, self.problems.len(), self.cel_evaluated, self.cel_not_evaluated.len(),
            self.elapsed.as_secs_f64(), self.schema_load.as_secs_f64()
        )?;
        if self.calico_validated > 0 {
            writeln!(f, "  Calico validation (libcalico-go v3.31 rules, offline): {} object(s)", self.calico_validated)?;
        }
        for p in &self.problems {
            writeln!(f, "  PROBLEM {p}")?;
        }
        for c in &self.calico_backed {
            writeln!(f, "  note: Calico v3 object {c} (the Calico API server serves v3 from these specs)")?;
        }
        for (object, n) in &self.cel_not_evaluated {
            writeln!(f, "  CEL not evaluated: {object} field `{}`: `{}`: {}", if n.field.is_empty() { "(object)" } else { &n.field }, n.rule, n.reason)?;
        }
        for n in &self.not_checked {
            writeln!(f, "  not checked: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    /// A WAFPlugin CRD whose spec has a string `rules` and a CEL rule requiring it.
    fn crd() -> String {
        crate::schema::crds::test_crd("applicationlayer.projectcalico.org", "WAFPlugin", "Namespaced", "v3", json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                "spec": {"type": "object", "properties": {"rules": {"type": "string"}},
                    "x-kubernetes-validations": [{"rule": "has(self.rules) && size(self.rules) > 0", "message": "plugin must define rules"}]},
            },
        }))
    }

    fn index() -> CrdIndex {
        let mut i = CrdIndex::default();
        i.add_text(Path::new("crds/wafplugins.yaml"), &crd()).unwrap();
        i
    }

    fn subject(value: Value) -> Subject {
        Subject { file: "kind/profiles/tigera-waf-plugin.yaml".into(), value }
    }

    #[test]
    fn a_valid_custom_object_passes_and_its_cel_rule_is_counted() {
        let r = check(&[subject(json!({"apiVersion": "applicationlayer.projectcalico.org/v3", "kind": "WAFPlugin",
            "metadata": {"name": "p", "namespace": "shop"}, "spec": {"rules": "SecRule"}}))], &index());
        assert!(r.problems.is_empty(), "{r}");
        assert_eq!((r.objects, r.cel_evaluated), (1, 1));
    }

    #[test]
    fn the_old_directives_field_is_an_unknown_field_and_fails_the_cel_rule_naming_object_file_and_field() {
        let r = check(&[subject(json!({"apiVersion": "applicationlayer.projectcalico.org/v3", "kind": "WAFPlugin",
            "metadata": {"name": "p", "namespace": "shop"}, "spec": {"directives": ["SecRule"]}}))], &index());
        let lines: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2, "{r}");
        assert!(lines[0].starts_with("WAFPlugin shop/p (kind/profiles/tigera-waf-plugin.yaml): field `spec.directives`: [unknown field]"), "{}", lines[0]);
        assert!(lines[1].contains("field `spec`") && lines[1].contains("plugin must define rules"), "{}", lines[1]);
    }

    #[test]
    fn a_crd_version_without_a_schema_is_no_schema_not_a_list_of_unknown_fields() {
        let mut i = CrdIndex::default();
        i.add_text(Path::new("bare.yaml"), &crd().replace("      schema: ", "      bare: ")).unwrap();
        let r = check(&[subject(json!({"apiVersion": "applicationlayer.projectcalico.org/v3", "kind": "WAFPlugin",
            "metadata": {"name": "p", "namespace": "shop"}, "spec": {"rules": "x"}}))], &i);
        assert_eq!(r.problems.len(), 1, "{r}");
        assert!(r.problems[0].rule == "no schema" && r.problems[0].message.contains("bare.yaml"), "{r}");
    }

    #[test]
    fn an_object_without_a_schema_is_an_error_naming_it() {
        let r = check(&[subject(json!({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"}}))], &index());
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].rule, "no schema");
        assert_eq!(r.problems[0].object, "Thing t");
        assert!(r.problems_as_invalid_input().unwrap().to_string().contains("Thing t"));
    }
}
