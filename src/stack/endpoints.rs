//! The `endpoints` stack: a deployment the harness did not start (a compose setup, a VM, a cluster
//! reached through port-forwards), asserted with the same scenarios through its endpoints.
//!
//! The harness installs NOTHING here. Each selected scenario's WAF policy must already be deployed,
//! named as the scenario file names it (`policy.name`, in `--policy-namespace`) and attached to a
//! route that matches the scenario's host (`--route-host`, default `{scenario}.waf-e2e.test`) on the
//! gateway behind `--gateway-url`; the harness sends the traffic, reads Prometheus and the audit log,
//! and asserts. A scenario whose policy is missing fails its expectations: it cannot tell a missing
//! policy from a WAF that did not decide. Counters are asserted as increases over a baseline, so
//! traffic of other clients on the same routes can break exact expectations: use a quiet deployment.

use super::{Endpoints, FilterInfo, ScenarioEnv, Stack};
use crate::assert::prom::PromClient;
use crate::audit::{AuditCursor, AuditLines};
use crate::scenario::{Capability, Scenario};
use crate::timeouts::Timeouts;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The route host of a scenario when `--route-host` is not given (the local stack's convention).
pub const DEFAULT_ROUTE_HOST: &str = "{scenario}.waf-e2e.test";

/// The flags of `--stack endpoints`: where the deployment's parts are, and what its series carry.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EndpointsArgs {
    /// [endpoints] Base URL of the gateway serving the scenarios' routes (`http://127.0.0.1:8080`).
    #[arg(long, value_name = "URL")]
    pub gateway_url: Option<String>,
    /// [endpoints] Base URL of the Prometheus that scrapes the gateway's proxies.
    #[arg(long, value_name = "URL")]
    pub prometheus_url: Option<String>,
    /// [endpoints] The scrape config's job name (Prometheus Operator: `podMonitor/<ns>/<name>/0`).
    #[arg(long, value_name = "JOB")]
    pub scrape_job: Option<String>,
    /// [endpoints] The proxy log holding the `AuditLog:` lines (Envoy's `--log-path`), read as it grows.
    #[arg(long, value_name = "PATH", conflicts_with = "audit_command")]
    pub audit_file: Option<PathBuf>,
    /// [endpoints] A shell command printing the whole proxy log on stdout (`docker logs envoy 2>&1`).
    #[arg(long, value_name = "CMD")]
    pub audit_command: Option<String>,
    /// [endpoints] Name of the Gateway (the `gateway` label of the series).
    #[arg(long, value_name = "NAME")]
    pub gateway: Option<String>,
    /// [endpoints] Namespace of the Gateway (default: the policy namespace).
    #[arg(long, value_name = "NS")]
    pub gateway_namespace: Option<String>,
    /// [endpoints] Namespace of the scenarios' WAF policies (the `namespace` label).
    #[arg(long, value_name = "NS")]
    pub policy_namespace: Option<String>,
    /// [endpoints] Host of each scenario's route; `{scenario}` stands for the scenario's name.
    #[arg(long, value_name = "TEMPLATE")]
    pub route_host: Option<String>,
    /// [endpoints] The proxies' `/stats/prometheus` URLs (default: the scrape URLs Prometheus reports).
    #[arg(long, value_name = "URL")]
    pub stats_url: Vec<String>,
    /// [endpoints] What the deployment's filter can do (repeatable; default: all of them).
    #[arg(long = "capability", value_name = "CAP", value_parser = parse_capability)]
    pub capabilities: Vec<Capability>,
    /// The flavour of the deployment's WAF filter, which picks the scenarios' filter-dependent values
    /// (rule ids, phases); without it every such value is reported as not checked.
    #[arg(long, value_name = "FLAVOUR")]
    pub filter_flavour: Option<String>,
}

/// A capability by the name scenario files use (`blocking`, `would_block_counter`, `audit_log`).
pub fn parse_capability(s: &str) -> Result<Capability, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("`{s}` is not a capability: use blocking, would_block_counter or audit_log"))
}

