//! Every deadline the harness waits on, in one place.

use std::time::Duration;

/// Deadlines for every named wait; one struct so a slow machine changes one place.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Prometheus answers `/-/ready`.
    pub prometheus_ready: Duration,
    /// The reference proxy and echo backend accept connections.
    pub proxy_ready: Duration,
    /// The proxy scrape target reports `up == 1`.
    pub target_up: Duration,
    /// One scrape newer than a given instant is stored.
    pub next_scrape: Duration,
    /// One HTTP request of the traffic.
    pub request: Duration,
    /// A policy's audit records are all written.
    pub audit_settled: Duration,
    /// The whole of one scenario, traffic and assertions included.
    pub scenario: Duration,
    /// `kind create cluster`.
    pub cluster_create: Duration,
    /// A CustomResourceDefinition is Established.
    pub crd_established: Duration,
    /// A Deployment is Available.
    pub deployment_available: Duration,
    /// Calico's TigeraStatus reports Available.
    pub calico_ready: Duration,
    /// A GatewayClass is Accepted.
    pub gateway_class_accepted: Duration,
    /// A Gateway is Programmed.
    pub gateway_programmed: Duration,
    /// An HTTPRoute is Accepted by its parent.
    pub route_accepted: Duration,
    /// A port-forward accepts a connection.
    pub port_forward: Duration,
    /// A Prometheus custom resource's pods are up on a cluster (image pulls included).
    pub prometheus_rollout: Duration,
    /// Pods selected by a label (e.g. a Gateway's proxy pods) are Ready.
    pub pods_ready: Duration,
    /// One release manifest download.
    pub download: Duration,
    /// A prerequisite probe (`docker info`, `kind version`, a HEAD request) in doctor/preflight.
    pub tool_probe: Duration,
    /// `kind delete cluster`.
    pub cluster_delete: Duration,
    /// A deleted Namespace (a scenario's) is gone.
    pub namespace_deleted: Duration,
    /// An ephemeral audit-reader container added to a proxy pod is running (image pull included).
    pub audit_reader_running: Duration,
    /// One run of the endpoints stack's `--audit-command`.
    pub audit_command: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            prometheus_ready: s(20),
            proxy_ready: s(10),
            target_up: s(30),
            next_scrape: s(15),
            request: s(10),
            audit_settled: s(10),
            scenario: s(120),
            cluster_create: s(300),
            crd_established: s(60),
            deployment_available: s(300),
            calico_ready: s(300),
            gateway_class_accepted: s(120),
            gateway_programmed: s(180),
            route_accepted: s(60),
            port_forward: s(30),
            prometheus_rollout: s(300),
            pods_ready: s(300),
            download: s(120),
            tool_probe: s(5),
            cluster_delete: s(120),
            namespace_deleted: s(120),
            audit_reader_running: s(120),
            audit_command: s(30),
        }
    }
}
