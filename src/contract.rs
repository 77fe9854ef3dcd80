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
}
