//! Built-in Kubernetes objects (and every object's `metadata`), checked against the k8s-openapi types:
//! a wrong type fails to deserialize (with its path), and an unknown field is one the typed round trip
//! loses (the API server rejects it under strict field validation, or drops it).

use super::structural::Finding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// API groups served by the API server itself (no CRD): their objects are checked here.
pub const BUILT_IN_GROUPS: &[&str] = &[
    "", "apps", "batch", "rbac.authorization.k8s.io", "networking.k8s.io", "policy", "autoscaling", "coordination.k8s.io",
    "discovery.k8s.io", "storage.k8s.io", "admissionregistration.k8s.io", "apiextensions.k8s.io", "scheduling.k8s.io",
    "certificates.k8s.io", "node.k8s.io", "events.k8s.io",
];

/// Whether `group` is served by the API server itself.
pub fn is_built_in(group: &str) -> bool {
    BUILT_IN_GROUPS.contains(&group)
}

/// Round-trips `value` through `T`, reporting type errors and the fields the round trip loses.
fn round_trip<T: DeserializeOwned + Serialize>(value: &Value, prefix: &str) -> Vec<Finding> {
    let typed: T = match serde_path_to_error::deserialize(value) {
        Ok(t) => t,
        Err(e) => {
            let at = e.path().to_string();
            let field = match (prefix.is_empty(), at.as_str()) {
                (_, ".") => prefix.to_string(),
                (true, _) => at,
                (false, _) => format!("{prefix}.{at}"),
            };
            return vec![Finding { field, rule: "type".into(), message: e.inner().to_string() }];
        }
    };
    let back = serde_json::to_value(&typed).unwrap_or(Value::Null);
    let mut out = Vec::new();
    lost_fields(value, &back, prefix, &mut out);
    out
}

fn lost_fields(original: &Value, back: &Value, path: &str, out: &mut Vec<Finding>) {
    match (original, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match b.get(k) {
                    _ if v.is_null() => {}
                    None => out.push(Finding {
                        field: p,
                        rule: "unknown field".into(),
                        message: format!("unknown field `{k}` (not in the Kubernetes API type; the API server rejects or drops it)"),
                    }),
                    Some(bv) => lost_fields(v, bv, &p, out),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) if o.len() == b.len() => {
            for (i, (v, bv)) in o.iter().zip(b).enumerate() {
                lost_fields(v, bv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

macro_rules! built_in_kinds {
    ($($api_version:literal, $kind:literal => $ty:ty;)*) => {
        /// Checks a built-in object of a kind the harness knows; `None` for any other kind.
        pub fn check_built_in(api_version: &str, kind: &str, value: &Value) -> Option<Vec<Finding>> {
            match (api_version, kind) {
                $(($api_version, $kind) => Some(round_trip::<$ty>(value, "")),)*
                _ => None,
            }
        }

        /// The built-in kinds [`check_built_in`] knows, as `apiVersion kind`.
        pub fn known_built_in() -> Vec<String> {
            vec![$(format!("{} {}", $api_version, $kind)),*]
        }
    };
}

built_in_kinds! {
    "v1", "Namespace" => k8s_openapi::api::core::v1::Namespace;
    "v1", "ServiceAccount" => k8s_openapi::api::core::v1::ServiceAccount;
    "v1", "Service" => k8s_openapi::api::core::v1::Service;
    "v1", "ConfigMap" => k8s_openapi::api::core::v1::ConfigMap;
    "v1", "Secret" => k8s_openapi::api::core::v1::Secret;
    "v1", "Pod" => k8s_openapi::api::core::v1::Pod;
    "apps/v1", "Deployment" => k8s_openapi::api::apps::v1::Deployment;
    "apps/v1", "StatefulSet" => k8s_openapi::api::apps::v1::StatefulSet;
    "apps/v1", "DaemonSet" => k8s_openapi::api::apps::v1::DaemonSet;
    "rbac.authorization.k8s.io/v1", "ClusterRole" => k8s_openapi::api::rbac::v1::ClusterRole;
    "rbac.authorization.k8s.io/v1", "ClusterRoleBinding" => k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    "rbac.authorization.k8s.io/v1", "Role" => k8s_openapi::api::rbac::v1::Role;
    "rbac.authorization.k8s.io/v1", "RoleBinding" => k8s_openapi::api::rbac::v1::RoleBinding;
    "networking.k8s.io/v1", "NetworkPolicy" => k8s_openapi::api::networking::v1::NetworkPolicy;
    "batch/v1", "Job" => k8s_openapi::api::batch::v1::Job;
    "policy/v1", "PodDisruptionBudget" => k8s_openapi::api::policy::v1::PodDisruptionBudget;
}

/// Checks any object's `metadata` against ObjectMeta, and its name against the API server's naming rule.
pub fn check_metadata(value: &Value, namespaced: Option<bool>) -> Vec<Finding> {
    let Some(meta) = value.get("metadata") else {
        return vec![Finding { field: "metadata".into(), rule: "required".into(), message: "no metadata".into() }];
    };
    let mut out = round_trip::<ObjectMeta>(meta, "metadata");
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() && meta.get("generateName").is_none() {
        out.push(Finding { field: "metadata.name".into(), rule: "required".into(), message: "no name".into() });
    } else if !name.is_empty() && !is_dns_subdomain(name) {
        out.push(Finding {
            field: "metadata.name".into(),
            rule: "DNS-1123 subdomain".into(),
            message: format!("`{name}` is not a lowercase RFC 1123 subdomain (at most 253 of [a-z0-9.-], alphanumeric at both ends)"),
        });
    }
    let has_namespace = meta.get("namespace").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    match namespaced {
        Some(false) if has_namespace => out.push(Finding {
            field: "metadata.namespace".into(),
            rule: "scope".into(),
            message: "the kind is cluster-scoped: it takes no namespace".into(),
        }),
        Some(true) if !has_namespace => out.push(Finding {
            field: "metadata.namespace".into(),
            rule: "scope".into(),
            message: "the kind is namespaced: without a namespace it lands in the client's default namespace".into(),
        }),
        _ => {}
    }
    out
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_built_in_object_with_a_misspelled_field_or_a_wrong_type_is_reported_at_its_path() {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo", "namespace": "x"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": [{"name": "e", "image": "i", "imagePullPolcy": "Always"}]}}}});
        let f = check_built_in("apps/v1", "Deployment", &deployment).unwrap();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].field.as_str(), f[0].rule.as_str()), ("spec.template.spec.containers[0].imagePullPolcy", "unknown field"));
        let wrong = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": "eighty"}]}});
        let f = check_built_in("v1", "Service", &wrong).unwrap();
        assert_eq!((f[0].field.as_str(), f[0].rule.as_str()), ("spec.ports[0].port", "type"), "{f:?}");
        assert!(check_built_in("v1", "Namespace", &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}})).unwrap().is_empty());
        assert!(check_built_in("v1", "Binding", &json!({})).is_none());
    }

    #[test]
    fn metadata_is_checked_for_unknown_fields_names_and_scope() {
        let f = check_metadata(&json!({"metadata": {"name": "Bad_Name", "namespace": "x", "lables": {}}}), Some(false));
        let rules: Vec<&str> = f.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(rules, ["unknown field", "DNS-1123 subdomain", "scope"], "{f:?}");
        assert_eq!(f[0].field, "metadata.lables");
        assert!(check_metadata(&json!({"metadata": {"name": "allow-tigera.waf-metrics"}}), Some(false)).is_empty());
    }
}
