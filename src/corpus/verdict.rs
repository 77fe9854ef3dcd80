//! What a mode's observation means: per FTW test, its own expectations against the audit record
//! of each request; in total, the counters against the records.

use super::ftw::{FtwStage, FtwTest};
use super::observe::{ModeObservation, Sent};
use super::send::Answer;
use super::{policy, Mode};
use crate::assert::counters::{self, CounterExpectation};
use crate::audit::AuditRecord;
use crate::contract::{sanitize, DECISIONS, TRANSACTIONS};
use crate::contract::Decision;
use crate::scenario::Increase;
use std::collections::BTreeMap;

/// A test's result in one mode, before overrides.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "messages")]
pub enum TestResult {
    /// Every expectation held.
    Passed,
    /// An expectation failed on a request the WAF filter saw.
    Failed(Vec<String>),
    /// A request was answered by Envoy before any filter ran, and an expectation needed the WAF:
    /// reported as such, never as a WAF miss.
    AnsweredByEnvoy(Vec<String>),
}

/// The log FTW's regexes are matched against: one line per rule the record names, in the form
/// ModSecurity's error log writes (`[id "942100"] [msg "..."]`), upstream's source of truth.
pub fn log_lines(record: &AuditRecord) -> Vec<String> {
    record.messages.iter().map(|m| format!("[id \"{}\"] [msg \"{}\"] [data \"{}\"]", m.data.id, m.data.msg, m.data.data)).collect()
}

/// The result of `test` from its requests in this mode.
pub fn judge(test: &FtwTest, sent: &[&Sent], mode: Mode) -> TestResult {
    let mut failures = Vec::new();
    let mut envoy = Vec::new();
    for s in sent {
        let stage = &test.stages[s.stage];
        let (f, e) = judge_stage(test, stage, s, mode);
        failures.extend(f);
        envoy.extend(e);
    }
    match (failures.is_empty(), envoy.is_empty()) {
        (true, true) => TestResult::Passed,
        (false, _) => TestResult::Failed(failures.into_iter().chain(envoy).collect()),
        (true, false) => TestResult::AnsweredByEnvoy(envoy),
    }
}

fn judge_stage(test: &FtwTest, stage: &FtwStage, s: &Sent, mode: Mode) -> (Vec<String>, Vec<String>) {
    let at = format!("{}, stage {} (request `{}`, {}={})", test.locator(), s.stage + 1, s.request_line, crate::contract::CORRELATION_HEADER, s.correlation_id);
    let mut failures = Vec::new();
    let mut envoy = Vec::new();
    let out = &stage.output;
    let answered = match &s.answer {
        Answer::Status(code) => format!("status {code}"),
        Answer::NoResponse(why) => format!("no response ({why})"),
    };
    if s.records.len() > 1 {
        failures.push(format!("{at}: {} audit records for one request (one per decision)", s.records.len()));
    }
    if let Some(r) = s.records.first() {
        if r.decision() != Some(mode.decision()) {
            failures.push(format!("{at}: its audit record documents decision {:?}, the {} policy decides {}", r.decision().map(|d| d.to_string()), mode.as_str(), mode.decision()));
        }
    }
    if out.expect_error == Some(true) && !matches!(s.answer, Answer::NoResponse(_)) {
        failures.push(format!("{at}: expect_error: the request should end without an HTTP response; it got {answered}"));
    }
    if out.expect_error != Some(true) {
        if let Answer::NoResponse(why) = &s.answer {
            failures.push(format!("{at}: no HTTP response: {why}"));
        }
    }
    if let Some(status) = out.status.as_ref().filter(|_| mode == Mode::Blocking) {
        if let Answer::Status(code) = s.answer {
            if !status.accepts(code) {
                let who = if s.reached_filter() { "" } else { " (from Envoy itself: the request never reached the WAF filter)" };
                failures.push(format!("{at}: status {code}{who}, FTW expects {status}"));
            }
        }
    }
    let lines: Vec<String> = s.records.iter().flat_map(log_lines).collect();
    if let Some(pattern) = &out.log_contains {
        let re = regex::Regex::new(pattern).expect("checked when the file was read");
        if !lines.iter().any(|l| re.is_match(l)) {
            if !s.reached_filter() {
                envoy.push(format!("{at}: answered by Envoy before any filter ran ({answered}), so log_contains `{pattern}` could not hold: not a WAF miss"));
            } else if s.records.is_empty() {
                failures.push(format!("{at}: log_contains `{pattern}`: the request has no audit record (the WAF decided nothing; {answered})"));
            } else {
                failures.push(format!("{at}: log_contains `{pattern}` matches none of its audit record's messages:\n      {}", lines.join("\n      ")));
            }
        }
    }
    if let Some(pattern) = &out.no_log_contains {
        let re = regex::Regex::new(pattern).expect("checked when the file was read");
        if let Some(hit) = lines.iter().find(|l| re.is_match(l)) {
            failures.push(format!("{at}: no_log_contains `{pattern}` matches its audit record: {hit}"));
        }
    }
    (failures, envoy)
}

