//! Tests for audit lines: real-looking Envoy output, hostile input, and the helpers the assertions use.

use super::*;
use crate::contract::Decision;

/// A line shaped like Envoy + coraza-proxy-wasm output: Go's nil maps as `null`, fields this crate does not model.
const ENVOY_LINE: &str = r#"[2026-06-04 21:22:33.123][42][info][wasm] [source/extensions/common/wasm/context.cc:1192] wasm log envoyextensionpolicy/shop/block-sqli/wasm/0 : AuditLog:{"transaction":{"timestamp":"2026/06/04 21:22:33","unix_timestamp":1780608153123456789,"id":"pTqQSJmIXOaRfJWRhHv","client_ip":"10.244.0.7","client_port":51234,"host_ip":"","host_port":0,"server_id":"","request":{"method":"GET","protocol":"HTTP/1.1","uri":"/?id=1%27%20OR%20%271%27=%271","http_version":"1.1","headers":{":authority":["shop.example"],"X-WAF-E2E-Id":["run1-sqli-0"],"user-agent":["waf-e2e"]},"body":"","files":null,"args":{},"length":0},"response":{"protocol":"","status":403,"headers":null,"body":""},"producer":{"connector":"coraza-proxy-wasm","version":"0.5.0","server":"","rule_engine":"On","stopwatch":"","rulesets":["OWASP_CRS/4.3.0"]},"highest_severity":"critical","is_interrupted":true},"messages":[{"actionset":"","message":"SQL Injection Attack Detected via libinjection","error_message":"","data":{"file":"@owasp_crs/REQUEST-942-APPLICATION-ATTACK-SQLI.conf","line":5621,"id":942100,"rev":"","msg":"SQL Injection Attack Detected via libinjection","data":"Matched Data: s&sos found within ARGS:id: 1' OR '1'='1","severity":2,"ver":"OWASP_CRS/4.3.0","maturity":0,"accuracy":0,"tags":["application-multi","language-multi","platform-multi","attack-sqli","paranoia-level/1","OWASP_CRS","capec/1000/152/248/66"],"raw":""}},{"actionset":"","message":"Inbound Anomaly Score Exceeded (Total Score: 5)","data":{"file":"@owasp_crs/REQUEST-949-BLOCKING-EVALUATION.conf","line":11342,"id":949110,"rev":"","msg":"Inbound Anomaly Score Exceeded (Total Score: 5)","data":"","severity":0,"ver":"OWASP_CRS/4.3.0","maturity":0,"accuracy":0,"tags":["anomaly-evaluation"],"raw":""}},{"actionset":"","message":"again","data":{"id":942100}}],"future_field":{"x":1}}"#;

#[test]
fn a_real_envoy_audit_line_parses_with_its_vm_and_rule_ids() {
    let line = parse_line(ENVOY_LINE).expect("an audit line").expect("valid JSON");
    assert_eq!(line.vm, "envoyextensionpolicy/shop/block-sqli/wasm/0");
    assert_eq!(line.policy(), Some(("shop".to_string(), "block-sqli".to_string())));
    assert_eq!(line.record.rule_ids(), vec![942100, 949110]);
    assert_eq!(line.record.decision(), Some(Decision::Blocked));
    assert_eq!(line.record.transaction.response.status, 403);
    assert!(line.record.transaction.response.headers.is_empty());
    assert_eq!(line.record.messages[0].data.severity, 2);
    assert_eq!(line.record.transaction.highest_severity, "critical");
}

#[test]
fn request_headers_are_found_whatever_their_case() {
    let line = parse_line(ENVOY_LINE).expect("an audit line").expect("valid JSON");
    assert_eq!(line.record.request_header("x-waf-e2e-id"), Some("run1-sqli-0"));
    assert_eq!(line.record.request_header("X-Waf-E2E-ID"), Some("run1-sqli-0"));
    assert_eq!(line.record.request_header("absent"), None);
}

#[test]
fn a_container_log_line_without_the_file_prefix_parses() {
    let json = ENVOY_LINE.split_once(AUDIT_MARKER).expect("marker").1;
    let line = format!("2026-06-04T21:22:33.123456789Z stderr F [2026-06-04 21:22:33.123][1][info][wasm] wasm log envoyextensionpolicy/shop/block-sqli/wasm/0: {AUDIT_MARKER}{json}\r\n");
    let parsed = parse_line(&line).expect("an audit line").expect("valid JSON");
    assert_eq!(parsed.vm, "envoyextensionpolicy/shop/block-sqli/wasm/0");
    assert_eq!(parsed.record.rule_ids(), vec![942100, 949110]);
}

