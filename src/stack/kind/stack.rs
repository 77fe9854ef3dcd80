//! `KindStack`: executes the plan's setup steps on kind (or an existing cluster) and implements `Stack`.
//!
//! NOT RUN on the machine this was written on (no docker engine, no registry): everything it calls
//! that can be tested without a cluster is tested in the sibling modules; this file is the thin
//! glue between the plan and `crate::k8s`. See docs/kind.md for what a first real run must confirm.

use super::cache::{Fetched, LockFile};
use super::cluster::{self, ClusterGuard, KindCli};
use super::doctor::{preflight, StackKind};
use super::objects;
use super::plan::{build_plan, ClusterTarget, Plan, PlanStep, PodRef, FIELD_MANAGER, KIND_FIELD_MANAGER};
use crate::profile::{lock_path, WaitSpec};
use super::scrape::{target_up_or_blame, ScrapeProbe};
use super::secrets;
use super::steps::{audit_hints, envoyproxy_adjustment, gateway_manifest, namespaces_manifest, policy_accepted, scrub, split_ref, waf_policy_ready};
use super::ClusterOpts;
use crate::error::HarnessError;
use crate::k8s::{self, AppliedObject, AuditReader, PortForward};
use crate::scenario::{Capability, Scenario};
use crate::audit::{AuditCursor, AuditLines};
use crate::stack::{Endpoints, FilterInfo, ScenarioEnv, Stack};
use crate::timeouts::Timeouts;
use crate::wait::{self, Check};
use anyhow::{anyhow, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// The kind (or existing-cluster) stack, up and reachable through port-forwards.
pub struct KindStack {
    plan: Plan,
    client: Client,
    cluster: Option<ClusterGuard>,
    endpoints: Endpoints,
    stats_url: String,
    /// Held so the port-forwards live as long as the stack (they stop on drop).
    _forwards: Vec<PortForward>,
    template: crate::profile::waf_policy::WafTemplates,
    keep: bool,
    timeouts: Timeouts,
    name: String,
    http: reqwest::Client,
    applied: Mutex<BTreeMap<String, Vec<AppliedObject>>>,
    last_cursor: Mutex<Option<AuditCursor>>,
    audit_reader: Option<AuditReader>,
    filter: FilterInfo,
    /// What in the EnvoyProxy the cluster runs keeps audit lines from the collector, translated once.
    audit_hints: Vec<String>,
    /// The proxies' Envoy restart counts when the stack came up (a restart after it ends the run).
    proxy_restarts: BTreeMap<String, i32>,
    /// When the proxies were last seen healthy.
    proxy_healthy_at: Mutex<Option<std::time::Instant>>,
}

/// The filter a profile runs: its flavour keys filter-dependent expectations (rule ids, phases).
fn profile_filter(profile: &crate::profile::Profile) -> FilterInfo {
    let flavour = profile.filter.flavour.as_str();
    let image = profile.waf.wasm_image.clone().unwrap_or_else(|| "the product's WAF filter".into());
    FilterInfo { flavour: flavour.into(), description: format!("{image} (profile {})", profile.name), envoy_version: None }
}

impl std::fmt::Debug for KindStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindStack").field("name", &self.name).field("run_id", &self.plan.run_id).field("endpoints", &self.endpoints).finish()
    }
}

