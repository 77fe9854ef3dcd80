//! PodMonitor -> Prometheus scrape config, the way the Prometheus Operator does it
//! (prometheus-operator `pkg/prometheus/promcfg.go`, `generatePodMonitorConfig`), with one
//! deliberate difference: instead of `kubernetes_sd_configs` (no API server locally) the job gets a
//! `static_configs` target whose labels are the `__meta_kubernetes_*` labels pod discovery would
//! give an Envoy Gateway proxy pod. Every relabeling then runs exactly as in the cluster.

use super::model::{PodMetricsEndpoint, PodMonitor, RelabelConfig, SelectorOperator};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The pod that pod discovery would report, as a static target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    /// `host:port` Prometheus scrapes (becomes `__address__`).
    pub address: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's labels, unsanitised keys (`gateway.envoyproxy.io/owning-gateway-name`).
    pub labels: BTreeMap<String, String>,
    /// The container exposing the port.
    pub container: String,
    /// The container port's name.
    pub port_name: String,
    /// The pod phase.
    pub phase: String,
}

/// Namespace Envoy Gateway runs its proxies in by default.
pub const DEFAULT_PROXY_NAMESPACE: &str = "envoy-gateway-system";

impl PodTarget {
    /// An Envoy Gateway proxy pod for Gateway `gateway_namespace/gateway`, with the labels Envoy
    /// Gateway puts on it (DESIGN 4), container `envoy`, port `metrics`, phase Running, in
    /// `envoy-gateway-system`, named like the Deployment's pods.
    pub fn envoy_gateway_proxy(address: impl Into<String>, gateway: &str, gateway_namespace: &str) -> PodTarget {
        let labels = BTreeMap::from([
            ("app.kubernetes.io/component".to_string(), "proxy".to_string()),
            ("app.kubernetes.io/managed-by".to_string(), "envoy-gateway".to_string()),
            ("app.kubernetes.io/name".to_string(), "envoy".to_string()),
            ("gateway.envoyproxy.io/owning-gateway-name".to_string(), gateway.to_string()),
            ("gateway.envoyproxy.io/owning-gateway-namespace".to_string(), gateway_namespace.to_string()),
        ]);
        PodTarget {
            address: address.into(),
            namespace: DEFAULT_PROXY_NAMESPACE.to_string(),
            name: format!("envoy-{gateway_namespace}-{gateway}-5f7c9d8b6-x2x9q"),
            labels,
            container: "envoy".to_string(),
            port_name: "metrics".to_string(),
            phase: "Running".to_string(),
        }
    }

    /// The `__meta_kubernetes_*` labels Prometheus' pod discovery gives this pod's port.
    pub fn meta_labels(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("__meta_kubernetes_namespace".into(), self.namespace.clone());
        m.insert("__meta_kubernetes_pod_name".into(), self.name.clone());
        m.insert("__meta_kubernetes_pod_phase".into(), self.phase.clone());
        m.insert("__meta_kubernetes_pod_ready".into(), "true".into());
        m.insert("__meta_kubernetes_pod_container_name".into(), self.container.clone());
        m.insert("__meta_kubernetes_pod_container_port_name".into(), self.port_name.clone());
        m.insert("__meta_kubernetes_pod_container_port_protocol".into(), "TCP".into());
        if let Some((host, port)) = self.address.rsplit_once(':') {
            m.insert("__meta_kubernetes_pod_container_port_number".into(), port.to_string());
            m.insert("__meta_kubernetes_pod_ip".into(), host.trim_matches(['[', ']']).to_string());
        }
        for (k, v) in &self.labels {
            let k = sanitize_label_name(k);
            m.insert(format!("__meta_kubernetes_pod_label_{k}"), v.clone());
            m.insert(format!("__meta_kubernetes_pod_labelpresent_{k}"), "true".into());
        }
        m
    }
}

/// A complete Prometheus configuration: globals and scrape jobs. Only what the translation writes.
#[derive(Debug, Clone, Serialize)]
pub struct PrometheusConfig {
    /// `global:`.
    pub global: GlobalConfig,
    /// `scrape_configs:`.
    pub scrape_configs: Vec<ScrapeConfig>,
}

/// `global:` section.
#[derive(Debug, Clone, Serialize)]
pub struct GlobalConfig {
    /// Default scrape interval.
    pub scrape_interval: String,
    /// Default scrape timeout (never above the interval).
    pub scrape_timeout: String,
    /// Rule evaluation interval.
    pub evaluation_interval: String,
}

