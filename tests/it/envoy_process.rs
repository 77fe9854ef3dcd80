//! A real Envoy 1.37.0 started and reconfigured the way the local stack does it.
//!
//! Needs the Envoy binary, found as the local stack finds it: `WAF_E2E_ENVOY`, the project's
//! `.tools/pip` install or PATH. A missing Envoy fails these tests; it never skips them.

use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use waf_e2e::envoy::{find_envoy, wasm_filters_from_extension_policy, EnvoyOptions, EnvoyProcess, ProxyLaunch, RouteSpec, WasmFilter};
use waf_e2e::error::InputLocation;
use waf_e2e::rendered::RenderedSet;
use waf_e2e::timeouts::Timeouts;
use waf_e2e::wait::{self, Check};


fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn envoy_binary() -> PathBuf {
    find_envoy(None).unwrap_or_else(|e| panic!("these tests need a real Envoy: {e:#}"))
}

/// Envoy started from the rendered EnvoyProxy of `fixtures/rendered`, in `run`.
async fn start(run: &Path, extra_clusters: Vec<(String, SocketAddr)>) -> EnvoyProcess {
    let set = RenderedSet::load(root().join("fixtures/rendered")).unwrap();
    let doc = set.documents.iter().find(|d| d.kind == "EnvoyProxy").unwrap();
    let launch = ProxyLaunch::from_envoyproxy(doc, run).unwrap_or_else(|e| panic!("{e}"));
    start_with(run, launch, extra_clusters).await
}

async fn start_with(run: &Path, launch: ProxyLaunch, extra_clusters: Vec<(String, SocketAddr)>) -> EnvoyProcess {
    let opts = EnvoyOptions {
        launcher: waf_e2e::envoy::EnvoyLauncher::Binary(envoy_binary()),
        run_dir: run.to_path_buf(),
        launch,
        service_cluster: "waf-e2e/waf-e2e-gw".into(),
        service_node: "envoy-waf-e2e-gw-0".into(),
        listener_name: "waf-e2e/waf-e2e-gw/http".into(),
        extra_clusters,
        timeouts: Timeouts::default(),
        ports: None,
    };
    EnvoyProcess::start(opts).await.unwrap_or_else(|e| panic!("{e:#}"))
}

/// An HTTP backend answering 200 `backend` to everything, on a free loopback port.
async fn backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { "backend" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// One request through the gateway on a fresh connection (a listener update drains old ones).
async fn get(envoy: &EnvoyProcess, host: &str, id: &str) -> reqwest::StatusCode {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(10)).build().unwrap();
    let url = format!("http://{}/anything", envoy.gateway_addr());
    client.get(url).header("host", host).header("x-waf-e2e-id", id).send().await.unwrap().status()
}

async fn prometheus_text(envoy: &EnvoyProcess) -> String {
    let url = format!("http://{}/stats/prometheus", envoy.metrics_addr().expect("the metrics listener"));
    let resp = reqwest::get(&url).await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.text().await.unwrap()
}

fn process_exists(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

fn counter_filter(policy: &str, config: serde_json::Value, module: &Path) -> Vec<WasmFilter> {
    let doc = json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyExtensionPolicy",
        "metadata": {"name": policy, "namespace": "shop"},
        "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "web"}],
            "wasm": [{"name": policy, "rootID": "", "failOpen": false, "code": {"type": "Image", "image": {"url": "example/counter:1"}},
                      "config": config}]},
    });
    let at = InputLocation { file: PathBuf::from("test-policy.yaml"), line: 1, column: 0 };
    wasm_filters_from_extension_policy(&doc, &at, module).unwrap_or_else(|e| panic!("{e}"))
}

