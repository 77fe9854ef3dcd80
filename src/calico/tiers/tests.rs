//! Tiered evaluation: tier and policy order, first match, Pass, a tier's end, the profile, and the
//! shipped policies (the rendered ones, the oss tier, the later deny tier) on the kind stack's pods.

use super::*;
use crate::calico::model::{PolicySet, Sourced};
use serde_json::{json, Value};
use std::path::PathBuf;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn prometheus_in(ns: &str) -> Endpoint {
    Endpoint::pod(ns, "prometheus-waf-e2e-0", labels(&[("app.kubernetes.io/name", "prometheus"), ("prometheus", "waf-e2e")]), Labels::new(), Some("prometheus"), &[])
}

fn proxy() -> Endpoint {
    Endpoint::pod("envoy-gateway-system", "envoy-waf-e2e-abc",
        labels(&[("app.kubernetes.io/component", "proxy"), ("app.kubernetes.io/managed-by", "envoy-gateway"), ("app.kubernetes.io/name", "envoy")]),
        Labels::new(), None, &[("metrics", 19001), ("http-80", 10080)])
}

fn file_objects(files: &[&str]) -> Vec<(Value, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    files.iter().flat_map(|f| {
        let docs: Vec<Value> = serde_saphyr::from_str_multiple(&std::fs::read_to_string(root.join(f)).unwrap()).unwrap();
        docs.into_iter().map(move |d| (d, PathBuf::from(f)))
    }).collect()
}

fn set_of(objects: &[(Value, PathBuf)]) -> PolicySet {
    let refs: Vec<Sourced<'_>> = objects.iter().map(|(v, f)| (v, f.clone())).collect();
    PolicySet::from_objects(&refs).unwrap()
}

/// The oss profile's tiers and deny policy plus the rendered policies.
fn oss_with_render() -> PolicySet {
    set_of(&file_objects(&["kind/manifests/calico-tier-allow-tigera.yaml", "kind/manifests/proxy-metrics-deny.yaml", "fixtures/rendered/globalnetworkpolicy.yaml"]))
}

fn tcp<'a>(source: &'a Endpoint, destination: &'a Endpoint, port: u16) -> Flow<'a> {
    Flow { source, destination, protocol: 6, port }
}

fn rule(policy: &str, rule: &str) -> DecidedBy {
    DecidedBy::Rule { policy: format!("GlobalNetworkPolicy {policy}"), rule: rule.into() }
}

#[test]
fn the_rendered_policies_let_prometheus_in_tigera_prometheus_scrape_the_metrics_port() {
    let (prom, proxy) = (prometheus_in("tigera-prometheus"), proxy());
    let t = evaluate(&oss_with_render(), &tcp(&prom, &proxy, 19001)).unwrap();
    assert_eq!(t.verdict(), Action::Allow, "{}", t.render());
    assert_eq!(t.egress.by, rule("allow-tigera.waf-prometheus-scrape-proxies", "egress[0]"));
    assert_eq!(t.ingress.by, rule("allow-tigera.waf-gateway-proxy-metrics", "ingress[0]"));
}

#[test]
fn prometheus_elsewhere_is_passed_on_by_the_render_and_denied_by_the_later_tier() {
    let (prom, proxy) = (prometheus_in("monitoring"), proxy());
    let t = evaluate(&oss_with_render(), &tcp(&prom, &proxy, 19001)).unwrap();
    assert_eq!(t.verdict(), Action::Deny, "{}", t.render());
    assert_eq!(t.ingress.by, rule("waf-e2e-deny.proxy-metrics", "ingress[0]"));
    assert_eq!(t.ingress.passed_by, vec!["GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics ingress[1]".to_string()]);
    let trace = t.render();
    assert!(trace.contains("ingress[0] Allow: no match: source.namespaceSelector does not match namespace monitoring"), "{trace}");
    assert!(trace.contains("verdict: Deny (ingress decided by GlobalNetworkPolicy waf-e2e-deny.proxy-metrics ingress[0])"), "{trace}");
}

#[test]
fn the_gateway_port_passes_every_tier_and_the_profile_allows_it() {
    let (prom, proxy) = (prometheus_in("tigera-prometheus"), proxy());
    let t = evaluate(&oss_with_render(), &tcp(&prom, &proxy, 10080)).unwrap();
    assert_eq!(t.verdict(), Action::Allow, "{}", t.render());
    assert_eq!(t.ingress.by, DecidedBy::Profile);
    assert_eq!(t.ingress.passed_by.len(), 2, "{:?}", t.ingress.passed_by);
}

fn policy(name: &str, tier: &str, order: f64, spec: Value) -> Value {
    let mut spec = spec;
    spec["tier"] = json!(tier);
    spec["order"] = json!(order);
    json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": spec})
}

fn tier(name: &str, order: f64, default_action: &str) -> Value {
    json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": name}, "spec": {"order": order, "defaultAction": default_action}})
}

fn evaluate_objects(objects: Vec<Value>, port: u16) -> Trace {
    let sourced: Vec<(Value, PathBuf)> = objects.into_iter().map(|v| (v, PathBuf::from("t.yaml"))).collect();
    let (prom, proxy) = (prometheus_in("tigera-prometheus"), proxy());
    evaluate(&set_of(&sourced), &tcp(&prom, &proxy, port)).unwrap()
}

