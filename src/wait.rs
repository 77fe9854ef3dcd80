//! Bounded polling of named conditions: the only way the harness waits for state.

use anyhow::{bail, Result};
use std::future::Future;
use std::time::{Duration, Instant};

/// How often conditions are re-checked; short, because every check is cheap and a read-only query.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What a condition check saw: met with a value, or not yet, with what was observed instead.
pub enum Check<T> {
    /// The condition holds.
    Met(T),
    /// Not yet; the text says what was observed, for the timeout message.
    NotYet(String),
}

/// Polls `check` until it is met or `timeout` passes; the error names the condition and the last observation.
pub async fn until<T, F, Fut>(condition: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Check<T>>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(Check::Met(v)) => return Ok(v),
            Ok(Check::NotYet(seen)) => seen,
            Err(e) => format!("error: {e:#}"),
        };
        if started.elapsed() >= timeout {
            bail!("timed out after {:.1}s waiting for {condition}; last observed: {last}", timeout.as_secs_f64());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_condition_met_on_the_third_check_returns_its_value() {
        let mut n = 0;
        let v = until("third check", Duration::from_secs(5), || {
            n += 1;
            let seen = n;
            async move { Ok(if seen >= 3 { Check::Met(seen) } else { Check::NotYet(format!("check {seen}")) }) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn a_timeout_names_the_condition_and_the_last_observation() {
        let err = until::<(), _, _>("gateway shop/web Programmed", Duration::from_millis(250), || async {
            Ok(Check::NotYet("Programmed=False (AddressNotAssigned)".into()))
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("gateway shop/web Programmed"), "{err}");
        assert!(err.contains("AddressNotAssigned"), "{err}");
    }
}
