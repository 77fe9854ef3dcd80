use super::*;
use crate::k8s::testing::{ok, MockApi, Reply};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const POD_PATH: &str = "/api/v1/namespaces/envoy-gateway-system/pods/envoy-waf-1";
const EPHEMERAL_PATH: &str = "/api/v1/namespaces/envoy-gateway-system/pods/envoy-waf-1/ephemeralcontainers";

/// An Envoy Gateway proxy pod as the rendered EnvoyProxy makes it: envoy logging to a file on an emptyDir.
fn proxy_pod(envoy_args: &[&str], ephemeral: Value, statuses: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "envoy-waf-1", "namespace": "envoy-gateway-system"},
        "spec": {
            "containers": [
                {"name": "envoy", "image": "docker.io/envoyproxy/envoy:distroless-v1.35.0", "args": envoy_args,
                 "volumeMounts": [{"name": "certs", "mountPath": "/certs", "readOnly": true},
                                  {"name": "access-logs", "mountPath": "/access_logs"}]},
                {"name": "shutdown-manager", "image": "docker.io/envoyproxy/gateway:v1.7.2"}
            ],
            "volumes": [{"name": "certs", "secret": {"secretName": "envoy"}}, {"name": "access-logs", "emptyDir": {}}],
            "ephemeralContainers": ephemeral
        },
        "status": {"phase": "Running", "ephemeralContainerStatuses": statuses}
    })
}

const FILE_ARGS: &[&str] = &["--service-cluster", "waf-e2e", "--log-level", "warn", "--log-path", "/access_logs/envoy.log"];

fn reader(timeout_ms: u64) -> AuditReader {
    AuditReader { image: "busybox:1.36".into(), running_timeout: Duration::from_millis(timeout_ms) }
}

fn volume() -> LogVolume {
    LogVolume { log_path: "/access_logs/envoy.log".into(), volume: "access-logs".into(), sub_path: String::new(), rel: "envoy.log".into() }
}

fn status(name: &str, state: Value) -> Value {
    json!({"name": name, "image": "busybox:1.36", "imageID": "", "ready": false, "restartCount": 0, "state": state})
}

fn attached() -> Value {
    json!([serde_json::to_value(reader_container(READER_NAME, "busybox:1.36", &volume())).unwrap()])
}

#[test]
fn the_reader_sleeps_mounts_the_log_volume_read_only_and_runs_unprivileged() {
    let c = serde_json::to_value(reader_container(READER_NAME, "busybox:1.36", &volume())).unwrap();
    assert_eq!(
        c,
        json!({
            "name": "waf-e2e-audit-reader",
            "image": "busybox:1.36",
            "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "86400"],
            "volumeMounts": [{"name": "access-logs", "mountPath": "/waf-e2e-audit", "readOnly": true}],
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": true,
                "runAsGroup": 65532,
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}
            }
        })
    );
}

#[test]
fn a_subpath_mount_of_the_log_is_found_below_the_whole_volume() {
    let v = LogVolume { sub_path: "proxy-a".into(), ..volume() };
    let whole = VolumeMount { name: "access-logs".into(), mount_path: "/waf-e2e-audit/".into(), ..Default::default() };
    assert_eq!(v.path_in(std::slice::from_ref(&whole)).as_deref(), Some("/waf-e2e-audit/proxy-a/envoy.log"));
    let same = VolumeMount { sub_path: Some("proxy-a".into()), ..whole.clone() };
    assert_eq!(v.path_in(&[same]).as_deref(), Some("/waf-e2e-audit/envoy.log"));
    let other = VolumeMount { sub_path: Some("proxy-b".into()), ..whole };
    assert_eq!(v.path_in(&[other]), None);
}

#[test]
fn a_terminated_reader_is_replaced_under_the_next_free_name() {
    let pod: Pod = serde_json::from_value(proxy_pod(
        FILE_ARGS,
        attached(),
        json!([status(READER_NAME, json!({"terminated": {"exitCode": 0, "reason": "Completed"}}))]),
    ))
    .unwrap();
    match choose_reader(&pod, "busybox:1.36", &volume()) {
        ReaderChoice::Add(c) => assert_eq!(c.name, "waf-e2e-audit-reader-2"),
        other => panic!("expected a new reader, got {other:?}"),
    }
}

