//! The plan a kind run executes, printed without doing anything: snapshot of the default profile.

use std::path::PathBuf;
use waf_e2e::stack::kind::plan::{build_plan, PlanStep};
use waf_e2e::stack::kind::ClusterOpts;

fn scenarios() -> Vec<waf_e2e::scenario::Scenario> {
    waf_e2e::scenario::load_paths(&[PathBuf::from("tests/fixtures/kind/scenarios")])
        .unwrap()
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

fn opts(cache: &std::path::Path) -> ClusterOpts {
    ClusterOpts {
        rendered: PathBuf::from("tests/fixtures/kind/rendered"),
        cache_dir: Some(cache.to_path_buf()),
        run_id: Some("abc123".into()),
        ..ClusterOpts::default()
    }
}

#[test]
fn the_plan_of_the_default_profile_matches_the_snapshot() {
    let cache = tempfile::tempdir().unwrap();
    let plan = build_plan(&opts(cache.path()), &scenarios()).unwrap();
    insta::assert_snapshot!("oss_plan", plan.to_string());
}

#[test]
fn the_oss_profile_skips_a_would_block_scenario_with_the_reason() {
    let cache = tempfile::tempdir().unwrap();
    let plan = build_plan(&opts(cache.path()), &scenarios()).unwrap();
    let skipped: Vec<&PlanStep> = plan.steps.iter().filter(|s| matches!(s, PlanStep::SkipScenario { .. })).collect();
    assert_eq!(skipped.len(), 1);
    let line = skipped[0].to_string();
    assert!(line.contains("detect-xss") && line.contains("would_block_counter"), "{line}");
}

#[test]
fn the_setup_steps_end_before_the_first_scenario_and_the_plan_ends_with_teardown() {
    let cache = tempfile::tempdir().unwrap();
    let plan = build_plan(&opts(cache.path()), &scenarios()).unwrap();
    let setup: Vec<&PlanStep> = plan.setup_steps().collect();
    assert!(matches!(setup[0], PlanStep::CreateCluster { name, .. } if name == "waf-e2e-abc123"));
    assert!(matches!(setup.last().unwrap(), PlanStep::Wait { .. }));
    assert!(matches!(plan.steps.last().unwrap(), PlanStep::Teardown { keep: false, .. }));
    assert_eq!(plan.scrape_pool(), "podMonitor/monitoring/envoy-waf/0");
}

#[test]
fn an_existing_cluster_without_installs_only_waits_and_forwards() {
    let cache = tempfile::tempdir().unwrap();
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    let o = ClusterOpts { kubeconfig: Some(kubeconfig.path().into()), no_install: true, ..opts(cache.path()) };
    let plan = build_plan(&o, &scenarios()).unwrap();
    assert!(!plan.steps.iter().any(|s| matches!(s, PlanStep::Fetch { .. } | PlanStep::ApplyDownload { .. } | PlanStep::AdjustEnvoyProxy { .. })));
    assert!(plan.to_string().contains("teardown: delete the scenario namespaces"));
}

#[test]
fn a_bad_kubeconfig_path_is_a_usage_error() {
    let cache = tempfile::tempdir().unwrap();
    let o = ClusterOpts { kubeconfig: Some("/nonexistent/kubeconfig".into()), ..opts(cache.path()) };
    let err = build_plan(&o, &scenarios()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
    assert_eq!(waf_e2e::error::HarnessError::classify(err).exit_code(), 2);
}

#[test]
fn the_tigera_plan_never_contains_the_credentials() {
    let cache = tempfile::tempdir().unwrap();
    let secret_value = "LICENSE-SECRET-5b1e7c";
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), secret_value).unwrap();
    // The plan names the variables only; it never reads them (set here to prove it).
    std::env::set_var("TIGERA_LICENSE_FILE", file.path());
    std::env::set_var("TIGERA_PULL_SECRET_FILE", file.path());
    let plan = build_plan(&ClusterOpts { profile: "tigera".into(), ..opts(cache.path()) }, &scenarios()).unwrap();
    let shown = format!("{plan}\n{plan:?}");
    assert!(!shown.contains(secret_value));
    assert!(shown.contains("$TIGERA_LICENSE_FILE (contents never shown)"), "{shown}");
}

