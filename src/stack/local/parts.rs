//! The local stack's inputs, translated: the rendered EnvoyProxy into Envoy's launch, the PodMonitor
//! into Prometheus' config, each scenario's WAF policy (from the profile's template) into a route
//! with its wasm filters; and the diagnostics bundle of a failed scenario.

use super::{LocalOptions, GATEWAY, GATEWAY_NAMESPACE};
use crate::container::DockerSession;
use crate::envoy::{EnvoyLauncher, EnvoyOptions, EnvoyProcess, ProxyLaunch, RouteSpec};
use crate::error::InputLocation;
use crate::profile::Profile;
use crate::rendered::{render_scrape_config, PodTarget, RenderedSet};
use crate::scenario::Scenario;
use crate::stack::ScenarioEnv;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    pub async fn start_envoy(&self, opts: &LocalOptions, run_dir: &Path, extra_clusters: Vec<(String, SocketAddr)>, docker: Option<&Arc<DockerSession>>) -> Result<EnvoyProcess> {
        self.start_envoy_on(opts, run_dir, extra_clusters, None, docker).await
    }

    /// [`Parts::start_envoy`] on the given admin, metrics and gateway addresses (a restart keeps them).
    pub async fn start_envoy_on(&self, opts: &LocalOptions, run_dir: &Path, extra_clusters: Vec<(String, SocketAddr)>, ports: Option<[SocketAddr; 3]>, docker: Option<&Arc<DockerSession>>) -> Result<EnvoyProcess> {
        let launcher = match docker {
            Some(session) => EnvoyLauncher::Container(session.clone()),
            None => EnvoyLauncher::Binary(crate::envoy::find_envoy(opts.envoy.as_deref())?),
        };
        EnvoyProcess::start(EnvoyOptions {
            launcher,
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
    pub fn scrape_config(&self, target: &str, interval: Duration) -> Result<String> {
        let pod = PodTarget::envoy_gateway_proxy(target, GATEWAY, GATEWAY_NAMESPACE);
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
        self.launch.audit_hints()
    }
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
