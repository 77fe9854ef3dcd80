//! The binary on the local stack, end to end: the verdicts users and CI see.
#![cfg(feature = "reference-proxy")]

use std::process::Command;

use crate::binary;
use binary::waf_e2e;

#[test]
fn every_scenario_passes_and_the_junit_report_has_one_testcase_each() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("report.xml");
    let diag = dir.path().join("diag");
    let out = waf_e2e(&["run", "--stack", "local", "--scrape-interval-ms", "250", "--junit", junit.to_str().unwrap(), "--diagnostics-dir", diag.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // The scenario files only (scenarios/ also holds their JSON Schema).
    let scenarios = waf_e2e::input::yaml_files(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"))).unwrap().len();
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), scenarios, "{xml}");
    assert!(!xml.contains("<failure") && !xml.contains("<error"), "{xml}");
    assert!(stdout.contains(&format!("{scenarios} passed, 0 failed")), "{stdout}");
    // Run-wide facts once: the audit wait every scenario shares, and the filter (in the header only).
    assert_eq!(stdout.matches("audit log read after:").count(), 1, "{stdout}");
    assert!(stdout.contains("every scenario: audit log read after:"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("filter: ").count(), 1, "{stderr}");
    assert!(!stdout.contains("expectations checked for filter") && !xml.contains("expectations checked for filter"), "{stdout}");
}

#[test]
fn a_podmonitor_without_the_rule_id_relabeling_makes_run_exit_1_naming_the_label() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("report.xml");
    let out = waf_e2e(&["run", "--stack", "local", "--scrape-interval-ms", "250", "--scenario", "sqli-*",
        "--rendered", "fixtures/broken/podmonitor-no-rule-id.yaml", "--junit", junit.to_str().unwrap(),
        "--diagnostics-dir", dir.path().join("diag").to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("label `rule_id`: missing"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<failure"), "{xml}");
    assert!(dir.path().join("diag/sqli-blocked/raw-stats.txt").exists(), "a diagnostics bundle per failed scenario");
}

#[test]
fn the_scrape_config_command_prints_a_config_promtool_accepts() {
    let out = waf_e2e(&["scrape-config", "--podmonitor", "fixtures/rendered/podmonitor.yaml", "--target", "127.0.0.1:19001", "--pod-label", "team=edge"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prometheus.yml");
    std::fs::write(&file, &out.stdout).unwrap();
    let check = Command::new("promtool").args(["check", "config"]).arg(&file).output().expect("run promtool");
    assert!(check.status.success(), "{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("127.0.0.1:19001") && text.contains("__meta_kubernetes_pod_label_team"), "{text}");
}

#[test]
fn a_bad_scrape_config_target_exits_2() {
    let out = waf_e2e(&["scrape-config", "--podmonitor", "fixtures/rendered/podmonitor.yaml", "--target", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
