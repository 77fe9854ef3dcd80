//! The tiered policy evaluator: the verdict Calico would reach for one flow (source pod,
//! destination pod, protocol, port), with a trace of every tier, policy and rule considered.
//!
//! Semantics (Calico's): a flow must be allowed on egress from its source AND on ingress to its
//! destination. For each direction, tiers are taken in order, and within a tier the policies that
//! select the endpoint, in order; the first matching rule decides (`Log` records and goes on):
//! Allow or Deny ends the evaluation, Pass goes to the next tier. A tier whose policies select the
//! endpoint but match no rule ends with its `defaultAction` (Deny unless `Pass`). After the last
//! tier the namespace's profile decides: Kubernetes' default, Allow.
//!
//! Pods are IPv4 endpoints without known addresses: a rule reached before a decision that uses
//! `nets`, `services`, `http`, source ports or a service-account selector cannot be decided
//! offline; the evaluation is then an error naming that rule, never a guessed verdict.

use super::model::{Action, EntityRule, Policy, PolicySet, Rule, Scope};
use super::selector::{Labels, Selector};
use std::fmt::Write as _;

/// A pod as Calico sees it: its labels (with the ones Calico adds), its namespace's labels, its
/// service account and named ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `namespace/pod`.
    pub name: String,
    /// The namespace.
    pub namespace: String,
    /// Pod labels plus `projectcalico.org/namespace`, `projectcalico.org/orchestrator` (and
    /// `projectcalico.org/serviceaccount` when it has one).
    pub labels: Labels,
    /// Namespace labels plus `kubernetes.io/metadata.name` and `projectcalico.org/name`.
    pub namespace_labels: Labels,
    /// The pod's service account.
    pub service_account: Option<String>,
    /// Named container ports (name, number).
    pub ports: Vec<(String, u16)>,
}

impl Endpoint {
    /// A pod in `namespace` with the labels Kubernetes and Calico add to the pod and namespace.
    pub fn pod(namespace: &str, pod: &str, mut labels: Labels, mut namespace_labels: Labels, service_account: Option<&str>, ports: &[(&str, u16)]) -> Endpoint {
        labels.insert("projectcalico.org/namespace".into(), namespace.into());
        labels.insert("projectcalico.org/orchestrator".into(), "k8s".into());
        if let Some(sa) = service_account {
            labels.insert("projectcalico.org/serviceaccount".into(), sa.into());
        }
        namespace_labels.insert("kubernetes.io/metadata.name".into(), namespace.into());
        namespace_labels.insert("projectcalico.org/name".into(), namespace.into());
        Endpoint {
            name: format!("{namespace}/{pod}"),
            namespace: namespace.into(),
            labels,
            namespace_labels,
            service_account: service_account.map(String::from),
            ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
        }
    }

    fn port_name(&self, port: u16) -> Option<&str> {
        self.ports.iter().find(|(_, p)| *p == port).map(|(n, _)| n.as_str())
    }
}

/// One connection: TCP (protocol 6) unless said otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Flow<'a> {
    /// Who opens it.
    pub source: &'a Endpoint,
    /// Who accepts it.
    pub destination: &'a Endpoint,
    /// IP protocol number.
    pub protocol: u8,
    /// Destination port.
    pub port: u16,
}

impl std::fmt::Display for Flow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = if self.protocol == 6 { "TCP".to_string() } else { format!("protocol {}", self.protocol) };
        write!(f, "{} -> {}:{} ({proto})", self.source.name, self.destination.name, self.port)
    }
}

/// Which side of the flow a policy is evaluated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Leaving the source (`egress` rules of policies selecting the source).
    Egress,
    /// Entering the destination (`ingress` rules of policies selecting the destination).
    Ingress,
}

impl Direction {
    fn key(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        }
    }
}

/// What decided one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    /// A rule: `policy` (object name), its `egress[i]`/`ingress[i]`.
    Rule {
        /// `GlobalNetworkPolicy name` or `NetworkPolicy ns/name`.
        policy: String,
        /// `ingress[0]`.
        rule: String,
    },
    /// The end of a tier whose policies selected the endpoint without a matching rule.
    TierEnd {
        /// The tier.
        tier: String,
        /// The policies that selected the endpoint.
        policies: Vec<String>,
    },
    /// No tier decided: the namespace's profile (allow).
    Profile,
}

impl std::fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecidedBy::Rule { policy, rule } => write!(f, "{policy} {rule}"),
            DecidedBy::TierEnd { tier, policies } => write!(f, "the end of tier {tier} (selected by {}, no rule matched)", policies.join(", ")),
            DecidedBy::Profile => write!(f, "the namespace profile (no tier decided: Kubernetes' default allow)"),
        }
    }
}

