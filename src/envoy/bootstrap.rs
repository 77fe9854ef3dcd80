//! The bootstrap, shaped like Envoy Gateway v1.7.2's (`internal/xds/bootstrap/bootstrap.yaml.tpl`).
//!
//! Kept from Envoy Gateway: admin on 127.0.0.1 with its access log to /dev/null; the stats tags;
//! the stats matcher from the EnvoyProxy; the runtime layer; the overload manager's connection
//! limit; the static `metrics` listener whose only route sends `GET /stats/prometheus` to the
//! admin server (cluster `prometheus_stats`). Changed for one machine: the ports are free loopback
//! ports (Envoy Gateway: admin 19000, metrics 0.0.0.0:19001), and listeners and clusters come from
//! files watched for changes (Envoy Gateway: ADS from its xDS server), so routes and filters change
//! without a restart. Left out: the xDS and topology clusters, which need Envoy Gateway itself.

use super::xds::static_cluster;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;

/// The file names of the watched listener and cluster resources, inside the xDS directory.
pub const LDS_FILE: &str = "lds.json";
/// See [`LDS_FILE`].
pub const CDS_FILE: &str = "cds.json";

/// What the bootstrap is made of.
#[derive(Debug, Clone)]
pub struct BootstrapParams<'a> {
    /// Admin listener (the harness connects to this address).
    pub admin: SocketAddr,
    /// The address the admin and `metrics` listeners bind (127.0.0.1; every address in a container,
    /// whose ports are published on the host's loopback).
    pub listen: std::net::IpAddr,
    /// The `metrics` listener serving `/stats/prometheus`, when the EnvoyProxy keeps Prometheus enabled.
    pub metrics: Option<SocketAddr>,
    /// `stats_config.stats_matcher`, if any.
    pub stats_matcher: Option<&'a Value>,
    /// The directory holding [`LDS_FILE`] and [`CDS_FILE`], watched for renames.
    pub xds_dir: &'a Path,
    /// Static clusters the caller needs (e.g. the stand-in filter's `waf_e2e_reference_waf`).
    pub extra_clusters: &'a [(String, SocketAddr)],
}

/// The bootstrap document (JSON; Envoy reads it with `-c`).
pub fn bootstrap(p: &BootstrapParams) -> Value {
    let mut stats_config = json!({
        "use_all_default_tags": true,
        "stats_tags": [
            {"regex": r"\.zone(\.(([^\.]+)\.))", "tag_name": "from_zone"},
            {"regex": r"\.zone\.[^\.]+\.(([^\.]+)\.)", "tag_name": "to_zone"},
            {"regex": r"^cluster(\..+\.(.+))\.total_match_count$", "tag_name": "socket_match_name"},
            {"regex": r"circuit_breakers\.((.+?)\.).+", "tag_name": "priority"},
        ],
    });
    if let Some(m) = p.stats_matcher {
        stats_config["stats_matcher"] = m.clone();
    }
    let watched = |file: &str| {
        json!({
            "path_config_source": {"path": p.xds_dir.join(file).display().to_string(), "watched_directory": {"path": p.xds_dir.display().to_string()}},
            "resource_api_version": "V3",
        })
    };
    let mut listeners = Vec::new();
    let mut clusters = Vec::new();
    if let Some(metrics) = p.metrics {
        listeners.push(metrics_listener(SocketAddr::new(p.listen, metrics.port())));
        // The metrics listener reaches admin inside Envoy's own network namespace.
        let mut stats = static_cluster("prometheus_stats", SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), p.admin.port()));
        stats["connect_timeout"] = json!("0.250s");
        stats["lb_policy"] = json!("ROUND_ROBIN");
        for k in ["per_connection_buffer_limit_bytes", "circuit_breakers", "ignore_health_on_host_removal"] {
            stats.as_object_mut().map(|o| o.remove(k));
        }
        clusters.push(stats);
    }
    clusters.extend(p.extra_clusters.iter().map(|(name, addr)| static_cluster(name, *addr)));
    // A bootstrap's clusters are typed by their place; only xDS resources carry `@type`.
    for c in &mut clusters {
        c.as_object_mut().map(|o| o.remove("@type"));
    }
    json!({
        "admin": {
            "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": "/dev/null"}}],
            "address": {"socket_address": {"address": p.listen.to_string(), "port_value": p.admin.port()}},
        },
        "stats_config": stats_config,
        "layered_runtime": {"layers": [{"name": "global_config", "static_layer": {
            "envoy.restart_features.use_eds_cache_for_ads": true,
            "re2.max_program_size.error_level": 4294967295u64,
            "re2.max_program_size.warn_level": 1000,
        }}]},
        "dynamic_resources": {"lds_config": watched(LDS_FILE), "cds_config": watched(CDS_FILE)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "overload_manager": {
            "refresh_interval": "0.25s",
            "resource_monitors": [{"name": "envoy.resource_monitors.global_downstream_max_connections", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": 50000}}],
        },
    })
}