#[test]
fn a_waiting_reader_of_the_same_image_is_reused_and_another_image_is_not() {
    let pod: Pod = serde_json::from_value(proxy_pod(
        FILE_ARGS,
        attached(),
        json!([status(READER_NAME, json!({"waiting": {"reason": "ContainerCreating"}}))]),
    ))
    .unwrap();
    assert!(matches!(choose_reader(&pod, "busybox:1.36", &volume()), ReaderChoice::Reuse(c) if c.name == READER_NAME));
    assert!(matches!(choose_reader(&pod, "busybox:1.37", &volume()), ReaderChoice::Add(c) if c.name == "waf-e2e-audit-reader-2"));
}

#[test]
fn the_reader_state_says_why_it_is_not_running() {
    let pod = |state: Value| -> Pod { serde_json::from_value(proxy_pod(FILE_ARGS, attached(), json!([status(READER_NAME, state)]))).unwrap() };
    assert!(matches!(reader_running(&pod(json!({"running": {}})), READER_NAME), Check::Met(())));
    let pulling = pod(json!({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"busybox:1.36\""}}));
    assert!(matches!(reader_running(&pulling, READER_NAME), Check::NotYet(s) if s.contains("ImagePullBackOff")));
    let none: Pod = serde_json::from_value(proxy_pod(FILE_ARGS, attached(), json!([]))).unwrap();
    assert!(matches!(reader_running(&none, READER_NAME), Check::NotYet(s) if s.contains("no status")));
}

#[test]
fn a_running_ephemeral_reader_is_detected_as_the_file_source() {
    let running: Pod = serde_json::from_value(proxy_pod(FILE_ARGS, attached(), json!([status(READER_NAME, json!({"running": {}}))]))).unwrap();
    assert_eq!(detect_audit_source(&running), AuditSource::File { container: READER_NAME.into(), path: "/waf-e2e-audit/envoy.log".into() });
    // attached but not running yet: not a source (exec would fail)
    let waiting: Pod = serde_json::from_value(proxy_pod(FILE_ARGS, attached(), json!([]))).unwrap();
    assert_eq!(detect_audit_source(&waiting), AuditSource::File { container: "envoy".into(), path: "/access_logs/envoy.log".into() });
}

#[tokio::test]
async fn a_reader_is_attached_by_a_strategic_patch_then_awaited_until_running() {
    let gets = Arc::new(AtomicUsize::new(0));
    let seen = gets.clone();
    let mock = MockApi::start(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", POD_PATH) => {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            match n {
                0 => ok(proxy_pod(FILE_ARGS, Value::Null, Value::Null)),
                1 => ok(proxy_pod(FILE_ARGS, attached(), Value::Null)),
                2 => ok(proxy_pod(FILE_ARGS, attached(), json!([status(READER_NAME, json!({"waiting": {"reason": "ContainerCreating"}}))]))),
                _ => ok(proxy_pod(FILE_ARGS, attached(), json!([status(READER_NAME, json!({"running": {"startedAt": "2026-06-04T21:22:33Z"}}))]))),
            }
        }
        ("PATCH", EPHEMERAL_PATH) => ok(proxy_pod(FILE_ARGS, attached(), Value::Null)),
        other => panic!("unexpected request {other:?}"),
    });
    let source = ensure_audit_reader(&mock.client, "envoy-gateway-system", "envoy-waf-1", &reader(5_000)).await.unwrap();
    assert_eq!(source, AuditSource::File { container: "waf-e2e-audit-reader".into(), path: "/waf-e2e-audit/envoy.log".into() });

    let patches = mock.with_method("PATCH");
    assert_eq!(patches.len(), 1, "one ephemeral container added");
    let patch = &patches[0];
    assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
    assert!(patch.has_query("fieldManager", READER_FIELD_MANAGER), "{}", patch.query);
    let body = patch.json();
    let added = &body["spec"]["ephemeralContainers"];
    assert_eq!(added.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(added[0]["name"], "waf-e2e-audit-reader");
    assert_eq!(added[0]["image"], "busybox:1.36");
    assert_eq!(added[0]["command"], json!(["sleep", "86400"]));
    assert_eq!(added[0]["volumeMounts"], json!([{"name": "access-logs", "mountPath": "/waf-e2e-audit", "readOnly": true}]));
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "nothing but spec.ephemeralContainers is sent: {body}");
    assert!(gets.load(Ordering::SeqCst) >= 4, "polled until running");
    assert!(mock.requests().iter().all(|r| !r.path.contains("envoyproxies") && !r.path.contains("deployments")), "the resources under test are untouched");
}

