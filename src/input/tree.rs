//! YAML read into a tree that remembers where each node was written, and checked against a JSON
//! Schema: every problem of a file at once, each with line, column and field.
//!
//! serde stops at the first error of a file. Checking the file's tree against the schema that is
//! generated from the same model (`waf-e2e schema`) finds every unknown, missing and mistyped
//! field in one pass; the schema's error paths lead back to the nodes, and so to their lines.

use crate::error::InputProblem;
use crate::input::{located, saphyr_problem};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::JsonType;
use jsonschema::ValidationError;
use jsonschema::paths::LocationSegment;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};
use std::path::Path;

/// A YAML node and where it was written.
pub type Node = Spanned<Value>;

/// A YAML value whose children keep their locations.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// Any other scalar.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order, each key with its own location.
    Map(Vec<(Spanned<String>, Node)>),
}

impl Value {
    /// The same value as JSON (later duplicate keys win, as in serde's maps).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(|n| n.value.to_json()).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (k.value.clone(), v.value.to_json())).collect()),
        }
    }
}

/// Parses `text` into a located tree; a YAML syntax error is the one problem it can report.
///
/// Booleans are YAML 1.2's (`true`/`false`), as editors read them: with YAML 1.1's, `On` (a WAF
/// mode) and `n` (a key) would turn into booleans here, while serde reads them as text.
pub fn parse(path: &Path, text: &str) -> Result<Node, InputProblem> {
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|e| saphyr_problem(path, 0, text, &e))
}

/// Every way `root` breaks `schema`, each located in `path` and naming its dotted field.
pub fn schema_problems(path: &Path, root: &Node, schema: &jsonschema::Validator) -> Vec<InputProblem> {
    let instance = root.value.to_json();
    let mut problems = Vec::new();
    for error in schema.iter_errors(&instance) {
        locate_error(path, root, &error, &mut problems);
    }
    problems.sort_by_key(|p| (p.at.line, p.at.column));
    problems.dedup();
    problems
}

/// Turns one schema error into located problems (several for several unknown keys).
fn locate_error(path: &Path, root: &Node, error: &ValidationError<'_>, out: &mut Vec<InputProblem>) {
    let segments: Vec<LocationSegment<'_>> = error.instance_path().segments().collect();
    let (node, field) = walk(root, &segments);
    let mut report = |at: &Location, field: String, message: String| out.push(InputProblem { at: located(path, 0, at), field, message });
    match error.kind() {
        // serde reads a plain number or boolean into a text field as written (`rule_id: 949110`).
        ValidationErrorKind::Type { kind: TypeKind::Single(JsonType::String) } if matches!(node.value, Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Bool(_)) => {}
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            for key in unexpected {
                let at = key_location(node, key).unwrap_or(node.referenced);
                report(&at, join(&field, key), "unknown field".into());
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().map_or_else(|| property.to_string(), str::to_string);
            report(&node.referenced, join(&field, &name), "missing: this field is required".into());
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            let choices: Option<Vec<String>> = context.iter().map(|branch| branch.iter().find_map(constant)).collect();
            match choices {
                // An enumeration (schemars writes one `const` per documented variant).
                Some(choices) if !choices.is_empty() => report(&node.referenced, field, format!("{} is not one of {}", error.instance(), choices.join(", "))),
                _ => {
                    // `Option<T>` is "T or null": report what is wrong inside the alternative whose type fits.
                    let here = error.instance_path().as_str();
                    let fitting = context.iter().find(|branch| !branch.iter().any(|e| is_type_error(e) && e.instance_path().as_str() == here));
                    match fitting {
                        Some(branch) if !branch.is_empty() => {
                            for inner in branch {
                                locate_error(path, root, inner, out);
                            }
                        }
                        _ => report(&node.referenced, field, error.to_string()),
                    }
                }
            }
        }
        _ => report(&node.referenced, field, error.to_string()),
    }
}

fn constant(error: &ValidationError<'_>) -> Option<String> {
    match error.kind() {
        ValidationErrorKind::Constant { expected_value } => Some(expected_value.to_string()),
        _ => None,
    }
}

fn is_type_error(error: &ValidationError<'_>) -> bool {
    matches!(error.kind(), ValidationErrorKind::Type { .. })
}

/// The node at `segments` under `root` (or the deepest one that exists) and its dotted field name.
fn walk<'a>(root: &'a Node, segments: &[LocationSegment<'_>]) -> (&'a Node, String) {
    let mut node = root;
    let mut field = String::new();
    for segment in segments {
        let child = match (segment, &node.value) {
            (LocationSegment::Property(name), Value::Map(entries)) => {
                field = join(&field, name);
                entries.iter().rev().find(|(k, _)| k.value == *name).map(|(_, v)| v)
            }
            (LocationSegment::Index(i), Value::Seq(items)) => {
                field.push_str(&format!("[{i}]"));
                items.get(*i)
            }
            _ => None,
        };
        match child {
            Some(c) => node = c,
            None => break,
        }
    }
    (node, field)
}

