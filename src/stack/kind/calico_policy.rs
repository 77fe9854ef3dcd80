//! Whether Calico GlobalNetworkPolicies let one pod reach another's TCP port: the selector language
//! and first-match rule evaluation of ONE tier (the rendered policies' tier), so that a scrape
//! which is down can be blamed on the rendered GlobalNetworkPolicy when, and only when, it does not
//! let Prometheus in.
//!
//! Covered: `selector`, `namespaceSelector` (policy and rule), `notSelector`, `protocol`, `ports`,
//! `notPorts` (numbers, ranges, the port's name), actions Allow/Deny/Pass/Log, `types`, `order`.
//! A rule using anything else (`nets`, `serviceAccounts`, `services`, `http`, ...) makes the
//! evaluation undecided, never a verdict.

use serde_json::Value;
use std::collections::BTreeMap;

/// Labels of one object.
pub type Labels = BTreeMap<String, String>;

/// A workload endpoint as Calico sees it: pod labels (with `projectcalico.org/namespace`) and its
/// namespace's labels (with `projectcalico.org/name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `namespace/name`, for messages.
    pub name: String,
    /// Pod labels plus the ones Calico adds.
    pub labels: Labels,
    /// Namespace labels plus the one Calico adds.
    pub namespace_labels: Labels,
}

impl Endpoint {
    /// An endpoint from the pod's and its namespace's labels, with the labels Calico adds to both.
    pub fn new(namespace: &str, pod: &str, mut labels: Labels, mut namespace_labels: Labels) -> Endpoint {
        labels.insert("projectcalico.org/namespace".into(), namespace.into());
        labels.insert("projectcalico.org/orchestrator".into(), "k8s".into());
        namespace_labels.insert("projectcalico.org/name".into(), namespace.into());
        Endpoint { name: format!("{namespace}/{pod}"), labels, namespace_labels }
    }
}

/// The outcome of one tier for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierVerdict {
    /// A rule allowed it.
    Allowed {
        /// The policy.
        policy: String,
        /// Its rule index.
        rule: usize,
    },
    /// A rule denied it.
    Denied {
        /// The policy.
        policy: String,
        /// Which rule.
        rule: usize,
    },
    /// A rule passed it on: the next tier decides.
    Passed {
        /// The policy.
        policy: String,
        /// Which rule.
        rule: usize,
    },
    /// Policies apply but none of their rules matches: the tier's default action decides (Calico's
    /// default is Deny).
    Unmatched {
        /// The policies that apply.
        policies: Vec<String>,
    },
    /// No policy of the tier applies to the endpoint: the tier is skipped.
    NotSelected,
}

/// Which way the connection is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Into `to` (policies selecting `to`, `ingress` rules, peer = `from` as the rule's source).
    Ingress,
    /// Out of `from` (policies selecting `from`, `egress` rules, peer = `to` as the rule's destination).
    Egress,
}

/// Evaluates one tier's GlobalNetworkPolicies (sorted by `order`) for TCP from `from` to `to`'s
/// `port` (named `port_name`); `Err` when a policy uses something this evaluation does not cover.
pub fn evaluate_tier(policies: &[Value], direction: Direction, from: &Endpoint, to: &Endpoint, port: u16, port_name: &str) -> Result<TierVerdict, String> {
    let mut sorted: Vec<&Value> = policies.iter().collect();
    sorted.sort_by(|a, b| order(a).partial_cmp(&order(b)).unwrap_or(std::cmp::Ordering::Equal));
    let (subject, peer, rules_key, type_name) = match direction {
        Direction::Ingress => (to, from, "ingress", "Ingress"),
        Direction::Egress => (from, to, "egress", "Egress"),
    };
    let mut applied = Vec::new();
    for p in sorted {
        let name = p.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?").to_string();
        let spec = &p["spec"];
        if !applies(spec, subject, type_name, rules_key)? {
            continue;
        }
        for (rule, r) in spec[rules_key].as_array().into_iter().flatten().enumerate() {
            if !rule_matches(r, direction, peer, port, port_name).map_err(|e| format!("{name} {rules_key}[{rule}]: {e}"))? {
                continue;
            }
            // The first matching rule decides (Log records and goes on).
            match r["action"].as_str().unwrap_or("") {
                "Log" => continue,
                "Allow" => return Ok(TierVerdict::Allowed { policy: name, rule }),
                "Deny" => return Ok(TierVerdict::Denied { policy: name, rule }),
                "Pass" => return Ok(TierVerdict::Passed { policy: name, rule }),
                other => return Err(format!("{name} {rules_key}[{rule}]: unknown action `{other}`")),
            }
        }
        applied.push(name);
    }
    Ok(if applied.is_empty() { TierVerdict::NotSelected } else { TierVerdict::Unmatched { policies: applied } })
}

