//! A real Envoy (the release Envoy Gateway v1.7.2 runs), configured from the rendered resources the
//! way Envoy Gateway configures its proxies.
//!
//! - [`install`]: finding the binary (`--envoy`, `WAF_E2E_ENVOY`, `.tools/pip`, PATH) and its version;
//! - [`proxy_spec`]: the rendered EnvoyProxy -> command-line arguments, stats matcher, volume directories;
//! - [`extension_policy`]: an EnvoyExtensionPolicy's `spec.wasm` -> HTTP wasm filters;
//! - [`bootstrap`] and [`xds`]: the bootstrap (admin, `metrics` listener) and the gateway listener,
//!   routes and clusters, in Envoy Gateway's shape;
//! - [`process`]: the Envoy process, reconfigured through watched files.

pub mod admin;
pub mod bootstrap;
pub mod extension_policy;
pub mod install;
pub mod located;
pub mod log_flush;
pub mod pkeys;
pub mod process;
pub mod proxy_spec;
pub mod xds;

pub use extension_policy::{wasm_filters_from_document, wasm_filters_from_extension_policy, WasmFilter};
pub use log_flush::AuditFlush;
pub use install::{envoy_version, find_envoy, PINNED_ENVOY};
pub use process::{EnvoyLauncher, EnvoyOptions, EnvoyProcess};
pub use proxy_spec::{ProxyLaunch, COLLECTOR_AUDIT_PATH};
pub use xds::RouteSpec;
