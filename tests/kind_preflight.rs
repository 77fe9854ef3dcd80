//! `KindStack::up` fails fast with exit 3 when kind is not on PATH, and a bad kubeconfig is exit 2.
//! Its own test binary: it changes this process's PATH.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use waf_e2e::error::HarnessError;
use waf_e2e::stack::kind::{ClusterOpts, KindStack};

fn opts(cache: &std::path::Path) -> ClusterOpts {
    ClusterOpts {
        rendered: PathBuf::from("tests/fixtures/kind/rendered"),
        cache_dir: Some(cache.to_path_buf()),
        run_id: Some("abc123".into()),
        ..ClusterOpts::default()
    }
}

#[tokio::test]
async fn up_without_kind_on_path_fails_within_seconds_with_exit_3_naming_kind() {
    let empty = tempfile::tempdir().unwrap();
    std::env::set_var("PATH", empty.path());
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err = KindStack::up(&opts(cache.path()), &[]).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let text = format!("{err:#}");
    assert!(text.contains("kind: not on PATH") && text.contains("https://kind.sigs.k8s.io"), "{text}");
    assert_eq!(HarnessError::classify(err).exit_code(), 3);
}

#[tokio::test]
async fn an_unparsable_kubeconfig_is_a_usage_error_naming_the_file() {
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "this: [is not a kubeconfig").unwrap();
    let Err(err) = waf_e2e::stack::kind::stack::client_for(Some(bad.path()), None).await else { panic!("a bad kubeconfig was accepted") };
    assert!(err.to_string().contains(&bad.path().display().to_string()), "{err}");
    assert_eq!(HarnessError::classify(err).exit_code(), 2);
}
