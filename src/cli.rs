//! The command line: `run`, `validate`, `list`, `scrape-config`, `policy-trace`, `plan`, `schema`, `doctor`, with exit codes from [`HarnessError`].

use crate::error::HarnessError;
use crate::outcome::Outcome;
use crate::report::{self, Progress, RunInfo};
use crate::runner::{self, RunOptions};
use crate::scenario::{self, Scenario, Selection};
use crate::stack::{self, StackKind, StackOptions};
use crate::timeouts::Timeouts;
use clap::{Parser, Subcommand};
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
    /// Validate scenario files (default: scenarios/) and report every problem with file, line and column;
    /// with `--profile`, also check every object a kind run would apply against the releases' schemas.
    Validate {
        /// Scenario files or directories.
        paths: Vec<PathBuf>,
        /// Check every object a kind run of this profile would apply (the profile's manifests, the
        /// rendered resources, the scenarios' objects) against CRD schemas, offline.
        #[arg(long)]
        profile: Option<String>,
        /// The rendered resources to check (with `--profile`).
        #[arg(long, default_value = "fixtures/rendered", requires = "profile")]
        rendered: PathBuf,
        /// CRD files or directories (any multi-document YAML, searched recursively; repeatable). Without
        /// it, the CRDs inside the profile's cached release manifests.
        #[arg(long = "schemas", requires = "profile")]
        schemas: Vec<PathBuf>,
    },
    /// Print the complete Prometheus config a PodMonitor becomes, pointed at one target.
    ScrapeConfig(crate::rendered::cli::ScrapeConfigArgs),
    /// Print every action a run with these options would take on its stack, without doing any; for a
    /// cluster, also the offline schema check of every object it would apply.
    Plan {
        /// The run's options.
        #[command(flatten)]
        run: RunArgs,
        /// CRD files or directories for the schema check (repeatable); default: the CRDs inside the
        /// profile's cached release manifests.
        #[arg(long = "schemas")]
        schemas: Vec<PathBuf>,
    },
    /// Print, for one flow between the run's pods, each Calico tier, policy and rule considered, and the verdict.
    PolicyTrace(crate::stack::policy::trace::PolicyTraceArgs),
    /// Print the JSON Schema of scenario files (generated from the scenario model), for editors and CI.
    Schema,
    /// List the scenarios with their tags and the capabilities they need.
    List(SelectArgs),
    /// Start the local stack and keep it up until Ctrl-C; `run --attach` runs scenarios on it.
    Up(UpArgs),
    /// Keep a local stack up and re-run the scenarios a change (scenario, render, filter module) affects.
    Watch(WatchArgs),
    /// Run the OWASP CRS regression corpus (FTW YAML) through the local stack, in DetectionOnly and On.
    Corpus(CorpusArgs),
    /// Report which prerequisites of a stack are present, and how to get the missing ones.
    Doctor {
        /// The stack to check for.
        #[arg(long, value_enum, default_value_t = StackKind::Kind)]
        stack: StackKind,
        /// Also ask the release servers (GitHub) whether manifests that are not cached can be downloaded.
        #[arg(long)]
        online: bool,
    },
}

/// Which scenarios a command works on.
#[derive(Debug, Clone, clap::Args)]
pub struct SelectArgs {
    /// Only scenarios whose name matches this glob (repeatable: any of them).
    #[arg(long = "scenario", value_name = "GLOB")]
    pub scenario: Vec<String>,
    /// Only scenarios carrying this tag (repeatable: any of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tag: Vec<String>,
    /// Leave out scenarios carrying this tag (repeatable), whatever else selects them.
    #[arg(long = "exclude-tag", value_name = "TAG")]
    pub exclude_tag: Vec<String>,
    /// Directory (or files) holding the scenarios.
    #[arg(long, default_value = "scenarios")]
    pub scenarios: Vec<PathBuf>,
}

impl SelectArgs {
    /// Which scenarios the flags choose (the files under `scenarios` hold them).
    pub fn selection(&self) -> Selection {
        Selection { names: self.scenario.clone(), tags: self.tag.clone(), exclude_tags: self.exclude_tag.clone() }
    }
}