#[test]
fn the_audit_reader_is_attached_once_the_proxy_pods_are_ready_and_before_any_traffic() {
    let cache = tempfile::tempdir().unwrap();
    let plan = build_plan(&opts(cache.path()), &scenarios()).unwrap();
    let at = plan.steps.iter().position(|s| matches!(s, PlanStep::AttachAuditReader { .. })).expect("an audit reader step");
    assert!(matches!(&plan.steps[at - 1], PlanStep::Wait { wait, .. } if wait.to_string().starts_with("pods envoy-gateway-system/")));
    assert!(at < plan.steps.iter().position(|s| matches!(s, PlanStep::Scenario { .. })).unwrap());
    let reader = plan.audit_reader().expect("the reader the stack uses");
    assert_eq!(reader.image, "busybox:1.36");
    assert_eq!(reader.running_timeout, waf_e2e::timeouts::Timeouts::default().audit_reader_running);
}

#[test]
fn an_envoyproxy_logging_to_stderr_needs_no_audit_reader() {
    let cache = tempfile::tempdir().unwrap();
    let rendered = tempfile::tempdir().unwrap();
    std::fs::copy("tests/fixtures/kind/rendered/podmonitor.yaml", rendered.path().join("podmonitor.yaml")).unwrap();
    std::fs::write(
        rendered.path().join("envoyproxy.yaml"),
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: EnvoyProxy\nmetadata:\n  name: waf-logging\n  namespace: waf-e2e-gateway\n\
spec:\n  logging:\n    level:\n      default: warn\n      wasm: info\n",
    )
    .unwrap();
    let plan = build_plan(&ClusterOpts { rendered: rendered.path().into(), ..opts(cache.path()) }, &scenarios()).unwrap();
    assert!(!plan.steps.iter().any(|s| matches!(s, PlanStep::AttachAuditReader { .. })), "{plan}");
    assert!(plan.audit_reader().is_none());
}

fn plan_error(rendered: &std::path::Path) -> (String, i32) {
    let cache = tempfile::tempdir().unwrap();
    let err = build_plan(&ClusterOpts { rendered: rendered.into(), ..opts(cache.path()) }, &scenarios()).unwrap_err();
    let text = format!("{err:#}");
    (text, waf_e2e::error::HarnessError::classify(err).exit_code())
}

#[test]
fn an_invalid_rendered_document_is_invalid_input_naming_its_file_and_line() {
    let rendered = tempfile::tempdir().unwrap();
    std::fs::copy("tests/fixtures/kind/rendered/podmonitor.yaml", rendered.path().join("podmonitor.yaml")).unwrap();
    // the second document (line 6) has no kind
    std::fs::write(rendered.path().join("others.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nmetadata:\n  name: b\n").unwrap();
    let (text, code) = plan_error(rendered.path());
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("others.yaml:6") && text.contains("kind"), "{text}");
}

#[test]
fn a_rendered_directory_without_a_podmonitor_or_missing_is_invalid_input() {
    let rendered = tempfile::tempdir().unwrap();
    std::fs::copy("tests/fixtures/kind/rendered/envoyproxy.yaml", rendered.path().join("envoyproxy.yaml")).unwrap();
    let (text, code) = plan_error(rendered.path());
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("no PodMonitor"), "{text}");
    let (text, code) = plan_error(std::path::Path::new("/nonexistent/rendered"));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("/nonexistent/rendered"), "{text}");
}

