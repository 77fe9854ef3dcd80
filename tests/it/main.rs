//! Every integration test of waf-e2e, in one test binary: one compile and one link instead of one
//! per file (the link of each binary costs as much as its compile; see README "The test command").
//! Each module is one former test file; nextest still runs every test in its own process.

mod binary;
#[cfg(feature = "reference-proxy")]
mod common;

mod attach;
mod calico_local_run;
mod cli;
mod cli_conventions;
mod cli_local_run;
mod cli_reports;
mod corpus;
mod docker_runtime;
mod endpoints_stack;
mod envoy_process;
mod envoy_translation;
mod faults;
mod fuzz;
mod interrupt;
mod interrupt_reports;
mod kind_plan;
mod kind_preflight;
mod local_broken_render;
mod local_negative;
mod local_scenarios;
mod module_graph;
mod policy_trace;
mod orphans;
mod rendered_prometheus;
mod rendered_prometheus_process;
mod rendered_translation;
mod schema;
mod schema_shared_crds;
mod standin_filter;
mod watch;
