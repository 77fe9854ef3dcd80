//! The rendered EnvoyProxy translated the way Envoy Gateway v1.7.2 translates it for its proxies.
//!
//! Envoy Gateway (`internal/infrastructure/common/proxy_args.go`, `api/v1alpha1/envoyproxy_helpers.go`,
//! `internal/xds/bootstrap/bootstrap.go`) starts every proxy with
//! `--service-cluster C --service-node N --config-yaml B --log-level L --cpuset-threads
//! --drain-strategy immediate [--concurrency N] --component-log-level K --drain-time-s 60 <extraArgs>`,
//! where `L` is `spec.logging.level.default` (warn when unset) and `K` the other keys as sorted
//! `component:level` pairs (`misc:error` when there are none). [`ProxyLaunch::args`] holds that
//! list from `--log-level` on; the process adds the config file and the node names.
//!
//! Every field the local stack cannot reproduce is an error naming file, line and field path. The
//! Kubernetes-only fields that shape what Envoy sees (the `emptyDir` volumes and their mounts) are
//! mapped: a path under a mount becomes a directory of the run.

use super::located::{FieldLines, Problems};
use crate::error::InvalidInput;
use crate::rendered::RenderedDocument;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// The audit file the collector tails inside the proxy pod (the contract, DESIGN section 1).
pub const COLLECTOR_AUDIT_PATH: &str = "/access_logs/envoy.log";

/// Envoy Gateway's drain time (`--drain-time-s`) when the EnvoyProxy sets no shutdown config.
pub const DRAIN_TIME_S: &str = "60";

/// Options the harness itself sets on the command line; the EnvoyProxy cannot override them locally.
const HARNESS_FLAGS: &[&str] =
    &["-c", "--config-path", "--config-yaml", "--base-id", "--use-dynamic-base-id", "--service-cluster", "--service-node", "--mode"];

const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];

/// How Envoy is started for one EnvoyProxy: its arguments, stats matcher and the run's volume directories.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyLaunch {
    /// The resource, for messages (`EnvoyProxy envoy-gateway-system/tigera-waf-proxy`, or Envoy Gateway's defaults).
    pub source: String,
    /// Envoy's arguments from `--log-level` on, paths under mounted volumes mapped into the run directory.
    pub args: Vec<String>,
    /// The bootstrap's `stats_config.stats_matcher`, from `spec.telemetry.metrics.matches`.
    pub stats_matcher: Option<Value>,
    /// Whether the `metrics` listener serving `/stats/prometheus` exists (`spec.telemetry.metrics.prometheus.disable`).
    pub prometheus: bool,
    /// The mapped `--log-path`, if the EnvoyProxy sets one.
    pub log_path: Option<PathBuf>,
    /// Each mounted `emptyDir` volume's directory in the run: (volume name, directory).
    pub volume_dirs: Vec<(String, PathBuf)>,
    /// Each mount: (mount path in the pod, directory in the run).
    pub mounts: Vec<(String, PathBuf)>,
}

impl ProxyLaunch {
    /// What Envoy Gateway runs when the Gateway has no EnvoyProxy: `--log-level warn`, `misc:error`.
    pub fn envoy_gateway_defaults() -> ProxyLaunch {
        ProxyLaunch {
            source: "Envoy Gateway's default proxy settings (no EnvoyProxy)".into(),
            args: base_args("warn", None, "misc:error"),
            stats_matcher: None,
            prometheus: true,
            log_path: None,
            volume_dirs: Vec::new(),
            mounts: Vec::new(),
        }
    }

    /// Translates the rendered EnvoyProxy `doc`; mounted volumes become `<run_dir>/<volume name>`.
    /// Every unsupported field or value is an [`InvalidInput`] naming file, line and field path.
    pub fn from_envoyproxy(doc: &RenderedDocument, run_dir: &Path) -> Result<ProxyLaunch, InvalidInput> {
        let lines = FieldLines::of_document(doc);
        translate(&doc.value, &lines, run_dir)
    }

    /// The run's file for a path inside the pod, when it lies under a mounted volume.
    pub fn map_pod_path(&self, pod_path: &str) -> Option<PathBuf> {
        self.mounts.iter().find_map(|(mount, dir)| {
            let rest = pod_path.strip_prefix(mount.trim_end_matches('/'))?;
            if rest.is_empty() {
                Some(dir.clone())
            } else {
                rest.strip_prefix('/').map(|r| dir.join(r))
            }
        })
    }

    /// The file the collector reads ([`COLLECTOR_AUDIT_PATH`] in the pod), when a volume is mounted there.
    pub fn collector_path(&self) -> Option<PathBuf> {
        self.map_pod_path(COLLECTOR_AUDIT_PATH)
    }

