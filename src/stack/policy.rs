//! The offline policy verdicts of a run: Calico's validation of the projectcalico.org objects the
//! profile and the render apply, then the rendered GlobalNetworkPolicy's job (`crate::calico::flows`)
//! evaluated on the pods a cluster of this profile runs. Every stack with a profile computes it
//! before it starts; the local stack also enforces the scrape verdict (`super::local`).

use super::kind::objects::ECHO_PORT;
use super::kind::plan::{GATEWAY_CONTAINER_PORT, PROXY_STATS_PORT};
use crate::calico::flows::{self, FlowVerdict, Ports, Scene};
use crate::calico::model::{PolicySet, Sourced};
use crate::calico::selector::Labels;
use crate::calico::tiers::Endpoint;
use crate::error::{BrokenResource, InputProblem, InvalidInput};
use crate::profile::{Install, Profile};
use crate::rendered::{PodTarget, RenderedSet};
use crate::schema::{Report, Subject};
use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Envoy Gateway's readiness port on every proxy (`/ready`), which Prometheus must see unchanged.
pub const PROXY_READINESS_PORT: u16 = 19003;
/// The id of the flow the rendered policy exists for.
pub const SCRAPE_FLOW: &str = "prometheus_to_proxy_metrics";

/// The policies, pods and verdicts of a run.
#[derive(Debug, Clone)]
pub struct OfflinePolicy {
    /// Profile policies plus the render.
    pub with_render: PolicySet,
    /// Profile policies alone.
    pub without_render: PolicySet,
    /// The pods and ports of the flows.
    pub scene: Scene,
    /// Object names of the rendered policies.
    pub rendered: Vec<String>,
    /// One verdict per flow.
    pub verdicts: Vec<FlowVerdict>,
}

/// The objects of the profile's `file:` installs (relative to `root`), each with its file.
pub fn profile_objects(root: &Path, profile: &Profile) -> Result<Vec<Subject>> {
    let mut out = Vec::new();
    for install in &profile.installs {
        let Install::File { path, .. } = install else { continue };
        let text = std::fs::read_to_string(root.join(path)).with_context(|| format!("read {}", path.display()))?;
        let docs: Vec<Value> = serde_saphyr::from_str_multiple(&text).map_err(|e| anyhow!("parse YAML {}: {e}", path.display()))?;
        out.extend(docs.into_iter().filter(|d| !d.is_null()).map(|value| Subject { file: path.clone(), value }));
    }
    Ok(out)
}

/// Validates the Calico objects of profile and render (problems: invalid input, exit 2), then
/// evaluates every flow with and without the render.
pub fn offline(root: &Path, profile: &Profile, rendered: &RenderedSet) -> Result<OfflinePolicy> {
    let ours = profile_objects(root, profile)?;
    let render: Vec<Subject> = rendered.documents.iter().map(|d| Subject { file: d.file.clone(), value: d.value.clone() }).collect();
    let all: Vec<Subject> = ours.iter().chain(&render).cloned().collect();
    let report = Report { problems: crate::calico::problems(&all, root), ..Report::default() };
    if let Some(invalid) = report.problems_as_invalid_input() {
        return Err(invalid.into());
    }
    let sourced = |s: &[Subject]| -> Vec<(Value, PathBuf)> { s.iter().map(|s| (s.value.clone(), s.file.clone())).collect() };
    let set = |objects: &[(Value, PathBuf)]| {
        let refs: Vec<Sourced<'_>> = objects.iter().map(|(v, f)| (v, f.clone())).collect();
        PolicySet::from_objects(&refs).map_err(|(file, message)| InvalidInput(vec![InputProblem { at: crate::input::whole_file(&file), field: "spec.tier".into(), message }]))
    };
    let with_render = set(&sourced(&all))?;
    let without_render = set(&sourced(&ours))?;
    let rendered_names: Vec<String> = with_render.policies.iter().filter(|p| render.iter().any(|r| r.file == p.file)).map(|p| p.object_name()).collect();
    let scene = scene(profile, &ours);
    let mut verdicts = flows::check(&with_render, &without_render, &rendered_names, &scene);
    if rendered_names.is_empty() {
        // A render of the PodMonitor alone (developing it in isolation): the scrape flow has no
        // rendered policy to judge. Said on every report, not enforced.
        for v in verdicts.iter_mut().filter(|v| v.id == SCRAPE_FLOW) {
            v.undecided = Some(format!("the render holds no Calico policy, so nothing of it lets Prometheus in (on a cluster: {})", v.with_render));
            (v.ok, v.problem, v.blame) = (true, None, None);
        }
    }
    Ok(OfflinePolicy { with_render, without_render, scene, rendered: rendered_names, verdicts })
}

