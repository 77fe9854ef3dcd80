//! The local stack's inputs, translated: the rendered EnvoyProxy into Envoy's launch, the PodMonitor
//! into Prometheus' config, each scenario's WAF policy (from the profile's template) into a route
//! with its wasm filters; and the diagnostics bundle of a failed scenario.

use super::{LocalOptions, GATEWAY, GATEWAY_NAMESPACE};
use crate::envoy::{EnvoyOptions, EnvoyProcess, ProxyLaunch, RouteSpec, COLLECTOR_AUDIT_PATH};
use crate::error::InputLocation;
use crate::profile::Profile;
use crate::rendered::{render_scrape_config, PodTarget, RenderedSet};
use crate::scenario::Scenario;
use crate::stack::ScenarioEnv;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Envoy's log levels, least to most severe.
const LOG_LEVELS: [&str; 7] = ["trace", "debug", "info", "warn", "warning", "error", "critical"];

/// What the local stack is built from, loaded and checked before anything starts.
pub struct Parts {
    /// The resources under test.
    pub rendered: RenderedSet,
    /// The profile whose WAF template renders each policy.
    pub profile: Profile,
    templates: crate::profile::waf_policy::WafTemplates,
    template_at: InputLocation,
    /// Envoy's launch, from the rendered EnvoyProxy (or Envoy Gateway's defaults when there is none).
    pub launch: ProxyLaunch,
    module: PathBuf,
}

impl Parts {
    /// Loads the rendered resources, the profile and its template, and translates the EnvoyProxy.
    pub fn load(opts: &LocalOptions, run_dir: &Path) -> Result<Parts> {
        let rendered = RenderedSet::load(&opts.rendered).with_context(|| format!("load rendered resources from {}", opts.rendered.display()))?;
        let profile = Profile::load(&opts.root, &opts.profile)?;
        let templates = crate::profile::waf_policy::load_templates(&opts.root, &profile)?;
        let template_at = InputLocation { file: opts.root.join(&profile.waf.template), line: 0, column: 0 };
        let proxies: Vec<_> = rendered.documents.iter().filter(|d| d.kind == "EnvoyProxy").collect();
        let launch = match proxies.as_slice() {
            [] => ProxyLaunch::envoy_gateway_defaults(),
            [one] => ProxyLaunch::from_envoyproxy(one, run_dir)?,
            [first, ..] => anyhow::bail!("the rendered resources hold {} EnvoyProxy objects ({}:{} is the first); the local stack runs one proxy", proxies.len(), first.file.display(), first.line),
        };
        Ok(Parts { rendered, profile, templates, template_at, launch, module: PathBuf::new() })
    }

    /// The same parts, loading `module` as every policy's wasm code.
    pub fn with_module(self, module: PathBuf) -> Parts {
        Parts { module, ..self }
    }

    /// The wasm module every policy loads.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// The flavour of the profile's filter (what `--waf-wasm` runs unless `--waf-flavour` says otherwise).
    pub fn profile_flavour(&self) -> String {
        self.profile.filter.flavour.clone()
    }

    /// Starts Envoy as Envoy Gateway runs a proxy of [`GATEWAY`].
    pub async fn start_envoy(&self, opts: &LocalOptions, run_dir: &Path, extra_clusters: Vec<(String, SocketAddr)>) -> Result<EnvoyProcess> {
        self.start_envoy_on(opts, run_dir, extra_clusters, None).await
    }

    /// [`Parts::start_envoy`] on the given admin, metrics and gateway addresses (a restart keeps them).
    pub async fn start_envoy_on(&self, opts: &LocalOptions, run_dir: &Path, extra_clusters: Vec<(String, SocketAddr)>, ports: Option<[SocketAddr; 3]>) -> Result<EnvoyProcess> {
        let binary = crate::envoy::find_envoy(opts.envoy.as_deref())?;
        EnvoyProcess::start(EnvoyOptions {
            binary,
            run_dir: run_dir.to_path_buf(),
            launch: self.launch.clone(),
            service_cluster: format!("{GATEWAY_NAMESPACE}/{GATEWAY}"),
            service_node: format!("envoy-{GATEWAY_NAMESPACE}-{GATEWAY}-local"),
            listener_name: format!("{GATEWAY_NAMESPACE}/{GATEWAY}/http"),
            extra_clusters,
            timeouts: opts.timeouts.clone(),
            ports,
        })
        .await
    }

