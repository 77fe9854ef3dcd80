//! Calico's own validation of the projectcalico.org/v3 objects a run applies (GlobalNetworkPolicy,
//! NetworkPolicy, Tier), offline: the checks the Calico API server runs on every create after the
//! CRD schema has accepted the object (libcalico-go v3.31 `lib/validator/v3` and `lib/names`),
//! written from their documented behaviour and messages.
//!
//! Rules named `calico: ...` are Calico's (a cluster refuses the object). The one rule named
//! `waf-e2e: types` is the harness's: rules of a direction that `types` leaves out are accepted by
//! Calico and then never applied, which is a silently ignored field.

use super::selector::Selector;
use crate::schema::structural::Finding;
use regex::Regex;
use serde_json::Value;
use std::net::IpAddr;
use std::sync::LazyLock;

/// The API group the Calico API server serves (and validates).
pub const GROUP: &str = "projectcalico.org";
const LABEL: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const GLOBAL: &str = "global()";
const GLOBAL_ONLY_IN_RULE_NS: &str = "global() can only be used in an EntityRule namespaceSelector";
const PORTS_NEED_PROTOCOL: &str = "rules that specify ports must set protocol to TCP or UDP or SCTP";
static GNP_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(&format!("^({LABEL}\\.)?{LABEL}$")).expect("static regex"));
static NP_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("^(({LABEL})(\\.{LABEL})?|((?:knp|ossg)\\.default\\.({LABEL}(\\.{LABEL})*)))$")).expect("static regex"));
static TIER_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(&format!("^{LABEL}$")).expect("static regex"));
static PORT_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("static regex"));

/// The order Calico requires of the `default` tier.
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;

/// Whether Calico's API server validates this object (a projectcalico.org policy or tier).
pub fn is_calico_object(v: &Value) -> bool {
    let group = v["apiVersion"].as_str().and_then(|a| a.split_once('/')).map(|(g, _)| g);
    group == Some(GROUP) && matches!(v["kind"].as_str(), Some("GlobalNetworkPolicy" | "NetworkPolicy" | "Tier"))
}

/// Every way `v` breaks Calico's validation (empty for other objects).
pub fn check_object(v: &Value) -> Vec<Finding> {
    let mut out = Findings(Vec::new());
    if !is_calico_object(v) {
        return out.0;
    }
    match v["kind"].as_str() {
        Some("Tier") => tier(v, &mut out),
        Some(kind) => policy(v, kind == "GlobalNetworkPolicy", &mut out),
        None => {}
    }
    out.0
}

struct Findings(Vec<Finding>);

impl Findings {
    fn push(&mut self, field: impl Into<String>, rule: &str, message: impl Into<String>) {
        self.0.push(Finding { field: field.into(), rule: format!("calico: {rule}"), message: message.into() });
    }
}

fn tier(v: &Value, out: &mut Findings) {
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    if name.len() > 63 {
        out.push("metadata.name", "tier name", format!("name is too long by {} bytes", name.len() - 63));
    }
    if !TIER_NAME.is_match(name) {
        out.push("metadata.name", "tier name", format!("name must consist of lower case alphanumeric characters or '-' (regex: {LABEL})"));
    }
    let order = &v["spec"]["order"];
    number_or_absent(order, "spec.order", out);
    if name == "default" && order.as_f64() != Some(DEFAULT_TIER_ORDER) {
        out.push("spec.order", "order", format!("default tier order must be {DEFAULT_TIER_ORDER}"));
    }
    if let Some(a) = v["spec"].get("defaultAction") {
        if !matches!(a.as_str(), Some("Pass" | "Deny")) {
            out.push("spec.defaultAction", "action", format!("invalid tier defaultAction {a} (must be Pass or Deny)"));
        }
    }
}

fn number_or_absent(v: &Value, field: &str, out: &mut Findings) {
    if !v.is_null() && !v.as_f64().is_some_and(f64::is_finite) {
        out.push(field, "order", format!("order must be a finite number, not {v}"));
    }
}