fn order(p: &Value) -> f64 {
    p.pointer("/spec/order").and_then(Value::as_f64).unwrap_or(f64::INFINITY)
}

fn applies(spec: &Value, subject: &Endpoint, type_name: &str, rules_key: &str) -> Result<bool, String> {
    let types: Vec<&str> = spec["types"].as_array().map(|t| t.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let has_type = if types.is_empty() { rules_key == "ingress" || spec.get(rules_key).is_some() } else { types.contains(&type_name) };
    Ok(has_type
        && selects(spec["selector"].as_str(), &subject.labels)?
        && selects(spec["namespaceSelector"].as_str(), &subject.namespace_labels)?)
}

fn selects(selector: Option<&str>, labels: &Labels) -> Result<bool, String> {
    match selector.map(str::trim) {
        None | Some("") => Ok(true),
        Some(s) => Selector::parse(s).map(|sel| sel.matches(labels)),
    }
}

fn rule_matches(rule: &Value, direction: Direction, peer: &Endpoint, port: u16, port_name: &str) -> Result<bool, String> {
    const COVERED: &[&str] = &["action", "protocol", "source", "destination", "metadata"];
    if let Some(k) = rule.as_object().into_iter().flatten().map(|(k, _)| k.as_str()).find(|k| !COVERED.contains(k)) {
        return Err(format!("uses `{k}`, which this evaluation does not cover"));
    }
    if let Some(p) = rule.get("protocol") {
        if !(p == "TCP" || p == 6) {
            return Ok(false);
        }
    }
    let (peer_side, our_side) = match direction {
        Direction::Ingress => (&rule["source"], &rule["destination"]),
        Direction::Egress => (&rule["destination"], &rule["source"]),
    };
    // The port is the destination's: on ingress it is ours, on egress the peer's.
    let port_side = &rule["destination"];
    for side in [peer_side, our_side] {
        const SIDE: &[&str] = &["selector", "namespaceSelector", "notSelector", "ports", "notPorts"];
        if let Some(k) = side.as_object().into_iter().flatten().map(|(k, _)| k.as_str()).find(|k| !SIDE.contains(k)) {
            return Err(format!("uses `{k}`, which this evaluation does not cover"));
        }
    }
    // Only the peer side's selectors name another endpoint; our own side's selectors would name us.
    let peer_ok = selects(peer_side["selector"].as_str(), &peer.labels)?
        && selects(peer_side["namespaceSelector"].as_str(), &peer.namespace_labels)?
        && !peer_side["notSelector"].as_str().map(|s| selects(Some(s), &peer.labels)).transpose()?.unwrap_or(false);
    let in_ports = |key: &str| port_side[key].as_array().map(|ps| ps.iter().any(|p| port_matches(p, port, port_name)));
    let port_ok = in_ports("ports").unwrap_or(true) && !in_ports("notPorts").unwrap_or(false);
    Ok(peer_ok && port_ok)
}

fn port_matches(p: &Value, port: u16, name: &str) -> bool {
    match p {
        Value::Number(n) => n.as_u64() == Some(port.into()),
        Value::String(s) => match s.split_once(':') {
            Some((a, b)) => matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= port && port <= b),
            None => s == name || s.parse::<u16>().ok() == Some(port),
        },
        _ => false,
    }
}

/// A parsed Calico label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `all()` / `global()`.
    All,
    /// `has(k)`.
    Has(String),
    /// `k == 'v'`.
    Eq(String, String),
    /// `k != 'v'`.
    Ne(String, String),
    /// `k in {'a', 'b'}`.
    In(String, Vec<String>),
    /// `k not in {...}`.
    NotIn(String, Vec<String>),
    /// `!x`.
    Not(Box<Selector>),
    /// `x && y`.
    And(Box<Selector>, Box<Selector>),
    /// `x || y`.
    Or(Box<Selector>, Box<Selector>),
}

