//! The structural part of an API server's CRD validation, offline: defaults, unknown fields (which a
//! server prunes silently, so they are errors here), types, required fields, enums, patterns, formats,
//! lengths and bounds, int-or-string, preserve-unknown-fields and embedded resources.
//!
//! `x-kubernetes-validations` (CEL) rules met on the way are collected for [`super::cel_rules`].

use super::formats::check_format;
use serde_json::{Map, Value};

/// One violation: the field path (`spec.wasm[0].config`), the rule that failed, and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Dotted path of the field, `[i]` for list items and `[key]` for map entries.
    pub field: String,
    /// The schema rule (`unknown field`, `type`, `required`, `enum`, `pattern`, ...).
    pub rule: String,
    /// What is wrong, in a sentence.
    pub message: String,
}

/// The CEL rules of one schema node, with the (defaulted) value they apply to.
#[derive(Debug, Clone)]
pub struct CelSite {
    /// Field path of the value (`self`).
    pub field: String,
    /// The value `self` stands for.
    pub value: Value,
    /// The node's `x-kubernetes-validations` entries.
    pub rules: Vec<Value>,
}

/// Fills `default`s of absent properties, as the API server does before validating.
pub fn apply_defaults(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, sub) in props {
                    if !map.contains_key(key) {
                        if let Some(d) = sub.get("default") {
                            map.insert(key.clone(), d.clone());
                        }
                    }
                    if let Some(child) = map.get_mut(key) {
                        apply_defaults(child, sub);
                    }
                }
            } else if let Some(sub) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for child in map.values_mut() {
                    apply_defaults(child, sub);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for item in items {
                    apply_defaults(item, sub);
                }
            }
        }
        _ => {}
    }
}

/// Validates a custom object (already defaulted) against its version's `openAPIV3Schema`; `metadata` is
/// left to the ObjectMeta check.
pub fn validate_object(object: &Value, schema: &Value, findings: &mut Vec<Finding>, cel: &mut Vec<CelSite>) {
    let mut v = Walker { findings, cel: Some(cel), value_only: false };
    v.walk(object, schema, "", true);
}

struct Walker<'a> {
    findings: &'a mut Vec<Finding>,
    cel: Option<&'a mut Vec<CelSite>>,
    /// Inside allOf/anyOf/oneOf/not: value validations only (no pruning, no CEL).
    value_only: bool,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 { format!("{}...", s.chars().take(57).collect::<String>()) } else { s }
}

