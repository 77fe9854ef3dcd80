//! The rendered resources load, and the PodMonitor translates the way the Prometheus Operator does.

use std::path::{Path, PathBuf};
use std::time::Duration;
use waf_e2e::error::InvalidInput;
use waf_e2e::prometheus::promtool_check_config;
use waf_e2e::rendered::{render_scrape_config, scrape_config, PodTarget, RenderedSet};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

fn target() -> PodTarget {
    PodTarget::envoy_gateway_proxy("10.244.0.17:19001", "eg", "default")
}

const PODMONITORS: &[&str] = &[
    "rendered/podmonitor.yaml",
    "alternative/podmonitor.yaml",
    "broken/podmonitor-no-rule-id.yaml",
    "broken/podmonitor-decisions-swapped.yaml",
];

#[test]
fn the_rendered_directory_holds_one_podmonitor_and_keeps_every_document_for_apply() {
    let set = RenderedSet::load(fixture("rendered")).unwrap();
    assert_eq!(set.podmonitor.metadata.name, "tigera-waf-gateway-proxies");
    let kinds: Vec<(&str, &str)> = set.documents.iter().map(|d| (d.kind.as_str(), d.name.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            ("EnvoyProxy", "tigera-waf-proxy"),
            ("GlobalNetworkPolicy", "allow-tigera.waf-gateway-proxy-metrics"),
            ("GlobalNetworkPolicy", "allow-tigera.waf-prometheus-scrape-proxies"),
            ("PodMonitor", "tigera-waf-gateway-proxies"),
        ]
    );
    assert_eq!(set.others().count(), 3);
    let envoy = &set.documents[0].value;
    assert_eq!(envoy["spec"]["logging"]["level"]["wasm"], "info");
    assert_eq!(envoy["spec"]["extraArgs"], serde_json::json!(["--log-path", "/access_logs/envoy.log"]));
    let gnp = &set.documents[1];
    assert!(gnp.line > 1, "document start line is recorded: {}", gnp.line);
    let rules = gnp.value["spec"]["ingress"].as_array().unwrap();
    assert_eq!(rules.last().unwrap()["action"], "Pass", "the policy must end in Pass");
    assert_eq!(rules[0]["destination"]["ports"], serde_json::json!([19001]));
}

#[test]
fn the_translation_of_the_rendered_podmonitor_matches_its_snapshot() {
    let pm = RenderedSet::load(fixture("rendered")).unwrap().podmonitor;
    let yaml = render_scrape_config(&pm, &target(), Duration::from_secs(15)).unwrap();
    insta::assert_snapshot!("rendered_podmonitor_scrape_config", yaml);
}