/// One direction's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Allow or Deny.
    pub action: Action,
    /// What decided it.
    pub by: DecidedBy,
    /// Rules that passed the flow on to a later tier before the decision, as `policy rule`.
    pub passed_by: Vec<String>,
}

/// The evaluation of one flow: both directions and the lines of the trace.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The flow, as text.
    pub flow: String,
    /// Egress from the source.
    pub egress: Decided,
    /// Ingress to the destination.
    pub ingress: Decided,
    /// Every tier, policy and rule considered, indented, for people.
    pub lines: Vec<String>,
}

impl Trace {
    /// Allow when both directions allow, else Deny.
    pub fn verdict(&self) -> Action {
        if self.egress.action == Action::Allow && self.ingress.action == Action::Allow { Action::Allow } else { Action::Deny }
    }

    /// The direction that decided the verdict: the first that denies, else ingress.
    pub fn deciding(&self) -> (Direction, &Decided) {
        if self.egress.action != Action::Allow {
            (Direction::Egress, &self.egress)
        } else {
            (Direction::Ingress, &self.ingress)
        }
    }

    /// `Allow` or `Deny`, with what decided it (`Deny by X ingress[0]`).
    pub fn summary(&self) -> String {
        let (direction, d) = self.deciding();
        format!("{} ({} decided by {})", self.verdict(), direction.key(), d.by)
    }

    /// The whole trace as text, ending with the verdict.
    pub fn render(&self) -> String {
        let mut out = format!("flow: {}\n", self.flow);
        for l in &self.lines {
            let _ = writeln!(out, "{l}");
        }
        let _ = writeln!(out, "verdict: {}", self.summary());
        out
    }
}

/// Evaluates `flow` against `set`; an error names the rule that cannot be decided offline.
pub fn evaluate(set: &PolicySet, flow: &Flow<'_>) -> Result<Trace, String> {
    let mut lines = Vec::new();
    let egress = direction(set, flow, Direction::Egress, &mut lines)?;
    let ingress = direction(set, flow, Direction::Ingress, &mut lines)?;
    Ok(Trace { flow: flow.to_string(), egress, ingress, lines })
}

fn direction(set: &PolicySet, flow: &Flow<'_>, dir: Direction, lines: &mut Vec<String>) -> Result<Decided, String> {
    let subject = if dir == Direction::Egress { flow.source } else { flow.destination };
    lines.push(format!("{} {} {}:", dir.key(), if dir == Direction::Egress { "from" } else { "to" }, subject.name));
    let mut passed_by = Vec::new();
    'tiers: for tier in &set.tiers {
        let order = tier.order.map_or("none".to_string(), |o| o.to_string());
        lines.push(format!("  tier {} (order {order}, {})", tier.name, tier.origin));
        let mut selecting = Vec::new();
        for policy in set.in_tier(&tier.name) {
            let order = policy.order.map_or("none".to_string(), |o| o.to_string());
            if let Some(why_not) = not_applied(policy, subject, dir)? {
                lines.push(format!("    {} (order {order}): not applied: {why_not}", policy.object_name()));
                continue;
            }
            lines.push(format!("    {} (order {order}): selects {}", policy.object_name(), subject.name));
            selecting.push(policy.object_name());
            let rules = if dir == Direction::Egress { &policy.egress } else { &policy.ingress };
            for (i, rule) in rules.iter().enumerate() {
                let rule_name = format!("{}[{i}]", dir.key());
                let at = format!("{} {rule_name}", policy.object_name());
                match rule_mismatch(rule, policy, flow).map_err(|e| format!("{at}: cannot be decided offline: {e}"))? {
                    Some(why) => lines.push(format!("      {rule_name} {}: no match: {why}", rule.action)),
                    None => {
                        lines.push(format!("      {rule_name} {}: matches", rule.action));
                        match rule.action {
                            // Log records the packet and goes on to the next rule.
                            Action::Log => {}
                            // Pass skips the rest of this tier.
                            Action::Pass => {
                                lines.push("    => Pass to the next tier".into());
                                passed_by.push(at);
                                continue 'tiers;
                            }
                            action => {
                                let by = DecidedBy::Rule { policy: policy.object_name(), rule: rule_name };
                                lines.push(format!("  => {action} by {by}"));
                                return Ok(Decided { action, by, passed_by });
                            }
                        }
                    }
                }
            }
        }
        if selecting.is_empty() {
            lines.push("    (no policy of this tier selects the endpoint: the tier is skipped)".into());
        } else if tier.default_action == Action::Pass {
            lines.push("    (no rule matched: the tier's defaultAction Pass hands it on)".into());
            passed_by.push(format!("tier {} defaultAction Pass", tier.name));
        } else {
            let by = DecidedBy::TierEnd { tier: tier.name.clone(), policies: selecting };
            lines.push(format!("  => Deny by {by}"));
            return Ok(Decided { action: Action::Deny, by, passed_by });
        }
    }
    lines.push("  => Allow by the namespace profile (no tier decided)".into());
    Ok(Decided { action: Action::Allow, by: DecidedBy::Profile, passed_by })
}

