//! The Prometheus child process starts, fails fast, and never outlives its owner.

use std::time::{Duration, Instant};
use waf_e2e::prometheus::PrometheusProcess;
use waf_e2e::timeouts::Timeouts;

const MINIMAL: &str = "global:\n  scrape_interval: 1s\nscrape_configs: []\n";

fn alive(pid: u32) -> bool {
    // A reaped child has no /proc entry (a zombie would still have one, in state Z).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false)
}

#[tokio::test]
async fn prometheus_starts_answers_and_stops_without_leaving_a_process() {
    let prom = PrometheusProcess::start(MINIMAL, &Timeouts::default()).await.unwrap();
    let pid = prom.pid().unwrap();
    assert!(prom.url().starts_with("http://127.0.0.1:"));
    let build = reqwest::get(format!("{}/api/v1/status/buildinfo", prom.url())).await.unwrap();
    assert!(build.status().is_success());
    assert!(alive(pid));
    prom.stop().await.unwrap();
    assert!(!alive(pid), "pid {pid} still running after stop");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} not reaped");
}

#[tokio::test]
async fn dropping_the_handle_kills_and_reaps_prometheus_even_in_a_panicking_test() {
    let prom = PrometheusProcess::start(MINIMAL, &Timeouts::default()).await.unwrap();
    let pid = prom.pid().unwrap();
    let dir = prom.dir().to_path_buf();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _owned = prom;
        panic!("a failing assertion while Prometheus runs");
    }));
    assert!(panicked.is_err());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} survived the panic");
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
}

#[tokio::test]
async fn an_invalid_config_fails_at_once_with_prometheus_own_words() {
    let started = Instant::now();
    let timeouts = Timeouts { prometheus_ready: Duration::from_secs(30), ..Timeouts::default() };
    let err = PrometheusProcess::start("scrape_configs:\n  - job_name: x\n    scrape_interval: forever\n", &timeouts)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(started.elapsed() < Duration::from_secs(10), "waited {:?} for a process that had exited", started.elapsed());
    assert!(msg.contains("exited"), "{msg}");
    assert!(msg.contains("forever"), "the log tail names the bad value: {msg}");
}