#[test]
fn the_operator_relabelings_come_before_the_users_in_the_operators_order() {
    let pm = RenderedSet::load(fixture("rendered")).unwrap().podmonitor;
    let cfg = scrape_config(&pm, &target(), Duration::from_secs(1));
    assert_eq!(cfg.scrape_configs.len(), 1);
    let job = &cfg.scrape_configs[0];
    assert_eq!(job.job_name, "podMonitor/tigera-prometheus/tigera-waf-gateway-proxies/0");
    assert_eq!(job.metrics_path.as_deref(), Some("/stats/prometheus"));
    assert!(!job.honor_labels);
    let r = &job.relabel_configs;
    let summary: Vec<String> = r
        .iter()
        .map(|c| {
            format!(
                "{} {} -> {} /{}/ {}",
                c.action.as_deref().unwrap_or("replace"),
                c.source_labels.join(","),
                c.target_label.as_deref().unwrap_or("-"),
                c.regex.as_deref().unwrap_or(""),
                c.replacement.as_deref().unwrap_or("")
            )
        })
        .collect();
    let expected = [
        "replace job -> __tmp_prometheus_job_name // ",
        "drop __meta_kubernetes_pod_phase -> - /(Failed|Succeeded)/ ",
        "keep __meta_kubernetes_pod_label_app_kubernetes_io_component,__meta_kubernetes_pod_labelpresent_app_kubernetes_io_component -> - /(proxy);true/ ",
        "keep __meta_kubernetes_pod_label_app_kubernetes_io_managed_by,__meta_kubernetes_pod_labelpresent_app_kubernetes_io_managed_by -> - /(envoy-gateway);true/ ",
        "keep __meta_kubernetes_pod_label_app_kubernetes_io_name,__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name -> - /(envoy);true/ ",
        "keep __meta_kubernetes_pod_container_port_name -> - /metrics/ ",
        "replace __meta_kubernetes_namespace -> namespace // ",
        "replace __meta_kubernetes_pod_container_name -> container // ",
        "replace __meta_kubernetes_pod_name -> pod // ",
        "replace  -> job // tigera-prometheus/tigera-waf-gateway-proxies",
        "replace  -> endpoint // metrics",
        "replace __meta_kubernetes_pod_label_gateway_envoyproxy_io_owning_gateway_name -> gateway // ",
        "replace __meta_kubernetes_pod_label_gateway_envoyproxy_io_owning_gateway_namespace -> gateway_namespace // ",
        "hashmod __address__ -> __tmp_hash // ",
        "keep __tmp_hash -> - /0/ ",
    ];
    assert_eq!(summary, expected);
    // metricRelabelings are passed verbatim, empty replacements included.
    assert_eq!(job.metric_relabel_configs.len(), pm.spec.pod_metrics_endpoints.value[0].metric_relabelings.len());
    assert_eq!(job.metric_relabel_configs[1].replacement.as_deref(), Some(""));
}

