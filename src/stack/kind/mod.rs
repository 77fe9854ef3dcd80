//! The kind stack (and an existing cluster): cluster lifecycle, pinned installs, per-scenario objects.

pub mod cache;
pub mod cluster;
pub mod doctor;
pub mod objects;
pub mod plan;
pub mod profile;
pub mod rendered;
pub mod secrets;
