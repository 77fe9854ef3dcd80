//! The policies and tiers a run applies, as Calico evaluates them: one model that validation,
//! the tiered evaluator and `policy-trace` share. Built from objects that passed
//! [`super::validate`]; anything it cannot read is an error naming the object and field.

use super::selector::Selector;
use super::validate::{is_calico_object, protocol_number, valid_port_name, DEFAULT_TIER_ORDER};
use serde_json::Value;
use std::path::PathBuf;

/// What a rule (or a tier's end) does with a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let it through (this direction is decided).
    Allow,
    /// Drop it.
    Deny,
    /// Hand it to the next tier.
    Pass,
    /// Record it and go on to the next rule.
    Log,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        match s {
            "Allow" => Some(Action::Allow),
            "Deny" => Some(Action::Deny),
            "Pass" => Some(Action::Pass),
            "Log" => Some(Action::Log),
            _ => None,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// One entry of `ports`/`notPorts`: a number, a range `a:b`, or a named port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// `80` or `8000:8080` (inclusive).
    Range(u16, u16),
    /// A named port of the destination endpoint.
    Name(String),
}

impl PortSpec {
    /// Reads a port entry the way Calico accepts it; the error is Calico's message.
    pub fn parse(v: &Value) -> Result<PortSpec, String> {
        let number = |s: &str| s.parse::<u16>().ok().filter(|p| *p >= 1).ok_or_else(|| "port range invalid, port number must be between 1 and 65535".to_string());
        match v {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()).filter(|p| *p >= 1).map(|p| PortSpec::Range(p, p))
                .ok_or_else(|| format!("port range invalid, port number must be between 1 and 65535 (got {n})")),
            Value::String(s) if s.contains(':') => {
                let (a, b) = s.split_once(':').unwrap_or_default();
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    return Err(format!("port range invalid: {s} (the first port is above the second)"));
                }
                Ok(PortSpec::Range(a, b))
            }
            Value::String(s) if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() => number(s).map(|p| PortSpec::Range(p, p)),
            Value::String(s) if valid_port_name(s) => Ok(PortSpec::Name(s.clone())),
            other => Err(format!("invalid port {other}: a number 1-65535, a range `a:b` or a port name")),
        }
    }

    /// Whether `port` (named `name` on the destination) is in it.
    pub fn contains(&self, port: u16, name: Option<&str>) -> bool {
        match self {
            PortSpec::Range(a, b) => *a <= port && port <= *b,
            PortSpec::Name(n) => name == Some(n.as_str()),
        }
    }
}

/// A rule's `source` or `destination`.
#[derive(Debug, Clone, Default)]
pub struct EntityRule {
    /// `selector` (None: any).
    pub selector: Option<Selector>,
    /// `notSelector`.
    pub not_selector: Option<Selector>,
    /// `namespaceSelector` (None: the policy's own namespace for a NetworkPolicy, any for a global one).
    pub namespace_selector: Option<Selector>,
    /// `ports` (empty: any).
    pub ports: Vec<PortSpec>,
    /// `notPorts`.
    pub not_ports: Vec<PortSpec>,
    /// `serviceAccounts.names`.
    pub service_account_names: Vec<String>,
    /// `serviceAccounts.selector`.
    pub service_account_selector: Option<Selector>,
    /// Fields the offline evaluation cannot decide without a cluster (`nets`, `services`, ...).
    pub undecidable: Vec<&'static str>,
}

/// One rule of a policy.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `action`.
    pub action: Action,
    /// `protocol` as a number (None: any).
    pub protocol: Option<u8>,
    /// `notProtocol`.
    pub not_protocol: Option<u8>,
    /// `ipVersion`.
    pub ip_version: Option<u8>,
    /// `source`.
    pub source: EntityRule,
    /// `destination`.
    pub destination: EntityRule,
    /// Rule-level fields the offline evaluation cannot decide (`http`).
    pub undecidable: Vec<&'static str>,
}

/// Where a policy applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A GlobalNetworkPolicy: endpoints of every namespace.
    Global,
    /// A NetworkPolicy: endpoints of this namespace.
    Namespace(String),
}

