//! Reading a scenario's audit records: a bounded poll, because Envoy writes its `--log-path` file
//! on a timer (every 10 s by default), not when a record is logged.
//!
//! Where the stack can make the proxies write their log at once (`Stack::flush_audit_log`, e.g. the
//! local stack's `--audit-flush admin`), it is asked after the traffic and one read is final.
//! Otherwise first every expected record must appear (deadline `Timeouts::audit_records`); then, so that a
//! record that must NOT exist has had every chance to show up, the log must have been flushed
//! after the last request (the stack's flush count rises, or where it cannot tell, Envoy's flush
//! interval has passed; deadline `Timeouts::audit_flushed`).

use crate::audit::{AuditCursor, AuditLines};
use crate::stack::Stack;
use crate::timeouts::Timeouts;
use crate::wait::{self, Check};
use anyhow::{Context, Result};
use std::time::{Duration, Instant};

/// Envoy's default `--file-flush-interval-msec`: the longest a logged line stays in its buffer.
pub const ENVOY_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// The audit lines after the traffic, and how long they took to appear.
#[derive(Debug, Default)]
pub struct AuditRead {
    /// Every complete line after the cursor, read once the log was flushed after the last request.
    pub lines: AuditLines,
    /// From the last response to the moment every expected record had been read (`None`: none expected, or not all arrived).
    pub latency: Option<Duration>,
    /// Expected correlation ids still without a line when the deadline passed (the assertions then name them).
    pub missing: Vec<String>,
    /// How the "nothing else will appear" point was established, for the report.
    pub flushed_by: String,
}

/// Polls the stack's audit source after `cursor` until every id in `expected` has a line, then until
/// the log was flushed after `traffic_done` (flush count above `flush_mark`, or the interval passed).
pub async fn read(stack: &dyn Stack, cursor: &AuditCursor, expected: &[&str], traffic_done: Instant, flush_mark: Option<u64>, timeouts: &Timeouts) -> Result<AuditRead> {
    let mut out = AuditRead::default();
    // Asked after the traffic: once the stack says everything logged is written, one read is final.
    if let Some(how) = stack.flush_audit_log().await.context("flush the audit log after the traffic")? {
        out.lines = stack.audit_lines_since(cursor).await.context("read the audit log after it was flushed")?;
        out.missing = missing_ids(&out.lines, expected).into_iter().map(str::to_string).collect();
        if !expected.is_empty() && out.missing.is_empty() {
            out.latency = Some(traffic_done.elapsed());
        }
        out.flushed_by = how;
        return Ok(out);
    }
    if !expected.is_empty() {
        // Once the log was flushed after the traffic, a record still missing will not come: stop there.
        let seen = wait::until("every expected audit record to reach the audit log", timeouts.audit_records, || async {
            let lines = stack.audit_lines_since(cursor).await.context("read the audit log")?;
            let missing = missing_ids(&lines, expected);
            if missing.is_empty() {
                return Ok(Check::Met(true));
            }
            let flushed = match flush_mark {
                Some(mark) => stack.audit_flushes().await?.is_some_and(|now| now > mark),
                None => false,
            };
            Ok(if flushed { Check::Met(false) } else { Check::NotYet(format!("no record yet for {}", missing.join(", "))) })
        })
        .await;
        if matches!(seen, Ok(true)) {
            out.latency = Some(traffic_done.elapsed());
        }
    }
    out.flushed_by = flushed_after(stack, traffic_done, flush_mark, timeouts).await?;
    out.lines = stack.audit_lines_since(cursor).await.context("read the audit log after it was flushed")?;
    out.missing = missing_ids(&out.lines, expected).into_iter().map(str::to_string).collect();
    Ok(out)
}

/// Waits until the audit log has been flushed after the traffic; says how that was established.
async fn flushed_after(stack: &dyn Stack, traffic_done: Instant, flush_mark: Option<u64>, timeouts: &Timeouts) -> Result<String> {
    if let Some(mark) = flush_mark {
        let count = wait::until("Envoy to flush its log file after the last request", timeouts.audit_flushed, || async {
            Ok(match stack.audit_flushes().await? {
                Some(now) if now > mark => Check::Met(now),
                now => Check::NotYet(format!("flush count {now:?}, {mark} at the last request")),
            })
        })
        .await?;
        return Ok(format!("Envoy flushed its log file (flushed_by_timer {mark} -> {count})"));
    }
    wait::until("Envoy's log flush interval to pass since the last request", timeouts.audit_flushed, || async {
        let waited = traffic_done.elapsed();
        Ok(if waited >= ENVOY_FLUSH_INTERVAL { Check::Met(()) } else { Check::NotYet(format!("{:.1}s since the last request", waited.as_secs_f64())) })
    })
    .await?;
    Ok(format!("Envoy's {}s flush interval passed since the last request", ENVOY_FLUSH_INTERVAL.as_secs()))
}

/// The ids in `expected` that no line mentions yet (a cheap pre-check; records are parsed afterwards).
fn missing_ids<'a>(lines: &AuditLines, expected: &[&'a str]) -> Vec<&'a str> {
    expected.iter().copied().filter(|id| !lines.lines.iter().any(|(_, l)| l.contains(id) && crate::audit::parse_line(l).is_some())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_counts_as_seen_only_on_an_audit_line() {
        let lines = AuditLines { lines: vec![
            ("f".into(), "[info][wasm] wasm log p vm: AuditLog:{\"x-waf-e2e-id\":\"run-a-0\"}".into()),
            ("f".into(), "[warn][http] unrelated line mentioning run-b-0".into()),
        ] };
        assert_eq!(missing_ids(&lines, &["run-a-0", "run-b-0"]), vec!["run-b-0"]);
    }
}