/// Why `policy` does not apply to `subject` in `dir` (None: it applies).
fn not_applied(policy: &Policy, subject: &Endpoint, dir: Direction) -> Result<Option<String>, String> {
    let applies_to_dir = if dir == Direction::Egress { policy.egress_type } else { policy.ingress_type };
    if !applies_to_dir {
        return Ok(Some(format!("its types do not include {}", if dir == Direction::Egress { "Egress" } else { "Ingress" })));
    }
    if let Scope::Namespace(ns) = &policy.scope {
        if *ns != subject.namespace {
            return Ok(Some(format!("it applies in namespace {ns} only")));
        }
    }
    if !policy.selector.matches(&subject.labels) {
        return Ok(Some("its selector does not match the pod's labels".into()));
    }
    if policy.namespace_selector.as_ref().is_some_and(|s| !s.matches(&subject.namespace_labels)) {
        return Ok(Some(format!("its namespaceSelector does not match namespace {}", subject.namespace)));
    }
    if policy.service_account_selector.as_ref().is_some_and(|s| *s != Selector::All) {
        return Err(format!("{}: spec.serviceAccountSelector needs the service account's labels, which are not known offline", policy.object_name()));
    }
    Ok(None)
}

/// Why `rule` does not match `flow` (None: it matches); an error when it cannot be decided.
fn rule_mismatch(rule: &Rule, policy: &Policy, flow: &Flow<'_>) -> Result<Option<String>, String> {
    if let Some(what) = rule.undecidable.first() {
        return Err(format!("it uses `{what}`"));
    }
    if let Some(p) = rule.protocol.filter(|p| *p != flow.protocol) {
        return Ok(Some(format!("protocol {p} is not the flow's {}", flow.protocol)));
    }
    if rule.not_protocol == Some(flow.protocol) {
        return Ok(Some(format!("notProtocol excludes {}", flow.protocol)));
    }
    if rule.ip_version == Some(6) {
        return Ok(Some("ipVersion 6 (pods here are IPv4)".into()));
    }
    if !rule.source.ports.is_empty() || !rule.source.not_ports.is_empty() {
        return Err("it matches source ports, and a client's source port is not known".into());
    }
    if let Some(why) = entity_mismatch(&rule.source, policy, flow.source, "source")? {
        return Ok(Some(why));
    }
    if let Some(why) = entity_mismatch(&rule.destination, policy, flow.destination, "destination")? {
        return Ok(Some(why));
    }
    let name = flow.destination.port_name(flow.port);
    let d = &rule.destination;
    if !d.ports.is_empty() && !d.ports.iter().any(|p| p.contains(flow.port, name)) {
        return Ok(Some(format!("destination.ports do not include {}", flow.port)));
    }
    if d.not_ports.iter().any(|p| p.contains(flow.port, name)) {
        return Ok(Some(format!("destination.notPorts include {}", flow.port)));
    }
    Ok(None)
}

fn entity_mismatch(e: &EntityRule, policy: &Policy, ep: &Endpoint, side: &str) -> Result<Option<String>, String> {
    if let Some(what) = e.undecidable.first() {
        return Err(format!("{side}.{what} needs addresses, which pods have only in a cluster"));
    }
    if e.service_account_selector.as_ref().is_some_and(|s| *s != Selector::All) {
        return Err(format!("{side}.serviceAccounts.selector needs the service account's labels, which are not known offline"));
    }
    match (&e.namespace_selector, &policy.scope) {
        (Some(s), _) if !s.matches(&ep.namespace_labels) => {
            return Ok(Some(format!("{side}.namespaceSelector does not match namespace {} of {}", ep.namespace, ep.name)));
        }
        (None, Scope::Namespace(ns)) if (e.selector.is_some() || e.not_selector.is_some()) && *ns != ep.namespace => {
            return Ok(Some(format!("{side}.selector selects pods of namespace {ns} only, and {} is in {}", ep.name, ep.namespace)));
        }
        _ => {}
    }
    if e.selector.as_ref().is_some_and(|s| !s.matches(&ep.labels)) {
        return Ok(Some(format!("{side}.selector does not match the labels of {}", ep.name)));
    }
    if e.not_selector.as_ref().is_some_and(|s| s.matches(&ep.labels)) {
        return Ok(Some(format!("{side}.notSelector matches {}", ep.name)));
    }
    if !e.service_account_names.is_empty() && !ep.service_account.as_ref().is_some_and(|sa| e.service_account_names.contains(sa)) {
        return Ok(Some(format!("{side}.serviceAccounts.names do not include the service account of {}", ep.name)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