/// The pods of a cluster of `profile`: its Prometheus (labels from prometheus-operator and the
/// Prometheus object among `objects`), an Envoy Gateway proxy of its Gateway, a client, a backend.
pub fn scene(profile: &Profile, objects: &[Subject]) -> Scene {
    let spec = &profile.prometheus;
    let cr = objects.iter().map(|s| &s.value).find(|v| v["kind"] == "Prometheus" && v["metadata"]["name"] == spec.name.as_str() && v["metadata"]["namespace"] == spec.namespace.as_str());
    let pod_labels: Labels = cr
        .and_then(|v| v.pointer("/spec/podMetadata/labels")).and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
        .unwrap_or_default();
    let version = cr.and_then(|v| v.pointer("/spec/version")).and_then(Value::as_str);
    let service_account = cr.and_then(|v| v.pointer("/spec/serviceAccountName")).and_then(Value::as_str).unwrap_or("default");
    let prometheus = flows::prometheus_pod(&spec.namespace, &spec.name, version, &pod_labels, service_account);
    let gw = &profile.gateway;
    let target = PodTarget::envoy_gateway_proxy("", &gw.name, &gw.namespace);
    // Only the metrics port's name is modelled (the PodMonitor scrapes it by name); a rule naming
    // another port of the proxy by name matches nothing here.
    let proxy = Endpoint::pod(&gw.proxy_namespace, &target.name, target.labels.clone(), Labels::new(), None, &[(target.port_name.as_str(), PROXY_STATS_PORT)]);
    let labels = |pairs: &[(&str, &str)]| -> Labels { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
    let client = Endpoint::pod("waf-e2e-client", "client", labels(&[("app.kubernetes.io/name", "waf-e2e-client")]), Labels::new(), Some("default"), &[]);
    let backend = Endpoint::pod("waf-e2e-backend", "echo", labels(&[("app.kubernetes.io/name", "waf-e2e-echo")]), Labels::new(), Some("default"), &[("http", ECHO_PORT)]);
    let ports = Ports { stats: PROXY_STATS_PORT, listener: GATEWAY_CONTAINER_PORT, other: vec![PROXY_READINESS_PORT], backend: ECHO_PORT };
    Scene { prometheus, proxy, client, backend, ports }
}

/// The offline verdicts of a run with `opts` (repository root: the working directory, as the
/// profile is found); `None` for the endpoints stack, which applies no policy.
pub fn for_run(opts: &super::StackOptions) -> Result<Option<OfflinePolicy>> {
    if opts.kind == super::StackKind::Endpoints {
        return Ok(None);
    }
    let root = PathBuf::from(".");
    let profile = Profile::load(&root, &opts.profile)?;
    let rendered = RenderedSet::load(&opts.rendered).with_context(|| format!("load rendered resources from {}", opts.rendered.display()))?;
    offline(&root, &profile, &rendered).map(Some)
}

impl OfflinePolicy {
    /// The verdict of Prometheus -> proxy metrics port.
    pub fn scrape(&self) -> Option<&FlowVerdict> {
        self.verdicts.iter().find(|v| v.id == SCRAPE_FLOW)
    }

    /// The first data-plane flow the render changes, as a broken resource.
    pub fn data_plane_broken(&self) -> Option<BrokenResource> {
        self.verdicts.iter().filter(|v| v.id != SCRAPE_FLOW).find_map(FlowVerdict::broken)
    }

    /// The scrape flow, when the policies deny it, as a broken resource.
    pub fn scrape_denied(&self) -> Option<BrokenResource> {
        self.scrape().and_then(FlowVerdict::broken)
    }

    /// One line per flow, for the run's progress output.
    pub fn lines(&self) -> Vec<String> {
        // A failure's text names the flow itself.
        self.verdicts.iter().map(|v| if v.problem.is_some() { format!("policy (offline): {}", v.property()) } else { format!("policy (offline): {}: {}", v.flow, v.property()) }).collect()
    }
}

pub mod trace;

#[cfg(test)]
mod tests;
