//! The EG-style translations of the rendered EnvoyProxy and the profile's EnvoyExtensionPolicy.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use waf_e2e::envoy::{wasm_filters_from_extension_policy, ProxyLaunch};
use waf_e2e::error::InputLocation;
use waf_e2e::rendered::{RenderedDocument, RenderedSet};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn envoyproxy_in(dir: &Path) -> RenderedDocument {
    let set = RenderedSet::load(dir).unwrap_or_else(|e| panic!("{e:#}"));
    set.documents.into_iter().find(|d| d.kind == "EnvoyProxy").expect("an EnvoyProxy in the rendered set")
}

/// A copy of the rendered set whose EnvoyProxy is `edit`ed text, and the translation's error text.
fn translate_edited(edit: impl Fn(&str) -> String) -> (tempfile::TempDir, Result<ProxyLaunch, String>) {
    let dir = tempfile::tempdir().unwrap();
    for f in ["envoyproxy.yaml", "podmonitor.yaml"] {
        let text = std::fs::read_to_string(root().join("fixtures/rendered").join(f)).unwrap();
        let text = if f == "envoyproxy.yaml" { edit(&text) } else { text };
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    let doc = envoyproxy_in(dir.path());
    let result = ProxyLaunch::from_envoyproxy(&doc, &dir.path().join("run")).map_err(|e| e.to_string());
    (dir, result)
}

#[test]
fn the_rendered_envoyproxy_becomes_envoy_gateways_arguments_with_the_log_file_in_the_run() {
    let run = Path::new("/run/x");
    let doc = envoyproxy_in(&root().join("fixtures/rendered"));
    let launch = ProxyLaunch::from_envoyproxy(&doc, run).unwrap_or_else(|e| panic!("{e}"));
    let log = "/run/x/access-logs/envoy.log";
    assert_eq!(
        launch.args,
        ["--log-level", "warn", "--cpuset-threads", "--drain-strategy", "immediate", "--component-log-level", "wasm:info",
         "--drain-time-s", "60", "--log-path", log]
    );
    assert_eq!(launch.log_path.as_deref(), Some(Path::new(log)));
    assert_eq!(launch.collector_path().as_deref(), Some(Path::new(log)), "the collector reads the file Envoy writes");
    assert_eq!(launch.volume_dirs, [("access-logs".to_string(), run.join("access-logs"))]);
    assert_eq!(launch.stats_matcher, None);
    assert!(launch.prometheus);
    assert_eq!(launch.source, "EnvoyProxy envoy-gateway-system/tigera-waf-proxy");
}

#[test]
fn component_levels_are_sorted_and_default_to_misc_error_as_envoy_gateway_does() {
    let (_d, launch) = translate_edited(|t| t.replace("      wasm: info\n", "      wasm: info\n      http: debug\n      admin: error\n"));
    let args = launch.unwrap().args;
    let at = args.iter().position(|a| a == "--component-log-level").unwrap();
    assert_eq!(args[at + 1], "admin:error,http:debug,wasm:info");
    let (_d, launch) = translate_edited(|t| t.replace("      default: warn\n      wasm: info\n", "      default: error\n"));
    let args = launch.unwrap().args;
    assert_eq!(args[..2], ["--log-level", "error"]);
    assert_eq!(args[args.iter().position(|a| a == "--component-log-level").unwrap() + 1], "misc:error");
}

#[test]
fn an_unknown_field_or_value_is_an_error_naming_file_line_and_field_path() {
    let (dir, result) = translate_edited(|t| {
        t.replace("      wasm: info\n", "      wasm: loud\n").replace("  extraArgs:\n", "  shutdown:\n    drainTimeout: 5s\n  extraArgs:\n")
    });
    let err = result.unwrap_err();
    let file = dir.path().join("envoyproxy.yaml").display().to_string();
    assert!(err.contains(&format!("{file}:24: field `spec.logging.level.wasm`: `\"loud\"`")), "{err}");
    assert!(err.contains(&format!("{file}:25: field `spec.shutdown`: not supported")), "{err}");
    let (_d, result) = translate_edited(|t| t.replace("              emptyDir: {}\n", "              hostPath: {path: /var/log}\n"));
    let err = result.unwrap_err();
    assert!(err.contains("field `spec.provider.kubernetes.envoyDeployment.pod.volumes[0].hostPath`: not supported"), "{err}");
}

#[test]
fn a_log_path_outside_every_mounted_volume_is_refused() {
    let (_d, result) = translate_edited(|t| t.replace("    - /access_logs/envoy.log\n", "    - /var/log/envoy.log\n"));
    let err = result.unwrap_err();
    assert!(err.contains(":27: field `spec.extraArgs[1]`: --log-path `/var/log/envoy.log` is not under a volume"), "{err}");
}

#[test]
fn metrics_matches_become_an_inclusion_list_grouped_as_envoy_gateways_template_lists_them() {
    let (_d, launch) = translate_edited(|t| {
        t.replace(
            "  extraArgs:\n",
            "  telemetry:\n    metrics:\n      prometheus:\n        disable: false\n      matches:\n        - type: RegularExpression\n          value: \"waf_filter.*\"\n        - type: Prefix\n          value: wasmcustom.\n        - value: server.uptime\n  extraArgs:\n",
        )
    });
    let launch = launch.unwrap();
    assert_eq!(
        launch.stats_matcher,
        Some(json!({"inclusion_list": {"patterns": [
            {"exact": "server.uptime"},
            {"prefix": "wasmcustom."},
            {"safe_regex": {"google_re2": {}, "regex": "waf_filter.*"}},
        ]}}))
    );
    let (_d, result) = translate_edited(|t| t.replace("  extraArgs:\n", "  telemetry:\n    metrics:\n      matches: []\n  extraArgs:\n"));
    assert!(result.unwrap_err().contains("field `spec.telemetry.metrics.matches`: is empty"));
}

fn oss_policy(values: &[(&str, Value)]) -> Value {
    let template = std::fs::read_to_string(root().join("kind/profiles/oss-waf-policy.yaml")).unwrap();
    let values: BTreeMap<&str, Value> = values.iter().cloned().collect();
    let text = waf_e2e::profile::waf_policy::fill_template(&template, &values).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn at() -> InputLocation {
    InputLocation { file: root().join("kind/profiles/oss-waf-policy.yaml"), line: 8, column: 0 }
}

#[test]
fn the_oss_policy_template_becomes_the_filter_envoy_gateway_would_produce() {
    let policy = oss_policy(&[
        ("name", json!("block-sqli")),
        ("namespace", json!("shop")),
        ("route", json!("web")),
        ("directives", json!(["SecRuleEngine On", "SecRule ARGS \"@contains <x>\" \"id:1,deny\""])),
        ("wasm_image", json!("ghcr.io/corazawaf/coraza-proxy-wasm:0.6.0")),
    ]);
    let filters = wasm_filters_from_extension_policy(&policy, &at(), Path::new("/tmp/coraza.wasm")).unwrap();
    assert_eq!(filters.len(), 1);
    // The shape of internal/xds/translator/testdata/out/xds-ir/wasm.listeners.yaml (Envoy Gateway v1.7.2),
    // with the local module file in place of the remote code from Envoy Gateway's wasm cache.
    let config = r#"{"default_directives":"default","directives_map":{"default":["SecRuleEngine On","SecRule ARGS \"@contains \u003cx\u003e\" \"id:1,deny\""]},"metric_labels":{"namespace":"shop","policy":"block-sqli"}}"#;
    assert_eq!(
        filters[0].http_filter(),
        json!({
            "name": "envoy.filters.http.wasm/envoyextensionpolicy/shop/block-sqli/wasm/0",
            "disabled": true,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "block-sqli",
                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config},
                    "vm_config": {
                        "vm_id": "envoyextensionpolicy/shop/block-sqli/wasm/0",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": "/tmp/coraza.wasm"}},
                    },
                },
            },
        })
    );
    assert_eq!(filters[0].log_prefix(), "wasm log block-sqli envoyextensionpolicy/shop/block-sqli/wasm/0: ");
}

