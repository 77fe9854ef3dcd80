//! The command line: `run`, `validate`, `scrape-config`, `plan`, `doctor`, with exit codes from [`HarnessError`].

use crate::error::HarnessError;
use crate::report::{self, Progress};
use crate::runner::{self, RunOptions};
use crate::scenario::{self, Scenario};
use crate::stack::{self, StackKind, StackOptions};
use crate::timeouts::Timeouts;
use clap::{Parser, Subcommand};
use globset::Glob;
use std::path::PathBuf;

/// waf-e2e: end-to-end acceptance tests for the Ingress Gateway WAF observability feature.
#[derive(Debug, Parser)]
#[command(name = "waf-e2e", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run scenarios on a stack and assert their series and audit records.
    Run(RunArgs),
    /// Validate scenario files (default: scenarios/) and report every problem with file, line and column.
    Validate {
        /// Scenario files or directories.
        paths: Vec<PathBuf>,
    },
    /// Print the complete Prometheus config a PodMonitor becomes, pointed at one target.
    ScrapeConfig(crate::rendered::cli::ScrapeConfigArgs),
    /// Print every action a kind (or existing-cluster) run with these options would take, without doing any.
    Plan(RunArgs),
    /// Start the local stack and keep it up until Ctrl-C; `run --attach` runs scenarios on it.
    Up(UpArgs),
    /// Keep a local stack up and re-run the scenarios a change (scenario, render, filter module) affects.
    Watch(WatchArgs),
    /// Report which prerequisites of a stack are present, and how to get the missing ones.
    Doctor {
        /// The stack to check for.
        #[arg(long, value_enum, default_value_t = StackKind::Kind)]
        stack: StackKind,
    },
}

/// Options of `waf-e2e run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Where to run: `kind` (a new kind cluster), `cluster` (an existing one) or `local` (a real Envoy and Prometheus on loopback).
    #[arg(long, value_enum, default_value_t = StackKind::Kind)]
    pub stack: StackKind,
    /// Only scenarios whose name matches this glob (repeatable).
    #[arg(long = "scenario")]
    pub scenario: Vec<String>,
    /// Directory (or files) holding the scenarios.
    #[arg(long, default_value = "scenarios")]
    pub scenarios: Vec<PathBuf>,
    /// The rendered resources under test (PodMonitor, GlobalNetworkPolicy, EnvoyProxy).
    #[arg(long, default_value = "fixtures/rendered")]
    pub rendered: PathBuf,
    /// Write a JUnit XML report here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write a diagnostics bundle per failed scenario under this directory.
    #[arg(long, default_value = "waf-e2e-diagnostics")]
    pub diagnostics_dir: PathBuf,
    /// How many isolated scenarios run at once (exclusive ones always run alone).
    #[arg(long, default_value_t = default_jobs())]
    pub jobs: usize,
    /// Prometheus scrape interval on the local stack, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub scrape_interval_ms: u64,
    /// Keep the cluster (and namespaces) after the run, for debugging.
    #[arg(long)]
    pub keep: bool,
    /// Reuse a kept kind cluster by name instead of creating one.
    #[arg(long)]
    pub reuse: Option<String>,
    /// kind stack profile: `oss` (public coraza-proxy-wasm) or `tigera` (Calico Enterprise).
    #[arg(long, default_value = "oss")]
    pub profile: String,
    /// Kubeconfig of an existing cluster (implies `--stack cluster`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig.
    #[arg(long)]
    pub context: Option<String>,
    /// Do not install the stack; the cluster already has it.
    #[arg(long)]
    pub no_install: bool,
    /// Local stack: the Envoy binary (default: `WAF_E2E_ENVOY`, `.tools/pip/envoy/_bin/envoy`, PATH).
    #[arg(long)]
    pub envoy: Option<PathBuf>,
    /// Local stack: load this proxy-wasm WAF filter instead of the stand-in (e.g. a coraza-proxy-wasm build).
    #[arg(long)]
    pub waf_wasm: Option<PathBuf>,
    /// The flavour of `--waf-wasm`, which picks the scenarios' filter-dependent values (default: the profile's filter).
    #[arg(long, requires = "waf_wasm")]
    pub waf_flavour: Option<String>,
    /// Local stack: `admin` asks Envoy to write its audit log right after the traffic (POST /reopen_logs;
    /// reports say so); `timer` waits for Envoy's own 10 s flush, as a collector in a cluster does.
    #[arg(long, value_enum, default_value_t = crate::envoy::AuditFlush::Admin)]
    pub audit_flush: crate::envoy::AuditFlush,
    /// Run on the local stack a `waf-e2e up` keeps (its render is applied first: a changed PodMonitor reloads Prometheus).
    #[arg(long)]
    pub attach: bool,
    /// The state file of `waf-e2e up` (default: `$XDG_RUNTIME_DIR/waf-e2e/up.json`, else `<tmp>/waf-e2e-up.json`).
    #[arg(long)]
    pub state: Option<PathBuf>,
}

