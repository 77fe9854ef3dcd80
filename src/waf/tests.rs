//! The reference WAF service over HTTP, with hand-made callouts as the stand-in filter sends them.

use super::protocol::{self, encode_header_map, Stage};
use super::{Faults, ReferenceWaf};
use crate::audit::AuditRecord;
use serde_json::json;

const SQLI_PATH: &str = "/search?id=1'%20OR%20'1'='1";

fn directives(extra: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = ["Include @recommended-conf", "SecRuleEngine On", "SecAuditEngine RelevantOnly", "SecAuditLogParts ABIJDEFHKZ", "Include @crs-setup-conf", "Include @owasp_crs/*.conf"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    lines.extend(extra.iter().map(|s| s.to_string()));
    lines
}

fn config(policy: &str, lines: Vec<String>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "directives_map": {"default": lines},
        "default_directives": "default",
        "metric_labels": {"policy": policy, "namespace": "shop"}
    }))
    .unwrap()
}

/// One stage's answer as the filter reads it.
#[derive(Debug)]
struct Reply {
    http: u16,
    tx: Option<String>,
    action: Option<String>,
    status: Option<String>,
    metrics: Vec<String>,
    body: String,
}

impl Reply {
    fn record(&self) -> AuditRecord {
        assert!(!self.body.is_empty(), "an audit record was expected: {self:?}");
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("audit JSON: {e}: {}", self.body))
    }
}

struct Filter {
    client: reqwest::Client,
    base: String,
    tx: Option<String>,
}

impl Filter {
    fn new(waf: &ReferenceWaf) -> Filter {
        Filter { client: reqwest::Client::builder().no_proxy().build().unwrap(), base: format!("http://{}", waf.addr()), tx: None }
    }

    async fn call(&mut self, stage: Stage, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let mut req = self.client.post(format!("{}/v1/{}", self.base, stage.path_name())).header("content-type", "application/octet-stream").body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let (Some(tx), false) = (&self.tx, stage == Stage::RequestHeaders) {
            req = req.header(protocol::TX, tx.as_str());
        }
        let resp = req.send().await.expect("callout");
        let get = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_string());
        let reply = Reply {
            http: resp.status().as_u16(),
            tx: get(protocol::TX),
            action: get(protocol::ACTION),
            status: get(protocol::STATUS),
            metrics: get(protocol::METRICS).map(|m| m.split(' ').map(str::to_string).collect()).unwrap_or_default(),
            body: String::new(),
        };
        let body = resp.text().await.unwrap();
        if stage == Stage::RequestHeaders {
            self.tx = reply.tx.clone();
        }
        Reply { body, ..reply }
    }

    async fn request_headers(&mut self, config: &[u8], method: &str, path: &str, extra: &[(&str, &str)]) -> Reply {
        let mut pairs = vec![(":method", method), (":path", path), (":authority", "shop.example"), ("user-agent", "waf-e2e-test"), ("accept", "*/*"), ("x-waf-e2e-id", "req-1")];
        pairs.extend_from_slice(extra);
        let mut body = config.to_vec();
        body.extend(encode_header_map(&pairs));
        let length = config.len().to_string();
        let headers = [(protocol::CONFIG_LENGTH, length.as_str()), (protocol::SOURCE, "127.0.0.1:40000"), (protocol::DESTINATION, "127.0.0.1:10080")];
        self.call(Stage::RequestHeaders, &headers, body).await
    }

    async fn response_headers(&mut self, end_of_stream: bool) -> Reply {
        let map = encode_header_map(&[(":status", "200"), ("content-type", "text/plain")]);
        let headers: &[(&str, &str)] = if end_of_stream { &[(protocol::END_OF_STREAM, "1")] } else { &[] };
        self.call(Stage::ResponseHeaders, headers, map).await
    }
}

fn assert_continue(reply: &Reply, what: &str) {
    assert_eq!((reply.http, reply.action.as_deref(), reply.metrics.len(), reply.body.as_str()), (200, Some("continue"), 0, ""), "{what}: {reply:?}");
}

