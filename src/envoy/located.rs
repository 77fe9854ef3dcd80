//! Where each field of a rendered document is written, so a translation error names its line.
//!
//! The documents are read once by `crate::rendered` (as JSON values with the document's start
//! line); this re-reads that document's text with serde-saphyr's `Spanned` to learn the line of
//! every key, keyed by the field path the translation reports (`spec.extraArgs[1]`).

use crate::error::{InputLocation, InputProblem, InvalidInput};
use crate::rendered::RenderedDocument;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
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
        if let Ok(node) = serde_saphyr::from_str::<Spanned<Node>>(&body.join("\n")) {
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

fn collect(node: &Spanned<Node>, path: &str, offset: u64, out: &mut BTreeMap<String, u64>) {
    match &node.value {
        Node::Map(entries) => {
            for (key, value) in entries {
                let child = if path.is_empty() { key.value.clone() } else { format!("{path}.{}", key.value) };
                out.insert(child.clone(), key.referenced.line() + offset);
                collect(value, &child, offset, out);
            }
        }
        Node::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let child = format!("{path}[{i}]");
                out.insert(child.clone(), item.referenced.line() + offset);
                collect(item, &child, offset, out);
            }
        }
        Node::Scalar => {}
    }
}

/// A YAML node with the location of every key and item (scalar values are not needed).
enum Node {
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            entries.push((key, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Map(entries))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Node, E> { Ok(Node::Scalar) }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> { Ok(Node::Scalar) }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> { Ok(Node::Scalar) }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> { Ok(Node::Scalar) }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> { Ok(Node::Scalar) }
    fn visit_unit<E>(self) -> Result<Node, E> { Ok(Node::Scalar) }
    fn visit_none<E>(self) -> Result<Node, E> { Ok(Node::Scalar) }
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