    /// Creates every volume directory (an `emptyDir` exists, empty, before the container starts).
    pub fn create_volume_dirs(&self) -> anyhow::Result<()> {
        for (name, dir) in &self.volume_dirs {
            std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("create the directory of volume {name} ({}): {e}", dir.display()))?;
        }
        Ok(())
    }
}

fn base_args(level: &str, concurrency: Option<u64>, components: &str) -> Vec<String> {
    let mut args: Vec<String> = ["--log-level", level, "--cpuset-threads", "--drain-strategy", "immediate"].map(String::from).to_vec();
    if let Some(n) = concurrency {
        args.extend(["--concurrency".to_string(), n.to_string()]);
    }
    args.extend(["--component-log-level", components, "--drain-time-s", DRAIN_TIME_S].map(String::from));
    args
}

/// The keys of `v` at `path` must be among `allowed`; anything else is a problem naming it.
fn object<'a>(v: &'a Value, path: &str, allowed: &[&str], lines: &FieldLines, problems: &mut Problems) -> Option<&'a Map<String, Value>> {
    let Some(map) = v.as_object() else {
        problems.push(lines.problem(path, format!("must be a mapping, not `{v}`")));
        return None;
    };
    for key in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
        let field = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        problems.push(lines.problem(&field, format!("not supported by the local stack's EnvoyProxy translation (supported here: {})", allowed.join(", "))));
    }
    Some(map)
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn translate(doc: &Value, lines: &FieldLines, run_dir: &Path) -> Result<ProxyLaunch, InvalidInput> {
    let mut problems = Problems::default();
    let top = object(doc, "", &["apiVersion", "kind", "metadata", "spec", "status"], lines, &mut problems);
    let meta = top.and_then(|t| t.get("metadata"));
    let name = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str).unwrap_or("").to_string();
    let source = format!("EnvoyProxy {}/{}", name("namespace"), name("name"));
    if let Some(k) = top.and_then(|t| t.get("kind")).filter(|k| k.as_str() != Some("EnvoyProxy")) {
        problems.push(lines.problem("kind", format!("`{k}`: an EnvoyProxy is expected")));
    }
    if let Some(v) = top.and_then(|t| t.get("apiVersion")).filter(|v| v.as_str() != Some("gateway.envoyproxy.io/v1alpha1")) {
        problems.push(lines.problem("apiVersion", format!("`{v}`: an EnvoyProxy is gateway.envoyproxy.io/v1alpha1")));
    }
    let empty = Value::Object(Map::new());
    let spec = top.and_then(|t| t.get("spec")).unwrap_or(&empty);
    let spec = object(spec, "spec", &["logging", "extraArgs", "provider", "telemetry", "concurrency"], lines, &mut problems);
    let get = |k: &str| spec.and_then(|s| s.get(k));

    let (level, components) = logging(get("logging"), lines, &mut problems);
    let concurrency = get("concurrency").and_then(|c| {
        let n = c.as_u64().filter(|n| *n >= 1);
        if n.is_none() {
            problems.push(lines.problem("spec.concurrency", format!("`{c}`: a whole number of worker threads, at least 1")));
        }
        n
    });
    let (volume_dirs, mounts) = provider(get("provider"), lines, run_dir, &mut problems);
    let (stats_matcher, prometheus) = telemetry(get("telemetry"), lines, &mut problems);

    let mut args = base_args(&level, concurrency, &components);
    let mut log_path = None;
    let launch_mounts = ProxyLaunch { source: source.clone(), args: vec![], stats_matcher: None, prometheus, log_path: None, volume_dirs: vec![], mounts: mounts.clone() };
    if let Some(extra) = get("extraArgs") {
        let items = extra.as_array().cloned().unwrap_or_else(|| {
            problems.push(lines.problem("spec.extraArgs", "must be a list of strings"));
            Vec::new()
        });
        let mut previous: Option<String> = None;
        for (i, item) in items.iter().enumerate() {
            let path = format!("spec.extraArgs[{i}]");
            let Some(arg) = item.as_str() else {
                problems.push(lines.problem(&path, format!("`{item}`: must be a string")));
                continue;
            };
            let flag = arg.split('=').next().unwrap_or(arg);
            if HARNESS_FLAGS.contains(&flag) && arg.starts_with('-') {
                problems.push(lines.problem(&path, format!("`{flag}` is set by Envoy Gateway / the harness itself and cannot be overridden here")));
            }
            let (mapped, value_of_log_path) = map_arg(arg, previous.as_deref(), &launch_mounts);
            if let Some(value) = value_of_log_path {
                match launch_mounts.map_pod_path(&value) {
                    Some(p) => log_path = Some(p),
                    None => problems.push(lines.problem(&path, format!(
                        "--log-path `{value}` is not under a volume the EnvoyProxy mounts; the local stack only writes inside the run's volume directories"))),
                }
            }
            args.push(mapped);
            previous = Some(arg.to_string());
        }
    }
    problems.finish(ProxyLaunch { source, args, stats_matcher, prometheus, log_path, volume_dirs, mounts })
}

