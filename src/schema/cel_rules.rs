//! `x-kubernetes-validations` rules, evaluated with the `cel` crate (cel-rust) where it can.
//!
//! A rule is NOT evaluated, and is listed as such, when it is a transition rule (`oldSelf`: it only
//! runs on update, and an offline check only creates), when cel-rust cannot parse it, or when it needs
//! something cel-rust lacks (Kubernetes' CEL libraries: `isURL`, `quantity`, `format.*`, `ip`, ...).
//! Evaluation errors are reported as "not evaluated" rather than failures, because cel-rust and the
//! API server's cel-go can differ there; a rule that evaluates to `false` is a failure.

use super::structural::{CelSite, Finding};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// A rule that was not evaluated, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotEvaluated {
    /// Field path of `self`.
    pub field: String,
    /// The rule text.
    pub rule: String,
    /// Why it was not evaluated.
    pub reason: String,
}

/// What evaluating the rules of some sites gave.
#[derive(Debug, Clone, Default)]
pub struct CelOutcome {
    /// Rules evaluated (true or false).
    pub evaluated: usize,
    /// Rules that evaluated to false.
    pub failures: Vec<Finding>,
    /// Rules not evaluated, with the reason.
    pub not_evaluated: Vec<NotEvaluated>,
}

/// Evaluates every rule of every site.
pub fn evaluate(sites: &[CelSite]) -> CelOutcome {
    let mut out = CelOutcome::default();
    for site in sites {
        let this = to_cel(&site.value);
        for entry in &site.rules {
            let Some(rule) = entry.get("rule").and_then(Value::as_str) else { continue };
            let skip = |reason: String| NotEvaluated { field: site.field.clone(), rule: rule.to_string(), reason };
            if rule.contains("oldSelf") {
                out.not_evaluated.push(skip("transition rule (oldSelf): it only runs on update".into()));
                continue;
            }
            let program = match cel::Program::compile(rule) {
                Ok(p) => p,
                Err(e) => {
                    out.not_evaluated.push(skip(format!("cel-rust cannot parse it: {}", first_line(&e.to_string()))));
                    continue;
                }
            };
            let mut context = cel::Context::default();
            context.add_variable_from_value("self", this.clone());
            match program.execute(&context) {
                Ok(cel::Value::Bool(true)) => out.evaluated += 1,
                Ok(cel::Value::Bool(false)) => {
                    out.evaluated += 1;
                    let message = entry.get("message").and_then(Value::as_str).map(String::from).unwrap_or_else(|| format!("failed rule: {rule}"));
                    let field = match entry.get("fieldPath").and_then(Value::as_str) {
                        Some(p) => format!("{}{}", site.field, if site.field.is_empty() { p.trim_start_matches('.') } else { p }),
                        None => site.field.clone(),
                    };
                    out.failures.push(Finding { field, rule: format!("x-kubernetes-validations `{rule}`"), message });
                }
                Ok(other) => out.not_evaluated.push(skip(format!("evaluated to {other:?}, not a boolean"))),
                Err(e) => out.not_evaluated.push(skip(format!("cel-rust could not evaluate it: {}", first_line(&e.to_string())))),
            }
        }
    }
    out
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// JSON as CEL values: whole numbers are `int` (as the API server types integer fields), objects are maps.
fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => {
            let m: HashMap<cel::objects::Key, cel::Value> =
                map.iter().map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v))).collect();
            cel::Value::Map(m.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn site(value: Value, rules: Value) -> CelSite {
        CelSite { field: "spec".into(), value, rules: rules.as_array().unwrap().clone() }
    }

    #[test]
    fn the_waf_plugin_rule_passes_with_rules_and_fails_without_any_field() {
        let rule = json!([{"rule": "(has(self.config) && size(self.config) > 0) || (has(self.rules) && size(self.rules) > 0)",
            "message": "plugin must define at least one of config, before, rules, after"}]);
        let ok = evaluate(&[site(json!({"rules": "SecRule ARGS \"@rx x\" \"id:1,deny\""}), rule.clone())]);
        assert_eq!((ok.evaluated, ok.failures.len()), (1, 0), "{ok:?}");
        let bad = evaluate(&[site(json!({"directives": ["x"]}), rule)]);
        assert_eq!(bad.failures.len(), 1, "{bad:?}");
        assert_eq!(bad.failures[0].field, "spec");
        assert!(bad.failures[0].message.contains("at least one of"));
    }

    #[test]
    fn list_macros_and_integers_evaluate_like_the_api_server() {
        let rules = json!([{"rule": "self.targetRefs.all(ref, ref.group == 'gateway.networking.k8s.io')"}, {"rule": "self.n > 0"}]);
        let out = evaluate(&[site(json!({"targetRefs": [{"group": "gateway.networking.k8s.io"}], "n": 3}), rules)]);
        assert_eq!((out.evaluated, out.failures.len(), out.not_evaluated.len()), (2, 0, 0), "{out:?}");
    }

    #[test]
    fn transition_rules_and_unknown_functions_are_listed_as_not_evaluated() {
        let rules = json!([{"rule": "self == oldSelf"}, {"rule": "isURL(self.u)"}]);
        let out = evaluate(&[site(json!({"u": "https://x"}), rules)]);
        assert_eq!(out.evaluated, 0);
        assert_eq!(out.not_evaluated.len(), 2, "{out:?}");
        assert!(out.not_evaluated[0].reason.contains("transition"));
    }
}