/// One scrape job.
#[derive(Debug, Clone, Serialize)]
pub struct ScrapeConfig {
    /// `podMonitor/<ns>/<name>/<index>`.
    pub job_name: String,
    /// From the endpoint (default false).
    pub honor_labels: bool,
    /// The endpoint's own interval, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrape_interval: Option<String>,
    /// The endpoint's own timeout, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrape_timeout: Option<String>,
    /// The endpoint's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_path: Option<String>,
    /// The endpoint's scheme.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The pod, as a static target with its discovery labels.
    pub static_configs: Vec<StaticConfig>,
    /// Operator relabelings, then the user's.
    pub relabel_configs: Vec<PromRelabel>,
    /// The user's metric relabelings, verbatim.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metric_relabel_configs: Vec<PromRelabel>,
}

/// A static target group.
#[derive(Debug, Clone, Serialize)]
pub struct StaticConfig {
    /// `host:port` addresses.
    pub targets: Vec<String>,
    /// Labels attached before relabeling (here: the pod discovery meta labels).
    pub labels: BTreeMap<String, String>,
}

/// A relabel config in Prometheus' snake_case spelling; absent fields take Prometheus' defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PromRelabel {
    /// `source_labels`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_labels: Vec<String>,
    /// `separator`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// `target_label`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_label: Option<String>,
    /// `regex`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `modulus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modulus: Option<u64>,
    /// `replacement` (kept when empty: an empty replacement deletes the target label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// `action`, lower case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

impl PromRelabel {
    fn keep(source_labels: &[&str], regex: impl Into<String>) -> Self {
        PromRelabel {
            action: Some("keep".into()),
            source_labels: source_labels.iter().map(|s| s.to_string()).collect(),
            regex: Some(regex.into()),
            ..Default::default()
        }
    }
    fn drop(source_labels: &[&str], regex: impl Into<String>) -> Self {
        PromRelabel { action: Some("drop".into()), ..Self::keep(source_labels, regex) }
    }
    fn copy(source: &str, target: &str) -> Self {
        PromRelabel { source_labels: vec![source.into()], target_label: Some(target.into()), ..Default::default() }
    }
    fn set(target: &str, replacement: impl Into<String>) -> Self {
        PromRelabel { target_label: Some(target.into()), replacement: Some(replacement.into()), ..Default::default() }
    }
}

impl From<&RelabelConfig> for PromRelabel {
    /// CRD camelCase -> Prometheus snake_case, like the operator's `generateRelabelConfig`:
    /// fields copied as written, the action lower-cased, label names NOT rewritten.
    fn from(rc: &RelabelConfig) -> Self {
        PromRelabel {
            source_labels: rc.source_labels.clone(),
            separator: rc.separator.clone(),
            target_label: rc.target_label.clone().filter(|t| !t.is_empty()),
            regex: rc.regex.as_ref().map(|r| r.value.clone()).filter(|r| !r.is_empty()),
            modulus: rc.modulus.filter(|m| *m != 0),
            replacement: rc.replacement.clone(),
            action: rc.action.as_ref().map(|a| a.value.to_ascii_lowercase()).filter(|a| !a.is_empty()),
        }
    }
}

/// `[^a-zA-Z0-9_]` -> `_`, the operator's `sanitizeLabelName` (and Kubernetes discovery's).
pub fn sanitize_label_name(name: &str) -> String {
    // The same rule as Envoy's stat-name sanitisation.
    crate::contract::sanitize(name)
}