/// A GlobalNetworkPolicy or NetworkPolicy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `metadata.name`.
    pub name: String,
    /// Global or namespaced.
    pub scope: Scope,
    /// `spec.tier` (`default` when unset).
    pub tier: String,
    /// `spec.order` (None: after every ordered policy).
    pub order: Option<f64>,
    /// `spec.selector`.
    pub selector: Selector,
    /// `spec.namespaceSelector` (global policies).
    pub namespace_selector: Option<Selector>,
    /// `spec.serviceAccountSelector`.
    pub service_account_selector: Option<Selector>,
    /// Whether it applies to ingress (from `types`, or Calico's default).
    pub ingress_type: bool,
    /// Whether it applies to egress.
    pub egress_type: bool,
    /// `spec.ingress`.
    pub ingress: Vec<Rule>,
    /// `spec.egress`.
    pub egress: Vec<Rule>,
    /// The file it comes from.
    pub file: PathBuf,
}

impl Policy {
    /// `GlobalNetworkPolicy name` or `NetworkPolicy ns/name`, as reports name objects.
    pub fn object_name(&self) -> String {
        match &self.scope {
            Scope::Global => format!("GlobalNetworkPolicy {}", self.name),
            Scope::Namespace(ns) => format!("NetworkPolicy {ns}/{}", self.name),
        }
    }
}

/// A tier.
#[derive(Debug, Clone)]
pub struct Tier {
    /// `metadata.name`.
    pub name: String,
    /// `spec.order` (None: last).
    pub order: Option<f64>,
    /// What ends the tier for an endpoint its policies select but no rule decides (Deny unless `Pass`).
    pub default_action: Action,
    /// Where it comes from: a file, or why it exists without one.
    pub origin: String,
}

/// The tiers and policies of a run, in Calico's evaluation order.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    /// Tiers, sorted by order then name.
    pub tiers: Vec<Tier>,
    /// Policies, sorted by order then name (evaluation takes each tier's in this order).
    pub policies: Vec<Policy>,
}

/// An object and the file it came from.
pub type Sourced<'a> = (&'a Value, PathBuf);

