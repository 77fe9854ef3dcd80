//! The feature's contract (design, section 1): series names, label names, stat-name sanitisation.

/// The normalised decisions counter.
pub const DECISIONS: &str = "tigera_waf_decisions_total";
/// The normalised transactions counter.
pub const TRANSACTIONS: &str = "tigera_waf_transactions_total";
/// Selects every normalised WAF series.
pub const WAF_SERIES_REGEX: &str = "tigera_waf_.*";
/// Prefix of every raw WAF filter counter as `/stats/prometheus` prints it.
pub const RAW_PREFIX: &str = "waf_filter_tx_";
/// The header that carries each request's correlation id into the audit record.
pub const CORRELATION_HEADER: &str = "x-waf-e2e-id";

/// The WAF engine mode (SecRuleEngine). Write `"On"` quoted: YAML 1.1 readers (PyYAML, yamllint's
/// default `truthy` rule, Go's yaml.v2) read a plain `On` as the boolean `true`, which this schema
/// rejects; waf-e2e reads YAML 1.2 and accepts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
pub enum Mode {
    /// Interrupt matching requests.
    On,
    /// Evaluate and log, never interrupt.
    DetectionOnly,
}

impl Mode {
    /// The decision this mode produces when the rules match.
    pub fn decision(self) -> Decision {
        match self {
            Mode::On => Decision::Blocked,
            Mode::DetectionOnly => Decision::WouldBlock,
        }
    }

    /// The SecRuleEngine value.
    pub fn as_seclang(self) -> &'static str {
        match self {
            Mode::On => "On",
            Mode::DetectionOnly => "DetectionOnly",
        }
    }
}

/// A WAF decision, as the `decision` label of `tigera_waf_decisions_total` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Engine On interrupted the request.
    Blocked,
    /// DetectionOnly would have interrupted it.
    WouldBlock,
}

impl Decision {
    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Decision::Blocked => "blocked",
            Decision::WouldBlock => "would_block",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_label())
    }
}

/// The `<k>=<v>` keys the filter bakes into decision stat names (design 1.1); a value ends only at the next of these.
pub const METRIC_LABEL_KEYS: [&str; 3] = ["policy", "namespace", "authority"];

/// The key a label value contains as a whole `_`/`-`-separated word, which would make the stat name ambiguous.
pub fn embedded_metric_key(value: &str) -> Option<&'static str> {
    let words: Vec<String> = sanitize(value).split('_').map(str::to_string).collect();
    METRIC_LABEL_KEYS.into_iter().find(|k| words.iter().any(|w| w == k))
}

/// Envoy's stat-name sanitisation: every character outside `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dashed_policy_name_arrives_with_underscores() {
        assert_eq!(sanitize("block-sqli"), "block_sqli");
        assert_eq!(sanitize("a.b/c=d"), "a_b_c_d");
        assert_eq!(sanitize("plain_name9"), "plain_name9");
    }

    #[test]
    fn a_name_containing_a_metric_key_as_a_word_is_flagged() {
        assert_eq!(embedded_metric_key("dashed-policy-name"), Some("policy"));
        assert_eq!(embedded_metric_key("shop-namespace"), Some("namespace"));
        assert_eq!(embedded_metric_key("policyless-shop"), None);
        assert_eq!(embedded_metric_key("block-sqli"), None);
    }
}
