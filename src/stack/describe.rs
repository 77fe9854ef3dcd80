//! `waf-e2e plan` for every stack: the steps a run with these options would take, none of them taken.
//!
//! The kind and existing-cluster plan is the one `KindStack::up` executes (`kind::plan`); the local
//! and endpoints plans are the short step lists below, filled from the options and the rendered files.

use super::endpoints::EndpointsArgs;
use super::{StackKind, StackOptions};
use crate::rendered::RenderedSet;
use crate::scenario::{Capability, Scenario};
use anyhow::Result;
use std::path::Path;
use std::fmt::Write;

/// The first step of the local stack with `--runtime docker`.
const DOCKER_NETWORK: &str = "create the private Docker network waf-e2e-<run directory> (first removing the containers and networks of runs that are gone)";

/// The local stack's filter steps with the stand-in (no `--waf-wasm`).
const LOCAL_STAND_IN: &[&str] = &[
    "start the reference WAF service (ModSecurity v3 + OWASP CRS, the scenarios' directives) on {services}:<ephemeral>",
    "build the stand-in filter (proxy-wasm from filter/standin.c with clang/lld for wasm32; cached by source hash)",
];

/// The local stack's setup after the filter, in order; `{envoyproxy}`, `{podmonitor}`, `{interval}`, `{pool}` and `{envoy}` are filled in.
const LOCAL_SETUP: &[&str] = &[
    "start the recording echo backend on {services}:<ephemeral>",
    "start Envoy {envoy}{envoy_how} configured from the rendered EnvoyProxy {envoyproxy} (log level, extraArgs, stats matcher; /access_logs -> the run's directory), admin and the stats listener {published}",
    "start Prometheus{prometheus_how} with the translation of PodMonitor {podmonitor}, scraping Envoy's stats listener every {interval}",
    "wait up to {target_up}: scrape pool {pool} has a target up",
];

/// The local stack's teardown.
const LOCAL_TEARDOWN: &str = "teardown: stop Prometheus, Envoy and the WAF service, delete the run's directory (also on failure and Ctrl-C)";

/// What the stand-in filter can do (every scenario capability).
const STAND_IN_CAPABILITIES: &[Capability] = &[Capability::Blocking, Capability::WouldBlockCounter, Capability::AuditLog];

/// The plan of a run with `opts` on `scenarios`, as printed by `waf-e2e plan`.
pub fn plan_text(opts: &StackOptions, scenarios: &[Scenario]) -> Result<String> {
    match opts.kind {
        StackKind::Kind | StackKind::Cluster => Ok(super::kind::plan::build_plan(&opts.cluster_opts(), scenarios)?.to_string()),
        StackKind::Local => local_plan(opts, scenarios),
        StackKind::Endpoints => Ok(endpoints_plan(&opts.endpoints, scenarios)),
    }
}

