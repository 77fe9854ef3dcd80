//! Each named wait against the fake API server: met, and timed out with a message naming what was missing.

use super::*;
use crate::k8s::testing::{not_found, ok, MockApi};
use serde_json::json;

const SHORT: Duration = Duration::from_millis(300);
const ENOUGH: Duration = Duration::from_secs(3);

/// A fake server answering `path` with `body` (404 elsewhere).
fn serving(path: &'static str, body: Value) -> MockApi {
    MockApi::start(move |r| if r.path == path { ok(body.clone()) } else { not_found(&r.path) })
}

fn with_conditions(api_version: &str, kind: &str, ns: Option<&str>, name: &str, conditions: Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": ns, "generation": 1}, "status": {"conditions": conditions}})
}

async fn timed_out(fut: impl std::future::Future<Output = Result<()>>) -> String {
    format!("{:#}", fut.await.expect_err("the wait should time out"))
}

#[tokio::test]
async fn crd_established_is_met_when_established_is_true() {
    let crd = with_conditions("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, "gateways.gateway.networking.k8s.io",
        json!([{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}]));
    let api = serving("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gateways.gateway.networking.k8s.io", crd);
    crd_established(&api.client, "gateways.gateway.networking.k8s.io", ENOUGH).await.unwrap();
}

#[tokio::test]
async fn crd_established_times_out_naming_the_crd_and_what_it_saw() {
    let crd = with_conditions("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, "x.example.com",
        json!([{"type": "Established", "status": "False", "reason": "Installing"}]));
    let api = serving("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.example.com", crd);
    let err = timed_out(crd_established(&api.client, "x.example.com", SHORT)).await;
    assert!(err.contains("CustomResourceDefinition x.example.com Established=True"), "{err}");
    assert!(err.contains("Established=False (Installing)"), "{err}");
    let missing = MockApi::start(|r| not_found(&r.path));
    let err = timed_out(crd_established(&missing.client, "y.example.com", SHORT)).await;
    assert!(err.contains("y.example.com") && err.contains("not found"), "{err}");
}

fn deployment(name: &str, available: &str, ready: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "envoy-gateway-system", "generation": 2},
        "spec": {"replicas": 1, "selector": {}, "template": {}},
        "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": ready, "availableReplicas": ready,
            "conditions": [{"type": "Available", "status": available, "reason": "MinimumReplicasUnavailable"}]}})
}

#[tokio::test]
async fn deployment_available_is_met_when_available_and_rolled_out() {
    let api = serving("/apis/apps/v1/namespaces/envoy-gateway-system/deployments/envoy-gateway", deployment("envoy-gateway", "True", 1));
    deployment_available(&api.client, "envoy-gateway-system", "envoy-gateway", ENOUGH).await.unwrap();
}

#[tokio::test]
async fn deployment_available_times_out_with_condition_and_replica_counts() {
    let api = serving("/apis/apps/v1/namespaces/envoy-gateway-system/deployments/envoy-gateway", deployment("envoy-gateway", "False", 0));
    let err = timed_out(deployment_available(&api.client, "envoy-gateway-system", "envoy-gateway", SHORT)).await;
    assert!(err.contains("Deployment envoy-gateway-system/envoy-gateway Available=True"), "{err}");
    assert!(err.contains("Available=False (MinimumReplicasUnavailable)") && err.contains("ready 0/1"), "{err}");
}

#[tokio::test]
async fn deployments_available_in_needs_every_deployment() {
    let list = |second: &str| json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {},
        "items": [deployment("a", "True", 1), deployment("b", second, 0)]});
    let good = serving("/apis/apps/v1/namespaces/envoy-gateway-system/deployments", list("True"));
    // "True" with 0 available replicas is still a rollout in progress
    let err = timed_out(deployments_available_in(&good.client, "envoy-gateway-system", SHORT)).await;
    assert!(err.contains("b: rollout in progress"), "{err}");
    let bad = serving("/apis/apps/v1/namespaces/envoy-gateway-system/deployments", list("False"));
    let err = timed_out(deployments_available_in(&bad.client, "envoy-gateway-system", SHORT)).await;
    assert!(err.contains("every Deployment in namespace envoy-gateway-system") && err.contains("b: Available=False"), "{err}");
    assert!(!err.contains("a:"), "{err}");
    let all = json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}, "items": [deployment("a", "True", 1)]});
    let ok_api = serving("/apis/apps/v1/namespaces/envoy-gateway-system/deployments", all);
    deployments_available_in(&ok_api.client, "envoy-gateway-system", ENOUGH).await.unwrap();
    let empty = serving("/apis/apps/v1/namespaces/x/deployments", json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}, "items": []}));
    assert!(timed_out(deployments_available_in(&empty.client, "x", SHORT)).await.contains("no Deployments"));
}

