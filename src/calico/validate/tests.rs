//! Each Calico rule the validation implements, shown failing on a broken object and passing on the
//! rendered fixture.

use super::*;
use serde_json::json;

fn rendered() -> Vec<Value> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("fixtures/rendered/globalnetworkpolicy.yaml")).unwrap();
    serde_saphyr::from_str_multiple(&text).unwrap()
}

fn gnp(spec: Value) -> Value {
    json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "allow-tigera.p"}, "spec": spec})
}

fn with_rule(rule: Value) -> Value {
    gnp(json!({"tier": "allow-tigera", "types": ["Ingress"], "ingress": [rule]}))
}

/// The one finding of `v` (fails the test when there is none or several), as `field|rule|message`.
fn only(v: &Value) -> String {
    let f = check_object(v);
    assert_eq!(f.len(), 1, "{v}: {f:?}");
    format!("{}|{}|{}", f[0].field, f[0].rule, f[0].message)
}

#[test]
fn the_rendered_policies_and_the_profile_tiers_pass() {
    for v in rendered() {
        assert_eq!(check_object(&v), vec![], "{v}");
    }
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for file in ["kind/manifests/calico-tier-allow-tigera.yaml", "kind/manifests/proxy-metrics-deny.yaml"] {
        let docs: Vec<Value> = serde_saphyr::from_str_multiple(&std::fs::read_to_string(root.join(file)).unwrap()).unwrap();
        for v in docs {
            assert!(is_calico_object(&v), "{file}: {v}");
            assert_eq!(check_object(&v), vec![], "{file}: {v}");
        }
    }
}

#[test]
fn objects_of_other_groups_are_not_calicos_to_validate() {
    let crd_backed = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy", "spec": {"ingress": [{"action": "Accept"}]}});
    assert!(!is_calico_object(&crd_backed));
    assert_eq!(check_object(&crd_backed), vec![]);
}

#[test]
fn a_rule_with_both_an_ipv4_and_an_ipv6_cidr_is_refused() {
    let v = with_rule(json!({"action": "Allow", "source": {"nets": ["0.0.0.0/0", "::/0"]}}));
    assert_eq!(only(&v), "spec.ingress[0].source.nets|calico: CIDR|rule contains both IPv4 and IPv6 CIDRs");
    let across_sides = with_rule(json!({"action": "Allow", "source": {"nets": ["10.0.0.0/8"]}, "destination": {"notNets": ["fd00::/8"]}}));
    assert_eq!(only(&across_sides), "spec.ingress[0].destination.notNets|calico: CIDR|rule contains both IPv4 and IPv6 CIDRs");
}

#[test]
fn an_invalid_cidr_and_a_cidr_of_the_other_ip_version_are_refused() {
    assert_eq!(only(&with_rule(json!({"action": "Allow", "source": {"nets": ["10.0.0.0/33"]}}))), "spec.ingress[0].source.nets[0]|calico: CIDR|invalid CIDR \"10.0.0.0/33\"");
    assert_eq!(only(&with_rule(json!({"action": "Allow", "source": {"nets": ["ten/8"]}}))), "spec.ingress[0].source.nets[0]|calico: CIDR|invalid CIDR \"ten/8\"");
    assert_eq!(only(&with_rule(json!({"action": "Allow", "ipVersion": 6, "destination": {"nets": ["10.1.2.3"]}}))),
        "spec.ingress[0].destination.nets|calico: CIDR|rule IP version doesn't match CIDR version");
    assert_eq!(check_object(&with_rule(json!({"action": "Allow", "ipVersion": 4, "destination": {"nets": ["10.1.2.3", "192.168.0.0/16"]}}))), vec![]);
}

#[test]
fn an_unknown_action_is_refused() {
    assert_eq!(only(&with_rule(json!({"action": "Accept"}))), "spec.ingress[0].action|calico: action|invalid action `Accept` (must be Allow, Deny, Log or Pass)");
    assert_eq!(only(&with_rule(json!({}))), "spec.ingress[0].action|calico: action|invalid action `` (must be Allow, Deny, Log or Pass)");
}