fn counter_module(cache: &Path) -> PathBuf {
    let source = std::fs::read_to_string(root().join("tests/fixtures/external-filter/counter.c")).unwrap();
    waf_e2e::filter::build::compile_c_module("counter", &source, cache).unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_starts_serves_its_own_stats_on_the_metrics_listener_and_stops_without_a_trace() {
    let run = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let waf_service: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let envoy = start(run.path(), vec![("waf_e2e_reference_waf".into(), waf_service)]).await;
    eprintln!("MEASURE envoy start to ready: {:?}", started.elapsed());
    assert_eq!(envoy.version(), "1.37.0");
    let text = prometheus_text(&envoy).await;
    let lines = text.lines().filter(|l| !l.starts_with('#')).count();
    assert!(lines > 200, "Envoy's own stats: {lines} samples");
    assert!(text.contains("envoy_server_live{} 1"), "{}", &text[..text.len().min(2000)]);
    // Only GET /stats/prometheus is forwarded to admin, as in Envoy Gateway's bootstrap.
    let other = reqwest::get(format!("http://{}/stats", envoy.metrics_addr().unwrap())).await.unwrap();
    assert_eq!(other.status(), 404);
    assert_eq!(get(&envoy, "nothing.example", "r0").await, 404, "no routes yet");
    assert_eq!(envoy.counter("cluster.waf_e2e_reference_waf.membership_total").await.unwrap(), Some(1), "the caller's static cluster");
    assert_eq!(envoy.counter("cluster.no_such_cluster.membership_total").await.unwrap(), None);
    let pid = envoy.pid().expect("Envoy runs as a child process");
    assert!(process_exists(pid));
    envoy.stop().await.unwrap();
    assert!(!process_exists(pid), "Envoy (pid {pid}) still runs after stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_filter_counts_and_logs_each_request_and_routes_change_without_a_restart() {
    let run = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let module = counter_module(cache.path());
    let envoy = start(run.path(), vec![]).await;
    let pid = envoy.pid().expect("Envoy runs as a child process");
    let backend = backend().await;
    let filters = counter_filter("counter-policy", json!({"mode": "count"}), &module);
    let route_a = RouteSpec { name: "httproute/shop/a/rule/0".into(), host: "a.example".into(), backend, wasm: filters.clone() };

    let t = Instant::now();
    envoy.set_routes(std::slice::from_ref(&route_a)).await.unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("MEASURE set_routes with a wasm filter: {:?}", t.elapsed());
    assert_eq!(get(&envoy, "a.example", "req-a-1").await, 200);
    let answered = Instant::now();
    assert_eq!(get(&envoy, "unrouted.example", "req-x").await, 404);
    let text = prometheus_text(&envoy).await;
    assert!(text.lines().any(|l| l == "external_filter_requests{} 1"), "{}",
        text.lines().filter(|l| l.contains("external_filter")).collect::<Vec<_>>().join("\n"));
    // Admin names a filter's counter with Envoy's internal `wasmcustom.` prefix; the exposition drops it.
    assert_eq!(envoy.counter("wasmcustom.external_filter.requests").await.unwrap(), Some(1));

    // A second route, without the filter: applied in place, and the filter runs only on its own route.
    let route_b = RouteSpec { name: "httproute/shop/b/rule/0".into(), host: "b.example".into(), backend, wasm: vec![] };
    let t = Instant::now();
    envoy.set_routes(&[route_a.clone(), route_b.clone()]).await.unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("MEASURE set_routes adding a route without a filter: {:?}", t.elapsed());
    assert_eq!(get(&envoy, "b.example", "req-b-1").await, 200);
    assert_eq!(get(&envoy, "a.example", "req-a-2").await, 200);
    let answered_2 = Instant::now();
    assert_eq!(envoy.pid(), Some(pid));
    envoy.health().unwrap();
    assert!(prometheus_text(&envoy).await.lines().any(|l| l == "external_filter_requests{} 2"), "b's request is not counted");

    // The plugin's log lines reach the --log-path file (Envoy flushes it every 10 s).
    let log = envoy.launch().log_path.clone().unwrap();
    let prefix = filters[0].log_prefix();
    assert_eq!(prefix, "wasm log counter-policy envoyextensionpolicy/shop/counter-policy/wasm/0: ");
    let wait_line = |id: &'static str| {
        let log = log.clone();
        async move {
            wait::until(&format!("the filter's log line for {id} in the --log-path file"), Duration::from_secs(15), || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                async move {
                    Ok(match text.lines().find(|l| l.ends_with(&format!("request id={id}"))) {
                        Some(l) => Check::Met(l.to_string()),
                        None => Check::NotYet(format!("{} lines", text.lines().count())),
                    })
                }
            })
            .await
            .unwrap()
        }
    };
    let line = wait_line("req-a-1").await;
    eprintln!("MEASURE first log line in the file {:?} after its request was answered: {line}", answered.elapsed());
    assert!(line.contains("[info][wasm]") && line.ends_with(&format!("{prefix}external_filter request id=req-a-1")), "{line}");
    let line = wait_line("req-a-2").await;
    eprintln!("MEASURE a later log line in the file {:?} after its request was answered", answered_2.elapsed());
    assert!(line.ends_with(&format!("{prefix}external_filter request id=req-a-2")), "{line}");

    // A configuration the plugin refuses: Envoy keeps the previous one and the error says why.
    let bad = RouteSpec { wasm: counter_filter("bad-policy", json!({"mode": "reject"}), &module), ..route_b.clone() };
    let err = format!("{:#}", envoy.set_routes(&[route_a.clone(), bad]).await.unwrap_err());
    assert!(err.contains("refused lds.json") && err.contains("bad-policy"), "{err}");
    eprintln!("REJECTED: {err}");
    assert_eq!(get(&envoy, "a.example", "req-a-3").await, 200, "the previous configuration still serves");

    envoy.stop().await.unwrap();
    assert!(!process_exists(pid));
}

