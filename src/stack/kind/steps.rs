//! Pure pieces of executing plan steps: generated manifests, reference parsing, readiness checks.

use crate::k8s::AppliedObject;
use crate::wait::Check;
use anyhow::{anyhow, Result};
use k8s_openapi::api::core::v1::VolumeMount;
use serde_json::Value;

/// The gateway manifest with its `{{envoyproxy_ref}}` placeholder filled (parametersRef, or nothing).
pub fn gateway_manifest(template: &str, envoyproxy: Option<&AppliedObject>) -> String {
    let fill = match envoyproxy {
        Some(e) => format!(
            "  parametersRef:\n    group: gateway.envoyproxy.io\n    kind: EnvoyProxy\n    name: {}\n    namespace: {}",
            serde_json::to_string(&e.name).unwrap_or_default(),
            serde_json::to_string(e.namespace.as_deref().unwrap_or_default()).unwrap_or_default()
        ),
        None => String::new(),
    };
    template.replace("{{envoyproxy_ref}}", &fill)
}

/// The kind-only server-side apply that gives the EnvoyProxy a ClusterIP Service (kind has no LoadBalancer,
/// and Envoy Gateway only marks a Gateway Programmed once it has an address).
pub fn envoyproxy_adjustment(target: &AppliedObject) -> String {
    let v = serde_json::json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyProxy",
        "metadata": {"name": target.name, "namespace": target.namespace.as_deref().unwrap_or_default()},
        "spec": {"provider": {"type": "Kubernetes", "kubernetes": {"envoyService": {"type": "ClusterIP"}}}}
    });
    serde_saphyr::to_string(&v).unwrap_or_default()
}

/// Namespace objects for `names`, as multi-document YAML.
pub fn namespaces_manifest(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("---\n{}", serde_saphyr::to_string(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}})).unwrap_or_default()))
        .collect()
}

