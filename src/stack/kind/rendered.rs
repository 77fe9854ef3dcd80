//! The operator-rendered resources (`--rendered DIR`), read just enough to apply them and name the scrape pool.
//!
//! A full loader lives elsewhere (`crate::rendered`); this reads only kind, name and namespace.

use crate::error::HarnessError;
use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};

/// A resource's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjRef {
    /// `kind`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, empty for cluster-scoped resources.
    pub namespace: String,
}

impl std::fmt::Display for ObjRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One rendered file: its text (applied as is) and what it holds.
#[derive(Debug, Clone)]
pub struct RenderedFile {
    /// The file.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// The resources in it, in order.
    pub objects: Vec<ObjRef>,
}

/// The rendered resources under test.
#[derive(Debug, Clone)]
pub struct RenderedSet {
    /// The directory they came from.
    pub dir: PathBuf,
    /// Every `*.yaml`/`*.yml` file, sorted by name.
    pub files: Vec<RenderedFile>,
    /// The PodMonitor whose scrape job the assertions use.
    pub podmonitor: ObjRef,
    /// The EnvoyProxy, when one is rendered.
    pub envoyproxy: Option<ObjRef>,
}

impl RenderedSet {
    /// Reads `dir`; a missing directory or one without a namespaced PodMonitor is a usage error (exit 2).
    pub fn load(dir: &Path) -> Result<RenderedSet> {
        let usage = |m: String| -> anyhow::Error { HarnessError::Usage(m).into() };
        let entries = std::fs::read_dir(dir).map_err(|e| usage(format!("--rendered {}: {e}", dir.display())))?;
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        paths.sort();
        let mut files = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let objects = objects_in(&text).map_err(|e| usage(format!("{}: {e:#}", path.display())))?;
            files.push(RenderedFile { path, text, objects });
        }
        let all: Vec<&ObjRef> = files.iter().flat_map(|f| &f.objects).collect();
        let podmonitors: Vec<&ObjRef> = all.iter().copied().filter(|o| o.kind == "PodMonitor").collect();
        let podmonitor = match podmonitors.as_slice() {
            [one] => (*one).clone(),
            [] => return Err(usage(format!("--rendered {}: no PodMonitor found in *.yaml", dir.display()))),
            many => {
                let names: Vec<String> = many.iter().map(|o| o.to_string()).collect();
                return Err(usage(format!("--rendered {}: several PodMonitors ({}), expected one", dir.display(), names.join(", "))));
            }
        };
        if podmonitor.namespace.is_empty() {
            return Err(usage(format!("{podmonitor} has no metadata.namespace; the scrape pool name needs it")));
        }
        let envoyproxy = all.iter().find(|o| o.kind == "EnvoyProxy").map(|o| (*o).clone());
        Ok(RenderedSet { dir: dir.to_path_buf(), files, podmonitor, envoyproxy })
    }

    /// The scrape pool Prometheus Operator makes of the PodMonitor (`podMonitor/<ns>/<name>/0`).
    pub fn scrape_pool(&self) -> String {
        format!("podMonitor/{}/{}/0", self.podmonitor.namespace, self.podmonitor.name)
    }
}

/// The kind/name/namespace of every document in a multi-document YAML text (empty documents skipped).
pub fn objects_in(text: &str) -> Result<Vec<ObjRef>> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(text).map_err(|e| anyhow!("{e}"))?;
    let mut out = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let field = |p: &str| doc.pointer(p).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let (kind, name) = (field("/kind"), field("/metadata/name"));
        if kind.is_empty() || name.is_empty() {
            return Err(anyhow!("document {} has no kind or metadata.name", i + 1));
        }
        out.push(ObjRef { kind, name, namespace: field("/metadata/namespace") });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODMONITOR: &str = "---\n# rendered by the operator\napiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\n\
metadata:\n  name: tigera-waf-envoy\n  namespace: tigera-prometheus\nspec:\n  podMetricsEndpoints:\n    - port: metrics\n";
    const OTHERS: &str = "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: EnvoyProxy\nmetadata:\n  name: waf\n  namespace: envoy-gateway-system\n\
---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: allow-prometheus-waf\n---\n";

    #[test]
    fn the_scrape_pool_is_named_after_the_rendered_podmonitor() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("podmonitor.yaml"), PODMONITOR).unwrap();
        std::fs::write(tmp.path().join("others.yml"), OTHERS).unwrap();
        std::fs::write(tmp.path().join("README.md"), "not yaml").unwrap();
        let set = RenderedSet::load(tmp.path()).unwrap();
        assert_eq!(set.scrape_pool(), "podMonitor/tigera-prometheus/tigera-waf-envoy/0");
        assert_eq!(set.envoyproxy.as_ref().unwrap().to_string(), "EnvoyProxy envoy-gateway-system/waf");
        assert_eq!(set.files.len(), 2);
        assert_eq!(set.files[0].objects[1].to_string(), "GlobalNetworkPolicy allow-prometheus-waf");
    }

    #[test]
    fn a_missing_directory_and_a_directory_without_podmonitor_are_usage_errors() {
        let err = RenderedSet::load(Path::new("/nonexistent/rendered")).unwrap_err();
        assert_eq!(HarnessError::classify(err).exit_code(), 2);
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("others.yaml"), OTHERS).unwrap();
        let err = RenderedSet::load(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("no PodMonitor"), "{err}");
    }
}
