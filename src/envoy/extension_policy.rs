//! An EnvoyExtensionPolicy's `spec.wasm` translated into HTTP wasm filters as Envoy Gateway v1.7.2 does.
//!
//! Envoy Gateway (`internal/gatewayapi/envoyextensionpolicy.go` `buildWasm`,
//! `internal/xds/translator/wasm.go`, testdata `internal/xds/translator/testdata/out/xds-ir/wasm.*`):
//! - IR name and VM id `envoyextensionpolicy/<ns>/<name>/wasm/<i>`; filter name
//!   `envoy.filters.http.wasm/<IR name>`; plugin name `spec.wasm[i].name`, else the IR name;
//! - `rootID` as written (an empty one is Envoy's default root); `failOpen` (default false);
//! - the plugin configuration is a `google.protobuf.StringValue` holding `config` as the API server
//!   hands it to Envoy Gateway: compact JSON, keys sorted, `<`, `>`, `&` escaped as Go does
//!   (`""` when there is no config);
//! - runtime `envoy.wasm.runtime.v8`; the code is fetched by the proxy from Envoy Gateway's wasm
//!   cache. Locally the code is the module file the caller chose (the image in the template stands
//!   for it), read by Envoy from disk.
//!
//! Not checked on a cluster here: the byte form of `config` relies on the API server's JSON encoding.

use super::located::{FieldLines, Problems};
use crate::error::{InputLocation, InvalidInput};
use crate::rendered::RenderedDocument;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// The wasm runtime Envoy Gateway configures.
pub const WASM_RUNTIME: &str = "envoy.wasm.runtime.v8";

/// One HTTP wasm filter, as Envoy Gateway builds it from one `spec.wasm[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmFilter {
    /// The IR name, also the VM id: `envoyextensionpolicy/<ns>/<name>/wasm/<i>`.
    pub name: String,
    /// The plugin name (`spec.wasm[i].name`, or [`WasmFilter::name`] when unset); Envoy prints it in `wasm log` lines.
    pub plugin_name: String,
    /// `spec.wasm[i].rootID`; empty is Envoy's default root context.
    pub root_id: String,
    /// `spec.wasm[i].failOpen`.
    pub fail_open: bool,
    /// The plugin configuration string (the policy's `config` as JSON, or empty).
    pub configuration: String,
    /// The module file Envoy loads.
    pub code: PathBuf,
}

impl WasmFilter {
    /// The HTTP filter's name in the chain and in `typed_per_filter_config`: `envoy.filters.http.wasm/<IR name>`.
    pub fn filter_name(&self) -> String {
        format!("envoy.filters.http.wasm/{}", self.name)
    }

    /// The VM id (Envoy Gateway gives every filter its own VM).
    pub fn vm_id(&self) -> &str {
        &self.name
    }

    /// The prefix Envoy writes before every line this plugin logs from a stream:
    /// `wasm log <plugin> [<root id> ]<vm id>: ` (DESIGN 1.2).
    pub fn log_prefix(&self) -> String {
        let mut parts = vec!["wasm log", self.plugin_name.as_str()];
        if !self.root_id.is_empty() {
            parts.push(&self.root_id);
        }
        parts.push(self.vm_id());
        format!("{}: ", parts.join(" "))
    }

    /// The HCM `http_filters` entry: added disabled, enabled per route (as Envoy Gateway does).
    pub fn http_filter(&self) -> Value {
        let mut config = json!({
            "name": self.plugin_name,
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": self.configuration},
            "vm_config": {
                "vm_id": self.name,
                "runtime": WASM_RUNTIME,
                "code": {"local": {"filename": self.code.display().to_string()}},
            },
        });
        if self.fail_open {
            config["fail_open"] = json!(true);
        }
        if !self.root_id.is_empty() {
            config["root_id"] = json!(self.root_id);
        }
        json!({
            "name": self.filter_name(),
            "disabled": true,
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": config},
        })
    }
}

/// The wasm filters of an EnvoyExtensionPolicy object (`doc`, located at `at` for errors), every
/// one loading `code`. Fields the local stack cannot reproduce are errors naming them.
pub fn wasm_filters_from_extension_policy(doc: &Value, at: &InputLocation, code: &Path) -> Result<Vec<WasmFilter>, InvalidInput> {
    translate(doc, &FieldLines::document_only(at.clone()), code)
}

/// [`wasm_filters_from_extension_policy`] for a document read from a file: errors name the field's own line.
pub fn wasm_filters_from_document(doc: &RenderedDocument, code: &Path) -> Result<Vec<WasmFilter>, InvalidInput> {
    translate(&doc.value, &FieldLines::of_document(doc), code)
}

fn unsupported(map: &Map<String, Value>, path: &str, allowed: &[&str], lines: &FieldLines, problems: &mut Problems) {
    for key in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
        problems.push(lines.problem(&format!("{path}.{key}"),
            format!("not supported by the local stack's EnvoyExtensionPolicy translation (supported here: {})", allowed.join(", "))));
    }
}