/// A kube client for a kubeconfig file (or the default loading rules) and context; unreadable is a usage error.
pub async fn client_for(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client> {
    let options = KubeConfigOptions { context: context.map(String::from), ..Default::default() };
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| HarnessError::Usage(format!("--kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| HarnessError::Usage(format!("cannot use the kubeconfig{}: {e}", context.map(|c| format!(" context {c}")).unwrap_or_default())))?;
    Client::try_from(config).context("cannot build a Kubernetes client")
}

impl KindStack {
    /// Checks prerequisites, builds the plan over `scenarios` and executes its setup steps.
    pub async fn up(opts: &ClusterOpts, scenarios: &[Scenario]) -> Result<KindStack> {
        let plan = build_plan(opts, scenarios)?;
        if plan.target.is_kind() {
            preflight(StackKind::Kind).await?;
        }
        let template = crate::profile::waf_policy::load_templates(&plan.root, &plan.profile)?;
        let cli = KindCli { binary: opts.kind_binary.clone() };
        let t = opts.timeouts.clone();
        let mut lock = LockFile::load(&lock_path(&plan.root, &plan.profile.name))?;
        let mut fetched: BTreeMap<String, Fetched> = BTreeMap::new();
        let mut guard: Option<ClusterGuard> = None;
        let mut client: Option<Client> = None;
        let mut forwards: BTreeMap<String, PortForward> = BTreeMap::new();
        let mut applied_setup: Vec<AppliedObject> = Vec::new();

        for step in plan.setup_steps() {
            tracing::info!("{step}");
            match step {
                PlanStep::CreateCluster { name, config } => {
                    let g = cluster::create(&cli, name, &plan.root.join(config), opts.keep, t.cluster_create).await?;
                    client = Some(client_for(Some(g.kubeconfig()), Some(&g.context())).await?);
                    guard = Some(g);
                }
                PlanStep::ReuseCluster { name } => {
                    let g = cluster::reuse(&cli, name, t.tool_probe.max(Duration::from_secs(30))).await?;
                    client = Some(client_for(Some(g.kubeconfig()), Some(&g.context())).await?);
                    guard = Some(g);
                }
                PlanStep::ConnectCluster { kubeconfig, context } => {
                    client = Some(client_for(kubeconfig.as_deref(), context.as_deref()).await?);
                }
                _ => {
                    let c = client.as_ref().ok_or_else(|| anyhow!("plan has no cluster step before {step}"))?;
                    execute(step, c, &plan, &t, &mut lock, &mut fetched, &mut forwards, &mut applied_setup)
                        .await
                        .with_context(|| format!("step failed: {step}"))?;
                }
            }
        }
        let client = client.ok_or_else(|| anyhow!("plan has no cluster step"))?;
        let take = |forwards: &mut BTreeMap<String, PortForward>, n: &str| {
            forwards.remove(n).ok_or_else(|| anyhow!("plan has no {n} port-forward"))
        };
        let gateway = take(&mut forwards, "gateway")?;
        let stats = take(&mut forwards, "proxy-stats")?;
        let prometheus = take(&mut forwards, "prometheus")?;
        let endpoints = Endpoints { gateway_url: gateway.url(), prometheus_url: prometheus.url(), scrape_pool: plan.scrape_pool() };
        let name = match plan.target {
            ClusterTarget::Existing { .. } => "cluster",
            _ => "kind",
        }
        .to_string();
        let mut applied = BTreeMap::new();
        applied.insert(String::new(), applied_setup);
        let audit_reader = plan.audit_reader();
        let filter = profile_filter(&plan.profile);
        let audit_hints = audit_hints(&plan.rendered);
        let proxy_restarts = super::proxy_health::envoy_restarts(&list_proxy_pods(&client, &plan).await?);
        Ok(KindStack {
            filter,
            audit_hints,
            proxy_restarts,
            proxy_healthy_at: Mutex::new(None),
            stats_url: stats.url(),
            _forwards: vec![gateway, stats, prometheus],
            client,
            cluster: guard,
            endpoints,
            template,
            keep: opts.keep,
            timeouts: t,
            name,
            http: reqwest::Client::builder().build()?,
            applied: Mutex::new(applied),
            last_cursor: Mutex::new(None),
            audit_reader,
            plan,
        })
    }

    /// The plan this stack executed.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The kube client (for callers that need more than the `Stack` trait).
    pub fn client(&self) -> &Client {
        &self.client
    }

}

/// The Gateway's proxy pods, as (namespace, name).
async fn proxy_pods(client: &Client, plan: &Plan) -> Result<Vec<(String, String)>> {
    let ns = &plan.profile.gateway.proxy_namespace;
    Ok(list_proxy_pods(client, plan).await?.into_iter().filter_map(|p| p.metadata.name).map(|n| (ns.clone(), n)).collect())
}

/// The Gateway's proxy pods.
async fn list_proxy_pods(client: &Client, plan: &Plan) -> Result<Vec<Pod>> {
    let ns = &plan.profile.gateway.proxy_namespace;
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&plan.proxy_selector()))
        .await
        .with_context(|| format!("list proxy pods in {ns}"))?;
    Ok(pods.items)
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    step: &PlanStep,
    client: &Client,
    plan: &Plan,
    t: &Timeouts,
    lock: &mut LockFile,
    fetched: &mut BTreeMap<String, Fetched>,
    forwards: &mut BTreeMap<String, PortForward>,
    applied: &mut Vec<AppliedObject>,
) -> Result<()> {
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
    match step {
        PlanStep::Fetch { download, .. } => {
            let f = plan.cache.fetch(download, lock).await?;
            tracing::info!(path = %f.path.display(), from_cache = f.from_cache, "fetched {} {}", download.name, download.version);
            fetched.insert(download.name.clone(), f);
        }
        PlanStep::ApplyDownload { name, version } => {
            let f = fetched.get(name).ok_or_else(|| anyhow!("{name} was not fetched"))?;
            let source = format!("{name} {version} ({})", f.path.display());
            // Release manifests carry their CRDs: apply those first and wait until they are served.
            k8s::apply_manifests_crds_first(client, &read(&f.path)?, &source, FIELD_MANAGER, t.crd_established).await?;
        }
        PlanStep::EnsureNamespaces { namespaces } => {
            applied.extend(k8s::apply_manifests(client, &namespaces_manifest(namespaces), "namespaces of the rendered objects", FIELD_MANAGER).await?);
        }
        PlanStep::ApplyFile { path, .. } => {
            let full = plan.root.join(path);
            applied.extend(k8s::apply_manifests(client, &read(&full)?, &path.display().to_string(), FIELD_MANAGER).await?);
        }
        PlanStep::ApplySecret { kind, env } => {
            let secret = secrets::read_from_env(*kind, env)?;
            let manifest = secrets::manifest(*kind, &secret)?;
            // Whatever the API server echoes back is scrubbed of the credential before it is shown.
            k8s::apply_manifests(client, manifest.expose(), &format!("the {kind} from ${env}"), FIELD_MANAGER)
                .await
                .map_err(|e| anyhow!("{}", scrub(&format!("{e:#}"), secret.expose())))?;
        }
        PlanStep::ApplyRendered { path, .. } => {
            applied.extend(k8s::apply_manifests(client, &read(path)?, &path.display().to_string(), FIELD_MANAGER).await?);
        }
        PlanStep::AdjustEnvoyProxy { target, .. } => {
            k8s::apply_manifests(client, &envoyproxy_adjustment(target), "kind EnvoyProxy adjustment", KIND_FIELD_MANAGER).await?;
        }
        PlanStep::ApplyGateway { path, envoyproxy } => {
            let text = gateway_manifest(&read(&plan.root.join(path))?, envoyproxy.as_ref());
            applied.extend(k8s::apply_manifests(client, &text, &path.display().to_string(), FIELD_MANAGER).await?);
        }
        PlanStep::Wait { wait, timeout } => run_wait(client, wait, *timeout, forwards, plan).await?,
        PlanStep::AttachAuditReader { image, timeout, .. } => {
            // NOT RUN here: needs Kubernetes >= 1.25 and permission to patch pods/ephemeralcontainers.
            let reader = AuditReader { image: image.clone(), running_timeout: *timeout };
            let pods = proxy_pods(client, plan).await?;
            if pods.is_empty() {
                return Err(anyhow!("no proxy pods match {} in {}", plan.proxy_selector(), plan.profile.gateway.proxy_namespace));
            }
            for (ns, pod, source) in k8s::audit_sources(client, &pods, Some(&reader)).await? {
                tracing::info!(%ns, %pod, ?source, "audit log source");
            }
        }
        PlanStep::PortForward { name, namespace, pod, port } => {
            // A selector forward follows the selector, so a restarted proxy pod is picked up again.
            let pf = match pod {
                PodRef::Name(n) => PortForward::start(client.clone(), namespace, n, *port).await?,
                PodRef::Selector(s) => PortForward::start_for_selector(client.clone(), namespace, s, *port).await?,
            };
            eprintln!("port-forward {name}: {} -> {}", pf.url(), pf.target());
            forwards.insert(name.clone(), pf);
        }
        other => return Err(anyhow!("not a setup step: {other}")),
    }
    Ok(())
}

async fn run_wait(client: &Client, w: &WaitSpec, timeout: Duration, forwards: &BTreeMap<String, PortForward>, plan: &Plan) -> Result<()> {
    use crate::k8s::waits;
    match w {
        WaitSpec::CrdEstablished(name) => waits::crd_established(client, name, timeout).await,
        WaitSpec::DeploymentAvailable(r) => {
            let (ns, name) = split_ref(r)?;
            waits::deployment_available(client, ns, name, timeout).await
        }
        WaitSpec::CalicoReady => waits::calico_ready(client, timeout).await,
        WaitSpec::GatewayClassAccepted(name) => waits::gateway_class_accepted(client, name, timeout).await,
        WaitSpec::GatewayProgrammed(r) => {
            let (ns, name) = split_ref(r)?;
            waits::gateway_programmed(client, ns, name, timeout).await
        }
        WaitSpec::PrometheusReady(r) => {
            let (ns, name) = split_ref(r)?;
            waits::prometheus_ready(client, ns, name, timeout).await
        }
        WaitSpec::PodsReady(r) => {
            let (ns, selector) = split_ref(r)?;
            waits::pods_ready(client, ns, selector, timeout).await
        }
        WaitSpec::RouteAccepted(r) => {
            let (ns, name) = split_ref(r)?;
            waits::route_accepted(client, ns, name, timeout).await
        }
        WaitSpec::ScrapeTargetUp(pool) => {
            let url = |name: &str| forwards.get(name).map(PortForward::url).ok_or_else(|| anyhow!("no {name} port-forward before the target-up wait"));
            let probe = ScrapeProbe {
                prometheus_url: url("prometheus")?,
                stats_url: url("proxy-stats")?,
                pool: pool.clone(),
                prometheus_pod: (plan.profile.prometheus.namespace.clone(), format!("prometheus-{}-0", plan.profile.prometheus.name)),
                proxies: (plan.profile.gateway.proxy_namespace.clone(), plan.proxy_selector()),
                policies: plan.rendered.documents.iter().filter(|d| d.kind == "GlobalNetworkPolicy").map(|d| d.value.clone()).collect(),
            };
            target_up_or_blame(client, &probe, timeout).await
        }
    }
}

/// Polls every WAF policy of `objects` until its controller took it: an EnvoyExtensionPolicy Accepted by
/// its ancestors (`status.ancestors`), a Calico WAFPolicy Ready (`status.conditions`).
async fn policies_accepted(client: &Client, objects: &[AppliedObject], timeout: Duration) -> Result<()> {
    let kinds = ["EnvoyExtensionPolicy", "WAFPolicy"];
    for o in objects.iter().filter(|o| kinds.contains(&o.kind.as_str())) {
        let types = kube::core::TypeMeta { api_version: o.api_version.clone(), kind: o.kind.clone() };
        let (ar, _) = crate::k8s::apply::resolve_kind(client, &types).await?;
        let ns = o.namespace.clone().unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
        let waf_policy = o.kind == "WAFPolicy";
        let what = if waf_policy { format!("{o} Ready=True") } else { format!("{o} Accepted") };
        wait::until(&what, timeout, || {
            let api = api.clone();
            let name = o.name.clone();
            async move {
                Ok(match api.get_opt(&name).await? {
                    None => Check::NotYet("not found".into()),
                    Some(obj) if waf_policy => waf_policy_ready(&obj.data, obj.metadata.generation),
                    Some(obj) => policy_accepted(&obj.data),
                })
            }
        })
        .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Stack for KindStack {
    fn name(&self) -> &str {
        &self.name
    }

    fn endpoints(&self) -> Endpoints {
        self.endpoints.clone()
    }

    fn capabilities(&self) -> &[Capability] {
        &self.plan.profile.capabilities
    }

    fn filter(&self) -> &FilterInfo {
        &self.filter
    }

    fn audit_hints(&self) -> Vec<String> {
        self.audit_hints.clone()
    }

    async fn install_scenario(&self, scenario: &Scenario) -> Result<ScenarioEnv> {
        let o = objects::render(scenario, &self.plan.profile, &self.template, &self.plan.run_id)?;
        let applied = k8s::apply_manifests(&self.client, &o.yaml, &format!("scenario {}", scenario.name()), FIELD_MANAGER).await?;
        self.applied.lock().map_err(|_| anyhow!("poisoned"))?.insert(o.namespace.clone(), applied.clone());
        let t = &self.timeouts;
        crate::k8s::waits::deployment_available(&self.client, &o.namespace, objects::ECHO_NAME, t.deployment_available).await?;
        crate::k8s::waits::route_accepted(&self.client, &o.namespace, &o.route, t.route_accepted).await?;
        policies_accepted(&self.client, &applied, t.route_accepted).await?;
        // The route and the WAF filter reach Envoy asynchronously after Accepted: probe the route until
        // Envoy stops answering "no route" (404 from Envoy itself carries no upstream). These probe
        // requests are sent before the runner takes its baselines.
        let url = format!("{}/", self.endpoints.gateway_url);
        let http = self.http.clone();
        let host = o.host.clone();
        wait::until(&format!("route {} served by the gateway", o.host), t.route_accepted, || {
            let (http, url, host) = (http.clone(), url.clone(), host.clone());
            async move {
                let r = http.get(&url).header("host", &host).header("x-waf-e2e-probe", "1").timeout(Duration::from_secs(5)).send().await?;
                let upstream = r.headers().contains_key("x-envoy-upstream-service-time");
                Ok(if r.status() != reqwest::StatusCode::NOT_FOUND || upstream {
                    Check::Met(())
                } else {
                    Check::NotYet(format!("HTTP {} without an upstream", r.status()))
                })
            }
        })
        .await?;
        Ok(ScenarioEnv {
            scenario: scenario.name().to_string(),
            namespace: o.namespace,
            policy: o.policy,
            gateway: self.plan.profile.gateway.name.clone(),
            gateway_namespace: self.plan.profile.gateway.namespace.clone(),
            host: o.host,
        })
    }

    async fn remove_scenario(&self, env: &ScenarioEnv) -> Result<()> {
        if self.keep {
            eprintln!("keeping namespace {} (--keep)", env.namespace);
            return Ok(());
        }
        k8s::delete_namespace(&self.client, &env.namespace).await?;
        self.applied.lock().map_err(|_| anyhow!("poisoned"))?.remove(&env.namespace);
        Ok(())
    }

    async fn audit_cursor(&self) -> Result<AuditCursor> {
        // With the plan's audit reader, a proxy pod that was replaced since setup gets a reader too.
        let pods = proxy_pods(&self.client, &self.plan).await?;
        let sources = k8s::audit_sources(&self.client, &pods, self.audit_reader.as_ref()).await?;
        let cursor = k8s::audit_cursor_with(&self.client, &sources).await?;
        *self.last_cursor.lock().map_err(|_| anyhow!("poisoned"))? = Some(cursor.clone());
        Ok(cursor)
    }

    async fn audit_lines_since(&self, cursor: &AuditCursor) -> Result<AuditLines> {
        k8s::audit_lines_since(&self.client, cursor).await
    }

    async fn raw_stats(&self) -> Result<String> {
        let url = format!("{}/stats/prometheus", self.stats_url);
        Ok(self.http.get(&url).timeout(Duration::from_secs(10)).send().await?.error_for_status()?.text().await?)
    }

    async fn diagnostics(&self, env: &ScenarioEnv, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let collect = |file: &str, what: &str, r: Result<String>| crate::k8s::diagnostics::write_collected(dir, file, what, r);
        for ns in [&env.namespace, &self.plan.profile.gateway.proxy_namespace, &self.plan.profile.gateway.namespace] {
            if let Err(e) = k8s::dump_namespace(&self.client, ns, dir).await {
                collect(&format!("{ns}.error.txt"), &format!("namespace {ns}"), Err(e))?;
            }
        }
        let objects: Vec<AppliedObject> = {
            let applied = self.applied.lock().map_err(|_| anyhow!("poisoned"))?;
            applied.get(&env.namespace).into_iter().chain(applied.get("")).flatten().cloned().collect()
        };
        k8s::dump_objects(&self.client, &objects, dir).await?;
        let targets = async {
            let url = format!("{}/api/v1/targets", self.endpoints.prometheus_url);
            Ok::<_, anyhow::Error>(self.http.get(&url).timeout(Duration::from_secs(10)).send().await?.text().await?)
        };
        collect("prometheus-targets.json", "Prometheus targets", targets.await)?;
        collect("proxy-stats.prom", "the proxy's raw /stats/prometheus", self.raw_stats().await)?;
        let cursor = self.last_cursor.lock().map_err(|_| anyhow!("poisoned"))?.clone();
        let audit = match cursor {
            Some(c) => self.audit_lines_since(&c).await.map(|l| l.lines.into_iter().map(|(src, line)| format!("{src}: {line}\n")).collect()),
            None => Err(anyhow!("no audit cursor was taken in this run")),
        };
        collect("audit-tail.log", "audit log lines since the last cursor", audit)?;
        Ok(())
    }

    async fn health(&self) -> Result<()> {
        let fresh = |at: &Option<std::time::Instant>| at.is_some_and(|t| t.elapsed() < self.timeouts.proxy_health_reuse);
        if fresh(&self.proxy_healthy_at.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        // A failed listing proves nothing about the proxies: the scenario's own waits decide.
        let pods = match list_proxy_pods(&self.client, &self.plan).await {
            Ok(pods) => pods,
            Err(e) => {
                tracing::debug!("health check: {e:#}");
                return Ok(());
            }
        };
        super::proxy_health::check(&pods, &self.proxy_restarts)?;
        *self.proxy_healthy_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        Ok(())
    }

    async fn shutdown(&self) -> Result<()> {
        if let Some(g) = &self.cluster {
            return g.teardown(self.timeouts.cluster_delete).await;
        }
        if self.keep {
            eprintln!("keeping the scenario namespaces of run {} (--keep)", self.plan.run_id);
            return Ok(());
        }
        // An existing cluster outlives the run: delete the namespaces of scenarios that did not get
        // to remove their own (interrupted, or failed before removal).
        // The "" entry holds the setup objects, which stay for the next run.
        let left: Vec<String> =
            self.applied.lock().map_err(|_| anyhow!("poisoned"))?.keys().filter(|ns| !ns.is_empty()).cloned().collect();
        let mut errors = Vec::new();
        for ns in left {
            if let Err(e) = k8s::delete_namespace(&self.client, &ns).await {
                errors.push(format!("delete namespace {ns}: {e:#}"));
            }
        }
        if errors.is_empty() { Ok(()) } else { anyhow::bail!(errors.join("; ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::testing::{ok, MockApi};
    use serde_json::json;

    /// A stack on an existing cluster (no kind guard) over the mock API, with scenario namespaces left behind.
    fn existing_cluster_stack(api: &MockApi, keep: bool, left: &[&str]) -> KindStack {
        let cache = tempfile::tempdir().unwrap();
        let opts = ClusterOpts {
            rendered: "tests/fixtures/kind/rendered".into(),
            cache_dir: Some(cache.path().to_path_buf()),
            run_id: Some("abc123".into()),
            keep,
            ..ClusterOpts::default()
        };
        let plan = build_plan(&opts, &[]).unwrap();
        let mut applied = BTreeMap::from([(String::new(), Vec::new())]);
        for ns in left {
            applied.insert(ns.to_string(), Vec::new());
        }
        KindStack {
            stats_url: String::new(),
            _forwards: Vec::new(),
            client: api.client.clone(),
            cluster: None,
            endpoints: Endpoints { gateway_url: String::new(), prometheus_url: String::new(), scrape_pool: plan.scrape_pool() },
            template: crate::profile::waf_policy::WafTemplates { policy: String::new(), plugin: None },
            keep,
            timeouts: Timeouts::default(),
            name: "cluster".into(),
            http: reqwest::Client::new(),
            applied: Mutex::new(applied),
            last_cursor: Mutex::new(None),
            audit_reader: None,
            filter: profile_filter(&plan.profile),
            audit_hints: audit_hints(&plan.rendered),
            proxy_restarts: BTreeMap::from([("envoy-gateway-system/envoy-1".to_string(), 0)]),
            proxy_healthy_at: Mutex::new(None),
            plan,
        }
    }

    #[tokio::test]
    async fn shutting_down_on_an_existing_cluster_deletes_the_namespaces_scenarios_left_behind() {
        let api = MockApi::start(|_| ok(json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "x"}})));
        let stack = existing_cluster_stack(&api, false, &["waf-e2e-abc123-a", "waf-e2e-abc123-b"]);
        stack.shutdown().await.unwrap();
        let deleted: Vec<String> = api.with_method("DELETE").into_iter().map(|r| r.path).collect();
        assert_eq!(deleted, vec!["/api/v1/namespaces/waf-e2e-abc123-a", "/api/v1/namespaces/waf-e2e-abc123-b"]);
    }

    #[tokio::test]
    async fn keep_leaves_the_namespaces_of_an_existing_cluster_alone() {
        let api = MockApi::start(|_| ok(json!({})));
        let stack = existing_cluster_stack(&api, true, &["waf-e2e-abc123-a"]);
        stack.shutdown().await.unwrap();
        assert!(api.requests().is_empty(), "{:?}", api.requests());
    }

    /// A proxy pod list answer whose `envoy` container restarted `restarts` times, last ending with `exit_code`.
    fn proxy_pods_answer(restarts: i32, exit_code: i32) -> serde_json::Value {
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{
            "metadata": {"name": "envoy-1", "namespace": "envoy-gateway-system"},
            "status": {"containerStatuses": [{"name": "envoy", "image": "envoy", "imageID": "", "ready": true, "restartCount": restarts,
                "lastState": {"terminated": {"exitCode": exit_code, "reason": "Error"}}}]},
        }]})
    }

    #[tokio::test]
    async fn a_proxy_whose_envoy_segfaulted_during_the_run_fails_the_health_check_naming_the_pod() {
        let api = MockApi::start(|_| ok(proxy_pods_answer(1, 139)));
        let stack = existing_cluster_stack(&api, true, &[]);
        let err = stack.health().await.unwrap_err();
        let broken = crate::error::BrokenResource::find(&err).unwrap_or_else(|| panic!("not a broken resource: {err:#}"));
        assert_eq!(broken.resource, "proxy pod envoy-gateway-system/envoy-1");
        let list = &api.requests()[0];
        assert_eq!(list.path, "/api/v1/namespaces/envoy-gateway-system/pods");
        assert!(list.query.contains("labelSelector=gateway.envoyproxy.io"), "{list:?}");
    }

    #[tokio::test]
    async fn healthy_proxies_are_listed_at_most_once_per_reuse_interval() {
        let api = MockApi::start(|_| ok(proxy_pods_answer(0, 0)));
        let stack = existing_cluster_stack(&api, true, &[]);
        for _ in 0..5 {
            stack.health().await.unwrap();
        }
        assert_eq!(api.requests().len(), 1, "{:?}", api.requests());
    }

    #[tokio::test]
    async fn the_stack_gives_the_hints_of_the_envoyproxy_it_applies() {
        let api = MockApi::start(|_| ok(json!({})));
        let mut stack = existing_cluster_stack(&api, true, &[]);
        assert_eq!(Stack::audit_hints(&stack), Vec::<String>::new(), "the fixture EnvoyProxy keeps audit lines");
        stack.audit_hints = vec!["EnvoyProxy a/b: hint".into()];
        assert_eq!(Stack::audit_hints(&stack), vec!["EnvoyProxy a/b: hint".to_string()]);
    }
}
