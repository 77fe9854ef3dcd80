//! The PodMonitor's translation, run by a REAL Prometheus (2.42) against raw Envoy WAF stats,
//! yields exactly the contract series (DESIGN 1 / 1.1); the broken fixtures do not.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use waf_e2e::prometheus::PrometheusProcess;
use waf_e2e::rendered::{render_scrape_config, PodMonitor, PodTarget, RenderedSet};
use waf_e2e::timeouts::Timeouts;
use waf_e2e::wait::{self, Check};

/// What an Envoy Gateway proxy with the WAF filter prints on /stats/prometheus (DESIGN 1.1):
/// both key orders, a dashed policy (`block-sqli` -> `block_sqli`), an `authority` key in the middle,
/// a namespace whose value starts with a key word, untagged counters with empty braces, and the
/// usual Envoy stats that must be dropped.
const ENVOY_STATS: &str = "\
# TYPE envoy_cluster_upstream_cx_total counter
envoy_cluster_upstream_cx_total{envoy_cluster_name=\"httproute/shop/web/rule/0\"} 7
# TYPE envoy_http_downstream_rq_total counter
envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"http-10080\"} 12
# TYPE envoy_server_live gauge
envoy_server_live{} 1
# TYPE waf_filter_tx_total counter
waf_filter_tx_total{} 12
# TYPE waf_filter_tx_interruptions_ruleid_949110_phase_http_request_body_policy_block_sqli_namespace_shop counter
waf_filter_tx_interruptions_ruleid_949110_phase_http_request_body_policy_block_sqli_namespace_shop{} 3
# TYPE waf_filter_tx_would_block_ruleid_949110_phase_http_request_body_namespace_shop_policy_detect_sqli counter
waf_filter_tx_would_block_ruleid_949110_phase_http_request_body_namespace_shop_policy_detect_sqli{} 5
# TYPE waf_filter_tx_interruptions_ruleid_941100_phase_http_request_headers_policy_block_xss_authority_shop_example_com_8080_namespace_web_team counter
waf_filter_tx_interruptions_ruleid_941100_phase_http_request_headers_policy_block_xss_authority_shop_example_com_8080_namespace_web_team{} 2
# TYPE waf_filter_tx_would_block_ruleid_920350_phase_http_response_headers_authority_api_example_com_namespace_policy_ns_policy_detect_hdr counter
waf_filter_tx_would_block_ruleid_920350_phase_http_response_headers_authority_api_example_com_namespace_policy_ns_policy_detect_hdr{} 1
# TYPE wasmcustom_other_plugin_counter counter
other_plugin_requests{} 4
";

type Series = BTreeMap<String, String>;

/// The contract series for ENVOY_STATS scraped from a proxy of Gateway default/eg (job excluded,
/// it names the PodMonitor), each with `__value__`.
fn contract_series(instance: &str) -> Vec<Series> {
    let target = |extra: &[(&str, &str)]| -> Series {
        let mut s: Series = [
            ("gateway", "eg"),
            ("gateway_namespace", "default"),
            ("pod", "envoy-default-eg-5f7c9d8b6-x2x9q"),
            ("container", "envoy"),
            ("endpoint", "metrics"),
            ("instance", instance),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        s.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        s
    };
    let decision = |d: &str, policy: &str, ns: &str, rule: &str, phase: &str, value: &str| {
        target(&[
            ("__name__", "tigera_waf_decisions_total"),
            ("decision", d),
            ("policy", policy),
            ("namespace", ns),
            ("rule_id", rule),
            ("phase", phase),
            ("__value__", value),
        ])
    };
    let mut all = vec![
        // The transactions series keeps the proxy pod's namespace (a target label).
        target(&[("__name__", "tigera_waf_transactions_total"), ("namespace", "envoy-gateway-system"), ("__value__", "12")]),
        decision("blocked", "block_sqli", "shop", "949110", "http_request_body", "3"),
        decision("would_block", "detect_sqli", "shop", "949110", "http_request_body", "5"),
        decision("blocked", "block_xss", "web_team", "941100", "http_request_headers", "2"),
        decision("would_block", "detect_hdr", "policy_ns", "920350", "http_response_headers", "1"),
    ];
    all.sort();
    all
}

async fn serve_stats(body: &'static str) -> String {
    let app = axum::Router::new().route(
        "/stats/prometheus",
        axum::routing::get(move || async move { ([("content-type", "text/plain; version=0.0.4")], body) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Scrapes ENVOY_STATS through the translation of `podmonitor` and returns what Prometheus stores
/// for the job (Prometheus' own `up` / `scrape_*` series left out), with the job label checked and
/// removed, sorted.
async fn observe(podmonitor: &str) -> (Vec<Series>, String) {
    observe_pm(load(podmonitor)).await
}

fn load(podmonitor: &str) -> PodMonitor {
    RenderedSet::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(podmonitor)).unwrap().podmonitor
}

async fn observe_pm(pm: PodMonitor) -> (Vec<Series>, String) {
    let addr = serve_stats(ENVOY_STATS).await;
    let target = PodTarget::envoy_gateway_proxy(addr.clone(), "eg", "default");
    let config = render_scrape_config(&pm, &target, Duration::from_secs(1)).unwrap();
    let timeouts = Timeouts::default();
    let prom = PrometheusProcess::start(&config, &timeouts).await.unwrap();
    let job = format!("{}/{}", pm.namespace(), pm.metadata.name);
    let client = reqwest::Client::new();
    let query_url = format!("{}/api/v1/query", prom.url());
    let selector = format!("{{job=\"{job}\"}}");
    let series = wait::until(&format!("prometheus to store series of job {job}"), timeouts.target_up, || {
        let req = client.get(&query_url).query(&[("query", selector.as_str())]).send();
        async move {
            let body: serde_json::Value = req.await?.error_for_status()?.json().await?;
            let mut out = Vec::new();
            let mut up = None;
            for r in body["data"]["result"].as_array().cloned().unwrap_or_default() {
                let mut s: Series = serde_json::from_value(r["metric"].clone())?;
                let name = s.get("__name__").cloned().unwrap_or_default();
                let value = r["value"][1].as_str().unwrap_or_default().to_string();
                if name == "up" {
                    up = Some(value);
                    continue;
                }
                if name.starts_with("scrape_") {
                    continue;
                }
                s.insert("__value__".into(), value);
                out.push(s);
            }
            Ok(match (up.as_deref(), out.is_empty()) {
                (Some("1"), false) => Check::Met(out),
                (up, _) => Check::NotYet(format!("up={up:?}, {} series", out.len())),
            })
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nconfig:\n{config}\nprometheus log:\n{}", prom.log_tail(30)));
    prom.stop().await.unwrap();
    let mut series: Vec<Series> = series
        .into_iter()
        .map(|mut s| {
            assert_eq!(s.remove("job").as_deref(), Some(job.as_str()), "job label of {s:?}");
            s
        })
        .collect();
    series.sort();
    (series, addr)
}

fn show(series: &[Series]) -> String {
    series.iter().map(|s| format!("  {s:?}")).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn prometheus_turns_the_raw_waf_counters_into_exactly_the_contract_series() {
    let (observed, addr) = observe("rendered/podmonitor.yaml").await;
    let expected = contract_series(&addr);
    assert_eq!(observed, expected, "\nobserved:\n{}\nexpected:\n{}", show(&observed), show(&expected));
    // The policy namespace overwrote the pod's namespace target label: no `exported_namespace`, and
    // no temporary or raw-name label leaked.
    for s in &observed {
        assert!(s.keys().all(|k| !k.starts_with("exported_") && !k.starts_with("__tmp")), "{s:?}");
    }
}

#[tokio::test]
async fn an_independently_written_podmonitor_yields_the_same_series() {
    let (observed, addr) = observe("alternative/podmonitor.yaml").await;
    let expected = contract_series(&addr);
    assert_eq!(observed, expected, "\nobserved:\n{}\nexpected:\n{}", show(&observed), show(&expected));
}

#[tokio::test]
async fn without_the_rule_id_relabeling_the_series_differ_so_the_check_can_fail() {
    let (observed, addr) = observe("broken/podmonitor-no-rule-id.yaml").await;
    let expected = contract_series(&addr);
    assert_ne!(observed, expected);
    let decisions: Vec<&Series> = observed.iter().filter(|s| s["__name__"] == "tigera_waf_decisions_total").collect();
    assert_eq!(decisions.len(), 4, "{}", show(&observed));
    assert!(decisions.iter().all(|s| !s.contains_key("rule_id")), "{}", show(&observed));
}

#[tokio::test]
async fn with_blocked_and_would_block_swapped_the_series_differ_so_the_check_can_fail() {
    let (observed, addr) = observe("broken/podmonitor-decisions-swapped.yaml").await;
    let expected = contract_series(&addr);
    assert_ne!(observed, expected);
    let swap = |d: &str| if d == "blocked" { "would_block".to_string() } else { "blocked".to_string() };
    let mut unswapped: Vec<Series> = observed
        .iter()
        .cloned()
        .map(|mut s| {
            if let Some(d) = s.get("decision").cloned() {
                s.insert("decision".into(), swap(&d));
            }
            s
        })
        .collect();
    unswapped.sort();
    assert_eq!(unswapped, expected, "the ONLY difference is the decision label");
}

#[tokio::test]
async fn prometheus_keeps_temporary_labels_of_metric_relabeling_unless_they_are_dropped_explicitly() {
    // Pins a pitfall: unlike target relabeling, metric relabeling does not remove `__`-prefixed
    // labels afterwards. The alternative PodMonitor without its final `labeldrop` leaks them.
    let mut pm = load("alternative/podmonitor.yaml");
    let dropped = pm.spec.pod_metrics_endpoints.value[0].metric_relabelings.pop().unwrap();
    assert_eq!(dropped.action.as_ref().map(|a| a.value.as_str()), Some("labeldrop"));
    let (observed, _) = observe_pm(pm).await;
    assert!(observed.iter().all(|s| s.contains_key("__tmp_waf_raw")), "{}", show(&observed));
}
