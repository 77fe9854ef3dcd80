//! Where each field of a rendered document is written, so a translation error names its line.
//!
//! The documents are read once by `crate::rendered` (as JSON values with the document's start
//! line); this re-reads that document's text with the located YAML reader (`crate::input::tree`) to learn the line of
//! every key, keyed by the field path the translation reports (`spec.extraArgs[1]`).

use crate::error::{InputLocation, InputProblem, InvalidInput};
use crate::rendered::RenderedDocument;
use crate::input::tree::{self, Node, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The line of every field path of one document, and the document's own location as the fallback.
#[derive(Debug, Clone)]
pub struct FieldLines {
    doc: InputLocation,
    lines: BTreeMap<String, u64>,
}

impl FieldLines {
    /// Only the document's location: every field is reported at the document's first line.
    pub fn document_only(doc: InputLocation) -> FieldLines {
        FieldLines { doc, lines: BTreeMap::new() }
    }

    /// The field lines of `doc`, read again from its file; when that fails, [`FieldLines::document_only`].
    pub fn of_document(doc: &RenderedDocument) -> FieldLines {
        let at = InputLocation { file: doc.file.clone(), line: doc.line, column: 0 };
        let Ok(text) = std::fs::read_to_string(&doc.file) else { return FieldLines::document_only(at) };
        let offset = doc.line.saturating_sub(1);
        let body: Vec<&str> = text.lines().skip(offset as usize).take_while(|l| !is_document_marker(l)).collect();
        let mut lines = BTreeMap::new();
        // The one located YAML reader; a document it cannot read leaves every field at the document's line.
        if let Ok(node) = tree::parse(&doc.file, &body.join("\n")) {
            collect(&node, "", offset, &mut lines);
        }
        FieldLines { doc: at, lines }
    }

    /// Where `path` is written: its own line, else its nearest recorded ancestor's, else the document's.
    pub fn at(&self, path: &str) -> InputLocation {
        let mut p = path;
        loop {
            if let Some(&line) = self.lines.get(p) {
                return InputLocation { file: self.doc.file.clone(), line, column: 0 };
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.doc.clone(),
            }
        }
    }

    /// A problem with the field at `path`.
    pub fn problem(&self, path: &str, message: impl Into<String>) -> InputProblem {
        InputProblem { at: self.at(path), field: path.to_string(), message: message.into() }
    }

    /// The file the document came from.
    pub fn file(&self) -> &PathBuf {
        &self.doc.file
    }
}

/// Problems collected while translating one document; empty means the translation succeeded.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<InputProblem>);

impl Problems {
    /// Adds a problem.
    pub fn push(&mut self, p: InputProblem) {
        self.0.push(p);
    }

    /// `Ok(value)` when no problem was found, else every problem as one [`InvalidInput`].
    pub fn finish<T>(self, value: T) -> Result<T, InvalidInput> {
        if self.0.is_empty() { Ok(value) } else { Err(InvalidInput(self.0)) }
    }
}

fn is_document_marker(line: &str) -> bool {
    line.strip_prefix("---").is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

fn collect(node: &Node, path: &str, offset: u64, out: &mut BTreeMap<String, u64>) {
    match &node.value {
        Value::Map(entries) => {
            for (key, value) in entries {
                let child = if path.is_empty() { key.value.clone() } else { format!("{path}.{}", key.value) };
                out.insert(child.clone(), key.referenced.line() + offset);
                collect(value, &child, offset, out);
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let child = format!("{path}[{i}]");
                out.insert(child.clone(), item.referenced.line() + offset);
                collect(item, &child, offset, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_and_item_of_a_later_document_is_found_on_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.yaml");
        let text = "a: 1\n---\n# c\nkind: X\nspec:\n  list:\n    - one\n    - name: two\n      v: 2\n---\nb: 2\n";
        std::fs::write(&file, text).unwrap();
        let doc = RenderedDocument {
            file: file.clone(), line: 4, api_version: String::new(), kind: "X".into(), name: String::new(), namespace: None,
            value: serde_json::Value::Null,
        };
        let lines = FieldLines::of_document(&doc);
        assert_eq!(lines.at("kind").line, 4);
        assert_eq!(lines.at("spec.list[0]").line, 7);
        assert_eq!(lines.at("spec.list[1].v").line, 9);
        assert_eq!(lines.at("spec.list[1].missing").line, 8, "an unwritten field falls back to its parent");
        assert_eq!(lines.at("b").line, 4, "the next document is not part of this one");
    }
}