fn policy(v: &Value, global: bool, out: &mut Findings) {
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    let spec = &v["spec"];
    if name.len() > 253 {
        out.push("metadata.name", "policy name", format!("name is too long by {} bytes", name.len() - 253));
    }
    let pattern: &Regex = if global { &GNP_NAME } else { &NP_NAME };
    if !pattern.is_match(name) {
        out.push("metadata.name", "policy name", format!("name must consist of lower case alphanumeric characters or '-' (regex: {LABEL})"));
    }
    let tier = spec["tier"].as_str().filter(|t| !t.is_empty()).unwrap_or("default");
    let formatted = ["knp.default.", "kcnp.kube-admin.", "kcnp.kube-baseline.", "ossg."].iter().any(|p| name.starts_with(p));
    let prefixed = name.starts_with(&format!("{tier}.")) || (tier == "default" && !name.contains('.'));
    if !name.is_empty() && !formatted && !prefixed {
        out.push("metadata.name", "tier prefix", format!("Incorrectly formatted policy name {name}: a policy in tier `{tier}` must be named `{tier}.<name>`"));
    }
    number_or_absent(&spec["order"], "spec.order", out);
    let kind = if global { "GlobalNetworkPolicySpec" } else { "NetworkPolicySpec" };
    for key in ["selector", "namespaceSelector", "serviceAccountSelector"] {
        if let Some(text) = spec[key].as_str() {
            selector(text, &format!("spec.{key}"), out);
            if text.contains(GLOBAL) {
                out.push(format!("spec.{key}"), "global()", format!("{kind}.{}: {GLOBAL_ONLY_IN_RULE_NS}", upper_first(key)));
            }
        }
    }
    types(spec, out);
    if global {
        let flag = |k: &str| spec[k].as_bool().unwrap_or(false);
        if flag("doNotTrack") && flag("preDNAT") {
            out.push("spec.preDNAT", "preDNAT", "PreDNAT and DoNotTrack cannot both be true, for a given PolicySpec");
        }
        if flag("preDNAT") && spec["egress"].as_array().is_some_and(|e| !e.is_empty()) {
            out.push("spec.egress", "preDNAT", "PreDNAT PolicySpec cannot have any Egress rules");
        }
        if !flag("applyOnForward") && (flag("doNotTrack") || flag("preDNAT")) {
            out.push("spec.applyOnForward", "applyOnForward", "ApplyOnForward must be true if either PreDNAT or DoNotTrack is true, for a given PolicySpec");
        }
    }
    for direction in ["ingress", "egress"] {
        for (i, r) in spec[direction].as_array().into_iter().flatten().enumerate() {
            rule(r, &format!("spec.{direction}[{i}]"), direction == "egress", global, out);
        }
    }
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

fn selector(text: &str, field: &str, out: &mut Findings) {
    if let Err(e) = Selector::parse(text) {
        out.push(field, "selector", format!("invalid selector `{text}`: {e}"));
    }
}

fn types(spec: &Value, out: &mut Findings) {
    let Some(types) = spec["types"].as_array() else { return };
    let listed: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
    for (i, t) in listed.iter().enumerate() {
        if !matches!(*t, "Ingress" | "Egress") {
            out.push(format!("spec.types[{i}]"), "types", format!("invalid policy type `{t}` (must be Ingress or Egress)"));
        } else if listed[..i].contains(t) {
            out.push(format!("spec.types[{i}]"), "types", format!("'{t}' type specified more than once"));
        }
    }
    for (key, t) in [("ingress", "Ingress"), ("egress", "Egress")] {
        if spec[key].as_array().is_some_and(|r| !r.is_empty()) && !listed.contains(&t) {
            out.0.push(Finding {
                field: format!("spec.{key}"),
                rule: "waf-e2e: types".into(),
                message: format!("{key} rules are given but `types` does not list {t}: Calico accepts them and never applies them"),
            });
        }
    }
}

/// Protocol numbers of Calico's protocol names.
pub fn protocol_number(p: &Value) -> Option<u8> {
    match p {
        Value::Number(n) => n.as_u64().filter(|n| (1..=255).contains(n)).and_then(|n| u8::try_from(n).ok()),
        Value::String(s) => match s.as_str() {
            "TCP" => Some(6),
            "UDP" => Some(17),
            "ICMP" => Some(1),
            "ICMPv6" => Some(58),
            "SCTP" => Some(132),
            "UDPLite" => Some(136),
            s => s.parse::<u8>().ok().filter(|n| *n > 0),
        },
        _ => None,
    }
}

fn rule(r: &Value, at: &str, egress: bool, global: bool, out: &mut Findings) {
    let action = r["action"].as_str().unwrap_or("");
    if !matches!(action, "Allow" | "Deny" | "Log" | "Pass") {
        out.push(format!("{at}.action"), "action", format!("invalid action `{action}` (must be Allow, Deny, Log or Pass)"));
    }
    for key in ["protocol", "notProtocol"] {
        if let Some(p) = r.get(key).filter(|p| protocol_number(p).is_none()) {
            let what = if p.is_number() { "protocol number invalid" } else { "protocol name invalid" };
            out.push(format!("{at}.{key}"), "protocol", format!("{what}: {p}"));
        }
    }
    let protocol = r.get("protocol").and_then(protocol_number);
    let has_ports = matches!(protocol, Some(6 | 17 | 132 | 136));
    for side in ["source", "destination"] {
        for key in ["ports", "notPorts"] {
            let Some(ports) = r[side][key].as_array() else { continue };
            if !ports.is_empty() && !has_ports {
                out.push(format!("{at}.{side}.{key}"), "ports", PORTS_NEED_PROTOCOL);
            }
            for (i, p) in ports.iter().enumerate() {
                if let Err(e) = super::model::PortSpec::parse(p) {
                    out.push(format!("{at}.{side}.{key}[{i}]"), "ports", e);
                }
            }
        }
    }
    if r.get("http").is_some() && r.get("protocol").is_some() && protocol != Some(6) {
        out.push(format!("{at}.protocol"), "http", "rules that specify HTTP fields must set protocol to TCP or empty");
    }
    if r.get("icmp").is_some() && !matches!(protocol, Some(1 | 58)) {
        out.push(format!("{at}.icmp"), "icmp", "rules that specify ICMP fields must set protocol to ICMP");
    }
    let ip_version = r.get("ipVersion");
    if let Some(v) = ip_version.filter(|v| !matches!(v.as_u64(), Some(4 | 6))) {
        out.push(format!("{at}.ipVersion"), "ipVersion", format!("invalid ipVersion {v} (must be 4 or 6)"));
    }
    let ip_version = ip_version.and_then(Value::as_u64);
    let not_protocol = r.get("notProtocol").and_then(protocol_number);
    for (icmp, want, name) in [(1, 4, "icmp"), (58, 6, "icmpv6")] {
        if (protocol == Some(icmp) || not_protocol == Some(icmp)) && ip_version.is_some_and(|v| v != want) {
            out.push(format!("{at}.ipVersion"), "ipVersion", format!("must set ipversion to '{want}' with protocol {name}"));
        }
    }
    nets(r, at, ip_version, out);
    if r.get("http").is_some() {
        if action != "Allow" {
            out.push(format!("{at}.http"), "application layer", "only valid for Allow rules");
        }
        if egress {
            out.push(format!("{at}.http"), "application layer", "not allowed in egress rules");
        }
    }
    for side in ["source", "destination"] {
        entity(&r[side], &format!("{at}.{side}"), out);
    }
    let services = |side: &str| r[side].get("services").is_some();
    if services("destination") && r["destination"]["ports"].as_array().is_some_and(|p| !p.is_empty()) {
        out.push(format!("{at}.destination.ports"), "services", "cannot specify ports with a service selector");
    }
    if services("destination") && r["destination"]["notPorts"].as_array().is_some_and(|p| !p.is_empty()) {
        out.push(format!("{at}.destination.notPorts"), "services", "cannot specify notports with a service selector");
    }
    let (wrong_side, allowed_side, message) =
        if egress { ("source", "destination", "not allowed in egress rule source") } else { ("destination", "source", "not allowed in ingress rule destination") };
    if services(wrong_side) {
        out.push(format!("{at}.{wrong_side}.services"), "services", message);
    }
    if global && services(allowed_side) && r[allowed_side]["services"]["namespace"].as_str().unwrap_or("").is_empty() {
        out.push(format!("{at}.{allowed_side}.services.namespace"), "services", "must specify a namespace");
    }
}

/// `nets`/`notNets` of both sides: valid CIDRs, one IP family per rule, the family `ipVersion` names.
fn nets(r: &Value, at: &str, ip_version: Option<u64>, out: &mut Findings) {
    let (mut seen_v4, mut seen_v6) = (false, false);
    for (side, key) in [("source", "nets"), ("source", "notNets"), ("destination", "nets"), ("destination", "notNets")] {
        let field = format!("{at}.{side}.{key}");
        let (mut v4, mut v6) = (false, false);
        for (i, n) in r[side][key].as_array().into_iter().flatten().enumerate() {
            match n.as_str().and_then(parse_cidr) {
                Some((IpAddr::V4(_), _)) => v4 = true,
                Some((IpAddr::V6(_), _)) => v6 = true,
                None => out.push(format!("{field}[{i}]"), "CIDR", format!("invalid CIDR {n}")),
            }
        }
        if ip_version.is_some_and(|v| (v4 && v != 4) || (v6 && v != 6)) {
            out.push(&field, "CIDR", "rule IP version doesn't match CIDR version");
        }
        if (v4 && seen_v6) || (v6 && seen_v4) || (v4 && v6) {
            out.push(&field, "CIDR", "rule contains both IPv4 and IPv6 CIDRs");
        }
        seen_v4 |= v4;
        seen_v6 |= v6;
    }
}

/// An address with its prefix length (a bare address is a full-length prefix).
pub fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) if !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()) => l.parse::<u8>().ok().filter(|l| *l <= max)?,
        Some(_) => return None,
        None => max,
    };
    Some((addr, len))
}

