//! `waf-e2e scrape-config`: prints the Prometheus config a PodMonitor becomes, pointed at one target.

use super::translate::{render_scrape_config, PodTarget};
use crate::error::HarnessError;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `waf-e2e scrape-config`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScrapeConfigArgs {
    /// The PodMonitor YAML (a file holding one PodMonitor, other documents ignored).
    #[arg(long, value_name = "FILE")]
    pub podmonitor: PathBuf,
    /// Address Prometheus scrapes, `HOST:PORT` (the proxy's stats port).
    #[arg(long, value_name = "HOST:PORT")]
    pub target: String,
    /// Namespace of the pretended proxy pod.
    #[arg(long, value_name = "NS", default_value = super::translate::DEFAULT_PROXY_NAMESPACE)]
    pub pod_namespace: String,
    /// Name of the pretended proxy pod (default: derived from the gateway, like Envoy Gateway's).
    #[arg(long, value_name = "NAME")]
    pub pod_name: Option<String>,
    /// Gateway that owns the proxy (`gateway.envoyproxy.io/owning-gateway-name`).
    #[arg(long, value_name = "NAME", default_value = "eg")]
    pub gateway: String,
    /// Namespace of that Gateway (`gateway.envoyproxy.io/owning-gateway-namespace`).
    #[arg(long, value_name = "NS", default_value = "default")]
    pub gateway_namespace: String,
    /// An extra or overriding pod label, `KEY=VALUE`; repeatable.
    #[arg(long = "pod-label", value_name = "K=V", value_parser = parse_label)]
    pub pod_labels: Vec<(String, String)>,
    /// Global scrape interval (`1s`, `500ms`, `15s`, `1m`).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub scrape_interval: Duration,
}

/// Runs `scrape-config`: the complete Prometheus config as YAML.
/// A bad PodMonitor is an `InvalidInput`, a bad argument a `HarnessError::Usage` (both exit 2).
pub fn scrape_config_command(args: ScrapeConfigArgs) -> anyhow::Result<String> {
    if !valid_address(&args.target) {
        return Err(HarnessError::Usage(format!("--target `{}` is not HOST:PORT", args.target)).into());
    }
    let pm = super::load_podmonitor_file(&args.podmonitor)?;
    let mut target = PodTarget::envoy_gateway_proxy(args.target.clone(), &args.gateway, &args.gateway_namespace);
    target.namespace = args.pod_namespace.clone();
    if let Some(name) = args.pod_name {
        target.name = name;
    }
    for (k, v) in args.pod_labels {
        target.labels.insert(k, v);
    }
    render_scrape_config(&pm, &target, args.scrape_interval)
}

fn valid_address(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("`{s}` has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Parses `500ms`, `1s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| format!("`{s}` has no unit (ms, s, m, h)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("`{s}` does not start with a number"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    if d.is_zero() {
        return Err("a scrape interval must be positive".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ScrapeConfigArgs,
    }

    #[test]
    fn pod_labels_and_durations_parse_from_the_command_line() {
        let cli = Cli::try_parse_from([
            "x", "--podmonitor", "pm.yaml", "--target", "127.0.0.1:19001", "--pod-label", "a.b/c=d", "--pod-label",
            "e=", "--scrape-interval", "500ms",
        ])
        .unwrap();
        assert_eq!(cli.args.pod_labels, vec![("a.b/c".into(), "d".into()), ("e".into(), String::new())]);
        assert_eq!(cli.args.scrape_interval, Duration::from_millis(500));
        assert_eq!(cli.args.pod_namespace, "envoy-gateway-system");
        assert!(Cli::try_parse_from(["x", "--podmonitor", "p", "--target", "h:1", "--pod-label", "novalue"]).is_err());
    }

    #[test]
    fn the_command_prints_the_operators_job_pointed_at_the_target_with_overridden_labels() {
        let pm = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/rendered/podmonitor.yaml");
        let args = Cli::try_parse_from([
            "x", "--podmonitor", pm, "--target", "127.0.0.1:19001", "--pod-namespace", "gw", "--pod-name", "envoy-1",
            "--gateway", "web", "--pod-label", "gateway.envoyproxy.io/owning-gateway-namespace=shop",
        ])
        .unwrap()
        .args;
        let yaml = scrape_config_command(args).unwrap();
        for needle in [
            "job_name: podMonitor/tigera-prometheus/tigera-waf-gateway-proxies/0",
            "- 127.0.0.1:19001",
            "__meta_kubernetes_namespace: gw",
            "__meta_kubernetes_pod_name: envoy-1",
            "__meta_kubernetes_pod_label_gateway_envoyproxy_io_owning_gateway_name: web",
            "__meta_kubernetes_pod_label_gateway_envoyproxy_io_owning_gateway_namespace: shop",
            "scrape_interval: 15s",
        ] {
            assert!(yaml.contains(needle), "`{needle}` missing from:\n{yaml}");
        }
    }

    #[test]
    fn a_target_without_a_port_is_a_usage_error() {
        let args = Cli::try_parse_from(["x", "--podmonitor", "p", "--target", "localhost"]).unwrap().args;
        let err = scrape_config_command(args).unwrap_err();
        assert_eq!(HarnessError::classify(err).exit_code(), 2);
    }
}