/// One extra argument with a pod path under a mount replaced by the run's directory; also the
/// `--log-path` value it carries (as `--log-path=V`, or as the value following `--log-path`).
fn map_arg(arg: &str, previous: Option<&str>, launch: &ProxyLaunch) -> (String, Option<String>) {
    if let Some(value) = arg.strip_prefix("--log-path=") {
        let mapped = launch.map_pod_path(value).map_or(arg.to_string(), |p| format!("--log-path={}", p.display()));
        return (mapped, Some(value.to_string()));
    }
    let log_value = (previous == Some("--log-path")).then(|| arg.to_string());
    if let Some((flag, value)) = arg.split_once('=').filter(|(f, _)| f.starts_with('-')) {
        if let Some(p) = launch.map_pod_path(value) {
            return (format!("{flag}={}", p.display()), log_value);
        }
    }
    (launch.map_pod_path(arg).map_or(arg.to_string(), |p| p.display().to_string()), log_value)
}

fn logging(v: Option<&Value>, lines: &FieldLines, problems: &mut Problems) -> (String, String) {
    let mut default = "warn".to_string();
    let mut pairs = Vec::new();
    let Some(v) = v else { return (default, "misc:error".into()) };
    let Some(logging) = object(v, "spec.logging", &["level"], lines, problems) else { return (default, "misc:error".into()) };
    if let Some(level) = logging.get("level") {
        match level.as_object() {
            Some(levels) => {
                for (component, value) in levels {
                    let path = format!("spec.logging.level.{component}");
                    match value.as_str() {
                        Some(l) if LOG_LEVELS.contains(&l) && component == "default" => default = l.to_string(),
                        Some(l) if LOG_LEVELS.contains(&l) => pairs.push(format!("{component}:{l}")),
                        // Envoy Gateway skips a component whose level is empty.
                        Some("") => {}
                        _ => problems.push(lines.problem(&path, format!("`{value}`: a log level is one of {}", LOG_LEVELS.join(", ")))),
                    }
                }
            }
            None => problems.push(lines.problem("spec.logging.level", "must be a mapping of component to level")),
        }
    }
    // Envoy Gateway sorts the `component:level` strings and falls back to `misc:error`.
    pairs.sort();
    let components = if pairs.is_empty() { "misc:error".to_string() } else { pairs.join(",") };
    (default, components)
}

type Volumes = (Vec<(String, PathBuf)>, Vec<(String, PathBuf)>);

