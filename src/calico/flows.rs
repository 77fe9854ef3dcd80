//! The rendered GlobalNetworkPolicy's job, as flows with an expected verdict: Prometheus must reach
//! the proxy's metrics port, and nothing else the proxy does may change because of the render.
//! Each flow is evaluated with the profile's policies plus the render, and with the profile's alone.

use super::model::{Action, PolicySet};
use super::selector::Labels;
use super::tiers::{evaluate, DecidedBy, Endpoint, Flow, Trace};
use crate::error::BrokenResource;
use serde::Serialize;

/// The ports of the flows (Envoy Gateway's container ports and the backend's).
#[derive(Debug, Clone)]
pub struct Ports {
    /// The proxy's stats port Prometheus scrapes (`metrics`).
    pub stats: u16,
    /// The proxy's gateway listener port clients connect to.
    pub listener: u16,
    /// Other proxy ports Prometheus must see unchanged (readiness, ...).
    pub other: Vec<u16>,
    /// The backend's port.
    pub backend: u16,
}

/// The pods of the flows.
#[derive(Debug, Clone)]
pub struct Scene {
    /// The Prometheus pod that evaluates the PodMonitor.
    pub prometheus: Endpoint,
    /// An Envoy Gateway proxy pod.
    pub proxy: Endpoint,
    /// A client of the gateway (a pod in its own namespace).
    pub client: Endpoint,
    /// A backend of a route.
    pub backend: Endpoint,
    /// The ports.
    pub ports: Ports,
}

/// What a flow must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    /// Allowed with the render.
    Allow,
    /// The same verdict with and without the render.
    Unchanged,
}

/// One flow's offline verdict, as reports carry it.
#[derive(Debug, Clone, Serialize)]
pub struct FlowVerdict {
    /// Stable id (`prometheus_to_proxy_metrics`, ...), the JUnit property's suffix.
    pub id: String,
    /// The flow, as text.
    pub flow: String,
    /// What it must be.
    pub expected: Expectation,
    /// The verdict with the render, and what decided it.
    pub with_render: String,
    /// The verdict with the profile's policies alone.
    pub without_render: String,
    /// Whether the expectation holds.
    pub ok: bool,
    /// For a failed expectation: the resource to blame (the rendered policy that decided, or that
    /// passed the flow on).
    pub blame: Option<String>,
    /// For a failed expectation: what is wrong, in a sentence.
    pub problem: Option<String>,
    /// Why the flow could not be decided offline (a rule reached before any decision needs what
    /// only a cluster has: addresses, HTTP requests); reported, never guessed.
    pub undecided: Option<String>,
}

impl FlowVerdict {
    /// `ok: Allow (...)` or `FAILED: ...`, the JUnit property value.
    pub fn property(&self) -> String {
        match (&self.problem, &self.undecided) {
            (Some(p), _) => format!("FAILED: {p}"),
            (None, Some(u)) => format!("NOT DECIDED offline: {u}"),
            (None, None) => format!("ok: {}", self.with_render),
        }
    }

    /// The failure as a broken resource under test, if it failed.
    pub fn broken(&self) -> Option<BrokenResource> {
        let problem = self.problem.clone()?;
        Some(BrokenResource { resource: self.blame.clone().unwrap_or_else(|| "GlobalNetworkPolicy (rendered)".into()), problem })
    }
}

/// Every flow of the GNP's job, evaluated. `rendered` names the rendered policies (object names).
pub fn check(with: &PolicySet, without: &PolicySet, rendered: &[String], scene: &Scene) -> Vec<FlowVerdict> {
    let p = &scene.ports;
    let tcp = |source, destination, port| Flow { source, destination, protocol: 6, port };
    let mut flows = vec![
        ("prometheus_to_proxy_metrics".to_string(), Expectation::Allow, tcp(&scene.prometheus, &scene.proxy, p.stats)),
        ("client_to_proxy_listener".to_string(), Expectation::Unchanged, tcp(&scene.client, &scene.proxy, p.listener)),
        ("proxy_to_backend".to_string(), Expectation::Unchanged, tcp(&scene.proxy, &scene.backend, p.backend)),
        (format!("prometheus_to_proxy_port_{}", p.listener), Expectation::Unchanged, tcp(&scene.prometheus, &scene.proxy, p.listener)),
    ];
    for port in &p.other {
        flows.push((format!("prometheus_to_proxy_port_{port}"), Expectation::Unchanged, tcp(&scene.prometheus, &scene.proxy, *port)));
    }
    flows.into_iter().map(|(id, expected, flow)| verdict(id, expected, &flow, with, without, rendered)).collect()
}

