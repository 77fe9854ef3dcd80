//! A scenario's WAF policy, rendered from the profile's template: shared by every stack that runs
//! the real filter (kind, existing cluster, and the local stack on a real Envoy).

use super::Profile;
use crate::scenario::{Mode, Scenario};
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// Reads the profile's WAF policy template (relative to the repository root).
pub fn load_template(root: &Path, profile: &Profile) -> Result<String> {
    read(&root.join(&profile.waf.template))
}

/// The profile's WAF templates, read once: the policy and, if the profile has one, the plugin.
#[derive(Debug, Clone)]
pub struct WafTemplates {
    /// The policy template text.
    pub policy: String,
    /// The plugin template text (rendered only for scenarios with directives).
    pub plugin: Option<String>,
}

/// Reads the profile's WAF templates (relative to the repository root).
pub fn load_templates(root: &Path, profile: &Profile) -> Result<WafTemplates> {
    let plugin = match &profile.waf.plugin_template {
        Some(p) => Some(read(&root.join(p))?),
        None => None,
    };
    Ok(WafTemplates { policy: load_template(root, profile)?, plugin })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read WAF template {}: {e}", path.display()))
}

/// The objects of a scenario's WAF policy `name` in `namespace`, attached to HTTPRoute `route`, from the
/// templates already read (the kind stack reads them once per run).
pub fn render_waf_policy(
    templates: &WafTemplates,
    profile: &Profile,
    scenario: &Scenario,
    namespace: &str,
    name: &str,
    route: &str,
) -> Result<Vec<Value>> {
    Ok(render_with_origins(templates, profile, scenario, namespace, name, route)?.into_iter().map(|(_, v)| v).collect())
}

/// [`render_waf_policy`], each object with the template file it was rendered from.
pub fn render_with_origins(
    templates: &WafTemplates,
    profile: &Profile,
    scenario: &Scenario,
    namespace: &str,
    name: &str,
    route: &str,
) -> Result<Vec<(PathBuf, Value)>> {
    let crs_state = if scenario.policy.rules.crs { "Enabled" } else { "Disabled" };
    let action = match scenario.policy.mode {
        Mode::On => "Block",
        Mode::DetectionOnly => "Detect",
    };
    let lines = directives(profile, scenario);
    let plugin = templates.plugin.as_ref().filter(|_| !lines.is_empty());
    let plugins = match plugin {
        Some(_) => json!([{"kind": "WAFPlugin", "name": name}]),
        None => json!([]),
    };
    let values: BTreeMap<&str, Value> = BTreeMap::from([
        ("name", json!(name)),
        ("namespace", json!(namespace)),
        ("route", json!(route)),
        ("mode", json!(scenario.policy.mode.as_seclang())),
        ("action", json!(action)),
        ("crs_state", json!(crs_state)),
        ("directives_text", json!(lines.join("\n"))),
        ("directives", json!(lines)),
        ("plugins", plugins),
        ("wasm_image", json!(profile.waf.wasm_image.clone().unwrap_or_default())),
    ]);
    let origin = |path: &PathBuf, docs: Vec<Value>| docs.into_iter().map(|d| (path.clone(), d)).collect::<Vec<_>>();
    let mut docs = origin(&profile.waf.template, render_template(&templates.policy, &values, &profile.waf.template)?);
    if let (Some(text), Some(path)) = (plugin, &profile.waf.plugin_template) {
        docs.extend(origin(path, render_template(text, &values, path)?));
    }
    Ok(docs)
}

fn render_template(template: &str, values: &BTreeMap<&str, Value>, path: &Path) -> Result<Vec<Value>> {
    let filled = fill_template(template, values)?;
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(&filled)
        .map_err(|e| anyhow!("the WAF template {} does not render to valid YAML: {e}", path.display()))?;
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    if docs.is_empty() {
        bail!("the WAF template {} renders no objects", path.display());
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
    render_waf_policy(&load_templates(root, profile)?, profile, scenario, namespace, name, route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn the_tigera_policy_names_its_plugin_only_when_the_scenario_has_directives() {
        let p = Profile::load(&root(), "tigera").unwrap();
        let with = crate::scenario::load_file(&root().join("scenarios/inline-rule-headers.yaml")).unwrap();
        let docs = waf_policy_objects(&root(), &p, &with, "ns-1", "pol", "r").unwrap();
        assert_eq!(docs.len(), 2, "{docs:?}");
        assert_eq!(docs[0]["spec"]["action"], "Block");
        assert_eq!(docs[0]["spec"]["plugins"], json!([{"kind": "WAFPlugin", "name": "pol"}]));
        assert_eq!(docs[1]["kind"], "WAFPlugin");
        assert!(docs[1]["spec"]["rules"].as_str().unwrap().contains("SecRule"), "{}", docs[1]);
        let crs_only = crate::scenario::load_file(&root().join("scenarios/sqli-blocked.yaml")).unwrap();
        assert!(crs_only.policy.rules.directives.is_none(), "the fixture must have no inline rules");
        let docs = waf_policy_objects(&root(), &p, &crs_only, "ns-1", "pol", "r").unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["spec"]["plugins"], json!([]));
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
