//! The local stack enforcing Calico's offline verdict on the scrape path: when the policies deny
//! Prometheus the proxy's metrics port, Prometheus scrapes an address that refuses connections,
//! and the start fails the way a cluster's would: the target is down, with the policy named.

use crate::assert::prom::PromClient;
use crate::calico::flows::FlowVerdict;
use crate::error::BrokenResource;
use crate::stack::Endpoints;
use crate::wait::{self, Check};
use anyhow::{Context, Result};
use std::time::Duration;

/// `host:port` on the scrape target's host where nothing listens (a port the system handed out and
/// took back), so that Prometheus' scrape is refused like a packet a policy drops.
pub fn refused_target(scrape_target: &str) -> Result<String> {
    let host = scrape_target.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
    // In a container network the host may not be ours to bind: any free local port is as closed there.
    let listener = std::net::TcpListener::bind((host.trim_matches(['[', ']']), 0))
        .or_else(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .context("find a closed port for the denied scrape target")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    Ok(format!("{host}:{port}"))
}

/// Waits until Prometheus reports the pool's target down, then the failure naming the policy.
pub async fn target_down(endpoints: &Endpoints, denied: &FlowVerdict, timeout: Duration) -> Result<BrokenResource> {
    let prom = PromClient::new(&endpoints.prometheus_url)?;
    let pool = &endpoints.scrape_pool;
    let target = wait::until(&format!("Prometheus to report the target of {pool} down (the policies deny its scrape)"), timeout, || async {
        let targets = prom.targets(pool).await?;
        Ok(match targets.into_iter().find(|t| t.health == "down") {
            Some(t) => Check::Met(t),
            None => Check::NotYet(format!("no target of {pool} is down yet")),
        })
    })
    .await?;
    let why = denied.problem.clone().unwrap_or_else(|| denied.with_render.clone());
    Ok(BrokenResource {
        resource: denied.blame.clone().unwrap_or_else(|| "GlobalNetworkPolicy (rendered)".into()),
        problem: format!("the scrape target of {pool} is down (lastError: {}), as in a cluster where {why}", target.last_error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_denied_target_refuses_connections_on_the_scrape_targets_host() {
        let target = refused_target("127.0.0.1:19001").unwrap();
        assert!(target.starts_with("127.0.0.1:") && target != "127.0.0.1:19001", "{target}");
        let err = std::net::TcpStream::connect(&target).expect_err("nothing may listen there");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    }

    #[test]
    fn a_host_that_is_not_ours_keeps_its_address_with_a_closed_port() {
        let target = refused_target("10.255.255.1:19001").unwrap();
        assert!(target.starts_with("10.255.255.1:") && !target.ends_with(":19001"), "{target}");
    }
}
