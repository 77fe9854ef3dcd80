//! Reading Kubernetes `status.conditions` from untyped objects (Gateway API, Calico, Prometheus Operator).

use serde_json::Value;

/// One condition as found in a `conditions` array.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Condition {
    /// `type`, e.g. `Programmed`.
    pub type_: String,
    /// `status`: `True`, `False` or `Unknown`.
    pub status: String,
    /// `reason`, empty when absent.
    pub reason: String,
    /// `message`, empty when absent.
    pub message: String,
    /// `observedGeneration`, when the controller sets it.
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// True when `status` is `True`.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }

    /// `Type=Status (Reason: message)`, for timeout messages.
    pub fn describe(&self) -> String {
        let mut s = format!("{}={}", self.type_, self.status);
        match (self.reason.is_empty(), self.message.is_empty()) {
            (true, true) => {}
            (false, true) => s.push_str(&format!(" ({})", self.reason)),
            (true, false) => s.push_str(&format!(" ({})", self.message)),
            (false, false) => s.push_str(&format!(" ({}: {})", self.reason, self.message)),
        }
        s
    }
}

/// Every condition in a `conditions` array (missing or malformed entries are skipped).
pub fn parse_conditions(conditions: Option<&Value>) -> Vec<Condition> {
    let Some(Value::Array(items)) = conditions else { return Vec::new() };
    items
        .iter()
        .filter_map(|c| {
            let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let type_ = text("type");
            (!type_.is_empty()).then(|| Condition {
                type_,
                status: text("status"),
                reason: text("reason"),
                message: text("message"),
                observed_generation: c.get("observedGeneration").and_then(Value::as_i64),
            })
        })
        .collect()
}

/// The conditions under `status.conditions` of an object's data.
pub fn status_conditions(data: &Value) -> Vec<Condition> {
    parse_conditions(data.pointer("/status/conditions"))
}

/// What a condition check saw: met, or a sentence saying what was there instead.
pub fn check_condition(conditions: &[Condition], type_: &str, generation: Option<i64>) -> Result<(), String> {
    let Some(c) = conditions.iter().find(|c| c.type_ == type_) else {
        let seen: Vec<String> = conditions.iter().map(Condition::describe).collect();
        return Err(if seen.is_empty() {
            format!("no {type_} condition (no conditions at all)")
        } else {
            format!("no {type_} condition; conditions: {}", seen.join(", "))
        });
    };
    if !c.is_true() {
        return Err(c.describe());
    }
    match (c.observed_generation, generation) {
        (Some(seen), Some(current)) if seen < current => {
            Err(format!("{} but for generation {seen}, object is at generation {current}", c.describe()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conds(v: Value) -> Vec<Condition> {
        status_conditions(&json!({"status": {"conditions": v}}))
    }

    #[test]
    fn a_true_current_condition_is_met() {
        let c = conds(json!([{"type": "Programmed", "status": "True", "observedGeneration": 2}]));
        assert_eq!(check_condition(&c, "Programmed", Some(2)), Ok(()));
    }

    #[test]
    fn a_false_condition_reports_reason_and_message() {
        let c = conds(json!([{"type": "Programmed", "status": "False", "reason": "AddressNotAssigned", "message": "no address"}]));
        assert_eq!(check_condition(&c, "Programmed", None).unwrap_err(), "Programmed=False (AddressNotAssigned: no address)");
    }

    #[test]
    fn a_missing_condition_lists_the_ones_present() {
        let c = conds(json!([{"type": "Accepted", "status": "True"}]));
        let err = check_condition(&c, "Programmed", None).unwrap_err();
        assert!(err.contains("no Programmed condition") && err.contains("Accepted=True"), "{err}");
        assert!(check_condition(&[], "Programmed", None).unwrap_err().contains("no conditions at all"));
    }

    #[test]
    fn a_condition_for_an_older_generation_is_not_met() {
        let c = conds(json!([{"type": "Accepted", "status": "True", "observedGeneration": 1}]));
        assert!(check_condition(&c, "Accepted", Some(2)).unwrap_err().contains("generation 1"));
    }

    #[test]
    fn malformed_entries_are_skipped() {
        assert!(conds(json!("nope")).is_empty());
        assert_eq!(conds(json!([{"status": "True"}, 3, {"type": "A", "status": "True"}])).len(), 1);
    }
}
