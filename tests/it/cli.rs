//! The binary's contract: exit codes and located messages.

use std::path::Path;

use crate::binary;
use binary::waf_e2e;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Writes `text` to a temporary `name`, validates it, and returns the directory guard, the file path and
/// stderr, after asserting exit 2.
fn invalid(name: &str, text: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), name, text);
    let out = waf_e2e(&["validate", &file]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    (dir, file, err)
}

const VALID: &str = "name: ok
policy:
  name: p
  mode: On
  rules:
    crs: true
traffic:
  - name: a
    path: /
    expect_status: 200
expect:
  no_decisions: true
";

#[test]
fn the_shipped_scenarios_validate() {
    let out = waf_e2e(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_unknown_field_exits_2_naming_file_line_and_field() {
    let (_dir, file, err) = invalid("bad.yaml", &VALID.replace("    expect_status: 200\n", "    expect_status: 200\n    retries: 3\n"));
    assert!(err.contains(&format!("{file}:11:")) && err.contains("retries"), "{err}");
}

#[test]
fn a_negative_repeat_exits_2_naming_its_line() {
    let (_dir, file, err) = invalid("neg.yaml", &VALID.replace("    path: /\n", "    path: /\n    repeat: -1\n"));
    assert!(err.contains(&format!("{file}:10:")), "{err}");
}

#[test]
fn an_unknown_decision_value_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let text = VALID.replace("  no_decisions: true\n", "  decisions:\n    - decision: allowed\n      increase: 1\n");
    let file = write(dir.path(), "dec.yaml", &text);
    let out = waf_e2e(&["validate", &file]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{file}:13:")) && err.contains("field `expect.decisions[0].decision`") && err.contains("allowed"), "{err}");
}

#[test]
fn duplicate_scenario_names_and_empty_traffic_are_each_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", VALID);
    write(dir.path(), "b.yaml", VALID);
    write(dir.path(), "c.yaml", &VALID.replace("name: ok", "name: empty").replace(
        "traffic:\n  - name: a\n    path: /\n    expect_status: 200\n", "traffic: []\n"));
    let out = waf_e2e(&["validate", &dir.path().display().to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("duplicate scenario name `ok`"), "{err}");
    assert!(err.contains("field `traffic`: is empty"), "{err}");
}

#[test]
fn three_independent_problems_of_one_file_are_all_reported_each_located() {
    let text = VALID
        .replace("  mode: On\n", "  mode: Block\n")
        .replace("    path: /\n", "    path: /\n    retries: 3\n")
        .replace("    expect_status: 200\n", "    expect_status: two hundred\n");
    let (_dir, file, err) = invalid("three.yaml", &text);
    assert!(err.contains("(3 problem(s))"), "{err}");
    for expected in [
        format!("{file}:4:9: field `policy.mode`: \"Block\" is not one of \"On\", \"DetectionOnly\""),
        format!("{file}:10:5: field `traffic[0].retries`: unknown field"),
        format!("{file}:11:20: field `traffic[0].expect_status`: \"two hundred\" is not of type \"integer\""),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn a_missing_field_is_reported_beside_an_unknown_one() {
    let text = VALID.replace("    expect_status: 200\n", "    status: 200\n");
    let (_dir, file, err) = invalid("missing.yaml", &text);
    assert!(err.contains(&format!("{file}:8:5: field `traffic[0].expect_status`: missing")), "{err}");
    assert!(err.contains(&format!("{file}:10:5: field `traffic[0].status`: unknown field")), "{err}");
}

#[test]
fn a_yaml_syntax_error_exits_2_with_its_location() {
    let (_dir, file, err) = invalid("syntax.yaml", "name: [unclosed\npolicy: {\n");
    assert!(err.contains(&format!("{file}:")), "{err}");
}

#[test]
fn an_unknown_subcommand_exits_2() {
    assert_eq!(waf_e2e(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn a_wrong_type_exits_2_naming_file_line_and_field() {
    let (_dir, file, err) = invalid("type.yaml", &VALID.replace("    expect_status: 200\n", "    expect_status: ok\n"));
    assert!(err.contains(&format!("{file}:10:")) && err.contains("field `traffic[0].expect_status`"), "{err}");
}

#[test]
fn a_wrong_type_for_the_mode_exits_2_naming_file_line_and_field() {
    let (_dir, file, err) = invalid("mode.yaml", &VALID.replace("  mode: On\n", "  mode: [On]\n"));
    assert!(err.contains(&format!("{file}:4:")) && err.contains("field `policy.mode`"), "{err}");
}

/// A scenario whose second directive has no `id`, which ModSecurity refuses to load.
#[cfg(feature = "reference-proxy")]
const REJECTED_RULE: &str = "name: bad-rule
policy:
  name: p
  mode: On
  rules:
    directives: |
      SecRule REQUEST_HEADERS:X-Attack \"@streq yes\" \"id:100001,phase:1,deny\"
      SecRule REQUEST_HEADERS:X-Attack \"@streq yes\" \"phase:1,deny\"
traffic:
  - name: a
    path: /
    expect_status: 200
expect:
  no_decisions: true
";

#[cfg(feature = "reference-proxy")]
#[test]
fn directives_modsecurity_rejects_exit_2_at_validate_naming_the_line_and_field() {
    let (_dir, file, err) = invalid("rule.yaml", REJECTED_RULE);
    assert!(err.contains(&format!("{file}:8:")) && err.contains("field `policy.rules.directives`") && err.contains("Rules must have an ID"), "{err}");
}

#[cfg(feature = "reference-proxy")]
#[test]
fn directives_modsecurity_rejects_stop_run_before_it_starts_anything() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "rule.yaml", REJECTED_RULE);
    let out = waf_e2e(&["run", "--stack", "local", "--scenarios", &file]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{file}:8:")) && err.contains("field `policy.rules.directives`"), "{err}");
    assert!(!err.contains("scenario(s) on the"), "the run must not have begun: {err}");
}

/// `waf-e2e run --stack local --rendered PATH` on the shipped scenarios.
#[cfg(feature = "reference-proxy")]
fn run_rendered(path: &str) -> (Option<i32>, String) {
    let out = waf_e2e(&["run", "--stack", "local", "--scenario", "benign-*", "--rendered", path]);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[cfg(feature = "reference-proxy")]
#[test]
fn a_podmonitor_with_a_wrong_type_makes_run_exit_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(format!("{}/fixtures/rendered/podmonitor.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let line = shipped.lines().position(|l| l.trim() == "- port: metrics").expect("the shipped PodMonitor names port `metrics`") + 1;
    let file = write(dir.path(), "podmonitor.yaml", &shipped.replace("- port: metrics", "- port: {name: metrics}"));
    let (code, err) = run_rendered(&file);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("{file}:{line}:")) && err.contains("field `port`"), "{err}");
}

#[cfg(feature = "reference-proxy")]
#[test]
fn a_podmonitor_missing_its_selector_makes_run_exit_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "pm.yaml", "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata:\n  name: x\n  namespace: y\nspec:\n  podMetricsEndpoints:\n    - port: metrics\n");
    let (code, err) = run_rendered(&file);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("{file}:7:")) && err.contains("field `selector`"), "{err}");
}

#[cfg(feature = "reference-proxy")]
#[test]
fn a_rendered_file_with_a_yaml_error_makes_run_exit_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["podmonitor.yaml", "globalnetworkpolicy.yaml"] {
        std::fs::copy(format!("{}/fixtures/rendered/{f}", env!("CARGO_MANIFEST_DIR")), dir.path().join(f)).unwrap();
    }
    let file = write(dir.path(), "envoyproxy.yaml", "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: EnvoyProxy\nmetadata:\n  name: p\nspec:\n  extraArgs: [--log-path\n  logging: {}\n");
    let (code, err) = run_rendered(&dir.path().display().to_string());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("{file}:")), "{err}");
}

#[test]
fn schema_flags_without_a_profile_or_an_unknown_profile_exit_2() {
    let out = waf_e2e(&["validate", "--schemas", "/nonexistent"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--profile"), "{err}");
    let out = waf_e2e(&["validate", "--profile", "nope", "--schemas", "/nonexistent"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("nope") && err.contains("oss") && err.contains("tigera"), "{err}");
}

#[test]
fn validate_with_a_profile_and_no_schemas_for_its_kinds_exits_2_naming_each_object() {
    let schemas = tempfile::tempdir().unwrap();
    write(schemas.path(), "empty.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: not-a-crd}\n");
    let out = waf_e2e(&["validate", "--profile", "oss", "--schemas", &schemas.path().display().to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("PROBLEM PodMonitor tigera-prometheus/tigera-waf-gateway-proxies (fixtures/rendered/podmonitor.yaml): field `(object)`: [no schema]"), "{stdout}");
    assert!(!stdout.contains("PROBLEM Namespace"), "built-in kinds need no CRD: {stdout}");
}