    /// The PodMonitor's translation, scraping `target` as the proxy pod of [`GATEWAY`].
    pub fn scrape_config(&self, target: SocketAddr, interval: Duration) -> Result<String> {
        let pod = PodTarget::envoy_gateway_proxy(target.to_string(), GATEWAY, GATEWAY_NAMESPACE);
        render_scrape_config(&self.rendered.podmonitor, &pod, interval).context("translate the PodMonitor into a Prometheus scrape config")
    }

    /// The scenario's HTTPRoute with the wasm filters of its WAF policy, rendered from the profile's template.
    pub fn route(&self, scenario: &Scenario, env: &ScenarioEnv, backend: SocketAddr) -> Result<RouteSpec> {
        self.route_with_module(scenario, env, backend, &self.module)
    }

    /// [`Parts::route`] with `module` as the wasm code (a filter rebuilt while the stack runs).
    pub fn route_with_module(&self, scenario: &Scenario, env: &ScenarioEnv, backend: SocketAddr, module: &Path) -> Result<RouteSpec> {
        let route = env.scenario.clone();
        let docs = crate::profile::waf_policy::render_waf_policy(&self.templates, &self.profile, scenario, &env.namespace, &env.policy, &route)?;
        let mut wasm = Vec::new();
        for doc in &docs {
            let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or("(no kind)");
            anyhow::ensure!(kind == "EnvoyExtensionPolicy",
                "profile {}'s WAF template renders a {kind}; the local stack translates only EnvoyExtensionPolicy (run this profile on a cluster)", self.profile.name);
            wasm.extend(crate::envoy::wasm_filters_from_extension_policy(doc, &self.template_at, module)?);
        }
        Ok(RouteSpec { name: format!("httproute/{}/{route}/rule/0", env.namespace), host: env.host.clone(), backend, wasm })
    }

    /// The file a collector tails for audit records: `/access_logs/envoy.log` in the pod, mapped
    /// into the run (a path where nothing writes when the EnvoyProxy mounts no volume there).
    pub fn audit_file(&self) -> PathBuf {
        self.launch.collector_path().unwrap_or_else(|| PathBuf::from("/nonexistent/waf-e2e/no-volume-mounted-at/access_logs/envoy.log"))
    }

    /// What in the EnvoyProxy keeps the filter's `AuditLog:` lines (info, logger `wasm`) from the collector's file.
    pub fn audit_hints(&self) -> Vec<String> {
        audit_hints(&self.launch)
    }
}

/// Reasons, read from the EnvoyProxy's translation, why audit lines would not reach the collector.
pub fn audit_hints(launch: &ProxyLaunch) -> Vec<String> {
    let mut hints = Vec::new();
    let collector = launch.collector_path();
    match (&launch.log_path, &collector) {
        (None, _) => hints.push(format!("{}: spec.extraArgs has no `--log-path {COLLECTOR_AUDIT_PATH}`: Envoy logs to stderr, and the collector tails {COLLECTOR_AUDIT_PATH}", launch.source)),
        (Some(_), None) => hints.push(format!("{}: no volume is mounted at {}, where the collector tails {COLLECTOR_AUDIT_PATH}", launch.source, parent(COLLECTOR_AUDIT_PATH))),
        (Some(path), Some(collector)) if path != collector => hints.push(format!("{}: `--log-path` writes {}, not {COLLECTOR_AUDIT_PATH}, which the collector tails", launch.source, path.display())),
        _ => {}
    }
    let wasm = wasm_log_level(&launch.args);
    if severity(&wasm) > severity("info") {
        hints.push(format!("{}: Envoy's `wasm` logger is at `{wasm}` (spec.logging.level), so the filter's `AuditLog:` lines, logged at info, are dropped", launch.source));
    }
    hints
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(dir, _)| dir)
}

/// The effective level of Envoy's `wasm` logger: its `--component-log-level` entry, else `--log-level`.
fn wasm_log_level(args: &[String]) -> String {
    let value_of = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let component = value_of("--component-log-level").and_then(|list| {
        list.split(',').find_map(|pair| pair.split_once(':').filter(|(k, _)| *k == "wasm").map(|(_, v)| v.to_string()))
    });
    component.or_else(|| value_of("--log-level")).unwrap_or_else(|| "info".into())
}

