//! The kind stack (and an existing cluster): cluster lifecycle, pinned installs, per-scenario objects.
//!
//! `plan::build_plan` turns options + scenarios into ordered steps; `KindStack::up` executes the setup
//! steps, the `Stack` methods run the scenario steps, `shutdown` the teardown. `waf-e2e plan` prints them.

pub mod cache;
pub mod cluster;
pub mod doctor;
pub mod objects;
pub mod plan;
pub mod proxy_health;
pub mod scrape;
pub mod secrets;
pub mod stack;
pub mod validate;
pub mod steps;

pub use stack::KindStack;

use crate::timeouts::Timeouts;
use std::path::PathBuf;

/// Options of a run on kind or an existing cluster.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    /// Use this kubeconfig (an existing cluster) instead of creating a kind cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Use this kubeconfig context (an existing cluster).
    pub context: Option<String>,
    /// Install nothing: the cluster already has everything (existing clusters).
    pub no_install: bool,
    /// Keep the cluster (and scenario namespaces) after the run, for debugging.
    pub keep: bool,
    /// Reuse a kept kind cluster by name instead of creating one.
    pub reuse: Option<String>,
    /// Profile name under `kind/profiles/` (`oss`, `tigera`).
    pub profile: String,
    /// Directory of the operator-rendered resources under test.
    pub rendered: PathBuf,
    /// Repository root holding `kind/` (profiles, manifests, cluster config).
    pub root: PathBuf,
    /// Manifest cache directory; `$XDG_CACHE_HOME/waf-e2e` or `~/.cache/waf-e2e` when unset.
    pub cache_dir: Option<PathBuf>,
    /// Run id (cluster and namespace names); random 6 hex digits when unset.
    pub run_id: Option<String>,
    /// The `kind` binary.
    pub kind_binary: PathBuf,
    /// Every deadline.
    pub timeouts: Timeouts,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            kubeconfig: None,
            context: None,
            no_install: false,
            keep: false,
            reuse: None,
            profile: "oss".into(),
            rendered: PathBuf::from("fixtures/rendered"),
            root: PathBuf::from("."),
            cache_dir: None,
            run_id: None,
            kind_binary: PathBuf::from("kind"),
            timeouts: Timeouts::default(),
        }
    }
}
