//! Kubernetes operations shared by the cluster stacks: server-side apply, named waits, port-forwards, audit-log reads, diagnostics.
