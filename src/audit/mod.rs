//! Audit records (design 1.2): Coraza's audit JSON and the Envoy log lines that carry it.
//!
//! Shared by the reference proxy (the writer, local stack only) and the assertion engine (the
//! reader, on every stack, including real Envoy with coraza-proxy-wasm). It depends on nothing
//! feature-gated.

pub mod line;
pub mod record;
pub mod sort;

pub use sort::{sort_lines, SortedLines};
pub use line::{parse_line, AuditLine, AuditParseError, AUDIT_MARKER, VM_PREFIX};
pub use record::{
    severity_name, AuditMessage, AuditMessageData, AuditProducer, AuditRecord, AuditRequest, AuditResponse, AuditTransaction,
};

#[cfg(test)]
mod tests;
