//! Property tests ("fuzz targets") for the harness's readers of untrusted text: the scenario loader,
//! the audit-line parser, the audit-log offset reader and the Prometheus API body decoder. None may
//! panic, whatever the input. Case counts stay small for `cargo test`; `scripts/fuzz.sh` raises them
//! with `PROPTEST_CASES` and runs them for a bounded time.

use proptest::prelude::*;
use proptest::test_runner::Config;
use std::path::Path;

/// 64 cases per property unless `PROPTEST_CASES` says otherwise.
fn config() -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 64;
    }
    config
}

/// The shipped scenario files, the seeds for mutation.
fn scenario_seeds() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    // The scenario files only (scenarios/ also holds their JSON Schema).
    let mut seeds: Vec<String> = waf_e2e::input::yaml_files(&dir)
        .expect("read scenarios/")
        .into_iter()
        .map(|path| std::fs::read_to_string(path).expect("read a scenario"))
        .collect();
    seeds.sort();
    seeds
}

/// An audit line as the reference proxy and Envoy write it.
const AUDIT_LINE: &str = r#"[2026-06-04 21:22:33.123][42][info][wasm] [source/extensions/common/wasm/context.cc:1192] wasm log envoyextensionpolicy/shop/block-sqli/wasm/0 : AuditLog:{"transaction":{"timestamp":"2026/06/04 21:22:33","unix_timestamp":1780608153123456789,"id":"pTqQ","client_ip":"10.244.0.7","client_port":51234,"host_ip":"","host_port":0,"server_id":"","request":{"method":"GET","protocol":"HTTP/1.1","uri":"/?id=1%27%20OR%20%271%27=%271","http_version":"1.1","headers":{"X-WAF-E2E-Id":["run1-sqli-0"]},"body":"","args":{},"length":0},"response":{"protocol":"","status":403,"headers":null,"body":""},"producer":{"connector":"coraza-proxy-wasm","version":"0.5.0","server":"","rule_engine":"On","rulesets":["OWASP_CRS/4.3.0"]},"highest_severity":"critical","is_interrupted":true},"messages":[{"actionset":"","message":"SQL Injection","data":{"file":"x.conf","line":5621,"id":942100,"rev":"","msg":"SQL Injection","data":"","severity":2,"ver":"OWASP_CRS/4.3.0","maturity":0,"accuracy":0,"tags":["attack-sqli"],"raw":""}}]}"#;

/// A `/api/v1/query` answer as Prometheus writes it.
const INSTANT_BODY: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"tigera_waf_decisions_total","decision":"blocked","rule_id":"949110"},"value":[1780608153.123,"3"]},{"metric":{"__name__":"up","job":"waf-e2e/envoy-waf"},"value":[1780608153.123,"1"]}]}}"#;

/// A `/api/v1/targets` answer as Prometheus writes it.
const TARGETS_BODY: &str = r#"{"status":"success","data":{"activeTargets":[{"discoveredLabels":{},"labels":{"job":"waf-e2e/envoy-waf","instance":"127.0.0.1:1"},"scrapePool":"podMonitor/waf-e2e/envoy-waf/0","scrapeUrl":"http://127.0.0.1:1/stats/prometheus","globalUrl":"","lastError":"","lastScrape":"2026-06-04T21:22:33Z","lastScrapeDuration":0.001,"health":"up","scrapeInterval":"250ms","scrapeTimeout":"250ms"}],"droppedTargets":[]}}"#;

/// Text that means something to YAML, JSON or the formats parsed here, to splice into seeds.
const TOKENS: &[&str] = &[
    ":", ": ", "- ", "\n", "\n  ", "  ", "\t", "{", "}", "[", "]", ",", "\"", "'", "|", ">", "&a", "*a", "!!str ", "? ", "#", "---\n", "...",
    "null", "~", "-1", "1e999", "0x1F", "99999999999999999999", "true", "On", "DetectionOnly", "would_block", "\\u0000", "\u{feff}", "é", "\r\n",
    "AuditLog:", "wasm log ", "envoyextensionpolicy/", "{}", "[]", "\"status\":\"error\"", "\"resultType\":\"scalar\"", "\"NaN\"", "\"+Inf\"",
];

