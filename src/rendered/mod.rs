//! The resources under test as rendered by the operator, and their translation (PodMonitor -> Prometheus scrape config).
//!
//! - [`RenderedSet::load`] reads `fixtures/rendered/` (or any directory / file of rendered YAML);
//! - [`scrape_config`] / [`render_scrape_config`] turn the PodMonitor into the Prometheus config the
//!   Prometheus Operator would generate, pointed at a static [`PodTarget`];
//! - [`cli`] holds `waf-e2e scrape-config`.

pub mod cli;
pub mod load;
pub mod model;
pub mod translate;

pub use load::{load_podmonitor_file, parse_podmonitor, RenderedDocument, RenderedSet};
pub use model::PodMonitor;
pub use translate::{
    prometheus_duration, render_scrape_config, sanitize_label_name, scrape_config, PodTarget, PrometheusConfig,
    PromRelabel, ScrapeConfig, DEFAULT_PROXY_NAMESPACE,
};
