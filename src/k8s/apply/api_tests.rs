//! Apply against the fake API server: discovery requests, server-side apply requests, errors.

use super::*;
use crate::k8s::testing::{applied_echo, not_found, ok, resource_list, MockApi, Reply};
use serde_json::json;

const THREE_DOCS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: eg
spec:
  gatewayClassName: eg
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
# a comment-only document is not counted
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: shop
spec:
  parentRefs: [{name: eg, namespace: default}]
"#;

fn cluster() -> MockApi {
    MockApi::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/api/v1") => ok(resource_list("v1", &[("Namespace", "namespaces", false), ("Pod", "pods", true)])),
        ("GET", "/apis/gateway.networking.k8s.io/v1") => ok(resource_list(
            "gateway.networking.k8s.io/v1",
            &[("GatewayClass", "gatewayclasses", false), ("Gateway", "gateways", true), ("HTTPRoute", "httproutes", true)],
        )),
        ("GET", p) if p.starts_with("/apis/") => not_found(p),
        ("PATCH", _) => applied_echo(r),
        (m, p) => panic!("unexpected {m} {p}"),
    })
}

#[tokio::test]
async fn three_documents_are_discovered_then_server_side_applied_with_the_field_manager() {
    let api = cluster();
    let applied = apply_manifests(&api.client, THREE_DOCS, "fixtures/shop.yaml", "waf-e2e").await.unwrap();
    let shown: Vec<String> = applied.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["Namespace shop", "Gateway default/eg", "HTTPRoute shop/web"]);

    let gets: Vec<String> = api.with_method("GET").into_iter().map(|r| r.path).collect();
    assert_eq!(gets, ["/api/v1", "/apis/gateway.networking.k8s.io/v1"], "one discovery request per group/version");

    let patches = api.with_method("PATCH");
    let paths: Vec<&str> = patches.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/shop",
            "/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways/eg",
            "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/web",
        ]
    );
    for p in &patches {
        assert!(p.has_query("fieldManager", "waf-e2e"), "{p:?}");
        assert!(p.has_query("force", "true"), "{p:?}");
        assert_eq!(p.content_type, "application/apply-patch+yaml");
    }
    let gateway = patches[1].json();
    assert_eq!(gateway["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(gateway["kind"], "Gateway");
    assert_eq!(gateway["metadata"]["namespace"], "default", "a namespaced object without a namespace goes to default");
    assert_eq!(gateway["spec"]["listeners"][0]["port"], 80);
    assert!(patches[0].json()["metadata"].get("namespace").is_none(), "cluster-scoped objects carry no namespace");
}

#[tokio::test]
async fn an_unknown_kind_names_the_source_the_document_and_the_kind() {
    let api = cluster();
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gatewy\nmetadata: {name: eg}\n";
    let err = format!("{:#}", apply_manifests(&api.client, yaml, "fixtures/typo.yaml", "waf-e2e").await.unwrap_err());
    assert!(err.contains("fixtures/typo.yaml document 2"), "{err}");
    assert!(err.contains("unknown kind gateway.networking.k8s.io/v1 Gatewy"), "{err}");
}

#[tokio::test]
async fn a_kind_of_an_uninstalled_group_is_unknown_too() {
    let api = cluster();
    let yaml = "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {name: waf, namespace: monitoring}\n";
    let err = format!("{:#}", apply_manifests(&api.client, yaml, "rendered/podmonitor.yaml", "waf-e2e").await.unwrap_err());
    assert!(err.contains("rendered/podmonitor.yaml document 1"), "{err}");
    assert!(err.contains("unknown kind monitoring.coreos.com/v1 PodMonitor"), "{err}");
    assert!(api.with_method("PATCH").is_empty());
}

#[tokio::test]
async fn an_empty_file_is_an_error_before_any_request() {
    let api = cluster();
    let err = apply_manifests(&api.client, "---\n# nothing here\n", "kind/empty.yaml", "waf-e2e").await.unwrap_err().to_string();
    assert!(err.contains("kind/empty.yaml"), "{err}");
    assert!(api.requests().is_empty());
}

#[tokio::test]
async fn a_rejected_apply_names_the_object() {
    let api = MockApi::start(|r| match r.method.as_str() {
        "GET" => ok(resource_list("v1", &[("ConfigMap", "configmaps", true)])),
        _ => Reply::Json(422, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422, "message": "data: Invalid value"})),
    });
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad, namespace: shop}\ndata: {a: 1}\n";
    let err = format!("{:#}", apply_manifests(&api.client, yaml, "x.yaml", "waf-e2e").await.unwrap_err());
    assert!(err.contains("apply ConfigMap shop/bad"), "{err}");
    assert!(err.contains("Invalid value"), "{err}");
}

#[tokio::test]
async fn crds_are_applied_and_established_before_the_objects_that_need_them() {
    let discovery_calls = std::sync::atomic::AtomicUsize::new(0);
    let api = MockApi::start(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/apis/apiextensions.k8s.io/v1") => {
            ok(resource_list("apiextensions.k8s.io/v1", &[("CustomResourceDefinition", "customresourcedefinitions", false)]))
        }
        ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com") => ok(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}, "scope": "Namespaced", "versions": []},
            "status": {"conditions": [{"type": "Established", "status": "True"}]}
        })),
        // the first discovery after Established does not serve the kind yet
        ("GET", "/apis/example.com/v1") if discovery_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 => not_found(&r.path),
        ("GET", "/apis/example.com/v1") => ok(resource_list("example.com/v1", &[("Widget", "widgets", true)])),
        ("PATCH", _) => applied_echo(r),
        (m, p) => panic!("unexpected {m} {p}"),
    });
    let yaml = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\n";
    let applied = apply_manifests_crds_first(&api.client, yaml, "x.yaml", "waf-e2e", Duration::from_secs(2)).await.unwrap();
    assert_eq!(applied[0].kind, "CustomResourceDefinition");
    assert_eq!(applied[1].to_string(), "Widget default/w");
    let order: Vec<String> = api.requests().into_iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    let crd_get = order.iter().position(|l| l.ends_with("customresourcedefinitions/widgets.example.com") && l.starts_with("GET")).unwrap();
    let widget_discovery = order.iter().position(|l| l == "GET /apis/example.com/v1").unwrap();
    assert!(crd_get < widget_discovery, "{order:?}");
}

#[tokio::test]
async fn deleting_a_missing_namespace_is_not_an_error() {
    let api = MockApi::start(|r| match r.path.as_str() {
        "/api/v1/namespaces/gone" => not_found("namespaces \"gone\""),
        "/api/v1/namespaces/shop" => ok(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}, "status": {"phase": "Terminating"}})),
        p => panic!("unexpected {p}"),
    });
    assert!(!delete_namespace(&api.client, "gone").await.unwrap());
    assert!(delete_namespace(&api.client, "shop").await.unwrap());
    assert!(api.requests().iter().all(|r| r.method == "DELETE"));
}