#[test]
fn envoy_gateways_own_testdata_policy_translates_to_its_expected_filter_fields() {
    // internal/gatewayapi/testdata/envoyextensionpolicy-with-wasm.in.yaml's policy-for-http-route (v1.7.2),
    // expected per internal/xds/translator/testdata/out/xds-ir/wasm.listeners.yaml.
    let policy = json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyExtensionPolicy",
        "metadata": {"namespace": "default", "name": "policy-for-http-route"},
        "spec": {"targetRef": {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "httproute-1"},
            "wasm": [
                {"name": "wasm-filter-4", "code": {"type": "HTTP", "http": {"url": "https://www.test.com/wasm-filter-4.wasm"}},
                 "config": {"parameter2": {"key2": {"key3": "value3"}}, "parameter1": {"key1": "value1"}}, "failOpen": true},
                {"rootID": "my-root-id", "code": {"type": "Image", "image": {"url": "www.example.com/wasm-filter-2:v1.0.0"}}},
            ]},
    });
    let f = wasm_filters_from_extension_policy(&policy, &at(), Path::new("/m.wasm")).unwrap();
    let c = &f[0].http_filter()["typed_config"]["config"];
    assert_eq!(c["configuration"]["value"], r#"{"parameter1":{"key1":"value1"},"parameter2":{"key2":{"key3":"value3"}}}"#);
    assert_eq!(c["fail_open"], true);
    assert_eq!(c["name"], "wasm-filter-4");
    let c = &f[1].http_filter()["typed_config"]["config"];
    assert_eq!(c["name"], "envoyextensionpolicy/default/policy-for-http-route/wasm/1", "no name: the IR name");
    assert_eq!(c["root_id"], "my-root-id");
    assert_eq!(c["configuration"]["value"], "", "no config: an empty string");
    assert!(c.get("fail_open").is_none(), "failOpen defaults to false, which the proto omits");
}

