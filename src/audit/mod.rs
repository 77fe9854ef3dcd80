//! Audit records (design 1.2): Coraza's audit JSON, the Envoy log lines that carry it, and the
//! byte offsets that read a log from a cursor on.
//!
//! Shared by the reference proxy (the writer, local stack only) and the assertion engine (the
//! reader, on every stack, including real Envoy with coraza-proxy-wasm). It depends on nothing
//! feature-gated.

pub mod line;
pub mod offsets;
pub mod record;
pub mod sort;

pub use sort::{sort_lines, SortedLines};
pub use line::{parse_line, AuditLine, AuditParseError, AUDIT_MARKER, VM_PREFIX};
pub use offsets::{AuditCursor, AuditLines};
pub use record::{
    severity_name, AuditMessage, AuditMessageData, AuditProducer, AuditRecord, AuditRequest, AuditResponse, AuditTransaction,
};

#[cfg(test)]
mod tests;