fn entity(e: &Value, at: &str, out: &mut Findings) {
    for key in ["selector", "notSelector", "namespaceSelector"] {
        if let Some(text) = e[key].as_str() {
            selector(text, &format!("{at}.{key}"), out);
        }
    }
    if e["selector"].as_str().is_some_and(|s| s.contains(GLOBAL)) {
        out.push(format!("{at}.selector"), "global()", format!("Selector field: {GLOBAL_ONLY_IN_RULE_NS}"));
    }
    if let Some(ns) = e["namespaceSelector"].as_str() {
        if ns.contains("global(") && ns.trim() != GLOBAL {
            out.push(format!("{at}.namespaceSelector"), "global()", "NamespaceSelector field: global() cannot be combined with other selectors");
        }
    }
    if let Some(text) = e["serviceAccounts"]["selector"].as_str() {
        selector(text, &format!("{at}.serviceAccounts.selector"), out);
    }
    let Some(services) = e.get("services") else { return };
    let field = format!("{at}.services");
    if services["name"].as_str().unwrap_or("").is_empty() {
        out.push(&field, "services", "must specify a service name");
    }
    let set = |k: &str| e.get(k).is_some_and(|v| !v.is_null() && v != "" && v.as_array().is_none_or(|a| !a.is_empty()));
    if set("namespaceSelector") {
        out.push(&field, "services", "cannot specify NamespaceSelector and Services on the same rule");
    }
    if set("selector") || set("notSelector") {
        out.push(&field, "services", "cannot specify Selector/NotSelector and Services on the same rule");
    }
    if e.get("serviceAccounts").is_some() {
        out.push(&field, "services", "cannot specify ServiceAccounts and Services on the same rule");
    }
    if set("nets") || set("notNets") {
        out.push(&field, "services", "cannot specify Nets/NotNets and Services on the same rule");
    }
}

/// Whether `name` is a valid port name (an IANA service name as Kubernetes checks it).
pub fn valid_port_name(name: &str) -> bool {
    name.len() <= 15 && PORT_NAME.is_match(name) && name.chars().any(|c| c.is_ascii_lowercase()) && !name.contains("--")
}

#[cfg(test)]
mod tests;