#[test]
fn a_selector_with_an_unbalanced_quote_is_refused_with_the_byte_it_broke_at() {
    let v = gnp(json!({"tier": "allow-tigera", "selector": "app.kubernetes.io/component == 'proxy", "types": ["Ingress"]}));
    let f = only(&v);
    assert!(f.starts_with("spec.selector|calico: selector|invalid selector `app.kubernetes.io/component == 'proxy`: at byte 31: unterminated string"), "{f}");
    let in_rule = with_rule(json!({"action": "Allow", "source": {"namespaceSelector": "projectcalico.org/name = 'x'"}}));
    assert!(only(&in_rule).starts_with("spec.ingress[0].source.namespaceSelector|calico: selector|"), "{}", only(&in_rule));
    let sa = with_rule(json!({"action": "Allow", "source": {"serviceAccounts": {"selector": "has("}}}));
    assert!(only(&sa).starts_with("spec.ingress[0].source.serviceAccounts.selector|calico: selector|"), "{}", only(&sa));
}

#[test]
fn global_is_refused_outside_a_rules_namespace_selector_and_when_combined() {
    let spec_selector = gnp(json!({"tier": "allow-tigera", "selector": "global()"}));
    assert_eq!(only(&spec_selector), "spec.selector|calico: global()|GlobalNetworkPolicySpec.Selector: global() can only be used in an EntityRule namespaceSelector");
    let spec_ns = gnp(json!({"tier": "allow-tigera", "namespaceSelector": "global()"}));
    assert!(only(&spec_ns).starts_with("spec.namespaceSelector|calico: global()|"), "{}", only(&spec_ns));
    let spec_sa = gnp(json!({"tier": "allow-tigera", "serviceAccountSelector": "global()"}));
    assert!(only(&spec_sa).starts_with("spec.serviceAccountSelector|calico: global()|"), "{}", only(&spec_sa));
    let rule_selector = with_rule(json!({"action": "Allow", "source": {"selector": "global()"}}));
    assert_eq!(only(&rule_selector), "spec.ingress[0].source.selector|calico: global()|Selector field: global() can only be used in an EntityRule namespaceSelector");
    let combined = with_rule(json!({"action": "Allow", "source": {"namespaceSelector": "global() && has(a)"}}));
    assert_eq!(only(&combined), "spec.ingress[0].source.namespaceSelector|calico: global()|NamespaceSelector field: global() cannot be combined with other selectors");
    assert_eq!(check_object(&with_rule(json!({"action": "Allow", "source": {"namespaceSelector": "global()"}}))), vec![]);
}

#[test]
fn ports_need_a_protocol_that_has_ports() {
    let no_protocol = with_rule(json!({"action": "Allow", "destination": {"ports": [19001]}}));
    assert_eq!(only(&no_protocol), format!("spec.ingress[0].destination.ports|calico: ports|{PORTS_NEED_PROTOCOL}"));
    let icmp = with_rule(json!({"action": "Allow", "protocol": "ICMP", "source": {"notPorts": [1]}}));
    assert_eq!(only(&icmp), format!("spec.ingress[0].source.notPorts|calico: ports|{PORTS_NEED_PROTOCOL}"));
    for protocol in [json!("TCP"), json!("UDP"), json!("SCTP"), json!("UDPLite"), json!(6), json!(17)] {
        assert_eq!(check_object(&with_rule(json!({"action": "Allow", "protocol": protocol, "destination": {"ports": [80, "8000:8080", "metrics"]}}))), vec![], "{protocol}");
    }
}

#[test]
fn a_bad_port_is_refused() {
    let tcp = |port: Value| with_rule(json!({"action": "Allow", "protocol": "TCP", "destination": {"ports": [port]}}));
    assert!(only(&tcp(json!(0))).contains("port number must be between 1 and 65535"), "{}", only(&tcp(json!(0))));
    assert!(only(&tcp(json!(70000))).contains("port number must be between 1 and 65535"));
    assert!(only(&tcp(json!("90:80"))).contains("port range invalid: 90:80"));
    assert!(only(&tcp(json!("Metrics_Port"))).contains("a port name"));
    assert!(only(&tcp(json!("1:"))).starts_with("spec.ingress[0].destination.ports[0]|calico: ports|"));
}

#[test]
fn an_unknown_protocol_is_refused() {
    assert_eq!(only(&with_rule(json!({"action": "Allow", "protocol": "HTTP"}))), "spec.ingress[0].protocol|calico: protocol|protocol name invalid: \"HTTP\"");
    assert_eq!(only(&with_rule(json!({"action": "Allow", "notProtocol": 0}))), "spec.ingress[0].notProtocol|calico: protocol|protocol number invalid: 0");
}