#[tokio::test]
async fn a_running_reader_is_reused_without_a_patch() {
    let mock = MockApi::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", POD_PATH) => ok(proxy_pod(FILE_ARGS, attached(), json!([status(READER_NAME, json!({"running": {}}))]))),
        other => panic!("unexpected request {other:?}"),
    });
    let source = ensure_audit_reader(&mock.client, "envoy-gateway-system", "envoy-waf-1", &reader(1_000)).await.unwrap();
    assert_eq!(source, AuditSource::File { container: READER_NAME.into(), path: "/waf-e2e-audit/envoy.log".into() });
    assert!(mock.with_method("PATCH").is_empty());
}

#[tokio::test]
async fn envoy_logging_to_stderr_needs_no_reader() {
    let mock = MockApi::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", POD_PATH) => ok(proxy_pod(&["--log-level", "warn"], Value::Null, Value::Null)),
        other => panic!("unexpected request {other:?}"),
    });
    let sources = audit_sources(&mock.client, &[("envoy-gateway-system".into(), "envoy-waf-1".into())], Some(&reader(1_000))).await.unwrap();
    assert_eq!(sources, [("envoy-gateway-system".to_string(), "envoy-waf-1".to_string(), AuditSource::LogStream { container: "envoy".into() })]);
    assert!(mock.with_method("PATCH").is_empty());
}

#[tokio::test]
async fn a_reader_that_never_runs_times_out_naming_it_and_its_last_state() {
    let mock = MockApi::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", POD_PATH) => ok(proxy_pod(
            FILE_ARGS,
            attached(),
            json!([status(READER_NAME, json!({"waiting": {"reason": "ErrImagePull", "message": "registry unreachable"}}))]),
        )),
        ("PATCH", EPHEMERAL_PATH) => panic!("a waiting reader of the same image is reused"),
        other => panic!("unexpected request {other:?}"),
    });
    let err = ensure_audit_reader(&mock.client, "envoy-gateway-system", "envoy-waf-1", &reader(300)).await.unwrap_err().to_string();
    assert!(err.contains("audit reader waf-e2e-audit-reader (busybox:1.36) running in Pod envoy-gateway-system/envoy-waf-1"), "{err}");
    assert!(err.contains("ErrImagePull") && err.contains("registry unreachable"), "{err}");
}

#[tokio::test]
async fn a_forbidden_patch_names_the_subresource_and_the_kubernetes_version() {
    let mock = MockApi::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", POD_PATH) => ok(proxy_pod(FILE_ARGS, Value::Null, Value::Null)),
        ("PATCH", EPHEMERAL_PATH) => Reply::Json(
            403,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                   "message": "pods \"envoy-waf-1\" is forbidden: User \"ci\" cannot patch resource \"pods/ephemeralcontainers\""}),
        ),
        other => panic!("unexpected request {other:?}"),
    });
    let err = ensure_audit_reader(&mock.client, "envoy-gateway-system", "envoy-waf-1", &reader(1_000)).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("Kubernetes >= 1.25") && text.contains("patch pods/ephemeralcontainers"), "{text}");
    assert!(text.contains("cannot patch resource"), "the API server's reason is kept: {text}");
}
