//! The scenario file format (design, section 3): a WAF policy, its traffic, and what must be observed.

use crate::contract::Decision;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// One scenario file: a policy, the traffic sent through it, and the expectations.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Unique name; also the base of the route host and, on a cluster, the namespace.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// What the scenario proves, for people reading reports.
    #[serde(default)]
    pub description: String,
    /// Holds the gateway alone from its baseline to its confirming scrape (after every isolated
    /// scenario's traffic): set when it asserts gateway-wide series (transactions) exactly.
    #[serde(default)]
    pub exclusive: bool,
    /// Capabilities the stack's profile must have, beyond those the expectations imply.
    #[serde(default)]
    pub requires: Vec<Capability>,
    /// Labels to select scenarios by (`run --tag`, `list --exclude-tag`), e.g. `sqli`, `blocking`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub tags: Vec<Spanned<String>>,
    /// The WAF policy attached to this scenario's route.
    pub policy: Policy,
    /// Requests sent in order, each `repeat` times.
    #[schemars(with = "Vec<Request>")]
    pub traffic: Spanned<Vec<Request>>,
    /// What the metrics and audit log must show afterwards.
    pub expect: Expectations,
}

/// A capability a stack profile may lack (e.g. the public coraza-proxy-wasm has no would_block counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// The filter counts DetectionOnly decisions as `would_block`.
    WouldBlockCounter,
    /// The filter interrupts requests (engine On).
    Blocking,
    /// The filter writes `AuditLog:` records for every decision.
    AuditLog,
}

/// The WAF policy: name, engine mode, rules.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Policy name as written in the cluster (dashes allowed; the metric label sanitises them).
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// `On` blocks; `DetectionOnly` only counts would_block.
    pub mode: Mode,
    /// Which rules the engine loads.
    pub rules: RuleSet,
}

/// The WAF engine mode (SecRuleEngine), a contract term shared with the WAF engine.
pub use crate::contract::Mode;

/// The rules a policy loads: the OWASP CRS and/or inline SecLang directives.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// Load the OWASP Core Rule Set (anomaly scoring; 949110 interrupts).
    #[serde(default)]
    pub crs: bool,
    /// SecLang directives loaded after the CRS.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub directives: Option<Spanned<String>>,
}

/// A request template, sent `repeat` times.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Name used by audit expectations and reports.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Path and query, sent as written (percent-encode what must be encoded).
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body, sent as is.
    #[serde(default)]
    pub body: Option<String>,
    /// How many times to send it.
    #[serde(default = "default_repeat")]
    #[schemars(with = "u32")]
    pub repeat: Spanned<u32>,
    /// The status every send must get back.
    #[schemars(with = "u16")]
    pub expect_status: Spanned<u16>,
    /// Whether every send must reach the backend complete (`true`) or never complete (`false`):
    /// one value for every filter flavour, or a map per flavour. Whether the headers alone got
    /// there depends on Envoy's connection pool and is never asserted.
    #[serde(default)]
    pub reaches_backend: Option<ReachesBackend>,
}

/// `reaches_backend`: a plain boolean for every filter flavour, or a value per flavour.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ReachesBackend {
    /// The same for every filter flavour.
    Every(bool),
    /// Per filter flavour (`{stand-in: true, coraza-proxy-wasm-release: false}`); a flavour without
    /// an entry is reported as not checked.
    PerFlavour(BTreeMap<String, bool>),
}

impl ReachesBackend {
    /// The value for `flavour`; `None` when a per-flavour map has no entry for it.
    pub fn for_flavour(&self, flavour: &str) -> Option<bool> {
        match self {
            ReachesBackend::Every(reach) => Some(*reach),
            ReachesBackend::PerFlavour(by_flavour) => by_flavour.get(flavour).copied(),
        }
    }
}

fn default_method() -> String {
    "GET".to_string()
}

fn default_repeat() -> Spanned<u32> {
    Spanned::new(1, serde_saphyr::Location::UNKNOWN, serde_saphyr::Location::UNKNOWN)
}