impl EndpointsArgs {
    /// Usage problems: endpoints flags on another stack, or a missing or malformed one on this stack.
    pub fn check(&self, selected: bool) -> Result<(), String> {
        let given = self.given();
        if !selected {
            return match given.as_slice() {
                [] => Ok(()),
                flags => Err(format!("{} only apply to `--stack endpoints`", flags.join(", "))),
            };
        }
        let mut missing = Vec::new();
        for (flag, value) in [("--gateway-url URL", &self.gateway_url), ("--prometheus-url URL", &self.prometheus_url), ("--scrape-job JOB", &self.scrape_job),
            ("--gateway NAME", &self.gateway), ("--policy-namespace NS", &self.policy_namespace)] {
            if value.as_deref().is_none_or(str::is_empty) {
                missing.push(flag);
            }
        }
        if self.audit_file.is_none() && self.audit_command.as_deref().is_none_or(str::is_empty) {
            missing.push("--audit-file PATH or --audit-command CMD");
        }
        if !missing.is_empty() {
            return Err(format!("`--stack endpoints` needs {}", missing.join(", ")));
        }
        // A misspelt flavour would quietly turn every filter-dependent value into "not checked".
        if let Some(flavour) = self.filter_flavour.as_deref().filter(|f| !crate::scenario::is_filter_flavour(f)) {
            return Err(format!("--filter-flavour {flavour}: not a filter flavour; use one of {:?} or `custom-<name>`", crate::scenario::KNOWN_FILTER_FLAVOURS));
        }
        let urls = [("--gateway-url", self.gateway_url.as_deref())].into_iter().chain([("--prometheus-url", self.prometheus_url.as_deref())]);
        for (flag, url) in urls.chain(self.stats_url.iter().map(|u| ("--stats-url", Some(u.as_str())))) {
            check_url(flag, url.unwrap_or_default())?;
        }
        Ok(())
    }

    fn given(&self) -> Vec<&'static str> {
        let set = [
            ("--gateway-url", self.gateway_url.is_some()),
            ("--prometheus-url", self.prometheus_url.is_some()),
            ("--scrape-job", self.scrape_job.is_some()),
            ("--audit-file", self.audit_file.is_some()),
            ("--audit-command", self.audit_command.is_some()),
            ("--gateway", self.gateway.is_some()),
            ("--gateway-namespace", self.gateway_namespace.is_some()),
            ("--policy-namespace", self.policy_namespace.is_some()),
            ("--route-host", self.route_host.is_some()),
            ("--stats-url", !self.stats_url.is_empty()),
            ("--capability", !self.capabilities.is_empty()),
            ("--filter-flavour", self.filter_flavour.is_some()),
        ];
        set.into_iter().filter(|(_, on)| *on).map(|(flag, _)| flag).collect()
    }

    /// A route host without `{scenario}` is one route for every scenario, which can serve one policy only.
    pub fn check_scenario_count(&self, count: usize) -> Result<(), String> {
        match &self.route_host {
            Some(host) if !host.contains("{scenario}") && count > 1 => Err(format!(
                "--route-host {host:?} gives all {count} selected scenarios the same route (and so the same policy): add `{{scenario}}` or select one scenario")),
            _ => Ok(()),
        }
    }

    /// The route host of `scenario`.
    pub fn host_of(&self, scenario: &str) -> String {
        self.route_host.as_deref().unwrap_or(DEFAULT_ROUTE_HOST).replace("{scenario}", scenario)
    }

    /// Where the audit lines come from, in words (plan, reports).
    pub fn audit_source(&self) -> String {
        match (&self.audit_file, &self.audit_command) {
            (Some(file), _) => format!("file {}", file.display()),
            (None, Some(cmd)) => format!("command `{cmd}`"),
            (None, None) => "(none)".into(),
        }
    }
}