/// Options of `waf-e2e up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The local stack.
    #[command(flatten)]
    pub local: LocalStackArgs,
    /// Where to write the state file attached runs read.
    #[arg(long)]
    pub state: Option<PathBuf>,
}

/// Options of `waf-e2e watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The local stack (its `--rendered` is watched).
    #[command(flatten)]
    pub local: LocalStackArgs,
    /// Only scenarios whose name matches this glob (repeatable).
    #[arg(long = "scenario")]
    pub scenario: Vec<String>,
    /// Directory (or files) holding the scenarios (watched).
    #[arg(long, default_value = "scenarios")]
    pub scenarios: Vec<PathBuf>,
    /// How many isolated scenarios run at once.
    #[arg(long, default_value_t = default_jobs())]
    pub jobs: usize,
    /// Write a diagnostics bundle per failed scenario under this directory.
    #[arg(long, default_value = "waf-e2e-diagnostics")]
    pub diagnostics_dir: PathBuf,
}

/// The local stack's options, shared by `up` and `watch`.
#[derive(Debug, clap::Args)]
pub struct LocalStackArgs {
    /// The rendered resources the stack starts with (an attached run applies its own `--rendered`).
    #[arg(long, default_value = "fixtures/rendered")]
    pub rendered: PathBuf,
    /// Prometheus scrape interval, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub scrape_interval_ms: u64,
    /// Stack profile whose WAF policy template renders each scenario's policy.
    #[arg(long, default_value = "oss")]
    pub profile: String,
    /// The Envoy binary (default: `WAF_E2E_ENVOY`, `.tools/pip/envoy/_bin/envoy`, PATH).
    #[arg(long)]
    pub envoy: Option<PathBuf>,
    /// Load this proxy-wasm WAF filter instead of the stand-in.
    #[arg(long)]
    pub waf_wasm: Option<PathBuf>,
    /// The flavour of `--waf-wasm`.
    #[arg(long, requires = "waf_wasm")]
    pub waf_flavour: Option<String>,
    /// `admin` asks Envoy to write its audit log after each scenario's traffic; `timer` waits for its 10 s flush.
    #[arg(long, value_enum, default_value_t = crate::envoy::AuditFlush::Admin)]
    pub audit_flush: crate::envoy::AuditFlush,
}

/// Scenarios mostly wait for scrapes (ModSecurity costs ~1 ms a request), so run 4 per CPU, at most 16:
/// on 2 CPUs every shipped isolated scenario then runs in one wave.
fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get() * 4).unwrap_or(8).min(16)
}

/// Parses the command line and runs it; the result maps to the exit code.
pub async fn main_with(cli: Cli) -> Result<(), HarnessError> {
    match cli.command {
        Command::Validate { paths } => validate(paths),
        Command::Run(args) => run(args).await,
        Command::Up(args) => up(args).await,
        Command::Watch(args) => watch(args).await,
        Command::Plan(args) => {
            let scenarios = select_scenarios(&args.scenarios, &args.scenario)?;
            let opts = stack_options(&args, Timeouts::default(), "plan".into());
            let plan = crate::stack::kind::plan::build_plan(&opts.cluster_opts(), &scenarios).map_err(HarnessError::classify)?;
            print!("{plan}");
            Ok(())
        }
        Command::Doctor { stack } => {
            let report = crate::stack::kind::doctor::run_doctor(stack).await;
            print!("{report}");
            if report.ok() { Ok(()) } else { Err(HarnessError::Infrastructure(anyhow::anyhow!("prerequisites of the {stack} stack are missing (see above)"))) }
        }
        Command::ScrapeConfig(args) => {
            let config = crate::rendered::cli::scrape_config_command(args).map_err(HarnessError::classify)?;
            print!("{config}");
            Ok(())
        }
    }
}

fn validate(paths: Vec<PathBuf>) -> Result<(), HarnessError> {
    let paths = if paths.is_empty() { vec![PathBuf::from("scenarios")] } else { paths };
    let scenarios = scenario::load_paths(&paths)?;
    println!("{} scenario file(s) valid", scenarios.len());
    Ok(())
}

/// Loads the scenarios and keeps those matching any of `globs` (all when none is given).
pub fn select_scenarios(paths: &[PathBuf], globs: &[String]) -> Result<Vec<Scenario>, HarnessError> {
    Ok(select_scenario_files(paths, globs)?.into_iter().map(|(_, s)| s).collect())
}

