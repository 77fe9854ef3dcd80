//! The schemas to check against: CustomResourceDefinitions read from YAML files (any multi-document
//! file, any mix of kinds), indexed by group, kind and version.

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The group whose `v3` objects the Calico API server serves from the `crd.projectcalico.org/v1` CRDs.
pub const CALICO_V3_GROUP: &str = "projectcalico.org";
/// The CRD group backing [`CALICO_V3_GROUP`] in Calico releases without v3 CRDs (v3.31 and older).
pub const CALICO_CRD_GROUP: &str = "crd.projectcalico.org";

/// One served version of one CRD.
#[derive(Debug, Clone)]
pub struct CrdVersion {
    /// `Namespaced` or `Cluster`.
    pub scope: String,
    /// The version's `openAPIV3Schema`.
    pub schema: Value,
    /// Whether the version is served.
    pub served: bool,
    /// The file the CRD came from.
    pub file: PathBuf,
}

/// Every CRD found, by (group, kind) then version name.
#[derive(Debug, Clone, Default)]
pub struct CrdIndex {
    by_kind: BTreeMap<(String, String), BTreeMap<String, CrdVersion>>,
    /// Files read (YAML files with at least one CRD).
    pub files: Vec<PathBuf>,
    /// CRDs found, parsed or not (a filtered load parses only the kinds it is asked for).
    pub found: usize,
}

/// Which (group, kind) pairs a load parses; everything when `None`.
pub type Wanted<'a> = Option<&'a dyn Fn(&str, &str) -> bool>;

/// What a lookup found for an object's apiVersion and kind.
#[derive(Debug, Clone)]
pub enum Lookup<'a> {
    /// The schema of exactly this group, version and kind.
    Found(&'a CrdVersion),
    /// A Calico `projectcalico.org/v3` object, checked against `crd.projectcalico.org/<version>`.
    CalicoBacking(&'a CrdVersion, String),
    /// The kind exists, but not in this version (or the version is not served).
    WrongVersion(Vec<String>),
    /// No CRD of this group and kind.
    Missing,
}

impl CrdIndex {
    /// Reads every `*.yaml`/`*.yml` under each path (a file, or a directory searched recursively).
    pub fn load(paths: &[PathBuf]) -> Result<CrdIndex> {
        CrdIndex::load_wanted(paths, None)
    }

    /// [`CrdIndex::load`], parsing only the CRDs whose (group, kind) `wanted` accepts: release CRD files
    /// are megabytes of YAML, and a check needs a few of their kinds. A document whose group and kind
    /// a line scan cannot find is parsed anyway.
    pub fn load_wanted(paths: &[PathBuf], wanted: Wanted<'_>) -> Result<CrdIndex> {
        let mut index = CrdIndex::default();
        for path in paths {
            let mut files = Vec::new();
            collect_yaml(path, &mut files).with_context(|| format!("schemas {}", path.display()))?;
            if files.is_empty() {
                return Err(anyhow!("--schemas {}: no YAML files there", path.display()));
            }
            for file in files {
                let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
                index.add_text_wanted(&file, &text, wanted)?;
            }
        }
        Ok(index)
    }

    /// Adds the CRDs of one multi-document YAML text (other kinds are ignored).
    pub fn add_text(&mut self, file: &Path, text: &str) -> Result<usize> {
        self.add_text_wanted(file, text, None)
    }

    /// [`CrdIndex::add_text`], parsing only the documents `wanted` accepts (see [`CrdIndex::load_wanted`]).
    pub fn add_text_wanted(&mut self, file: &Path, text: &str, wanted: Wanted<'_>) -> Result<usize> {
        let mut docs: Vec<Value> = Vec::new();
        let mut found = 0;
        for doc_text in split_documents(text) {
            let scanned = scan_group_kind(doc_text);
            if scanned.is_some() {
                found += 1;
            }
            let parse = match (&scanned, wanted) {
                (Some((group, kind)), Some(w)) => w(group, kind),
                _ => true,
            };
            if parse {
                let doc: Value = serde_saphyr::from_str(doc_text).map_err(|e| anyhow!("parse YAML {}: {e}", file.display()))?;
                if scanned.is_none() && is_crd(&doc) {
                    found += 1;
                }
                docs.push(doc);
            }
        }
        self.found += found;
        if found > 0 && !self.files.contains(&file.to_path_buf()) {
            self.files.push(file.to_path_buf());
        }
        let mut added = 0;
        for doc in docs.iter().filter(|d| is_crd(d)) {
            let spec = &doc["spec"];
            let (Some(group), Some(kind)) = (spec["group"].as_str(), spec["names"]["kind"].as_str()) else { continue };
            let scope = spec["scope"].as_str().unwrap_or("Namespaced").to_string();
            let versions = self.by_kind.entry((group.to_string(), kind.to_string())).or_default();
            for v in spec["versions"].as_array().into_iter().flatten() {
                let Some(name) = v["name"].as_str() else { continue };
                // apiextensions.k8s.io/v1beta1 CRDs carry one schema under spec.validation.
                let schema = v.pointer("/schema/openAPIV3Schema").or_else(|| spec.pointer("/validation/openAPIV3Schema")).cloned().unwrap_or(Value::Null);
                versions.insert(
                    name.to_string(),
                    CrdVersion { scope: scope.clone(), schema, served: v["served"].as_bool().unwrap_or(true), file: file.to_path_buf() },
                );
            }
            added += 1;
        }
        Ok(added)
    }

    /// How many CRDs (group, kind pairs) the index holds.
    pub fn len(&self) -> usize {
        self.by_kind.len()
    }

    /// True when no CRD was found.
    pub fn is_empty(&self) -> bool {
        self.by_kind.is_empty()
    }

    /// The schema for `apiVersion` and `kind`, with the Calico v3 -> crd.projectcalico.org fallback.
    pub fn lookup(&self, api_version: &str, kind: &str) -> Lookup<'_> {
        let (group, version) = split_api_version(api_version);
        if let Some(versions) = self.by_kind.get(&(group.to_string(), kind.to_string())) {
            return match versions.get(version) {
                Some(v) if v.served => Lookup::Found(v),
                _ => Lookup::WrongVersion(versions.iter().filter(|(_, v)| v.served).map(|(n, _)| n.clone()).collect()),
            };
        }
        if group == CALICO_V3_GROUP && version == "v3" {
            if let Some(versions) = self.by_kind.get(&(CALICO_CRD_GROUP.to_string(), kind.to_string())) {
                if let Some((name, v)) = versions.iter().find(|(_, v)| v.served) {
                    return Lookup::CalicoBacking(v, format!("{CALICO_CRD_GROUP}/{name}"));
                }
            }
        }
        Lookup::Missing
    }
}