fn metrics_listener(addr: SocketAddr) -> Value {
    json!({
        "name": format!("envoy-gateway-proxy-stats-{}-{}", addr.ip(), addr.port()),
        "address": {"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port(), "protocol": "TCP"}},
        "bypass_overload_manager": true,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "eg-stats-http",
                "normalize_path": true,
                "route_config": {"name": "local_route", "virtual_hosts": [{
                    "name": "prometheus_stats",
                    "domains": ["*"],
                    "routes": [{
                        "match": {"path": "/stats/prometheus", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
                        "route": {"cluster": "prometheus_stats"},
                    }],
                }]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            },
        }]}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_route_forwards_only_get_stats_prometheus_to_admin() {
        let dir = Path::new("/run/xds");
        let b = bootstrap(&BootstrapParams {
            admin: "127.0.0.1:1000".parse().unwrap(), metrics: Some("127.0.0.1:1001".parse().unwrap()), listen: [127, 0, 0, 1].into(), stats_matcher: None,
            xds_dir: dir, extra_clusters: &[("waf_e2e_reference_waf".into(), "127.0.0.1:1002".parse().unwrap())],
        });
        let route = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0];
        assert_eq!(route["match"]["path"], "/stats/prometheus");
        assert_eq!(route["route"]["cluster"], "prometheus_stats");
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        assert_eq!(clusters[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"], 1000);
        assert_eq!(clusters[1]["name"], "waf_e2e_reference_waf");
        assert_eq!(b["dynamic_resources"]["lds_config"]["path_config_source"]["path"], "/run/xds/lds.json");
        assert!(b["stats_config"].get("stats_matcher").is_none());
    }

    #[test]
    fn in_a_container_the_listeners_bind_every_address_and_stats_still_reach_admin_on_loopback() {
        let b = bootstrap(&BootstrapParams {
            admin: "127.0.0.1:1000".parse().unwrap(), metrics: Some("127.0.0.1:1001".parse().unwrap()), listen: [0, 0, 0, 0].into(),
            stats_matcher: None, xds_dir: Path::new("/x"), extra_clusters: &[],
        });
        assert_eq!(b["admin"]["address"]["socket_address"]["address"], "0.0.0.0");
        assert_eq!(b["static_resources"]["listeners"][0]["address"]["socket_address"]["address"], "0.0.0.0");
        let stats = &b["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
        assert_eq!((stats["address"].as_str(), stats["port_value"].as_u64()), (Some("127.0.0.1"), Some(1000)));
    }

    #[test]
    fn without_prometheus_there_is_no_metrics_listener() {
        let b = bootstrap(&BootstrapParams {
            admin: "127.0.0.1:1000".parse().unwrap(), metrics: None, listen: [127, 0, 0, 1].into(), stats_matcher: None, xds_dir: Path::new("/x"), extra_clusters: &[],
        });
        assert_eq!(b["static_resources"]["listeners"], json!([]));
    }
}
