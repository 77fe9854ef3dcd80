//! The assertion engine: exact counter deltas from raw samples, and audit records matched to requests.
