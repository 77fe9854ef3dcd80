//! The conventions of the command line that need no stack: usage errors for senseless flags, `list`
//! and tags, `plan` per stack, and `doctor` staying offline unless asked.

use std::process::{Command, Output};

use crate::binary;
use binary::waf_e2e;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `args` and asserts exit 2 with `needle` in stderr; the run must not have begun.
fn usage_error(args: &[&str], needle: &str) {
    let out = waf_e2e(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: expected {needle:?} in: {err}");
    assert!(!err.contains("scenario(s) on the"), "the run must not have begun: {err}");
}

#[test]
fn zero_jobs_and_a_zero_scrape_interval_are_usage_errors_for_run_and_plan() {
    for command in ["run", "plan"] {
        usage_error(&[command, "--stack", "local", "--jobs", "0"], "--jobs");
        usage_error(&[command, "--stack", "local", "--scrape-interval-ms", "0"], "--scrape-interval-ms");
    }
}

#[test]
fn a_scrape_interval_longer_than_the_wait_for_a_scrape_is_a_usage_error() {
    usage_error(&["run", "--stack", "local", "--scrape-interval-ms", "60000"], "must be shorter");
    // The same flags with a sensible interval get past the check (plan takes no action).
    let out = waf_e2e(&["plan", "--stack", "local", "--scrape-interval-ms", "1000"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn flags_of_another_stack_are_usage_errors() {
    usage_error(&["run", "--stack", "local", "--kubeconfig", "/nonexistent"], "--kubeconfig only apply to a cluster");
    usage_error(&["run", "--stack", "local", "--reuse", "waf-e2e-1"], "--reuse");
    usage_error(&["run", "--stack", "kind", "--waf-wasm", "f.wasm", "--envoy", "/usr/bin/envoy"], "--envoy, --waf-wasm only apply to the local stack");
    usage_error(&["plan", "--stack", "local", "--waf-wasm", "f.wasm", "--waf-flavour", "coraza"], "--waf-flavour coraza: not a filter flavour");
    usage_error(&["run", "--stack", "local", "--gateway-url", "http://127.0.0.1:1"], "only apply to `--stack endpoints`");
    usage_error(&["run", "--stack", "endpoints", "--audit-file", "a", "--audit-command", "cat a"], "cannot be used with");
    usage_error(&["run", "--stack", "endpoints", "--keep"], "nothing to keep");
    usage_error(&["run", "--stack", "kind", "--runtime", "docker"], "--runtime docker only apply to the local stack");
    usage_error(&["run", "--stack", "local", "--envoy-image", "e:1"], "--envoy-image only apply to `--runtime docker`");
    usage_error(&["run", "--stack", "local", "--runtime", "docker", "--envoy", "/usr/bin/envoy"], "with `--runtime docker` pass --envoy-image");
    usage_error(&["up", "--waf-wasm", "f.wasm", "--waf-flavour", "coraza"], "--waf-flavour coraza: not a filter flavour");
    usage_error(&["watch", "--prometheus-image", "p:1"], "--prometheus-image only apply to `--runtime docker`");
    for flag in [&["--runtime", "docker"][..], &["--waf-wasm", "f.wasm"], &["--envoy", "/bin/envoy"], &["--audit-flush", "timer"], &["--scrape-interval-ms", "250"]] {
        let mut args = vec!["run", "--attach"];
        args.extend_from_slice(flag);
        usage_error(&args, "an attached run uses the stack `waf-e2e up` started; give them to `up`");
    }
}

#[test]
fn plan_of_the_docker_runtime_names_the_images_the_network_and_the_loopback_ports() {
    let out = waf_e2e(&["plan", "--stack", "local", "--scenario", "sqli-blocked", "--runtime", "docker", "--envoy-image", "my/envoy:1"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for step in ["1. create the private Docker network", "start Envoy 1.37.0 as a container of my/envoy:1", "published on 127.0.0.1",
        "start Prometheus as a container of quay.io/prometheus/prometheus:v3.5.0", "echo backend on the Docker network's gateway address", "remove both containers and the network"] {
        assert!(text.contains(step), "{step:?} missing:\n{text}");
    }
}

#[test]
fn the_endpoints_stack_without_its_flags_names_every_missing_one() {
    usage_error(&["run", "--stack", "endpoints"], "--gateway-url URL, --prometheus-url URL, --scrape-job JOB, --gateway NAME, --policy-namespace NS, --audit-file PATH or --audit-command CMD");
}

#[test]
fn one_fixed_route_host_for_several_endpoints_scenarios_is_a_usage_error() {
    let endpoints = ["--stack", "endpoints", "--gateway-url", "http://127.0.0.1:8080", "--prometheus-url", "http://127.0.0.1:9090", "--scrape-job", "envoy",
        "--audit-file", "envoy.log", "--gateway", "edge", "--policy-namespace", "shop", "--route-host", "shop.example"];
    let mut args = vec!["plan", "--tag", "isolation"];
    args.extend(endpoints);
    usage_error(&args, "gives all 2 selected scenarios the same route");
    let mut args = vec!["plan", "--scenario", "xss-blocked"];
    args.extend(endpoints);
    assert_eq!(waf_e2e(&args).status.code(), Some(0));
}

#[test]
fn an_unknown_report_format_is_a_usage_error() {
    usage_error(&["run", "--stack", "local", "--report", "xml", "r.xml"], "the formats are `json` and `junit`");
    usage_error(&["run", "--stack", "local", "--junit", "r.xml", "--report", "json", "r.xml"], "two reports would be written to r.xml");
}

#[test]
fn list_shows_every_scenario_with_its_tags_and_needs() {
    let out = waf_e2e(&["list"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let files = waf_e2e::input::yaml_files(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"))).unwrap().len();
    assert_eq!(text.lines().count(), files + 1, "a header and one line per scenario: {text}");
    let line = |name: &str| text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} missing: {text}")).to_string();
    let detection = line("sqli-detection-only");
    assert!(detection.contains("sqli,detection-only,crs") && detection.contains("would_block_counter,audit_log"), "{detection}");
    assert!(line("benign-traffic").trim_end().ends_with("alone"), "{text}");
}

#[test]
fn list_selects_by_tag_and_excludes_by_tag() {
    let names = |args: &[&str]| -> Vec<String> {
        let out = waf_e2e(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        stdout(&out).lines().skip(1).map(|l| l.split_whitespace().next().unwrap_or("").to_string()).collect()
    };
    assert_eq!(names(&["list", "--tag", "xss"]), ["xss-blocked"]);
    assert_eq!(names(&["list", "--tag", "xss", "--tag", "detection-only"]), ["sqli-detection-only", "xss-blocked"]);
    let sqli_blocking = names(&["list", "--tag", "sqli", "--exclude-tag", "detection-only", "--exclude-tag", "isolation"]);
    assert_eq!(sqli_blocking, ["dashed-name", "get-vs-post-phase", "sqli-blocked", "sqli-post-body-blocked"]);
    usage_error(&["list", "--tag", "no-such-tag"], "no scenario matches --tag no-such-tag");
}

#[test]
fn run_selects_by_tag_as_list_does() {
    // `plan` takes run's flags and selection without starting anything.
    let out = waf_e2e(&["plan", "--stack", "local", "--tag", "blocking", "--exclude-tag", "sqli"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let scenarios: Vec<&str> = text.lines().filter_map(|l| l.split("scenario ").nth(1)).filter_map(|l| l.split(':').next()).collect();
    assert_eq!(scenarios, ["inline-rule-headers", "xss-blocked"], "{text}");
}

#[test]
fn plan_of_the_local_stack_describes_the_local_steps_not_the_kind_plan() {
    let out = waf_e2e(&["plan", "--stack", "local", "--scenario", "sqli-blocked"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for step in ["reference WAF service", "stand-in filter", "start Envoy 1.37.0 configured from the rendered EnvoyProxy", "translation of PodMonitor tigera-prometheus/",
        "scenario sqli-blocked: add a route for Host sqli-blocked.waf-e2e.test and WAF policy waf-e2e-sqli-blocked/waf-sqli-blocked (On, CRS)", "send 5 request(s)", "teardown"] {
        assert!(text.contains(step), "{step:?} missing:\n{text}");
    }
    assert!(!text.contains("kind cluster") && !text.contains("server-side apply"), "{text}");
    // With the user's filter, the plan loads it instead of building the stand-in, and skips what the profile's filter cannot do.
    let out = waf_e2e(&["plan", "--stack", "local", "--waf-wasm", "coraza.wasm", "--profile", "oss", "--scenario", "sqli-*"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(text.contains("load the WAF filter coraza.wasm (flavour `coraza-proxy-wasm-release`; capabilities of profile oss)"), "{text}");
    assert!(!text.contains("stand-in") && text.contains("scenario sqli-detection-only: SKIPPED, the local stack lacks would_block_counter"), "{text}");
    let kind = stdout(&waf_e2e(&["plan", "--stack", "kind", "--scenario", "sqli-blocked"]));
    assert!(kind.contains("create kind cluster"), "the kind plan is still the kind plan: {kind}");
}

#[test]
fn plan_of_the_endpoints_stack_says_it_installs_nothing() {
    let out = waf_e2e(&["plan", "--stack", "endpoints", "--scenario", "sqli-detection-only", "--gateway-url", "http://127.0.0.1:8080", "--prometheus-url", "http://127.0.0.1:9090",
        "--scrape-job", "envoy", "--audit-command", "docker logs envoy 2>&1", "--gateway", "edge", "--policy-namespace", "shop", "--capability", "blocking"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(text.contains("read the audit log from command `docker logs envoy 2>&1`"), "{text}");
    assert!(text.contains("scenario sqli-detection-only: SKIPPED, the deployment lacks would_block_counter, audit_log"), "{text}");
    let out = waf_e2e(&["plan", "--stack", "endpoints", "--scenario", "sqli-blocked", "--gateway-url", "http://127.0.0.1:8080", "--prometheus-url", "http://127.0.0.1:9090",
        "--scrape-job", "envoy", "--audit-file", "/var/log/envoy.log", "--gateway", "edge", "--policy-namespace", "shop", "--route-host", "{scenario}.shop.example"]);
    let text = stdout(&out);
    assert!(text.contains("install nothing; WAF policy shop/waf-sqli-blocked (On, CRS) must already be attached to a route for Host sqli-blocked.shop.example on Gateway shop/edge"), "{text}");
}

/// A loopback "proxy" counting the connections made to it, so a test sees whether anything went online.
struct CountingProxy {
    addr: std::net::SocketAddr,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingProxy {
    fn start() -> CountingProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = connections.clone();
        // Refuses every request by closing it; the thread ends with the test process.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(conn);
            }
        });
        CountingProxy { addr, connections }
    }

    fn doctor(&self, args: &[&str]) -> Output {
        let cache = tempfile::tempdir().unwrap();
        let proxy = format!("http://{}", self.addr);
        Command::new(env!("CARGO_BIN_EXE_waf-e2e"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("XDG_CACHE_HOME", cache.path())
            .env("HTTPS_PROXY", &proxy)
            .env("HTTP_PROXY", &proxy)
            .env("ALL_PROXY", &proxy)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .expect("run waf-e2e doctor")
    }
}

#[test]
fn doctor_stays_offline_unless_online_is_given() {
    let proxy = CountingProxy::start();
    let out = proxy.doctor(&["doctor", "--stack", "kind"]);
    let text = stdout(&out);
    assert_eq!(proxy.connections.load(std::sync::atomic::Ordering::SeqCst), 0, "doctor went online without --online:\n{text}");
    assert!(text.contains("the network was not checked: `waf-e2e doctor --online` does"), "{text}");
    let out = proxy.doctor(&["doctor", "--stack", "kind", "--online"]);
    assert!(proxy.connections.load(std::sync::atomic::Ordering::SeqCst) > 0, "--online asked nothing:\n{}", stdout(&out));
}

#[test]
fn a_malformed_or_repeated_tag_is_invalid_input_located_by_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tags.yaml");
    std::fs::write(&file, "name: ok\ntags: [SQLi, xss, xss]\npolicy:\n  name: p\n  mode: On\n  rules:\n    crs: true\ntraffic:\n  - name: a\n    path: /\n    expect_status: 200\nexpect:\n  no_decisions: true\n").unwrap();
    let out = waf_e2e(&["validate", file.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let file = file.display();
    assert!(err.contains(&format!("{file}:2:8: field `tags[0]`: `SQLi` is not a tag")), "{err}");
    assert!(err.contains(&format!("{file}:2:19: field `tags[2]`: `xss` is listed twice")), "{err}");
}