#[test]
fn unsupported_policy_fields_are_named_with_their_path() {
    let mut policy = oss_policy(&[
        ("name", json!("p")), ("namespace", json!("shop")), ("route", json!("web")), ("directives", json!([])), ("wasm_image", json!("x")),
    ]);
    policy["spec"]["extProc"] = json!([]);
    policy["spec"]["wasm"][0]["env"] = json!({"hostKeys": ["A"]});
    policy["spec"]["wasm"][0]["code"]["type"] = json!("ConfigMap");
    let err = wasm_filters_from_extension_policy(&policy, &at(), Path::new("/m.wasm")).unwrap_err().to_string();
    let file = at().to_string();
    for field in ["spec.extProc", "spec.wasm[0].env", "spec.wasm[0].code.type"] {
        assert!(err.contains(&format!("{file}: field `{field}`")), "{field}: {err}");
    }
}

#[test]
fn the_equals_form_of_a_log_path_is_mapped_into_the_run_too() {
    let (dir, launch) = translate_edited(|t| t.replace("    - --log-path\n    - /access_logs/envoy.log\n", "    - --log-path=/access_logs/audit/envoy.log\n"));
    let launch = launch.unwrap();
    let log = dir.path().join("run/access-logs/audit/envoy.log");
    assert_eq!(launch.args.last().unwrap(), &format!("--log-path={}", log.display()));
    assert_eq!(launch.log_path, Some(log));
    assert_eq!(launch.collector_path(), Some(dir.path().join("run/access-logs/envoy.log")), "the collector still reads envoy.log");
}

#[test]
fn an_extra_argument_that_envoy_gateway_or_the_harness_sets_is_refused() {
    let (_d, result) = translate_edited(|t| t.replace("  extraArgs:\n", "  extraArgs:\n    - --base-id\n    - \"7\"\n"));
    let err = result.unwrap_err();
    assert!(err.contains("field `spec.extraArgs[0]`: `--base-id` is set by Envoy Gateway / the harness"), "{err}");
}

#[test]
fn without_a_volume_at_access_logs_there_is_no_collector_file() {
    let (_d, launch) = translate_edited(|t| {
        t.replace("    - /access_logs/envoy.log\n", "    - /data/envoy.log\n").replace("mountPath: /access_logs", "mountPath: /data")
    });
    let launch = launch.unwrap();
    assert!(launch.log_path.is_some());
    assert_eq!(launch.collector_path(), None, "Envoy writes /data/envoy.log; the collector tails /access_logs/envoy.log");
    assert_eq!(ProxyLaunch::envoy_gateway_defaults().args,
        ["--log-level", "warn", "--cpuset-threads", "--drain-strategy", "immediate", "--component-log-level", "misc:error", "--drain-time-s", "60"]);
}
