//! `waf-e2e watch`: an edited scenario re-runs it, a broken PodMonitor fails and the restored one
//! passes, each with the time from the change to the verdict; Ctrl-C leaves no process behind.
#![cfg(feature = "reference-proxy")]

use crate::common;

use nix::sys::signal::Signal;
use std::time::Duration;
use waf_e2e::wait::{self, Check};

const BOUND: Duration = Duration::from_secs(90);

/// Waits until stdout holds `count` lines containing `needle`; returns the last such line.
async fn line_count(watch: &common::Harness, needle: &str, count: usize) -> String {
    wait::until(&format!("{count} stdout line(s) containing {needle:?}"), BOUND, || async {
        let lines: Vec<String> = watch.stdout().lines().filter(|l| l.contains(needle)).map(str::to_string).collect();
        Ok(if lines.len() >= count { Check::Met(lines[count - 1].clone()) } else { Check::NotYet(format!("{} so far", lines.len())) })
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", watch.stdout(), watch.stderr()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reruns_on_a_change_and_prints_the_verdict_and_the_time_from_the_change() {
    let work = tempfile::tempdir().expect("work dir");
    let scenarios = work.path().join("scenarios");
    std::fs::create_dir(&scenarios).expect("mkdir");
    let scenario = scenarios.join("sqli-blocked.yaml");
    std::fs::copy(common::root().join("scenarios/sqli-blocked.yaml"), &scenario).expect("copy the scenario");
    let rendered = common::rendered_with("podmonitor.yaml", &common::root().join("fixtures/rendered/podmonitor.yaml"));
    let podmonitor = rendered.path().join("podmonitor.yaml");
    let mut watch = common::Harness::spawn(&["watch", "--scenarios", &scenarios.display().to_string(), "--rendered", &rendered.path().display().to_string(),
        "--diagnostics-dir", &work.path().join("diag").display().to_string()]);
    let initial = line_count(&watch, "initial run (", 1).await;
    assert!(initial.contains("PASS (1 passed)"), "{initial}");

    let text = std::fs::read_to_string(&scenario).expect("read the scenario");
    std::fs::write(&scenario, text + "\n# edited while watched\n").expect("edit the scenario");
    let edited = line_count(&watch, "changed:", 1).await;
    assert!(edited.contains("sqli-blocked.yaml") && edited.contains("PASS (1 passed)") && edited.contains("from the change to the verdict"), "{edited}");

    std::fs::copy(common::root().join("fixtures/broken/podmonitor-no-rule-id.yaml"), &podmonitor).expect("break the PodMonitor");
    let broken = line_count(&watch, "changed:", 2).await;
    assert!(broken.contains("podmonitor.yaml") && broken.contains("FAIL (failed: sqli-blocked"), "{broken}");
    assert!(watch.stdout().contains("label `rule_id`: missing"), "{}", watch.stdout());

    std::fs::copy(common::root().join("fixtures/rendered/podmonitor.yaml"), &podmonitor).expect("restore the PodMonitor");
    let restored = line_count(&watch, "changed:", 3).await;
    assert!(restored.contains("PASS (1 passed)"), "{restored}");
    let seconds: f64 = restored.rsplit(" — ").next().and_then(|t| t.split('s').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no time in {restored}"));
    eprintln!("MEASURE watch change-to-verdict after restoring the PodMonitor: {seconds:.2}s");

    // A policy that keeps Prometheus out: the running stack keeps its scrape target, so the
    // offline verdict fails the re-run, naming the policy.
    let policy = rendered.path().join("globalnetworkpolicy.yaml");
    let good_policy = std::fs::read_to_string(&policy).expect("read the policy");
    let denying = good_policy.replacen("projectcalico.org/name == 'tigera-prometheus'", "projectcalico.org/name == 'monitoring'", 1);
    assert_ne!(denying, good_policy, "the fixture's policy changed: this step would break nothing");
    std::fs::write(&policy, denying).expect("break the policy");
    let denied = line_count(&watch, "changed:", 4).await;
    assert!(denied.contains("globalnetworkpolicy.yaml") && denied.contains("FAIL (failed: sqli-blocked"), "{denied}");
    assert!(watch.stdout().contains("GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics"), "{}", watch.stdout());

    watch.signal(Signal::SIGINT);
    let status = watch.wait_exit(BOUND).await;
    assert_eq!(status.code(), Some(0), "{}", watch.stderr());
    common::assert_no_process(&watch.marker());
}