#[tokio::test]
async fn a_sqli_get_passes_its_request_stages_and_is_blocked_with_949110_at_response_headers() {
    let waf = ReferenceWaf::start(Faults::default()).unwrap();
    let mut filter = Filter::new(&waf);
    let first = filter.request_headers(&config("block-sqli", directives(&[])), "GET", SQLI_PATH, &[]).await;
    assert_continue(&first, "request_headers");
    assert!(first.tx.is_some(), "the first answer names the transaction");
    let blocked = filter.response_headers(false).await;
    assert_eq!((blocked.http, blocked.action.as_deref(), blocked.status.as_deref()), (200, Some("block"), Some("403")), "{blocked:?}");
    assert_eq!(blocked.metrics, vec!["waf_filter.tx.interruptions_ruleid=949110_phase=http_response_headers_policy=block-sqli_namespace=shop".to_string()]);
    let record = blocked.record();
    assert!(record.transaction.is_interrupted);
    assert_eq!(record.transaction.response.status, 403);
    assert_eq!(record.request_header("x-waf-e2e-id"), Some("req-1"));
    assert_eq!(record.transaction.producer.rule_engine, "On");
    let ids = record.rule_ids();
    assert!(ids.contains(&942100) && ids.contains(&949110), "{ids:?}");
    // The block finished the transaction: a later stage is an error, never a silent pass.
    assert_eq!(filter.call(Stage::ResponseBody, &[], b"x".to_vec()).await.http, 500);
    waf.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_sqli_form_post_is_blocked_at_request_body() {
    let waf = ReferenceWaf::start(Faults::default()).unwrap();
    let mut filter = Filter::new(&waf);
    let first = filter.request_headers(&config("block-sqli", directives(&[])), "POST", "/login", &[("content-type", "application/x-www-form-urlencoded")]).await;
    assert_continue(&first, "request_headers");
    let blocked = filter.call(Stage::RequestBody, &[], b"user=1'%20OR%20'1'='1&pass=x".to_vec()).await;
    assert_eq!((blocked.action.as_deref(), blocked.status.as_deref()), (Some("block"), Some("403")), "{blocked:?}");
    assert_eq!(blocked.metrics, vec!["waf_filter.tx.interruptions_ruleid=949110_phase=http_request_body_policy=block-sqli_namespace=shop".to_string()]);
    assert_eq!(blocked.record().transaction.response.status, 403);

    // @recommended-conf turns on the JSON body processor, so a JSON body is inspected too.
    let mut filter = Filter::new(&waf);
    filter.request_headers(&config("block-sqli", directives(&[])), "POST", "/api", &[("content-type", "application/json")]).await;
    let json_blocked = filter.call(Stage::RequestBody, &[], br#"{"user":"1' OR '1'='1"}"#.to_vec()).await;
    assert_eq!(json_blocked.action.as_deref(), Some("block"), "{json_blocked:?}");
}

#[tokio::test]
async fn detection_only_continues_everywhere_counts_would_block_and_logs_at_the_last_stage() {
    let waf = ReferenceWaf::start(Faults::default()).unwrap();
    let mut filter = Filter::new(&waf);
    let cfg = config("detect-sqli", directives(&["SecRuleEngine DetectionOnly"]));
    assert_continue(&filter.request_headers(&cfg, "GET", SQLI_PATH, &[]).await, "request_headers");
    let headers = filter.response_headers(false).await;
    assert_eq!((headers.action.as_deref(), headers.body.as_str()), (Some("continue"), ""), "{headers:?}");
    // detect-sqli's labels come namespace first (the policy-dependent order).
    assert_eq!(headers.metrics, vec!["waf_filter.tx.would_block_ruleid=949110_phase=http_response_headers_namespace=shop_policy=detect-sqli".to_string()]);
    let last = filter.call(Stage::ResponseBody, &[], b"hello".to_vec()).await;
    assert_eq!((last.action.as_deref(), last.metrics.len()), (Some("continue"), 0), "{last:?}");
    let record = last.record();
    assert!(!record.transaction.is_interrupted);
    assert_eq!(record.transaction.producer.rule_engine, "DetectionOnly");
    assert_eq!(record.transaction.response.status, 200);
    assert!(record.rule_ids().contains(&949110));
}

#[tokio::test]
async fn audit_engine_off_gives_no_record_and_parts_without_k_give_no_messages() {
    let waf = ReferenceWaf::start(Faults::default()).unwrap();
    let mut filter = Filter::new(&waf);
    filter.request_headers(&config("quiet", directives(&["SecAuditEngine Off"])), "GET", SQLI_PATH, &[]).await;
    let blocked = filter.response_headers(true).await;
    assert_eq!((blocked.action.as_deref(), blocked.body.as_str()), (Some("block"), ""), "{blocked:?}");
    assert_eq!(blocked.metrics.len(), 1, "the counter does not depend on the audit engine");

    let mut filter = Filter::new(&waf);
    filter.request_headers(&config("terse", directives(&["SecAuditLogParts ABIJDEFHZ"])), "GET", SQLI_PATH, &[]).await;
    let record = filter.response_headers(true).await.record();
    assert!(record.messages.is_empty(), "{:?}", record.messages);
    assert!(record.transaction.is_interrupted);
    assert_eq!(record.request_header("x-waf-e2e-id"), Some("req-1"), "part B keeps the headers");
}

#[tokio::test]
async fn a_benign_request_counts_nothing_and_logs_nothing_at_any_stage() {
    let waf = ReferenceWaf::start(Faults::default()).unwrap();
    let mut filter = Filter::new(&waf);
    assert_continue(&filter.request_headers(&config("block-sqli", directives(&[])), "GET", "/products?page=2", &[]).await, "request_headers");
    assert_continue(&filter.response_headers(false).await, "response_headers");
    assert_continue(&filter.call(Stage::ResponseBody, &[], b"hello".to_vec()).await, "response_body");
}

#[tokio::test]
async fn engine_off_evaluates_nothing() {
    let waf = ReferenceWaf::start(Faults::default()).unwrap();
    let mut filter = Filter::new(&waf);
    assert_continue(&filter.request_headers(&config("off", directives(&["SecRuleEngine Off"])), "GET", SQLI_PATH, &[]).await, "request_headers");
    assert_continue(&filter.response_headers(true).await, "response_headers");
}

#[tokio::test]
async fn a_bad_configuration_is_a_service_failure_naming_what_is_wrong() {
    let waf = ReferenceWaf::start(Faults::default()).unwrap();
    let unknown_key = serde_json::to_vec(&json!({"directives_map": {"d": []}, "default_directives": "d", "rules": ["x"]})).unwrap();
    let unknown_include = config("p", vec!["Include @ftw-conf".to_string()]);
    let bad_rule = config("p", vec!["SecRuel ARGS x".to_string()]);
    for (cfg, needle) in [(unknown_key, "rules"), (unknown_include, "@ftw-conf"), (bad_rule, "SecRuel")] {
        let reply = Filter::new(&waf).request_headers(&cfg, "GET", "/", &[]).await;
        assert_eq!(reply.http, 500, "{reply:?}");
        assert!(reply.body.contains(needle), "{needle}: {}", reply.body);
    }
}

#[tokio::test]
async fn the_double_count_and_drop_audit_faults_change_what_the_filter_is_told() {
    let waf = ReferenceWaf::start(Faults { double_count: true, drop_audit: true }).unwrap();
    let mut filter = Filter::new(&waf);
    filter.request_headers(&config("block-sqli", directives(&[])), "GET", SQLI_PATH, &[]).await;
    let blocked = filter.response_headers(true).await;
    assert_eq!(blocked.action.as_deref(), Some("block"));
    assert_eq!(blocked.metrics.len(), 2, "{blocked:?}");
    assert_eq!(blocked.metrics[0], blocked.metrics[1]);
    assert_eq!(blocked.body, "", "drop_audit returns no record");
}

#[tokio::test]
async fn the_service_describes_its_engine_and_reports_its_health() {
    let waf = ReferenceWaf::start(Faults::default()).unwrap();
    let described = waf.describe();
    assert!(described.starts_with("ModSecurity v3.0.9") && described.ends_with("OWASP CRS 3.3.4"), "{described}");
    waf.health().unwrap();
    waf.shutdown().await.unwrap();
}