async fn flushes(envoy: &EnvoyProcess) -> u64 {
    envoy.counter("filesystem.flushed_by_timer").await.unwrap().unwrap_or(0)
}

async fn next_flush(envoy: &EnvoyProcess, after: u64) -> (u64, Instant) {
    wait::until("filesystem.flushed_by_timer to increase", Duration::from_secs(15), || async move {
        let now = flushes(envoy).await;
        Ok(if now > after { Check::Met((now, Instant::now())) } else { Check::NotYet(format!("{now}")) })
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flush_timer_keeps_counting_with_nothing_to_flush() {
    // The audit wait relies on this: an idle Envoy's flushed_by_timer still rises (within 15 s).
    // Envoy keeps a timer per open log file (the --log-path file and admin's access log), so the
    // counter may rise twice within one 10 s period; how far apart is measured, not asserted.
    let run = tempfile::tempdir().unwrap();
    let envoy = start(run.path(), vec![]).await;
    let first = flushes(&envoy).await;
    let (second, t1) = next_flush(&envoy, first).await;
    let (third, t2) = next_flush(&envoy, second).await;
    eprintln!("MEASURE flushed_by_timer idle: {first} -> {second} -> {third}, the last rise {:?} after the one before", t2 - t1);
    assert!(third > second && second > first);
    envoy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_logs_writes_a_filters_log_line_at_once_without_waiting_for_the_timer() {
    let run = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let module = counter_module(cache.path());
    let envoy = start(run.path(), vec![]).await;
    let backend = backend().await;
    let route = RouteSpec { name: "httproute/shop/a/rule/0".into(), host: "a.example".into(), backend, wasm: counter_filter("counter-policy", json!({"mode": "count"}), &module) };
    envoy.set_routes(&[route]).await.unwrap_or_else(|e| panic!("{e:#}"));
    let log = envoy.launch().log_path.clone().unwrap();
    let has_line = |id: &str| std::fs::read_to_string(&log).unwrap_or_default().lines().any(|l| l.ends_with(&format!("request id={id}")));
    // The first line a log file gets is written at once (its flush thread starts with it); later ones wait.
    assert_eq!(get(&envoy, "a.example", "req-flush-0").await, 200);
    wait::until("the first line in the log file", Duration::from_secs(15), || async { Ok(if has_line("req-flush-0") { Check::Met(()) } else { Check::NotYet("absent".into()) }) }).await.unwrap();
    assert_eq!(get(&envoy, "a.example", "req-flush-1").await, 200);
    // Without the call this line stays in Envoy's buffer until the 10 s timer.
    assert!(!has_line("req-flush-1"), "the line is in the file before any flush");
    let timer_before = flushes(&envoy).await;
    let t = Instant::now();
    let how = waf_e2e::envoy::log_flush::flush_now(envoy.admin(), Duration::from_secs(5)).await.unwrap_or_else(|e| panic!("{e:#}"));
    let took = t.elapsed();
    eprintln!("MEASURE POST /reopen_logs put the filter's line in the file {took:?} after the call");
    assert!(how.contains("/reopen_logs"), "{how}");
    assert!(has_line("req-flush-1"), "the filter's line is not in {} after flush_now", log.display());
    assert_eq!(flushes(&envoy).await, timer_before, "Envoy's timer flushed meanwhile: this run proves nothing");
    envoy.stop().await.unwrap();
}

/// The fixture EnvoyProxy with `spec.telemetry` added, translated for `run`.
fn launch_with_telemetry(run: &Path, telemetry: serde_json::Value) -> ProxyLaunch {
    let set = RenderedSet::load(root().join("fixtures/rendered")).unwrap();
    let mut doc = set.documents.into_iter().find(|d| d.kind == "EnvoyProxy").unwrap();
    doc.value["spec"]["telemetry"] = telemetry;
    ProxyLaunch::from_envoyproxy(&doc, run).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stats_matcher_from_the_envoyproxy_leaves_only_the_stats_it_includes() {
    let run = tempfile::tempdir().unwrap();
    let launch = launch_with_telemetry(run.path(), json!({"metrics": {"matches": [{"type": "Prefix", "value": "server."}]}}));
    let envoy = start_with(run.path(), launch, vec![]).await;
    let text = prometheus_text(&envoy).await;
    let names: std::collections::BTreeSet<&str> =
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    assert!(names.contains("envoy_server_live"), "{names:?}");
    let others: Vec<&&str> = names.iter().filter(|n| !n.starts_with("envoy_server_")).collect();
    assert!(others.is_empty(), "stats outside the inclusion list: {others:?}");
    // The lds/cds stats are hidden now: updates are still confirmed (from /config_dump), refusals too.
    assert_eq!(envoy.counter("listener_manager.lds.update_success").await.unwrap(), None);
    let backend = backend().await;
    let route = RouteSpec { name: "httproute/shop/a/rule/0".into(), host: "a.example".into(), backend, wasm: vec![] };
    envoy.set_routes(std::slice::from_ref(&route)).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(get(&envoy, "a.example", "a").await, 200);
    let missing_module = counter_filter("p", json!({}), &run.path().join("missing.wasm"));
    let err = format!("{:#}", envoy.set_routes(&[RouteSpec { wasm: missing_module, ..route }]).await.unwrap_err());
    assert!(err.contains("Envoy refused lds.json") && !err.contains("no reason in /config_dump"), "{err}");
    envoy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoyproxy_that_disables_prometheus_gets_no_metrics_listener() {
    let run = tempfile::tempdir().unwrap();
    let launch = launch_with_telemetry(run.path(), json!({"metrics": {"prometheus": {"disable": true}}}));
    let envoy = start_with(run.path(), launch, vec![]).await;
    assert_eq!(envoy.metrics_addr(), None);
    let listeners = envoy.counter("listener_manager.total_listeners_active").await.unwrap();
    assert_eq!(listeners, Some(1), "only the gateway listener");
    envoy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_that_dies_is_reported_with_its_exit_status_and_log_and_drop_reaps_it() {
    let run = tempfile::tempdir().unwrap();
    let envoy = start(run.path(), vec![]).await;
    let pid = envoy.pid().expect("Envoy runs as a child process");
    envoy.health().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let err = wait::until("health to report the exit", Duration::from_secs(5), || async {
        Ok(match envoy.health() {
            Ok(()) => Check::NotYet("still healthy".into()),
            Err(e) => Check::Met(format!("{e:#}")),
        })
    })
    .await
    .unwrap();
    assert!(err.contains(&format!("Envoy (pid {pid}) exited")) && err.contains("SIGKILL") && err.contains("envoy.stderr.log"), "{err}");
    let routes = [RouteSpec { name: "httproute/shop/a/rule/0".into(), host: "a".into(), backend: "127.0.0.1:9".parse().unwrap(), wasm: vec![] }];
    let update = format!("{:#}", envoy.set_routes(&routes).await.unwrap_err());
    assert!(update.contains("exited"), "{update}");

    let run = tempfile::tempdir().unwrap();
    let dropped = start(run.path(), vec![]).await.pid().expect("Envoy runs as a child process");
    assert!(!process_exists(dropped), "a dropped EnvoyProcess leaves no process (pid {dropped})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_route_updates_are_applied_one_after_the_other() {
    let run = tempfile::tempdir().unwrap();
    let envoy = start(run.path(), vec![]).await;
    let backend = backend().await;
    let route = |n: &str| RouteSpec { name: format!("httproute/shop/{n}/rule/0"), host: format!("{n}.example"), backend, wasm: vec![] };
    let (a, b) = (vec![route("a")], vec![route("a"), route("b")]);
    let (ra, rb) = tokio::join!(envoy.set_routes(&a), envoy.set_routes(&b));
    ra.unwrap();
    rb.unwrap();
    let served_b = get(&envoy, "b.example", "b").await;
    assert_eq!(get(&envoy, "a.example", "a").await, 200);
    // Whichever update ran last is the configuration in force, whole.
    let applied = envoy.admin().stats(r"^listener_manager\.lds\.version_text$").await.unwrap();
    assert_eq!(applied["listener_manager.lds.version_text"], "3", "two updates after the initial version 1");
    assert!(served_b == 200 || served_b == 404, "{served_b}");
    envoy.stop().await.unwrap();
}

/// Why traffic must use a fresh connection per request (the runner's concern): a listener update
/// leaves connections opened before it on the previous configuration until they close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_before_an_update_serves_its_next_request_with_the_old_routes_then_closes() {
    let run = tempfile::tempdir().unwrap();
    let envoy = start(run.path(), vec![]).await;
    let backend = backend().await;
    let route = |n: &str| RouteSpec { name: format!("httproute/shop/{n}/rule/0"), host: format!("{n}.example"), backend, wasm: vec![] };
    envoy.set_routes(&[route("a")]).await.unwrap();
    let pooled = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
    let url = format!("http://{}/x", envoy.gateway_addr());
    let send = |host: &'static str| {
        let request = pooled.get(&url).header("host", host).send();
        async move {
            let r = request.await.unwrap();
            let close = r.headers().get("connection").is_some_and(|v| v == "close");
            (r.status().as_u16(), close)
        }
    };
    assert_eq!(send("a.example").await, (200, false));
    envoy.set_routes(&[route("a"), route("b")]).await.unwrap();
    assert_eq!(send("b.example").await, (404, true), "the old connection still has the routes before the update");
    assert_eq!(send("b.example").await, (200, false), "a new connection has the new routes");
    assert_eq!(get(&envoy, "b.example", "fresh").await, 200);
    envoy.stop().await.unwrap();
}
