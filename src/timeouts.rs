//! Every deadline the harness waits on, in one place.

use std::time::Duration;

/// Deadlines for every named wait; one struct so a slow machine changes one place.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Prometheus answers `/-/ready`.
    pub prometheus_ready: Duration,
    /// The reference proxy and echo backend accept connections.
    pub proxy_ready: Duration,
    /// Envoy answers `/ready` LIVE, its gateway listener is bound and its `metrics` listener answers.
    pub envoy_ready: Duration,
    /// Envoy applied a new listener/cluster file (wasm modules loaded, no listener warming).
    pub envoy_config_applied: Duration,
    /// The proxy scrape target reports `up == 1`.
    pub target_up: Duration,
    /// One scrape newer than a given instant is stored.
    pub next_scrape: Duration,
    /// One HTTP request of the traffic.
    pub request: Duration,
    /// Every expected audit record is in the audit log (Envoy writes its log file every 10 s).
    pub audit_records: Duration,
    /// The audit log has been flushed after the last request (so absent records are really absent).
    pub audit_flushed: Duration,
    /// After a scenario saw an infrastructure error, how long the stack's health check may take to name its cause.
    pub health_settle: Duration,
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
    /// A record reaches Envoy's `--log-path` file (Envoy flushes it every 10 s by default, design 1.2).
    pub envoy_log_flushed: Duration,
    /// One run of the endpoints stack's `--audit-command`.
    pub audit_command: Duration,
    /// On a cluster, how long a healthy listing of the proxy pods stands for the health check
    /// (polled about every 100 ms by each running scenario; the API server is asked at most this often).
    pub proxy_health_reuse: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            prometheus_ready: s(20),
            proxy_ready: s(10),
            envoy_ready: s(20),
            // Loading a large wasm module (a Coraza build is tens of MB) into V8 takes seconds.
            envoy_config_applied: s(30),
            target_up: s(30),
            next_scrape: s(15),
            request: s(10),
            audit_records: s(25),
            audit_flushed: s(25),
            health_settle: s(2),
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
            envoy_log_flushed: s(15),
            audit_command: s(30),
            proxy_health_reuse: Duration::from_secs(1),
        }
    }
}
