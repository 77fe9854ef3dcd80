//! Diagnostics against the fake API server: files written, redaction, errors kept in the bundle.

use super::*;
use crate::k8s::testing::{not_found, ok, resource_list, MockApi, Reply};
use serde_json::json;

fn pods() -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "envoy-1", "namespace": "gw", "managedFields": [{"manager": "kubelet"}]},
        "spec": {"containers": [
            {"name": "envoy", "env": [
                {"name": "TIGERA_LICENSE_KEY", "value": "lic-123"},
                {"name": "registry_password", "value": "hunter2"},
                {"name": "AUTH_HEADER", "value": "Bearer abc"},
                {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}},
                {"name": "ENVOY_GATEWAY_NAMESPACE", "value": "envoy-gateway-system"}]},
            {"name": "shutdown-manager"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "envoy", "restartCount": 2, "ready": true, "image": "envoy", "imageID": ""},
            {"name": "shutdown-manager", "restartCount": 0, "ready": true, "image": "sm", "imageID": ""}]}
    }]})
}

fn events() -> Value {
    let ev = |name: &str, time: &str, reason: &str| json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "gw"}, "involvedObject": {"kind": "Pod", "name": "envoy-1"},
        "lastTimestamp": time, "type": "Warning", "reason": reason, "message": format!("{reason} happened"), "count": 3});
    json!({"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": [
        ev("late", "2026-06-04T21:30:00Z", "BackOff"), ev("early", "2026-06-04T21:00:00Z", "Pulled")]})
}

fn cluster() -> MockApi {
    MockApi::start(|r| match r.path.as_str() {
        "/api/v1/namespaces/gw/pods" => ok(pods()),
        "/api/v1/namespaces/gw/events" => ok(events()),
        "/api/v1/namespaces/gw/pods/envoy-1/log" if r.query.contains("container=shutdown-manager") => Reply::Json(
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "kubelet unreachable"}),
        ),
        "/api/v1/namespaces/gw/pods/envoy-1/log" if r.has_query("previous", "true") => Reply::Text("previous run\n".into()),
        "/api/v1/namespaces/gw/pods/envoy-1/log" => Reply::Text("current run\n".into()),
        p => not_found(p),
    })
}

#[tokio::test]
async fn a_namespace_dump_holds_logs_events_and_redacted_pods() {
    let api = cluster();
    let dir = tempfile::tempdir().unwrap();
    let out = dump_namespace(&api.client, "gw", dir.path()).await.unwrap();
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();

    assert_eq!(read("logs/envoy-1.envoy.log"), "current run\n");
    assert_eq!(read("logs/envoy-1.envoy.previous.log"), "previous run\n", "a restarted container's previous log is kept");
    assert!(!out.join("logs/envoy-1.shutdown-manager.previous.log").exists());
    let failed = read("logs/envoy-1.shutdown-manager.log");
    assert!(failed.starts_with("ERROR collecting log of gw/envoy-1 container shutdown-manager") && failed.contains("kubelet unreachable"), "{failed}");

    let events = read("events.txt");
    let (early, late) = (events.find("Pulled").unwrap(), events.find("BackOff").unwrap());
    assert!(early < late, "events are sorted by time: {events}");
    assert!(events.contains("Warning BackOff Pod/envoy-1: BackOff happened (x3)"), "{events}");

    let yaml = read("pods.yaml");
    for secret in ["lic-123", "hunter2", "Bearer abc"] {
        assert!(!yaml.contains(secret), "{secret} leaked: {yaml}");
    }
    assert!(yaml.contains(REDACTED) && yaml.contains("envoy-gateway-system"), "{yaml}");
    assert!(yaml.contains("secretKeyRef"), "references are kept, they hold no value");
    assert!(!yaml.contains("managedFields"), "{yaml}");
    assert!(read("pods.txt").contains("envoy-1\tphase=Running"));
}

#[tokio::test]
async fn a_namespace_that_cannot_be_listed_still_yields_a_bundle() {
    let api = MockApi::start(|r| Reply::Json(403, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "message": format!("forbidden: {}", r.path)})));
    let dir = tempfile::tempdir().unwrap();
    let out = dump_namespace(&api.client, "gw", dir.path()).await.unwrap();
    assert!(std::fs::read_to_string(out.join("pods.txt")).unwrap().contains("forbidden"));
    assert!(std::fs::read_to_string(out.join("events.txt")).unwrap().starts_with("ERROR collecting events"));
}

#[tokio::test]
async fn object_dumps_skip_secrets_and_redact_env() {
    let api = MockApi::start(|r| match r.path.as_str() {
        "/apis/apps/v1" => ok(resource_list("apps/v1", &[("Deployment", "deployments", true)])),
        "/api/v1" => ok(resource_list("v1", &[("Secret", "secrets", true)])),
        "/apis/apps/v1/namespaces/shop/deployments/echo" => ok(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "echo", "namespace": "shop", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"TOKEN\":\"x\"}"}},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "echo", "env": [{"name": "GITHUB_TOKEN", "value": "ghp_x"}]}]}}},
            "status": {"replicas": 1}})),
        p if p.contains("/secrets/") => panic!("a Secret was read: {p}"),
        p => not_found(p),
    });
    let objects = [
        AppliedObject { api_version: "apps/v1".into(), kind: "Deployment".into(), namespace: Some("shop".into()), name: "echo".into() },
        AppliedObject { api_version: "v1".into(), kind: "Secret".into(), namespace: Some("shop".into()), name: "license".into() },
    ];
    let dir = tempfile::tempdir().unwrap();
    dump_objects(&api.client, &objects, dir.path()).await.unwrap();
    let files: Vec<String> = std::fs::read_dir(dir.path().join("objects")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(files, ["Deployment_shop_echo.yaml"]);
    let yaml = std::fs::read_to_string(dir.path().join("objects/Deployment_shop_echo.yaml")).unwrap();
    assert!(!yaml.contains("ghp_x") && !yaml.contains("last-applied"), "{yaml}");
    assert!(yaml.contains("replicas: 1"), "{yaml}");
}

#[test]
fn sensitive_names_match_case_insensitively() {
    for name in ["LICENSE", "tigera_license_key", "Password", "X_SECRET_Y", "AUTHORIZATION", "token"] {
        assert!(is_sensitive(name), "{name}");
    }
    for name in ["ENVOY_GATEWAY_NAMESPACE", "LOG_LEVEL", "PATH"] {
        assert!(!is_sensitive(name), "{name}");
    }
}