fn provider(v: Option<&Value>, lines: &FieldLines, run_dir: &Path, problems: &mut Problems) -> Volumes {
    let mut volumes: Vec<(String, PathBuf)> = Vec::new();
    let mut mounts = Vec::new();
    let Some(v) = v else { return (volumes, mounts) };
    let Some(p) = object(v, "spec.provider", &["type", "kubernetes"], lines, problems) else { return (volumes, mounts) };
    if let Some(t) = p.get("type").filter(|t| t.as_str() != Some("Kubernetes")) {
        problems.push(lines.problem("spec.provider.type", format!("`{t}`: only the Kubernetes provider is translated")));
    }
    let empty = Value::Object(Map::new());
    let path = "spec.provider.kubernetes";
    let k = object(p.get("kubernetes").unwrap_or(&empty), path, &["envoyDeployment"], lines, problems);
    let path = "spec.provider.kubernetes.envoyDeployment";
    let d = k.and_then(|k| k.get("envoyDeployment")).and_then(|d| object(d, path, &["pod", "container"], lines, problems));
    let pod = d.and_then(|d| d.get("pod")).and_then(|p| object(p, &child(path, "pod"), &["volumes"], lines, problems));
    let container = d.and_then(|d| d.get("container")).and_then(|c| object(c, &child(path, "container"), &["volumeMounts"], lines, problems));
    for (i, vol) in pod.and_then(|p| p.get("volumes")).and_then(Value::as_array).into_iter().flatten().enumerate() {
        let vpath = format!("{path}.pod.volumes[{i}]");
        let Some(vol) = object(vol, &vpath, &["name", "emptyDir"], lines, problems) else { continue };
        let Some(name) = vol.get("name").and_then(Value::as_str).filter(|n| !n.is_empty() && !n.contains(['/', '.'])) else {
            problems.push(lines.problem(&child(&vpath, "name"), "missing, or not a volume name (a DNS label)"));
            continue;
        };
        match vol.get("emptyDir") {
            Some(e) => {
                // `medium` and `sizeLimit` only shape the node's storage; the directory behaves the same.
                object(e, &child(&vpath, "emptyDir"), &["medium", "sizeLimit"], lines, problems);
            }
            None => problems.push(lines.problem(&vpath, "only emptyDir volumes can be mapped to a directory of the run")),
        }
        volumes.push((name.to_string(), run_dir.join(name)));
    }
    for (i, m) in container.and_then(|c| c.get("volumeMounts")).and_then(Value::as_array).into_iter().flatten().enumerate() {
        let mpath = format!("{path}.container.volumeMounts[{i}]");
        let Some(m) = object(m, &mpath, &["name", "mountPath"], lines, problems) else { continue };
        let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
        let mount_path = m.get("mountPath").and_then(Value::as_str).filter(|p| p.starts_with('/'));
        match (volumes.iter().find(|(n, _)| n == name), mount_path) {
            (None, _) => problems.push(lines.problem(&child(&mpath, "name"), format!("`{name}` names no volume in pod.volumes"))),
            (_, None) => problems.push(lines.problem(&child(&mpath, "mountPath"), "missing or not an absolute path")),
            (Some((_, dir)), Some(mp)) => mounts.push((mp.to_string(), dir.clone())),
        }
    }
    // Only mounted volumes matter to Envoy; an unmounted emptyDir gets no directory.
    volumes.retain(|(_, dir)| mounts.iter().any(|(_, d)| d == dir));
    (volumes, mounts)
}

fn telemetry(v: Option<&Value>, lines: &FieldLines, problems: &mut Problems) -> (Option<Value>, bool) {
    let Some(v) = v else { return (None, true) };
    let t = object(v, "spec.telemetry", &["metrics"], lines, problems);
    let path = "spec.telemetry.metrics";
    let Some(m) = t.and_then(|t| t.get("metrics")).and_then(|m| object(m, path, &["matches", "prometheus"], lines, problems)) else {
        return (None, true);
    };
    let mut prometheus = true;
    if let Some(p) = m.get("prometheus").and_then(|p| object(p, &child(path, "prometheus"), &["disable"], lines, problems)) {
        match p.get("disable") {
            None => {}
            Some(Value::Bool(d)) => prometheus = !d,
            Some(other) => problems.push(lines.problem(&format!("{path}.prometheus.disable"), format!("`{other}`: must be true or false"))),
        }
    }
    let Some(matches) = m.get("matches") else { return (None, prometheus) };
    let Some(items) = matches.as_array() else {
        problems.push(lines.problem(&child(path, "matches"), "must be a list of {type, value}"));
        return (None, prometheus);
    };
    if items.is_empty() {
        problems.push(lines.problem(&child(path, "matches"),
            "is empty: Envoy Gateway renders an inclusion list without patterns, which Envoy rejects"));
    }
    // Envoy Gateway's bootstrap template lists exact, then prefix, suffix and regex patterns.
    let mut groups: [Vec<Value>; 4] = Default::default();
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}.matches[{i}]");
        let Some(item) = object(item, &ipath, &["type", "value"], lines, problems) else { continue };
        let Some(value) = item.get("value").and_then(Value::as_str).filter(|v| !v.is_empty()) else {
            problems.push(lines.problem(&child(&ipath, "value"), "missing or empty"));
            continue;
        };
        match item.get("type").map(|t| t.as_str().unwrap_or("?")).unwrap_or("Exact") {
            "Exact" => groups[0].push(json!({"exact": value})),
            "Prefix" => groups[1].push(json!({"prefix": value})),
            "Suffix" => groups[2].push(json!({"suffix": value})),
            "RegularExpression" => match regex::Regex::new(value) {
                Ok(_) => groups[3].push(json!({"safe_regex": {"google_re2": {}, "regex": value}})),
                Err(e) => problems.push(lines.problem(&child(&ipath, "value"), format!("not a valid RE2 regex: {}", e.to_string().lines().last().unwrap_or("")))),
            },
            other => problems.push(lines.problem(&child(&ipath, "type"), format!("`{other}`: one of Exact, Prefix, Suffix, RegularExpression"))),
        }
    }
    let patterns: Vec<Value> = groups.into_iter().flatten().collect();
    (Some(json!({"inclusion_list": {"patterns": patterns}})), prometheus)
}
