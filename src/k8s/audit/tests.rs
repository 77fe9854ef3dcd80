use super::*;
use crate::k8s::testing::{ok, MockApi, Reply};
use k8s_openapi::api::core::v1::{Container, PodSpec, VolumeMount};
use serde_json::json;

#[test]
fn the_read_scripts_output_splits_into_size_start_and_bytes() {
    let (size, from, bytes) = parse_read_output(b"1234 1200\nline a\nline").unwrap();
    assert_eq!((size, from, bytes.as_slice()), (1234, 1200, &b"line a\nline"[..]));
    let (size, from, bytes) = parse_read_output(b"10 20\n").unwrap();
    assert_eq!((size, from, bytes.len()), (10, 20, 0));
    assert!(parse_read_output(b"").is_err());
    assert!(parse_read_output(b"sh: wc: not found\n").is_err());
}

#[test]
fn stamped_log_lines_after_the_cursor_are_returned_without_their_stamp() {
    let log = "2026-06-04T21:22:33.000000001Z old\n\
               2026-06-04T21:22:33.000000002Z [info][wasm] wasm log x: AuditLog:{\"a\":1}\n\
               2026-06-04T21:22:34.5Z second\n\
               2026-06-04T21:22:35Z partial without newline";
    let first: u64 = "2026-06-04T21:22:33.000000001Z".parse::<Timestamp>().unwrap().as_nanosecond() as u64;
    let (lines, last) = split_stamped_lines(log, first);
    assert_eq!(lines, ["[info][wasm] wasm log x: AuditLog:{\"a\":1}", "second"]);
    assert_eq!(last, "2026-06-04T21:22:34.5Z".parse::<Timestamp>().unwrap().as_nanosecond() as u64);
    assert_eq!(split_stamped_lines("", 7), (Vec::<String>::new(), 7));
}

fn container(name: &str, args: &[&str], mounts: &[(&str, &str)]) -> Container {
    Container {
        name: name.into(),
        args: Some(args.iter().map(|s| s.to_string()).collect()),
        volume_mounts: Some(mounts.iter().map(|(v, p)| VolumeMount { name: v.to_string(), mount_path: p.to_string(), ..Default::default() }).collect()),
        ..Default::default()
    }
}

fn pod(containers: Vec<Container>) -> Pod {
    Pod { spec: Some(PodSpec { containers, ..Default::default() }), ..Default::default() }
}

#[test]
fn a_sidecar_mounting_the_log_volume_is_read_by_exec() {
    let p = pod(vec![
        container("envoy", &["--service-cluster", "x", "--log-path", "/access_logs/envoy.log"], &[("access-logs", "/access_logs")]),
        container("shutdown-manager", &[], &[]),
        container("audit-reader", &[], &[("access-logs", "/logs/")]),
    ]);
    assert_eq!(detect_audit_source(&p), AuditSource::File { container: "audit-reader".into(), path: "/logs/envoy.log".into() });
}

#[test]
fn envoy_logging_to_stderr_is_read_from_its_log_stream() {
    let p = pod(vec![container("envoy", &["--log-level", "warn"], &[])]);
    assert_eq!(detect_audit_source(&p), AuditSource::LogStream { container: "envoy".into() });
}

#[test]
fn a_log_file_without_a_sidecar_falls_back_to_exec_in_envoy() {
    let p = pod(vec![container("envoy", &["--log-path=/access_logs/envoy.log"], &[("access-logs", "/access_logs")])]);
    assert_eq!(detect_audit_source(&p), AuditSource::File { container: "envoy".into(), path: "/access_logs/envoy.log".into() });
}

#[test]
fn cursor_keys_round_trip_with_their_source() {
    for source in [AuditSource::File { container: "c".into(), path: "/a:b/envoy.log".into() }, AuditSource::LogStream { container: "envoy".into() }] {
        let key = cursor_key("shop", "envoy-shop-eg-abc", &source);
        assert_eq!(parse_key(&key).unwrap(), ("shop".into(), "envoy-shop-eg-abc".into(), source));
    }
    assert!(parse_key("nonsense").is_err());
}