/// Prometheus duration text for `d` (`1s`, `250ms`, `2m`).
pub fn prometheus_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "1ms".into()
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The relabel_configs the operator writes for endpoint `ep` of `pm`, user relabelings included.
pub fn relabel_configs(pm: &PodMonitor, ep: &PodMetricsEndpoint) -> Vec<PromRelabel> {
    let pod_label = |k: &str| format!("__meta_kubernetes_pod_label_{}", sanitize_label_name(k));
    let pod_label_present = |k: &str| format!("__meta_kubernetes_pod_labelpresent_{}", sanitize_label_name(k));

    // 1. The job name the target arrives with, kept as a meta label.
    let mut out = vec![PromRelabel::copy("job", "__tmp_prometheus_job_name")];
    // 2. Finished pods are never scraped.
    if ep.filter_running.unwrap_or(true) {
        out.push(PromRelabel::drop(&["__meta_kubernetes_pod_phase"], "(Failed|Succeeded)"));
    }
    // 3. The selector, exact labels in key order, then expressions in order.
    for (k, v) in &pm.spec.selector.match_labels {
        out.push(PromRelabel::keep(&[&pod_label(k), &pod_label_present(k)], format!("({v});true")));
    }
    for exp in &pm.spec.selector.match_expressions {
        let both = [pod_label(&exp.key), pod_label_present(&exp.key)];
        let both: Vec<&str> = both.iter().map(String::as_str).collect();
        let present = pod_label_present(&exp.key);
        out.push(match exp.operator {
            SelectorOperator::In => PromRelabel::keep(&both, format!("({});true", exp.values.join("|"))),
            SelectorOperator::NotIn => PromRelabel::drop(&both, format!("({});true", exp.values.join("|"))),
            SelectorOperator::Exists => PromRelabel::keep(&[&present], "true"),
            SelectorOperator::DoesNotExist => PromRelabel::drop(&[&present], "true"),
        });
    }
    // 4. The endpoint's port, by container port name.
    if let Some(port) = &ep.port {
        out.push(PromRelabel::keep(&["__meta_kubernetes_pod_container_port_name"], port.clone()));
    }
    // 5. Target labels from discovery.
    out.push(PromRelabel::copy("__meta_kubernetes_namespace", "namespace"));
    out.push(PromRelabel::copy("__meta_kubernetes_pod_container_name", "container"));
    out.push(PromRelabel::copy("__meta_kubernetes_pod_name", "pod"));
    for l in &pm.spec.pod_target_labels {
        out.push(PromRelabel {
            source_labels: vec![pod_label(l)],
            target_label: Some(sanitize_label_name(l)),
            regex: Some("(.+)".into()),
            replacement: Some("${1}".into()),
            ..Default::default()
        });
    }
    // 6. job = <ns>/<name> (or the jobLabel's value), endpoint = port name.
    out.push(PromRelabel::set("job", format!("{}/{}", pm.namespace(), pm.metadata.name)));
    if let Some(job_label) = pm.spec.job_label.as_deref().filter(|j| !j.is_empty()) {
        out.push(PromRelabel {
            source_labels: vec![pod_label(job_label)],
            target_label: Some("job".into()),
            regex: Some("(.+)".into()),
            replacement: Some("${1}".into()),
            ..Default::default()
        });
    }
    if let Some(port) = &ep.port {
        out.push(PromRelabel::set("endpoint", port.clone()));
    }
    // 7. The user's relabelings.
    out.extend(ep.relabelings.iter().map(PromRelabel::from));
    // 8. Sharding, as the operator appends it; with one shard ($(SHARD) = 0) it keeps every target.
    out.push(PromRelabel {
        source_labels: vec!["__address__".into()],
        target_label: Some("__tmp_hash".into()),
        modulus: Some(1),
        action: Some("hashmod".into()),
        ..Default::default()
    });
    out.push(PromRelabel::keep(&["__tmp_hash"], "0"));
    out
}

/// The scrape jobs `pm` becomes (one per endpoint), each scraping `target`.
pub fn scrape_configs(pm: &PodMonitor, target: &PodTarget) -> Vec<ScrapeConfig> {
    pm.spec
        .pod_metrics_endpoints
        .value
        .iter()
        .enumerate()
        .map(|(i, ep)| ScrapeConfig {
            job_name: pm.job_name(i),
            honor_labels: ep.honor_labels,
            scrape_interval: ep.interval.clone(),
            scrape_timeout: ep.scrape_timeout.clone(),
            metrics_path: ep.path.clone(),
            scheme: ep.scheme.clone(),
            static_configs: vec![StaticConfig { targets: vec![target.address.clone()], labels: target.meta_labels() }],
            relabel_configs: relabel_configs(pm, ep),
            metric_relabel_configs: ep.metric_relabelings.iter().map(PromRelabel::from).collect(),
        })
        .collect()
}

/// The full Prometheus configuration for `pm` scraping `target`, with `scrape_interval` as the
/// global interval (an endpoint's own `interval` still wins, as in the cluster).
pub fn scrape_config(pm: &PodMonitor, target: &PodTarget, scrape_interval: Duration) -> PrometheusConfig {
    let timeout = scrape_interval.min(Duration::from_secs(10));
    PrometheusConfig {
        global: GlobalConfig {
            scrape_interval: prometheus_duration(scrape_interval),
            scrape_timeout: prometheus_duration(timeout),
            evaluation_interval: prometheus_duration(scrape_interval),
        },
        scrape_configs: scrape_configs(pm, target),
    }
}

impl PrometheusConfig {
    /// The configuration as YAML, ready for `--config.file`.
    pub fn to_yaml(&self) -> anyhow::Result<String> {
        Ok(serde_saphyr::to_string(self)?)
    }
}

/// [`scrape_config`] as YAML text (what `waf-e2e scrape-config` prints).
pub fn render_scrape_config(pm: &PodMonitor, target: &PodTarget, scrape_interval: Duration) -> anyhow::Result<String> {
    scrape_config(pm, target, scrape_interval).to_yaml()
}
