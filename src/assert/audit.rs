//! Audit records matched to requests by correlation id: one record per decision, none for the rest.

use crate::contract::Decision;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One request the runner sent, as the audit check needs it.
#[derive(Debug, Clone)]
pub struct SentRequest {
    /// The request's name in the scenario.
    pub name: String,
    /// Which repeat (0-based).
    pub repeat: u32,
    /// The `x-waf-e2e-id` value it carried.
    pub correlation_id: String,
}

/// What an audit record says, reduced to what the check compares.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedRecord {
    /// Where it was read (file or pod).
    pub source: String,
    /// The correlation header from the record's request headers.
    pub correlation_id: Option<String>,
    /// The VM / plugin name that wrote it.
    pub vm: String,
    /// Blocked, would_block, or neither.
    pub decision: Option<Decision>,
    /// Rule ids of its messages, sorted.
    pub rule_ids: Vec<u64>,
    /// Request URI, for messages.
    pub uri: String,
}

/// The audit record one request (every repeat of it) must produce, resolved for the filter in use.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedRecord {
    /// The request's name in `traffic`.
    pub request: String,
    /// Blocked or would_block.
    pub decision: Decision,
    /// Rule ids that must appear among the record's messages.
    pub rule_ids: Vec<u64>,
}

/// The correlation ids of the sent requests that must have a record.
pub fn expected_ids<'a>(expected: &[ExpectedRecord], sent: &'a [SentRequest]) -> Vec<&'a str> {
    sent.iter().filter(|s| expected.iter().any(|e| e.request == s.name)).map(|s| s.correlation_id.as_str()).collect()
}

/// Compares the records of this scenario's requests with the expectations; returns one message per failure.
pub fn check(expected: &[ExpectedRecord], sent: &[SentRequest], records: &[ObservedRecord]) -> Vec<String> {
    let mut by_id: BTreeMap<&str, Vec<&ObservedRecord>> = BTreeMap::new();
    for r in records {
        if let Some(id) = r.correlation_id.as_deref() {
            by_id.entry(id).or_default().push(r);
        }
    }
    let mut failures = Vec::new();
    for req in sent {
        let found = by_id.get(req.correlation_id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let rule = expected.iter().find(|e| e.request == req.name);
        let who = format!("request `{}` #{} ({}={})", req.name, req.repeat + 1, crate::contract::CORRELATION_HEADER, req.correlation_id);
        match (rule, found) {
            (None, []) => {}
            (None, recs) => failures.push(format!(
                "{who}: expected NO audit record (the scenario has no `audit:` entry for request `{}`; add one if the WAF should decide on it), found {}:\n{}",
                req.name, recs.len(), describe(recs))),
            (Some(e), []) => failures.push(format!(
                "{who}: expected an audit record ({}, rule ids {:?}), found none", e.decision, e.rule_ids)),
            (Some(e), [one]) => {
                let missing: Vec<u64> = e.rule_ids.iter().copied().filter(|id| !one.rule_ids.contains(id)).collect();
                let mut problems = Vec::new();
                if one.decision != Some(e.decision) {
                    problems.push(format!("decision {} expected, the record says {}", e.decision,
                        one.decision.map_or("neither (not interrupted, engine not DetectionOnly)".to_string(), |d| d.to_string())));
                }
                if !missing.is_empty() {
                    problems.push(format!("rule ids {missing:?} missing from its messages"));
                }
                if !problems.is_empty() {
                    failures.push(format!("{who}: {}:\n{}", problems.join("; "), describe(&[one])));
                }
            }
            (Some(_), recs) => failures.push(format!(
                "{who}: expected exactly one audit record, found {}:\n{}", recs.len(), describe(recs))),
        }
    }
    failures
}

fn describe(records: &[&ObservedRecord]) -> String {
    let mut out = String::new();
    for r in records {
        let decision = r.decision.map_or("none".to_string(), |d| d.to_string());
        let _ = writeln!(out, "      [{}] vm={} decision={decision} rule_ids={:?} uri={}", r.source, r.vm, r.rule_ids, r.uri);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(request: &str, decision: Decision, ids: &[u64]) -> ExpectedRecord {
        ExpectedRecord { request: request.to_string(), decision, rule_ids: ids.to_vec() }
    }

    fn sent(name: &str, id: &str) -> SentRequest {
        SentRequest { name: name.into(), repeat: 0, correlation_id: id.into() }
    }

    fn record(id: &str, decision: Option<Decision>, ids: &[u64]) -> ObservedRecord {
        ObservedRecord { source: "test".into(), correlation_id: Some(id.into()), vm: "vm".into(), decision, rule_ids: ids.to_vec(), uri: "/".into() }
    }

    #[test]
    fn a_matching_record_for_each_decision_and_none_for_benign_requests_passes() {
        let exp = [expect("attack", Decision::Blocked, &[949110, 942100])];
        let sent = [sent("attack", "a1"), sent("benign", "b1")];
        let recs = [record("a1", Some(Decision::Blocked), &[942100, 949110, 980130])];
        assert!(check(&exp, &sent, &recs).is_empty());
    }

    #[test]
    fn a_missing_audit_record_fails_and_names_the_request() {
        let exp = [expect("attack", Decision::Blocked, &[949110])];
        let failures = check(&exp, &[sent("attack", "a1")], &[]);
        assert_eq!(failures.len(), 1);
        assert!(failures[0].contains("request `attack`") && failures[0].contains("found none"), "{}", failures[0]);
    }

    #[test]
    fn a_record_for_a_benign_request_fails() {
        let failures = check(&[], &[sent("benign", "b1")], &[record("b1", None, &[920350])]);
        assert_eq!(failures.len(), 1);
        assert!(failures[0].contains("expected NO audit record"), "{}", failures[0]);
        assert!(failures[0].contains("no `audit:` entry for request `benign`"), "the message says what is missing: {}", failures[0]);
    }

    #[test]
    fn a_duplicate_record_fails() {
        let exp = [expect("attack", Decision::Blocked, &[949110])];
        let r = record("a1", Some(Decision::Blocked), &[949110]);
        let failures = check(&exp, &[sent("attack", "a1")], &[r.clone(), r]);
        assert!(failures[0].contains("exactly one audit record, found 2"), "{}", failures[0]);
    }

    #[test]
    fn a_wrong_decision_or_a_missing_rule_id_fails() {
        let exp = [expect("attack", Decision::WouldBlock, &[949110, 942100])];
        let failures = check(&exp, &[sent("attack", "a1")], &[record("a1", Some(Decision::Blocked), &[949110])]);
        assert!(failures[0].contains("decision would_block expected") && failures[0].contains("[942100] missing"), "{}", failures[0]);
    }
}
