//! Loading the rendered resources: multi-document YAML, the PodMonitor typed, everything raw.

use super::model::{PodMonitor, RELABEL_ACTIONS};
use crate::error::{InputLocation, InputProblem, InvalidInput};
use crate::input::{whole_file, yaml_files};
use serde_saphyr::Location;
use std::path::{Path, PathBuf};

/// One YAML document of the rendered set, kept as written for the kind stack to apply.
#[derive(Debug, Clone)]
pub struct RenderedDocument {
    /// The file it came from.
    pub file: PathBuf,
    /// 1-based line where the document starts.
    pub line: u64,
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, if any.
    pub namespace: Option<String>,
    /// The whole document.
    pub value: serde_json::Value,
}

/// The resources under test, as the operator renders them (`fixtures/rendered/`).
#[derive(Debug, Clone)]
pub struct RenderedSet {
    /// The PodMonitor, typed.
    pub podmonitor: PodMonitor,
    /// Where the PodMonitor was found (file, document start line).
    pub podmonitor_at: InputLocation,
    /// EVERY document in file order, the PodMonitor included (the kind stack applies them all).
    pub documents: Vec<RenderedDocument>,
}

impl RenderedSet {
    /// Loads `path`: a directory (every `*.yaml`/`*.yml` in it, sorted) or a single file.
    /// Malformed documents are an [`InvalidInput`] naming file, line, column and field; so is a set
    /// without a PodMonitor, or with more than one.
    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<RenderedSet> {
        Ok(load_set(path.as_ref())?)
    }

    /// The documents other than the PodMonitor.
    pub fn others(&self) -> impl Iterator<Item = &RenderedDocument> {
        self.documents.iter().filter(|d| d.kind != "PodMonitor")
    }
}

fn load_set(path: &Path) -> Result<RenderedSet, InvalidInput> {
    let files = yaml_files(path).map_err(|message| one(whole_file(path), "", message))?;
    if files.is_empty() {
        return Err(one(whole_file(path), "", "no YAML files (*.yaml, *.yml) found here".into()));
    }
    let mut problems = Vec::new();
    let mut documents = Vec::new();
    let mut podmonitors: Vec<(PodMonitor, InputLocation)> = Vec::new();
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(problem(whole_file(file), "", format!("cannot read: {e}")));
                continue;
            }
        };
        for (offset, doc_text) in split_documents(&text) {
            match parse_document(file, offset, doc_text) {
                Ok((doc, pm)) => {
                    if let Some(pm) = pm {
                        podmonitors.push((pm, InputLocation { file: file.clone(), line: doc.line, column: 0 }));
                    }
                    documents.push(doc);
                }
                Err(InvalidInput(mut p)) => problems.append(&mut p),
            }
        }
    }
    if problems.is_empty() {
        if podmonitors.len() > 1 {
            for (_, at) in &podmonitors[1..] {
                problems.push(problem(at.clone(), "kind",
                    format!("a second PodMonitor (the first is at {}): the rendered set holds exactly one", podmonitors[0].1)));
            }
        } else if podmonitors.is_empty() {
            problems.push(problem(whole_file(path), "", "no PodMonitor (monitoring.coreos.com/v1) in the rendered resources".into()));
        }
    }
    if !problems.is_empty() {
        return Err(InvalidInput(problems));
    }
    let (podmonitor, podmonitor_at) = podmonitors.remove(0);
    Ok(RenderedSet { podmonitor, podmonitor_at, documents })
}

/// Parses one file that must hold a PodMonitor (used by `waf-e2e scrape-config --podmonitor FILE`).
pub fn load_podmonitor_file(path: &Path) -> anyhow::Result<PodMonitor> {
    Ok(RenderedSet::load(path)?.podmonitor)
}

/// Parses one PodMonitor from text; `path` names it in messages.
pub fn parse_podmonitor(path: &Path, text: &str) -> Result<PodMonitor, InvalidInput> {
    let mut found = None;
    let mut problems = Vec::new();
    for (offset, doc_text) in split_documents(text) {
        match parse_document(path, offset, doc_text) {
            Ok((_, Some(pm))) if found.is_none() => found = Some(pm),
            Ok(_) => {}
            Err(InvalidInput(mut p)) => problems.append(&mut p),
        }
    }
    if !problems.is_empty() {
        return Err(InvalidInput(problems));
    }
    found.ok_or_else(|| one(whole_file(path), "kind", "no PodMonitor (monitoring.coreos.com/v1) here".into()))
}

/// Splits a multi-document stream at `---` lines; yields (0-based line offset, document text).
/// A line starting with `---` followed by a blank or the end is always a document marker in YAML,
/// even inside a block scalar, so the split is exact. Documents holding only comments are skipped.
pub fn split_documents(text: &str) -> Vec<(u64, &str)> {
    let mut starts = vec![(0u64, 0usize)];
    let mut pos = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let marker = bare.strip_prefix("---").is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']));
        if marker && pos > 0 {
            starts.push((i as u64, pos));
        }
        pos += line.len();
    }
    let mut out = Vec::new();
    for (k, &(line, start)) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(text.len(), |s| s.1);
        let doc = &text[start..end];
        let empty = doc.lines().all(|l| {
            let t = l.trim();
            let t = t.strip_prefix("---").map_or(t, str::trim_start);
            t.is_empty() || t.starts_with('#') || t == "..."
        });
        if !empty {
            out.push((line, doc));
        }
    }
    out
}

type Parsed = (RenderedDocument, Option<PodMonitor>);