/// Like [`select_scenarios`], with the file each came from.
pub fn select_scenario_files(paths: &[PathBuf], globs: &[String]) -> Result<Vec<(PathBuf, Scenario)>, HarnessError> {
    let all = scenario::load_paths(paths)?;
    let matchers = globs
        .iter()
        .map(|g| Glob::new(g).map(|g| g.compile_matcher()).map_err(|e| HarnessError::Usage(format!("--scenario {g:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let selected: Vec<(PathBuf, Scenario)> = all
        .into_iter()
        .filter(|(_, s)| matchers.is_empty() || matchers.iter().any(|m| m.is_match(s.name())))
        .collect();
    if selected.is_empty() {
        return Err(HarnessError::Usage(format!("no scenario matches {globs:?}")));
    }
    Ok(selected)
}

async fn run(args: RunArgs) -> Result<(), HarnessError> {
    if let Some(flavour) = args.waf_flavour.as_deref().filter(|f| !crate::scenario::is_filter_flavour(f)) {
        return Err(HarnessError::Usage(format!(
            "--waf-flavour {flavour}: not a filter flavour; use one of {:?} or `custom-<name>`", crate::scenario::KNOWN_FILTER_FLAVOURS)));
    }
    let files = select_scenario_files(&args.scenarios, &args.scenario)?;
    let scenarios: Vec<Scenario> = files.iter().map(|(_, s)| s.clone()).collect();
    let timeouts = Timeouts::default();
    let run_id = format!("{:08x}", rand_u32());
    let opts = stack_options(&args, timeouts.clone(), run_id.clone());
    let kind = opts.kind;
    let progress = Progress::default();
    // Registered before anything starts, so a signal during the stack's start also cleans up.
    let mut signals = Signals::register();
    progress.note(&format!("waf-e2e run {run_id}: {} scenario(s) on the {kind} stack", scenarios.len()));
    let started = std::time::Instant::now();
    let stack = tokio::select! {
        stack = start_or_attach(&args, &opts, &files, &scenarios, &progress) => stack.map_err(HarnessError::classify)?,
        // Dropping the start stops and reaps whatever it had started.
        signal = signals.recv() => return Err(HarnessError::Infrastructure(anyhow::anyhow!("interrupted by {signal} while the {kind} stack was starting"))),
    };
    progress.note(&format!("{kind} stack up in {:.1}s", started.elapsed().as_secs_f64()));
    let filter = stack.filter();
    progress.note(&format!("filter: {} (flavour `{}`); Envoy {}", filter.description, filter.flavour, filter.envoy_version.as_deref().unwrap_or("version unknown")));
    if kind == StackKind::Local {
        progress.note(&match args.audit_flush {
            crate::envoy::AuditFlush::Admin => "audit wait: Envoy is asked to write its log after each scenario's traffic (--audit-flush admin; a cluster's collector waits up to 10 s)".to_string(),
            crate::envoy::AuditFlush::Timer => "audit wait: Envoy's own 10 s log flush, as in a cluster (--audit-flush timer)".to_string(),
        });
    }
    let run_opts = RunOptions { run_id, jobs: args.jobs, timeouts, diagnostics_dir: Some(args.diagnostics_dir.clone()) };
    let outcomes = tokio::select! {
        outcomes = runner::run_all(stack.as_ref(), &scenarios, &run_opts, &progress) => outcomes,
        signal = signals.recv() => {
            progress.note(&format!("{signal}: stopping; cleaning up the {kind} stack"));
            let cleanup = stack.shutdown().await;
            return Err(HarnessError::Infrastructure(match cleanup {
                Ok(()) => anyhow::anyhow!("interrupted by {signal}"),
                Err(e) => anyhow::anyhow!("interrupted by {signal}; cleanup failed: {e:#}"),
            }));
        }
    };
    let shutdown = stack.shutdown().await;
    print!("{}", report::summary_table(&outcomes));
    if let Some(path) = &args.junit {
        report::write_junit(path, &kind.to_string(), &outcomes).map_err(HarnessError::Infrastructure)?;
    }
    report::exit_verdict(&outcomes)?;
    shutdown.map_err(|e| HarnessError::Infrastructure(e.context("stack shutdown")))
}

/// The stack options `run` and `plan` derive from the same flags; `--kubeconfig` implies the cluster stack.
fn stack_options(args: &RunArgs, timeouts: Timeouts, run_id: String) -> StackOptions {
    let kind = if args.kubeconfig.is_some() && args.stack == StackKind::Kind { StackKind::Cluster } else { args.stack };
    StackOptions {
        kind,
        rendered: args.rendered.clone(),
        scrape_interval: std::time::Duration::from_millis(args.scrape_interval_ms),
        timeouts,
        run_id,
        keep: args.keep,
        reuse: args.reuse.clone(),
        profile: args.profile.clone(),
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        no_install: args.no_install,
        envoy: args.envoy.clone(),
        waf_wasm: args.waf_wasm.clone(),
        waf_flavour: args.waf_flavour.clone(),
        audit_flush: args.audit_flush,
    }
}

/// SIGINT and SIGTERM handlers, installed when created (the default action would orphan the stack).
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Signals { int: signal(SignalKind::interrupt()).ok(), term: signal(SignalKind::terminate()).ok() }
    }

    /// Resolves on SIGINT or SIGTERM, naming which.
    async fn recv(&mut self) -> &'static str {
        let (Some(int), Some(term)) = (self.int.as_mut(), self.term.as_mut()) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
}

fn rand_u32() -> u32 {
    let u = uuid::Uuid::new_v4();
    u32::from_be_bytes(u.as_bytes()[..4].try_into().unwrap_or([0; 4]))
}

/// The stack of a run: a fresh one, or with `--attach` the one `waf-e2e up` keeps (the run's render applied to it).
async fn start_or_attach(args: &RunArgs, opts: &StackOptions, files: &[(PathBuf, Scenario)], scenarios: &[Scenario], progress: &Progress) -> anyhow::Result<Box<dyn stack::Stack>> {
    if !args.attach {
        return stack::start(opts, scenarios).await;
    }
    #[cfg(feature = "reference-proxy")]
    {
        let state = args.state.clone().unwrap_or_else(crate::attach::default_state_file);
        let remote = crate::attach::client::RemoteStack::attach(&state, &args.rendered, files, opts.timeouts.scenario).await?;
        progress.note(&format!("attached to `waf-e2e up` ({}); {}", state.display(),
            if remote.render_changes.is_empty() { "the render is unchanged".to_string() } else { remote.render_changes.join("; ") }));
        Ok(Box::new(remote))
    }
    #[cfg(not(feature = "reference-proxy"))]
    {
        let _ = progress;
        Err(HarnessError::Usage("--attach needs the `reference-proxy` feature".into()).into())
    }
}

#[cfg(feature = "reference-proxy")]
fn local_options(args: &LocalStackArgs) -> crate::stack::local::LocalOptions {
    crate::stack::local::LocalOptions {
        rendered: args.rendered.clone(),
        root: PathBuf::from("."),
        profile: args.profile.clone(),
        scrape_interval: std::time::Duration::from_millis(args.scrape_interval_ms),
        timeouts: Timeouts::default(),
        envoy: args.envoy.clone(),
        waf_wasm: args.waf_wasm.clone(),
        waf_flavour: args.waf_flavour.clone(),
        faults: crate::waf::Faults::default(),
        prometheus_port: None,
        audit_flush: args.audit_flush,
    }
}

/// Prints `text` at once (the banner and verdicts of long-running commands).
fn print_now(text: &str) {
    use std::io::Write;
    print!("{text}");
    let _ = std::io::stdout().flush();
}

#[cfg(feature = "reference-proxy")]
async fn up(args: UpArgs) -> Result<(), HarnessError> {
    let opts = local_options(&args.local);
    let state = args.state.clone().unwrap_or_else(crate::attach::default_state_file);
    let mut signals = Signals::register();
    crate::attach::up::up(&opts, &state, signals.recv(), print_now).await.map_err(HarnessError::classify)
}

#[cfg(feature = "reference-proxy")]
async fn watch(args: WatchArgs) -> Result<(), HarnessError> {
    let opts = crate::attach::watch::WatchOptions {
        local: local_options(&args.local),
        scenario_paths: args.scenarios.clone(),
        globs: args.scenario.clone(),
        jobs: args.jobs,
        diagnostics_dir: args.diagnostics_dir.clone(),
    };
    select_scenario_files(&opts.scenario_paths, &opts.globs)?;
    let mut signals = Signals::register();
    crate::attach::watch::watch(&opts, signals.recv(), print_now).await.map_err(HarnessError::classify)
}

#[cfg(not(feature = "reference-proxy"))]
async fn watch(_args: WatchArgs) -> Result<(), HarnessError> {
    Err(HarnessError::Usage("`watch` runs the local stack, which needs the `reference-proxy` feature".into()))
}

#[cfg(not(feature = "reference-proxy"))]
async fn up(_args: UpArgs) -> Result<(), HarnessError> {
    Err(HarnessError::Usage("`up` runs the local stack, which needs the `reference-proxy` feature".into()))
}