fn local_plan(opts: &StackOptions, scenarios: &[Scenario]) -> Result<String> {
    let rendered = RenderedSet::load(&opts.rendered)?;
    let envoyproxy = rendered
        .others()
        .find(|d| d.kind == "EnvoyProxy")
        .map_or_else(|| "(none rendered: Envoy Gateway's defaults)".to_string(), |d| format!("{}/{} ({})", d.namespace.as_deref().unwrap_or("default"), d.name, d.file.display()));
    let pm = &rendered.podmonitor;
    let docker = match &opts.runtime {
        crate::container::Runtime::Docker(images) => Some(images),
        crate::container::Runtime::Native => None,
    };
    let fill = [
        ("{services}", docker.map_or("127.0.0.1".to_string(), |_| "the Docker network's gateway address".to_string())),
        ("{envoy_how}", docker.map_or(String::new(), |i| format!(" as a container of {}", i.envoy))),
        ("{published}", docker.map_or("on loopback".to_string(), |_| "published on 127.0.0.1".to_string())),
        ("{prometheus_how}", docker.map_or(String::new(), |i| format!(" as a container of {}", i.prometheus))),
        ("{envoy}", crate::envoy::install::PINNED_ENVOY.to_string()),
        ("{envoyproxy}", envoyproxy),
        ("{podmonitor}", format!("{}/{}", pm.namespace(), pm.metadata.name)),
        ("{interval}", format!("{}ms", opts.scrape_interval.as_millis())),
        ("{pool}", pm.job_name(0)),
        ("{target_up}", format!("{}s", opts.timeouts.target_up.as_secs())),
    ];
    // With --waf-wasm the filter is the user's and what it can do is the profile's, as the local stack decides.
    let fill_in = |s: &str| fill.iter().fold(s.to_string(), |s, (k, v)| s.replace(k, v));
    let (mut steps, capabilities) = match &opts.waf_wasm {
        None => (LOCAL_STAND_IN.iter().map(|s| fill_in(s)).collect::<Vec<_>>(), STAND_IN_CAPABILITIES.to_vec()),
        Some(file) => {
            let profile = crate::profile::Profile::load(Path::new("."), &opts.profile)?;
            let flavour = opts.waf_flavour.clone().unwrap_or_else(|| profile.filter.flavour.clone());
            (vec![format!("load the WAF filter {} (flavour `{flavour}`; capabilities of profile {})", file.display(), profile.name)], profile.capabilities)
        }
    };
    if docker.is_some() {
        steps.insert(0, DOCKER_NETWORK.into());
    }
    steps.extend(LOCAL_SETUP.iter().map(|s| fill_in(s)));
    for s in scenarios {
        steps.push(match missing(s, &capabilities) {
            Some(why) => format!("scenario {}: SKIPPED, the local stack lacks {why}", s.name()),
            None => format!(
                "scenario {}: add a route for Host {}.waf-e2e.test and WAF policy waf-e2e-{}/{} ({}) as a wasm filter enabled on that route only; send {} request(s); remove both after",
                s.name(), s.name(), s.name(), s.policy.name.value, rules(s), s.request_count()),
        });
    }
    steps.push(match docker {
        Some(_) => format!("{LOCAL_TEARDOWN}; remove both containers and the network"),
        None => LOCAL_TEARDOWN.into(),
    });
    Ok(numbered(&format!("plan of a run on the local stack, run id {}; rendered resources from {}", opts.run_id, opts.rendered.display()), &steps))
}

fn endpoints_plan(args: &EndpointsArgs, scenarios: &[Scenario]) -> String {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let capabilities: Vec<Capability> =
        if args.capabilities.is_empty() { vec![Capability::Blocking, Capability::WouldBlockCounter, Capability::AuditLog] } else { args.capabilities.clone() };
    let gateway_namespace = args.gateway_namespace.clone().or_else(|| args.policy_namespace.clone()).unwrap_or_default();
    let mut steps = vec![
        format!("check that Prometheus at {} has an active target in scrape job {}", text(&args.prometheus_url), text(&args.scrape_job)),
        format!("check that the gateway at {} accepts connections", text(&args.gateway_url)),
        format!("read the audit log from {}", args.audit_source()),
    ];
    for s in scenarios {
        steps.push(match missing(s, &capabilities) {
            Some(why) => format!("scenario {}: SKIPPED, the deployment lacks {why} (--capability)", s.name()),
            None => format!(
                "scenario {}: install nothing; WAF policy {}/{} ({}) must already be attached to a route for Host {} on Gateway {gateway_namespace}/{}; send {} request(s) to {}",
                s.name(), text(&args.policy_namespace), s.policy.name.value, rules(s), args.host_of(s.name()), text(&args.gateway), s.request_count(), text(&args.gateway_url)),
        });
    }
    steps.push("teardown: nothing (the deployment is not the harness's)".into());
    numbered("plan of a run on the endpoints stack (a deployment the harness did not start)", &steps)
}

/// The capabilities `scenario` needs that `have` lacks, named as scenario files name them.
fn missing(scenario: &Scenario, have: &[Capability]) -> Option<String> {
    let lacking: Vec<String> = scenario.needs().into_iter().filter(|c| !have.contains(c)).map(capability_name).collect();
    (!lacking.is_empty()).then(|| lacking.join(", "))
}

/// A capability as scenario files spell it (`would_block_counter`).
pub fn capability_name(c: Capability) -> String {
    serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{c:?}"))
}

fn rules(s: &Scenario) -> String {
    let directives = s.policy.rules.directives.as_ref().is_some_and(|d| !d.value.trim().is_empty());
    let rules = match (s.policy.rules.crs, directives) {
        (true, true) => "CRS + directives",
        (true, false) => "CRS",
        _ => "directives",
    };
    format!("{}, {rules}", s.policy.mode.as_seclang())
}

fn numbered(header: &str, steps: &[String]) -> String {
    let mut out = format!("{header}\n");
    for (i, s) in steps.iter().enumerate() {
        let _ = writeln!(out, "{:>3}. {s}", i + 1);
    }
    out
}