/// Everything that must be observed after the traffic.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Decision series that must increase.
    #[serde(default)]
    pub decisions: Vec<DecisionExpectation>,
    /// When true, no decision series for this policy may exist or move.
    #[serde(default)]
    pub no_decisions: bool,
    /// The gateway-wide transactions counter increase.
    #[serde(default)]
    pub transactions: Option<CountExpectation>,
    /// Requests that must have an audit record; every other request must have none.
    #[serde(default)]
    pub audit: Vec<AuditExpectation>,
}

/// One `tigera_waf_decisions_total` series and its expected increase.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionExpectation {
    /// The `decision` label.
    pub decision: Decision,
    /// Labels the series must carry exactly, whatever the filter; `namespace` and `gateway` default to the stack's.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Labels whose values depend on the filter build (rule_id, phase), per filter flavour. A flavour
    /// without an entry leaves them not checked (and says so), never passed.
    #[serde(default)]
    pub by_filter: BTreeMap<String, BTreeMap<String, String>>,
    /// Exact increase.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub increase: Option<Spanned<u64>>,
    /// Minimum increase.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub at_least: Option<Spanned<u64>>,
}

/// A counter increase: exact, or a floor.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountExpectation {
    /// Exact increase (only trustworthy in exclusive scenarios for gateway-wide series).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub increase: Option<Spanned<u64>>,
    /// Minimum increase.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub at_least: Option<Spanned<u64>>,
}

/// The audit records one request (every repeat of it) must produce.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditExpectation {
    /// The request's name in `traffic`.
    #[schemars(with = "String")]
    pub request: Spanned<String>,
    /// Blocked (interrupted) or would_block (DetectionOnly).
    pub decision: Decision,
    /// Rule ids that must appear among the record's messages, whatever the filter.
    #[serde(default)]
    pub rule_ids: Vec<u64>,
    /// Rule ids that depend on the filter build, per filter flavour (a flavour without an entry: not checked).
    #[serde(default)]
    pub by_filter: BTreeMap<String, FilterRuleIds>,
}

/// Filter-dependent rule ids of an audit record.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterRuleIds {
    /// Rule ids that must appear among the record's messages with this filter.
    pub rule_ids: Vec<u64>,
}

/// The WAF filter builds that scenarios can give filter-dependent values for (design: phases and rule
/// ids are properties of the build). `custom-*` names are free for a team's own `--waf-wasm` builds.
pub const KNOWN_FILTER_FLAVOURS: [&str; 4] = [
    "stand-in",
    "coraza-proxy-wasm-release",
    "coraza-proxy-wasm-no-multiphase",
    "calico-enterprise-gateway-waf",
];

/// Whether `name` is a filter flavour scenarios may use: a known one, or `custom-<something>`.
pub fn is_filter_flavour(name: &str) -> bool {
    KNOWN_FILTER_FLAVOURS.contains(&name) || name.strip_prefix("custom-").is_some_and(|rest| !rest.is_empty())
}

/// A checked increase: exactly N, or at least N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Increase {
    /// Equal to baseline + N on two consecutive scrapes.
    Exactly(u64),
    /// At least baseline + N.
    AtLeast(u64),
}

impl std::fmt::Display for Increase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Increase::Exactly(n) => write!(f, "exactly +{n}"),
            Increase::AtLeast(n) => write!(f, "at least +{n}"),
        }
    }
}

impl Scenario {
    /// The scenario's name.
    pub fn name(&self) -> &str {
        &self.name.value
    }

    /// True when one of the scenario's tags is `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t.value == tag)
    }

    /// Capabilities needed: those declared plus those the expectations imply.
    pub fn needs(&self) -> Vec<Capability> {
        let mut needs = self.requires.clone();
        let decisions = self.expect.decisions.iter().map(|d| d.decision);
        let audited = self.expect.audit.iter().map(|a| a.decision);
        for decision in decisions.chain(audited) {
            needs.push(match decision {
                Decision::Blocked => Capability::Blocking,
                Decision::WouldBlock => Capability::WouldBlockCounter,
            });
        }
        if !self.expect.audit.is_empty() {
            needs.push(Capability::AuditLog);
        }
        needs.sort();
        needs.dedup();
        needs
    }

    /// Total requests the traffic sends.
    pub fn request_count(&self) -> u64 {
        self.traffic.value.iter().map(|r| u64::from(r.repeat.value)).sum()
    }
}