/// An http(s) URL without credentials: a password in a URL would end up in logs and reports.
fn check_url(flag: &str, url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{flag} {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{flag} {url:?}: needs an http:// or https:// URL with a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("{flag}: credentials in the URL are not supported (they would appear in logs and reports)"));
    }
    Ok(())
}

/// A running deployment's endpoints; installs and removes nothing.
pub struct EndpointsStack {
    endpoints: Endpoints,
    filter: FilterInfo,
    args: EndpointsArgs,
    capabilities: Vec<Capability>,
    timeouts: Timeouts,
    http: reqwest::Client,
}

impl EndpointsStack {
    /// Checks that the deployment answers: Prometheus, a target in the scrape job, the gateway's port, the audit source.
    pub async fn connect(args: &EndpointsArgs, timeouts: &Timeouts) -> Result<EndpointsStack> {
        args.check(true).map_err(crate::error::HarnessError::Usage)?;
        let gateway_url = args.gateway_url.clone().unwrap_or_default();
        let prometheus_url = args.prometheus_url.clone().unwrap_or_default();
        let scrape_pool = args.scrape_job.clone().unwrap_or_default();
        let http = reqwest::Client::builder().timeout(timeouts.request).build().context("build HTTP client")?;
        let stack = EndpointsStack {
            endpoints: Endpoints { gateway_url: gateway_url.clone(), prometheus_url: prometheus_url.clone(), scrape_pool: scrape_pool.clone() },
            filter: FilterInfo {
                flavour: args.filter_flavour.clone().unwrap_or_else(|| "unspecified".into()),
                description: "the deployment's own WAF filter (--stack endpoints)".into(),
                envoy_version: None,
            },
            capabilities: if args.capabilities.is_empty() {
                vec![Capability::Blocking, Capability::WouldBlockCounter, Capability::AuditLog]
            } else {
                args.capabilities.clone()
            },
            args: args.clone(),
            timeouts: timeouts.clone(),
            http,
        };
        let prom = PromClient::new(&prometheus_url)?;
        // A Prometheus that has just (re)started lists its targets a moment after it answers.
        let condition = format!("Prometheus at {prometheus_url} to list an active target in scrape job {scrape_pool:?} (check --scrape-job against its /api/v1/targets)");
        crate::wait::until(&condition, timeouts.target_up, || async {
            let targets = prom.targets(&scrape_pool).await.context("GET /api/v1/targets")?;
            Ok(if targets.is_empty() { crate::wait::Check::NotYet("no active target in that job".into()) } else { crate::wait::Check::Met(()) })
        })
        .await?;
        let gateway = reqwest::Url::parse(&gateway_url).context("parse --gateway-url")?;
        let port = gateway.port_or_known_default().unwrap_or(80);
        let host = gateway.host_str().unwrap_or_default().trim_matches(|c| c == '[' || c == ']').to_string();
        tokio::time::timeout(timeouts.request, tokio::net::TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", timeouts.request))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| format!("connect to the gateway at {host}:{port}"))?;
        stack.read_audit().await.context("read the audit source")?;
        Ok(stack)
    }

    /// The whole audit log as it is now, and its name.
    async fn read_audit(&self) -> Result<(String, Vec<u8>)> {
        match (&self.args.audit_file, &self.args.audit_command) {
            (Some(file), _) => {
                let bytes = tokio::fs::read(file).await.with_context(|| format!("read audit file {}", file.display()))?;
                Ok((file.display().to_string(), bytes))
            }
            (None, Some(cmd)) => Ok((format!("`{cmd}`"), run_audit_command(cmd, self.timeouts.audit_command).await?)),
            (None, None) => bail!("no audit source (--audit-file or --audit-command)"),
        }
    }
}

/// Runs `cmd` with `sh -c` and returns its stdout; a non-zero exit or no exit within `within` is an error.
async fn run_audit_command(cmd: &str, within: Duration) -> Result<Vec<u8>> {
    let mut std_cmd = std::process::Command::new("sh");
    std_cmd.arg("-c").arg(cmd).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    crate::process::harness_child(&mut std_cmd);
    let mut command = tokio::process::Command::from(std_cmd);
    command.kill_on_drop(true);
    let child = command.spawn().with_context(|| format!("start audit command `{cmd}`"))?;
    let group = child.id();
    match tokio::time::timeout(within, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.with_context(|| format!("run audit command `{cmd}`"))?;
            if !out.status.success() {
                bail!("audit command `{cmd}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
            }
            Ok(out.stdout)
        }
        Err(_) => {
            // The shell was killed when its wait was dropped; its own children share its group.
            if let Some(pid) = group.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            bail!("audit command `{cmd}` did not finish within {within:?}")
        }
    }
}

#[async_trait::async_trait]
impl Stack for EndpointsStack {
    fn filter(&self) -> &FilterInfo {
        &self.filter
    }

