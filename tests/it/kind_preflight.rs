//! `waf-e2e run` on kind fails fast with exit 3 when kind is not on PATH, and a bad kubeconfig is
//! exit 2. The PATH without kind is the child's only: tests share this process.

use std::time::{Duration, Instant};
use waf_e2e::error::HarnessError;

#[test]
fn a_kind_run_without_kind_on_path_fails_within_seconds_with_exit_3_naming_kind() {
    let empty = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waf-e2e"))
        .args(["run", "--stack", "kind"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", empty.path())
        .output()
        .expect("run waf-e2e");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("kind: not on PATH") && text.contains("https://kind.sigs.k8s.io"), "{text}");
    assert_eq!(out.status.code(), Some(3), "{text}");
}

#[tokio::test]
async fn an_unparsable_kubeconfig_is_a_usage_error_naming_the_file() {
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "this: [is not a kubeconfig").unwrap();
    let Err(err) = waf_e2e::stack::kind::stack::client_for(Some(bad.path()), None).await else { panic!("a bad kubeconfig was accepted") };
    assert!(err.to_string().contains(&bad.path().display().to_string()), "{err}");
    assert_eq!(HarnessError::classify(err).exit_code(), 2);
}
