//! The scrape-target wait, and who to blame when it times out: a target that stays down while the
//! proxy answers through a port-forward (which bypasses network policy), with rendered
//! GlobalNetworkPolicies that do not let the Prometheus pod reach the proxy's metrics port, is a
//! broken resource under test (a failed verdict naming the policy), not an infrastructure failure.
//!
//! NOT RUN against a real cluster here: the decision is tested against the mock API service.

use super::plan::PROXY_STATS_PORT;
use crate::calico::flows::{blame as blame_rendered, passed_note};
use crate::calico::model::{Action, PolicySet, Sourced};
use crate::calico::selector::Labels;
use crate::calico::tiers::{evaluate, Endpoint, Flow};
use super::steps::target_up;
use crate::error::BrokenResource;
use crate::wait;
use anyhow::{anyhow, Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams};
use kube::Client;
use serde_json::Value;
use std::time::Duration;

/// Everything the wait and its diagnosis need.
#[derive(Debug, Clone)]
pub struct ScrapeProbe {
    /// Prometheus' base URL (a port-forward).
    pub prometheus_url: String,
    /// The proxy's stats base URL (a port-forward: it reaches the pod without crossing network policy).
    pub stats_url: String,
    /// The scrape pool of the rendered PodMonitor.
    pub pool: String,
    /// The Prometheus pod (namespace, name).
    pub prometheus_pod: (String, String),
    /// The proxy pods (namespace, label selector).
    pub proxies: (String, String),
    /// Every projectcalico.org/v3 object applied (the profile's tiers and policies, the render), with its file.
    pub policies: Vec<(Value, std::path::PathBuf)>,
    /// Object names of the rendered policies among them (`GlobalNetworkPolicy name`).
    pub rendered: Vec<String>,
}

/// Waits until the pool has a target up; on timeout, a [`BrokenResource`] naming the rendered
/// GlobalNetworkPolicy when it is what keeps Prometheus out, else the timeout with the diagnosis.
pub async fn target_up_or_blame(client: &Client, probe: &ScrapeProbe, timeout: Duration) -> Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let url = format!("{}/api/v1/targets?state=active", probe.prometheus_url);
    let targets = || {
        let (http, url) = (http.clone(), url.clone());
        async move { Ok::<Value, anyhow::Error>(http.get(&url).send().await?.error_for_status()?.json().await?) }
    };
    let waited = wait::until(&format!("scrape pool {} has a target up", probe.pool), timeout, || {
        let t = targets();
        async move { Ok(target_up(&t.await?, &probe.pool)) }
    })
    .await;
    let Err(timed_out) = waited else { return Ok(()) };
    match blame(client, probe, &http, &targets().await?).await {
        Ok(Some(broken)) => Err(anyhow::Error::new(broken)),
        Ok(None) => Err(timed_out),
        Err(e) => Err(timed_out.context(format!("(could not tell whether a network policy is the cause: {e:#})"))),
    }
}

/// The broken GlobalNetworkPolicy, if the down targets are down because of it; `None` when it is not
/// the cause (no target at all, the proxy itself does not answer, or the policies let Prometheus in).
async fn blame(client: &Client, probe: &ScrapeProbe, http: &reqwest::Client, targets: &Value) -> Result<Option<BrokenResource>> {
    let active = targets.pointer("/data/activeTargets").and_then(Value::as_array).cloned().unwrap_or_default();
    let down: Vec<&Value> = active.iter().filter(|t| t["scrapePool"] == probe.pool.as_str() && t["health"] != "up").collect();
    if down.is_empty() {
        return Ok(None);
    }
    let stats = http.get(format!("{}/stats/prometheus", probe.stats_url)).send().await.and_then(|r| r.error_for_status());
    if stats.is_err() {
        return Ok(None);
    }
    let (pns, pname) = &probe.prometheus_pod;
    let prometheus = endpoint_of(client, pns, pname).await?;
    let (xns, selector) = &probe.proxies;
    let pods = Api::<Pod>::namespaced(client.clone(), xns).list(&ListParams::default().labels(selector)).await.with_context(|| format!("list proxy pods in {xns}"))?;
    let pod = pods.items.first().ok_or_else(|| anyhow!("no proxy pod matches {selector} in {xns}"))?;
    let proxy = endpoint_from(client, pod).await?;
    let last_error = down[0]["lastError"].as_str().unwrap_or("").to_string();
    let refs: Vec<Sourced<'_>> = probe.policies.iter().map(|(v, f)| (v, f.clone())).collect();
    let set = PolicySet::from_objects(&refs).map_err(|(_, e)| anyhow!(e))?;
    let trace = evaluate(&set, &Flow { source: &prometheus, destination: &proxy, protocol: 6, port: PROXY_STATS_PORT }).map_err(|e| anyhow!(e))?;
    if trace.verdict() == Action::Allow {
        return Ok(None);
    }
    let observed = format!(
        "the scrape target of {} stayed down ({}) while the proxy answers /stats/prometheus through a port-forward (which crosses no network policy)",
        probe.pool,
        if last_error.is_empty() { "no lastError".to_string() } else { format!("lastError: {last_error}") }
    );
    let conn = format!("Prometheus pod {} to TCP {PROXY_STATS_PORT} of proxy pod {}", prometheus.name, proxy.name);
    let problem = format!("{observed}; the policies deny {conn}: {}{}", trace.summary(), passed_note(&trace, &probe.rendered));
    Ok(Some(BrokenResource { resource: blame_rendered(&trace, &probe.rendered), problem }))
}

async fn endpoint_of(client: &Client, ns: &str, name: &str) -> Result<Endpoint> {
    let pod = Api::<Pod>::namespaced(client.clone(), ns).get(name).await.with_context(|| format!("get pod {ns}/{name}"))?;
    endpoint_from(client, &pod).await
}

async fn endpoint_from(client: &Client, pod: &Pod) -> Result<Endpoint> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let namespace = Api::<Namespace>::all(client.clone()).get(&ns).await.with_context(|| format!("get namespace {ns}"))?;
    let labels = |l: &Option<std::collections::BTreeMap<String, String>>| -> Labels { l.clone().unwrap_or_default() };
    let spec = pod.spec.as_ref();
    let ports: Vec<(String, u16)> = spec.into_iter().flat_map(|s| &s.containers).flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?))).collect();
    let ports: Vec<(&str, u16)> = ports.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    let service_account = spec.and_then(|s| s.service_account_name.as_deref());
    Ok(Endpoint::pod(&ns, pod.metadata.name.as_deref().unwrap_or("?"), labels(&pod.metadata.labels), labels(&namespace.metadata.labels), service_account, &ports))
}

#[cfg(test)]
mod tests;