fn severity(level: &str) -> usize {
    LOG_LEVELS.iter().position(|l| *l == level).unwrap_or(usize::MAX)
}

/// What a failed scenario's bundle is made of.
pub struct Bundle<'a> {
    /// The run directory (Envoy's bootstrap, xDS files, stderr).
    pub run_dir: &'a Path,
    /// The audit file the collector tails.
    pub audit_file: &'a Path,
    /// The scenario.
    pub scenario: &'a ScenarioEnv,
    /// Envoy's `/stats/prometheus` now.
    pub raw_stats: &'a str,
    /// Prometheus' directory (config, log), while it runs.
    pub prometheus_dir: Option<&'a Path>,
    /// The tail of Prometheus' log.
    pub prometheus_log: &'a str,
    /// `/api/v1/targets?state=any`.
    pub prometheus_targets: &'a str,
}

/// Writes the bundle into `dir`: everything a person needs to debug the scenario after the run's
/// directory is gone (Envoy and Prometheus configs and logs, the audit log, the raw stats).
pub fn write_bundle(dir: &Path, b: &Bundle<'_>) -> Result<()> {
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).with_context(|| format!("write {}", dir.join(name).display()));
    let copy = |from: &Path, name: &str| match std::fs::read(from) {
        Ok(bytes) => std::fs::write(dir.join(name), bytes).with_context(|| format!("write {}", dir.join(name).display())),
        Err(e) => write(name, &format!("could not read {}: {e}\n", from.display())),
    };
    write("raw-stats.txt", b.raw_stats)?;
    write("prometheus-targets.json", b.prometheus_targets)?;
    write("prometheus.log", b.prometheus_log)?;
    if let Some(p) = b.prometheus_dir {
        copy(&p.join("prometheus.yml"), "prometheus.yml")?;
    }
    copy(&b.run_dir.join("bootstrap.json"), "envoy-bootstrap.json")?;
    copy(&b.run_dir.join("xds").join(crate::envoy::bootstrap::LDS_FILE), "envoy-lds.json")?;
    copy(&b.run_dir.join("xds").join(crate::envoy::bootstrap::CDS_FILE), "envoy-cds.json")?;
    copy(&b.run_dir.join("envoy.stderr.log"), "envoy.stderr.log")?;
    copy(b.audit_file, "audit-log.txt")?;
    let ours: Vec<String> = std::fs::read_to_string(b.audit_file).unwrap_or_default().lines().filter(|l| l.contains(&b.scenario.scenario)).map(str::to_string).collect();
    write("audit-log-this-scenario.txt", &ours.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(args: &[&str], log_path: Option<&str>, mounted: bool) -> ProxyLaunch {
        let mut l = ProxyLaunch::envoy_gateway_defaults();
        l.source = "EnvoyProxy ns/p".into();
        l.args = args.iter().map(|a| a.to_string()).collect();
        l.log_path = log_path.map(PathBuf::from);
        if mounted {
            l.mounts = vec![("/access_logs".into(), PathBuf::from("/run/access-logs"))];
        }
        l
    }

    #[test]
    fn the_rendered_envoyproxy_keeps_the_audit_lines() {
        let ok = launch(&["--log-level", "warn", "--component-log-level", "misc:error,wasm:info"], Some("/run/access-logs/envoy.log"), true);
        assert!(audit_hints(&ok).is_empty(), "{:?}", audit_hints(&ok));
    }

    #[test]
    fn a_wasm_logger_above_info_or_a_missing_log_path_is_named() {
        let quiet = launch(&["--log-level", "warn", "--component-log-level", "wasm:warn"], Some("/run/access-logs/envoy.log"), true);
        let hints = audit_hints(&quiet);
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(hints[0].contains("EnvoyProxy ns/p") && hints[0].contains("`warn`"), "{}", hints[0]);
        let inherited = launch(&["--log-level", "error"], Some("/run/access-logs/envoy.log"), true);
        assert!(audit_hints(&inherited)[0].contains("`error`"));
        let stderr = launch(&["--log-level", "info"], None, true);
        assert!(audit_hints(&stderr)[0].contains("no `--log-path /access_logs/envoy.log`"));
    }
}