/// Where a rendered EnvoyProxy makes envoy log: `Some((log path, volume holding it))` for a
/// `--log-path` in `spec.extraArgs` (volume `None` when no `envoyDeployment.container.volumeMounts`
/// entry holds it), `None` when envoy logs to stderr.
pub fn envoyproxy_log(envoyproxy: &Value) -> Option<(String, Option<String>)> {
    let args: Vec<String> = envoyproxy
        .pointer("/spec/extraArgs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let log_path = crate::k8s::audit::log_path_arg(&args)?;
    let mounts: Vec<VolumeMount> = envoyproxy
        .pointer("/spec/provider/kubernetes/envoyDeployment/container/volumeMounts")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default();
    let volume = crate::k8s::audit::volume_holding(&log_path, &mounts).map(|v| v.volume);
    Some((log_path, volume))
}

/// Splits `namespace/rest` (rest may itself contain `/`, e.g. a label selector).
pub fn split_ref(s: &str) -> Result<(&str, &str)> {
    s.split_once('/').filter(|(ns, rest)| !ns.is_empty() && !rest.is_empty()).ok_or_else(|| anyhow!("expected `namespace/name`, got `{s}`"))
}

/// Whether Prometheus' `/api/v1/targets` answer has a target of `pool` with health `up`.
pub fn target_up(targets: &Value, pool: &str) -> Check<()> {
    let active = targets.pointer("/data/activeTargets").and_then(Value::as_array).cloned().unwrap_or_default();
    let in_pool: Vec<&Value> = active.iter().filter(|t| t.get("scrapePool").and_then(Value::as_str) == Some(pool)).collect();
    if in_pool.iter().any(|t| t.get("health").and_then(Value::as_str) == Some("up")) {
        return Check::Met(());
    }
    if in_pool.is_empty() {
        let pools: std::collections::BTreeSet<&str> = active.iter().filter_map(|t| t.get("scrapePool").and_then(Value::as_str)).collect();
        return Check::NotYet(format!("no target in pool {pool}; pools: {}", pools.into_iter().collect::<Vec<_>>().join(", ")));
    }
    let seen: Vec<String> = in_pool
        .iter()
        .map(|t| {
            format!(
                "{} health={} {}",
                t.pointer("/labels/pod").and_then(Value::as_str).unwrap_or("?"),
                t.get("health").and_then(Value::as_str).unwrap_or("?"),
                t.get("lastError").and_then(Value::as_str).unwrap_or("")
            )
        })
        .collect();
    Check::NotYet(seen.join("; "))
}

/// Whether a Gateway API policy (status.ancestors[].conditions) is Accepted by every ancestor it lists.
pub fn policy_accepted(object: &Value) -> Check<()> {
    let ancestors = object.pointer("/status/ancestors").and_then(Value::as_array).cloned().unwrap_or_default();
    if ancestors.is_empty() {
        return Check::NotYet("no status.ancestors yet".into());
    }
    let mut seen = Vec::new();
    for a in &ancestors {
        let conditions = crate::k8s::conditions::parse_conditions(a.get("conditions"));
        if let Err(s) = crate::k8s::conditions::check_condition(&conditions, "Accepted", None) {
            seen.push(s);
        }
    }
    if seen.is_empty() {
        Check::Met(())
    } else {
        Check::NotYet(seen.join("; "))
    }
}

/// Whether a Calico WAFPolicy is Ready for its current `generation`: its status has top-level
/// `status.conditions` (Licensed, Accepted, Programmed, Ready), not Gateway API `status.ancestors`.
pub fn waf_policy_ready(object: &Value, generation: Option<i64>) -> Check<()> {
    let conditions = crate::k8s::conditions::status_conditions(object);
    match crate::k8s::conditions::check_condition(&conditions, "Ready", generation) {
        Ok(()) => Check::Met(()),
        Err(seen) => Check::NotYet(seen),
    }
}

/// `text` with the secret, each of its lines, YAML values and long tokens replaced by `<redacted>`.
pub fn scrub(text: &str, secret: &str) -> String {
    let mut parts: Vec<&str> = vec![secret.trim()];
    for line in secret.lines().map(str::trim) {
        parts.push(line);
        if let Some((_, value)) = line.split_once(':') {
            parts.push(value.trim().trim_matches(|c| c == '"' || c == '\''));
        }
        parts.extend(line.split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',').filter(|t| t.len() >= 12));
    }
    parts.retain(|p| p.len() >= 8);
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut out = text.to_string();
    for p in parts {
        out = out.replace(p, "<redacted>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ep() -> AppliedObject {
        AppliedObject {
            api_version: "gateway.envoyproxy.io/v1alpha1".into(),
            kind: "EnvoyProxy".into(),
            name: "waf-logging".into(),
            namespace: Some("waf-e2e-gateway".into()),
        }
    }

    #[test]
    fn the_gateway_class_references_the_envoyproxy_or_nothing() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let template = std::fs::read_to_string(root.join("kind/manifests/gateway-oss.yaml")).unwrap();
        let with: Vec<Value> = serde_saphyr::from_str_multiple(&gateway_manifest(&template, Some(&ep()))).unwrap();
        assert_eq!(with[0]["spec"]["parametersRef"], json!({"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": "waf-logging", "namespace": "waf-e2e-gateway"}));
        let without: Vec<Value> = serde_saphyr::from_str_multiple(&gateway_manifest(&template, None)).unwrap();
        assert!(without[0]["spec"].get("parametersRef").is_none());
        assert_eq!(without[2]["spec"]["listeners"][0]["port"], 80);
    }

    #[test]
    fn the_kind_adjustment_only_sets_a_cluster_ip_service() {
        let v: Value = serde_saphyr::from_str(&envoyproxy_adjustment(&ep())).unwrap();
        assert_eq!(v["metadata"], json!({"name": "waf-logging", "namespace": "waf-e2e-gateway"}));
        assert_eq!(v["spec"], json!({"provider": {"type": "Kubernetes", "kubernetes": {"envoyService": {"type": "ClusterIP"}}}}));
    }

    #[test]
    fn the_rendered_envoyproxy_names_the_log_file_and_the_volume_holding_it() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let rendered: Value = serde_saphyr::from_str(&std::fs::read_to_string(root.join("fixtures/rendered/envoyproxy.yaml")).unwrap()).unwrap();
        assert_eq!(envoyproxy_log(&rendered), Some(("/access_logs/envoy.log".into(), Some("access-logs".into()))));
        let no_volume = json!({"spec": {"extraArgs": ["--log-path=/tmp/envoy.log"]}});
        assert_eq!(envoyproxy_log(&no_volume), Some(("/tmp/envoy.log".into(), None)));
        let stderr = json!({"spec": {"logging": {"level": {"default": "warn"}}}});
        assert_eq!(envoyproxy_log(&stderr), None);
    }

    #[test]
    fn the_namespaces_manifest_holds_one_namespace_per_name() {
        let docs: Vec<Value> = serde_saphyr::from_str_multiple(&namespaces_manifest(&["a".into(), "tigera-prometheus".into()])).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1], json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tigera-prometheus"}}));
    }

    #[test]
    fn references_split_at_the_first_slash_only() {
        assert_eq!(split_ref("envoy-gateway-system/a.io/name=x").unwrap(), ("envoy-gateway-system", "a.io/name=x"));
        assert!(split_ref("no-slash").is_err());
    }

    #[test]
    fn a_scrape_target_is_up_only_in_its_own_pool() {
        let answer = json!({"data": {"activeTargets": [
            {"scrapePool": "podMonitor/m/other/0", "health": "up"},
            {"scrapePool": "podMonitor/m/envoy-waf/0", "health": "down", "lastError": "connection refused", "labels": {"pod": "envoy-1"}}
        ]}});
        match target_up(&answer, "podMonitor/m/envoy-waf/0") {
            Check::NotYet(seen) => assert!(seen.contains("envoy-1 health=down connection refused"), "{seen}"),
            Check::Met(()) => panic!("a down target is not up"),
        }
        match target_up(&answer, "podMonitor/m/missing/0") {
            Check::NotYet(seen) => assert!(seen.contains("pools: podMonitor/m/envoy-waf/0, podMonitor/m/other/0"), "{seen}"),
            Check::Met(()) => panic!(),
        }
        let up = json!({"data": {"activeTargets": [{"scrapePool": "p", "health": "up"}]}});
        assert!(matches!(target_up(&up, "p"), Check::Met(())));
    }

    #[test]
    fn a_policy_is_accepted_when_every_ancestor_says_so() {
        let accepted = json!({"status": {"ancestors": [{"conditions": [{"type": "Accepted", "status": "True"}]}]}});
        assert!(matches!(policy_accepted(&accepted), Check::Met(())));
        let rejected = json!({"status": {"ancestors": [{"conditions": [{"type": "Accepted", "status": "False", "reason": "Invalid", "message": "wasm fetch failed"}]}]}});
        assert!(matches!(policy_accepted(&rejected), Check::NotYet(s) if s.contains("wasm fetch failed")));
        assert!(matches!(policy_accepted(&json!({})), Check::NotYet(_)));
    }

    #[test]
    fn a_waf_policy_is_ready_from_its_status_conditions_not_ancestors() {
        let ready = json!({"status": {"conditions": [
            {"type": "Accepted", "status": "True", "observedGeneration": 2},
            {"type": "Ready", "status": "True", "observedGeneration": 2}]}});
        assert!(matches!(waf_policy_ready(&ready, Some(2)), Check::Met(())));
        assert!(matches!(waf_policy_ready(&ready, Some(3)), Check::NotYet(_)), "an older generation is not ready");
        let not_ready = json!({"status": {"conditions": [
            {"type": "Programmed", "status": "False", "reason": "WASMUnavailable"},
            {"type": "Ready", "status": "False", "reason": "NotReady", "message": "plugin not found"}]}});
        assert!(matches!(waf_policy_ready(&not_ready, None), Check::NotYet(s) if s.contains("plugin not found")));
        let ancestors_only = json!({"status": {"ancestors": [{"conditions": [{"type": "Accepted", "status": "True"}]}]}});
        assert!(matches!(waf_policy_ready(&ancestors_only, None), Check::NotYet(_)));
    }

    #[test]
    fn scrubbing_removes_the_secret_and_its_lines_from_an_error() {
        let secret = "apiVersion: x\n  certificate: MIIBIjANBgkqhkiG9w0BAQEF\n";
        let err = "LicenseKey default is invalid: spec.certificate: Invalid value: \"MIIBIjANBgkqhkiG9w0BAQEF\"";
        let out = scrub(err, secret);
        assert!(!out.contains("MIIBIjANBgkqhkiG9w0BAQEF"), "{out}");
    }
}
