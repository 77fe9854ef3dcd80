//! The gateway's listener, routes and clusters, shaped like Envoy Gateway v1.7.2's xDS for an HTTP
//! listener (`internal/xds/translator/testdata/out/xds-ir/{http-route,wasm}.*.yaml`).
//!
//! Differences, none of which changes how a request is handled: Envoy Gateway delivers routes by RDS
//! and endpoints by EDS over its xDS server; here the route configuration is inline in the HCM and
//! each backend is a STATIC cluster, all read from files. The listener binds 127.0.0.1 on a free
//! port instead of 0.0.0.0:10080, and keeps Envoy Gateway's stat prefix `http-10080` (the container
//! port of Gateway port 80) so the stat names match a cluster's.

use super::extension_policy::WasmFilter;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Envoy Gateway's HCM stat prefix for Gateway port 80 (container port 10080).
pub const STAT_PREFIX: &str = "http-10080";

/// One HTTPRoute rule routed to one backend, with the wasm filters enabled on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Envoy Gateway's name of the rule: `httproute/<ns>/<name>/rule/0` (also the cluster's name).
    pub name: String,
    /// The hostname the route matches (its virtual host's domain).
    pub host: String,
    /// The backend the rule forwards to.
    pub backend: SocketAddr,
    /// The wasm filters enabled on this route only.
    pub wasm: Vec<WasmFilter>,
}

impl RouteSpec {
    /// Envoy Gateway's route name: `<rule>/match/0/<host with dots as underscores>`.
    pub fn route_name(&self) -> String {
        format!("{}/match/0/{}", self.name, host_suffix(&self.host))
    }
}

fn host_suffix(host: &str) -> String {
    host.replace('.', "_")
}

/// The listener's client settings, as a ClientTrafficPolicy attached to the Gateway sets them
/// (Envoy Gateway's defaults when `Default`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientTraffic {
    /// `spec.http1.http10`: accept HTTP/1.0 requests (Envoy answers them 426 otherwise).
    pub accept_http10: bool,
}

/// The gateway listener `name` on `addr`: an HCM like Envoy Gateway's with every route's wasm
/// filters in the chain, disabled, and enabled per route through `typed_per_filter_config`.
pub fn listener(name: &str, addr: SocketAddr, routes: &[RouteSpec], client: ClientTraffic) -> Result<Value> {
    let mut filters: BTreeMap<String, &WasmFilter> = BTreeMap::new();
    let mut seen_routes = BTreeMap::new();
    for r in routes {
        if seen_routes.insert(r.name.as_str(), r).is_some() {
            bail!("two routes are named {}", r.name);
        }
        for f in &r.wasm {
            match filters.get(&f.filter_name()) {
                Some(existing) if *existing != f => bail!("two different wasm filters are named {}", f.filter_name()),
                _ => {
                    filters.insert(f.filter_name(), f);
                }
            }
        }
    }
    let mut http_filters: Vec<Value> = filters.values().map(|f| f.http_filter()).collect();
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "suppress_envoy_headers": true},
    }));
    let mut by_host: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for r in routes {
        let per_filter: serde_json::Map<String, Value> = r
            .wasm
            .iter()
            .map(|f| (f.filter_name(), json!({"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}})))
            .collect();
        let mut route = json!({
            "name": r.route_name(),
            "match": {"prefix": "/"},
            "route": {"cluster": r.name, "upgrade_configs": [{"upgrade_type": "websocket"}]},
        });
        if !per_filter.is_empty() {
            route["typed_per_filter_config"] = Value::Object(per_filter);
        }
        by_host.entry(r.host.as_str()).or_default().push(route);
    }
    let virtual_hosts: Vec<Value> = by_host
        .into_iter()
        .map(|(host, routes)| json!({"name": format!("{name}/{}", host_suffix(host)), "domains": [host], "routes": routes}))
        .collect();
    let mut listener = json!({
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": name,
        "address": {"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}},
        "per_connection_buffer_limit_bytes": 32768,
        "max_connections_to_accept_per_socket_event": 1,
        "default_filter_chain": {
            "name": name,
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": STAT_PREFIX,
                    "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
                    "http2_protocol_options": {"initial_connection_window_size": 1048576, "initial_stream_window_size": 65536, "max_concurrent_streams": 100},
                    "http_filters": http_filters,
                    "merge_slashes": true,
                    "normalize_path": true,
                    "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
                    "server_header_transformation": "PASS_THROUGH",
                    "use_remote_address": true,
                    "route_config": {"name": name, "ignore_port_in_host_matching": true, "virtual_hosts": virtual_hosts},
                },
            }],
        },
    });
    if client.accept_http10 {
        listener["default_filter_chain"]["filters"][0]["typed_config"]["http_protocol_options"] = json!({"accept_http_10": true});
    }
    Ok(listener)
}

/// One STATIC cluster per route, named like Envoy Gateway's (`httproute/<ns>/<name>/rule/0`).
pub fn clusters(routes: &[RouteSpec]) -> Vec<Value> {
    routes.iter().map(|r| static_cluster(&r.name, r.backend)).collect()
}

/// A plain HTTP/1.1 cluster with one endpoint, with Envoy Gateway's connection settings.
pub fn static_cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": "STATIC",
        "connect_timeout": "10s",
        "lb_policy": "LEAST_REQUEST",
        "per_connection_buffer_limit_bytes": 32768,
        "circuit_breakers": {"thresholds": [{"max_retries": 1024}]},
        "ignore_health_on_host_removal": true,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}}}}]}],
        },
    })
}

