//! Named waits on cluster state, each a bounded poll whose timeout names the object, the condition and what was seen.

use crate::k8s::conditions::{check_condition, parse_conditions, status_conditions, Condition};
use crate::wait::{self, Check};
use anyhow::{anyhow, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::gvk::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::Client;
use serde_json::Value;
use std::time::Duration;

/// Gateway API group/version whose objects the waits read.
pub const GATEWAY_API: (&str, &str) = ("gateway.networking.k8s.io", "v1");

/// Builds the resource of an untyped kind we know the plural of (no discovery round trip).
pub fn known_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// Reads an untyped object; `None` when it does not exist (yet).
async fn get_dynamic(client: &Client, ar: &ApiResource, ns: Option<&str>, name: &str) -> Result<Option<DynamicObject>> {
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    };
    api.get_opt(name).await.map_err(|e| anyhow!(e))
}

fn generation(obj: &DynamicObject) -> Option<i64> {
    obj.metadata.generation
}

/// Polls an untyped object until `status.conditions` has `type_`=True for its current generation.
async fn dynamic_condition(
    client: &Client,
    ar: &ApiResource,
    ns: Option<&str>,
    name: &str,
    type_: &str,
    timeout: Duration,
) -> Result<()> {
    let what = match ns {
        Some(ns) => format!("{} {ns}/{name} {type_}=True", ar.kind),
        None => format!("{} {name} {type_}=True", ar.kind),
    };
    wait::until(&what, timeout, || async move {
        Ok(match get_dynamic(client, ar, ns, name).await? {
            None => Check::NotYet("not found".into()),
            Some(obj) => match check_condition(&status_conditions(&obj.data), type_, generation(&obj)) {
                Ok(()) => Check::Met(()),
                Err(seen) => Check::NotYet(seen),
            },
        })
    })
    .await
}

/// Waits until CustomResourceDefinition `name` is Established.
pub async fn crd_established(client: &Client, name: &str, timeout: Duration) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let api = &api;
    wait::until(&format!("CustomResourceDefinition {name} Established=True"), timeout, || async move {
        let Some(crd) = api.get_opt(name).await? else { return Ok(Check::NotYet("not found".into())) };
        let conditions: Vec<Condition> = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .map(|c| Condition {
                type_: c.type_,
                status: c.status,
                reason: c.reason.unwrap_or_default(),
                message: c.message.unwrap_or_default(),
                observed_generation: c.observed_generation,
            })
            .collect();
        Ok(match check_condition(&conditions, "Established", None) {
            Ok(()) => Check::Met(()),
            Err(seen) => Check::NotYet(seen),
        })
    })
    .await
}

/// Why a Deployment is not yet available, or `None` when it is (Available=True, current generation, all replicas updated).
pub fn deployment_unavailable(d: &Deployment) -> Option<String> {
    let want = d.spec.replicas.unwrap_or(1);
    let Some(status) = &d.status else { return Some("no status yet".into()) };
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let counts = format!("ready {ready}/{want}, updated {updated}/{want}");
    if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return Some(format!("controller has not observed generation {} yet; {counts}", d.metadata.generation.unwrap_or(0)));
    }
    let conditions: Vec<Condition> = status
        .conditions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|c| Condition { type_: c.type_.unwrap_or_default(), status: c.status.unwrap_or_default(), reason: c.reason.unwrap_or_default(), message: c.message.unwrap_or_default(), observed_generation: None })
        .collect();
    if let Err(seen) = check_condition(&conditions, "Available", None) {
        return Some(format!("{seen}; {counts}"));
    }
    (updated < want || status.available_replicas.unwrap_or(0) < want).then_some(format!("rollout in progress; {counts}"))
}

