//! The scrape-target wait against the mock API service (pods, namespaces) and a loopback stand-in for
//! Prometheus' targets API and the proxy's stats port-forward.

use super::*;
use crate::k8s::testing::{not_found, ok, MockApi};
use axum::routing::get;
use serde_json::json;

const POOL: &str = "podMonitor/tigera-prometheus/tigera-waf-gateway-proxies/0";
const SHORT: Duration = Duration::from_millis(300);

/// The cluster: Prometheus in `prometheus_ns` with the product's labels, one proxy pod.
fn cluster(prometheus_ns: &'static str) -> MockApi {
    MockApi::start(move |r| {
        let ns = |name: &str| ok(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}));
        match r.path.as_str() {
            p if p == format!("/api/v1/namespaces/{prometheus_ns}/pods/prometheus-waf-e2e-0") => ok(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "prometheus-waf-e2e-0", "namespace": prometheus_ns,
                    "labels": {"app.kubernetes.io/name": "prometheus", "prometheus": "waf-e2e"}}})),
            "/api/v1/namespaces/envoy-gateway-system/pods" => ok(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "envoy-waf-e2e-1", "namespace": "envoy-gateway-system",
                    "labels": {"app.kubernetes.io/component": "proxy", "app.kubernetes.io/managed-by": "envoy-gateway", "app.kubernetes.io/name": "envoy"}}}]})),
            p if p.starts_with("/api/v1/namespaces/") && p.matches('/').count() == 4 => ns(p.rsplit('/').next().unwrap()),
            p => not_found(p),
        }
    })
}

/// Loopback Prometheus (targets answer with `health`) and proxy stats (answering `stats_status`).
struct Endpoints {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn endpoints(health: &'static str, stats_status: u16) -> Endpoints {
    let targets = json!({"status": "success", "data": {"activeTargets": [{"scrapePool": POOL, "health": health,
        "lastError": "Get \"http://192.168.1.7:19001/stats/prometheus\": context deadline exceeded", "labels": {"pod": "envoy-waf-e2e-1"}}]}});
    let app = axum::Router::new()
        .route("/api/v1/targets", get(move || { let t = targets.clone(); async move { axum::Json(t) } }))
        .route("/stats/prometheus", get(move || async move { (axum::http::StatusCode::from_u16(stats_status).unwrap(), "waf_filter_tx_total{} 0\n") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Endpoints { url, task }
}

fn rendered_policies() -> Vec<Value> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    serde_saphyr::from_str_multiple(&std::fs::read_to_string(root.join("fixtures/rendered/globalnetworkpolicy.yaml")).unwrap()).unwrap()
}

/// The oss profile's Calico objects (its tier and the later deny tier) plus `rendered`, as applied.
fn probe(at: &Endpoints, prometheus_ns: &str, rendered: Vec<Value>) -> ScrapeProbe {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let profile = crate::profile::Profile::load(&root, "oss").unwrap();
    let mut policies: Vec<(Value, std::path::PathBuf)> = crate::stack::policy::profile_objects(&root, &profile).unwrap().into_iter()
        .filter(|s| crate::calico::validate::is_calico_object(&s.value)).map(|s| (s.value, s.file)).collect();
    let names = rendered.iter().map(crate::schema::object_name).collect();
    policies.extend(rendered.into_iter().map(|v| (v, std::path::PathBuf::from("fixtures/rendered/globalnetworkpolicy.yaml"))));
    ScrapeProbe {
        prometheus_url: at.url.clone(),
        stats_url: at.url.clone(),
        pool: POOL.into(),
        prometheus_pod: (prometheus_ns.into(), "prometheus-waf-e2e-0".into()),
        proxies: ("envoy-gateway-system".into(), "gateway.envoyproxy.io/owning-gateway-name=waf-e2e".into()),
        policies,
        rendered: names,
    }
}

/// The rendered policy with its ingress Allow rule admitting Prometheus from another namespace.
fn keeping_prometheus_out() -> Vec<Value> {
    let mut policies = rendered_policies();
    policies[0]["spec"]["ingress"][0]["source"]["namespaceSelector"] = json!("projectcalico.org/name == 'monitoring'");
    policies
}

#[tokio::test]
async fn a_target_that_is_up_ends_the_wait() {
    let api = cluster("tigera-prometheus");
    let at = endpoints("up", 200).await;
    target_up_or_blame(&api.client, &probe(&at, "tigera-prometheus", keeping_prometheus_out()), SHORT).await.unwrap();
}

#[tokio::test]
async fn a_rendered_policy_that_keeps_prometheus_out_is_a_broken_resource_naming_it() {
    let api = cluster("tigera-prometheus");
    let at = endpoints("down", 200).await;
    let err = target_up_or_blame(&api.client, &probe(&at, "tigera-prometheus", keeping_prometheus_out()), SHORT).await.unwrap_err();
    let broken = BrokenResource::find(&err).unwrap_or_else(|| panic!("not a broken resource: {err:#}"));
    assert_eq!(broken.resource, "GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics");
    assert!(broken.problem.contains("context deadline exceeded"), "{}", broken.problem);
    assert!(broken.problem.contains("Prometheus pod tigera-prometheus/prometheus-waf-e2e-0 to TCP 19001 of proxy pod envoy-gateway-system/envoy-waf-e2e-1"), "{}", broken.problem);
    assert!(broken.problem.contains("the render passed it on instead of allowing it (GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics ingress[1])"), "{}", broken.problem);
    assert!(broken.problem.contains("Deny (ingress decided by GlobalNetworkPolicy waf-e2e-deny.proxy-metrics ingress[0])"), "{}", broken.problem);
}

#[tokio::test]
async fn prometheus_running_where_the_policy_does_not_look_is_blamed_on_the_policy_too() {
    // The original gap: the kind Prometheus ran in `monitoring`, which the rendered policy never admits.
    let api = cluster("monitoring");
    let at = endpoints("down", 200).await;
    let err = target_up_or_blame(&api.client, &probe(&at, "monitoring", rendered_policies()), SHORT).await.unwrap_err();
    assert!(BrokenResource::find(&err).is_some(), "{err:#}");
}

#[tokio::test]
async fn no_rendered_policy_at_all_is_a_broken_rendered_set() {
    let api = cluster("tigera-prometheus");
    let at = endpoints("down", 200).await;
    let err = target_up_or_blame(&api.client, &probe(&at, "tigera-prometheus", Vec::new()), SHORT).await.unwrap_err();
    let broken = BrokenResource::find(&err).unwrap();
    assert_eq!(broken.resource, "GlobalNetworkPolicy (none rendered)");
}

#[tokio::test]
async fn a_correct_policy_or_a_dead_proxy_leaves_the_timeout_as_infrastructure() {
    let api = cluster("tigera-prometheus");
    let at = endpoints("down", 200).await;
    let err = target_up_or_blame(&api.client, &probe(&at, "tigera-prometheus", rendered_policies()), SHORT).await.unwrap_err();
    assert!(BrokenResource::find(&err).is_none(), "the rendered policy admits Prometheus: {err:#}");
    assert!(format!("{err:#}").contains(POOL), "{err:#}");
    let dead = endpoints("down", 503).await;
    let err = target_up_or_blame(&api.client, &probe(&dead, "tigera-prometheus", keeping_prometheus_out()), SHORT).await.unwrap_err();
    assert!(BrokenResource::find(&err).is_none(), "a proxy that does not answer is not the policy's fault: {err:#}");
}
