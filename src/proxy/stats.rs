//! Counters and their `/stats/prometheus` exposition in Envoy's exact format, for the reference proxy,
//! a STAND-IN for Envoy + the WAF filter's proxy-wasm counters (local stack only).
//!
//! Wasm stats print without the `envoy_` prefix, every character outside `[a-zA-Z0-9_]` becomes
//! `_`, nothing is appended (`_total`), and an untagged stat prints with empty braces (envoy
//! `source/server/admin/prometheus_stats_formatter.cc`). A counter exists from its first increment.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

pub use crate::waf::stats::{decision_stat_name, DecisionStat, TX_TOTAL};

#[derive(Default)]
struct Inner {
    /// Wasm (custom) counters by raw stat name.
    wasm: BTreeMap<String, u64>,
    /// Envoy's own counters: (prometheus name, tag name, tag value) -> value.
    envoy: BTreeMap<(String, String, String), u64>,
}

/// The proxy's counters.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<Inner>,
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `by` to a wasm counter, creating it on first use.
    pub fn add_wasm(&self, raw_name: &str, by: u64) {
        *self.lock().wasm.entry(raw_name.to_string()).or_default() += by;
    }

    /// Adds `by` to one of Envoy's own tagged counters (e.g. `envoy_cluster_upstream_rq_total{envoy_cluster_name=..}`).
    pub fn add_envoy(&self, name: &str, tag: &str, tag_value: &str, by: u64) {
        *self.lock().envoy.entry((name.to_string(), tag.to_string(), tag_value.to_string())).or_default() += by;
    }

    /// The current value of a wasm counter by raw name (absent = `None`).
    pub fn wasm_value(&self, raw_name: &str) -> Option<u64> {
        self.lock().wasm.get(raw_name).copied()
    }

    /// The whole exposition: Envoy counters, wasm counters, then gauges, each `# TYPE` line before its samples.
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let mut last_type: Option<&str> = None;
        for ((name, tag, value), count) in &inner.envoy {
            if last_type != Some(name.as_str()) {
                let _ = writeln!(out, "# TYPE {name} counter");
                last_type = Some(name.as_str());
            }
            let _ = writeln!(out, "{name}{{{tag}=\"{}\"}} {count}", escape_label(value));
        }
        // Distinct raw names can sanitise to the same name; Envoy would print both, so do we,
        // under one TYPE line.
        let mut wasm: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (raw, count) in &inner.wasm {
            wasm.entry(crate::contract::sanitize(raw)).or_default().push(*count);
        }
        for (name, counts) in wasm {
            let _ = writeln!(out, "# TYPE {name} counter");
            for count in counts {
                let _ = writeln!(out, "{name}{{}} {count}");
            }
        }
        out.push_str("# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n");
        out.push_str("# TYPE envoy_server_state gauge\nenvoy_server_state{} 0\n");
        out
    }
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_matches_envoys_format_for_wasm_and_envoy_stats() {
        let stats = Stats::default();
        assert!(!stats.render().contains("waf_filter"), "no wasm series before traffic");
        stats.add_wasm(TX_TOTAL, 1);
        stats.add_wasm(TX_TOTAL, 1);
        stats.add_wasm("waf_filter.tx.would_block_ruleid=949110_phase=http_request_body_namespace=shop_policy=detect-sqli", 1);
        stats.add_envoy("envoy_http_downstream_rq_total", "envoy_http_conn_manager_prefix", "http-10080", 3);
        let text = stats.render();
        assert!(text.contains("# TYPE waf_filter_tx_total counter\nwaf_filter_tx_total{} 2\n"), "{text}");
        assert!(text.contains(
            "# TYPE waf_filter_tx_would_block_ruleid_949110_phase_http_request_body_namespace_shop_policy_detect_sqli counter\n\
             waf_filter_tx_would_block_ruleid_949110_phase_http_request_body_namespace_shop_policy_detect_sqli{} 1\n"
        ), "{text}");
        assert!(text.contains("envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"http-10080\"} 3\n"), "{text}");
        assert!(!text.contains("envoy_waf"), "{text}");
    }
}
