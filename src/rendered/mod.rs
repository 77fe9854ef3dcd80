//! The resources under test as rendered by the operator, and their translation (PodMonitor -> Prometheus scrape config).
