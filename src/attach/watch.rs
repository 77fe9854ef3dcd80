//! `waf-e2e watch`: keeps a local stack up, re-runs the scenarios a change affects, and prints the
//! verdict and the time from the change (the changed file's mtime) to the verdict.
//!
//! What is watched, by a poll of modification times every [`crate::wait::POLL_INTERVAL`] (no extra
//! crate; a save is seen within one interval):
//! - scenario files: the scenarios of a changed or new file re-run;
//! - the rendered resources: applied to the running stack (a changed PodMonitor reloads Prometheus),
//!   then every scenario re-runs;
//! - the filter module (`--waf-wasm FILE`, else the stand-in's source `filter/standin.c`, rebuilt):
//!   loaded for every scenario from then on, and every scenario re-runs.

use crate::outcome::{Outcome, Verdict};
use crate::report::{self, Progress};
use crate::runner::{self, RunOptions};
use crate::scenario::{Scenario, Selection};
use crate::stack::local::{LocalOptions, LocalStack};
use crate::stack::Stack;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What `watch` runs and watches.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The local stack (its `rendered` is the watched render).
    pub local: LocalOptions,
    /// Where the scenario files are (every file under them is watched).
    pub scenarios: Vec<PathBuf>,
    /// Which of those scenarios run.
    pub selection: Selection,
    /// How many isolated scenarios run at once.
    pub jobs: usize,
    /// Where failed scenarios' diagnostics go.
    pub diagnostics_dir: PathBuf,
}

/// Which kind of input a watched file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Input {
    Scenario,
    Rendered,
    Module,
}

/// Runs until `stop` resolves; `out` gets every verdict line and table.
pub async fn watch(opts: &WatchOptions, stop: impl Future<Output = &'static str>, out: impl Fn(&str)) -> Result<()> {
    tokio::pin!(stop);
    let stack = tokio::select! {
        stack = LocalStack::start(&opts.local) => stack.context("start the local stack")?,
        signal = &mut stop => bail!("interrupted by {signal} while the local stack was starting"),
    };
    let watched = tokio::select! {
        result = watch_loop(&stack, opts, &out) => result,
        signal = &mut stop => { out(&format!("{signal}: stopping the local stack\n")); Ok(()) }
    };
    let stopped = stack.shutdown().await.context("stop the local stack");
    watched.and(stopped)
}

async fn watch_loop(stack: &LocalStack, opts: &WatchOptions, out: &impl Fn(&str)) -> Result<()> {
    let mut seen = mtimes(opts)?;
    let first: Vec<Scenario> = select(opts)?.into_iter().map(|(_, s)| s).collect();
    out(&format!("watching {} file(s); initial run of {} scenario(s)\n", seen.len(), first.len()));
    let started = SystemTime::now();
    run_and_report(stack, opts, &first, started, "initial run (time from the stack being up)", out).await;
    loop {
        // The watcher's tick: a poll of file times, not a wait for a state (there is no deadline).
        tokio::time::sleep(crate::wait::POLL_INTERVAL).await;
        let now = mtimes(opts)?;
        let changed: Vec<(PathBuf, Input, SystemTime)> =
            now.iter().filter(|(p, v)| seen.get(*p) != Some(*v)).map(|(p, (input, t))| (p.clone(), *input, *t)).collect();
        seen = now;
        if changed.is_empty() {
            continue;
        }
        let changed_at = changed.iter().map(|(_, _, t)| *t).max().unwrap_or_else(SystemTime::now);
        let what = changed.iter().map(|(p, _, _)| p.display().to_string()).collect::<Vec<_>>().join(", ");
        match affected(stack, opts, &changed, out).await {
            Ok(scenarios) if scenarios.is_empty() => out(&format!("changed: {what}; no scenario affected\n")),
            Ok(scenarios) => run_and_report(stack, opts, &scenarios, changed_at, &format!("changed: {what}"), out).await,
            Err(e) => out(&format!("changed: {what}; not run: {e:#}\n")),
        }
    }
}