#[test]
fn icmp_fields_and_ip_versions_must_agree_with_the_protocol() {
    assert_eq!(only(&with_rule(json!({"action": "Allow", "protocol": "TCP", "icmp": {"type": 8}}))),
        "spec.ingress[0].icmp|calico: icmp|rules that specify ICMP fields must set protocol to ICMP");
    assert_eq!(only(&with_rule(json!({"action": "Allow", "protocol": "ICMP", "ipVersion": 6}))),
        "spec.ingress[0].ipVersion|calico: ipVersion|must set ipversion to '4' with protocol icmp");
    assert_eq!(only(&with_rule(json!({"action": "Allow", "notProtocol": "ICMPv6", "ipVersion": 4}))),
        "spec.ingress[0].ipVersion|calico: ipVersion|must set ipversion to '6' with protocol icmpv6");
    assert_eq!(only(&with_rule(json!({"action": "Allow", "ipVersion": 5}))), "spec.ingress[0].ipVersion|calico: ipVersion|invalid ipVersion 5 (must be 4 or 6)");
}

#[test]
fn application_layer_fields_are_only_for_allow_rules_on_ingress_over_tcp() {
    assert_eq!(only(&with_rule(json!({"action": "Deny", "http": {"methods": ["GET"]}}))), "spec.ingress[0].http|calico: application layer|only valid for Allow rules");
    assert_eq!(only(&with_rule(json!({"action": "Allow", "protocol": "UDP", "http": {"methods": ["GET"]}}))),
        "spec.ingress[0].protocol|calico: http|rules that specify HTTP fields must set protocol to TCP or empty");
    let egress = gnp(json!({"tier": "allow-tigera", "types": ["Egress"], "egress": [{"action": "Allow", "http": {"paths": [{"exact": "/"}]}}]}));
    assert_eq!(only(&egress), "spec.egress[0].http|calico: application layer|not allowed in egress rules");
    assert_eq!(check_object(&with_rule(json!({"action": "Allow", "protocol": "TCP", "http": {"methods": ["GET"]}}))), vec![]);
}

#[test]
fn a_policy_outside_the_tier_its_name_names_is_refused() {
    let v = json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "waf-gateway-proxy-metrics"}, "spec": {"tier": "allow-tigera"}});
    assert_eq!(only(&v), "metadata.name|calico: tier prefix|Incorrectly formatted policy name waf-gateway-proxy-metrics: a policy in tier `allow-tigera` must be named `allow-tigera.<name>`");
    let wrong_tier = json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "other.p"}, "spec": {}});
    assert!(only(&wrong_tier).contains("a policy in tier `default` must be named `default.<name>`"), "{}", only(&wrong_tier));
    let default_unprefixed = json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "p"}, "spec": {}});
    assert_eq!(check_object(&default_unprefixed), vec![]);
}

#[test]
fn policy_and_tier_names_follow_calicos_patterns() {
    let gnp_name = json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "a.b.c"}, "spec": {"tier": "a"}});
    assert!(only(&gnp_name).starts_with("metadata.name|calico: policy name|name must consist of lower case"), "{}", only(&gnp_name));
    let np = json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "Web", "namespace": "shop"}, "spec": {}});
    assert!(only(&np).starts_with("metadata.name|calico: policy name|"), "{}", only(&np));
    let tier = json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "a.b"}, "spec": {"order": 1}});
    assert!(only(&tier).starts_with("metadata.name|calico: tier name|name must consist of lower case alphanumeric characters or '-'"), "{}", only(&tier));
    let long = json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t".repeat(64)}, "spec": {}});
    assert_eq!(only(&long), "metadata.name|calico: tier name|name is too long by 1 bytes");
}

#[test]
fn order_must_be_a_number_and_the_default_tier_keeps_its_order() {
    assert_eq!(only(&gnp(json!({"tier": "allow-tigera", "order": "1"}))), "spec.order|calico: order|order must be a finite number, not \"1\"");
    let default_tier = json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "default"}, "spec": {"order": 100}});
    assert_eq!(only(&default_tier), "spec.order|calico: order|default tier order must be 1000000");
    let bad_action = json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t"}, "spec": {"order": 1, "defaultAction": "Allow"}});
    assert_eq!(only(&bad_action), "spec.defaultAction|calico: action|invalid tier defaultAction \"Allow\" (must be Pass or Deny)");
}