fn tigera(apiserver: &'static str) -> MockApi {
    MockApi::start(move |r| {
        let status = match r.path.rsplit('/').next().unwrap() {
            "calico" => "True",
            "apiserver" => apiserver,
            _ => return not_found(&r.path),
        };
        assert!(r.path.starts_with("/apis/operator.tigera.io/v1/tigerastatuses/"), "{}", r.path);
        ok(with_conditions("operator.tigera.io/v1", "TigeraStatus", None, r.path.rsplit('/').next().unwrap(),
            json!([{"type": "Available", "status": status}, {"type": "Progressing", "status": "False"}])))
    })
}

#[tokio::test]
async fn calico_ready_needs_calico_and_apiserver_available() {
    calico_ready(&tigera("True").client, ENOUGH).await.unwrap();
    let err = timed_out(calico_ready(&tigera("False").client, SHORT)).await;
    assert!(err.contains("TigeraStatus apiserver Available=True") && err.contains("Available=False"), "{err}");
}

#[tokio::test]
async fn gateway_class_accepted_reads_the_cluster_scoped_class() {
    let path = "/apis/gateway.networking.k8s.io/v1/gatewayclasses/eg";
    let accepted = serving(path, with_conditions("gateway.networking.k8s.io/v1", "GatewayClass", None, "eg", json!([{"type": "Accepted", "status": "True", "observedGeneration": 1}])));
    gateway_class_accepted(&accepted.client, "eg", ENOUGH).await.unwrap();
    let pending = serving(path, with_conditions("gateway.networking.k8s.io/v1", "GatewayClass", None, "eg", json!([{"type": "Accepted", "status": "Unknown", "reason": "Pending"}])));
    let err = timed_out(gateway_class_accepted(&pending.client, "eg", SHORT)).await;
    assert!(err.contains("GatewayClass eg Accepted=True") && err.contains("Accepted=Unknown (Pending)"), "{err}");
}

#[tokio::test]
async fn gateway_programmed_is_met_only_with_programmed_true() {
    let path = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/eg";
    let programmed = serving(path, with_conditions("gateway.networking.k8s.io/v1", "Gateway", Some("shop"), "eg",
        json!([{"type": "Accepted", "status": "True"}, {"type": "Programmed", "status": "True", "observedGeneration": 1}])));
    gateway_programmed(&programmed.client, "shop", "eg", ENOUGH).await.unwrap();
    let no_address = serving(path, with_conditions("gateway.networking.k8s.io/v1", "Gateway", Some("shop"), "eg",
        json!([{"type": "Programmed", "status": "False", "reason": "AddressNotAssigned", "message": "No addresses have been assigned"}])));
    let err = timed_out(gateway_programmed(&no_address.client, "shop", "eg", SHORT)).await;
    assert!(err.contains("Gateway shop/eg Programmed=True"), "{err}");
    assert!(err.contains("Programmed=False (AddressNotAssigned: No addresses have been assigned)"), "{err}");
    let only_accepted = serving(path, with_conditions("gateway.networking.k8s.io/v1", "Gateway", Some("shop"), "eg", json!([{"type": "Accepted", "status": "True"}])));
    let err = timed_out(gateway_programmed(&only_accepted.client, "shop", "eg", SHORT)).await;
    assert!(err.contains("no Programmed condition; conditions: Accepted=True"), "{err}");
}

fn route(parents: Value) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop", "generation": 1},
        "spec": {"parentRefs": [{"name": "eg"}]}, "status": {"parents": parents}})
}

