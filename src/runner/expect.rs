//! A scenario's expectations for the filter in use: filter-dependent values picked by flavour, and
//! what could not be checked with this filter said out loud (never counted as passed).

use crate::assert::audit::ExpectedRecord;
use crate::assert::counters::CounterExpectation;
use crate::contract::{sanitize, DECISIONS, TRANSACTIONS};
use crate::scenario::{Increase, Scenario};
use crate::stack::ScenarioEnv;
use std::collections::BTreeMap;

/// Everything the runner checks for one scenario, resolved for one filter flavour.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// Counter expectations, `policy`, `namespace` and `gateway` defaulted from the stack.
    pub counters: Vec<CounterExpectation>,
    /// Decision expectations without values for this filter: not checked, but the series they
    /// would match (without their filter-dependent labels) are accounted for, not "unexpected".
    pub unchecked_counters: Vec<CounterExpectation>,
    /// The audit records that must exist (every other request must have none).
    pub audit: Vec<ExpectedRecord>,
    /// Per request name: whether it must reach the backend complete.
    pub reaches_backend: BTreeMap<String, bool>,
    /// Expectations that have no value for this filter, each a sentence.
    pub not_checked: Vec<String>,
}

/// Resolves `scenario`'s expectations for the filter `flavour` on `env`.
pub fn resolve(scenario: &Scenario, env: &ScenarioEnv, flavour: &str) -> Resolved {
    let mut out = Resolved::default();
    for (i, d) in scenario.expect.decisions.iter().enumerate() {
        let what = format!("decision series #{}", i + 1);
        let mut labels = d.labels.clone();
        let mut checked = true;
        if !d.by_filter.is_empty() {
            match d.by_filter.get(flavour) {
                Some(extra) => labels.extend(extra.clone()),
                None => {
                    checked = false;
                    out.not_checked.push(format!(
                        "{what}: its labels {} have no value for filter `{flavour}` (given for {})",
                        filter_keys(&d.by_filter), d.by_filter.keys().cloned().collect::<Vec<_>>().join(", ")));
                }
            }
        }
        labels.insert("decision".into(), d.decision.as_label().into());
        labels.entry("policy".into()).or_insert_with(|| sanitize(&env.policy));
        labels.entry("namespace".into()).or_insert_with(|| sanitize(&env.namespace));
        labels.entry("gateway".into()).or_insert_with(|| env.gateway.clone());
        let expectation = CounterExpectation { what, metric: DECISIONS.into(), labels, increase: increase_of(d.increase.as_ref(), d.at_least.as_ref()) };
        if checked { out.counters.push(expectation) } else { out.unchecked_counters.push(expectation) }
    }
    if let Some(t) = &scenario.expect.transactions {
        out.counters.push(CounterExpectation {
            what: "transactions series".into(),
            metric: TRANSACTIONS.into(),
            labels: BTreeMap::from([("gateway".to_string(), env.gateway.clone())]),
            increase: increase_of(t.increase.as_ref(), t.at_least.as_ref()),
        });
    }
    for a in &scenario.expect.audit {
        let mut rule_ids = a.rule_ids.clone();
        if !a.by_filter.is_empty() {
            match a.by_filter.get(flavour) {
                Some(ids) => rule_ids.extend(&ids.rule_ids),
                None => out.not_checked.push(format!(
                    "audit record of request `{}`: its filter-dependent rule ids have no value for filter `{flavour}`", a.request.value)),
            }
        }
        out.audit.push(ExpectedRecord { request: a.request.value.clone(), decision: a.decision, rule_ids });
    }
    for r in &scenario.traffic.value {
        let Some(required) = &r.reaches_backend else { continue };
        match required.for_flavour(flavour) {
            Some(reach) => {
                out.reaches_backend.insert(r.name.value.clone(), reach);
            }
            None => out.not_checked.push(format!("request `{}`: `reaches_backend` has no value for filter `{flavour}`", r.name.value)),
        }
    }
    out
}

fn filter_keys(by_filter: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    let mut keys: Vec<&String> = by_filter.values().flat_map(BTreeMap::keys).collect();
    keys.sort();
    keys.dedup();
    keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
}

