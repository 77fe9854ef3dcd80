//! The binary's contract: exit codes and located messages.

use std::path::Path;
use std::process::{Command, Output};

fn waf_e2e(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_waf-e2e"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run waf-e2e")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
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
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.yaml", &VALID.replace("    expect_status: 200\n", "    expect_status: 200\n    retries: 3\n"));
    let out = waf_e2e(&["validate", &file]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{file}:11:")) && err.contains("retries"), "{err}");
}

#[test]
fn a_negative_repeat_exits_2_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "neg.yaml", &VALID.replace("    path: /\n", "    path: /\n    repeat: -1\n"));
    let out = waf_e2e(&["validate", &file]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
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
    assert!(err.contains(&format!("{file}:13:")) && err.contains("field `decision`") && err.contains("allowed"), "{err}");
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
fn a_yaml_syntax_error_exits_2_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "syntax.yaml", "name: [unclosed\npolicy: {\n");
    let out = waf_e2e(&["validate", &file]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{file}:")), "{err}");
}

#[test]
fn an_unknown_subcommand_exits_2() {
    assert_eq!(waf_e2e(&["frobnicate"]).status.code(), Some(2));
}
