//! The offline schema check against the pinned releases' real CRDs, as the project's CI runs it:
//! both profiles must pass, and each kind of broken render must be rejected with exit 2 naming the
//! object, its file and the field.
//!
//! The CRDs live outside the repository (`../shared/crds` next to the clone, or the directory named
//! by `WAF_E2E_SHARED_CRDS`). A clone without them cannot run these tests: each test then says
//! "NOT RUN" and why, on the terminal (written past the test harness' output capture, and shown by
//! nextest through `.config/nextest.toml`), and passes, because nothing about the code was learnt.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The schema directories each profile is checked against (the pinned releases).
const OSS: &[&str] = &["envoy-gateway-v1.7.2", "prometheus-operator-v0.89.0", "calico-v3.31.3", "tigera-operator-v1.40.3"];
const TIGERA: &[&str] = &["envoy-gateway-v1.7.2", "prometheus-operator-v0.89.0", "calico-v3.31.3", "tigera-operator-v1.43.0"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared CRD directory, or `None` after telling the terminal that `test` was not run.
fn shared_crds(test: &str) -> Option<PathBuf> {
    let (dir, how) = match std::env::var_os("WAF_E2E_SHARED_CRDS") {
        Some(d) => (PathBuf::from(d), "$WAF_E2E_SHARED_CRDS"),
        None => (root().join("../shared/crds"), "../shared/crds (next to the repository)"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    let line = format!("NOT RUN: {test}: {how} = {} is absent, so the schema check against the pinned releases' CRDs did not run\n", dir.display());
    let _ = std::io::stderr().write_all(line.as_bytes());
    None
}

fn validate(cwd: &Path, profile: &str, crds: &Path, dirs: &[&str]) -> (i32, String) {
    check(cwd, &["validate", "--profile", profile], crds, dirs)
}

/// Runs `waf-e2e args` in `cwd` with one `--schemas` per directory, and an empty release-manifest cache.
fn check(cwd: &Path, args: &[&str], crds: &Path, dirs: &[&str]) -> (i32, String) {
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waf-e2e"));
    cmd.current_dir(cwd).env("XDG_CACHE_HOME", cache.path()).args(args);
    for d in dirs {
        cmd.arg("--schemas").arg(crds.join(d));
    }
    let Output { status, stdout, stderr } = cmd.output().expect("run waf-e2e");
    (status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr)))
}

#[test]
fn both_profiles_pass_the_schema_check_against_the_pinned_releases() {
    let Some(crds) = shared_crds("both_profiles_pass_the_schema_check_against_the_pinned_releases") else { return };
    for (profile, dirs) in [("oss", OSS), ("tigera", TIGERA)] {
        let started = std::time::Instant::now();
        let (code, out) = validate(&root(), profile, &crds, dirs);
        assert_eq!(code, 0, "{profile}:\n{out}");
        let summary = out.lines().find(|l| l.starts_with("schema check:")).unwrap_or_default().to_string();
        assert!(summary.contains(" 0 problem(s)"), "{profile}: {summary}");
        let _ = writeln!(std::io::stderr(), "{profile}: {summary} (process {:.1}s)", started.elapsed().as_secs_f64());
    }
}

#[test]
fn the_tigera_profile_fails_against_the_operator_without_the_waf_crds() {
    let Some(crds) = shared_crds("the_tigera_profile_fails_against_the_operator_without_the_waf_crds") else { return };
    let (code, out) = validate(&root(), "tigera", &crds, OSS);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no CustomResourceDefinition for applicationlayer.projectcalico.org/v3 WAFPolicy"), "{out}");
}

/// A copy of the inputs a check reads (kind/, scenarios/, fixtures/), to break one file in.
struct Copy(tempfile::TempDir);

impl Copy {
    fn new() -> Copy {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["kind", "scenarios", "fixtures"] {
            copy_dir(&root().join(sub), &dir.path().join(sub));
        }
        Copy(dir)
    }

    /// Replaces the first `from` in `file` by `to` (and checks there was one).
    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.0.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no `{from}`");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() { copy_dir(&p, &target) } else { std::fs::copy(&p, &target).map(|_| ()).unwrap() }
    }
}