/// One edit of a text: delete a span, splice in a token or arbitrary text, duplicate a span, or truncate.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let token = prop::sample::select(TOKENS).prop_map(str::to_string);
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), token).prop_map(|(at, t)| Edit::Insert(at, t)),
        (any::<usize>(), ".{0,8}").prop_map(|(at, t)| Edit::Insert(at, t)),
        (any::<usize>(), 0usize..80).prop_map(|(at, n)| Edit::Duplicate(at, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// Applies `edits` to `seed`, on character boundaries.
fn apply(seed: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Delete(i, n) => {
                let start = at(*i, chars.len());
                let end = (start + n).min(chars.len());
                chars.drain(start..end);
            }
            Edit::Insert(i, t) => {
                let start = at(*i, chars.len());
                chars.splice(start..start, t.chars());
            }
            Edit::Duplicate(i, n) => {
                let start = at(*i, chars.len());
                let end = (start + n).min(chars.len());
                let copy: Vec<char> = chars[start..end].to_vec();
                chars.splice(end..end, copy);
            }
            Edit::Truncate(i) => chars.truncate(at(*i, chars.len())),
        }
    }
    chars.into_iter().collect()
}

/// Mutations of one of `seeds`: one to eight edits.
fn mutated(seeds: Vec<String>) -> impl Strategy<Value = String> {
    (prop::sample::select(seeds), prop::collection::vec(edit(), 1..8)).prop_map(|(seed, edits)| apply(&seed, &edits))
}

fn parse_scenario(text: &str) {
    if let Err(invalid) = waf_e2e::scenario::load::parse(Path::new("fuzz.yaml"), text) {
        assert!(!invalid.0.is_empty(), "an error without a problem for {text:?}");
        // Rendering the report must not panic either.
        let _ = invalid.to_string();
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_scenario_loader_never_panics_on_arbitrary_text(text in ".{0,400}") {
        parse_scenario(&text);
    }

    #[test]
    fn the_scenario_loader_never_panics_on_mutated_scenario_files(text in mutated(scenario_seeds())) {
        parse_scenario(&text);
    }

    #[test]
    fn the_audit_line_parser_never_panics_on_arbitrary_text(line in ".{0,300}") {
        let _ = waf_e2e::audit::parse_line(&line);
        let _ = waf_e2e::audit::parse_line(&format!("wasm log x : AuditLog:{line}"));
    }

    #[test]
    fn the_audit_line_parser_never_panics_on_mutated_audit_lines(line in mutated(vec![AUDIT_LINE.to_string()])) {
        if let Some(Err(e)) = waf_e2e::audit::parse_line(&line) {
            let _ = e.to_string();
        }
    }

    #[test]
    fn the_audit_log_reader_returns_only_complete_lines_and_an_offset_after_them(bytes in prop::collection::vec(any::<u8>(), 0..300), from in 0u64..1_000_000) {
        let (lines, next) = waf_e2e::audit::offsets::split_complete_lines(from, &bytes);
        let newlines = bytes.iter().filter(|b| **b == b'\n').count();
        prop_assert_eq!(lines.len(), newlines);
        prop_assert!(lines.iter().all(|l| !l.contains('\n')));
        prop_assert!(next >= from && next <= from + bytes.len() as u64);
    }

    #[test]
    fn the_prometheus_body_decoder_never_panics_on_arbitrary_text(body in ".{0,300}") {
        let _ = waf_e2e::assert::prom::decode_instant(&body);
        let _ = waf_e2e::assert::prom::decode_targets(&body);
    }

    #[test]
    fn the_prometheus_body_decoder_never_panics_on_mutated_answers(body in mutated(vec![INSTANT_BODY.to_string(), TARGETS_BODY.to_string()])) {
        let _ = waf_e2e::assert::prom::decode_instant(&body).map_err(|e| format!("{e:#}"));
        let _ = waf_e2e::assert::prom::decode_targets(&body).map_err(|e| format!("{e:#}"));
    }
}

#[test]
fn the_unmutated_seeds_decode() {
    assert_eq!(waf_e2e::assert::prom::decode_instant(INSTANT_BODY).expect("instant body").len(), 2);
    assert_eq!(waf_e2e::assert::prom::decode_targets(TARGETS_BODY).expect("targets body")[0].health, "up");
    assert!(matches!(waf_e2e::audit::parse_line(AUDIT_LINE), Some(Ok(_))));
    for seed in scenario_seeds() {
        waf_e2e::scenario::load::parse(Path::new("seed.yaml"), &seed).unwrap_or_else(|e| panic!("{e}"));
    }
}
