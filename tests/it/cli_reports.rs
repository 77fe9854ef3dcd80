//! `--fail-fast`, `--report json` and JUnit's run properties, on real local-stack runs of three small
//! scenarios: the first fails, the other two would pass.
#![cfg(feature = "reference-proxy")]

use std::path::Path;
use std::process::{Command, Output};

/// A scenario of inline SecLang: a request with `x-attack: yes` is denied in phase 1.
fn scenario(name: &str, attack: bool, expect_status: u16) -> String {
    let header = if attack { "    headers:\n      x-attack: \"yes\"\n" } else { "" };
    format!(
        "name: {name}
tags: [reports]
policy:
  name: p-{name}
  mode: On
  rules:
    directives: |
      SecRule REQUEST_HEADERS:X-Attack \"@streq yes\" \"id:100001,phase:1,deny,status:403,log\"
traffic:
  - name: r
    path: /
{header}    expect_status: {expect_status}
expect:
  no_decisions: true
"
    )
}

/// Writes the three scenarios: `a-fails` expects an attack to pass (it is blocked), `b-` and `c-` are benign.
fn scenarios(dir: &Path) {
    std::fs::write(dir.join("a-fails.yaml"), scenario("a-fails", true, 200)).unwrap();
    std::fs::write(dir.join("b-passes.yaml"), scenario("b-passes", false, 200)).unwrap();
    std::fs::write(dir.join("c-passes.yaml"), scenario("c-passes", false, 200)).unwrap();
}

/// `waf-e2e run --stack local` one scenario at a time on `dir`, writing both reports; returns the output and the JSON report.
fn run(dir: &Path, extra: &[&str]) -> (Output, serde_json::Value, String) {
    let json = dir.join("report.json");
    let junit = dir.join("report.xml");
    let diag = dir.join("diag");
    let mut args = vec!["run", "--stack", "local", "--jobs", "1", "--scrape-interval-ms", "250", "--scenarios", dir.to_str().unwrap(),
        "--report", "json", json.to_str().unwrap(), "--junit", junit.to_str().unwrap(), "--diagnostics-dir", diag.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = Command::new(env!("CARGO_BIN_EXE_waf-e2e")).args(&args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("run waf-e2e");
    let report = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("no JSON report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let xml = std::fs::read_to_string(&junit).expect("JUnit report");
    (out, serde_json::from_str(&report).expect("the JSON report parses"), xml)
}

fn verdicts(report: &serde_json::Value) -> Vec<String> {
    report["scenarios"].as_array().unwrap().iter().map(|s| format!("{}={}", s["name"].as_str().unwrap(), s["verdict"].as_str().unwrap())).collect()
}

#[test]
fn fail_fast_starts_nothing_after_the_first_failure_and_both_reports_say_so() {
    let dir = tempfile::tempdir().unwrap();
    scenarios(dir.path());

    let (out, report, xml) = run(dir.path(), &["--fail-fast"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(verdicts(&report), ["a-fails=failed", "b-passes=not_run", "c-passes=not_run"], "{report:#}");
    assert_eq!(report["scenarios"][1]["not_run_reason"], "--fail-fast: a-fails failed before this scenario started");
    assert!(report["scenarios"][0]["failures"][0].as_str().unwrap().contains("expected status 200, got 403"), "{report:#}");
    assert!(report["scenarios"][0]["timings"]["traffic_ms"].as_u64().is_some(), "{report:#}");
    assert_eq!(report["stack"], "local");
    assert_eq!(report["totals"]["not_run"], 2);
    assert!(stdout.contains("0 passed, 1 failed, 0 skipped, 0 errors, 2 not run"), "{stdout}");
    assert_eq!(xml.matches("<skipped message=\"--fail-fast: a-fails failed").count(), 2, "{xml}");
    assert!(xml.contains("timestamp=\"") && xml.contains("hostname=\"") && xml.contains("<property name=\"stack\" value=\"local\"/>"), "{xml}");
    assert!(xml.contains(&format!("<property name=\"run_id\" value=\"{}\"/>", report["run_id"].as_str().unwrap())), "{xml}");

    // Without --fail-fast the same scenarios all run: the not-run verdicts came from the flag.
    let (out, report, _) = run(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(verdicts(&report), ["a-fails=failed", "b-passes=passed", "c-passes=passed"], "{report:#}");
}