#[tokio::test]
async fn route_accepted_needs_accepted_true_in_every_parent() {
    let path = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/web";
    let accepted = serving(path, route(json!([{"parentRef": {"name": "eg"}, "controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
        "conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 1}, {"type": "ResolvedRefs", "status": "True"}]}])));
    route_accepted(&accepted.client, "shop", "web", ENOUGH).await.unwrap();
    let refused = serving(path, route(json!([{"parentRef": {"name": "eg", "namespace": "infra"},
        "conditions": [{"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners"}]}])));
    let err = timed_out(route_accepted(&refused.client, "shop", "web", SHORT)).await;
    assert!(err.contains("HTTPRoute shop/web Accepted=True"), "{err}");
    assert!(err.contains("parent infra/eg: Accepted=False (NotAllowedByListeners)"), "{err}");
    let unprocessed = serving(path, route(json!([])));
    assert!(timed_out(route_accepted(&unprocessed.client, "shop", "web", SHORT)).await.contains("no status.parents yet"));
}

#[tokio::test]
async fn prometheus_ready_uses_the_available_condition() {
    let path = "/apis/monitoring.coreos.com/v1/namespaces/monitoring/prometheuses/waf";
    let available = serving(path, with_conditions("monitoring.coreos.com/v1", "Prometheus", Some("monitoring"), "waf",
        json!([{"type": "Available", "status": "True", "observedGeneration": 1}, {"type": "Reconciled", "status": "True"}])));
    prometheus_ready(&available.client, "monitoring", "waf", ENOUGH).await.unwrap();
    let degraded = serving(path, with_conditions("monitoring.coreos.com/v1", "Prometheus", Some("monitoring"), "waf",
        json!([{"type": "Available", "status": "False", "reason": "NoPodReady"}])));
    let err = timed_out(prometheus_ready(&degraded.client, "monitoring", "waf", SHORT)).await;
    assert!(err.contains("Prometheus monitoring/waf Available=True") && err.contains("Available=False (NoPodReady)"), "{err}");
}

#[tokio::test]
async fn prometheus_ready_falls_back_to_its_statefulset_without_conditions() {
    let sts = |ready: i32| json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "prometheus-waf", "namespace": "monitoring"},
        "spec": {"replicas": 1, "selector": {}, "serviceName": "", "template": {}}, "status": {"replicas": 1, "readyReplicas": ready}});
    let serve = move |ready: i32| {
        let set = sts(ready);
        MockApi::start(move |r| match r.path.as_str() {
            "/apis/monitoring.coreos.com/v1/namespaces/monitoring/prometheuses/waf" => ok(json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus", "metadata": {"name": "waf", "namespace": "monitoring"}, "status": {}})),
            "/apis/apps/v1/namespaces/monitoring/statefulsets/prometheus-waf" => ok(set.clone()),
            p => not_found(p),
        })
    };
    prometheus_ready(&serve(1).client, "monitoring", "waf", ENOUGH).await.unwrap();
    let err = timed_out(prometheus_ready(&serve(0).client, "monitoring", "waf", SHORT)).await;
    assert!(err.contains("StatefulSet prometheus-waf ready 0/1"), "{err}");
}

fn pod(name: &str, ready: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "gw"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready, "reason": if ready == "True" { Value::Null } else { json!("ContainersNotReady") }}]}})
}

#[tokio::test]
async fn pods_ready_selects_by_label_and_needs_every_pod_ready() {
    let list = |b: &str| json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod("envoy-a", "True"), pod("envoy-b", b)]});
    let selector = "gateway.envoyproxy.io/owning-gateway-name=eg";
    let ready = serving("/api/v1/namespaces/gw/pods", list("True"));
    pods_ready(&ready.client, "gw", selector, ENOUGH).await.unwrap();
    assert!(ready.requests()[0].query.contains("labelSelector=gateway.envoyproxy.io%2Fowning-gateway-name%3Deg"), "{:?}", ready.requests()[0]);
    let not_ready = serving("/api/v1/namespaces/gw/pods", list("False"));
    let err = timed_out(pods_ready(&not_ready.client, "gw", selector, SHORT)).await;
    assert!(err.contains("in namespace gw Ready=True") && err.contains("envoy-b: phase Running, Ready=False ContainersNotReady"), "{err}");
    let none = serving("/api/v1/namespaces/gw/pods", json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}));
    assert!(timed_out(pods_ready(&none.client, "gw", selector, SHORT)).await.contains("no pods match"));
}

#[tokio::test]
async fn first_ready_pod_skips_unready_pods() {
    let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod("envoy-b", "True"), pod("envoy-a", "False"), pod("envoy-c", "True")]});
    let api = serving("/api/v1/namespaces/gw/pods", list);
    assert_eq!(crate::k8s::first_ready_pod(&api.client, "gw", "app=x").await.unwrap(), "envoy-b");
    let none = serving("/api/v1/namespaces/gw/pods", json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod("envoy-a", "False")]}));
    let err = crate::k8s::first_ready_pod(&none.client, "gw", "app=x").await.unwrap_err().to_string();
    assert!(err.contains("none of the 1 pod(s)"), "{err}");
}

#[tokio::test]
async fn namespace_deleted_waits_for_the_namespace_to_disappear() {
    let gone = MockApi::start(|r| not_found(&r.path));
    namespace_deleted(&gone.client, "shop", ENOUGH).await.unwrap();
    let stuck = serving("/api/v1/namespaces/shop", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}, "status": {"phase": "Terminating"}}));
    let err = timed_out(namespace_deleted(&stuck.client, "shop", SHORT)).await;
    assert!(err.contains("Namespace shop deleted") && err.contains("phase Terminating"), "{err}");
}
