//! The rendered GlobalNetworkPolicy (fixtures/rendered) against the kind stack's Prometheus and proxy
//! pods, and broken variants of it.

use super::*;
use serde_json::json;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn prometheus_in(ns: &str) -> Endpoint {
    Endpoint::new(ns, "prometheus-waf-e2e-0", labels(&[("app.kubernetes.io/name", "prometheus"), ("prometheus", "waf-e2e")]), labels(&[("kubernetes.io/metadata.name", ns)]))
}

fn proxy() -> Endpoint {
    Endpoint::new(
        "envoy-gateway-system",
        "envoy-waf-e2e-abc",
        labels(&[("app.kubernetes.io/component", "proxy"), ("app.kubernetes.io/managed-by", "envoy-gateway"), ("app.kubernetes.io/name", "envoy")]),
        labels(&[]),
    )
}

fn rendered() -> Vec<Value> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("fixtures/rendered/globalnetworkpolicy.yaml")).unwrap();
    serde_saphyr::from_str_multiple(&text).unwrap()
}

#[test]
fn the_rendered_policy_allows_prometheus_in_tigera_prometheus_into_the_metrics_port() {
    let v = evaluate_tier(&rendered(), Direction::Ingress, &prometheus_in("tigera-prometheus"), &proxy(), 19001, "metrics").unwrap();
    assert_eq!(v, TierVerdict::Allowed { policy: "allow-tigera.waf-gateway-proxy-metrics".into(), rule: 0 });
    let out = evaluate_tier(&rendered(), Direction::Egress, &prometheus_in("tigera-prometheus"), &proxy(), 19001, "metrics").unwrap();
    assert_eq!(out, TierVerdict::Allowed { policy: "allow-tigera.waf-prometheus-scrape-proxies".into(), rule: 0 });
}

#[test]
fn prometheus_elsewhere_or_another_port_is_passed_on_not_allowed() {
    let elsewhere = evaluate_tier(&rendered(), Direction::Ingress, &prometheus_in("monitoring"), &proxy(), 19001, "metrics").unwrap();
    assert_eq!(elsewhere, TierVerdict::Passed { policy: "allow-tigera.waf-gateway-proxy-metrics".into(), rule: 1 });
    let data_plane = evaluate_tier(&rendered(), Direction::Ingress, &prometheus_in("tigera-prometheus"), &proxy(), 10080, "http").unwrap();
    assert!(matches!(data_plane, TierVerdict::Passed { .. }), "{data_plane:?}");
}

#[test]
fn the_later_tier_denies_the_metrics_port_but_passes_the_gateway_port() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(&std::fs::read_to_string(root.join("kind/manifests/proxy-metrics-deny.yaml")).unwrap()).unwrap();
    let policies: Vec<Value> = docs.into_iter().filter(|d| d["kind"] == "GlobalNetworkPolicy").collect();
    let metrics = evaluate_tier(&policies, Direction::Ingress, &prometheus_in("monitoring"), &proxy(), 19001, "metrics").unwrap();
    assert_eq!(metrics, TierVerdict::Denied { policy: "waf-e2e-deny.proxy-metrics".into(), rule: 0 });
    let gateway = evaluate_tier(&policies, Direction::Ingress, &prometheus_in("monitoring"), &proxy(), 10080, "http").unwrap();
    assert!(matches!(gateway, TierVerdict::Passed { rule: 1, .. }), "{gateway:?}");
}

#[test]
fn a_policy_that_selects_nothing_or_uses_uncovered_fields_is_not_a_verdict() {
    let none = vec![json!({"metadata": {"name": "p"}, "spec": {"selector": "app == 'other'", "ingress": [{"action": "Allow"}]}})];
    assert_eq!(evaluate_tier(&none, Direction::Ingress, &prometheus_in("x"), &proxy(), 19001, "metrics").unwrap(), TierVerdict::NotSelected);
    let nets = vec![json!({"metadata": {"name": "p"}, "spec": {"ingress": [{"action": "Allow", "source": {"nets": ["10.0.0.0/8"]}}]}})];
    let err = evaluate_tier(&nets, Direction::Ingress, &prometheus_in("x"), &proxy(), 19001, "metrics").unwrap_err();
    assert!(err.contains("p ingress[0]") && err.contains("nets"), "{err}");
}

#[test]
fn selectors_parse_and_match_like_calico() {
    let l = labels(&[("a", "1"), ("b", "x")]);
    for (sel, want) in [
        ("all()", true),
        ("a == '1' && b == 'x'", true),
        ("a == '2' || has(b)", true),
        ("!has(c) && a in {'1', '2'}", true),
        ("b not in {'x'}", false),
        ("(a != '1')", false),
        ("c == \"1\"", false),
    ] {
        assert_eq!(Selector::parse(sel).unwrap().matches(&l), want, "{sel}");
    }
    assert!(Selector::parse("a contains 'x'").is_err());
    assert!(Selector::parse("a == 1").is_err());
}