fn parse_document(file: &Path, offset: u64, text: &str) -> Result<Parsed, InvalidInput> {
    let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| saphyr_problem(file, offset, text, &e))?;
    let start = first_content_line(text) + offset;
    let doc_at = InputLocation { file: file.to_path_buf(), line: start, column: 1 };
    let Some(map) = value.as_object() else {
        return Err(one(doc_at, "", "a Kubernetes object (a mapping with apiVersion, kind, metadata) is expected".into()));
    };
    let text_field = |key: &str| map.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let meta = map.get("metadata").and_then(|m| m.as_object());
    let mut problems = Vec::new();
    let api_version = text_field("apiVersion").unwrap_or_else(|| {
        problems.push(problem(doc_at.clone(), "apiVersion", "missing (a string such as `monitoring.coreos.com/v1`)".into()));
        String::new()
    });
    let kind = text_field("kind").unwrap_or_else(|| {
        problems.push(problem(doc_at.clone(), "kind", "missing (a string such as `PodMonitor`)".into()));
        String::new()
    });
    let name = meta.and_then(|m| m.get("name")).and_then(|v| v.as_str()).map(str::to_string).unwrap_or_else(|| {
        problems.push(problem(doc_at.clone(), "metadata.name", "missing".into()));
        String::new()
    });
    let namespace = meta.and_then(|m| m.get("namespace")).and_then(|v| v.as_str()).map(str::to_string);
    if !problems.is_empty() {
        return Err(InvalidInput(problems));
    }
    let mut podmonitor = None;
    if kind == "PodMonitor" {
        if api_version != "monitoring.coreos.com/v1" {
            return Err(one(doc_at, "apiVersion", format!("`{api_version}`: a PodMonitor is monitoring.coreos.com/v1")));
        }
        let pm: PodMonitor = serde_saphyr::from_str(text).map_err(|e| saphyr_problem(file, offset, text, &e))?;
        validate(file, offset, &doc_at, &pm)?;
        podmonitor = Some(pm);
    }
    Ok((RenderedDocument { file: file.to_path_buf(), line: start, api_version, kind, name, namespace, value }, podmonitor))
}

fn validate(file: &Path, offset: u64, doc_at: &InputLocation, pm: &PodMonitor) -> Result<(), InvalidInput> {
    let mut problems = Vec::new();
    if pm.metadata.namespace.is_none() {
        problems.push(problem(doc_at.clone(), "metadata.namespace",
            "missing: the scrape job is named after it (podMonitor/<namespace>/<name>/<index>)".into()));
    }
    if pm.spec.pod_metrics_endpoints.value.is_empty() {
        problems.push(problem(at(file, offset, &pm.spec.pod_metrics_endpoints.referenced), "spec.podMetricsEndpoints",
            "is empty: nothing would be scraped".into()));
    }
    for (i, ep) in pm.spec.pod_metrics_endpoints.value.iter().enumerate() {
        if ep.port.as_deref().is_none_or(str::is_empty) {
            problems.push(problem(at(file, offset, &pm.spec.pod_metrics_endpoints.referenced),
                &format!("spec.podMetricsEndpoints[{i}].port"), "missing: the container port name to scrape (`metrics`)".into()));
        }
        for (list, rcs) in [("relabelings", &ep.relabelings), ("metricRelabelings", &ep.metric_relabelings)] {
            for (j, rc) in rcs.iter().enumerate() {
                let field = format!("spec.podMetricsEndpoints[{i}].{list}[{j}]");
                if let Some(action) = &rc.action {
                    if !RELABEL_ACTIONS.contains(&action.value.to_ascii_lowercase().as_str()) {
                        problems.push(problem(at(file, offset, &action.referenced), &format!("{field}.action"),
                            format!("unknown relabel action `{}` (one of {})", action.value, RELABEL_ACTIONS.join(", "))));
                    }
                }
                if let Some(regex) = &rc.regex {
                    // Prometheus anchors the regex; the `regex` crate's syntax is RE2's for everything relabeling uses.
                    if let Err(e) = regex::Regex::new(&format!("^(?:{})$", regex.value)) {
                        let msg = e.to_string().lines().last().unwrap_or_default().to_string();
                        problems.push(problem(at(file, offset, &regex.referenced), &format!("{field}.regex"),
                            format!("not a valid RE2 regex: {msg}")));
                    }
                }
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(InvalidInput(problems)) }
}

fn first_content_line(text: &str) -> u64 {
    text.lines()
        .position(|l| {
            let t = l.trim();
            !(t.is_empty() || t.starts_with('#') || t == "---")
        })
        .map_or(1, |i| i as u64 + 1)
}

fn saphyr_problem(file: &Path, offset: u64, text: &str, e: &serde_saphyr::Error) -> InvalidInput {
    InvalidInput(vec![crate::input::saphyr_problem(file, offset, text, e)])
}

fn at(file: &Path, offset: u64, loc: &Location) -> InputLocation {
    crate::input::located(file, offset, loc)
}

fn problem(at: InputLocation, field: &str, message: String) -> InputProblem {
    InputProblem { at, field: field.to_string(), message }
}

fn one(at: InputLocation, field: &str, message: String) -> InvalidInput {
    InvalidInput(vec![problem(at, field, message)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_split_at_marker_lines_with_their_line_offsets() {
        let text = "# head\na: 1\n---\nb: 2\n--- # c\n# only a comment\n---\nc: 3\n";
        let docs = split_documents(text);
        let offsets: Vec<u64> = docs.iter().map(|d| d.0).collect();
        assert_eq!(offsets, vec![0, 2, 6]);
        assert!(docs[2].1.contains("c: 3"));
    }
}
