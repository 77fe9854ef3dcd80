//! `waf-e2e corpus` end to end on a SMALL FTW corpus written into a temp dir (a few tests, seconds
//! per run): the verdicts, the reports, and that a broken expectation or a broken PodMonitor fails
//! naming what broke. The full CRS corpus runs from scripts/test.sh.
#![cfg(feature = "reference-proxy")]

use crate::binary;
use binary::waf_e2e;
use std::path::Path;

/// Three FTW tests in the corpus' own layout: an SQL injection 942100 must log, a benign request
/// it must not, and (blocking only) a 403 status.
const SQLI: &str = r#"---
meta:
  author: "waf-e2e"
  enabled: true
  name: "942100.yaml"
  description: "a small corpus for the harness' own tests"
tests:
  - test_title: 942100-1
    desc: "SQL injection in the query string"
    stages:
      - stage:
          input:
            dest_addr: "127.0.0.1"
            port: 80
            method: "GET"
            uri: "/?id=1%27%20OR%20%271%27%3D%271"
            headers:
              User-Agent: "ModSecurity CRS 3 Tests"
              Host: "localhost"
              Accept: "*/*"
            version: "HTTP/1.1"
          output:
            log_contains: id "942100"
            status: 403
  - test_title: 942100-2
    desc: "a benign form post"
    stages:
      - stage:
          input:
            dest_addr: "127.0.0.1"
            port: 80
            method: "POST"
            uri: "/"
            headers:
              User-Agent: "ModSecurity CRS 3 Tests"
              Host: "localhost"
              Accept: "*/*"
            data: "name=alice"
            version: "HTTP/1.0"
          output:
            no_log_contains: id "942100"
"#;

/// A temp dir whose `ftw/` holds the corpus (the reports and other inputs go beside it).
fn corpus(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let family = dir.path().join("ftw/REQUEST-942-APPLICATION-ATTACK-SQLI");
    std::fs::create_dir_all(&family).expect("family dir");
    std::fs::write(family.join("942100.yaml"), text).expect("write the FTW file");
    dir
}

fn run(dir: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let ftw = dir.join("ftw");
    let mut args = vec!["corpus", ftw.to_str().unwrap(), "--scrape-interval-ms", "250"];
    args.extend_from_slice(extra);
    let out = waf_e2e(&args);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_small_corpus_passes_in_both_modes_with_counters_agreeing_and_reports_one_case_per_test() {
    let dir = corpus(SQLI);
    let overrides = dir.path().join("overrides.yaml");
    std::fs::write(&overrides, "overrides:\n  - test: 942100-2\n    reason: listed to prove a passing override is reported\n").unwrap();
    let junit = dir.path().join("corpus.xml");
    let json = dir.path().join("corpus.json");
    let (code, stdout, stderr) = run(dir.path(), &["--overrides", overrides.to_str().unwrap(), "--junit", junit.to_str().unwrap(), "--report", "json", json.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("counters agree with the audit records").count(), 2, "both modes: {stdout}");
    assert!(stdout.contains("OVERRIDE NO LONGER NEEDED 942100-2"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase name=\"942100-").count(), 2, "one case per FTW test: {xml}");
    assert!(!xml.contains("<failure"), "{xml}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["families"]["942"]["tests"], 2, "{report}");
    assert_eq!(report["families"]["942"]["decisions"], 2, "the injection decided in each mode, the benign post in neither: {report}");
}

#[test]
fn a_log_contains_naming_a_rule_that_does_not_fire_fails_exactly_that_test_naming_file_title_and_request() {
    let dir = corpus(&SQLI.replace("log_contains: id \"942100\"", "log_contains: id \"941100\""));
    let (code, stdout, stderr) = run(dir.path(), &[]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAILED")).collect();
    assert_eq!(failed.len(), 2, "942100-1 in each mode, nothing else: {stdout}");
    for line in failed {
        assert!(line.contains("942100.yaml:8 test 942100-1, stage 1 (request `GET /?id=1%27%20OR%20%271%27%3D%271 HTTP/1.1`"), "{line}");
        assert!(line.contains("log_contains `id \"941100\"`"), "{line}");
    }
    assert!(stdout.contains("counters agree with the audit records"), "the counters still agree: {stdout}");
}

#[test]
fn a_podmonitor_that_drops_rule_id_fails_the_corpus_run_naming_the_series() {
    let dir = corpus(SQLI);
    // fixtures/rendered with its PodMonitor swapped for the broken one (the EnvoyProxy stays: it writes the audit log).
    let rendered = dir.path().join("rendered");
    std::fs::create_dir(&rendered).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(root.join("fixtures/rendered")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, rendered.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::copy(root.join("fixtures/broken/podmonitor-no-rule-id.yaml"), rendered.join("podmonitor.yaml")).unwrap();
    let (code, stdout, stderr) = run(dir.path(), &["--mode", "detection", "--rendered", rendered.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("FAILED [detection counters] decisions of rule 949110"), "{stdout}");
    assert!(stdout.contains("tigera_waf_decisions_total{decision=\"would_block\",namespace=\"waf_e2e_crs_corpus_detect\",policy=\"crs_corpus_detect\",rule_id=\"949110\"}"), "{stdout}");
    assert!(stdout.contains("label `rule_id`: missing"), "{stdout}");
}

#[test]
fn an_unknown_ftw_field_is_exit_2_naming_file_line_and_field() {
    let dir = corpus(&SQLI.replace("            status: 403\n", "            response_contains: \"x\"\n"));
    let (code, stdout, stderr) = run(dir.path(), &[]);
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("942100.yaml:24") && stderr.contains("field `response_contains`"), "{stderr}");
}

#[test]
fn an_unknown_report_format_and_a_test_glob_matching_nothing_are_usage_errors() {
    let dir = corpus(SQLI);
    let (code, _, stderr) = run(dir.path(), &["--report", "xml", "r.xml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("the formats are `json` and `junit`"), "{stderr}");
    let (code, _, stderr) = run(dir.path(), &["--test", "999*"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no FTW test title matches --test 999*"), "{stderr}");
}
