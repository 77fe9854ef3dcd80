//! Each scenario's cluster objects, rendered from the scenario and the profile: pure functions to YAML.
//!
//! Namespace `waf-e2e-<run id>-<scenario>`, an echo backend (Deployment + Service), an HTTPRoute on the
//! profile's Gateway with host `<scenario>.waf-e2e.test`, and the WAF policy from the profile's template.

use crate::profile::waf_policy::render_waf_policy;
use crate::profile::Profile;
use crate::scenario::Scenario;
use anyhow::Result;
use serde_json::{json, Value};

/// The echo backend image: answers 200 with a JSON echo of the request for every method and path.
pub const ECHO_IMAGE: &str = "ealen/echo-server:0.9.2";
/// The port the echo backend listens on (set through its `PORT` env var).
pub const ECHO_PORT: u16 = 8080;
/// The name of the echo Deployment and Service in every scenario namespace.
pub const ECHO_NAME: &str = "echo";
/// The domain under which scenario hosts live.
pub const HOST_DOMAIN: &str = "waf-e2e.test";

/// A scenario's objects, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioObjects {
    /// The scenario's namespace.
    pub namespace: String,
    /// The WAF policy name (dashes intact).
    pub policy: String,
    /// The HTTPRoute name.
    pub route: String,
    /// The host the route matches.
    pub host: String,
    /// `Kind name` of every object, in apply order.
    pub resources: Vec<String>,
    /// Multi-document YAML of every object, in apply order.
    pub yaml: String,
}

/// `name` as a DNS label: lowercase `[a-z0-9-]`, no leading/trailing dash, at most `max` chars.
pub fn dns_label(name: &str, max: usize) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    let mut out = out.trim_end_matches('-').to_string();
    if out.len() > max {
        let hash = &super::cache::sha256_hex(name.as_bytes())[..6];
        out.truncate(max - 7);
        out = format!("{}-{hash}", out.trim_end_matches('-'));
    }
    if out.is_empty() {
        out = "x".into();
    }
    out
}

/// The namespace of a scenario in a run: `waf-e2e-<run id>-<scenario>`, at most 63 chars.
pub fn namespace_for(run_id: &str, scenario: &str) -> String {
    dns_label(&format!("waf-e2e-{run_id}-{scenario}"), 63)
}

/// The host a scenario's route matches: `<scenario>.waf-e2e.test`.
pub fn host_for(scenario: &str) -> String {
    format!("{}.{HOST_DOMAIN}", dns_label(scenario, 63))
}

/// Renders every object of `scenario` for `profile` in run `run_id`, given the profile's WAF `template` text.
pub fn render(scenario: &Scenario, profile: &Profile, template: &str, run_id: &str) -> Result<ScenarioObjects> {
    let namespace = namespace_for(run_id, scenario.name());
    let route = dns_label(scenario.name(), 63);
    let host = host_for(scenario.name());
    let policy = scenario.policy.name.value.clone();
    let labels = json!({"app.kubernetes.io/name": "waf-e2e-echo", "waf-e2e/scenario": route});

    let mut docs: Vec<Value> = vec![
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": namespace, "labels": {"waf-e2e/run": run_id, "waf-e2e/scenario": route}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": ECHO_NAME, "namespace": namespace, "labels": labels},
               "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                   "name": ECHO_NAME, "image": ECHO_IMAGE,
                   "env": [{"name": "PORT", "value": ECHO_PORT.to_string()}],
                   "ports": [{"name": "http", "containerPort": ECHO_PORT}],
                   "readinessProbe": {"httpGet": {"path": "/", "port": ECHO_PORT}, "periodSeconds": 2}}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": ECHO_NAME, "namespace": namespace},
               "spec": {"selector": labels, "ports": [{"name": "http", "port": ECHO_PORT, "targetPort": ECHO_PORT}]}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
               "metadata": {"name": route, "namespace": namespace},
               "spec": {"parentRefs": [{"name": profile.gateway.name, "namespace": profile.gateway.namespace}],
                 "hostnames": [host],
                 "rules": [{"backendRefs": [{"name": ECHO_NAME, "port": ECHO_PORT}]}]}}),
    ];

    docs.extend(render_waf_policy(template, profile, scenario, &namespace, &policy, &route)?);

    let resources = docs
        .iter()
        .map(|d| format!("{} {}", d["kind"].as_str().unwrap_or("?"), d["metadata"]["name"].as_str().unwrap_or("?")))
        .collect();
    let mut yaml = String::new();
    for d in &docs {
        yaml.push_str("---\n");
        yaml.push_str(&serde_saphyr::to_string(d)?);
    }
    Ok(ScenarioObjects { namespace, policy, route, host, resources, yaml })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn scenario(text: &str) -> Scenario {
        crate::scenario::parse(Path::new("t.yaml"), text).unwrap()
    }

    const BLOCK_SQLI: &str = r#"
