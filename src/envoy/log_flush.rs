//! Making Envoy write its buffered `--log-path` file now instead of on its 10 s flush timer.
//!
//! Measured on Envoy 1.37.0: the admin call `POST /reopen_logs` wakes the access-log flush thread
//! (`AccessLogFileImpl::reopen` notifies it), which reopens the same path in append mode and writes
//! everything buffered; `filesystem.write_total_buffered` drops to 0 within milliseconds, while
//! `filesystem.flushed_by_timer` does not move. The call changes nothing Envoy was configured with
//! (no resource under test is touched); it only moves the moment the bytes reach the file, which in
//! a cluster is up to one flush interval later. Reports therefore say when it was used.

use super::admin::Admin;
use super::xds::STAT_PREFIX;
use crate::wait::{self, Check};
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// How the audit wait knows the log is complete after the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuditFlush {
    /// Ask Envoy to write its log at once (admin `POST /reopen_logs`), as soon as every request has ended.
    #[default]
    Admin,
    /// Wait for Envoy's own flush timer (every 10 s), as a collector in a cluster does.
    Timer,
}

impl std::fmt::Display for AuditFlush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuditFlush::Admin => "admin",
            AuditFlush::Timer => "timer",
        })
    }
}

/// How many times one check asks for a flush before waiting for the next poll.
const ASKS_PER_CHECK: usize = 8;

/// What the report says about an audit wait ended by [`flush_now`].
pub const FLUSHED_ON_REQUEST: &str =
    "Envoy wrote its buffered log at the harness's request (admin POST /reopen_logs, --audit-flush admin), not on its 10 s timer as in a cluster";

/// Waits until no request is in flight on the gateway listener (so every line its streams log is
/// buffered), asks Envoy to write its log, and waits until nothing is left buffered; within `deadline`.
pub async fn flush_now(admin: &Admin, deadline: Duration) -> Result<String> {
    let active = format!("http.{STAT_PREFIX}.downstream_rq_active");
    wait::until("every request on Envoy's gateway listener to end", deadline, || async {
        Ok(match admin.counter(&active).await? {
            Some(0) | None => Check::Met(()),
            Some(n) => Check::NotYet(format!("{active} = {n}")),
        })
    })
    .await?;
    let failed_before = admin.counter("filesystem.reopen_failed").await?.unwrap_or(0);
    wait::until("Envoy to write its buffered log after POST /reopen_logs", deadline, || async {
        // The gauge covers every file Envoy writes, the admin listener's own access log (to /dev/null)
        // too: the POST's own line may land in the buffer just after the flush thread emptied it
        // (measured: about half the time). So each check asks a few times in a row; lines logged
        // meanwhile (other scenarios' traffic) are written by the next ask.
        let mut buffered = 0;
        for _ in 0..ASKS_PER_CHECK {
            admin.post("/reopen_logs").await.context("ask Envoy to reopen (and so flush) its log files")?;
            buffered = admin.counter("filesystem.write_total_buffered").await?.context("Envoy has no filesystem.write_total_buffered gauge")?;
            if buffered == 0 {
                return Ok(Check::Met(()));
            }
        }
        Ok(Check::NotYet(format!("filesystem.write_total_buffered = {buffered}")))
    })
    .await?;
    let failed_after = admin.counter("filesystem.reopen_failed").await?.unwrap_or(0);
    if failed_after > failed_before {
        bail!("Envoy could not reopen its log file after POST /reopen_logs (filesystem.reopen_failed {failed_before} -> {failed_after}); run with --audit-flush timer");
    }
    Ok(FLUSHED_ON_REQUEST.to_string())
}
