//! `waf-e2e policy-trace`: the tiers, policies and rules Calico would consider for one flow between
//! the pods of a run (Prometheus, an Envoy Gateway proxy, a client, a backend), and the verdict.

use super::{offline, OfflinePolicy};
use crate::calico::tiers::{evaluate, Endpoint, Flow};
use crate::error::HarnessError;
use crate::profile::Profile;
use crate::rendered::RenderedSet;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// A pod of the run, by its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The Prometheus pod of the profile (prometheus-operator's labels).
    Prometheus,
    /// An Envoy Gateway proxy pod of the profile's Gateway.
    Proxy,
    /// A client pod in its own namespace.
    Client,
    /// A backend (echo) pod of a route.
    Backend,
}

/// Options of `waf-e2e policy-trace`.
#[derive(Debug, clap::Args)]
pub struct PolicyTraceArgs {
    /// The stack profile whose policies (and Prometheus) apply.
    #[arg(long, default_value = "oss")]
    pub profile: String,
    /// The rendered resources under test.
    #[arg(long, default_value = "fixtures/rendered")]
    pub rendered: PathBuf,
    /// The pod that opens the connection.
    #[arg(long, value_enum)]
    pub from: Role,
    /// The pod that accepts it.
    #[arg(long, value_enum)]
    pub to: Role,
    /// The destination port (TCP).
    #[arg(long)]
    pub port: u16,
    /// Evaluate the profile's policies alone, as if nothing were rendered.
    #[arg(long)]
    pub without_render: bool,
}

fn pod(policy: &OfflinePolicy, role: Role) -> &Endpoint {
    let s = &policy.scene;
    match role {
        Role::Prometheus => &s.prometheus,
        Role::Proxy => &s.proxy,
        Role::Client => &s.client,
        Role::Backend => &s.backend,
    }
}

/// The trace of the flow the arguments name, as text (the pods' labels first).
pub fn policy_trace(args: &PolicyTraceArgs) -> Result<String> {
    let root = PathBuf::from(".");
    let profile = Profile::load(&root, &args.profile)?;
    let rendered = RenderedSet::load(&args.rendered).with_context(|| format!("load rendered resources from {}", args.rendered.display()))?;
    let policy = offline(&root, &profile, &rendered)?;
    let (source, destination) = (pod(&policy, args.from), pod(&policy, args.to));
    let set = if args.without_render { &policy.without_render } else { &policy.with_render };
    let trace = evaluate(set, &Flow { source, destination, protocol: 6, port: args.port })
        .map_err(|e| HarnessError::Usage(format!("this flow cannot be decided offline: {e}")))?;
    let mut out = String::new();
    for ep in [source, destination] {
        let labels: Vec<String> = ep.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("pod {}: labels {{{}}}\n", ep.name, labels.join(", ")));
    }
    let which = if args.without_render { "the profile's policies alone" } else { "the profile's policies and the render" };
    out.push_str(&format!("policies: {which} (profile {}, rendered {})\n", profile.name, args.rendered.display()));
    out.push_str(&trace.render());
    Ok(out)
}