/// Waits until Deployment `ns/name` is Available with every replica updated.
pub async fn deployment_available(client: &Client, ns: &str, name: &str, timeout: Duration) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let api = &api;
    wait::until(&format!("Deployment {ns}/{name} Available=True"), timeout, || async move {
        Ok(match api.get_opt(name).await? {
            None => Check::NotYet("not found".into()),
            Some(d) => deployment_unavailable(&d).map_or(Check::Met(()), Check::NotYet),
        })
    })
    .await
}

/// Waits until every Deployment in `ns` is Available (and at least one exists).
pub async fn deployments_available_in(client: &Client, ns: &str, timeout: Duration) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let api = &api;
    wait::until(&format!("every Deployment in namespace {ns} Available=True"), timeout, || async move {
        let list = api.list(&ListParams::default()).await?;
        if list.items.is_empty() {
            return Ok(Check::NotYet("no Deployments in the namespace".into()));
        }
        let waiting: Vec<String> = list
            .items
            .iter()
            .filter_map(|d| deployment_unavailable(d).map(|why| format!("{}: {why}", d.metadata.name.as_deref().unwrap_or("?"))))
            .collect();
        Ok(if waiting.is_empty() { Check::Met(()) } else { Check::NotYet(waiting.join("; ")) })
    })
    .await
}

/// Waits until Calico's TigeraStatus `calico` and `apiserver` (operator.tigera.io/v1) are Available.
pub async fn calico_ready(client: &Client, timeout: Duration) -> Result<()> {
    let ar = known_resource("operator.tigera.io", "v1", "TigeraStatus", "tigerastatuses");
    for name in ["calico", "apiserver"] {
        dynamic_condition(client, &ar, None, name, "Available", timeout).await?;
    }
    Ok(())
}

/// Waits until GatewayClass `name` is Accepted by its controller.
pub async fn gateway_class_accepted(client: &Client, name: &str, timeout: Duration) -> Result<()> {
    let ar = known_resource(GATEWAY_API.0, GATEWAY_API.1, "GatewayClass", "gatewayclasses");
    dynamic_condition(client, &ar, None, name, "Accepted", timeout).await
}

/// Waits until Gateway `ns/name` is Programmed (its proxy is deployed and configured).
pub async fn gateway_programmed(client: &Client, ns: &str, name: &str, timeout: Duration) -> Result<()> {
    let ar = known_resource(GATEWAY_API.0, GATEWAY_API.1, "Gateway", "gateways");
    dynamic_condition(client, &ar, Some(ns), name, "Programmed", timeout).await
}

