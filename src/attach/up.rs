//! `waf-e2e up`: starts the local stack, serves it to attached runs, and stops it all on Ctrl-C.

use super::server::{info_of, ControlServer};
use super::UpState;
use crate::stack::local::{LocalOptions, LocalStack};
use crate::stack::Stack;
use anyhow::{bail, Context, Result};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

/// Runs the local stack of `opts` until `stop` resolves; `banner` gets the how-to-attach text once up.
pub async fn up(opts: &LocalOptions, state_file: &Path, stop: impl Future<Output = &'static str>, banner: impl Fn(&str)) -> Result<()> {
    if let Some(pid) = super::running_up(state_file) {
        bail!("`waf-e2e up` already runs (pid {pid}, state file {}); attach to it, or stop it first", state_file.display());
    }
    tokio::pin!(stop);
    let stack = tokio::select! {
        stack = LocalStack::start(opts) => Arc::new(stack.context("start the local stack")?),
        // Dropping the start stops and reaps whatever it had started.
        signal = &mut stop => bail!("interrupted by {signal} while the local stack was starting"),
    };
    let served = serve_until(&stack, state_file, stop, banner).await;
    let _ = std::fs::remove_file(state_file);
    let stopped = stack.shutdown().await.context("stop the local stack");
    served.and(stopped)
}

async fn serve_until(stack: &Arc<LocalStack>, state_file: &Path, stop: impl Future<Output = &'static str>, banner: impl Fn(&str)) -> Result<()> {
    let server = ControlServer::start(stack.clone()).await?;
    let info = info_of(stack).await?;
    let state = UpState {
        pid: std::process::id(),
        control: server.url(),
        stack: info.name,
        endpoints: info.endpoints,
        filter: info.filter,
        capabilities: info.capabilities,
        parts: info.parts,
    };
    super::write_state(state_file, &state)?;
    banner(&super::how_to_attach(state_file, &state));
    let signal = stop.await;
    banner(&format!("{signal}: stopping the local stack"));
    server.stop().await;
    Ok(())
}
