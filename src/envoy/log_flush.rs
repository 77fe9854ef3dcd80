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
use std::future::Future;
use std::time::{Duration, Instant};

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

/// Flushes shared by concurrent scenarios: one flush serves every caller who asked before it began.
///
/// A flush that began after a caller asked ran its whole wait (no request in flight, nothing
/// buffered) after that caller's traffic ended, so it wrote every line that traffic logged: the
/// caller takes its result instead of waiting for a quiet listener once more. Measured with 50
/// scenarios, each flushing on its own: up to 1.9 s per audit wait, and Envoy's main thread (which
/// also applies route updates) answering eight `POST /reopen_logs` per check per scenario.
#[derive(Debug, Default)]
pub struct SharedFlush {
    /// When the last successful flush began, and what it reported; held while a flush runs.
    last: tokio::sync::Mutex<Option<(Instant, String)>>,
}

impl SharedFlush {
    /// [`flush_now`] for a caller asking now, unless a flush that begins after this call serves it.
    pub async fn flush(&self, admin: &Admin, deadline: Duration) -> Result<String> {
        self.after(Instant::now(), || flush_now(admin, deadline)).await
    }

    /// Runs `flush` for a caller who asked at `asked`, or returns the report of a flush that began since.
    async fn after<F, Fut>(&self, asked: Instant, flush: F) -> Result<String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String>>,
    {
        let mut last = self.last.lock().await;
        if let Some((began, how)) = last.as_ref() {
            if *began >= asked {
                tracing::debug!("audit flush shared: it began {:?} after this caller asked", *began - asked);
                return Ok(how.clone());
            }
        }
        let began = Instant::now();
        let how = flush().await?;
        tracing::debug!("audit flush took {:?}, {:?} after this caller asked", began.elapsed(), began - asked);
        *last = Some((began, how.clone()));
        Ok(how)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn callers_waiting_while_a_flush_runs_share_the_next_one() {
        let shared = SharedFlush::default();
        let flushes = AtomicUsize::new(0);
        let flush = || async {
            let n = flushes.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(format!("flush {n}"))
        };
        // All ask at once: the first flush began after all of them asked, so it serves them all.
        let asked = Instant::now();
        let reports = futures::future::join_all((0..5).map(|_| shared.after(asked, flush))).await;
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
        assert!(reports.iter().all(|r| r.as_deref().ok() == Some("flush 1")), "{reports:?}");
    }

    #[tokio::test]
    async fn a_flush_that_began_before_the_caller_asked_does_not_serve_it() {
        let shared = SharedFlush::default();
        let flushes = AtomicUsize::new(0);
        let flush = || async { Ok(format!("flush {}", flushes.fetch_add(1, Ordering::SeqCst) + 1)) };
        shared.after(Instant::now(), flush).await.unwrap();
        // Asked after the first flush began (its traffic may have logged after that flush's wait).
        let again = shared.after(Instant::now(), flush).await.unwrap();
        assert_eq!(again, "flush 2");
        assert_eq!(flushes.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_flush_serves_no_one_and_the_next_caller_flushes_again() {
        let shared = SharedFlush::default();
        let failed = shared.after(Instant::now(), || async { anyhow::bail!("Envoy could not reopen its log file") }).await;
        assert!(failed.unwrap_err().to_string().contains("could not reopen"));
        let asked = Instant::now();
        let ok = shared.after(asked, || async { Ok("flushed".to_string()) }).await.unwrap();
        assert_eq!(ok, "flushed");
    }
}