#[test]
fn each_rendered_file_is_applied_as_one_step_listing_its_objects_in_order() {
    let cache = tempfile::tempdir().unwrap();
    let plan = build_plan(&opts(cache.path()), &scenarios()).unwrap();
    let applied: Vec<(String, Vec<String>)> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            PlanStep::ApplyRendered { path, objects } => Some((path.display().to_string(), objects.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        applied,
        [
            (
                "tests/fixtures/kind/rendered/envoyproxy.yaml".to_string(),
                vec!["EnvoyProxy waf-e2e-gateway/waf-logging".to_string(), "GlobalNetworkPolicy allow-prometheus-to-envoy-stats".to_string()]
            ),
            ("tests/fixtures/kind/rendered/podmonitor.yaml".to_string(), vec!["PodMonitor monitoring/envoy-waf".to_string()]),
        ]
    );
}

#[test]
fn the_oss_plan_of_the_shipped_rendered_set_creates_the_tier_the_namespaces_and_the_later_deny() {
    let cache = tempfile::tempdir().unwrap();
    let shipped = waf_e2e::scenario::load_paths(&[PathBuf::from("scenarios")]).unwrap().into_iter().map(|(_, s)| s).collect::<Vec<_>>();
    let o = ClusterOpts { rendered: PathBuf::from("fixtures/rendered"), ..opts(cache.path()) };
    let plan = build_plan(&o, &shipped).unwrap();
    let text = plan.to_string();
    let position = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("no `{needle}` in the plan:\n{text}"));
    let tier = position("Tier allow-tigera");
    let deny = position("GlobalNetworkPolicy waf-e2e-deny.proxy-metrics");
    let namespaces = position("server-side apply namespaces envoy-gateway-system, tigera-prometheus");
    let rendered_policy = position("GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics");
    assert!(tier < rendered_policy && deny < rendered_policy && namespaces < rendered_policy, "tier, deny and namespaces come first:\n{text}");
    position("Prometheus tigera-prometheus/waf-e2e");
    position("pod prometheus-waf-e2e-0 in tigera-prometheus");
    let scenario_yaml: String = plan.steps.iter().filter_map(|s| match s { PlanStep::Scenario { objects, .. } => Some(objects.yaml.clone()), _ => None }).collect();
    assert!(scenario_yaml.contains("SecAuditLogParts ABIJDEFHKZ"), "{scenario_yaml}");
    assert!(!text.contains("wasmserial") && !scenario_yaml.contains("wasmserial"));
}

/// `waf-e2e plan --stack kind --scenario sqli-blocked` with `args` on a machine where no release
/// manifest is cached, without `--schemas`.
fn plan_with_nothing_cached(args: &[&str]) -> (i32, String) {
    let cache = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waf-e2e"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("XDG_CACHE_HOME", cache.path())
        .args(["plan", "--stack", "kind", "--scenario", "sqli-blocked"])
        .args(args)
        .output()
        .expect("run waf-e2e");
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn plan_with_nothing_cached_says_once_that_the_schema_check_did_not_run_and_how_to_run_it_and_exits_0() {
    let (code, out) = plan_with_nothing_cached(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("did NOT RUN").count(), 1, "{out}");
    assert!(out.contains("no CRDs are cached") && out.contains("--schemas DIR") && out.contains("`waf-e2e run`"), "{out}");
    assert!(!out.contains("PROBLEM") && !out.contains("[no schema]"), "{out}");
}

#[test]
fn plan_with_nothing_cached_still_exits_2_on_a_problem_in_the_rendered_objects() {
    let rendered = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir("fixtures/rendered").unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap().replacen("name: tigera-waf-gateway-proxies", "name: Tigera_WAF", 1);
        std::fs::write(rendered.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let (code, out) = plan_with_nothing_cached(&["--rendered", &rendered.path().display().to_string()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("PodMonitor tigera-prometheus/Tigera_WAF") && out.contains("metadata.name") && out.contains("DNS-1123"), "{out}");
}