/// Applies render and module changes to the stack, and returns the scenarios to re-run.
async fn affected(stack: &LocalStack, opts: &WatchOptions, changed: &[(PathBuf, Input, SystemTime)], out: &impl Fn(&str)) -> Result<Vec<Scenario>> {
    let kinds: BTreeSet<Input> = changed.iter().map(|(_, k, _)| *k).collect();
    if kinds.contains(&Input::Module) {
        let module = match &opts.local.waf_wasm {
            Some(file) => file.clone(),
            None => {
                let source = std::fs::read_to_string(standin_source(opts)).context("read filter/standin.c")?;
                crate::filter::build::compile_c_module("waf-e2e-standin", &source, &crate::filter::build::default_cache_dir())?
            }
        };
        let loaded = stack.swap_module(&module).await?;
        out(&format!("filter module reloaded: {}\n", loaded.display()));
    }
    if kinds.contains(&Input::Rendered) {
        for change in stack.apply_render(&opts.local.rendered).await? {
            out(&format!("{change}\n"));
        }
    }
    let all = select(opts)?;
    if kinds.contains(&Input::Module) || kinds.contains(&Input::Rendered) {
        return Ok(all.into_iter().map(|(_, s)| s).collect());
    }
    let files: BTreeSet<&PathBuf> = changed.iter().map(|(p, _, _)| p).collect();
    Ok(all.into_iter().filter(|(p, _)| files.contains(p)).map(|(_, s)| s).collect())
}

async fn run_and_report(stack: &LocalStack, opts: &WatchOptions, scenarios: &[Scenario], changed_at: SystemTime, why: &str, out: &impl Fn(&str)) {
    let run = RunOptions {
        run_id: format!("{:08x}", uuid::Uuid::new_v4().as_u128() as u32),
        jobs: opts.jobs,
        timeouts: opts.local.timeouts.clone(),
        diagnostics_dir: Some(opts.diagnostics_dir.clone()),
        fail_fast: false,
    };
    // The render may have changed since the stack started: its policies are judged again here.
    let outcomes = match stack.offline_policy_failure() {
        Ok(Some(broken)) => runner::failed_by(scenarios, &format!("{broken} (offline verdict on the render; the running stack keeps its scrape target)")),
        Ok(None) => runner::run_all(stack, scenarios, &run, &Progress::default()).await,
        Err(e) => runner::cut_short(scenarios, &format!("the render's policies could not be judged: {e:#}")),
    };
    let took = SystemTime::now().duration_since(changed_at).unwrap_or_default();
    out(&report::summary_table(&outcomes));
    out(&format!("{why}: {} — {:.2}s from the change to the verdict\n", verdict_line(&outcomes), took.as_secs_f64()));
}

/// `PASS (3 passed)` or `FAIL (failed: a, b; 2 passed)`.
fn verdict_line(outcomes: &[Outcome]) -> String {
    let names = |f: fn(&Verdict) -> bool| outcomes.iter().filter(|o| f(&o.verdict)).map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ");
    let failed = names(|v| matches!(v, Verdict::Failed(_)));
    let broken = names(|v| matches!(v, Verdict::Broken(_)));
    let passed = outcomes.iter().filter(|o| matches!(o.verdict, Verdict::Passed)).count();
    let mut parts = Vec::new();
    if !failed.is_empty() {
        parts.push(format!("failed: {failed}"));
    }
    if !broken.is_empty() {
        parts.push(format!("infrastructure failed: {broken}"));
    }
    parts.push(format!("{passed} passed"));
    let verdict = if failed.is_empty() && broken.is_empty() { "PASS" } else { "FAIL" };
    format!("{verdict} ({})", parts.join("; "))
}

fn select(opts: &WatchOptions) -> Result<Vec<(PathBuf, Scenario)>> {
    crate::scenario::select::select_files(&opts.scenarios, &opts.selection).map_err(|e| anyhow::anyhow!("{e}"))
}

fn standin_source(opts: &WatchOptions) -> PathBuf {
    opts.local.root.join("filter").join("standin.c")
}

/// Every watched file with its kind and modification time.
fn mtimes(opts: &WatchOptions) -> Result<BTreeMap<PathBuf, (Input, SystemTime)>> {
    let mut files = BTreeMap::new();
    for path in &opts.scenarios {
        collect(path, Input::Scenario, &mut files)?;
    }
    collect(&opts.local.rendered, Input::Rendered, &mut files)?;
    let module = opts.local.waf_wasm.clone().unwrap_or_else(|| standin_source(opts));
    collect(&module, Input::Module, &mut files)?;
    Ok(files)
}

fn collect(path: &Path, input: Input, into: &mut BTreeMap<PathBuf, (Input, SystemTime)>) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("watch {}", path.display()))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).with_context(|| format!("list {}", path.display()))? {
            let p = entry?.path();
            let yaml = matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
            if p.is_file() && yaml {
                collect(&p, input, into)?;
            }
        }
        return Ok(());
    }
    into.insert(path.to_path_buf(), (input, meta.modified().with_context(|| format!("mtime of {}", path.display()))?));
    Ok(())
}
