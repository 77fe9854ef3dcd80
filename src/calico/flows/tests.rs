//! The pods of the flows and who is blamed for a failed flow.

use super::*;
use crate::calico::model::Sourced;
use serde_json::json;
use std::path::PathBuf;

#[test]
fn the_prometheus_pod_carries_the_operators_labels_then_the_crs_pod_metadata() {
    let extra: Labels = [("team".to_string(), "obs".to_string()), ("app.kubernetes.io/name".to_string(), "prometheus".to_string())].into();
    let pod = prometheus_pod("tigera-prometheus", "waf-e2e", Some("v3.5.0"), &extra, "prometheus");
    assert_eq!(pod.name, "tigera-prometheus/prometheus-waf-e2e-0");
    for (k, v) in [("app.kubernetes.io/managed-by", "prometheus-operator"), ("app.kubernetes.io/instance", "waf-e2e"), ("prometheus", "waf-e2e"),
        ("operator.prometheus.io/name", "waf-e2e"), ("app.kubernetes.io/version", "3.5.0"), ("team", "obs"), ("projectcalico.org/namespace", "tigera-prometheus"),
        ("projectcalico.org/serviceaccount", "prometheus")] {
        assert_eq!(pod.labels.get(k).map(String::as_str), Some(v), "{k}: {:?}", pod.labels);
    }
    assert_eq!(pod.namespace_labels.get("projectcalico.org/name").map(String::as_str), Some("tigera-prometheus"));
    assert_eq!(pod.namespace_labels.get("kubernetes.io/metadata.name").map(String::as_str), Some("tigera-prometheus"));
}

fn deny_trace(rendered_rule_action: &str) -> (Trace, Vec<String>) {
    let objects = [
        (json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "allow-tigera.mine"},
            "spec": {"tier": "allow-tigera", "order": 1, "ingress": [{"action": rendered_rule_action}]}}), PathBuf::from("r.yaml")),
        (json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "later"}, "spec": {"order": 500}}), PathBuf::from("p.yaml")),
        (json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "later.deny"},
            "spec": {"tier": "later", "ingress": [{"action": "Deny"}]}}), PathBuf::from("p.yaml")),
    ];
    let refs: Vec<Sourced<'_>> = objects.iter().map(|(v, f)| (v, f.clone())).collect();
    let set = PolicySet::from_objects(&refs).unwrap();
    let (a, b) = (Endpoint::pod("a", "a", Labels::new(), Labels::new(), None, &[]), Endpoint::pod("b", "b", Labels::new(), Labels::new(), None, &[]));
    let trace = evaluate(&set, &Flow { source: &a, destination: &b, protocol: 6, port: 1 }).unwrap();
    (trace, vec!["GlobalNetworkPolicy allow-tigera.mine".to_string()])
}

#[test]
fn the_rendered_policy_that_decided_or_passed_the_flow_on_is_blamed() {
    let (decided, rendered) = deny_trace("Deny");
    assert_eq!(blame(&decided, &rendered), "GlobalNetworkPolicy allow-tigera.mine");
    assert_eq!(passed_note(&decided, &rendered), "");
    let (passed, rendered) = deny_trace("Pass");
    assert_eq!(blame(&passed, &rendered), "GlobalNetworkPolicy allow-tigera.mine");
    assert!(passed_note(&passed, &rendered).contains("GlobalNetworkPolicy allow-tigera.mine ingress[0]"));
    assert_eq!(blame(&passed, &[]), "GlobalNetworkPolicy (none rendered)");
}
