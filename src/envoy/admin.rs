//! Reading Envoy's admin interface: `/ready`, `/stats?filter=`, and the reasons in `/config_dump`.

use anyhow::{bail, Context, Result};
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
        let url = format!("{}{path}", self.base);
        let resp = self.client.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = resp.text().await.with_context(|| format!("read GET {url}"))?;
        if !status.is_success() {
            bail!("GET {url}: HTTP {status}: {}", body.trim());
        }
        Ok(body)
    }

    /// POST `path` on the admin listener (e.g. `/reopen_logs`); the body, or an error naming the status.
    pub async fn post(&self, path: &str) -> Result<String> {
        let url = format!("{}{path}", self.base);
        let resp = self.client.post(&url).send().await.with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let body = resp.text().await.with_context(|| format!("read POST {url}"))?;
        if !status.is_success() {
            bail!("POST {url}: HTTP {status}: {}", body.trim());
        }
        Ok(body)
    }

    /// The body of `/ready` (`LIVE` once the server has initialised).
    pub async fn ready(&self) -> Result<String> {
        Ok(self.get("/ready").await?.trim().to_string())
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

    /// Why the newest listener update was refused (`error_state.details` in `/config_dump`), if any.
    pub async fn newest_listener_error(&self) -> Result<Option<String>> {
        let dump: Value = serde_json::from_str(&self.get("/config_dump?resource=dynamic_listeners").await?).context("parse /config_dump")?;
        let newest = dump["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let e = c.get("error_state")?;
                Some((e["last_update_attempt"].as_str().unwrap_or("").to_string(), e["details"].as_str()?.to_string()))
            })
            .max();
        Ok(newest.map(|(_, details)| details))
    }
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
    fn a_filter_is_escaped_for_the_query_string() {
        assert_eq!(url_escape("^a\\.b(c|d)$"), "%5Ea%5C.b%28c%7Cd%29%24");
    }
}