/// Options of `waf-e2e run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Where to run: `kind` (a new kind cluster), `cluster` (an existing one), `local` (everything on
    /// loopback) or `endpoints` (a running deployment: see the [endpoints] flags).
    #[arg(long, value_enum, default_value_t = StackKind::Kind)]
    pub stack: StackKind,
    /// Which scenarios.
    #[command(flatten)]
    pub select: SelectArgs,
    /// The rendered resources under test (PodMonitor, GlobalNetworkPolicy, EnvoyProxy).
    #[arg(long, default_value = "fixtures/rendered")]
    pub rendered: PathBuf,
    /// Write a JUnit XML report here (same as `--report junit FILE`).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a report: `--report json FILE` or `--report junit FILE` (repeatable).
    #[arg(long, num_args = 2, value_names = ["FORMAT", "FILE"], action = clap::ArgAction::Append)]
    pub report: Vec<String>,
    /// After the first failed scenario, start no other (those running finish; the rest are reported as not run).
    #[arg(long)]
    pub fail_fast: bool,
    /// Write a diagnostics bundle per failed scenario under this directory.
    #[arg(long, default_value = "waf-e2e-diagnostics")]
    pub diagnostics_dir: PathBuf,
    /// How many scenarios run at once; at least 1. An exclusive one still holds the gateway alone
    /// from its baseline to its confirming scrape, after the isolated ones' traffic.
    #[arg(long, default_value_t = default_jobs(), value_parser = at_least_one)]
    pub jobs: usize,
    /// Prometheus scrape interval on the local stack, in milliseconds (at least 1, below the harness's wait for a scrape).
    #[arg(long, default_value_t = DEFAULT_SCRAPE_INTERVAL_MS, value_parser = clap::value_parser!(u64).range(1..))]
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
    /// Where a running deployment is (`--stack endpoints`).
    #[command(flatten)]
    pub endpoints: stack::endpoints::EndpointsArgs,
    /// Local stack: Envoy, the WAF filter and the audit flush.
    #[command(flatten)]
    pub envoy_filter: EnvoyFilterArgs,
    /// Run on the local stack a `waf-e2e up` keeps (its render is applied first: a changed PodMonitor reloads Prometheus).
    #[arg(long)]
    pub attach: bool,
    /// The state file of `waf-e2e up` (default: `$XDG_RUNTIME_DIR/waf-e2e/up.json`, else `<tmp>/waf-e2e-up.json`).
    #[arg(long)]
    pub state: Option<PathBuf>,
}

/// Options of `waf-e2e corpus`.
#[derive(Debug, clap::Args)]
pub struct CorpusArgs {
    /// FTW test files or directories (searched recursively), e.g. a CRS checkout's `tests/regression/tests`.
    #[arg(required = true, value_name = "DIR")]
    pub paths: Vec<PathBuf>,
    /// Known disagreements: tests that differ on this stack, each with a reason (e.g. `corpus/overrides.yaml`).
    #[arg(long, value_name = "FILE")]
    pub overrides: Option<PathBuf>,
    /// Which policy modes to run: DetectionOnly (`detection`), On (`blocking`) or `both`.
    #[arg(long, value_enum, default_value_t = CorpusMode::Both)]
    pub mode: CorpusMode,
    /// Only tests whose `test_title` matches this glob (repeatable: any of them).
    #[arg(long = "test", value_name = "GLOB")]
    pub test: Vec<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub concurrency: usize,
    /// Write a JUnit XML report here (one test case per FTW test).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a report: `--report json FILE` or `--report junit FILE` (repeatable).
    #[arg(long, num_args = 2, value_names = ["FORMAT", "FILE"], action = clap::ArgAction::Append)]
    pub report: Vec<String>,
    /// The local stack the corpus runs on.
    #[command(flatten)]
    pub local: LocalStackArgs,
}

/// `waf-e2e corpus --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CorpusMode {
    /// DetectionOnly only.
    Detection,
    /// On only.
    Blocking,
    /// DetectionOnly, then On.
    Both,
}

/// Options of `waf-e2e up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The stack to keep up: only `local` can be kept by this process.
    #[arg(long, value_enum, default_value_t = StackKind::Local)]
    pub stack: StackKind,
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
    /// Which scenarios (their files are watched).
    #[command(flatten)]
    pub select: SelectArgs,
    /// How many scenarios run at once (exclusive ones hold the gateway alone while they count).
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
    #[arg(long, default_value_t = DEFAULT_SCRAPE_INTERVAL_MS)]
    pub scrape_interval_ms: u64,
    /// Stack profile whose WAF policy template renders each scenario's policy.
    #[arg(long, default_value = "oss")]
    pub profile: String,
    /// Envoy, the WAF filter and the audit flush.
    #[command(flatten)]
    pub envoy_filter: EnvoyFilterArgs,
}