fn increase_of(exact: Option<&serde_saphyr::Spanned<u64>>, at_least: Option<&serde_saphyr::Spanned<u64>>) -> Increase {
    match (exact, at_least) {
        (Some(n), _) => Increase::Exactly(n.value),
        (None, Some(n)) => Increase::AtLeast(n.value),
        // The loader rejects a count with neither; keep the strictest reading if one slips through.
        (None, None) => Increase::Exactly(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = r#"
name: by-filter
policy: {name: p, mode: On, rules: {crs: true}}
traffic:
  - name: sqli
    path: /?q=x
    expect_status: 403
    reaches_backend: {stand-in: true, coraza-proxy-wasm-release: false}
expect:
  decisions:
    - decision: blocked
      increase: 1
      by_filter:
        stand-in: {rule_id: "949110", phase: http_response_headers}
        coraza-proxy-wasm-release: {rule_id: "949111", phase: http_request_headers}
  audit:
    - request: sqli
      decision: blocked
      rule_ids: [942100]
      by_filter:
        stand-in: {rule_ids: [949110]}
"#;

    fn env() -> ScenarioEnv {
        ScenarioEnv { scenario: "by-filter".into(), namespace: "ns".into(), policy: "p".into(), gateway: "gw".into(), gateway_namespace: "gns".into(), host: "h".into() }
    }

    fn scenario() -> Scenario {
        crate::scenario::load::parse(std::path::Path::new("by-filter.yaml"), SCENARIO).unwrap()
    }

    #[test]
    fn the_stand_in_gets_its_own_rule_id_phase_rule_ids_and_backend_reach() {
        let r = resolve(&scenario(), &env(), "stand-in");
        assert_eq!(r.counters[0].labels["rule_id"], "949110");
        assert_eq!(r.counters[0].labels["phase"], "http_response_headers");
        assert_eq!(r.audit[0].rule_ids, vec![942100, 949110]);
        assert!(r.reaches_backend["sqli"]);
        assert!(r.not_checked.is_empty(), "{:?}", r.not_checked);
    }

    #[test]
    fn a_filter_without_values_is_reported_as_not_checked_never_as_passed() {
        let r = resolve(&scenario(), &env(), "custom-team-build");
        assert!(r.counters.is_empty(), "the decision count is not checked against a broadened match");
        assert!(!r.unchecked_counters[0].labels.contains_key("rule_id"));
        assert_eq!(r.audit[0].rule_ids, vec![942100], "the filter-independent ids are still checked");
        assert!(r.reaches_backend.is_empty());
        assert_eq!(r.not_checked.len(), 3, "{:?}", r.not_checked);
        assert!(r.not_checked[0].contains("`phase`, `rule_id`") && r.not_checked[0].contains("custom-team-build"), "{}", r.not_checked[0]);
    }

    #[test]
    fn the_release_build_gets_its_phase_but_its_missing_audit_ids_are_not_checked() {
        let r = resolve(&scenario(), &env(), "coraza-proxy-wasm-release");
        assert_eq!(r.counters[0].labels["phase"], "http_request_headers");
        assert!(!r.reaches_backend["sqli"]);
        assert_eq!(r.not_checked.len(), 1, "{:?}", r.not_checked);
    }

    #[test]
    fn a_plain_boolean_reaches_backend_holds_for_every_filter_flavour() {
        let text = SCENARIO.replace("reaches_backend: {stand-in: true, coraza-proxy-wasm-release: false}", "reaches_backend: false");
        let scenario = crate::scenario::load::parse(std::path::Path::new("plain.yaml"), &text).unwrap_or_else(|e| panic!("{e}"));
        for flavour in ["stand-in", "coraza-proxy-wasm-release", "custom-team-build"] {
            let r = resolve(&scenario, &env(), flavour);
            assert_eq!(r.reaches_backend.get("sqli"), Some(&false), "{flavour}");
            assert!(!r.not_checked.iter().any(|n| n.contains("reaches_backend")), "{flavour}: {:?}", r.not_checked);
        }
    }

    #[test]
    fn reaches_backend_that_is_neither_a_boolean_nor_a_map_of_booleans_is_invalid_input() {
        for value in ["yes please", "{stand-in: maybe}", "[true]"] {
            let text = SCENARIO.replace("{stand-in: true, coraza-proxy-wasm-release: false}", value);
            let err = crate::scenario::load::parse(std::path::Path::new("bad.yaml"), &text).unwrap_err().to_string();
            assert!(err.contains("reaches_backend"), "{value}: {err}");
        }
    }
}
