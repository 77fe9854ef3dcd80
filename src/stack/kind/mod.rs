//! The kind stack (and an existing cluster): cluster lifecycle, pinned installs, per-scenario objects.