/// A discovery response file (what LDS/CDS read from disk): `version_info` and the resources.
pub fn discovery_file(version: u64, resources: Vec<Value>) -> Value {
    json!({"version_info": version.to_string(), "resources": resources})
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn filter(policy: &str) -> WasmFilter {
        WasmFilter {
            name: format!("envoyextensionpolicy/shop/{policy}/wasm/0"), plugin_name: policy.into(), root_id: String::new(),
            fail_open: false, configuration: "{}".into(), code: PathBuf::from("/m.wasm"),
        }
    }

    fn route(name: &str, host: &str, wasm: Vec<WasmFilter>) -> RouteSpec {
        RouteSpec { name: format!("httproute/shop/{name}/rule/0"), host: host.into(), backend: "127.0.0.1:9".parse().unwrap(), wasm }
    }

    #[test]
    fn each_filter_is_in_the_chain_disabled_and_enabled_only_on_its_route() {
        let routes = [route("a", "a.example", vec![filter("pa")]), route("b", "b.example", vec![])];
        let l = listener("waf-e2e/gw/http", "127.0.0.1:1".parse().unwrap(), &routes, ClientTraffic::default()).unwrap();
        let hcm = &l["default_filter_chain"]["filters"][0]["typed_config"];
        let chain: Vec<(&str, bool)> = hcm["http_filters"].as_array().unwrap().iter()
            .map(|f| (f["name"].as_str().unwrap(), f["disabled"].as_bool().unwrap_or(false))).collect();
        assert_eq!(chain, [("envoy.filters.http.wasm/envoyextensionpolicy/shop/pa/wasm/0", true), ("envoy.filters.http.router", false)]);
        let vhosts = hcm["route_config"]["virtual_hosts"].as_array().unwrap();
        assert_eq!(vhosts[0]["name"], "waf-e2e/gw/http/a_example");
        let a = &vhosts[0]["routes"][0];
        assert_eq!(a["name"], "httproute/shop/a/rule/0/match/0/a_example");
        assert_eq!(a["typed_per_filter_config"]["envoy.filters.http.wasm/envoyextensionpolicy/shop/pa/wasm/0"]["@type"],
            "type.googleapis.com/envoy.config.route.v3.FilterConfig");
        assert!(vhosts[1]["routes"][0].get("typed_per_filter_config").is_none(), "route b runs no filter");
    }

    #[test]
    fn http10_is_accepted_only_when_a_client_traffic_policy_says_so() {
        let hcm = |client| listener("l", "127.0.0.1:1".parse().unwrap(), &[], client).unwrap()["default_filter_chain"]["filters"][0]["typed_config"].clone();
        assert!(hcm(ClientTraffic::default()).get("http_protocol_options").is_none(), "Envoy Gateway's default: HTTP/1.0 is answered 426");
        assert_eq!(hcm(ClientTraffic { accept_http10: true })["http_protocol_options"]["accept_http_10"], true);
    }

    #[test]
    fn two_routes_with_one_name_are_refused() {
        let routes = [route("a", "a.example", vec![]), route("a", "b.example", vec![])];
        let err = listener("l", "127.0.0.1:1".parse().unwrap(), &routes, ClientTraffic::default()).unwrap_err().to_string();
        assert!(err.contains("httproute/shop/a/rule/0"), "{err}");
    }
}