/// Runs the check on the broken copy; it must exit 2 with one line naming object, file, field and rule.
fn rejected(test: &str, copy: &Copy, profile: &str, object: &str, file: &str, field: &str, rule: &str) {
    let Some(crds) = shared_crds(test) else { return };
    let dirs = if profile == "tigera" { TIGERA } else { OSS };
    let (code, out) = validate(copy.0.path(), profile, &crds, dirs);
    assert_eq!(code, 2, "{out}");
    let want = format!("{object} ({file}): field `{field}`: [{rule}]");
    assert!(out.lines().any(|l| l.contains(&want)), "no line with `{want}` in:\n{out}");
}

#[test]
fn a_misspelled_field_in_the_rendered_podmonitor_is_rejected() {
    let copy = Copy::new();
    // In a part the harness's own PodMonitor reader leaves to the schema check (a misspelt endpoint
    // field is already refused, located, when the rendered set is read).
    copy.edit("fixtures/rendered/podmonitor.yaml", "  labels:\n", "  labells:\n");
    rejected("a_misspelled_field_in_the_rendered_podmonitor_is_rejected", &copy, "oss",
        "PodMonitor tigera-prometheus/tigera-waf-gateway-proxies", "fixtures/rendered/podmonitor.yaml",
        "metadata.labells", "unknown field");
}

#[test]
fn an_enum_violation_in_a_profile_manifest_is_rejected() {
    let copy = Copy::new();
    copy.edit("kind/manifests/proxy-metrics-deny.yaml", "defaultAction: Pass", "defaultAction: Allow");
    rejected("an_enum_violation_in_a_profile_manifest_is_rejected", &copy, "oss",
        "Tier waf-e2e-deny", "kind/manifests/proxy-metrics-deny.yaml", "spec.defaultAction", "enum");
}

#[test]
fn a_wrong_type_in_the_rendered_global_network_policy_is_rejected() {
    let copy = Copy::new();
    copy.edit("fixtures/rendered/globalnetworkpolicy.yaml", "order: 1", "order: first");
    rejected("a_wrong_type_in_the_rendered_global_network_policy_is_rejected", &copy, "oss",
        "GlobalNetworkPolicy allow-tigera.waf-gateway-proxy-metrics", "fixtures/rendered/globalnetworkpolicy.yaml", "spec.order", "type");
}

#[test]
fn an_unknown_field_in_a_scenario_waf_policy_is_rejected() {
    // The field the tigera template used before it was checked: pruned silently by an API server.
    let copy = Copy::new();
    copy.edit("kind/profiles/tigera-waf-policy.yaml", "  action: {{action}}", "  defaultAction: {{action}}");
    rejected("an_unknown_field_in_a_scenario_waf_policy_is_rejected", &copy, "tigera",
        "WAFPolicy waf-e2e-validate-sqli-blocked/waf-sqli-blocked", "kind/profiles/tigera-waf-policy.yaml", "spec.defaultAction", "unknown field");
}

#[test]
fn an_unknown_field_in_a_built_in_object_is_rejected() {
    let copy = Copy::new();
    copy.edit("kind/manifests/prometheus.yaml", "nonResourceURLs:", "nonResourceUrls:");
    rejected("an_unknown_field_in_a_built_in_object_is_rejected", &copy, "oss",
        "ClusterRole waf-e2e-prometheus", "kind/manifests/prometheus.yaml", "rules[3].nonResourceUrls", "unknown field");
}

#[test]
fn plan_with_the_pinned_releases_crds_passes_and_exits_2_on_a_broken_render() {
    let Some(crds) = shared_crds("plan_with_the_pinned_releases_crds_passes_and_exits_2_on_a_broken_render") else { return };
    let plan = ["plan", "--stack", "kind", "--profile", "oss", "--scenario", "sqli-blocked"];
    let (code, out) = check(&root(), &plan, &crds, OSS);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" 0 problem(s)") && !out.contains("NOT RUN"), "{out}");
    let copy = Copy::new();
    copy.edit("fixtures/rendered/podmonitor.yaml", "  labels:\n", "  labells:\n");
    let (code, out) = check(copy.0.path(), &plan, &crds, OSS);
    assert_eq!(code, 2, "{out}");
    let want = "PodMonitor tigera-prometheus/tigera-waf-gateway-proxies (fixtures/rendered/podmonitor.yaml): field `metadata.labells`: [unknown field]";
    assert!(out.lines().any(|l| l.contains(want)), "no line with `{want}` in:\n{out}");
}
