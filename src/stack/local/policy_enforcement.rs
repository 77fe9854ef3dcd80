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

/// A `host:port` where nothing listens, held closed while it lives.
pub struct RefusedTarget {
    /// `host:port` for Prometheus' scrape config.
    pub address: String,
    // Bound but never listening: connections are refused, and no other process (another test's
    // Envoy, say) can be handed the port while Prometheus scrapes it.
    _reserved: tokio::net::TcpSocket,
}

/// A port on the scrape target's host that refuses connections, so that Prometheus' scrape fails
/// like a packet a policy drops.
pub fn refused_target(scrape_target: &str) -> Result<RefusedTarget> {
    let host = scrape_target.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
    let bound = |ip: std::net::IpAddr| -> std::io::Result<tokio::net::TcpSocket> {
        let socket = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.bind((ip, 0).into())?;
        Ok(socket)
    };
    let own = host.trim_matches(['[', ']']).parse().ok().and_then(|ip| bound(ip).ok());
    // In a container network the host may not be ours to bind: a port free on loopback is as closed there.
    let socket = match own {
        Some(socket) => socket,
        None => bound(std::net::Ipv4Addr::LOCALHOST.into()).context("reserve a closed port for the denied scrape target")?,
    };
    let port = socket.local_addr()?.port();
    Ok(RefusedTarget { address: format!("{host}:{port}"), _reserved: socket })
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

    #[tokio::test]
    async fn the_denied_target_refuses_connections_and_no_one_else_can_bind_it_meanwhile() {
        let target = refused_target("127.0.0.1:19001").unwrap();
        let address = &target.address;
        assert!(address.starts_with("127.0.0.1:") && address != "127.0.0.1:19001", "{address}");
        let err = std::net::TcpStream::connect(address).expect_err("nothing may listen there");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
        assert!(std::net::TcpListener::bind(address).is_err(), "{address} was free to take while reserved");
    }

    #[tokio::test]
    async fn a_host_that_is_not_ours_keeps_its_address_with_a_closed_port() {
        let address = refused_target("10.255.255.1:19001").unwrap().address;
        assert!(address.starts_with("10.255.255.1:") && !address.ends_with(":19001"), "{address}");
    }
}