fn translate(doc: &Value, lines: &FieldLines, code: &Path) -> Result<Vec<WasmFilter>, InvalidInput> {
    let mut problems = Problems::default();
    let Some(top) = doc.as_object() else {
        problems.push(lines.problem("", "an EnvoyExtensionPolicy object is expected"));
        return problems.finish(Vec::new());
    };
    if top.get("kind").and_then(Value::as_str) != Some("EnvoyExtensionPolicy") {
        problems.push(lines.problem("kind", format!("`{}`: an EnvoyExtensionPolicy is expected", top.get("kind").unwrap_or(&Value::Null))));
    }
    let meta = |k: &str| top.get("metadata").and_then(|m| m.get(k)).and_then(Value::as_str).filter(|s| !s.is_empty());
    let (Some(ns), Some(name)) = (meta("namespace"), meta("name")) else {
        problems.push(lines.problem("metadata", "name and namespace are needed: the filter and VM names are made of them"));
        return problems.finish(Vec::new());
    };
    let spec = top.get("spec").and_then(Value::as_object).cloned().unwrap_or_default();
    // The targets are what the caller attaches the filters to (the scenario's route).
    unsupported(&spec, "spec", &["targetRef", "targetRefs", "targetSelectors", "wasm"], lines, &mut problems);
    let items = spec.get("wasm").and_then(Value::as_array).cloned().unwrap_or_default();
    if items.is_empty() {
        problems.push(lines.problem("spec.wasm", "no wasm entry: nothing to translate"));
    }
    let mut filters = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("spec.wasm[{i}]");
        let Some(w) = item.as_object() else {
            problems.push(lines.problem(&path, "must be a mapping"));
            continue;
        };
        unsupported(w, &path, &["name", "rootID", "code", "config", "failOpen"], lines, &mut problems);
        check_code(w.get("code"), &format!("{path}.code"), lines, &mut problems);
        let ir_name = format!("envoyextensionpolicy/{ns}/{name}/wasm/{i}");
        let text = |k: &str| match w.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(lines.problem(&format!("{path}.{k}"), format!("`{other}`: must be a string"))),
        };
        let (plugin_name, root_id) = match (text("name"), text("rootID")) {
            (Ok(n), Ok(r)) => (n.unwrap_or_else(|| ir_name.clone()), r.unwrap_or_default()),
            (n, r) => {
                problems.0.extend(n.err().into_iter().chain(r.err()));
                continue;
            }
        };
        let fail_open = match w.get("failOpen") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                problems.push(lines.problem(&format!("{path}.failOpen"), format!("`{other}`: must be true or false")));
                false
            }
        };
        let configuration = match w.get("config") {
            None | Some(Value::Null) => String::new(),
            Some(c) => go_json(c),
        };
        filters.push(WasmFilter { name: ir_name, plugin_name, root_id, fail_open, configuration, code: code.to_path_buf() });
    }
    problems.finish(filters)
}

/// The code source is replaced by the local module, but it must still be one Envoy Gateway accepts.
fn check_code(code: Option<&Value>, path: &str, lines: &FieldLines, problems: &mut Problems) {
    let Some(code) = code.and_then(Value::as_object) else {
        problems.push(lines.problem(path, "missing: Envoy Gateway needs a code source (type Image or HTTP)"));
        return;
    };
    unsupported(code, path, &["type", "image", "http", "pullPolicy"], lines, problems);
    let source = match code.get("type").and_then(Value::as_str) {
        Some("Image") => "image",
        Some("HTTP") => "http",
        other => {
            problems.push(lines.problem(&format!("{path}.type"), format!("`{}`: one of Image, HTTP", other.unwrap_or("missing"))));
            return;
        }
    };
    match code.get(source).and_then(Value::as_object) {
        Some(s) if s.get("url").and_then(Value::as_str).is_some_and(|u| !u.is_empty()) => {}
        _ => problems.push(lines.problem(&format!("{path}.{source}.url"), "missing: Envoy Gateway rejects a code source without a URL")),
    }
}

/// JSON as Go's `encoding/json` writes an object it decoded: compact, keys sorted at every level,
/// and `<`, `>`, `&`, U+2028, U+2029 escaped.
pub fn go_json(v: &Value) -> String {
    let mut out = String::new();
    write_sorted(v, &mut out);
    out.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026").replace('\u{2028}', "\\u2028").replace('\u{2029}', "\\u2029")
}

fn write_sorted(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_sorted(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_compact_sorted_json_with_gos_html_escapes() {
        let v = json!({"b": [1, {"z": "x", "a": "<script>&"}], "a": null});
        assert_eq!(go_json(&v), r#"{"a":null,"b":[1,{"a":"\u003cscript\u003e\u0026","z":"x"}]}"#);
    }

    #[test]
    fn the_log_prefix_names_the_root_id_only_when_set() {
        let mut f = WasmFilter {
            name: "envoyextensionpolicy/shop/p/wasm/0".into(), plugin_name: "p".into(), root_id: String::new(),
            fail_open: false, configuration: String::new(), code: PathBuf::from("/m.wasm"),
        };
        assert_eq!(f.log_prefix(), "wasm log p envoyextensionpolicy/shop/p/wasm/0: ");
        f.root_id = "r".into();
        assert_eq!(f.log_prefix(), "wasm log p r envoyextensionpolicy/shop/p/wasm/0: ");
    }
}
