//! The reference proxy (a stand-in for Envoy + the Coraza WAF filter) with real ModSecurity + CRS, on loopback.
#![cfg(feature = "reference-proxy")]

use regex::Regex;
use std::path::PathBuf;
use waf_e2e::audit::{parse_line, AuditLine};
use waf_e2e::proxy::{Faults, PolicyAttachment, ProxyConfig, ReferenceProxy};
use waf_e2e::scenario::{Decision, Mode};

const SQLI: &str = "/?id=1'%20OR%20'1'='1";
const XSS: &str = "/?q=<script>alert(1)</script>";

struct Harness {
    proxy: ReferenceProxy,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start(faults: Faults) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = ReferenceProxy::start(ProxyConfig {
        gateway: "web".into(),
        gateway_namespace: "gateways".into(),
        audit_log: dir.path().join("access_logs/envoy.log"),
        faults,
        ports: Default::default(),
    })
    .await
    .expect("proxy starts");
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    Harness { proxy, client, _dir: dir }
}

fn policy(host: &str, name: &str, mode: Mode) -> PolicyAttachment {
    PolicyAttachment {
        host: host.into(),
        policy: name.into(),
        namespace: "shop".into(),
        mode,
        crs: true,
        directives: None,
        extra_metric_labels: Vec::new(),
    }
}

impl Harness {
    async fn send(&self, host: &str, method: &str, path: &str, id: &str, body: Option<(&str, &str)>) -> (u16, String) {
        let url = format!("http://{}{}", self.proxy.listen_addr(), path);
        let mut req = self
            .client
            .request(method.parse().expect("method"), &url)
            .header("host", host)
            .header("x-waf-e2e-id", id)
            .header("user-agent", "waf-e2e/test")
            .header("accept", "*/*");
        if let Some((content_type, body)) = body {
            req = req.header("content-type", content_type).body(body.to_string());
        }
        let resp = req.send().await.expect("request completes");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    async fn stats(&self) -> String {
        let url = format!("http://{}/stats/prometheus", self.proxy.admin_addr());
        self.client.get(&url).send().await.expect("scrape").text().await.expect("text")
    }

    fn audit(&self) -> Vec<AuditLine> {
        let text = std::fs::read_to_string(self.proxy.audit_log()).expect("audit log exists");
        text.lines()
            .map(|l| parse_line(l).expect("every line is an audit line").expect("every audit line parses"))
            .collect()
    }

    fn audit_for(&self, id: &str) -> Vec<AuditLine> {
        self.audit().into_iter().filter(|l| l.record.request_header("x-waf-e2e-id") == Some(id)).collect()
    }
}

/// The value of the one decision series with this prefix that carries both labels, in either order.
fn decision_value(exposition: &str, prefix: &str, policy: &str, namespace: &str) -> Option<u64> {
    let policy = format!("policy_{policy}");
    let namespace = format!("namespace_{namespace}");
    let hits: Vec<u64> = exposition
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&policy) && l.contains(&namespace) && !l.starts_with('#'))
        .map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a counter value"))
        .collect();
    assert!(hits.len() <= 1, "several series match {prefix} {policy} {namespace}:\n{exposition}");
    hits.first().copied()
}

