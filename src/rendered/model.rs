//! The PodMonitor (monitoring.coreos.com/v1) as far as the translation needs it.
//!
//! Leniency: fields the translation does not use (`metadata.labels`, `tlsConfig`, `scrapeTimeout`
//! limits, ...) are ignored here and kept in the raw document ([`super::RenderedDocument`]), so the
//! kind stack applies the object exactly as written. Relabel configs are strict: an unknown field in
//! a relabeling (a typo such as `targetlabel`) would silently change what Prometheus does, so it is
//! an error that names file, line and field.

use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// A PodMonitor: metadata and the parts of the spec that shape the scrape job.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitor {
    /// Always `monitoring.coreos.com/v1`.
    pub api_version: String,
    /// Always `PodMonitor`.
    pub kind: String,
    /// Name and namespace (they make the job name).
    pub metadata: ObjectMeta,
    /// What to scrape and how to relabel it.
    pub spec: PodMonitorSpec,
}

/// The metadata the translation reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ObjectMeta {
    /// Object name.
    pub name: String,
    /// Object namespace; the operator needs one (a missing one is reported by the loader).
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `spec` of a PodMonitor. Fields the translation does not reproduce (`sampleLimit`, `params`, ...)
/// are refused with their location rather than dropped: the local stack's Prometheus would scrape
/// differently from the operator's without a word.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodMonitorSpec {
    /// Which pods are scraped.
    pub selector: LabelSelector,
    /// Which namespaces are searched (`any: true` or `matchNames`); without an API server it does not
    /// filter the static target, it is kept for reports.
    #[serde(default)]
    pub namespace_selector: NamespaceSelector,
    /// One scrape job per entry.
    pub pod_metrics_endpoints: Spanned<Vec<PodMetricsEndpoint>>,
    /// Pod label whose value becomes `job` (instead of `<ns>/<name>`).
    #[serde(default)]
    pub job_label: Option<String>,
    /// Pod labels copied onto the target.
    #[serde(default)]
    pub pod_target_labels: Vec<String>,
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Exact matches.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based matches (In, NotIn, Exists, DoesNotExist).
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based selector term.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// The operator.
    pub operator: SelectorOperator,
    /// Values for In / NotIn.
    #[serde(default)]
    pub values: Vec<String>,
}

/// The four label-selector operators Kubernetes defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SelectorOperator {
    /// Label present with one of the values.
    In,
    /// Label absent or with none of the values.
    NotIn,
    /// Label present.
    Exists,
    /// Label absent.
    DoesNotExist,
}

/// `spec.namespaceSelector`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSelector {
    /// Every namespace.
    #[serde(default)]
    pub any: bool,
    /// These namespaces (empty and `any: false`: the PodMonitor's own namespace).
    #[serde(default)]
    pub match_names: Vec<String>,
}

/// One entry of `spec.podMetricsEndpoints`; unknown or untranslated fields (`params`,
/// `honorTimestamps`, `tlsConfig`, ...) are refused with their location.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodMetricsEndpoint {
    /// Container port name to scrape.
    #[serde(default)]
    pub port: Option<String>,
    /// HTTP path (Prometheus' default `/metrics` when absent).
    #[serde(default)]
    pub path: Option<String>,
    /// Scrape interval; wins over the global one, like the operator's output.
    #[serde(default)]
    pub interval: Option<String>,
    /// Scrape timeout.
    #[serde(default)]
    pub scrape_timeout: Option<String>,
    /// `http` or `https`.
    #[serde(default)]
    pub scheme: Option<String>,
    /// Keep scraped labels on collision with target labels.
    #[serde(default)]
    pub honor_labels: bool,
    /// Drop pods in phase Failed/Succeeded (default true).
    #[serde(default)]
    pub filter_running: Option<bool>,
    /// Target relabelings, run after the operator's own.
    #[serde(default)]
    pub relabelings: Vec<RelabelConfig>,
    /// Metric relabelings, passed verbatim.
    #[serde(default)]
    pub metric_relabelings: Vec<RelabelConfig>,
}

/// A relabel config in the CRD's camelCase spelling.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator`.
    #[serde(default)]
    pub source_labels: Vec<String>,
    /// Join string (Prometheus default `;`).
    #[serde(default)]
    pub separator: Option<String>,
    /// Label written by replace / hashmod / lowercase / uppercase.
    #[serde(default)]
    pub target_label: Option<String>,
    /// RE2 regex, anchored by Prometheus (default `(.*)`).
    #[serde(default)]
    pub regex: Option<Spanned<String>>,
    /// Modulus for hashmod.
    #[serde(default)]
    pub modulus: Option<u64>,
    /// Replacement (default `$1`); an empty string is meaningful (deletes the target label).
    #[serde(default)]
    pub replacement: Option<String>,
    /// Action, case-insensitive in the CRD (default `replace`).
    #[serde(default)]
    pub action: Option<Spanned<String>>,
}

/// The relabel actions Prometheus 2.42 knows (lower case, as the operator writes them).
pub const RELABEL_ACTIONS: &[&str] = &[
    "replace", "keep", "drop", "keepequal", "dropequal", "hashmod", "labelmap", "labeldrop", "labelkeep",
    "lowercase", "uppercase",
];

impl PodMonitor {
    /// `metadata.namespace`, or `default` as kubectl would apply it.
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// The scrape job (scrape pool) name the operator gives endpoint `index`.
    pub fn job_name(&self, index: usize) -> String {
        format!("podMonitor/{}/{}/{index}", self.namespace(), self.metadata.name)
    }
}
