//! The offline verdicts of a run on the shipped render and on broken copies of its
//! GlobalNetworkPolicy: the scrape flow, the data-plane flows, and Calico's validation.

use super::*;
use crate::error::InvalidInput;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of `fixtures/rendered` whose GlobalNetworkPolicy text has `from` replaced by `to`.
fn render_with(from: &str, to: &str) -> (tempfile::TempDir, RenderedSet) {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root().join("fixtures/rendered")).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if path.file_name().unwrap() == "globalnetworkpolicy.yaml" {
            assert!(text.contains(from), "the fixture no longer holds `{from}`");
            text = text.replacen(from, to, 1);
        }
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let set = RenderedSet::load(dir.path()).unwrap();
    (dir, set)
}

fn offline_for(profile: &str, rendered: &RenderedSet) -> Result<OfflinePolicy> {
    let profile = Profile::load(&root(), profile).unwrap();
    offline(&root(), &profile, rendered)
}

#[test]
fn the_shipped_render_lets_prometheus_scrape_and_changes_no_data_plane_flow_on_both_profiles() {
    let rendered = RenderedSet::load(root().join("fixtures/rendered")).unwrap();
    for profile in ["oss", "tigera"] {
        let p = offline_for(profile, &rendered).unwrap();
        let ids: Vec<&str> = p.verdicts.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["prometheus_to_proxy_metrics", "client_to_proxy_listener", "proxy_to_backend", "prometheus_to_proxy_port_10080", "prometheus_to_proxy_port_19003"]);
        for v in &p.verdicts {
            assert!(v.ok && v.undecided.is_none(), "{profile}: {v:?}");
        }
        let scrape = p.scrape().unwrap();
        assert!(scrape.with_render.starts_with("Allow"), "{scrape:?}");
        assert!(scrape.without_render.starts_with("Deny"), "without the render the later tier denies the scrape: {scrape:?}");
        assert!(p.data_plane_broken().is_none());
    }
}

#[test]
fn an_allow_rule_for_the_wrong_namespace_fails_the_scrape_flow_naming_the_policy_and_leaves_the_data_plane_alone() {
    let (_dir, rendered) = render_with("projectcalico.org/name == 'tigera-prometheus'", "projectcalico.org/name == 'monitoring'");
    let p = offline_for("oss", &rendered).unwrap();
    let scrape = p.scrape().unwrap();
    assert!(!scrape.ok, "{scrape:?}");
    assert_eq!(scrape.blame.as_deref(), Some("GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics"));
    let problem = scrape.problem.as_deref().unwrap();
    assert!(problem.contains("GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics ingress[1]"), "{problem}");
    assert!(p.data_plane_broken().is_none(), "{:?}", p.verdicts);
}

#[test]
fn a_last_rule_deny_instead_of_pass_breaks_the_data_plane_naming_the_policy_and_rule() {
    let (_dir, rendered) = render_with("        ports:\n          - 19001\n    - action: Pass", "        ports:\n          - 19001\n    - action: Deny");
    let p = offline_for("oss", &rendered).unwrap();
    let broken = p.data_plane_broken().expect("the Deny changes the data plane");
    assert_eq!(broken.resource, "GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics");
    assert!(broken.problem.contains("with it Deny (ingress decided by GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics ingress[1])"), "{}", broken.problem);
    assert!(broken.problem.contains("without it Allow"), "{}", broken.problem);
    assert!(p.scrape().unwrap().ok, "the scrape itself is still allowed");
}

#[test]
fn a_broken_policy_is_invalid_input_naming_file_line_field_and_rule() {
    for (from, to, field, line, rule) in [
        ("        namespaceSelector: projectcalico.org/name == 'tigera-prometheus'\n", "        namespaceSelector: projectcalico.org/name == 'tigera-prometheus'\n        nets: [0.0.0.0/0, '::/0']\n", "spec.ingress[0].source.nets", 25, "calico: CIDR"),
        ("selector: app.kubernetes.io/name == 'prometheus'\n        namespaceSelector", "selector: app.kubernetes.io/name == 'prometheus\n        namespaceSelector", "spec.ingress[0].source.selector", 23, "calico: selector"),
        ("    - action: Allow\n      protocol: TCP\n      source:", "    - action: Accept\n      protocol: TCP\n      source:", "spec.ingress[0].action", 20, "calico: action"),
    ] {
        let (_dir, rendered) = render_with(from, to);
        let err = offline_for("oss", &rendered).unwrap_err();
        let invalid = err.downcast_ref::<InvalidInput>().unwrap_or_else(|| panic!("not invalid input: {err:#}"));
        let p = &invalid.0[0];
        assert_eq!((p.field.as_str(), p.at.line), (field, line), "{invalid}");
        assert!(p.at.file.ends_with("globalnetworkpolicy.yaml") && p.message.contains(&format!("[{rule}]")), "{invalid}");
        assert!(p.message.starts_with("GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics: "), "{invalid}");
    }
}

#[test]
fn a_render_without_a_calico_policy_reports_the_scrape_flow_as_not_decided() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("fixtures/rendered/podmonitor.yaml"), dir.path().join("podmonitor.yaml")).unwrap();
    let p = offline_for("oss", &RenderedSet::load(dir.path()).unwrap()).unwrap();
    let scrape = p.scrape().unwrap();
    assert!(scrape.ok && scrape.problem.is_none(), "{scrape:?}");
    assert!(scrape.property().starts_with("NOT DECIDED offline: the render holds no Calico policy"), "{}", scrape.property());
    assert!(scrape.property().contains("on a cluster: Deny"), "{}", scrape.property());
}