fn tx_total(exposition: &str) -> Option<u64> {
    exposition.lines().find_map(|l| l.strip_prefix("waf_filter_tx_total{} ")).and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn sqli_in_the_query_with_crs_on_is_blocked_counted_and_audited() {
    let h = start(Faults::default()).await;
    h.proxy.attach(policy("block.example", "block-sqli", Mode::On)).await.expect("attach");
    let (status, _) = h.send("block.example", "GET", SQLI, "sqli-1", None).await;
    assert_eq!(status, 403);

    let stats = h.stats().await;
    let value = decision_value(&stats, "waf_filter_tx_interruptions_ruleid_949110_phase_http_request_body_", "block_sqli", "shop");
    assert_eq!(value, Some(1), "{stats}");
    let series = stats.lines().find(|l| l.starts_with("waf_filter_tx_interruptions_")).expect("series");
    assert!(series.ends_with("{} 1"), "{series}");
    assert!(stats.contains(&format!("# TYPE {} counter\n", series.trim_end_matches("{} 1"))), "{stats}");
    assert_eq!(tx_total(&stats), Some(1));

    let lines = h.audit_for("sqli-1");
    assert_eq!(lines.len(), 1, "one record per decision");
    let line = &lines[0];
    assert_eq!(line.vm, "envoyextensionpolicy/shop/block-sqli/wasm/0");
    assert_eq!(line.policy(), Some(("shop".into(), "block-sqli".into())));
    let ids = line.record.rule_ids();
    assert!(ids.contains(&949110) && ids.contains(&942100), "{ids:?}");
    assert_eq!(line.record.decision(), Some(Decision::Blocked));
    assert_eq!(line.record.transaction.response.status, 403);
    assert_eq!(line.record.transaction.producer.rule_engine, "On");
    // reqwest (the url crate) re-encodes `'` in a query as %27: the record carries what arrived.
    assert_eq!(line.record.transaction.request.uri, "/?id=1%27%20OR%20%271%27=%271");
    assert_eq!(line.record.transaction.request.method, "GET");
    let sqli = line.record.messages.iter().find(|m| m.data.id == 942100).expect("942100 message");
    assert_eq!(sqli.data.msg, "SQL Injection Attack Detected via libinjection");
    assert_eq!(sqli.data.severity, 2);
    h.proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_same_sqli_in_detection_only_is_forwarded_and_counted_as_would_block() {
    let h = start(Faults::default()).await;
    h.proxy.attach(policy("detect.example", "detect-sqli", Mode::DetectionOnly)).await.expect("attach");
    let (status, body) = h.send("detect.example", "GET", SQLI, "sqli-2", None).await;
    assert_eq!(status, 200);
    let echo: serde_json::Value = serde_json::from_str(&body).expect("echo JSON");
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/?id=1%27%20OR%20%271%27=%271");

    let stats = h.stats().await;
    assert_eq!(decision_value(&stats, "waf_filter_tx_would_block_ruleid_949110_phase_http_request_body_", "detect_sqli", "shop"), Some(1), "{stats}");
    assert!(!stats.contains("waf_filter_tx_interruptions_"), "{stats}");

    let lines = h.audit_for("sqli-2");
    assert_eq!(lines.len(), 1);
    let record = &lines[0].record;
    assert_eq!(record.decision(), Some(Decision::WouldBlock));
    assert!(!record.transaction.is_interrupted);
    assert_eq!(record.transaction.response.status, 200);
    assert_eq!(record.transaction.producer.rule_engine, "DetectionOnly");
    assert!(record.rule_ids().contains(&949110) && record.rule_ids().contains(&942100), "{:?}", record.rule_ids());
    h.proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn xss_in_the_query_is_audited_with_the_libinjection_xss_rule() {
    let h = start(Faults::default()).await;
    h.proxy.attach(policy("xss.example", "block-xss", Mode::On)).await.expect("attach");
    let (status, _) = h.send("xss.example", "GET", XSS, "xss-1", None).await;
    assert_eq!(status, 403);
    let lines = h.audit_for("xss-1");
    assert_eq!(lines.len(), 1);
    let ids = lines[0].record.rule_ids();
    assert!(ids.contains(&941100) && ids.contains(&949110), "{ids:?}");
    h.proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn sqli_in_a_form_body_or_a_json_body_is_blocked_in_the_body_phase() {
    let h = start(Faults::default()).await;
    h.proxy.attach(policy("form.example", "form", Mode::On)).await.expect("attach");
    let (status, _) = h.send("form.example", "POST", "/login", "form-1", Some(("application/x-www-form-urlencoded", "user=admin&pass=1'%20OR%20'1'='1"))).await;
    assert_eq!(status, 403);
    let (status, _) = h.send("form.example", "POST", "/api", "json-1", Some(("application/json", r#"{"user":"1' OR '1'='1"}"#))).await;
    assert_eq!(status, 403);
    let (status, _) = h.send("form.example", "POST", "/login", "form-ok", Some(("application/x-www-form-urlencoded", "user=alice&pass=secret"))).await;
    assert_eq!(status, 200);

    let form = h.audit_for("form-1");
    assert_eq!(form.len(), 1);
    assert!(form[0].record.rule_ids().contains(&942100), "{:?}", form[0].record.rule_ids());
    assert_eq!(form[0].record.transaction.request.body, "user=admin&pass=1'%20OR%20'1'='1");
    assert_eq!(h.audit_for("json-1").len(), 1);
    assert!(h.audit_for("form-ok").is_empty());
    let stats = h.stats().await;
    assert_eq!(decision_value(&stats, "waf_filter_tx_interruptions_ruleid_949110_phase_http_request_body_", "form", "shop"), Some(2), "{stats}");
    h.proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_benign_request_is_forwarded_and_counted_with_no_decision_and_no_audit_record() {
    let h = start(Faults::default()).await;
    h.proxy.attach(policy("benign.example", "benign", Mode::On)).await.expect("attach");
    let before = h.stats().await;
    assert!(!before.contains("waf_filter"), "no WAF series before traffic:\n{before}");
    let (status, body) = h.send("Benign.Example:8080", "GET", "/products?page=2", "ok-1", None).await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).expect("echo JSON");
    assert_eq!(echo["headers"]["x-waf-e2e-id"][0], "ok-1");

    let stats = h.stats().await;
    assert_eq!(tx_total(&stats), Some(1), "{stats}");
    assert!(!stats.contains("waf_filter_tx_interruptions") && !stats.contains("waf_filter_tx_would_block"), "{stats}");
    assert!(h.audit().is_empty());
    h.proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_unknown_host_gets_404_without_running_the_waf_and_a_detached_host_too() {
    let h = start(Faults::default()).await;
    h.proxy.attach(policy("known.example", "known", Mode::On)).await.expect("attach");
    assert_eq!(h.send("unknown.example", "GET", SQLI, "u-1", None).await.0, 404);
    h.proxy.detach("known.example").await;
    assert_eq!(h.send("known.example", "GET", SQLI, "u-2", None).await.0, 404);
    let stats = h.stats().await;
    assert_eq!(tx_total(&stats), None, "{stats}");
    assert!(h.audit().is_empty());
    h.proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_bad_directive_fails_attach_with_modsecuritys_complaint() {
    let h = start(Faults::default()).await;
    let mut bad = policy("bad.example", "bad", Mode::On);
    bad.crs = false;
    bad.directives = Some("SecRuleEngine On\nSecRuel ARGS \"@rx x\" \"id:1,deny\"\n".into());
    let err = format!("{:#}", h.proxy.attach(bad).await.expect_err("bad directive"));
    assert!(err.contains("SecRuel") || err.contains("syntax error"), "{err}");
    assert!(err.contains("shop/bad"), "{err}");
    assert_eq!(h.send("bad.example", "GET", "/", "b-1", None).await.0, 404, "nothing attached");
    h.proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn inline_directives_alone_decide_and_name_their_rule() {
    let h = start(Faults::default()).await;
    let mut p = policy("inline.example", "inline", Mode::DetectionOnly);
    p.crs = false;
    // The policy asks for DetectionOnly itself: the proxy's engine-On evaluation must still win.
    p.directives = Some("SecRuleEngine DetectionOnly\nSecRule REQUEST_HEADERS:X-Evil \"@streq yes\" \"id:10001,phase:1,deny,status:403,log,msg:'evil header'\"\n".into());
    p.extra_metric_labels = vec![("authority".into(), "inline.example".into())];
    h.proxy.attach(p).await.expect("attach");
    let url = format!("http://{}/", h.proxy.listen_addr());
    let resp = h.client.get(&url).header("host", "inline.example").header("x-evil", "yes").header("x-waf-e2e-id", "i-1").send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let stats = h.stats().await;
    let series = stats.lines().find(|l| l.starts_with("waf_filter_tx_would_block_ruleid_10001_phase_http_request_headers_")).expect("series");
    assert!(series.contains("policy_inline") && series.contains("namespace_shop") && series.contains("authority_inline_example"), "{series}");
    let lines = h.audit_for("i-1");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].record.rule_ids(), vec![10001]);
    assert_eq!(lines[0].record.messages[0].data.msg, "evil header");
    h.proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_double_count_fault_doubles_decision_counters_and_drop_audit_writes_nothing() {
    let h = start(Faults { double_count: true, drop_audit: true, ..Faults::default() }).await;
    h.proxy.attach(policy("fault.example", "fault", Mode::On)).await.expect("attach");
    assert_eq!(h.send("fault.example", "GET", SQLI, "f-1", None).await.0, 403);
    let stats = h.stats().await;
    assert_eq!(decision_value(&stats, "waf_filter_tx_interruptions_ruleid_949110_", "fault", "shop"), Some(2), "{stats}");
    assert_eq!(tx_total(&stats), Some(1), "transactions are not doubled");
    assert!(h.audit().is_empty());
    h.proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_exposition_is_envoys_plain_format_with_non_waf_stats_to_filter_out() {
    let h = start(Faults::default()).await;
    h.proxy.attach(policy("a.example", "block-sqli", Mode::On)).await.expect("attach");
    h.proxy.attach(policy("b.example", "detect-sqli", Mode::DetectionOnly)).await.expect("attach");
    h.send("a.example", "GET", SQLI, "e-1", None).await;
    h.send("b.example", "GET", SQLI, "e-2", None).await;
    h.send("b.example", "GET", "/fine", "e-3", None).await;
    let stats = h.stats().await;

    let type_line = Regex::new(r"^# TYPE ([a-zA-Z_][a-zA-Z0-9_]*) (counter|gauge)$").expect("regex");
    let sample = Regex::new(r#"^([a-zA-Z_][a-zA-Z0-9_]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)?\} ([0-9]+)$"#).expect("regex");
    let mut typed = String::new();
    for line in stats.lines() {
        if let Some(c) = type_line.captures(line) {
            typed = c[1].to_string();
        } else if let Some(c) = sample.captures(line) {
            assert_eq!(&c[1], typed, "sample without its TYPE line: {line}");
        } else {
            panic!("line in neither Envoy form: {line:?}\n{stats}");
        }
    }
    assert!(stats.contains("waf_filter_tx_total{} 3\n"), "{stats}");
    assert!(stats.contains("envoy_server_live{} 1\n"), "{stats}");
    assert!(stats.contains("envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"http-10080\"} 3\n"), "{stats}");
    assert!(stats.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"httproute/shop/detect-sqli/rule/0\"} 2\n"), "{stats}");
    assert!(stats.contains("block_sqli") && !stats.contains("block-sqli"), "dash sanitised: {stats}");
    assert!(!stats.contains("envoy_waf_filter") && !stats.contains("waf_filter_tx_total_total"), "{stats}");
    h.proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn concurrent_decisions_each_leave_one_complete_audit_line() {
    let h = start(Faults::default()).await;
    h.proxy.attach(policy("busy.example", "busy", Mode::On)).await.expect("attach");
    let sends = (0..24).map(|i| {
        let id = format!("c-{i}");
        let h = &h;
        async move { h.send("busy.example", "GET", if i % 2 == 0 { SQLI } else { XSS }, &id, None).await.0 }
    });
    let statuses = futures::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 403), "{statuses:?}");
    let lines = h.audit();
    assert_eq!(lines.len(), 24);
    for i in 0..24 {
        assert_eq!(h.audit_for(&format!("c-{i}")).len(), 1, "c-{i}");
    }
    let stats = h.stats().await;
    assert_eq!(decision_value(&stats, "waf_filter_tx_interruptions_ruleid_949110_", "busy", "shop"), Some(24), "{stats}");
    h.proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_existing_audit_log_is_appended_to_not_truncated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("envoy.log");
    std::fs::write(&path, "[2026-06-04 21:22:33.123][1][info][main] earlier line\n").expect("seed");
    let proxy = ReferenceProxy::start(ProxyConfig { gateway: "web".into(), gateway_namespace: "gw".into(), audit_log: path.clone(), faults: Faults::default(), ports: Default::default() })
        .await
        .expect("start");
    assert_eq!(proxy.audit_log(), path.as_path());
    proxy.shutdown().await.expect("shutdown");
    assert!(std::fs::read_to_string(&path).expect("read").starts_with("[2026-06-04 21:22:33.123][1][info][main] earlier line\n"));
}

/// Sends raw bytes as one HTTP/1.1 request and returns the status line.
async fn raw_request(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut buf)).await.expect("the proxy answers and closes");
    String::from_utf8_lossy(&buf).lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn hostile_bytes_in_path_headers_and_body_get_an_answer_and_the_proxy_keeps_serving() {
    let h = start(Faults::default()).await;
    h.proxy.attach(policy("hostile.example", "hostile", Mode::DetectionOnly)).await.expect("attach");
    let addr = h.proxy.listen_addr();
    let requests: Vec<Vec<u8>> = vec![
        b"GET /%ff%c0%00/%3Cscript%3Ealert(1)%3C/script%3E?q=%ff%00'%20or%201=1-- HTTP/1.1\r\nHost: hostile.example\r\nx-waf-e2e-id: h-1\r\nConnection: close\r\n\r\n".to_vec(),
        [&b"POST /x HTTP/1.1\r\nHost: hostile.example\r\nx-waf-e2e-id: h-2\r\nX-Bin: \xff\xfe<script>\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\nConnection: close\r\n\r\n"[..], b"a=\x00\xff'or 1=1"].concat(),
        b"POST /j HTTP/1.1\r\nHost: hostile.example\r\nx-waf-e2e-id: h-3\r\nContent-Type: application/json\r\nContent-Length: 8\r\nConnection: close\r\n\r\n{\"a\":[1,".to_vec(),
        b"FOO /x HTTP/1.1\r\nHost: hostile.example\r\nx-waf-e2e-id: h-4\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
    ];
    for bytes in requests {
        let status = raw_request(addr, &bytes).await;
        assert!(status.starts_with("HTTP/1.1 "), "no answer to {:?}: {status:?}", String::from_utf8_lossy(&bytes));
    }
    assert_eq!(h.send("hostile.example", "GET", "/still-alive", "h-5", None).await.0, 200);
    let lines = h.audit();
    let ids: Vec<_> = lines.iter().map(|l| (l.record.request_header("x-waf-e2e-id").map(str::to_string), l.record.rule_ids())).collect();
    let h1 = h.audit_for("h-1");
    assert_eq!(h1.len(), 1, "{ids:?}");
    assert_eq!(h1[0].record.decision(), Some(Decision::WouldBlock));
    h.proxy.shutdown().await.expect("shutdown");
}