impl Selector {
    /// Parses Calico's selector syntax (`contains`, `starts with`, `ends with` are not covered: an error).
    pub fn parse(text: &str) -> Result<Selector, String> {
        let tokens = tokenize(text)?;
        let mut p = Parser { tokens: &tokens, at: 0 };
        let sel = p.or()?;
        if p.at != tokens.len() {
            return Err(format!("selector `{text}`: unexpected `{}`", tokens[p.at]));
        }
        Ok(sel)
    }

    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Selector::All => true,
            Selector::Has(k) => labels.contains_key(k),
            Selector::Eq(k, v) => labels.get(k) == Some(v),
            Selector::Ne(k, v) => labels.get(k) != Some(v),
            Selector::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Selector::NotIn(k, vs) => !labels.get(k).is_some_and(|v| vs.contains(v)),
            Selector::Not(s) => !s.matches(labels),
            Selector::And(a, b) => a.matches(labels) && b.matches(labels),
            Selector::Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let end = chars[i + 1..].iter().position(|&d| d == c).ok_or_else(|| format!("selector `{text}`: unclosed quote"))?;
            out.push(chars[i..=i + 1 + end].iter().collect());
            i += end + 2;
        } else if ["&&", "||", "==", "!="].iter().any(|op| chars[i..].starts_with(&op.chars().collect::<Vec<_>>())) {
            out.push(chars[i..i + 2].iter().collect());
            i += 2;
        } else if "(){},!".contains(c) {
            out.push(c.to_string());
            i += 1;
        } else {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "._-/".contains(chars[i])) {
                i += 1;
            }
            if start == i {
                return Err(format!("selector `{text}`: unexpected `{c}`"));
            }
            out.push(chars[start..i].iter().collect());
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: &'a [String],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(String::as_str)
    }

    fn next(&mut self) -> Result<String, String> {
        let t = self.tokens.get(self.at).cloned().ok_or("selector ends too early")?;
        self.at += 1;
        Ok(t)
    }

    fn expect(&mut self, want: &str) -> Result<(), String> {
        let got = self.next()?;
        if got == want { Ok(()) } else { Err(format!("selector: expected `{want}`, got `{got}`")) }
    }

    fn or(&mut self) -> Result<Selector, String> {
        let mut left = self.and()?;
        while self.peek() == Some("||") {
            self.at += 1;
            left = Selector::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Selector, String> {
        let mut left = self.unary()?;
        while self.peek() == Some("&&") {
            self.at += 1;
            left = Selector::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Selector, String> {
        match self.peek() {
            Some("!") => {
                self.at += 1;
                Ok(Selector::Not(Box::new(self.unary()?)))
            }
            Some("(") => {
                self.at += 1;
                let inner = self.or()?;
                self.expect(")")?;
                Ok(inner)
            }
            _ => self.term(),
        }
    }

    fn term(&mut self) -> Result<Selector, String> {
        let word = self.next()?;
        if (word == "all" || word == "global") && self.peek() == Some("(") {
            self.expect("(")?;
            self.expect(")")?;
            return Ok(Selector::All);
        }
        if word == "has" && self.peek() == Some("(") {
            self.expect("(")?;
            let key = self.next()?;
            self.expect(")")?;
            return Ok(Selector::Has(key));
        }
        match self.next()?.as_str() {
            "==" => Ok(Selector::Eq(word, unquote(&self.next()?)?)),
            "!=" => Ok(Selector::Ne(word, unquote(&self.next()?)?)),
            "in" => Ok(Selector::In(word, self.set()?)),
            "not" => {
                self.expect("in")?;
                Ok(Selector::NotIn(word, self.set()?))
            }
            op => Err(format!("selector operator `{op}` after `{word}` is not covered")),
        }
    }

    fn set(&mut self) -> Result<Vec<String>, String> {
        self.expect("{")?;
        let mut values = Vec::new();
        loop {
            match self.next()?.as_str() {
                "}" => return Ok(values),
                "," => {}
                v => values.push(unquote(v)?),
            }
        }
    }
}

fn unquote(t: &str) -> Result<String, String> {
    let quoted = t.len() >= 2 && ((t.starts_with('\'') && t.ends_with('\'')) || (t.starts_with('"') && t.ends_with('"')));
    if quoted { Ok(t[1..t.len() - 1].to_string()) } else { Err(format!("selector: expected a quoted value, got `{t}`")) }
}

#[cfg(test)]
mod tests;