/// How the local stack runs Envoy and its WAF filter (`run`, `up`, `watch`).
#[derive(Debug, Clone, clap::Args)]
pub struct EnvoyFilterArgs {
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
    /// Local stack: run Prometheus and Envoy as child processes (`native`) or as containers on a
    /// private network (`docker`, through testcontainers; every container is removed at the end).
    #[arg(long, value_enum, default_value_t = crate::container::RuntimeKind::Native)]
    pub runtime: crate::container::RuntimeKind,
    /// `--runtime docker`: Prometheus' image (default: the official image at the kind profile's version).
    #[arg(long)]
    pub prometheus_image: Option<String>,
    /// `--runtime docker`: Envoy's image (default: the official image Envoy Gateway v1.7.2 deploys).
    #[arg(long)]
    pub envoy_image: Option<String>,
}

impl EnvoyFilterArgs {
    /// The flags given here, by name (values other than the defaults): they shape the stack that starts.
    pub fn given(&self) -> Vec<&'static str> {
        let flags = [
            ("--envoy", self.envoy.is_some()),
            ("--waf-wasm", self.waf_wasm.is_some()),
            ("--waf-flavour", self.waf_flavour.is_some()),
            ("--audit-flush timer", self.audit_flush != crate::envoy::AuditFlush::Admin),
            ("--runtime docker", self.runtime == crate::container::RuntimeKind::Docker),
            ("--prometheus-image", self.prometheus_image.is_some()),
            ("--envoy-image", self.envoy_image.is_some()),
        ];
        flags.into_iter().filter(|(_, on)| *on).map(|(f, _)| f).collect()
    }

    /// The runtime the flags select, checked; a contradiction (image flags without docker, `--envoy`
    /// with it, an unknown `--waf-flavour`) is a usage error.
    pub fn resolve(&self) -> Result<crate::container::Runtime, HarnessError> {
        if let Some(flavour) = self.waf_flavour.as_deref().filter(|f| !crate::scenario::is_filter_flavour(f)) {
            return Err(HarnessError::Usage(format!("--waf-flavour {flavour}: not a filter flavour; use one of {:?} or `custom-<name>`", crate::scenario::KNOWN_FILTER_FLAVOURS)));
        }
        if self.runtime == crate::container::RuntimeKind::Docker && self.envoy.is_some() {
            return Err(HarnessError::Usage("--envoy names a binary for `--runtime native`; with `--runtime docker` pass --envoy-image".into()));
        }
        crate::container::Runtime::from_flags(self.runtime, self.prometheus_image.as_deref(), self.envoy_image.as_deref()).map_err(HarnessError::Usage)
    }
}

/// The local stack's Prometheus scrape interval unless `--scrape-interval-ms` says otherwise.
pub const DEFAULT_SCRAPE_INTERVAL_MS: u64 = 500;

/// A report `run` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// JUnit XML.
    Junit,
    /// The JSON report ([`crate::report::json`]).
    Json,
}

impl RunArgs {
    /// Usage problems no single flag shows: flags of another stack, values that contradict each other.
    pub fn check(&self, timeouts: &Timeouts) -> Result<(), HarnessError> {
        let kind = self.stack_kind();
        let usage = |m: String| Err(HarnessError::Usage(m));
        let scrape = std::time::Duration::from_millis(self.scrape_interval_ms);
        if scrape >= timeouts.next_scrape {
            return usage(format!(
                "--scrape-interval-ms {}: every scenario waits at most {}s for a scrape, so the interval must be shorter",
                self.scrape_interval_ms, timeouts.next_scrape.as_secs()));
        }
        let cluster_flags = [("--kubeconfig", self.kubeconfig.is_some()), ("--context", self.context.is_some()), ("--no-install", self.no_install)];
        let given: Vec<&str> = cluster_flags.iter().filter(|(_, on)| *on).map(|(f, _)| *f).collect();
        if !given.is_empty() && !matches!(kind, StackKind::Kind | StackKind::Cluster) {
            return usage(format!("{} only apply to a cluster (`--stack cluster` or `kind`), not the {kind} stack", given.join(", ")));
        }
        if self.keep && kind == StackKind::Endpoints {
            return usage("--keep: the endpoints stack starts and removes nothing, so there is nothing to keep".into());
        }
        if self.reuse.is_some() && kind != StackKind::Kind {
            return usage(format!("--reuse names a kept kind cluster; it does not apply to the {kind} stack"));
        }
        let mut given = self.envoy_filter.given();
        if self.attach {
            // The stack is `up`'s: what would shape a new one would be silently ignored.
            given.extend((self.scrape_interval_ms != DEFAULT_SCRAPE_INTERVAL_MS).then_some("--scrape-interval-ms"));
            if !given.is_empty() {
                return usage(format!("{}: an attached run uses the stack `waf-e2e up` started; give them to `up`", given.join(", ")));
            }
        }
        if !given.is_empty() && kind != StackKind::Local {
            return usage(format!("{} only apply to the local stack, not the {kind} stack", given.join(", ")));
        }
        self.envoy_filter.resolve()?;
        self.endpoints.check(kind == StackKind::Endpoints).map_err(HarnessError::Usage)?;
        self.reports().map(|_| ())
    }