    fn name(&self) -> &str {
        "endpoints"
    }

    fn endpoints(&self) -> Endpoints {
        self.endpoints.clone()
    }

    fn capabilities(&self) -> &[Capability] {
        &self.capabilities
    }

    /// Installs nothing (the deployment's business): only says where the scenario's objects must live.
    async fn install_scenario(&self, scenario: &Scenario) -> Result<ScenarioEnv> {
        let policy_namespace = self.args.policy_namespace.clone().unwrap_or_default();
        Ok(ScenarioEnv {
            scenario: scenario.name().to_string(),
            namespace: policy_namespace.clone(),
            policy: scenario.policy.name.value.clone(),
            gateway: self.args.gateway.clone().unwrap_or_default(),
            gateway_namespace: self.args.gateway_namespace.clone().unwrap_or(policy_namespace),
            host: self.args.host_of(scenario.name()),
        })
    }

    async fn remove_scenario(&self, _env: &ScenarioEnv) -> Result<()> {
        Ok(())
    }

    async fn audit_cursor(&self) -> Result<AuditCursor> {
        let (source, bytes) = self.read_audit().await?;
        Ok(AuditCursor([(source, bytes.len() as u64)].into()))
    }

    async fn audit_lines_since(&self, cursor: &AuditCursor) -> Result<AuditLines> {
        let (source, bytes) = self.read_audit().await?;
        Ok(crate::audit::offsets::lines_after(cursor, &source, &bytes))
    }

    async fn raw_stats(&self) -> Result<String> {
        let urls = if self.args.stats_url.is_empty() {
            let prom = PromClient::new(&self.endpoints.prometheus_url)?;
            prom.targets(&self.endpoints.scrape_pool).await?.into_iter().map(|t| t.scrape_url).collect()
        } else {
            self.args.stats_url.clone()
        };
        if urls.is_empty() {
            bail!("no stats URL: Prometheus reports no target in {:?} and no --stats-url was given", self.endpoints.scrape_pool);
        }
        let mut out = String::new();
        for url in urls {
            let text = async { self.http.get(&url).send().await?.error_for_status()?.text().await }
                .await
                .with_context(|| format!("GET {url} (give --stats-url when the harness cannot reach the scrape URL)"))?;
            out.push_str(&text);
        }
        Ok(out)
    }

    async fn diagnostics(&self, env: &ScenarioEnv, dir: &Path) -> Result<()> {
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).with_context(|| format!("write {name}"));
        write("raw-stats.txt", self.raw_stats().await.unwrap_or_else(|e| format!("could not read: {e:#}")))?;
        let targets = async { self.http.get(format!("{}/api/v1/targets", self.endpoints.prometheus_url)).send().await?.text().await }.await;
        write("prometheus-targets.json", targets.unwrap_or_else(|e| format!("could not read: {e:#}")))?;
        let audit = match self.read_audit().await {
            Ok((_, bytes)) => String::from_utf8_lossy(&bytes).lines().filter(|l| l.contains(&env.scenario)).collect::<Vec<_>>().join("\n"),
            Err(e) => format!("could not read: {e:#}"),
        };
        write("audit-log.txt", audit)
    }