#[test]
fn tiers_are_taken_in_order_and_policies_in_order_within_a_tier() {
    let t = evaluate_objects(vec![
        tier("b", 200.0, "Deny"),
        tier("a", 100.0, "Deny"),
        policy("b.allow", "b", 1.0, json!({"ingress": [{"action": "Allow"}]})),
        policy("a.late", "a", 20.0, json!({"ingress": [{"action": "Deny"}]})),
        policy("a.early", "a", 10.0, json!({"ingress": [{"action": "Pass"}]})),
    ], 19001);
    assert_eq!(t.ingress.by, rule("b.allow", "ingress[0]"), "{}", t.render());
    assert_eq!(t.ingress.passed_by, vec!["GlobalNetworkPolicy a.early ingress[0]".to_string()]);
}

#[test]
fn the_first_matching_rule_decides_and_log_goes_on() {
    let t = evaluate_objects(vec![
        tier("a", 100.0, "Deny"),
        policy("a.p", "a", 1.0, json!({"ingress": [
            {"action": "Allow", "protocol": "UDP"},
            {"action": "Log"},
            {"action": "Deny", "protocol": "TCP", "destination": {"ports": ["metrics"]}},
            {"action": "Allow"},
        ]})),
    ], 19001);
    assert_eq!(t.ingress.by, rule("a.p", "ingress[2]"), "{}", t.render());
    assert_eq!(t.verdict(), Action::Deny);
}

#[test]
fn a_tier_that_selects_the_endpoint_without_a_matching_rule_ends_in_a_deny_unless_its_default_is_pass() {
    let spec = json!({"ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [1]}}]});
    let denied = evaluate_objects(vec![tier("a", 100.0, "Deny"), policy("a.p", "a", 1.0, spec.clone())], 19001);
    assert_eq!(denied.ingress.by, DecidedBy::TierEnd { tier: "a".into(), policies: vec!["GlobalNetworkPolicy a.p".into()] }, "{}", denied.render());
    let passed = evaluate_objects(vec![tier("a", 100.0, "Pass"), policy("a.p", "a", 1.0, spec)], 19001);
    assert_eq!(passed.ingress.by, DecidedBy::Profile, "{}", passed.render());
}

#[test]
fn a_policy_that_selects_nothing_skips_its_tier_and_the_profile_allows() {
    let t = evaluate_objects(vec![tier("a", 100.0, "Deny"), policy("a.p", "a", 1.0, json!({"selector": "app == 'other'", "ingress": [{"action": "Deny"}]}))], 19001);
    assert_eq!((t.verdict(), &t.ingress.by), (Action::Allow, &DecidedBy::Profile), "{}", t.render());
    assert!(t.render().contains("not applied: its selector does not match"), "{}", t.render());
}

#[test]
fn egress_is_evaluated_on_the_source_and_a_deny_there_decides() {
    let t = evaluate_objects(vec![tier("a", 100.0, "Deny"), policy("a.out", "a", 1.0, json!({"selector": "app.kubernetes.io/name == 'prometheus'", "types": ["Egress"], "egress": [{"action": "Deny"}]}))], 19001);
    assert_eq!(t.deciding().0, Direction::Egress);
    assert_eq!(t.egress.by, rule("a.out", "egress[0]"), "{}", t.render());
}

#[test]
fn a_namespaced_policy_applies_only_in_its_namespace_and_its_selectors_pick_pods_there() {
    let np = |ns: &str, source: Value| json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": ns},
        "spec": {"ingress": [{"action": "Allow", "source": source}, {"action": "Deny"}]}});
    let elsewhere = evaluate_objects(vec![np("shop", json!({}))], 19001);
    assert_eq!(elsewhere.ingress.by, DecidedBy::Profile, "{}", elsewhere.render());
    let same_ns_selector = evaluate_objects(vec![np("envoy-gateway-system", json!({"selector": "app.kubernetes.io/name == 'prometheus'"}))], 19001);
    assert_eq!(same_ns_selector.ingress.by, DecidedBy::Rule { policy: "NetworkPolicy envoy-gateway-system/p".into(), rule: "ingress[1]".into() }, "{}", same_ns_selector.render());
}

#[test]
fn a_rule_that_needs_a_cluster_is_not_decided_offline() {
    let sourced = vec![(policy("a.p", "default", 1.0, json!({"ingress": [{"action": "Allow", "source": {"nets": ["10.0.0.0/8"]}}]})), PathBuf::from("t.yaml"))];
    let (prom, proxy) = (prometheus_in("x"), proxy());
    let err = evaluate(&set_of(&sourced), &tcp(&prom, &proxy, 19001)).unwrap_err();
    assert!(err.contains("GlobalNetworkPolicy a.p ingress[0]: cannot be decided offline: source.nets"), "{err}");
}

#[test]
fn a_policy_in_a_tier_nothing_defines_is_an_error_naming_it() {
    let objects = [(policy("ghost.p", "ghost", 1.0, json!({})), PathBuf::from("t.yaml"))];
    let refs: Vec<Sourced<'_>> = objects.iter().map(|(v, f)| (v, f.clone())).collect();
    let (file, err) = PolicySet::from_objects(&refs).unwrap_err();
    assert_eq!(file, PathBuf::from("t.yaml"));
    assert!(err.contains("GlobalNetworkPolicy ghost.p (t.yaml) is in tier `ghost`"), "{err}");
}