name: block-sqli
policy:
  name: block-sqli
  mode: On
  rules:
    crs: true
    directives: |
      SecRule ARGS:probe "@streq yes" "id:10001,phase:1,deny,status:403"
traffic:
  - name: attack
    path: /?id=1%27%20OR%201=1--
    expect_status: 403
expect:
  decisions:
    - decision: blocked
      labels: {rule_id: "949110"}
      increase: 1
"#;

    fn render_for(profile: &str, s: &Scenario) -> ScenarioObjects {
        let p = Profile::load(&root(), profile).unwrap();
        let t = crate::profile::waf_policy::load_template(&root(), &p).unwrap();
        render(s, &p, &t, "abc123").unwrap()
    }

    #[test]
    fn the_oss_objects_of_a_blocking_scenario_match_the_snapshot() {
        let o = render_for("oss", &scenario(BLOCK_SQLI));
        assert_eq!(o.namespace, "waf-e2e-abc123-block-sqli");
        assert_eq!(o.host, "block-sqli.waf-e2e.test");
        insta::assert_snapshot!("oss_block_sqli", o.yaml);
    }

    #[test]
    fn the_tigera_objects_of_a_blocking_scenario_match_the_snapshot() {
        let o = render_for("tigera", &scenario(BLOCK_SQLI));
        assert_eq!(o.resources.last().unwrap(), "WAFPlugin block-sqli");
        insta::assert_snapshot!("tigera_block_sqli", o.yaml);
    }

    #[test]
    fn the_oss_policy_carries_mode_crs_and_metric_labels_for_policy_and_namespace() {
        let o = render_for("oss", &scenario(BLOCK_SQLI));
        let docs: Vec<Value> = serde_saphyr::from_str_multiple(&o.yaml).unwrap();
        let policy = docs.iter().find(|d| d["kind"] == "EnvoyExtensionPolicy").unwrap();
        assert_eq!(policy["metadata"]["namespace"], o.namespace);
        assert_eq!(policy["spec"]["targetRefs"][0]["name"], o.route);
        let wasm = &policy["spec"]["wasm"][0];
        assert_eq!(wasm["code"]["type"], "Image");
        assert_eq!(wasm["config"]["metric_labels"], json!({"policy": "block-sqli", "namespace": o.namespace}));
        let lines: Vec<&str> = wasm["config"]["directives_map"]["default"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(lines[1], "SecRuleEngine On");
        assert!(lines.contains(&"Include @owasp_crs/*.conf"));
        assert!(lines.last().unwrap().starts_with("SecRule ARGS:probe"));
    }

    #[test]
    fn long_or_odd_scenario_names_become_valid_namespaces_of_at_most_63_chars() {
        let ns = namespace_for("abc123", &"Very_Long Scenario".repeat(6));
        assert!(ns.len() <= 63, "{ns}");
        assert!(ns.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{ns}");
        assert!(!ns.ends_with('-') && ns.starts_with("waf-e2e-abc123-very-long-scenario"));
        assert_ne!(ns, namespace_for("abc123", &"Very_Long Scenario".repeat(7)), "truncation keeps names distinct");
        assert_eq!(dns_label("--A__b--", 63), "a-b");
    }
}
