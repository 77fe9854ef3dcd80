//! The WAF filter's stat names (design 1.1), computed by the reference WAF service for the stand-in filter
//! (which does no string work beyond copying them into `proxy_define_metric`).

use std::fmt::Write as _;

/// The filter's transaction counter (the stand-in defines it itself, right before its first increment).
pub const TX_TOTAL: &str = "waf_filter.tx.total";

/// A decision counter's kind: the filter's stat-name stem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionStat {
    /// `waf_filter.tx.interruptions_...` (engine On).
    Interruptions,
    /// `waf_filter.tx.would_block_...` (DetectionOnly).
    WouldBlock,
}

/// The raw stat name of a decision: `waf_filter.tx.<kind>_ruleid=<id>_phase=<phase>` then `_<k>=<v>` per label, in the given order.
pub fn decision_stat_name(kind: DecisionStat, rule_id: u64, phase: &str, labels: &[(String, String)]) -> String {
    let stem = match kind {
        DecisionStat::Interruptions => "interruptions",
        DecisionStat::WouldBlock => "would_block",
    };
    let mut name = format!("waf_filter.tx.{stem}_ruleid={rule_id}_phase={phase}");
    for (k, v) in labels {
        let _ = write!(name, "_{k}={v}");
    }
    name
}

/// Metric labels in a policy-dependent order, as Go's random map order gives coraza-proxy-wasm: `policy`,
/// `namespace`, then the other keys sorted, rotated by a hash of `seed` (the policy name), so both
/// `policy..namespace` and `namespace..policy` occur across policies while each policy keeps its own.
pub fn label_order(seed: &str, labels: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = labels.into_iter().collect();
    let rank = |k: &str| match k {
        "policy" => 0,
        "namespace" => 1,
        _ => 2,
    };
    labels.sort_by(|a, b| (rank(&a.0), &a.0).cmp(&(rank(&b.0), &b.0)));
    if labels.is_empty() {
        return labels;
    }
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let len = labels.len() as u64;
    // FNV-1a's low bits barely mix; take higher ones.
    labels.rotate_left(((hash >> 7) % len) as usize);
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_decision_stat_name_carries_rule_phase_and_labels_in_the_given_order() {
        let name = decision_stat_name(DecisionStat::Interruptions, 949110, "http_request_body", &labels(&[("policy", "block-sqli"), ("namespace", "shop")]));
        assert_eq!(name, "waf_filter.tx.interruptions_ruleid=949110_phase=http_request_body_policy=block-sqli_namespace=shop");
        assert_eq!(crate::contract::sanitize(&name), "waf_filter_tx_interruptions_ruleid_949110_phase_http_request_body_policy_block_sqli_namespace_shop");
    }

    #[test]
    fn both_label_orders_occur_and_each_policy_keeps_its_own() {
        let first = |name: &str| label_order(name, labels(&[("namespace", "shop"), ("policy", name)]))[0].0.clone();
        // As in the design's example exposition: block-sqli policy-first, detect-sqli namespace-first.
        assert_eq!([first("block-sqli"), first("detect-sqli")], ["policy".to_string(), "namespace".to_string()]);
        assert_eq!(first("block-sqli"), first("block-sqli"));
    }

    #[test]
    fn extra_labels_are_kept_whatever_the_rotation() {
        let ordered = label_order("inline", labels(&[("authority", "a.example"), ("policy", "inline"), ("namespace", "shop")]));
        let mut keys: Vec<&str> = ordered.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, vec!["authority", "namespace", "policy"]);
        assert!(label_order("x", Vec::new()).is_empty());
    }
}