/// Why an HTTPRoute is not yet accepted by all its parents, or `None` when every parent accepted it.
pub fn route_unaccepted(route: &DynamicObject) -> Option<String> {
    let route_ns = route.metadata.namespace.as_deref().unwrap_or("");
    let wanted = route.data.pointer("/spec/parentRefs").and_then(Value::as_array).map_or(0, Vec::len);
    let parents = route.data.pointer("/status/parents").and_then(Value::as_array).cloned().unwrap_or_default();
    if parents.is_empty() {
        return Some("no status.parents yet (no controller has processed the route)".into());
    }
    let mut problems = Vec::new();
    for p in &parents {
        let name = p.pointer("/parentRef/name").and_then(Value::as_str).unwrap_or("?");
        let ns = p.pointer("/parentRef/namespace").and_then(Value::as_str).unwrap_or(route_ns);
        let conditions = parse_conditions(p.get("conditions"));
        if let Err(seen) = check_condition(&conditions, "Accepted", route.metadata.generation) {
            problems.push(format!("parent {ns}/{name}: {seen}"));
        }
    }
    if parents.len() < wanted {
        problems.push(format!("{} of {wanted} parentRefs have a status", parents.len()));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Waits until HTTPRoute `ns/name` is Accepted=True in every `status.parents[]` entry.
pub async fn route_accepted(client: &Client, ns: &str, name: &str, timeout: Duration) -> Result<()> {
    let ar = known_resource(GATEWAY_API.0, GATEWAY_API.1, "HTTPRoute", "httproutes");
    let ar = &ar;
    wait::until(&format!("HTTPRoute {ns}/{name} Accepted=True by its parents"), timeout, || async move {
        Ok(match get_dynamic(client, ar, Some(ns), name).await? {
            None => Check::NotYet("not found".into()),
            Some(route) => route_unaccepted(&route).map_or(Check::Met(()), Check::NotYet),
        })
    })
    .await
}

/// Waits until Prometheus `ns/name` (monitoring.coreos.com/v1) is Available, or, for operators that
/// set no conditions, its StatefulSet `prometheus-<name>` has every replica ready.
pub async fn prometheus_ready(client: &Client, ns: &str, name: &str, timeout: Duration) -> Result<()> {
    let ar = known_resource("monitoring.coreos.com", "v1", "Prometheus", "prometheuses");
    let (ar, sts) = (&ar, &Api::<StatefulSet>::namespaced(client.clone(), ns));
    wait::until(&format!("Prometheus {ns}/{name} Available=True"), timeout, || async move {
        let Some(obj) = get_dynamic(client, ar, Some(ns), name).await? else {
            return Ok(Check::NotYet("not found".into()));
        };
        let conditions = status_conditions(&obj.data);
        if conditions.iter().any(|c| c.type_ == "Available") {
            return Ok(match check_condition(&conditions, "Available", obj.metadata.generation) {
                Ok(()) => Check::Met(()),
                Err(seen) => Check::NotYet(seen),
            });
        }
        let sts_name = format!("prometheus-{name}");
        Ok(match sts.get_opt(&sts_name).await? {
            None => Check::NotYet(format!("no Available condition and StatefulSet {sts_name} not found")),
            Some(s) => {
                let want = s.spec.replicas.unwrap_or(1);
                let ready = s.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
                if want > 0 && ready >= want {
                    Check::Met(())
                } else {
                    Check::NotYet(format!("no Available condition; StatefulSet {sts_name} ready {ready}/{want}"))
                }
            }
        })
    })
    .await
}

/// Why a pod is not Ready, or `None` when it is.
pub fn pod_unready(p: &Pod) -> Option<String> {
    let status = p.status.as_ref();
    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Unknown".into());
    if p.metadata.deletion_timestamp.is_some() {
        return Some("terminating".into());
    }
    let ready = status.and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if c.status == "True" => None,
        Some(c) => Some(format!("phase {phase}, Ready={} {}", c.status, c.reason.as_deref().unwrap_or("")).trim_end().to_string()),
        None => Some(format!("phase {phase}, no Ready condition")),
    }
}

/// Waits until at least one pod matches `selector` in `ns` and every matching pod is Ready.
pub async fn pods_ready(client: &Client, ns: &str, selector: &str, timeout: Duration) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let (api, lp) = (&api, &ListParams::default().labels(selector));
    wait::until(&format!("pods {selector:?} in namespace {ns} Ready=True"), timeout, || async move {
        let pods = api.list(lp).await?;
        if pods.items.is_empty() {
            return Ok(Check::NotYet("no pods match".into()));
        }
        let waiting: Vec<String> = pods
            .items
            .iter()
            .filter_map(|p| pod_unready(p).map(|why| format!("{}: {why}", p.metadata.name.as_deref().unwrap_or("?"))))
            .collect();
        Ok(if waiting.is_empty() { Check::Met(()) } else { Check::NotYet(waiting.join("; ")) })
    })
    .await
}

/// Waits until Namespace `name` no longer exists (after `delete_namespace`).
pub async fn namespace_deleted(client: &Client, name: &str, timeout: Duration) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let api = &api;
    wait::until(&format!("Namespace {name} deleted"), timeout, || async move {
        Ok(match api.get_opt(name).await? {
            None => Check::Met(()),
            Some(ns) => Check::NotYet(format!(
                "still present, phase {}",
                ns.status.and_then(|s| s.phase).unwrap_or_else(|| "Unknown".into())
            )),
        })
    })
    .await
}

#[cfg(test)]
mod tests;