fn key_location(node: &Node, key: &str) -> Option<Location> {
    match &node.value {
        Value::Map(entries) => entries.iter().find(|(k, _)| k.value == key).map(|(k, _)| k.referenced),
        _ => None,
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_string() } else { format!("{parent}.{name}") }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(u64::try_from(i).map_or(Value::Int(i), Value::UInt))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(Value::UInt(u))
    }

    fn visit_i128<E: de::Error>(self, i: i128) -> Result<Value, E> {
        // Beyond 64 bits: kept as text, so the schema reports it as no integer a field could hold.
        Ok(i64::try_from(i).map(Value::Int).or_else(|_| u64::try_from(i).map(Value::UInt)).unwrap_or_else(|_| Value::Str(i.to_string())))
    }

    fn visit_u128<E: de::Error>(self, u: u128) -> Result<Value, E> {
        Ok(u64::try_from(u).map_or_else(|_| Value::Str(u.to_string()), Value::UInt))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Str(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::Str(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Key>>()? {
            let value = map.next_value::<Node>()?;
            entries.push((Spanned::new(key.value.0, key.referenced, key.defined), value));
        }
        Ok(Value::Map(entries))
    }
}

/// A mapping key: any scalar, as text (JSON object keys are strings).
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Str(s) => Ok(Key(s)),
            Value::Null => Ok(Key("null".into())),
            Value::Bool(b) => Ok(Key(b.to_string())),
            Value::Int(i) => Ok(Key(i.to_string())),
            Value::UInt(u) => Ok(Key(u.to_string())),
            Value::Float(f) => Ok(Key(f.to_string())),
            Value::Seq(_) | Value::Map(_) => Err(de::Error::custom("a mapping key must be a scalar, not a sequence or mapping")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> jsonschema::Validator {
        jsonschema::validator_for(&serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["name", "items"],
            "properties": {
                "name": {"type": "string"},
                "items": {"type": "array", "items": {
                    "type": "object", "additionalProperties": false, "required": ["n"],
                    "properties": {"n": {"type": "integer", "minimum": 0}, "mode": {"enum": ["On", "Off"]}}
                }},
                "decision": {"oneOf": [{"const": "blocked", "type": "string"}, {"const": "would_block", "type": "string"}]},
                "count": {"anyOf": [{"type": "null"}, {"type": "object", "additionalProperties": false, "properties": {"at_least": {"type": "integer"}}}]}
            }
        }))
        .expect("valid schema")
    }

    fn problems(text: &str) -> Vec<String> {
        let root = parse(Path::new("f.yaml"), text).unwrap_or_else(|p| panic!("{p}"));
        schema_problems(Path::new("f.yaml"), &root, &schema()).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_valid_document_has_no_problems() {
        assert_eq!(problems("name: a\nitems:\n  - n: 1\n    mode: On\n"), Vec::<String>::new());
    }

    #[test]
    fn every_problem_of_a_document_is_reported_with_its_line_column_and_field() {
        let text = "name: a\ncolour: red\nitems:\n  - n: -1\n  - mode: Sideways\n    extra: 1\ndecision: maybe\ncount:\n  at_most: 3\n";
        assert_eq!(problems(text), [
            "f.yaml:2:1: field `colour`: unknown field",
            "f.yaml:4:8: field `items[0].n`: -1 is less than the minimum of 0",
            "f.yaml:5:5: field `items[1].n`: missing: this field is required",
            "f.yaml:5:11: field `items[1].mode`: \"Sideways\" is not one of \"On\" or \"Off\"",
            "f.yaml:6:5: field `items[1].extra`: unknown field",
            "f.yaml:7:11: field `decision`: \"maybe\" is not one of \"blocked\", \"would_block\"",
            "f.yaml:9:3: field `count.at_most`: unknown field",
        ]);
    }

    #[test]
    fn a_document_that_is_not_a_mapping_is_one_problem_at_its_start() {
        assert_eq!(problems("- a\n"), ["f.yaml:1:1: [\"a\"] is not of type \"object\""]);
    }

    #[test]
    fn a_plain_number_where_text_is_expected_is_text_as_for_serde() {
        assert_eq!(problems("name: 42\nitems: []\n"), Vec::<String>::new());
        assert_eq!(problems("name: [42]\nitems: []\n"), ["f.yaml:1:7: field `name`: [42] is not of type \"string\""]);
    }

    #[test]
    fn scalars_keep_their_yaml_types_and_quoted_numbers_stay_text() {
        let root = parse(Path::new("f.yaml"), "a: 1\nb: '1'\nc: -2\nd: 1.5\ne: true\nf: ~\ng: On\n").unwrap();
        assert_eq!(root.value.to_json(), serde_json::json!({"a": 1, "b": "1", "c": -2, "d": 1.5, "e": true, "f": null, "g": "On"}));
    }
}
