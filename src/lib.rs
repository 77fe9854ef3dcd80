//! waf-e2e: end-to-end acceptance harness for the Calico Ingress Gateway WAF observability feature.
//!
//! Layout: `scenario` (the model), `rendered` (the resources under test and the PodMonitor
//! translation), `profile` (what a stack installs and each scenario's WAF policy template), `stack`
//! (where scenarios run: local, kind, existing cluster, endpoints), `envoy` (a real Envoy configured
//! as Envoy Gateway configures its proxies), `waf` (the reference WAF service the stand-in filter
//! calls), `filter` (proxy-wasm modules built from C: the stand-in filter), `assert` (the
//! assertion engine), `outcome` (a scenario's verdict and timings), `report` (progress, summary,
//! JUnit), `runner` and `cli`. Dependencies point one way (cli -> runner -> stack -> k8s, audit, ...;
//! report and runner both -> outcome); the `module_graph` integration test fails on a cycle.
//!
//! References such as "design 1.2" in comments are to the sections of `docs/design.md`.

#![warn(missing_docs)]

pub mod assert;
#[cfg(feature = "reference-proxy")]
pub mod attach;
pub mod audit;
pub mod calico;
pub mod cli;
pub mod container;
pub mod contract;
#[cfg(feature = "reference-proxy")]
pub mod corpus;
pub mod outcome;
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
pub mod rundir;
pub mod runner;
pub mod scenario;
pub mod schema;
pub mod stack;
pub mod timeouts;
pub mod wait;