    /// Usage problems of the flags with the scenarios they selected.
    pub fn check_selection(&self, scenarios: &[Scenario]) -> Result<(), HarnessError> {
        if self.stack_kind() == StackKind::Endpoints {
            self.endpoints.check_scenario_count(scenarios.len()).map_err(HarnessError::Usage)?;
        }
        Ok(())
    }

    /// The stack these flags select: `--kubeconfig` turns the default `kind` into `cluster`.
    pub fn stack_kind(&self) -> StackKind {
        if self.kubeconfig.is_some() && self.stack == StackKind::Kind { StackKind::Cluster } else { self.stack }
    }

    /// Every report to write (`--junit` and each `--report FORMAT FILE`); an unknown format or one file twice is a usage error.
    pub fn reports(&self) -> Result<Vec<(ReportFormat, PathBuf)>, HarnessError> {
        let mut out: Vec<(ReportFormat, PathBuf)> = self.junit.iter().map(|p| (ReportFormat::Junit, p.clone())).collect();
        for pair in self.report.chunks(2) {
            let [format, file] = pair else { return Err(HarnessError::Usage("--report needs FORMAT FILE".into())) };
            let format = match format.as_str() {
                "json" => ReportFormat::Json,
                "junit" => ReportFormat::Junit,
                other => return Err(HarnessError::Usage(format!("--report {other:?}: the formats are `json` and `junit`"))),
            };
            out.push((format, PathBuf::from(file)));
        }
        for (i, (_, path)) in out.iter().enumerate() {
            if out[..i].iter().any(|(_, p)| p == path) {
                return Err(HarnessError::Usage(format!("two reports would be written to {}", path.display())));
            }
        }
        Ok(out)
    }
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Scenarios mostly wait for scrapes and Envoy's log flush (ModSecurity costs ~1 ms a request), so
/// run 8 per CPU, at most 32: on 2 CPUs every shipped isolated scenario then runs in one wave.
fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get() * 8).unwrap_or(16).min(32)
}