fn verdict(id: String, expected: Expectation, flow: &Flow<'_>, with: &PolicySet, without: &PolicySet, rendered: &[String]) -> FlowVerdict {
    let (with_trace, without_trace) = match (evaluate(with, flow), evaluate(without, flow)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            let undecided = format!("{flow}: {e}");
            let none = || "not decided".to_string();
            return FlowVerdict { id, flow: flow.to_string(), expected, with_render: none(), without_render: none(), ok: true, blame: None, problem: None, undecided: Some(undecided) };
        }
    };
    let problem = match expected {
        Expectation::Allow if with_trace.verdict() != Action::Allow => {
            Some(format!("{flow} must be allowed by the render, and the policies deny it: {}{}", with_trace.summary(), passed_note(&with_trace, rendered)))
        }
        Expectation::Unchanged if with_trace.verdict() != without_trace.verdict() => Some(format!(
            "{flow} changes because of the render (the data plane must not): with it {}, without it {}",
            with_trace.summary(),
            without_trace.summary()
        )),
        _ => None,
    };
    let blame = problem.as_ref().map(|_| blame(&with_trace, rendered));
    FlowVerdict {
        id,
        flow: flow.to_string(),
        expected,
        with_render: with_trace.summary(),
        without_render: without_trace.summary(),
        ok: problem.is_none(),
        blame,
        problem,
        undecided: None,
    }
}

/// The rendered policies that passed the flow on before a later tier decided it, as a clause.
pub fn passed_note(trace: &Trace, rendered: &[String]) -> String {
    let (_, decided) = trace.deciding();
    let ours: Vec<&String> = decided.passed_by.iter().filter(|p| rendered.iter().any(|r| p.starts_with(r.as_str()))).collect();
    if ours.is_empty() {
        String::new()
    } else {
        format!("; the render passed it on instead of allowing it ({})", ours.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
    }
}

/// The rendered policy to blame (its object name): the one that decided, else the one that passed
/// the flow on, else every rendered policy (none of them selected the endpoint).
pub fn blame(trace: &Trace, rendered: &[String]) -> String {
    let (_, decided) = trace.deciding();
    let decider = match &decided.by {
        DecidedBy::Rule { policy, .. } => rendered.iter().find(|r| *r == policy),
        DecidedBy::TierEnd { policies, .. } => rendered.iter().find(|r| policies.contains(r)),
        DecidedBy::Profile => None,
    };
    let passer = || rendered.iter().find(|r| decided.passed_by.iter().any(|p| p.starts_with(&format!("{r} "))));
    match decider.or_else(passer) {
        Some(r) => r.clone(),
        None if rendered.is_empty() => "GlobalNetworkPolicy (none rendered)".into(),
        None => rendered.join(", "),
    }
}

/// The Prometheus pod prometheus-operator v0.89.0 creates for Prometheus `name` (its StatefulSet's
/// pod labels, then the CR's `spec.podMetadata.labels`), with its service account.
pub fn prometheus_pod(namespace: &str, name: &str, version: Option<&str>, pod_labels: &Labels, service_account: &str) -> Endpoint {
    let pod = format!("prometheus-{name}-0");
    let mut labels: Labels = [
        ("app.kubernetes.io/instance", name),
        ("app.kubernetes.io/managed-by", "prometheus-operator"),
        ("app.kubernetes.io/name", "prometheus"),
        ("operator.prometheus.io/name", name),
        ("operator.prometheus.io/shard", "0"),
        ("prometheus", name),
        ("statefulset.kubernetes.io/pod-name", pod.as_str()),
        ("apps.kubernetes.io/pod-index", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(v) = version {
        labels.insert("app.kubernetes.io/version".into(), v.trim_start_matches('v').to_string());
    }
    labels.extend(pod_labels.clone());
    Endpoint::pod(namespace, &pod, labels, Labels::new(), Some(service_account), &[("web", 9090)])
}

#[cfg(test)]
mod tests;