/// The interrupting rule a record names: the first of the policy's interrupting rules among its messages.
pub fn interrupting_rule(record: &AuditRecord) -> Option<u64> {
    let ids = record.rule_ids();
    policy::INTERRUPTING_RULES.into_iter().find(|r| ids.contains(r))
}

/// Decisions counted from the records: (decision, interrupting rule) -> requests.
pub fn decisions_from_records(obs: &ModeObservation) -> (BTreeMap<(Decision, u64), u64>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for s in &obs.sent {
        for r in &s.records {
            let Some(decision) = r.decision() else { continue };
            match interrupting_rule(r) {
                Some(rule) => *out.entry((decision, rule)).or_insert(0) += 1,
                None => problems.push(format!(
                    "the audit record of {} names no rule of the policy that interrupts ({:?}); its rules: {:?}",
                    s.correlation_id, policy::INTERRUPTING_RULES, r.rule_ids())),
            }
        }
    }
    (out, problems)
}

/// The counters against the records, over the whole mode: per (decision, rule_id) the series'
/// increase (summed over `phase`: a record does not say the phase) equals the decided requests
/// whose record names that interrupting rule; no other decision series of the policy moves; the
/// transactions counter rises by the requests that reached the filter. Each on both scrapes.
pub fn check_counters(obs: &ModeObservation) -> Vec<String> {
    let (decided, mut failures) = decisions_from_records(obs);
    let scope = BTreeMap::from([("policy".to_string(), sanitize(&obs.env.policy)), ("namespace".to_string(), sanitize(&obs.env.namespace))]);
    let mut expectations = Vec::new();
    for ((decision, rule), n) in &decided {
        let mut labels = scope.clone();
        labels.insert("decision".into(), decision.as_label().into());
        labels.insert("rule_id".into(), rule.to_string());
        expectations.push(CounterExpectation { what: format!("decisions of rule {rule} (from {n} audit record(s))"), metric: DECISIONS.into(), labels, increase: Increase::Exactly(*n) });
    }
    let reached = obs.sent.iter().filter(|s| s.reached_filter()).count() as u64;
    // A smuggled request Envoy answered on the connection went through the filter too (it carries
    // no correlation id, so it has no record of its own to show it).
    // Only the echo (200) or the WAF's block (403) answer a request that went through the filter;
    // anything else is Envoy's own answer to bytes it could not take as a request.
    let pipelined = obs.sent.iter().flat_map(|s| &s.pipelined).filter(|status| matches!(status, 200 | 403)).count() as u64;
    let reached = reached + pipelined;
    expectations.push(CounterExpectation {
        what: format!("transactions ({reached} request(s) reached the WAF filter, {pipelined} of them smuggled after a request's body)"),
        metric: TRANSACTIONS.into(),
        labels: BTreeMap::new(),
        increase: Increase::Exactly(reached),
    });
    for e in &expectations {
        if let Err(msg) = counters::check(e, &obs.baseline, &obs.rounds) {
            failures.push(msg);
        }
    }
    let last = &obs.rounds[1];
    for series in last.matching(DECISIONS, &scope) {
        let accounted = expectations.iter().any(|e| e.metric == DECISIONS && e.labels.iter().all(|(k, v)| series.labels.get(k) == Some(v)));
        let before = obs.baseline.series.iter().find(|b| b.labels == series.labels).map_or(0.0, |b| b.value);
        if !accounted && series.value != before {
            failures.push(format!(
                "decision series {} rose from {before} to {} although no audit record names its decision and rule",
                counters::format_series(series.name(), &series.labels), series.value));
        }
    }
    failures.extend(obs.stray_records.iter().cloned());
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditMessage, AuditMessageData};
    use crate::corpus::ftw::{Input, Output, Status};
    use crate::stack::BackendReach;

    fn record(ids: &[u64], interrupted: bool) -> AuditRecord {
        let mut r = AuditRecord::default();
        r.transaction.is_interrupted = interrupted;
        r.transaction.producer.rule_engine = if interrupted { "On".into() } else { "DetectionOnly".into() };
        r.messages = ids.iter().map(|id| AuditMessage { data: AuditMessageData { id: *id, msg: format!("rule {id}"), ..Default::default() }, ..Default::default() }).collect();
        r
    }

    fn test(output: Output) -> FtwTest {
        FtwTest {
            file: "REQUEST-942-X/942100.yaml".into(), line: 7, title: "942100-1".into(), desc: String::new(), family: "942".into(), disabled: false,
            stages: vec![FtwStage { input: Input::default(), output }],
        }
    }

    fn sent(answer: Answer, records: Vec<AuditRecord>, reach: BackendReach) -> Sent {
        Sent { test: 0, stage: 0, correlation_id: "c-1".into(), request_line: "GET /?x HTTP/1.1".into(), answer, pipelined: vec![], records, reach }
    }

    #[test]
    fn log_contains_holds_on_a_record_naming_the_rule_and_fails_naming_file_title_and_request_otherwise() {
        let t = test(Output { log_contains: Some("id \"942100\"".into()), ..Output::default() });
        let good = sent(Answer::Status(200), vec![record(&[942100, 949110], false)], BackendReach::Complete);
        assert_eq!(judge(&t, &[&good], Mode::Detection), TestResult::Passed);
        let other = sent(Answer::Status(200), vec![record(&[920300, 949110], false)], BackendReach::Complete);
        let TestResult::Failed(msgs) = judge(&t, &[&other], Mode::Detection) else { panic!("a record without 942100 must fail") };
        assert!(msgs[0].starts_with("REQUEST-942-X/942100.yaml:7 test 942100-1, stage 1 (request `GET /?x HTTP/1.1`"), "{msgs:?}");
        assert!(msgs[0].contains("[id \"920300\"]"), "the record's messages are shown: {msgs:?}");
    }

    #[test]
    fn a_request_envoy_answered_itself_is_reported_as_such_not_as_a_waf_miss() {
        let t = test(Output { log_contains: Some("id \"920100\"".into()), ..Output::default() });
        let s = sent(Answer::Status(400), vec![], BackendReach::Never);
        let TestResult::AnsweredByEnvoy(msgs) = judge(&t, &[&s], Mode::Detection) else { panic!("answered by Envoy") };
        assert!(msgs[0].contains("answered by Envoy before any filter ran (status 400)"), "{msgs:?}");
        let missed = sent(Answer::Status(200), vec![], BackendReach::Complete);
        assert!(matches!(judge(&t, &[&missed], Mode::Detection), TestResult::Failed(_)), "a request the filter saw and let through without a record is a miss");
    }

    #[test]
    fn no_log_contains_status_in_blocking_mode_and_expect_error_are_checked() {
        let t = test(Output { no_log_contains: Some("id \"942100\"".into()), status: Some(Status::One(200)), ..Output::default() });
        let blocked = sent(Answer::Status(403), vec![record(&[942100, 949110], true)], BackendReach::Never);
        let TestResult::Failed(msgs) = judge(&t, &[&blocked], Mode::Blocking) else { panic!("must fail") };
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].contains("status 403, FTW expects 200") && msgs[1].contains("no_log_contains"), "{msgs:?}");
        let detect = sent(Answer::Status(200), vec![record(&[920300, 949110], false)], BackendReach::Complete);
        assert_eq!(judge(&t, &[&detect], Mode::Detection), TestResult::Passed, "status is FTW's expectation for blocking only");
        let e = test(Output { expect_error: Some(true), ..Output::default() });
        assert!(matches!(judge(&e, &[&detect], Mode::Detection), TestResult::Failed(_)));
        let none = sent(Answer::NoResponse("closed".into()), vec![], BackendReach::Never);
        assert_eq!(judge(&e, &[&none], Mode::Detection), TestResult::Passed);
    }

    #[test]
    fn the_interrupting_rule_is_the_first_of_the_policys_in_evaluation_order() {
        assert_eq!(interrupting_rule(&record(&[942100, 949110, 200002], false)), Some(200002));
        assert_eq!(interrupting_rule(&record(&[942100, 949110], false)), Some(949110));
        assert_eq!(interrupting_rule(&record(&[942100], false)), None);
    }
}