/// Parses the command line and runs it; the result maps to the exit code.
pub async fn main_with(cli: Cli) -> Result<(), HarnessError> {
    match cli.command {
        Command::Validate { paths, profile: None, .. } => validate(paths),
        Command::Validate { paths, profile: Some(profile), rendered, schemas } => validate_profile(paths, profile, rendered, &schemas),
        Command::Run(args) => run(args).await,
        Command::Up(args) => up(args).await,
        Command::Watch(args) => watch(args).await,
        Command::Plan { run: args, schemas } => {
            let timeouts = Timeouts::default();
            args.check(&timeouts)?;
            let scenarios = select_scenarios(&args.select)?;
            args.check_selection(&scenarios)?;
            let opts = stack_options(&args, timeouts, "plan".into());
            if matches!(opts.kind, StackKind::Kind | StackKind::Cluster) {
                let plan = crate::stack::kind::plan::build_plan(&opts.cluster_opts(), &scenarios).map_err(HarnessError::classify)?;
                print!("{plan}");
                return checked_plan(&plan, &schemas, SchemaCheck::Optional);
            }
            let plan = crate::stack::describe::plan_text(&opts, &scenarios).map_err(HarnessError::classify)?;
            print!("{plan}");
            Ok(())
        }
        Command::PolicyTrace(args) => {
            print!("{}", crate::stack::policy::trace::policy_trace(&args).map_err(HarnessError::classify)?);
            Ok(())
        }
        Command::Schema => {
            print!("{}", scenario::schema::json_schema_text());
            Ok(())
        }
        Command::List(args) => list(&args),
        Command::Corpus(args) => corpus(args).await,
        Command::Doctor { stack, online } => {
            let report = crate::stack::kind::doctor::run_doctor(stack, online).await;
            print!("{report}");
            if !online {
                eprintln!("(checked offline; `waf-e2e doctor --online` also asks the release servers)");
            }
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

/// The offline schema check of every object a kind run of `profile` would apply, over every scenario.
fn validate_profile(paths: Vec<PathBuf>, profile: String, rendered: PathBuf, schemas: &[PathBuf]) -> Result<(), HarnessError> {
    let paths = if paths.is_empty() { vec![PathBuf::from("scenarios")] } else { paths };
    let scenarios: Vec<Scenario> = scenario::load_paths(&paths)?.into_iter().map(|(_, s)| s).collect();
    let opts = crate::stack::kind::ClusterOpts { profile, rendered, run_id: Some("validate".into()), ..Default::default() };
    let plan = crate::stack::kind::plan::build_plan(&opts, &scenarios).map_err(HarnessError::classify)?;
    println!("{} scenario file(s) valid", scenarios.len());
    checked_plan(&plan, schemas, SchemaCheck::Required)
}

/// Whether a command may pass while the schema check of some objects did not run (no CRDs at hand).
#[derive(PartialEq)]
enum SchemaCheck {
    /// `plan` shows the steps and says the check did not run.
    Optional,
    /// `validate --profile` exists to run it: passing without it would be a pass nothing earned.
    Required,
}

/// The offline check of a cluster plan (schemas and Calico's validation), then the offline verdict
/// of the rendered GlobalNetworkPolicy's flows: shown, not a verdict here (a run fails on them).
fn checked_plan(plan: &crate::stack::kind::plan::Plan, schemas: &[PathBuf], schema_check: SchemaCheck) -> Result<(), HarnessError> {
    let report = crate::stack::kind::validate::check_plan(plan, schemas).map_err(HarnessError::classify)?;
    let clean = report.problems.is_empty();
    let schema_not_run = report.schema_not_run;
    let verdict = schema_verdict(report);
    match crate::stack::policy::offline(&plan.root, &plan.profile, &plan.rendered) {
        Ok(policy) => policy.lines().iter().for_each(|l| println!("{l}")),
        // Anything the report did not already name (a policy in a tier nothing defines).
        Err(e) if clean => return Err(HarnessError::classify(e)),
        Err(_) => {}
    }
    if clean && schema_not_run > 0 && schema_check == SchemaCheck::Required {
        return Err(HarnessError::Usage(format!(
            "validate --profile: the schema check of {schema_not_run} object(s) did not run (see above): pass --schemas DIR, or fill the cache with one online run"
        )));
    }
    verdict
}

/// Prints a schema check's report; any problem is invalid input (exit 2).
fn schema_verdict(report: crate::schema::Report) -> Result<(), HarnessError> {
    print!("{report}");
    match report.problems_as_invalid_input() {
        Some(invalid) => Err(invalid.into()),
        None => Ok(()),
    }
}

/// Loads the scenarios and keeps those the selection names; none kept is a usage error.
fn select_scenarios(args: &SelectArgs) -> Result<Vec<Scenario>, HarnessError> {
    Ok(scenario::select::select_files(&args.scenarios, &args.selection())?.into_iter().map(|(_, s)| s).collect())
}

/// `waf-e2e list`: one line per selected scenario: name, tags, the capabilities it needs, exclusive or not.
fn list(args: &SelectArgs) -> Result<(), HarnessError> {
    let scenarios = select_scenarios(args)?;
    let rows: Vec<[String; 4]> = scenarios
        .iter()
        .map(|s| {
            let tags: Vec<&str> = s.tags.iter().map(|t| t.value.as_str()).collect();
            let needs: Vec<String> = s.needs().into_iter().map(crate::stack::describe::capability_name).collect();
            let runs = if s.exclusive { "counts alone" } else { "concurrently" };
            [s.name().to_string(), tags.join(","), needs.join(","), runs.to_string()]
        })
        .collect();
    let header = ["SCENARIO", "TAGS", "NEEDS", "RUNS"].map(String::from);
    let widths: Vec<usize> = (0..4).map(|i| rows.iter().chain([&header]).map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for row in [&header].into_iter().chain(&rows) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(())
}

async fn run(args: RunArgs) -> Result<(), HarnessError> {
    let timeouts = Timeouts::default();
    args.check(&timeouts)?;
    let reports = args.reports()?;
    let scenarios = select_scenarios(&args.select)?;
    args.check_selection(&scenarios)?;
    let run_id = format!("{:08x}", rand_u32());
    let opts = stack_options(&args, timeouts.clone(), run_id.clone());
    let kind = opts.kind;
    let (stack_words, stack_name) = run_stack(&args, kind);
    let progress = Progress::default();
    // Directories of earlier runs that were killed (SIGKILL leaves no chance to clean up).
    for removed in crate::rundir::sweep_runs() {
        progress.note(&format!("removed {} (left by a run that is gone: killed or crashed)", removed.display()));
    }
    // Registered before anything starts, so a signal during the stack's start also cleans up.
    let mut signals = Signals::register();
    progress.note(&format!("waf-e2e run {run_id}: {} scenario(s) on the {stack_words}", scenarios.len()));
    let started_at = chrono::Local::now().fixed_offset();
    let started = std::time::Instant::now();
    let mut info = RunInfo {
        run_id: run_id.clone(),
        stack: stack_name,
        // The local stack renders each policy from the profile's template too; only endpoints has none.
        profile: (kind != StackKind::Endpoints).then(|| args.profile.clone()),
        envoy_version: None,
        filter: None,
        hostname: report::hostname(),
        started_at,
        duration: std::time::Duration::ZERO,
        interrupted: None,
        policy: Vec::new(),
    };
    // Calico's validation and the rendered GlobalNetworkPolicy's flows, offline, before anything starts.
    let policy = crate::stack::policy::for_run(&opts).map_err(HarnessError::classify)?;
    if let Some(policy) = &policy {
        policy.lines().iter().for_each(|l| progress.note(l));
        info.policy = policy.verdicts.clone();
        // An attached stack keeps the scrape target it started with: a render that denies the
        // scrape cannot show there as a target down, so the offline verdict fails the run.
        let attached_scrape = || if args.attach { policy.scrape_denied() } else { None };
        if let Some(broken) = policy.data_plane_broken().or_else(attached_scrape) {
            info.duration = started.elapsed();
            let outcomes = runner::failed_by(&scenarios, &broken.to_string());
            print!("{}", report::summary_table(&outcomes));
            let _ = write_reports(&reports, &info, &outcomes, &progress);
            return Err(HarnessError::ResourceBroken(broken));
        }
        if policy.scrape().is_some_and(|v| !v.ok) {
            progress.note(match kind {
                StackKind::Local if !args.attach => "policy (offline): the policies deny Prometheus the proxy's metrics port; the local stack gives Prometheus no reachable target, as a cluster would",
                _ => "policy (offline): the policies deny Prometheus the proxy's metrics port; the cluster's later-tier deny will show it as a scrape target down",
            });
        }
    }
    let stack = tokio::select! {
        stack = start_or_attach(&args, &opts, &scenarios, &progress) => match stack {
            Ok(stack) => stack,
            Err(e) => {
                let e = HarnessError::classify(e);
                info.duration = started.elapsed();
                match &e {
                    HarnessError::Infrastructure(why) => {
                        let why = format!("the {stack_words} did not start: {why:#}");
                        // A report that cannot be written is noted on stderr; the start failure stays the verdict.
                        let _ = write_reports(&reports, &info, &runner::cut_short(&scenarios, &why), &progress);
                    }
                    // The resource under test kept the stack from working (e.g. a GlobalNetworkPolicy
                    // that keeps Prometheus out): every scenario fails with that reason.
                    HarnessError::ResourceBroken(broken) => {
                        // Next to what the stack observed, the offline verdict of the scrape flow.
                        if let Some(scrape) = policy.as_ref().and_then(|p| p.scrape()) {
                            progress.note(&format!("policy (offline) for the scrape: {}", scrape.property()));
                        }
                        let outcomes = runner::failed_by(&scenarios, &broken.to_string());
                        print!("{}", report::summary_table(&outcomes));
                        let _ = write_reports(&reports, &info, &outcomes, &progress);
                    }
                    _ => {}
                }
                return Err(e);
            }
        },
        // Dropping the start stops and reaps whatever it had started.
        signal = signals.recv() => {
            info.duration = started.elapsed();
            info.interrupted = Some(signal.to_string());
            let why = format!("interrupted by {signal} while the {stack_words} was starting");
            // A report that cannot be written is noted on stderr; the interruption stays the verdict.
            let _ = write_reports(&reports, &info, &runner::cut_short(&scenarios, &why), &progress);
            return Err(HarnessError::Infrastructure(anyhow::anyhow!(why)));
        }
    };
    progress.note(&format!("{stack_words} up in {:.1}s", started.elapsed().as_secs_f64()));
    let filter = stack.filter();
    progress.note(&format!("filter: {} (flavour `{}`); Envoy {}", filter.description, filter.flavour, filter.envoy_version.as_deref().unwrap_or("version unknown")));
    if kind == StackKind::Local {
        progress.note(&match args.envoy_filter.audit_flush {
            crate::envoy::AuditFlush::Admin => "audit wait: Envoy is asked to write its log after each scenario's traffic (--audit-flush admin; a cluster's collector waits up to 10 s)".to_string(),
            crate::envoy::AuditFlush::Timer => "audit wait: Envoy's own 10 s log flush, as in a cluster (--audit-flush timer)".to_string(),
        });
        progress.note(&format!("runtime: {}", opts.runtime.describe()));
    }
    let facts = stack.facts();
    info.profile = facts.profile.or(info.profile);
    info.envoy_version = facts.envoy_version;
    info.filter = facts.filter;
    let run_opts = RunOptions { run_id, jobs: args.jobs, timeouts, diagnostics_dir: Some(args.diagnostics_dir.clone()), fail_fast: args.fail_fast };
    let interrupt = async { signals.recv().await.to_string() };
    let result = runner::run_until(stack.as_ref(), &scenarios, &run_opts, &progress, interrupt).await;
    if let Some(signal) = &result.interrupted {
        progress.note(&format!("{signal}: stopping; cleaning up the {stack_words}"));
    }
    let shutdown = stack.shutdown().await;
    let outcomes = result.outcomes;
    print!("{}", report::summary_table(&outcomes));
    info.duration = started.elapsed();
    info.interrupted = result.interrupted.clone();
    let written = write_reports(&reports, &info, &outcomes, &progress);
    if let Some(signal) = result.interrupted {
        return Err(HarnessError::Infrastructure(match shutdown {
            Ok(()) => anyhow::anyhow!("interrupted by {signal}"),
            Err(e) => anyhow::anyhow!("interrupted by {signal}; cleanup failed: {e:#}"),
        }));
    }
    report::exit_verdict(&outcomes)?;
    written.map_err(HarnessError::Infrastructure)?;
    shutdown.map_err(|e| HarnessError::Infrastructure(e.context("stack shutdown")))
}

/// Writes every requested report; each failure is noted, and the first is returned.
fn write_reports(reports: &[(ReportFormat, PathBuf)], info: &RunInfo, outcomes: &[Outcome], progress: &Progress) -> anyhow::Result<()> {
    let mut first = Ok(());
    for (format, path) in reports {
        let written = match format {
            ReportFormat::Junit => report::write_junit(path, info, outcomes),
            ReportFormat::Json => report::write_json(path, info, outcomes),
        };
        if let Err(e) = written {
            progress.note(&format!("{e:#}"));
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// The stack options `run` and `plan` derive from the same flags; `--kubeconfig` implies the cluster stack.
fn stack_options(args: &RunArgs, timeouts: Timeouts, run_id: String) -> StackOptions {
    StackOptions {
        kind: args.stack_kind(),
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
        envoy: args.envoy_filter.envoy.clone(),
        waf_wasm: args.envoy_filter.waf_wasm.clone(),
        waf_flavour: args.envoy_filter.waf_flavour.clone(),
        audit_flush: args.envoy_filter.audit_flush,
        // `check` refused a contradiction before any caller got here.
        runtime: args.envoy_filter.resolve().unwrap_or_default(),
        endpoints: args.endpoints.clone(),
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

/// The stack a run uses, as its notes say it (`kind stack`, `attached local stack (native processes)`),
/// and as its reports name it (`kind`, `local`).
fn run_stack(args: &RunArgs, kind: StackKind) -> (String, String) {
    if !args.attach {
        return (format!("{kind} stack"), kind.to_string());
    }
    #[cfg(feature = "reference-proxy")]
    if let Ok(up) = crate::attach::read_state(&state_file(&args.state)) {
        return (format!("attached {} stack ({})", up.stack, up.parts.runtime), up.stack);
    }
    // Unreadable (or a build that cannot attach): attaching fails next, saying why.
    ("attached stack of `waf-e2e up`".into(), StackKind::Local.to_string())
}

/// The state file of `waf-e2e up`: `--state`, else the default.
#[cfg(feature = "reference-proxy")]
fn state_file(given: &Option<PathBuf>) -> PathBuf {
    given.clone().unwrap_or_else(crate::attach::default_state_file)
}

/// The stack of a run: a fresh one, or with `--attach` the one `waf-e2e up` keeps (the run's render applied to it).
async fn start_or_attach(args: &RunArgs, opts: &StackOptions, scenarios: &[Scenario], progress: &Progress) -> anyhow::Result<Box<dyn stack::Stack>> {
    if !args.attach {
        return stack::start(opts, scenarios).await;
    }
    #[cfg(feature = "reference-proxy")]
    {
        let state = state_file(&args.state);
        let files = scenario::select::select_files(&args.select.scenarios, &args.select.selection())?;
        let remote = crate::attach::client::RemoteStack::attach(&state, &args.rendered, &files, opts.timeouts.scenario).await?;
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
fn local_options(args: &LocalStackArgs) -> Result<crate::stack::local::LocalOptions, HarnessError> {
    let runtime = args.envoy_filter.resolve()?;
    Ok(crate::stack::local::LocalOptions {
        rendered: args.rendered.clone(),
        root: PathBuf::from("."),
        profile: args.profile.clone(),
        scrape_interval: std::time::Duration::from_millis(args.scrape_interval_ms),
        timeouts: Timeouts::default(),
        envoy: args.envoy_filter.envoy.clone(),
        waf_wasm: args.envoy_filter.waf_wasm.clone(),
        waf_flavour: args.envoy_filter.waf_flavour.clone(),
        faults: crate::waf::Faults::default(),
        prometheus_port: None,
        audit_flush: args.envoy_filter.audit_flush,
        runtime,
    })
}

/// Prints `text` at once (the banner and verdicts of long-running commands).
#[cfg(feature = "reference-proxy")]
fn print_now(text: &str) {
    use std::io::Write;
    print!("{text}");
    let _ = std::io::stdout().flush();
}

#[cfg(feature = "reference-proxy")]
async fn up(args: UpArgs) -> Result<(), HarnessError> {
    if args.stack != StackKind::Local {
        return Err(HarnessError::Usage(format!("`up --stack {}`: only the local stack can be kept up (a kind cluster is kept with `run --keep` and reused with `--reuse`)", args.stack)));
    }
    let opts = local_options(&args.local)?;
    let state = state_file(&args.state);
    let mut signals = Signals::register();
    crate::attach::up::up(&opts, &state, signals.recv(), print_now).await.map_err(HarnessError::classify)
}

#[cfg(feature = "reference-proxy")]
async fn watch(args: WatchArgs) -> Result<(), HarnessError> {
    let opts = crate::attach::watch::WatchOptions {
        local: local_options(&args.local)?,
        scenarios: args.select.scenarios.clone(),
        selection: args.select.selection(),
        jobs: args.jobs,
        diagnostics_dir: args.diagnostics_dir.clone(),
    };
    select_scenarios(&args.select)?;
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

#[cfg(feature = "reference-proxy")]
async fn corpus(args: CorpusArgs) -> Result<(), HarnessError> {
    let mut junit = args.junit.clone();
    let mut json = None;
    for pair in args.report.chunks(2) {
        match pair {
            [format, file] if format == "junit" => junit = Some(PathBuf::from(file)),
            [format, file] if format == "json" => json = Some(PathBuf::from(file)),
            _ => return Err(HarnessError::Usage(format!("--report {pair:?}: the formats are `json` and `junit`"))),
        }
    }
    let modes = match args.mode {
        CorpusMode::Detection => vec![crate::corpus::Mode::Detection],
        CorpusMode::Blocking => vec![crate::corpus::Mode::Blocking],
        CorpusMode::Both => vec![crate::corpus::Mode::Detection, crate::corpus::Mode::Blocking],
    };
    let opts = crate::corpus::CorpusOptions {
        paths: args.paths.clone(), overrides: args.overrides.clone(), modes, tests: args.test.clone(),
        concurrency: args.concurrency, junit, json, local: local_options(&args.local)?,
    };
    let run = crate::corpus::run(&opts).await.map_err(HarnessError::classify)?;
    print_now(&crate::corpus::report::summary(&run));
    if let Some(path) = &opts.junit {
        crate::corpus::report::write_junit(path, &run).map_err(HarnessError::Infrastructure)?;
    }
    if let Some(path) = &opts.json {
        crate::corpus::report::write_json(path, &run).map_err(HarnessError::Infrastructure)?;
    }
    if run.ok() { Ok(()) } else { Err(HarnessError::CorpusFailed(run.failure_count())) }
}

#[cfg(not(feature = "reference-proxy"))]
async fn corpus(_args: CorpusArgs) -> Result<(), HarnessError> {
    Err(HarnessError::Usage("`corpus` runs the local stack, which needs the `reference-proxy` feature".into()))
}
