//! `--stack endpoints` end to end on loopback: a deployment the harness did not start, played by a
//! small HTTP server of this test (the gateway with a WAF that blocks `x-attack: yes`, its raw
//! counters on `/stats/prometheus`, its audit log in a file) and a real Prometheus scraping it with
//! the shipped PodMonitor's translation. The harness binary asserts it like any stack.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use waf_e2e::audit::AuditRecord;
use waf_e2e::contract::{sanitize, CORRELATION_HEADER};
use waf_e2e::prometheus::PrometheusProcess;
use waf_e2e::rendered::{render_scrape_config, PodTarget, RenderedSet};
use waf_e2e::timeouts::Timeouts;

const GATEWAY: &str = "edge";
const GATEWAY_NAMESPACE: &str = "edge-system";
const POLICY_NAMESPACE: &str = "shop";
const POLICY: &str = "waf-endpoints";
const SCENARIO: &str = "endpoints-blocked";

/// The deployment's state: counters, and whether its filter writes audit records.
struct Deployment {
    transactions: u64,
    interruptions: u64,
    audit_log: PathBuf,
    writes_audit: bool,
}

type Shared = Arc<Mutex<Deployment>>;

/// The raw counters as Envoy prints the WAF filter's stats (design 1.1).
async fn stats(State(d): State<Shared>) -> String {
    let d = d.lock().unwrap();
    let blocked = format!("waf_filter_tx_interruptions_ruleid_100001_phase_http_request_headers_policy_{}_namespace_{POLICY_NAMESPACE}", sanitize(POLICY));
    format!("# TYPE waf_filter_tx_total counter\nwaf_filter_tx_total{{}} {}\n# TYPE {blocked} counter\n{blocked}{{}} {}\n", d.transactions, d.interruptions)
}

/// The gateway: the policy is deployed on the scenario's host and blocks `x-attack: yes` in phase 1.
async fn gateway(State(d): State<Shared>, headers: HeaderMap, uri: axum::http::Uri) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut d = d.lock().unwrap();
    d.transactions += 1;
    if header("host") != format!("{SCENARIO}.waf-e2e.test") || header("x-attack") != "yes" {
        return StatusCode::OK;
    }
    d.interruptions += 1;
    if d.writes_audit {
        let record: AuditRecord = serde_json::from_value(serde_json::json!({
            "transaction": {
                "is_interrupted": true,
                "request": { "method": "GET", "uri": uri.to_string(), "headers": { CORRELATION_HEADER: [header(CORRELATION_HEADER)] } },
                "response": { "status": 403 },
                "producer": { "connector": "endpoints-test", "rule_engine": "On" }
            },
            "messages": [{ "message": "attack header", "data": { "id": 100001, "msg": "attack header" } }]
        }))
        .unwrap();
        // The line as Envoy 1.37.0 writes a plugin's log (see tests/fixtures/envoy-1.37.0-audit.log).
        let line = format!(
            "[2026-12-01 21:12:57.492][7][info][wasm] [source/extensions/common/wasm/context.cc:1150] wasm log {POLICY} envoyextensionpolicy/{POLICY_NAMESPACE}/{POLICY}/wasm/0: AuditLog:{}",
            serde_json::to_string(&record).unwrap()
        );
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(&d.audit_log).unwrap();
        writeln!(file, "{line}").unwrap();
    }
    StatusCode::FORBIDDEN
}

fn scenario_file(dir: &Path) -> PathBuf {
    let path = dir.join("scenario.yaml");
    std::fs::write(&path, format!("name: {SCENARIO}
policy:
  name: {POLICY}
  mode: On
  rules:
    directives: |
      SecRule REQUEST_HEADERS:X-Attack \"@streq yes\" \"id:100001,phase:1,deny,status:403,log\"
traffic:
  - name: flagged
    path: /cart
    headers:
      x-attack: \"yes\"
    repeat: 2
    expect_status: 403
  - name: plain
    path: /cart
    expect_status: 200
expect:
  decisions:
    - decision: blocked
      labels:
        rule_id: \"100001\"
        phase: http_request_headers
      increase: 2
  audit:
    - request: flagged
      decision: blocked
      rule_ids: [100001]
")).unwrap();
    path
}

/// Serves the deployment and a Prometheus scraping it, runs the harness against them, returns (exit code, stdout, JSON report).
/// The audit log is read from the file, or through `cat` when `via_command`.
async fn run_against_deployment(writes_audit: bool, via_command: bool) -> (Option<i32>, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let audit_log = dir.path().join("envoy.log");
    std::fs::write(&audit_log, "[2026-12-01 00:00:00.000][1][info][main] starting envoy\n").unwrap();
    let state: Shared = Arc::new(Mutex::new(Deployment { transactions: 0, interruptions: 0, audit_log: audit_log.clone(), writes_audit }));
    let app = axum::Router::new().route("/stats/prometheus", axum::routing::get(stats)).fallback(gateway).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let rendered = RenderedSet::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/rendered")).unwrap();
    let target = PodTarget::envoy_gateway_proxy(addr.to_string(), GATEWAY, GATEWAY_NAMESPACE);
    let config = render_scrape_config(&rendered.podmonitor, &target, Duration::from_millis(250)).unwrap();
    let prometheus = PrometheusProcess::start(&config, &Timeouts::default()).await.expect("start Prometheus");

    let report = dir.path().join("report.json");
    let (audit_flag, audit_source) = match via_command {
        false => ("--audit-file", audit_log.display().to_string()),
        true => ("--audit-command", format!("cat '{}'", audit_log.display())),
    };
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_waf-e2e"))
        .args(["run", "--stack", "endpoints", "--scenarios", scenario_file(dir.path()).to_str().unwrap(),
            "--gateway-url", &format!("http://{addr}"), "--prometheus-url", prometheus.url(), "--scrape-job", &rendered.podmonitor.job_name(0),
            audit_flag, &audit_source, "--gateway", GATEWAY, "--gateway-namespace", GATEWAY_NAMESPACE,
            "--policy-namespace", POLICY_NAMESPACE, "--report", "json", report.to_str().unwrap(),
            "--diagnostics-dir", dir.path().join("diag").to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("run waf-e2e");
    prometheus.stop().await.expect("stop Prometheus");
    server.abort();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("no report ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)), serde_json::from_str(&text).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_deployment_is_asserted_through_its_endpoints() {
    let (code, output, report) = run_against_deployment(true, false).await;
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(report["stack"], "endpoints");
    assert_eq!(report["scenarios"][0]["verdict"], "passed", "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_can_come_from_a_command() {
    let (code, output, report) = run_against_deployment(true, true).await;
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(report["scenarios"][0]["verdict"], "passed", "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_that_writes_no_audit_record_fails_the_scenario() {
    let (code, output, report) = run_against_deployment(false, false).await;
    assert_eq!(code, Some(1), "{output}");
    let failures = report["scenarios"][0]["failures"].as_array().unwrap();
    let text: Vec<&str> = failures.iter().filter_map(|f| f.as_str()).collect();
    assert!(text.iter().any(|f| f.contains("flagged") && f.contains("audit")), "{text:#?}");
    // The counters were right: only the audit expectation fails.
    assert!(!text.iter().any(|f| f.starts_with("decision series")), "{text:#?}");
    // The raw counters in the failure's context come from the scrape URL Prometheus reports.
    assert!(text.iter().any(|f| f.contains("waf_filter_tx_interruptions_ruleid_100001_phase_http_request_headers_policy_waf_endpoints_namespace_shop{} 2")), "{text:#?}");
}