#[test]
fn the_static_target_carries_the_discovery_labels_of_an_envoy_gateway_proxy_pod() {
    let labels = target().meta_labels();
    for (k, v) in [
        ("__meta_kubernetes_namespace", "envoy-gateway-system"),
        ("__meta_kubernetes_pod_container_name", "envoy"),
        ("__meta_kubernetes_pod_container_port_name", "metrics"),
        ("__meta_kubernetes_pod_container_port_number", "19001"),
        ("__meta_kubernetes_pod_phase", "Running"),
        ("__meta_kubernetes_pod_label_gateway_envoyproxy_io_owning_gateway_name", "eg"),
        ("__meta_kubernetes_pod_labelpresent_gateway_envoyproxy_io_owning_gateway_name", "true"),
        ("__meta_kubernetes_pod_label_gateway_envoyproxy_io_owning_gateway_namespace", "default"),
        ("__meta_kubernetes_pod_label_app_kubernetes_io_managed_by", "envoy-gateway"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
    }
}

#[test]
fn match_expressions_become_keep_and_drop_relabelings() {
    let pm = RenderedSet::load(fixture("alternative/podmonitor.yaml")).unwrap().podmonitor;
    let job = &scrape_config(&pm, &target(), Duration::from_secs(1)).scrape_configs[0];
    assert_eq!(job.job_name, "podMonitor/monitoring/waf-alt/0");
    let keep = &job.relabel_configs[2];
    assert_eq!(keep.action.as_deref(), Some("keep"));
    assert_eq!(keep.regex.as_deref(), Some("(envoy-gateway);true"));
    assert_eq!(keep.source_labels[0], "__meta_kubernetes_pod_label_app_kubernetes_io_managed_by");
}

#[tokio::test]
async fn promtool_accepts_the_translation_of_every_fixture_podmonitor() {
    for rel in PODMONITORS {
        let pm = RenderedSet::load(fixture(rel)).unwrap().podmonitor;
        let yaml = render_scrape_config(&pm, &target(), Duration::from_secs(1)).unwrap();
        promtool_check_config(&yaml).await.unwrap_or_else(|e| panic!("{rel}: {e:#}\n{yaml}"));
    }
}

#[tokio::test]
async fn promtool_rejects_a_config_prometheus_would_reject() {
    let err = promtool_check_config("scrape_configs:\n  - job_name: x\n    scrape_interval: forever\n").await.unwrap_err();
    assert!(format!("{err:#}").contains("FAILED") || format!("{err:#}").contains("forever"), "{err:#}");
}

fn invalid(text: &str) -> InvalidInput {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("podmonitor.yaml");
    std::fs::write(&file, text).unwrap();
    RenderedSet::load(&file).unwrap_err().downcast::<InvalidInput>().expect("an InvalidInput")
}

const HEAD: &str = "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata:\n  name: pm\n  namespace: ns\n";

#[test]
fn a_yaml_syntax_error_names_the_file_and_line() {
    let err = invalid(&format!("{HEAD}spec:\n  selector: {{matchLabels: [\n"));
    let p = &err.0[0];
    assert!(p.at.file.ends_with("podmonitor.yaml"), "{err}");
    assert!(p.at.line >= 6, "{err}");
}

#[test]
fn a_value_of_the_wrong_type_names_the_file_line_and_field() {
    let err = invalid(&format!(
        "{HEAD}spec:\n  selector: {{}}\n  podMetricsEndpoints:\n    - port: metrics\n      relabelings: \"not a list\"\n"
    ));
    let p = &err.0[0];
    assert_eq!(p.at.line, 10, "{err}");
    assert!(err.to_string().contains("podmonitor.yaml:10"), "{err}");
}

#[test]
fn a_podmonitor_without_spec_is_reported_with_the_missing_field() {
    let err = invalid(HEAD);
    assert_eq!(err.0[0].field, "spec", "{err}");
    assert!(err.0[0].at.line >= 1, "{err}");
}

#[test]
fn a_misspelt_relabel_field_and_a_bad_regex_are_reported_where_they_are_written() {
    let err = invalid(&format!(
        "{HEAD}spec:\n  selector: {{}}\n  podMetricsEndpoints:\n    - port: metrics\n      metricRelabelings:\n        - sourceLabels: [__name__]\n          targetlabel: x\n"
    ));
    assert_eq!(err.0[0].field, "targetlabel", "{err}");
    assert_eq!(err.0[0].at.line, 12, "{err}");
    let err = invalid(&format!(
        "{HEAD}spec:\n  selector: {{}}\n  podMetricsEndpoints:\n    - port: metrics\n      metricRelabelings:\n        - sourceLabels: [__name__]\n          regex: \"(unclosed\"\n"
    ));
    assert_eq!(err.0[0].field, "spec.podMetricsEndpoints[0].metricRelabelings[0].regex", "{err}");
    assert_eq!(err.0[0].at.line, 12, "{err}");
}

#[test]
fn line_numbers_count_from_the_start_of_the_file_in_a_multi_document_file() {
    let err = invalid(&format!("kind: ConfigMap\napiVersion: v1\nmetadata: {{name: c}}\n---\n{HEAD}spec:\n  selector: 7\n"));
    assert_eq!(err.0[0].at.line, 11, "{err}");
}

#[test]
fn a_directory_without_a_podmonitor_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n").unwrap();
    let err = RenderedSet::load(dir.path()).unwrap_err().downcast::<InvalidInput>().unwrap();
    assert!(err.to_string().contains("no PodMonitor"), "{err}");
}

#[test]
fn a_podmonitor_field_the_translation_does_not_reproduce_is_refused_with_its_location() {
    let text = std::fs::read_to_string(fixture("rendered/podmonitor.yaml")).unwrap();
    for (from, to, field) in [
        ("    - port: metrics\n", "    - port: metrics\n      honorTimestamps: false\n", "honorTimestamps"),
        ("    - port: metrics\n", "    - port: metrics\n      params: {module: [waf]}\n", "params"),
        ("  podMetricsEndpoints:\n", "  sampleLimit: 100\n  podMetricsEndpoints:\n", "sampleLimit"),
    ] {
        assert!(text.contains(from), "the fixture changed: {from:?}");
        let err = waf_e2e::rendered::parse_podmonitor(Path::new("pm.yaml"), &text.replacen(from, to, 1)).unwrap_err().to_string();
        assert!(err.contains(field) && err.contains("pm.yaml:"), "{field}: {err}");
    }
}