/// The documents of a multi-document YAML text (split at `---` lines), empty ones left out.
fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            docs.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    docs.into_iter().filter(|d| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))).collect()
}

/// The (group, kind) of a CRD document in controller-gen's layout (`spec:` / `  group:` /
/// `  names:` / `    kind:`), found by a line scan; `None` for anything else.
fn scan_group_kind(doc: &str) -> Option<(String, String)> {
    let mut lines = doc.lines();
    if !doc.lines().any(|l| l.trim_end() == "kind: CustomResourceDefinition") {
        return None;
    }
    lines.find(|l| l.trim_end() == "spec:")?;
    let mut group = None;
    let mut kind = None;
    let mut in_names = false;
    let unquote = |v: &str| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
    for l in lines {
        if !l.starts_with(' ') && !l.trim().is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("  group:") {
            group = Some(unquote(v));
        }
        if l.starts_with("  ") && !l.starts_with("   ") {
            in_names = l.trim_end() == "  names:";
        } else if in_names {
            if let Some(v) = l.strip_prefix("    kind:") {
                kind = Some(unquote(v));
            }
        }
    }
    Some((group?, kind?))
}

/// `group/version` split; the core group is empty.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

fn is_crd(doc: &Value) -> bool {
    doc["kind"] == "CustomResourceDefinition" && doc["apiVersion"].as_str().is_some_and(|v| v.starts_with("apiextensions.k8s.io/"))
}

fn collect_yaml(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_yaml(&p, out)?;
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
    Ok(())
}

