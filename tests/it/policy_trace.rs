//! `waf-e2e policy-trace`: the trace of one flow through the run's Calico tiers, with and without the render.

use crate::binary;
use binary::waf_e2e;

fn trace(args: &[&str]) -> (Option<i32>, String) {
    let out = waf_e2e(&[&["policy-trace"], args].concat());
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_scrape_flow_is_traced_through_the_rendered_tier_to_an_allow() {
    let (code, out) = trace(&["--from", "prometheus", "--to", "proxy", "--port", "19001"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("pod tigera-prometheus/prometheus-waf-e2e-0: labels {app.kubernetes.io/instance=waf-e2e, app.kubernetes.io/managed-by=prometheus-operator"), "{out}");
    assert!(out.contains("  tier allow-tigera (order 100, kind/manifests/calico-tier-allow-tigera.yaml)\n    GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics (order 1): selects"), "{out}");
    assert!(out.contains("verdict: Allow (ingress decided by GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics ingress[0])"), "{out}");
}

#[test]
fn without_the_render_the_later_tier_denies_the_scrape_and_the_trace_says_where() {
    let (code, out) = trace(&["--from", "prometheus", "--to", "proxy", "--port", "19001", "--without-render"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("(no policy of this tier selects the endpoint: the tier is skipped)"), "{out}");
    assert!(out.contains("verdict: Deny (ingress decided by GlobalNetworkPolicy waf-e2e-deny.proxy-metrics ingress[0])"), "{out}");
}

#[test]
fn a_render_calico_refuses_is_exit_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["podmonitor.yaml", "globalnetworkpolicy.yaml"] {
        let text = std::fs::read_to_string(root.join("fixtures/rendered").join(f)).unwrap();
        std::fs::write(dir.path().join(f), text.replacen("- action: Pass", "- action: Accept", 1)).unwrap();
    }
    let (code, out) = trace(&["--from", "client", "--to", "proxy", "--port", "10080", "--rendered", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("globalnetworkpolicy.yaml:28: field `spec.ingress[1].action`: GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics: [calico: action] invalid action `Accept`"), "{out}");
}