#[test]
fn a_bare_audit_marker_parses_with_an_empty_vm() {
    let parsed = parse_line(r#"AuditLog:{"transaction":{"is_interrupted":false},"messages":[]}"#)
        .expect("an audit line")
        .expect("valid JSON");
    assert_eq!(parsed.vm, "");
    assert_eq!(parsed.policy(), None);
    assert_eq!(parsed.record.decision(), None);
}

#[test]
fn lines_without_the_marker_are_not_audit_lines() {
    for line in [
        "",
        "garbage",
        "[2026-06-04 21:22:33.123][42][info][main] [source/server/server.cc:932] all clusters initialized",
        "[2026-06-04 21:22:33.123][42][info][wasm] wasm log envoyextensionpolicy/shop/x/wasm/0 : Coraza: Warning. SQL injection",
        "\u{0}\u{ffff}💥 AuditLo g:{}",
    ] {
        assert!(parse_line(line).is_none(), "{line:?}");
    }
}

#[test]
fn a_truncated_record_is_an_error_naming_the_vm_and_the_reason() {
    let cut = &ENVOY_LINE[..ENVOY_LINE.len() / 2];
    let err = parse_line(cut).expect("an audit line").expect_err("broken JSON");
    assert_eq!(err.vm, "envoyextensionpolicy/shop/block-sqli/wasm/0");
    assert!(err.reason.contains("EOF"), "{}", err.reason);
    assert!(err.to_string().contains("block-sqli"), "{err}");
}

#[test]
fn garbage_after_the_marker_is_an_error_not_a_panic() {
    for line in ["AuditLog:", "AuditLog:not json", "x AuditLog:[1,2]", "AuditLog:{\"transaction\":{\"request\":{\"headers\":[1]}}}", "AuditLog:\u{0}"] {
        assert!(matches!(parse_line(line), Some(Err(_))), "{line:?}");
    }
}

#[test]
fn every_prefix_of_a_real_line_parses_or_fails_without_panicking() {
    for (i, _) in ENVOY_LINE.char_indices() {
        let _ = parse_line(&ENVOY_LINE[..i]);
    }
}

#[test]
fn a_detection_only_record_with_messages_is_would_block() {
    let mut record = AuditRecord::default();
    record.transaction.producer.rule_engine = "DetectionOnly".into();
    assert_eq!(record.decision(), None);
    record.messages.push(AuditMessage { data: AuditMessageData { id: 949110, ..Default::default() }, ..Default::default() });
    assert_eq!(record.decision(), Some(Decision::WouldBlock));
    record.transaction.producer.rule_engine = "On".into();
    assert_eq!(record.decision(), None);
}

#[test]
fn ids_and_severities_written_as_strings_are_accepted() {
    let json = r#"{"transaction":{"unix_timestamp":"17","highest_severity":2},"messages":[{"data":{"id":"942100","severity":"CRITICAL","rev":1}}]}"#;
    let parsed = parse_line(&format!("AuditLog:{json}")).expect("an audit line").expect("lenient JSON");
    assert_eq!(parsed.record.rule_ids(), vec![942100]);
    assert_eq!(parsed.record.messages[0].data.severity, 2);
    assert_eq!(parsed.record.transaction.highest_severity, "2");
}

/// Lines a real Envoy 1.37.0 wrote to its `--log-path` file on the local stack (the stand-in filter
/// logging through `proxy_log`): Envoy's own format, byte for byte.
const REAL_ENVOY_LOG: &str = include_str!("../../tests/fixtures/envoy-1.37.0-audit.log");

#[test]
fn every_audit_line_a_real_envoy_wrote_parses_with_its_plugin_vm_and_policy() {
    let audit: Vec<&str> = REAL_ENVOY_LOG.lines().filter(|l| l.contains(AUDIT_MARKER)).collect();
    assert_eq!(audit.len(), 5, "the fixture holds five records");
    for line in audit {
        let parsed = parse_line(line).expect("an audit line").unwrap_or_else(|e| panic!("{e}: {line}"));
        let (namespace, policy) = parsed.policy().unwrap_or_else(|| panic!("no policy in vm {:?}", parsed.vm));
        assert!(namespace.starts_with("waf-e2e-"), "{namespace}");
        assert!(["waf-phase-pin", "waf-sqli-detect"].contains(&policy.as_str()), "{policy}");
        assert!(parsed.record.request_header("x-waf-e2e-id").is_some(), "the correlation header comes back: {line}");
        assert!(parsed.record.decision().is_some(), "{line}");
        assert!(parsed.record.rule_ids().contains(&949110), "{:?}", parsed.record.rule_ids());
    }
}

#[test]
fn lines_envoy_wrote_that_carry_no_record_are_not_audit_lines() {
    for line in REAL_ENVOY_LOG.lines().filter(|l| !l.contains(AUDIT_MARKER)) {
        assert!(parse_line(line).is_none(), "{line}");
    }
}

/// The JSON of [`ENVOY_LINE`], as Coraza's JSON formatter writes it.
fn coraza_json() -> &'static str {
    ENVOY_LINE.split_once(AUDIT_MARKER).expect("marker").1
}