#[tokio::test]
async fn the_log_stream_source_reads_only_lines_after_the_cursor() {
    let mock = MockApi::start(|r| {
        assert_eq!(r.path, "/api/v1/namespaces/gw/pods/envoy-1/log");
        if r.query.contains("tailLines=1") {
            Reply::Text("2026-06-04T21:22:33.5Z before the traffic\n".into())
        } else {
            Reply::Text(
                "2026-06-04T21:22:33.5Z before the traffic\n2026-06-04T21:22:34Z AuditLog:{\"n\":1}\n2026-06-04T21:22:35Z AuditLog:{\"n\":2}\n"
                    .into(),
            )
        }
    });
    let source = AuditSource::LogStream { container: "envoy".into() };
    let cursor = audit_cursor_with(&mock.client, &[("gw".into(), "envoy-1".into(), source)]).await.unwrap();
    assert_eq!(cursor.0.len(), 1);
    let lines = audit_lines_since(&mock.client, &cursor).await.unwrap();
    assert_eq!(
        lines.lines,
        [("gw/envoy-1".to_string(), "AuditLog:{\"n\":1}".to_string()), ("gw/envoy-1".to_string(), "AuditLog:{\"n\":2}".to_string())]
    );
    let reads = mock.requests();
    assert!(reads.iter().all(|r| r.has_query("container", "envoy") && r.has_query("timestamps", "true")), "{reads:?}");
    assert!(reads[1].query.contains("sinceTime=2026-06-04T21%3A22%3A33Z") || reads[1].query.contains("sinceTime=2026-06-04T21:22:33Z"), "{:?}", reads[1]);
}

#[tokio::test]
async fn the_cursor_detects_the_source_from_the_pod_spec() {
    let mock = MockApi::start(|r| match r.path.as_str() {
        "/api/v1/namespaces/gw/pods/envoy-1" => ok(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "envoy-1", "namespace": "gw"},
            "spec": {"containers": [{"name": "envoy", "args": ["--log-level", "warn"]}]}
        })),
        "/api/v1/namespaces/gw/pods/envoy-1/log" => Reply::Text(String::new()),
        other => panic!("unexpected request {other}"),
    });
    let cursor = audit_cursor(&mock.client, &[("gw".into(), "envoy-1".into())]).await.unwrap();
    assert_eq!(cursor.0.into_iter().collect::<Vec<_>>(), [("log:gw/envoy-1/envoy".to_string(), 0)]);
}

/// Runs the exec script with the local POSIX `sh` (dash here; busybox ash in a collector sidecar).
fn run_script(path: &std::path::Path, from: i64, window: u64) -> (u64, u64, Vec<u8>) {
    let out = std::process::Command::new("sh")
        .args(["-c", READ_SCRIPT, "sh", path.to_str().unwrap(), &from.to_string(), &window.to_string()])
        .output()
        .expect("a POSIX sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    parse_read_output(&out.stdout).unwrap()
}

#[test]
fn the_exec_script_prints_the_size_then_the_bytes_from_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("envoy.log");
    std::fs::write(&log, "first line\ncaf\u{e9} line\npartial").unwrap();
    let size = std::fs::metadata(&log).unwrap().len();
    assert_eq!(run_script(&log, 0, CURSOR_WINDOW), (size, 0, std::fs::read(&log).unwrap()));
    assert_eq!(run_script(&log, 11, CURSOR_WINDOW).2, "caf\u{e9} line\npartial".as_bytes());
    assert_eq!(run_script(&log, size as i64, CURSOR_WINDOW), (size, size, Vec::new()));
    // beyond the end (the file shrank): size reported, no bytes, so the caller re-reads from 0
    assert_eq!(run_script(&log, size as i64 + 100, CURSOR_WINDOW), (size, size + 100, Vec::new()));
    // cursor mode: the last `window` bytes, aligned to the last complete line
    let (s, from, bytes) = run_script(&log, -1, 12);
    assert_eq!((s, from), (size, size - 12));
    assert_eq!(align_cursor(from, &bytes), size - "partial".len() as u64);
    let (_, from, _) = run_script(&log, -1, CURSOR_WINDOW);
    assert_eq!(from, 0, "a file smaller than the window is read whole");
}

#[test]
fn the_exec_script_fails_on_a_missing_file() {
    let out = std::process::Command::new("sh").args(["-c", READ_SCRIPT, "sh", "/nonexistent/envoy.log", "0", "10"]).output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}
