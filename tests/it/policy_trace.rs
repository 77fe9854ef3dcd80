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

/// `fixtures/rendered/` with the GlobalNetworkPolicy's first `from` (which must occur) replaced by `to`.
pub(crate) fn render_with(from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["podmonitor.yaml", "globalnetworkpolicy.yaml", "envoyproxy.yaml"] {
        let text = std::fs::read_to_string(root.join("fixtures/rendered").join(f)).unwrap();
        let is_policy = f == "globalnetworkpolicy.yaml";
        assert!(!is_policy || text.contains(from), "the fixture has no `{from}`: the test would break nothing");
        std::fs::write(dir.path().join(f), if is_policy { text.replacen(from, to, 1) } else { text }).unwrap();
    }
    dir
}

#[test]
fn the_offline_check_accepts_a_policy_for_the_wrong_namespace_and_shows_the_flow_a_run_would_fail() {
    let dir = render_with("projectcalico.org/name == 'tigera-prometheus'", "projectcalico.org/name == 'monitoring'");
    // `plan` runs the same offline check as `validate --profile` and, unlike it, passes where no
    // CRDs are cached (this test cannot count on any).
    let cache = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waf-e2e"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("XDG_CACHE_HOME", cache.path())
        .args(["plan", "--stack", "kind", "--profile", "oss", "--scenario", "sqli-blocked", "--rendered", dir.path().to_str().unwrap()])
        .output()
        .expect("run waf-e2e");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "Calico accepts it: {text}");
    assert!(text.contains("policy (offline): tigera-prometheus/prometheus-waf-e2e-0 -> envoy-gateway-system/"), "{text}");
    assert!(text.contains(":19001 (TCP) must be allowed by the render, and the policies deny it"), "{text}");
}

#[test]
fn validate_refuses_a_policy_in_a_tier_nothing_defines() {
    let dir = render_with("name: allow-tigera.waf-gateway-proxy-metrics\nspec:\n  tier: allow-tigera\n", "name: ghost.waf-gateway-proxy-metrics\nspec:\n  tier: ghost\n");
    let out = waf_e2e(&["validate", "--profile", "oss", "--rendered", dir.path().to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{text}");
    let file = dir.path().join("globalnetworkpolicy.yaml");
    let want = format!("{}: field `spec.tier`: GlobalNetworkPolicy ghost.waf-gateway-proxy-metrics ({}) is in tier `ghost`, which no applied object defines", file.display(), file.display());
    assert!(text.contains(&want), "{text}");
}