#[test]
fn a_bare_coraza_json_wasm_message_is_an_audit_line() {
    // Public coraza-proxy-wasm's `wasmserial` writer: proxywasm.LogInfo(json), no marker.
    let line = format!(
        "[2026-06-04 21:22:33.123][42][info][wasm] [source/extensions/common/wasm/context.cc:1192] wasm log envoyextensionpolicy/shop/block-sqli/wasm/0 : {}",
        coraza_json()
    );
    let parsed = parse_line(&line).expect("an audit line").expect("valid JSON");
    assert_eq!(parsed.vm, "envoyextensionpolicy/shop/block-sqli/wasm/0");
    assert_eq!(parsed.policy(), Some(("shop".to_string(), "block-sqli".to_string())));
    assert_eq!(parsed.record.rule_ids(), vec![942100, 949110]);
    assert_eq!(parsed.record.request_header("x-waf-e2e-id"), Some("run1-sqli-0"));
    assert_eq!(parsed.record, parse_line(ENVOY_LINE).unwrap().unwrap().record, "both forms read the same record");
}

#[test]
fn a_bare_record_from_the_container_log_stream_parses_with_its_vm() {
    // What kubelet serves (timestamps stripped) when envoy logs to stderr: root id and VM id after the plugin name.
    let line = format!("[2026-06-04 21:22:33.123][15][info][wasm] wasm log envoyextensionpolicy/shop/block-sqli/wasm/0 coraza-root vm-1: {}\r", coraza_json());
    let parsed = parse_line(&line).expect("an audit line").expect("valid JSON");
    assert_eq!(parsed.vm, "envoyextensionpolicy/shop/block-sqli/wasm/0");
    assert_eq!(parsed.record.decision(), Some(crate::contract::Decision::Blocked));
}

#[test]
fn a_bare_record_whose_body_mentions_the_marker_is_still_read_whole() {
    let mut record = AuditRecord::default();
    record.transaction.request.body = "q=AuditLog:{not json".into();
    record.messages.push(AuditMessage { data: AuditMessageData { id: 941100, ..Default::default() }, ..Default::default() });
    let line = format!("[2026-06-04 21:22:33.123][42][info][wasm] wasm log envoyextensionpolicy/shop/detect-xss/wasm/0 : {}", serde_json::to_string(&record).unwrap());
    assert_eq!(parse_line(&line).expect("an audit line").expect("valid JSON").record, record);
}

#[test]
fn other_wasm_log_lines_with_json_are_not_audit_lines() {
    for message in [
        r#"{"level":"info","msg":"plugin configured"}"#,
        r#"{"transaction":"abc","status":403}"#,
        r#"{"messages":[{"data":{"id":949110}}]}"#,
        r#"{"tx":{"transaction":{"id":"x"}}}"#,
        "{not json at all",
        "[1,2,3]",
        "{}",
    ] {
        let line = format!("[2026-06-04 21:22:33.123][42][info][wasm] [source/extensions/common/wasm/context.cc:1192] wasm log envoyextensionpolicy/shop/block-sqli/wasm/0 : {message}");
        assert!(parse_line(&line).is_none(), "{line}");
    }
    // JSON that is not a wasm log message (no `wasm log <vm>: `) is not an audit line either.
    assert!(parse_line(coraza_json()).is_none());
    assert!(parse_line(&format!("[2026-06-04 21:22:33.123][42][info][main] {}", coraza_json())).is_none());
}

#[test]
fn a_truncated_bare_record_is_an_error_naming_the_vm() {
    let json = coraza_json();
    let line = format!("[2026-06-04 21:22:33.123][42][info][wasm] wasm log envoyextensionpolicy/shop/block-sqli/wasm/0 : {}", &json[..json.len() / 2]);
    let err = parse_line(&line).expect("an audit line").expect_err("broken JSON");
    assert_eq!(err.vm, "envoyextensionpolicy/shop/block-sqli/wasm/0");
    assert!(err.reason.contains("EOF"), "{}", err.reason);
}

#[test]
fn every_prefix_of_a_bare_line_parses_or_fails_without_panicking() {
    let line = format!("[2026-06-04 21:22:33.123][42][info][wasm] wasm log envoyextensionpolicy/shop/block-sqli/wasm/0 : {}", coraza_json());
    for (i, _) in line.char_indices() {
        let _ = parse_line(&line[..i]);
    }
}
