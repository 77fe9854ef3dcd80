//! The stand-in WAF filter (design 2.1): `filter/standin.c`, embedded so an installed binary can build it.
//!
//! It asks the reference WAF service (`waf_e2e::waf`, feature `reference-proxy`) for every decision
//! through Envoy's cluster `waf_e2e_reference_waf`; the bootstrap must define that cluster.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The filter's C source.
pub const SOURCE: &str = include_str!("../../filter/standin.c");

/// Envoy cluster the filter calls (the reference WAF service); must equal `waf::CALLOUT_CLUSTER`.
pub const CALLOUT_CLUSTER: &str = "waf_e2e_reference_waf";

/// Builds the stand-in filter into `cache_dir` (reused when already built) and returns the module's path.
pub fn build_standin(cache_dir: &Path) -> Result<PathBuf> {
    super::build::compile_c_module("waf-e2e-standin", SOURCE, cache_dir).context("building the stand-in WAF filter (filter/standin.c)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_calls_the_cluster_the_service_is_published_under() {
        assert!(SOURCE.contains(&format!("\"{CALLOUT_CLUSTER}\"")));
        #[cfg(feature = "reference-proxy")]
        assert_eq!(CALLOUT_CLUSTER, crate::waf::CALLOUT_CLUSTER);
    }

    #[test]
    fn the_stand_in_builds_and_exports_the_proxy_wasm_entry_points() {
        let dir = tempfile::tempdir().unwrap();
        let module = build_standin(dir.path()).unwrap();
        let bytes = std::fs::read(&module).unwrap();
        assert_eq!(&bytes[..4], b"\0asm");
        for export in [
            "proxy_abi_version_0_2_1",
            "proxy_on_memory_allocate",
            "proxy_on_context_create",
            "proxy_on_configure",
            "proxy_on_request_headers",
            "proxy_on_request_body",
            "proxy_on_response_headers",
            "proxy_on_response_body",
            "proxy_on_http_call_response",
            "proxy_on_delete",
        ] {
            // Export names are stored verbatim in the module's export section.
            assert!(bytes.windows(export.len()).any(|w| w == export.as_bytes()), "missing export {export}");
        }
    }
}
