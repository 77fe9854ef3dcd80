//! Sending a scenario's traffic through the gateway, each request tagged with a correlation id.

use crate::assert::audit::SentRequest;
use crate::contract::CORRELATION_HEADER;
use crate::scenario::Scenario;
use crate::stack::ScenarioEnv;
use anyhow::{Context, Result};
use std::time::Duration;

/// What the traffic produced: the requests as sent, and any status that differed from the expectation.
#[derive(Debug, Default)]
pub struct TrafficResult {
    /// Every request sent, in order.
    pub sent: Vec<SentRequest>,
    /// One message per response whose status was not the expected one.
    pub status_failures: Vec<String>,
}

/// Sends every request of `scenario` (each `repeat` times) to `gateway_url` with the route's Host header.
///
/// A transport error is an infrastructure error; a wrong status is a scenario failure.
pub async fn drive(gateway_url: &str, scenario: &Scenario, env: &ScenarioEnv, run_id: &str, timeout: Duration) -> Result<TrafficResult> {
    // A connection per request: Envoy drains connections when another scenario's install updates
    // its listener, and a reused connection would race that drain.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("build traffic HTTP client")?;
    let mut result = TrafficResult::default();
    for request in &scenario.traffic.value {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .with_context(|| format!("request `{}`: method `{}`", request.name.value, request.method))?;
        for repeat in 0..request.repeat.value {
            let correlation_id = format!("{run_id}-{}-{}-{repeat}", scenario.name(), request.name.value);
            let url = format!("{}{}", gateway_url.trim_end_matches('/'), request.path.value);
            let mut builder = client
                .request(method.clone(), &url)
                .header(reqwest::header::HOST, &env.host)
                .header(CORRELATION_HEADER, &correlation_id);
            for (k, v) in &request.headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            if let Some(body) = &request.body {
                builder = builder.body(body.clone());
            }
            let response = builder
                .send()
                .await
                .with_context(|| format!("send request `{}` #{} ({} {url}, Host {})", request.name.value, repeat + 1, request.method, env.host))?;
            let status = response.status().as_u16();
            // Read the body so the exchange is complete before the next request (and before the counters are read).
            response
                .bytes()
                .await
                .with_context(|| format!("read response to request `{}` #{}", request.name.value, repeat + 1))?;
            if status != request.expect_status.value {
                result.status_failures.push(format!(
                    "request `{}` #{} ({} {}): expected status {}, got {status}",
                    request.name.value, repeat + 1, request.method, request.path.value, request.expect_status.value
                ));
            }
            result.sent.push(SentRequest { name: request.name.value.clone(), repeat, correlation_id });
        }
    }
    Ok(result)
}