#[test]
fn types_may_not_repeat_and_must_cover_the_rules_given() {
    let twice = gnp(json!({"tier": "allow-tigera", "types": ["Ingress", "Ingress"]}));
    assert_eq!(only(&twice), "spec.types[1]|calico: types|'Ingress' type specified more than once");
    let unknown = gnp(json!({"tier": "allow-tigera", "types": ["Inbound"]}));
    assert_eq!(only(&unknown), "spec.types[0]|calico: types|invalid policy type `Inbound` (must be Ingress or Egress)");
    let ignored = gnp(json!({"tier": "allow-tigera", "types": ["Ingress"], "egress": [{"action": "Allow"}]}));
    assert_eq!(only(&ignored), "spec.egress|waf-e2e: types|egress rules are given but `types` does not list Egress: Calico accepts them and never applies them");
}

#[test]
fn pre_dnat_and_do_not_track_follow_calicos_rules() {
    let both = gnp(json!({"tier": "allow-tigera", "preDNAT": true, "doNotTrack": true, "applyOnForward": true}));
    assert_eq!(only(&both), "spec.preDNAT|calico: preDNAT|PreDNAT and DoNotTrack cannot both be true, for a given PolicySpec");
    let egress = gnp(json!({"tier": "allow-tigera", "preDNAT": true, "applyOnForward": true, "types": ["Egress"], "egress": [{"action": "Deny"}]}));
    assert_eq!(only(&egress), "spec.egress|calico: preDNAT|PreDNAT PolicySpec cannot have any Egress rules");
    let forward = gnp(json!({"tier": "allow-tigera", "doNotTrack": true}));
    assert_eq!(only(&forward), "spec.applyOnForward|calico: applyOnForward|ApplyOnForward must be true if either PreDNAT or DoNotTrack is true, for a given PolicySpec");
}

#[test]
fn service_rules_follow_calicos_rules() {
    let no_name = with_rule(json!({"action": "Allow", "source": {"services": {"namespace": "x"}}}));
    assert_eq!(only(&no_name), "spec.ingress[0].source.services|calico: services|must specify a service name");
    let with_selector = with_rule(json!({"action": "Allow", "source": {"services": {"name": "s", "namespace": "x"}, "selector": "has(a)"}}));
    assert_eq!(only(&with_selector), "spec.ingress[0].source.services|calico: services|cannot specify Selector/NotSelector and Services on the same rule");
    let with_ns = with_rule(json!({"action": "Allow", "source": {"services": {"name": "s", "namespace": "x"}, "namespaceSelector": "all()"}}));
    assert!(only(&with_ns).ends_with("cannot specify NamespaceSelector and Services on the same rule"));
    let with_sa = with_rule(json!({"action": "Allow", "source": {"services": {"name": "s", "namespace": "x"}, "serviceAccounts": {"names": ["a"]}}}));
    assert!(only(&with_sa).ends_with("cannot specify ServiceAccounts and Services on the same rule"));
    let with_nets = with_rule(json!({"action": "Allow", "source": {"services": {"name": "s", "namespace": "x"}, "nets": ["10.0.0.0/8"]}}));
    assert!(only(&with_nets).ends_with("cannot specify Nets/NotNets and Services on the same rule"));
    let no_ns = with_rule(json!({"action": "Allow", "source": {"services": {"name": "s"}}}));
    assert_eq!(only(&no_ns), "spec.ingress[0].source.services.namespace|calico: services|must specify a namespace");
    let wrong_side = with_rule(json!({"action": "Allow", "destination": {"services": {"name": "s", "namespace": "x"}}}));
    assert_eq!(only(&wrong_side), "spec.ingress[0].destination.services|calico: services|not allowed in ingress rule destination");
    let ports = gnp(json!({"tier": "allow-tigera", "types": ["Egress"], "egress": [{"action": "Allow", "protocol": "TCP",
        "destination": {"services": {"name": "s", "namespace": "x"}, "ports": [80]}}]}));
    assert_eq!(only(&ports), "spec.egress[0].destination.ports|calico: services|cannot specify ports with a service selector");
}
