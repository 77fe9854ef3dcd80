//! A rendered resource that breaks the feature is a FAILED scenario naming the resource (exit 1
//! from the CLI), never a pass and never "infrastructure": each case breaks one thing in a copy of
//! `fixtures/rendered/` and checks the message. And a filter the stand-in is not runs too.
#![cfg(feature = "reference-proxy")]

use crate::common;

use std::path::{Path, PathBuf};
use waf_e2e::outcome::Verdict;
use waf_e2e::stack::local::LocalStack;
use waf_e2e::stack::Stack;
use waf_e2e::waf::Faults;

/// A copy of `fixtures/rendered/` in which `file` has `from` replaced by `to` (which must occur).
fn broken_render(file: &str, from: &str, to: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(common::root().join("fixtures/rendered")).expect("list fixtures/rendered") {
        let path = entry.expect("entry").path();
        let mut text = std::fs::read_to_string(&path).expect("read fixture");
        if path.file_name().and_then(|n| n.to_str()) == Some(file) {
            assert!(text.contains(from), "{file} does not contain {from:?}: the test would break nothing");
            text = text.replace(from, to);
        }
        std::fs::write(dir.path().join(path.file_name().expect("file name")), text).expect("write copy");
    }
    let path = dir.path().to_path_buf();
    (dir, path)
}

async fn failure_of(rendered: &Path, scenario: &str) -> String {
    let outcomes = common::run_local(rendered, Faults::default(), &[common::scenario(scenario)]).await;
    common::failures(&outcomes[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_podmonitor_whose_selector_matches_no_proxy_fails_naming_it_with_the_proxys_labels() {
    let (_dir, rendered) = broken_render("podmonitor.yaml", "app.kubernetes.io/name: envoy\n", "app.kubernetes.io/name: envoy-proxy\n");
    let msg = failure_of(&rendered, "sqli-blocked.yaml").await;
    assert!(msg.contains("PodMonitor tigera-prometheus/tigera-waf-gateway-proxies") && msg.contains("selects no proxy pod"), "{msg}");
    assert!(msg.contains("app_kubernetes_io_name=envoy"), "the proxy's real labels are shown beside the selector: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_podmonitor_scraping_a_port_the_proxy_does_not_name_fails_naming_it() {
    let (_dir, rendered) = broken_render("podmonitor.yaml", "- port: metrics\n", "- port: stats\n");
    let msg = failure_of(&rendered, "sqli-blocked.yaml").await;
    assert!(msg.contains("PodMonitor tigera-prometheus/tigera-waf-gateway-proxies") && msg.contains("container port \"metrics\""), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_podmonitor_that_lets_envoys_own_stats_through_fails_naming_the_offenders() {
    // The keep step becomes a harmless replace: every Envoy stat reaches Prometheus.
    let (_dir, rendered) = broken_render("podmonitor.yaml", "          action: keep\n", "          action: replace\n          targetLabel: kept_everything\n");
    let msg = failure_of(&rendered, "sqli-blocked.yaml").await;
    assert!(msg.contains("PodMonitor tigera-prometheus/tigera-waf-gateway-proxies lets series beyond the contract into Prometheus"), "{msg}");
    assert!(msg.contains("envoy_"), "the first offenders are Envoy's own stats: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoyproxy_without_the_log_path_fails_the_audit_expectations_naming_it() {
    let (_dir, rendered) = broken_render("envoyproxy.yaml", "    - --log-path\n    - /access_logs/envoy.log\n", "    - --concurrency\n    - \"2\"\n");
    let msg = failure_of(&rendered, "sqli-blocked.yaml").await;
    assert!(msg.contains("request `sqli` #1") && msg.contains("found none"), "{msg}");
    assert!(msg.contains("EnvoyProxy envoy-gateway-system/tigera-waf-proxy: spec.extraArgs has no `--log-path /access_logs/envoy.log`"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoyproxy_logging_wasm_at_warn_fails_the_audit_expectations_naming_it() {
    let (_dir, rendered) = broken_render("envoyproxy.yaml", "      wasm: info\n", "      wasm: warn\n");
    let msg = failure_of(&rendered, "sqli-blocked.yaml").await;
    assert!(msg.contains("request `sqli` #1") && msg.contains("found none"), "{msg}");
    assert!(msg.contains("EnvoyProxy envoy-gateway-system/tigera-waf-proxy: Envoy's `wasm` logger is at `warn`"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_the_harness_did_not_write_loads_through_waf_wasm_and_counts() {
    let source = std::fs::read_to_string(common::root().join("tests/fixtures/external-filter/counter.c")).expect("read counter.c");
    let cache = tempfile::tempdir().expect("temp dir");
    let module = waf_e2e::filter::build::compile_c_module("external-counter", &source, cache.path()).expect("build counter.c");
    let opts = waf_e2e::stack::local::LocalOptions {
        waf_wasm: Some(module),
        waf_flavour: Some("custom-counter".into()),
        ..common::local_options(&common::root().join("fixtures/rendered"))
    };
    let stack = LocalStack::start(&opts).await.unwrap_or_else(|e| panic!("local stack: {e:#}"));
    assert_eq!(stack.filter().flavour, "custom-counter");
    let scenario = common::scenario("benign-traffic.yaml");
    let run = waf_e2e::runner::RunOptions { run_id: "ext".into(), jobs: 1, timeouts: opts.timeouts.clone(), diagnostics_dir: None, fail_fast: false };
    let outcomes = waf_e2e::runner::run_all(&stack, &[scenario], &run, &waf_e2e::report::Progress { quiet: true }).await;
    let raw = stack.raw_stats().await;
    stack.shutdown().await.expect("stop the local stack");
    let raw = raw.expect("raw stats");
    assert!(raw.lines().any(|l| l == "external_filter_requests{} 7"), "the external filter counted the 7 requests:\n{}",
        raw.lines().filter(|l| l.starts_with("external")).collect::<Vec<_>>().join("\n"));
    // It is no WAF: the scenario's transactions expectation fails, and says which filter ran.
    match &outcomes[0].verdict {
        Verdict::Failed(f) => assert!(f.join("\n").contains("tigera_waf_transactions_total"), "{f:?}"),
        other => panic!("benign-traffic with a counting-only filter must fail, got {other:?}"),
    }
}
