//! Reading Envoy's admin interface: `/ready`, `/stats?filter=`, and the reasons in `/config_dump`.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// A client for one Envoy's admin listener.
#[derive(Debug, Clone)]
pub struct Admin {
    base: String,
    client: reqwest::Client,
}

impl Admin {
    /// The admin server at `addr`; each request gives up after `request_timeout`.
    pub fn new(addr: SocketAddr, request_timeout: Duration) -> Result<Admin> {
        let client = reqwest::Client::builder().timeout(request_timeout).build().context("build the admin HTTP client")?;
        Ok(Admin { base: format!("http://{addr}"), client })
    }

    /// GET `path` on the admin listener; the body, or an error naming the status.
    pub async fn get(&self, path: &str) -> Result<String> {
        self.request(reqwest::Method::GET, path).await
    }

    /// POST `path` on the admin listener (e.g. `/reopen_logs`); the body, or an error naming the status.
    pub async fn post(&self, path: &str) -> Result<String> {
        self.request(reqwest::Method::POST, path).await
    }

    async fn request(&self, method: reqwest::Method, path: &str) -> Result<String> {
        let url = format!("{}{path}", self.base);
        let resp = self.client.request(method.clone(), &url).send().await.with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let body = resp.text().await.with_context(|| format!("read {method} {url}"))?;
        if !status.is_success() {
            bail!("{method} {url}: HTTP {status}: {}", body.trim());
        }
        Ok(body)
    }

    /// The body of `/ready` (`LIVE` once the server has initialised).
    pub async fn ready(&self) -> Result<String> {
        Ok(self.get("/ready").await?.trim().to_string())
    }

    /// The release of the running Envoy, from `/server_info` (`"version": "<sha>/1.37.0/Clean/RELEASE/BoringSSL"`).
    pub async fn server_version(&self) -> Result<String> {
        let info: Value = serde_json::from_str(&self.get("/server_info").await?).context("parse /server_info")?;
        let version = info["version"].as_str().context("/server_info has no version")?;
        super::install::parse_version(&format!("version: {version}")).with_context(|| format!("/server_info's version `{version}` has no release number"))
    }

    /// Counters, gauges and text readouts whose names match the RE2 `filter`: name -> value as printed
    /// (text readouts without their quotes).
    pub async fn stats(&self, filter: &str) -> Result<BTreeMap<String, String>> {
        let query: String = url_escape(filter);
        Ok(parse_stats(&self.get(&format!("/stats?filter={query}")).await?))
    }

    /// The value of the counter or gauge `name`, absent when Envoy has no such stat.
    pub async fn counter(&self, name: &str) -> Result<Option<u64>> {
        let stats = self.stats(&format!("^{}$", regex::escape(name))).await?;
        match stats.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).with_context(|| format!("stat {name} is `{v}`, not a counter")),
        }
    }

    /// The dynamic listeners and clusters Envoy holds (admin `/config_dump`). Unlike the `lds`/`cds`
    /// stats, this cannot be hidden by the EnvoyProxy's stats matcher.
    pub async fn config_state(&self) -> Result<ConfigState> {
        let dump: Value = serde_json::from_str(&self.get("/config_dump").await?).context("parse /config_dump")?;
        Ok(ConfigState::from_dump(&dump))
    }
}

/// What `/config_dump` says about the dynamic listeners and clusters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigState {
    /// Listeners by name.
    pub listeners: BTreeMap<String, ListenerState>,
    /// Active dynamic clusters by name, with the time each was last added or updated.
    pub clusters: BTreeMap<String, Option<DateTime<Utc>>>,
    /// Dynamic clusters still warming.
    pub warming_clusters: Vec<String>,
}

/// One dynamic listener in `/config_dump`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerState {
    /// When its active configuration was last updated (absent: none active).
    pub active_updated: Option<DateTime<Utc>>,
    /// Whether a new configuration is warming.
    pub warming: bool,
    /// The last refused update: when, and Envoy's reason.
    pub error: Option<(Option<DateTime<Utc>>, String)>,
}

impl ConfigState {
    /// Reads the listener and cluster sections of a `/config_dump` document.
    pub fn from_dump(dump: &Value) -> ConfigState {
        let mut state = ConfigState::default();
        for config in dump["configs"].as_array().into_iter().flatten() {
            match config["@type"].as_str().unwrap_or_default().rsplit('.').next().unwrap_or_default() {
                "ListenersConfigDump" => {
                    for l in config["dynamic_listeners"].as_array().into_iter().flatten() {
                        let name = l["name"].as_str().unwrap_or_default().to_string();
                        let error = l.get("error_state").map(|e| (time(&e["last_update_attempt"]), e["details"].as_str().unwrap_or("").to_string()));
                        let listener = ListenerState { active_updated: time(&l["active_state"]["last_updated"]), warming: l.get("warming_state").is_some(), error };
                        state.listeners.insert(name, listener);
                    }
                }
                "ClustersConfigDump" => {
                    for c in config["dynamic_active_clusters"].as_array().into_iter().flatten() {
                        state.clusters.insert(c["cluster"]["name"].as_str().unwrap_or_default().to_string(), time(&c["last_updated"]));
                    }
                    for c in config["dynamic_warming_clusters"].as_array().into_iter().flatten() {
                        state.warming_clusters.push(c["cluster"]["name"].as_str().unwrap_or_default().to_string());
                    }
                }
                _ => {}
            }
        }
        state
    }
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
}

/// `/stats` text (`name: value` per line) as a map; text readouts lose their quotes.
pub fn parse_stats(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(name, value)| {
            let v = value.trim();
            let v = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v);
            (name.to_string(), v.to_string())
        })
        .collect()
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_text_becomes_names_and_values_with_readouts_unquoted() {
        let text = "cluster_manager.cds.version_text: \"3\"\nlistener_manager.lds.update_rejected: 1\nx.update_duration: No recorded values\n";
        let s = parse_stats(text);
        assert_eq!(s["cluster_manager.cds.version_text"], "3");
        assert_eq!(s["listener_manager.lds.update_rejected"], "1");
        assert_eq!(s["x.update_duration"], "No recorded values");
    }

    #[test]
    fn the_config_dump_gives_listener_and_cluster_states() {
        let dump = serde_json::json!({"configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "dynamic_listeners": [
                {"name": "gw", "active_state": {"last_updated": "2026-12-01T20:29:03.734Z"},
                 "error_state": {"last_update_attempt": "2026-12-01T20:29:04.278Z", "details": "route: unknown cluster 'x'"}},
                {"name": "new", "warming_state": {}}]},
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
             "dynamic_active_clusters": [{"cluster": {"name": "c1"}, "last_updated": "2026-12-01T20:29:03Z"}],
             "dynamic_warming_clusters": [{"cluster": {"name": "c2"}}]}]});
        let s = ConfigState::from_dump(&dump);
        let gw = &s.listeners["gw"];
        assert_eq!(gw.active_updated.unwrap().timestamp_millis() % 1000, 734);
        assert_eq!(gw.error.as_ref().unwrap().1, "route: unknown cluster 'x'");
        assert!(s.listeners["new"].warming && s.listeners["new"].active_updated.is_none());
        assert!(s.clusters["c1"].is_some());
        assert_eq!(s.warming_clusters, ["c2"]);
    }

    #[test]
    fn a_filter_is_escaped_for_the_query_string() {
        assert_eq!(url_escape("^a\\.b(c|d)$"), "%5Ea%5C.b%28c%7Cd%29%24");
    }
}
