//! Kubernetes operations shared by the cluster stacks: server-side apply, named waits, port-forwards, audit-log reads (and the ephemeral audit reader), diagnostics.
//!
//! Everything takes a `kube::Client` so the kind stack and the existing-cluster stack share it,
//! and so tests can drive it against a mock API service.

pub mod apply;
pub mod audit;
pub mod audit_reader;
pub mod conditions;
pub mod diagnostics;
pub mod portforward;
pub mod waits;

#[cfg(test)]
pub(crate) mod testing;

pub use apply::{apply_manifests, apply_manifests_crds_first, apply_parsed, delete_namespace, parse_manifests, AppliedObject, Manifest};
pub use audit::{
    audit_cursor, audit_cursor_with, audit_lines_since, detect_audit_source, locate_envoy_log, read_since, AuditSource, EnvoyLog, LogVolume,
};
pub use audit_reader::{audit_sources, ensure_audit_reader, AuditReader};
pub use diagnostics::{dump_namespace, dump_objects, write_collected};
pub use portforward::{envoy_proxy_selector, first_ready_pod, PortForward};