    async fn shutdown(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> EndpointsArgs {
        EndpointsArgs {
            gateway_url: Some("http://127.0.0.1:8080".into()),
            prometheus_url: Some("http://127.0.0.1:9090".into()),
            scrape_job: Some("envoy".into()),
            audit_file: Some("/var/log/envoy.log".into()),
            gateway: Some("gw".into()),
            policy_namespace: Some("shop".into()),
            ..EndpointsArgs::default()
        }
    }

    #[test]
    fn every_missing_flag_is_named_at_once() {
        let err = EndpointsArgs::default().check(true).unwrap_err();
        for flag in ["--gateway-url", "--prometheus-url", "--scrape-job", "--gateway NAME", "--policy-namespace", "--audit-file PATH or --audit-command"] {
            assert!(err.contains(flag), "{flag}: {err}");
        }
        complete().check(true).unwrap();
    }

    #[test]
    fn a_misspelt_filter_flavour_is_a_usage_error_and_a_known_one_is_not() {
        let err = EndpointsArgs { filter_flavour: Some("coraza".into()), ..complete() }.check(true).unwrap_err();
        assert!(err.contains("--filter-flavour coraza: not a filter flavour"), "{err}");
        EndpointsArgs { filter_flavour: Some("coraza-proxy-wasm-release".into()), ..complete() }.check(true).unwrap();
        let other_stack = EndpointsArgs { filter_flavour: Some("stand-in".into()), ..EndpointsArgs::default() }.check(false).unwrap_err();
        assert!(other_stack.contains("--filter-flavour only apply"), "{other_stack}");
    }

    #[test]
    fn endpoints_flags_on_another_stack_are_a_usage_error() {
        let err = complete().check(false).unwrap_err();
        assert!(err.contains("--gateway-url") && err.contains("only apply to `--stack endpoints`"), "{err}");
        EndpointsArgs::default().check(false).unwrap();
    }

    #[test]
    fn a_url_with_credentials_or_without_a_host_is_refused() {
        let err = EndpointsArgs { prometheus_url: Some("http://admin:secret@prom:9090".into()), ..complete() }.check(true).unwrap_err();
        assert!(err.contains("credentials") && !err.contains("secret"), "{err}");
        assert!(EndpointsArgs { gateway_url: Some("127.0.0.1:8080".into()), ..complete() }.check(true).is_err());
    }

    #[test]
    fn the_route_host_template_names_the_scenario() {
        assert_eq!(complete().host_of("sqli-blocked"), "sqli-blocked.waf-e2e.test");
        assert_eq!(EndpointsArgs { route_host: Some("{scenario}.shop.example".into()), ..complete() }.host_of("x"), "x.shop.example");
    }

    #[test]
    fn a_fixed_route_host_serves_one_scenario_only() {
        let fixed = EndpointsArgs { route_host: Some("shop.example".into()), ..complete() };
        fixed.check_scenario_count(1).unwrap();
        assert!(fixed.check_scenario_count(2).unwrap_err().contains("same route"));
        complete().check_scenario_count(9).unwrap();
    }

    #[test]
    fn capabilities_are_read_by_their_scenario_file_names() {
        assert_eq!(parse_capability("would_block_counter"), Ok(Capability::WouldBlockCounter));
        assert!(parse_capability("WouldBlock").unwrap_err().contains("audit_log"));
    }

    #[tokio::test]
    async fn an_audit_command_that_fails_or_hangs_is_an_error_naming_it() {
        let err = run_audit_command("echo gone >&2; exit 4", Duration::from_secs(5)).await.unwrap_err().to_string();
        assert!(err.contains("exit status: 4") && err.contains("gone"), "{err}");
        let started = std::time::Instant::now();
        let err = run_audit_command("sleep 30", Duration::from_millis(300)).await.unwrap_err().to_string();
        assert!(err.contains("did not finish") && started.elapsed() < Duration::from_secs(5), "{err}");
        assert_eq!(run_audit_command("printf 'a\\nb\\n'", Duration::from_secs(5)).await.unwrap(), b"a\nb\n");
    }
}
