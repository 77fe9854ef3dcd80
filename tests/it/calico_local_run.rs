//! The rendered GlobalNetworkPolicy's job on the local stack, through the binary: a policy that
//! keeps Prometheus out fails the run (exit 1) with the scrape target down and the policy named,
//! like a cluster; a policy that changes the data plane fails the run before anything starts. One
//! CLI run per broken render (each local start costs seconds).
#![cfg(feature = "reference-proxy")]

use crate::binary;
use crate::policy_trace::render_with;
use binary::waf_e2e;
use serde_json::Value;

/// Runs one scenario on the local stack with `rendered`; exit code, stdout+stderr, JSON report, JUnit.
fn run(rendered: &std::path::Path) -> (Option<i32>, String, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let (json, junit) = (dir.path().join("report.json"), dir.path().join("report.xml"));
    let out = waf_e2e(&["run", "--stack", "local", "--scrape-interval-ms", "250", "--scenario", "sqli-blocked", "--rendered", rendered.to_str().unwrap(),
        "--report", "json", json.to_str().unwrap(), "--junit", junit.to_str().unwrap(), "--diagnostics-dir", dir.path().join("diag").to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("no JSON report ({e}):\n{text}"))).unwrap();
    (out.status.code(), text, report, std::fs::read_to_string(&junit).unwrap())
}

fn flow<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["policy"].as_array().unwrap().iter().find(|f| f["id"] == id).unwrap_or_else(|| panic!("no flow {id} in {}", report["policy"]))
}

#[test]
fn a_policy_admitting_prometheus_from_the_wrong_namespace_fails_the_run_with_the_target_down_naming_it() {
    let rendered = render_with("projectcalico.org/name == 'tigera-prometheus'", "projectcalico.org/name == 'monitoring'");
    let (code, text, report, junit) = run(rendered.path());
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics: the scrape target of podMonitor/tigera-prometheus/tigera-waf-gateway-proxies/0 is down"), "{text}");
    assert!(text.contains("connection refused"), "Prometheus really failed to scrape: {text}");
    assert_eq!(flow(&report, "prometheus_to_proxy_metrics")["ok"], false);
    for id in ["client_to_proxy_listener", "proxy_to_backend", "prometheus_to_proxy_port_10080", "prometheus_to_proxy_port_19003"] {
        assert_eq!(flow(&report, id)["ok"], true, "the data plane stays untouched: {}", flow(&report, id));
    }
    assert!(junit.contains("name=\"policy.prometheus_to_proxy_metrics\" value=\"FAILED: "), "{junit}");
    assert!(junit.contains("name=\"policy.proxy_to_backend\" value=\"ok: Allow"), "{junit}");
}

#[test]
fn a_policy_whose_last_rule_denies_instead_of_passing_fails_the_run_naming_the_policy_and_rule() {
    let rendered = render_with("        ports:\n          - 19001\n    - action: Pass", "        ports:\n          - 19001\n    - action: Deny");
    let (code, text, report, _) = run(rendered.path());
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics: "), "{text}");
    assert!(text.contains("changes because of the render (the data plane must not): with it Deny (ingress decided by GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics ingress[1])"), "{text}");
    assert_eq!(flow(&report, "client_to_proxy_listener")["ok"], false);
    assert_eq!(report["totals"]["failed"], 1, "{report}");
}