impl Walker<'_> {
    fn fail(&mut self, field: &str, rule: &str, message: String) {
        self.findings.push(Finding { field: field.to_string(), rule: rule.to_string(), message });
    }

    fn walk(&mut self, value: &Value, schema: &Value, path: &str, root: bool) {
        if value.is_null() {
            if !schema.get("nullable").and_then(Value::as_bool).unwrap_or(false) {
                self.fail(path, "nullable", "null is not allowed here (the server drops it: the field is not nullable)".into());
            }
            return;
        }
        let int_or_string = schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool).unwrap_or(false);
        let seen = type_name(value);
        if int_or_string {
            if !matches!(seen, "integer" | "string") {
                self.fail(path, "type", format!("must be an integer or a string (int-or-string), got {seen} {}", short(value)));
                return;
            }
        } else if let Some(want) = schema.get("type").and_then(Value::as_str) {
            let ok = seen == want || (want == "number" && seen == "integer");
            if !ok {
                self.fail(path, "type", format!("must be {want}, got {seen} {}", short(value)));
                return;
            }
        }
        self.scalar_rules(value, schema, path);
        match value {
            Value::Object(map) => self.object(map, schema, path, root),
            Value::Array(items) => self.array(items, schema, path),
            _ => {}
        }
        self.combinators(value, schema, path);
        if !self.value_only {
            if let (Some(rules), Some(cel)) = (schema.get("x-kubernetes-validations").and_then(Value::as_array), self.cel.as_deref_mut()) {
                cel.push(CelSite { field: path.to_string(), value: value.clone(), rules: rules.clone() });
            }
        }
    }

    fn object(&mut self, map: &Map<String, Value>, schema: &Value, path: &str, root: bool) {
        let preserve = schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool).unwrap_or(false);
        let embedded = schema.get("x-kubernetes-embedded-resource").and_then(Value::as_bool).unwrap_or(false);
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        for req in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if !map.contains_key(req) {
                self.fail(&child(path, req), "required", format!("required field `{req}` is missing"));
            }
        }
        let count = map.len() as u64;
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64).filter(|m| count > *m) {
            self.fail(path, "maxProperties", format!("has {count} entries, at most {max} allowed"));
        }
        if let Some(min) = schema.get("minProperties").and_then(Value::as_u64).filter(|m| count < *m) {
            self.fail(path, "minProperties", format!("has {count} entries, at least {min} required"));
        }
        for (key, v) in map {
            // ObjectMeta is checked on its own; an embedded resource may carry apiVersion/kind/metadata.
            if (root || embedded) && key == "metadata" {
                continue;
            }
            if embedded && (key == "apiVersion" || key == "kind") && props.is_none_or(|p| !p.contains_key(key)) {
                continue;
            }
            if let Some(sub) = props.and_then(|p| p.get(key)) {
                self.walk(v, sub, &child(path, key), false);
            } else if let Some(sub) = additional {
                self.walk(v, sub, &format!("{path}[{key}]"), false);
            } else if !preserve && !self.value_only && schema.get("additionalProperties") != Some(&Value::Bool(true)) {
                let known: Vec<&str> = props.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                let hint = if known.is_empty() { "this object takes no fields".to_string() } else { format!("known fields: {}", known.join(", ")) };
                self.fail(&child(path, key), "unknown field", format!("unknown field `{key}`: the API server would prune it silently ({hint})"));
            }
        }
    }

    fn array(&mut self, items: &[Value], schema: &Value, path: &str) {
        let n = items.len() as u64;
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64).filter(|m| n > *m) {
            self.fail(path, "maxItems", format!("has {n} items, at most {max} allowed"));
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64).filter(|m| n < *m) {
            self.fail(path, "minItems", format!("has {n} items, at least {min} required"));
        }
        if let Some(sub) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.walk(item, sub, &format!("{path}[{i}]"), false);
            }
        }
        let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
        let keys: Vec<&str> = schema.get("x-kubernetes-list-map-keys").and_then(Value::as_array).map(|k| k.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let identity = |item: &Value| -> Value {
            match list_type {
                Some("map") => Value::Array(keys.iter().map(|k| item.get(*k).cloned().unwrap_or(Value::Null)).collect()),
                _ => item.clone(),
            }
        };
        if matches!(list_type, Some("set" | "map")) {
            for (i, item) in items.iter().enumerate() {
                if items[..i].iter().any(|earlier| identity(earlier) == identity(item)) {
                    self.fail(&format!("{path}[{i}]"), &format!("x-kubernetes-list-type={}", list_type.unwrap_or_default()), format!("duplicate entry {}", short(&identity(item))));
                }
            }
        }
    }

    fn scalar_rules(&mut self, value: &Value, schema: &Value, path: &str) {
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                let list: Vec<String> = options.iter().map(short).collect();
                self.fail(path, "enum", format!("{} is not one of {}", short(value), list.join(", ")));
            }
        }
        if let Value::String(s) = value {
            let len = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64).filter(|m| len > *m) {
                self.fail(path, "maxLength", format!("is {len} characters long, at most {max} allowed"));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64).filter(|m| len < *m) {
                self.fail(path, "minLength", format!("is {len} characters long, at least {min} required"));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(s) => self.fail(path, "pattern", format!("{} does not match the pattern {p}", short(value))),
                    Ok(_) => {}
                    Err(e) => self.fail(path, "pattern", format!("the schema's pattern {p} does not compile here ({e}); the value was not checked against it")),
                }
            }
            if let Some(format) = schema.get("format").and_then(Value::as_str) {
                if let Err(why) = check_format(format, s) {
                    self.fail(path, "format", format!("{} is not a valid {format}: {why}", short(value)));
                }
            }
        }
        if let Some(n) = value.as_f64().filter(|_| value.is_number()) {
            let exclusive = |k: &str| schema.get(k).and_then(Value::as_bool).unwrap_or(false);
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                if n > max || (exclusive("exclusiveMaximum") && n == max) {
                    self.fail(path, "maximum", format!("{n} is above the maximum {max}"));
                }
            }
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if n < min || (exclusive("exclusiveMinimum") && n == min) {
                    self.fail(path, "minimum", format!("{n} is below the minimum {min}"));
                }
            }
            if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64).filter(|m| *m > 0.0) {
                if (n / m).fract() != 0.0 {
                    self.fail(path, "multipleOf", format!("{n} is not a multiple of {m}"));
                }
            }
        }
    }

    /// allOf/anyOf/oneOf/not carry value validations only (structural schemas put no types there).
    fn combinators(&mut self, value: &Value, schema: &Value, path: &str) {
        let passes = |sub: &Value| {
            let mut scratch = Vec::new();
            Walker { findings: &mut scratch, cel: None, value_only: true }.walk(value, sub, path, false);
            scratch.is_empty()
        };
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                let mut inner = Walker { findings: &mut *self.findings, cel: None, value_only: true };
                inner.walk(value, sub, path, false);
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            if !any.iter().any(passes) {
                self.fail(path, "anyOf", format!("matches none of the {} alternatives the schema allows", any.len()));
            }
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let n = one.iter().filter(|s| passes(s)).count();
            if n != 1 {
                self.fail(path, "oneOf", format!("matches {n} of the {} alternatives, exactly one required", one.len()));
            }
        }
        if let Some(not) = schema.get("not") {
            if passes(not) {
                self.fail(path, "not", "matches a shape the schema forbids (`not`)".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn findings(value: Value, schema: Value) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut value = value;
        apply_defaults(&mut value, &schema);
        validate_object(&value, &schema, &mut out, &mut Vec::new());
        out
    }

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "metadata": {"type": "object"},
            "spec": {"type": "object", "required": ["action"], "properties": {
                "action": {"type": "string", "enum": ["Detect", "Block"]},
                "port": {"x-kubernetes-int-or-string": true},
                "order": {"type": "number"},
                "name": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "refs": {"type": "array", "items": {"type": "object", "properties": {"kind": {"type": "string", "default": "WAFPlugin"}}}}
            }}
        }})
    }

    #[test]
    fn a_valid_object_passes_with_int_or_string_maps_and_preserved_fields() {
        let f = findings(json!({"metadata": {"name": "x", "anything": 1}, "spec": {"action": "Block", "port": "http", "order": 1,
            "labels": {"a": "b"}, "free": {"deep": {"x": 1}}}}), schema());
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn each_rule_names_the_field_path() {
        let f = findings(json!({"spec": {"action": "Deny", "port": true, "order": "1", "name": "ABCDEFG", "labels": {"a": 1},
            "actoin": "Block", "refs": [{"kind": "X", "knd": 1}]}}), schema());
        let got: Vec<(String, String)> = f.iter().map(|f| (f.field.clone(), f.rule.clone())).collect();
        for want in [("spec.action", "enum"), ("spec.port", "type"), ("spec.order", "type"), ("spec.name", "maxLength"),
            ("spec.name", "pattern"), ("spec.labels[a]", "type"), ("spec.actoin", "unknown field"), ("spec.refs[0].knd", "unknown field")] {
            assert!(got.contains(&(want.0.to_string(), want.1.to_string())), "{want:?} not in {got:?}");
        }
        let missing = findings(json!({"spec": {}}), schema());
        assert_eq!(missing[0].field, "spec.action");
        assert_eq!(missing[0].rule, "required");
    }

    #[test]
    fn defaults_are_applied_before_validation() {
        let mut v = json!({"spec": {"action": "Block", "refs": [{}]}});
        apply_defaults(&mut v, &schema());
        assert_eq!(v["spec"]["refs"][0]["kind"], "WAFPlugin");
    }

    #[test]
    fn one_of_needs_exactly_one_alternative() {
        let s = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "oneOf": [{"required": ["a"]}, {"required": ["b"]}]});
        assert!(findings(json!({"a": "x"}), s.clone()).is_empty());
        let both = findings(json!({"a": "x", "b": "y"}), s);
        assert_eq!(both[0].rule, "oneOf", "{both:?}");
    }
}
