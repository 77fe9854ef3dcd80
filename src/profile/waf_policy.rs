//! A scenario's WAF policy, rendered from the profile's template: shared by every stack that runs
//! the real filter (kind, existing cluster, and the local stack on a real Envoy).

use super::Profile;
use crate::scenario::{Mode, Scenario};
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The SecLang lines of a scenario's policy for this profile: preamble (mode), CRS when asked, inline block.
pub fn directives(profile: &Profile, scenario: &Scenario) -> Vec<String> {
    let policy = &scenario.policy;
    let mut lines: Vec<String> =
        profile.waf.preamble.iter().map(|l| l.replace("{mode}", policy.mode.as_seclang())).collect();
    if policy.rules.crs {
        lines.extend(profile.waf.crs.iter().cloned());
    }
    if let Some(block) = &policy.rules.directives {
        // One item: multi-line SecLang (continuations) stays intact.
        let block = block.value.trim();
        if !block.is_empty() {
            lines.push(block.to_string());
        }
    }
    lines
}

/// Fills `{{key}}` placeholders with JSON-encoded values (valid YAML scalars); an unknown placeholder is an error.
pub fn fill_template(template: &str, values: &BTreeMap<&str, Value>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| anyhow!("unclosed placeholder in WAF template"))?;
        let key = after[..end].trim();
        let value = values.get(key).ok_or_else(|| {
            let known: Vec<&str> = values.keys().copied().collect();
            anyhow!("unknown placeholder {{{{{key}}}}} in WAF template (known: {})", known.join(", "))
        })?;
        out.push_str(&serde_json::to_string(value)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads the profile's WAF template (relative to the repository root).
pub fn load_template(root: &Path, profile: &Profile) -> Result<String> {
    let path = root.join(&profile.waf.template);
    std::fs::read_to_string(&path).map_err(|e| anyhow!("cannot read WAF template {}: {e}", path.display()))
}

/// The objects of a scenario's WAF policy `name` in `namespace`, attached to HTTPRoute `route`, from the
/// template text already read (the kind stack reads it once per run).
pub fn render_waf_policy(
    template: &str,
    profile: &Profile,
    scenario: &Scenario,
    namespace: &str,
    name: &str,
    route: &str,
) -> Result<Vec<Value>> {
    let crs_state = if scenario.policy.rules.crs { "Enabled" } else { "Disabled" };
    let action = match scenario.policy.mode {
        Mode::On => "Block",
        Mode::DetectionOnly => "Detect",
    };
    let values: BTreeMap<&str, Value> = BTreeMap::from([
        ("name", json!(name)),
        ("namespace", json!(namespace)),
        ("route", json!(route)),
        ("mode", json!(scenario.policy.mode.as_seclang())),
        ("action", json!(action)),
        ("crs_state", json!(crs_state)),
        ("directives", json!(directives(profile, scenario))),
        ("wasm_image", json!(profile.waf.wasm_image.clone().unwrap_or_default())),
    ]);
    let filled = fill_template(template, &values)?;
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(&filled)
        .map_err(|e| anyhow!("the WAF template {} does not render to valid YAML: {e}", profile.waf.template.display()))?;
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    if docs.is_empty() {
        bail!("the WAF template {} renders no objects", profile.waf.template.display());
    }
    Ok(docs)
}

/// The objects of a scenario's WAF policy (one for `oss`, a WAFPolicy and its WAFPlugin for `tigera`),
/// reading the profile's template under `root`.
pub fn waf_policy_objects(
    root: &Path,
    profile: &Profile,
    scenario: &Scenario,
    namespace: &str,
    name: &str,
    route: &str,
) -> Result<Vec<Value>> {
    render_waf_policy(&load_template(root, profile)?, profile, scenario, namespace, name, route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn an_unknown_placeholder_in_a_template_is_reported_by_name() {
        let err = fill_template("name: {{nmae}}", &BTreeMap::from([("name", json!("x"))])).unwrap_err().to_string();
        assert!(err.contains("{{nmae}}") && err.contains("name"), "{err}");
    }

    #[test]
    fn placeholder_values_are_json_encoded_so_quotes_and_newlines_stay_yaml_safe() {
        let out = fill_template("d: {{d}}", &BTreeMap::from([("d", json!(["a \"b\"\nc"]))])).unwrap();
        let v: Value = serde_saphyr::from_str(&out).unwrap();
        assert_eq!(v["d"][0], "a \"b\"\nc");
    }

    #[test]
    fn a_detection_only_policy_renders_in_the_given_namespace_without_the_crs() {
        let mut s = crate::scenario::load_file(&root().join("scenarios/sqli-detection-only.yaml")).unwrap();
        s.policy.rules.crs = false;
        let p = Profile::load(&root(), "oss").unwrap();
        let docs = waf_policy_objects(&root(), &p, &s, "ns-1", "waf-sqli-detect", "route-1").unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["metadata"]["namespace"], "ns-1");
        assert_eq!(docs[0]["spec"]["targetRefs"][0]["name"], "route-1");
        let lines = docs[0]["spec"]["wasm"][0]["config"]["directives_map"]["default"].as_array().unwrap();
        assert!(lines.iter().any(|l| l == "SecRuleEngine DetectionOnly"), "{lines:?}");
        assert!(!lines.iter().any(|l| l.as_str().unwrap().contains("owasp_crs")), "{lines:?}");
    }
}