impl PolicySet {
    /// The set of the projectcalico.org objects among `objects` (others are left out). Tiers that
    /// policies name but no object defines are the ones Calico itself creates (`default`, order
    /// 1000000) or the Calico Enterprise operator creates (`allow-tigera`, order 100, Pass);
    /// any other is an error, with the file of the object at fault.
    pub fn from_objects(objects: &[Sourced<'_>]) -> Result<PolicySet, (PathBuf, String)> {
        let mut set = PolicySet::default();
        for (v, file) in objects.iter().filter(|(v, _)| is_calico_object(v)) {
            let name = v["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let at = || format!("{} {name} ({})", v["kind"].as_str().unwrap_or("?"), file.display());
            if v["kind"] == "Tier" {
                let default_action = if v["spec"]["defaultAction"] == "Pass" { Action::Pass } else { Action::Deny };
                set.tiers.push(Tier { name, order: v["spec"]["order"].as_f64(), default_action, origin: file.display().to_string() });
            } else {
                set.policies.push(policy(v, file).map_err(|e| (file.clone(), format!("{}: {e}", at())))?);
            }
        }
        for (implicit, order, action, why) in [
            ("default", DEFAULT_TIER_ORDER, Action::Deny, "created by Calico"),
            ("allow-tigera", 100.0, Action::Pass, "created by the Calico Enterprise operator"),
        ] {
            if !set.tiers.iter().any(|t| t.name == implicit) && (implicit == "default" || set.policies.iter().any(|p| p.tier == implicit)) {
                set.tiers.push(Tier { name: implicit.into(), order: Some(order), default_action: action, origin: format!("(implicit: {why})") });
            }
        }
        if let Some(p) = set.policies.iter().find(|p| !set.tiers.iter().any(|t| t.name == p.tier)) {
            return Err((p.file.clone(), format!("{} ({}) is in tier `{}`, which no applied object defines", p.object_name(), p.file.display(), p.tier)));
        }
        let key = |order: Option<f64>| order.unwrap_or(f64::INFINITY);
        set.tiers.sort_by(|a, b| key(a.order).total_cmp(&key(b.order)).then_with(|| a.name.cmp(&b.name)));
        set.policies.sort_by(|a, b| key(a.order).total_cmp(&key(b.order)).then_with(|| a.name.cmp(&b.name)));
        Ok(set)
    }

    /// The policies of `tier`, in order.
    pub fn in_tier<'a>(&'a self, tier: &'a str) -> impl Iterator<Item = &'a Policy> + 'a {
        self.policies.iter().filter(move |p| p.tier == tier)
    }
}

fn optional_selector(v: &Value, field: &str) -> Result<Option<Selector>, String> {
    v.as_str().map(|s| Selector::parse(s).map_err(|e| format!("field `{field}`: invalid selector `{s}`: {e}"))).transpose()
}

fn policy(v: &Value, file: &std::path::Path) -> Result<Policy, String> {
    let spec = &v["spec"];
    let scope = match (v["kind"].as_str(), v["metadata"]["namespace"].as_str()) {
        (Some("NetworkPolicy"), Some(ns)) => Scope::Namespace(ns.to_string()),
        (Some("NetworkPolicy"), None) => Scope::Namespace("default".to_string()),
        _ => Scope::Global,
    };
    let rules = |key: &str| -> Result<Vec<Rule>, String> {
        spec[key].as_array().into_iter().flatten().enumerate().map(|(i, r)| rule(r, &format!("spec.{key}[{i}]"))).collect()
    };
    let (ingress, egress) = (rules("ingress")?, rules("egress")?);
    let types: Option<Vec<&str>> = spec["types"].as_array().map(|t| t.iter().filter_map(Value::as_str).collect());
    // Calico's default for `types`: Egress alone when there are only egress rules, both when
    // there are both, Ingress otherwise.
    let (ingress_type, egress_type) = match &types {
        Some(t) => (t.contains(&"Ingress"), t.contains(&"Egress")),
        None => (!ingress.is_empty() || egress.is_empty(), !egress.is_empty()),
    };
    Ok(Policy {
        name: v["metadata"]["name"].as_str().unwrap_or_default().to_string(),
        scope,
        tier: spec["tier"].as_str().filter(|t| !t.is_empty()).unwrap_or("default").to_string(),
        order: spec["order"].as_f64(),
        selector: optional_selector(&spec["selector"], "spec.selector")?.unwrap_or(Selector::All),
        namespace_selector: optional_selector(&spec["namespaceSelector"], "spec.namespaceSelector")?,
        service_account_selector: optional_selector(&spec["serviceAccountSelector"], "spec.serviceAccountSelector")?,
        ingress_type,
        egress_type,
        ingress,
        egress,
        file: file.to_path_buf(),
    })
}

fn rule(r: &Value, at: &str) -> Result<Rule, String> {
    let action = r["action"].as_str().and_then(Action::parse).ok_or_else(|| format!("field `{at}.action`: invalid action {}", r["action"]))?;
    let protocol = |k: &str| r.get(k).map(|p| protocol_number(p).ok_or_else(|| format!("field `{at}.{k}`: invalid protocol {p}"))).transpose();
    // HTTP matches need the request, which a flow (pods, protocol, port) does not carry.
    let undecidable = if r.get("http").is_some() { vec!["http"] } else { Vec::new() };
    Ok(Rule {
        action,
        protocol: protocol("protocol")?,
        not_protocol: protocol("notProtocol")?,
        ip_version: r["ipVersion"].as_u64().and_then(|v| u8::try_from(v).ok()),
        source: entity(&r["source"], &format!("{at}.source"))?,
        destination: entity(&r["destination"], &format!("{at}.destination"))?,
        undecidable,
    })
}

fn entity(e: &Value, at: &str) -> Result<EntityRule, String> {
    let ports = |k: &str| -> Result<Vec<PortSpec>, String> {
        e[k].as_array().into_iter().flatten().enumerate().map(|(i, p)| PortSpec::parse(p).map_err(|m| format!("field `{at}.{k}[{i}]`: {m}"))).collect()
    };
    let mut undecidable = Vec::new();
    for key in ["nets", "notNets", "services"] {
        if e.get(key).is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty())) {
            undecidable.push(key);
        }
    }
    let sa = &e["serviceAccounts"];
    Ok(EntityRule {
        selector: optional_selector(&e["selector"], &format!("{at}.selector"))?,
        not_selector: optional_selector(&e["notSelector"], &format!("{at}.notSelector"))?,
        namespace_selector: optional_selector(&e["namespaceSelector"], &format!("{at}.namespaceSelector"))?,
        ports: ports("ports")?,
        not_ports: ports("notPorts")?,
        service_account_names: sa["names"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect(),
        service_account_selector: optional_selector(&sa["selector"], &format!("{at}.serviceAccounts.selector"))?,
        undecidable,
    })
}
