//! The assertion engine must fail on broken inputs: each case breaks one thing and checks the message names it.
#![cfg(feature = "reference-proxy")]

use crate::common;

use waf_e2e::waf::Faults;
use waf_e2e::outcome::Verdict;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_podmonitor_without_the_rule_id_relabeling_fails_naming_the_missing_label() {
    let rendered = common::rendered_with("podmonitor.yaml", &common::root().join("fixtures/broken/podmonitor-no-rule-id.yaml"));
    let outcomes = common::run_local(rendered.path(), Faults::default(), &[common::scenario("sqli-blocked.yaml")]).await;
    let msg = common::failures(&outcomes[0]);
    assert!(msg.contains("label `rule_id`: missing"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_podmonitor_with_decisions_swapped_fails_naming_the_wrong_decision() {
    let rendered = common::rendered_with("podmonitor.yaml", &common::root().join("fixtures/broken/podmonitor-decisions-swapped.yaml"));
    let outcomes = common::run_local(rendered.path(), Faults::default(), &[common::scenario("sqli-blocked.yaml")]).await;
    let msg = common::failures(&outcomes[0]);
    assert!(msg.contains("label `decision`: expected \"blocked\", the series carries \"would_block\""), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_double_counts_fails_the_exact_increase() {
    let rendered = common::root().join("fixtures/rendered");
    let faults = Faults { double_count: true, ..Faults::default() };
    let outcomes = common::run_local(&rendered, faults, &[common::scenario("sqli-blocked.yaml")]).await;
    let msg = common::failures(&outcomes[0]);
    assert!(msg.contains("expected exactly +3") && msg.contains("increase 6"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_audit_record_fails_naming_the_request() {
    let rendered = common::root().join("fixtures/rendered");
    let faults = Faults { drop_audit: true, ..Faults::default() };
    let outcomes = common::run_local(&rendered, faults, &[common::scenario("sqli-blocked.yaml")]).await;
    let msg = common::failures(&outcomes[0]);
    assert!(msg.contains("request `sqli` #1") && msg.contains("found none"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independently_written_podmonitor_that_follows_the_contract_passes() {
    let rendered = common::rendered_with("podmonitor.yaml", &common::root().join("fixtures/alternative/podmonitor.yaml"));
    let rendered = rendered.path();
    let scenarios = [common::scenario("sqli-detection-only.yaml"), common::scenario("dashed-name.yaml")];
    let outcomes = common::run_local(rendered, Faults::default(), &scenarios).await;
    for o in &outcomes {
        assert!(matches!(o.verdict, Verdict::Passed), "{}: {:?}", o.name, o.verdict);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expected_dashed_policy_label_fails_and_explains_the_sanitisation() {
    let mut scenario = common::scenario("dashed-name.yaml");
    scenario.expect.decisions[0].labels.insert("policy".into(), "block-sqli-dashed".into());
    let outcomes = common::run_local(&common::root().join("fixtures/rendered"), Faults::default(), &[scenario]).await;
    let msg = common::failures(&outcomes[0]);
    assert!(msg.contains("the only difference is sanitisation"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attack_in_a_scenario_that_expects_no_decisions_fails_on_the_series_and_the_raw_counter() {
    let mut scenario = common::scenario("benign-traffic.yaml");
    let browse = &mut scenario.traffic.value[0];
    browse.path.value = "/products?id=1%27%20OR%20%271%27%3D%271".into();
    browse.expect_status.value = 403;
    let outcomes = common::run_local(&common::root().join("fixtures/rendered"), Faults::default(), &[scenario]).await;
    let msg = common::failures(&outcomes[0]);
    assert!(msg.contains("unexpected decision series"), "{msg}");
    assert!(msg.contains("the proxy counted a decision for policy waf-benign"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_plain_boolean_reaches_backend_fails_on_the_stand_in_naming_the_request() {
    let path = common::root().join("scenarios/sqli-detection-only.yaml");
    let text = std::fs::read_to_string(&path).expect("read the scenario");
    assert!(text.contains("reaches_backend: true"), "the shipped scenario uses the plain boolean");
    let scenario = waf_e2e::scenario::parse(&path, &text.replacen("reaches_backend: true", "reaches_backend: false", 1)).unwrap_or_else(|e| panic!("{e}"));
    let outcomes = common::run_local(&common::root().join("fixtures/rendered"), Faults::default(), &[scenario]).await;
    let msg = common::failures(&outcomes[0]);
    assert!(msg.contains("request `sqli` #1: expected never to reach the backend complete"), "{msg}");
}
