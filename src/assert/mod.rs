//! The assertion engine: exact counter deltas from raw samples, and audit records matched to requests.

pub mod audit;
pub mod counters;
pub mod prom;
pub mod scrape;
