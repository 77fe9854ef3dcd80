//! waf-e2e: end-to-end acceptance harness for the Calico Ingress Gateway WAF observability feature.
//!
//! Layout: `scenario` (the model), `rendered` (the resources under test and the PodMonitor
//! translation), `profile` (what a stack installs and each scenario's WAF policy template), `stack`
//! (where scenarios run: local, kind, existing cluster), `proxy` (the
//! local stack's reference proxy, a stand-in for Envoy + the WAF filter), `assert` (the
//! assertion engine), `report` (progress, summary, JUnit), `runner` and `cli`.

#![warn(missing_docs)]

pub mod assert;
#[cfg(feature = "reference-proxy")]
pub mod attach;
pub mod audit;
pub mod cli;
pub mod contract;
pub mod envoy;
pub mod error;
pub mod filter;
pub mod input;
pub mod k8s;
#[cfg(feature = "reference-proxy")]
pub mod waf;
pub mod process;
pub mod profile;
pub mod prometheus;
pub mod rendered;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod schema;
pub mod stack;
pub mod timeouts;
pub mod wait;
