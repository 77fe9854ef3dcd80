//! The reference proxy: a STAND-IN for an Envoy Gateway proxy running the Coraza WAF filter (local stack only).
//!
//! It speaks the contract of design section 1 with a real SecLang engine deciding (ModSecurity v3
//! with the OWASP CRS): raw `waf_filter.*` counters on an admin `/stats/prometheus` in Envoy's exact
//! format, `AuditLog:` lines in Envoy's log format, 403 on interruption, otherwise the request is
//! forwarded to an in-process echo backend. Policies attach by Host, like routes on one Gateway.
//! It is the only simulated part of the local stack.

pub mod auditlog;
pub mod echo;
pub mod server;
pub mod stats;

use crate::scenario::Mode;
use anyhow::{Context, Result};
use server::{AttachedPolicy, Served, Shared};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long `shutdown` waits for listeners to finish in-flight requests before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where the reference proxy pretends to run and where it writes its audit log.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Gateway name (as an Envoy Gateway proxy would belong to).
    pub gateway: String,
    /// Gateway namespace.
    pub gateway_namespace: String,
    /// File the `AuditLog:` lines are appended to (created if missing, never truncated).
    pub audit_log: PathBuf,
    /// Faults injected for the harness's own negative tests.
    pub faults: Faults,
    /// Fixed loopback ports (`None`: any free port); the harness's fault tests occupy one.
    pub ports: ProxyPorts,
}

/// Loopback ports the proxy binds; `None` picks a free one.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyPorts {
    /// The data plane (gateway traffic).
    pub listen: Option<u16>,
    /// The admin listener (`/stats/prometheus`).
    pub admin: Option<u16>,
}

/// Deliberate misbehaviour, so the harness can prove its assertions catch it.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Every decision counter increments by 2 instead of 1.
    pub double_count: bool,
    /// No audit records are written.
    pub drop_audit: bool,
    /// While set, `/stats/prometheus` answers 500, so the scrape fails (`up == 0`); clones share it,
    /// so a test can turn it on mid-run.
    pub scrape_fails: Arc<AtomicBool>,
}

/// A WAF policy attached to a host, like an EnvoyExtensionPolicy on an HTTPRoute.
#[derive(Debug, Clone)]
pub struct PolicyAttachment {
    /// Host the route matches (the request's Host header, port ignored, case-insensitive).
    pub host: String,
    /// Policy name, dashes intact (the stat name carries it; the exposition sanitises it).
    pub policy: String,
    /// Policy namespace.
    pub namespace: String,
    /// On blocks; DetectionOnly forwards and counts would_block.
    pub mode: Mode,
    /// Load the OWASP CRS.
    pub crs: bool,
    /// SecLang directives loaded after the CRS.
    pub directives: Option<String>,
    /// Extra `<k>=<v>` pairs baked into decision stat names (e.g. `authority`).
    pub extra_metric_labels: Vec<(String, String)>,
}

/// The running reference proxy: data plane, admin listener and echo backend, all on loopback.
pub struct ReferenceProxy {
    shared: Arc<Shared>,
    listen: SocketAddr,
    admin: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    task_names: Vec<&'static str>,
}