/// Test data: a CRD in controller-gen's layout serving `version` of `group`'s `kind` (plural: the
/// kind in lower case plus `s`), its `openAPIV3Schema` given as JSON, which is YAML flow style.
#[cfg(test)]
pub(crate) fn test_crd(group: &str, kind: &str, scope: &str, version: &str, schema: serde_json::Value) -> String {
    let plural = format!("{}s", kind.to_lowercase());
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {plural}.{group}}}\nspec:\n  group: {group}\n  \
         names: {{kind: {kind}, plural: {plural}}}\n  scope: {scope}\n  versions:\n    - name: {version}\n      served: true\n      \
         storage: true\n      schema: {{openAPIV3Schema: {schema}}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Tier CRD and a document that is not a CRD.
    fn crd() -> String {
        let tier = test_crd("crd.projectcalico.org", "Tier", "Cluster", "v1", serde_json::json!({"type": "object", "properties": {"spec": {"type": "object"}}}));
        format!("{tier}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: not-a-crd}}\n")
    }

    #[test]
    fn crds_are_found_by_group_kind_and_version_and_calico_v3_falls_back_to_the_crd_group() {
        let mut index = CrdIndex::default();
        assert_eq!(index.add_text(Path::new("t.yaml"), &crd()).unwrap(), 1);
        assert!(matches!(index.lookup("crd.projectcalico.org/v1", "Tier"), Lookup::Found(v) if v.scope == "Cluster"));
        assert!(matches!(index.lookup("projectcalico.org/v3", "Tier"), Lookup::CalicoBacking(_, g) if g == "crd.projectcalico.org/v1"));
        assert!(matches!(index.lookup("crd.projectcalico.org/v2", "Tier"), Lookup::WrongVersion(v) if v == ["v1"]));
        assert!(matches!(index.lookup("projectcalico.org/v3", "GlobalNetworkPolicy"), Lookup::Missing));
    }

    /// controller-gen's layout (block style), which the line scan reads.
    const BLOCK: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: tiers.crd.projectcalico.org\n\
spec:\n  group: crd.projectcalico.org\n  names:\n    kind: Tier\n    plural: tiers\n  scope: Cluster\n  versions:\n  - name: v1\n    served: true\n";

    #[test]
    fn a_filtered_load_parses_only_the_wanted_kinds_but_counts_every_crd() {
        let two = format!("{BLOCK}---\n{}", BLOCK.replace("Tier", "Other").replace("tiers", "others"));
        let mut index = CrdIndex::default();
        let only_tier = |_: &str, kind: &str| kind == "Tier";
        assert_eq!(index.add_text_wanted(Path::new("t.yaml"), &two, Some(&only_tier)).unwrap(), 1);
        assert_eq!((index.len(), index.found), (1, 2));
        assert!(matches!(index.lookup("crd.projectcalico.org/v1", "Other"), Lookup::Missing));
        assert_eq!(scan_group_kind(BLOCK), Some(("crd.projectcalico.org".into(), "Tier".into())));
        // Any other layout is parsed whatever the filter says, so nothing is skipped by mistake.
        assert_eq!(scan_group_kind(crd().split("---").next().unwrap()), None);
        let mut flow = CrdIndex::default();
        let nothing = |_: &str, _: &str| false;
        assert_eq!(flow.add_text_wanted(Path::new("t.yaml"), &crd(), Some(&nothing)).unwrap(), 1);
    }

    #[test]
    fn the_line_scan_finds_group_and_kind_in_every_pinned_release_crd_file() {
        // Where the shared CRDs are present: every document the scan names parses to the same group and kind.
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/crds");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "NOT RUN: the line-scan check against {} (absent)", dir.display());
            return;
        };
        let mut files = Vec::new();
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            collect_yaml(&e.path(), &mut files).unwrap();
        }
        assert!(!files.is_empty());
        for f in files.iter().filter(|f| std::fs::metadata(f).map(|m| m.len() < 200_000).unwrap_or(false)) {
            let text = std::fs::read_to_string(f).unwrap();
            for doc in split_documents(&text) {
                let v: Value = serde_saphyr::from_str(doc).unwrap();
                let parsed = (v["spec"]["group"].as_str().unwrap().to_string(), v["spec"]["names"]["kind"].as_str().unwrap().to_string());
                assert_eq!(scan_group_kind(doc), Some(parsed), "{}", f.display());
            }
        }
    }
}
