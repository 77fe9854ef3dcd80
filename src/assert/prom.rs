//! A small Prometheus HTTP API client: instant queries, server time, scrape targets.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One series of an instant vector: its labels (with `__name__`) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// All labels, including `__name__`.
    pub labels: BTreeMap<String, String>,
    /// The sample value.
    pub value: f64,
}

impl Sample {
    /// The metric name.
    pub fn name(&self) -> &str {
        self.labels.get("__name__").map(String::as_str).unwrap_or("")
    }
}

/// An active scrape target as `/api/v1/targets` reports it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The scrape pool (job name in the config, e.g. `podMonitor/ns/name/0`).
    pub scrape_pool: String,
    /// Target labels after relabeling (job, instance, pod, ...).
    pub labels: BTreeMap<String, String>,
    /// `up`, `down` or `unknown`.
    pub health: String,
    /// The last scrape's error, empty when it succeeded.
    #[serde(default)]
    pub last_error: String,
    /// The URL Prometheus scrapes.
    #[serde(default)]
    pub scrape_url: String,
}

/// Client for one Prometheus server.
#[derive(Debug, Clone)]
pub struct PromClient {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct ApiResponse<T> {
    status: String,
    data: Option<T>,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "camelCase")]
enum QueryData {
    Vector(Vec<VectorItem>),
    Scalar((f64, String)),
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct VectorItem {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetsData {
    #[serde(default)]
    active_targets: Vec<Target>,
    #[serde(default)]
    dropped_targets: Vec<DroppedTarget>,
}

/// A discovered target that relabeling dropped, as `/api/v1/targets?state=dropped` reports it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DroppedTarget {
    /// The labels discovery gave it (`__meta_kubernetes_pod_label_*`, port names, `job` = the scrape pool).
    pub discovered_labels: BTreeMap<String, String>,
}

impl PromClient {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:9090`).
    pub fn new(base: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("build Prometheus HTTP client")?;
        Ok(PromClient { base: base.trim_end_matches('/').to_string(), http })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str, params: &[(&str, String)]) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let resp = self.http.get(&url).query(params).send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = resp.text().await.with_context(|| format!("read body of GET {url}"))?;
        decode(&body).with_context(|| format!("GET {url} {params:?} answered {status}"))
    }

    /// Evaluates `query` at `at` (unix seconds; `None` = now) and returns the instant vector.
    pub async fn instant(&self, query: &str, at: Option<f64>) -> Result<Vec<Sample>> {
        let mut params = vec![("query", query.to_string())];
        if let Some(t) = at {
            params.push(("time", format!("{t:.3}")));
        }
        let data = self.get::<QueryData>("/api/v1/query", &params).await?;
        vector_of(data).with_context(|| format!("query `{query}`"))
    }

    /// The server's clock (unix seconds), so waits never depend on the local clock agreeing with it.
    pub async fn server_time(&self) -> Result<f64> {
        match self.get::<QueryData>("/api/v1/query", &[("query", "time()".to_string())]).await? {
            QueryData::Scalar((_, v)) => parse_value(&v),
            _ => bail!("query `time()` did not return a scalar"),
        }
    }

    /// The active targets of `scrape_pool`.
    pub async fn targets(&self, scrape_pool: &str) -> Result<Vec<Target>> {
        let data: TargetsData = self.get("/api/v1/targets", &[("state", "active".to_string())]).await?;
        Ok(data.active_targets.into_iter().filter(|t| t.scrape_pool == scrape_pool).collect())
    }

    /// The discovered targets of `scrape_pool` that its relabeling dropped.
    pub async fn dropped_targets(&self, scrape_pool: &str) -> Result<Vec<DroppedTarget>> {
        let data: TargetsData = self.get("/api/v1/targets", &[("state", "dropped".to_string())]).await?;
        // Prometheus 2.42 names no pool for dropped targets: the job name is in `job`, or, after the
        // operator's first relabeling step, in `__tmp_prometheus_job_name`.
        let of_pool = |t: &DroppedTarget| ["job", "__tmp_prometheus_job_name"].iter().any(|k| t.discovered_labels.get(*k).map(String::as_str) == Some(scrape_pool));
        Ok(data.dropped_targets.into_iter().filter(of_pool).collect())
    }

    /// Whether `/-/ready` answers 200.
    pub async fn ready(&self) -> Result<bool> {
        let url = format!("{}/-/ready", self.base);
        Ok(self.http.get(&url).send().await.map(|r| r.status().is_success()).unwrap_or(false))
    }
}

/// Decodes a Prometheus HTTP API body: the `data` of a `success`, otherwise an error carrying Prometheus' own message.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &str) -> Result<T> {
    let parsed: ApiResponse<T> = serde_json::from_str(body)
        .with_context(|| format!("the body is not Prometheus API JSON: {}", truncate(body, 300)))?;
    if parsed.status != "success" {
        bail!("Prometheus answered status {:?}: {}", parsed.status, parsed.error);
    }
    parsed.data.context("Prometheus answered success without data")
}

/// The samples of an instant-query response body (`/api/v1/query`).
pub fn decode_instant(body: &str) -> Result<Vec<Sample>> {
    vector_of(decode(body)?)
}

/// The active targets of a `/api/v1/targets` response body.
pub fn decode_targets(body: &str) -> Result<Vec<Target>> {
    Ok(decode::<TargetsData>(body)?.active_targets)
}

fn vector_of(data: QueryData) -> Result<Vec<Sample>> {
    match data {
        QueryData::Vector(items) => items.into_iter().map(|i| Ok(Sample { labels: i.metric, value: parse_value(&i.value.1)? })).collect(),
        _ => bail!("the result is not an instant vector"),
    }
}

fn parse_value(v: &str) -> Result<f64> {
    v.parse::<f64>().with_context(|| format!("sample value `{v}` is not a number"))
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A Prometheus timestamp as UTC time with milliseconds, and the raw value for queries.
pub fn readable_time(at: f64) -> String {
    let millis = (at * 1000.0).round() as i64;
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(t) => format!("{} (t={at:.3})", t.format("%Y-%m-%d %H:%M:%S%.3f UTC")),
        None => format!("t={at:.3}"),
    }
}

/// Quotes a label value for a PromQL selector.
pub fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