impl ReferenceProxy {
    /// Binds the data plane, the admin listener and the echo backend, each on 127.0.0.1:0.
    pub async fn start(config: ProxyConfig) -> Result<ReferenceProxy> {
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let echo = server::serve(echo::router(), &stop, "echo backend", None).await?;
        tasks.push(echo.task);
        let engine = crate::waf::engine::Engine::new()?;
        let audit = auditlog::AuditWriter::open(&config.audit_log)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the proxy's upstream HTTP client")?;
        // The data plane's address goes into Shared, so bind it before building the state.
        let listen_on = std::net::SocketAddr::from(([127, 0, 0, 1], config.ports.listen.unwrap_or(0)));
        let listener = tokio::net::TcpListener::bind(listen_on).await.with_context(|| format!("binding the data-plane listener on {listen_on}"))?;
        let listen = listener.local_addr().context("reading the data-plane listener address")?;
        let shared = Arc::new(Shared {
            policies: RwLock::new(HashMap::new()),
            engine,
            stats: stats::Stats::default(),
            audit,
            faults: config.faults.clone(),
            backend: echo.addr,
            client,
            listen,
            gateway: format!("{}/{}", config.gateway_namespace, config.gateway),
        });
        let mut rx = stop.subscribe();
        let app = server::data_plane(shared.clone());
        tasks.push(tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await
        }));
        let Served { addr: admin, task } = server::serve(server::admin(shared.clone()), &stop, "admin", config.ports.admin).await?;
        tasks.push(task);
        tracing::info!(%listen, %admin, backend = %echo.addr, engine = %shared.engine.whoami(), "reference proxy (stand-in for Envoy + WAF filter) started");
        let task_names = vec!["echo backend", "data-plane", "admin"];
        Ok(ReferenceProxy { shared, listen, admin, stop, tasks, task_names })
    }

    /// Address for gateway traffic (send the route's Host header).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Admin address serving `GET /stats/prometheus` (like Envoy's metrics port 19001).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The audit log file.
    pub fn audit_log(&self) -> &Path {
        self.shared.audit.path()
    }

    /// Compiles the policy's rules and routes its host to it; the error carries ModSecurity's complaint.
    pub async fn attach(&self, policy: PolicyAttachment) -> Result<()> {
        let crs = policy.crs;
        let directives = policy.directives.clone();
        let rules = tokio::task::spawn_blocking(move || compile_policy(crs, directives.as_deref()))
            .await
            .context("the rule compilation task failed")?
            .with_context(|| format!("compiling WAF policy {}/{}", policy.namespace, policy.policy))?;
        let host = policy.host.trim().to_ascii_lowercase();
        let attached = AttachedPolicy {
            labels: label_order(&policy),
            cluster: format!("httproute/{}/{}/rule/0", policy.namespace, policy.policy),
            rules,
            attachment: policy,
        };
        self.shared.policies.write().unwrap_or_else(|p| p.into_inner()).insert(host, Arc::new(attached));
        Ok(())
    }

    /// Unroutes `host` (later requests for it get 404); counters already created stay.
    pub async fn detach(&self, host: &str) {
        let host = host.trim().to_ascii_lowercase();
        self.shared.policies.write().unwrap_or_else(|p| p.into_inner()).remove(&host);
    }

    /// Stops accepting and closes connections on every listener, without waiting (the fault tests' "kill").
    pub fn stop_listeners(&self) {
        let _ = self.stop.send(true);
    }

    /// `Err` naming what no longer serves, once the proxy was stopped or a listener ended.
    pub fn health(&self) -> Result<()> {
        if *self.stop.borrow() {
            anyhow::bail!("the reference proxy was stopped: its listeners no longer accept connections");
        }
        if let Some((name, _)) = self.task_names.iter().zip(&self.tasks).find(|(_, t)| t.is_finished()) {
            anyhow::bail!("the reference proxy's {name} listener exited");
        }
        Ok(())
    }

    /// Stops every listener and task, waiting briefly for in-flight requests.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut self.tasks);
        for task in tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout(SHUTDOWN_GRACE, task).await {
                Ok(Ok(served)) => served.context("a reference proxy listener failed")?,
                Ok(Err(join)) if join.is_cancelled() => {}
                Ok(Err(join)) => return Err(anyhow::anyhow!("a reference proxy listener panicked: {join}")),
                Err(_) => abort.abort(),
            }
        }
        Ok(())
    }
}

impl Drop for ReferenceProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The policy's `<k>=<v>` pairs in the policy-dependent order the reference WAF service also uses.
pub fn label_order(policy: &PolicyAttachment) -> Vec<(String, String)> {
    let mut labels = vec![("policy".to_string(), policy.policy.clone()), ("namespace".to_string(), policy.namespace.clone())];
    labels.extend(policy.extra_metric_labels.iter().cloned());
    crate::waf::stats::label_order(&policy.policy, labels)
}

/// The reference proxy's body handling: bodies inspected, JSON and XML body processors.
const PROXY_BODY_SETTINGS: &str = r#"SecRequestBodyAccess On
SecRequestBodyLimit 13107200
SecRequestBodyNoFilesLimit 1048576
SecRequestBodyLimitAction ProcessPartial
SecResponseBodyAccess Off
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/(?:[a-z0-9.+-]+\+)?json" "id:99901,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "@rx ^(?:application(?:/soap\+|/)|text/)xml" "id:99902,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
"#;

/// Compiles an attached policy's rules (engine On first, CRS when asked, then its directives) in one load.
fn compile_policy(crs: bool, directives: Option<&str>) -> Result<crate::waf::engine::PolicyRules> {
    use crate::waf::engine::{compile_text, crs_files, include_line, ENGINE_PREAMBLE};
    let mut text = format!("{ENGINE_PREAMBLE}{PROXY_BODY_SETTINGS}");
    if crs {
        for file in crs_files()? {
            text.push_str(&include_line(&file)?);
            text.push('\n');
        }
    }
    if let Some(directives) = directives {
        // The policy's own engine line must not undo the proxy's evaluation (mode is applied by the proxy).
        for line in directives.lines().filter(|l| !l.trim_start().to_ascii_lowercase().starts_with("secruleengine")) {
            text.push_str(line);
            text.push('\n');
        }
    }
    compile_text(&text)
}
