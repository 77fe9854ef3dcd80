//! Server-side apply of multi-document YAML, with discovery of each document's kind and scope.
//!
//! Documents are applied in file order. A file that mixes CustomResourceDefinitions with objects
//! of those kinds cannot be applied in one pass (the kinds are unknown until the CRDs are
//! Established): use [`apply_manifests_crds_first`], or [`parse_manifests`] +
//! [`Manifest::is_crd`] + [`apply_parsed`] with a `crd_established` wait in between.

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::gvk::GroupVersion;
use kube::core::TypeMeta;
use kube::discovery::{ApiResource, Scope};
use kube::Client;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// Namespace given to namespaced objects whose document names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One object that was applied: enough to find it again (waits, diagnostics).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppliedObject {
    /// `group/version` or `v1`.
    pub api_version: String,
    /// The object's kind.
    pub kind: String,
    /// Its namespace; `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl fmt::Display for AppliedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One parsed YAML document, with where it came from for error messages.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file or URL the document was read from.
    pub source: String,
    /// 1-based position among the non-empty documents of `source`.
    pub index: usize,
    /// The document as an object; `types` is always set.
    pub object: DynamicObject,
}

impl Manifest {
    /// The document's `apiVersion`.
    pub fn api_version(&self) -> &str {
        self.object.types.as_ref().map_or("", |t| t.api_version.as_str())
    }

    /// The document's `kind`.
    pub fn kind(&self) -> &str {
        self.object.types.as_ref().map_or("", |t| t.kind.as_str())
    }

    /// The document's `metadata.name`.
    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or("")
    }

    /// True for a CustomResourceDefinition (any apiextensions version).
    pub fn is_crd(&self) -> bool {
        self.kind() == "CustomResourceDefinition" && self.api_version().starts_with("apiextensions.k8s.io/")
    }

    fn locate(&self) -> String {
        format!("{} document {}", self.source, self.index)
    }
}

/// Splits multi-document YAML into objects; empty and null documents are skipped, zero documents is an error.
pub fn parse_manifests(yaml: &str, source: &str) -> Result<Vec<Manifest>> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_str_multiple(yaml).map_err(|e| anyhow!("parse YAML {source}: {e}"))?;
    let mut out = Vec::new();
    let mut index = 0;
    for doc in docs {
        if doc.is_null() {
            continue;
        }
        index += 1;
        let object = document_object(doc).with_context(|| format!("{source} document {index}"))?;
        // `kind: List` (what `kubectl get -o yaml` prints) expands to its items, in order.
        if let Some(items) = list_items(&object) {
            for (i, item) in items.into_iter().enumerate() {
                let object = document_object(item)
                    .with_context(|| format!("{source} document {index} item {}", i + 1))?;
                out.push(Manifest { source: source.to_string(), index, object });
            }
            continue;
        }
        out.push(Manifest { source: source.to_string(), index, object });
    }
    if out.is_empty() {
        bail!("{source} holds no Kubernetes objects (zero non-empty YAML documents)");
    }
    Ok(out)
}

fn document_object(doc: serde_json::Value) -> Result<DynamicObject> {
    if !doc.is_object() {
        bail!("not a mapping but {}", json_type(&doc));
    }
    let object: DynamicObject = serde_json::from_value(doc).context("not a Kubernetes object")?;
    let Some(types) = &object.types else { bail!("has no apiVersion/kind") };
    if types.api_version.is_empty() || types.kind.is_empty() {
        bail!("has an empty apiVersion or kind");
    }
    if object.metadata.name.as_deref().unwrap_or("").is_empty() && !types.kind.ends_with("List") {
        bail!("{} {} has no metadata.name", types.api_version, types.kind);
    }
    Ok(object)
}

fn list_items(object: &DynamicObject) -> Option<Vec<serde_json::Value>> {
    let types = object.types.as_ref()?;
    if types.api_version != "v1" || !types.kind.ends_with("List") {
        return None;
    }
    object.data.get("items")?.as_array().cloned()
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a sequence",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// What discovery found for one group/version: each kind's resource and scope.
type Served = Vec<(ApiResource, Scope)>;

/// Resolves kinds through discovery, one request per group/version, cached for one apply.
#[derive(Default)]
struct KindCache(HashMap<String, Served>);

impl KindCache {
    async fn resolve(&mut self, client: &Client, m: &Manifest) -> Result<(ApiResource, Scope)> {
        let types = m.object.types.clone().unwrap_or_default();
        let context = || format!("{}: {} {} {}", m.locate(), types.api_version, types.kind, m.name());
        if !self.0.contains_key(&types.api_version) {
            let served = discover_group_version(client, &types).await.with_context(context)?;
            self.0.insert(types.api_version.clone(), served);
        }
        find_kind(&self.0[&types.api_version], &types).with_context(context)
    }
}

/// Every kind served under `types.api_version` (404: the group/version is not served).
async fn discover_group_version(client: &Client, types: &TypeMeta) -> Result<Served> {
    let gv: GroupVersion = types
        .api_version
        .parse()
        .map_err(|e| anyhow!("invalid apiVersion {:?}: {e}", types.api_version))?;
    match kube::discovery::pinned_group(client, &gv).await {
        Ok(group) => Ok(group.versioned_resources(&gv.version).into_iter().map(|(ar, caps)| (ar, caps.scope)).collect()),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(unknown_kind(types, "the API server does not serve this group/version")),
        Err(e) => Err(anyhow!(e).context(format!("discover {}", types.api_version))),
    }
}

fn find_kind(served: &Served, types: &TypeMeta) -> Result<(ApiResource, Scope)> {
    served
        .iter()
        .find(|(ar, _)| ar.kind == types.kind)
        .cloned()
        .ok_or_else(|| unknown_kind(types, "the group/version exists but does not serve this kind"))
}

/// Finds the resource (plural) and scope of an apiVersion/kind; an unknown kind is an error naming it.
pub async fn resolve_kind(client: &Client, types: &TypeMeta) -> Result<(ApiResource, Scope)> {
    find_kind(&discover_group_version(client, types).await?, types)
}

fn unknown_kind(types: &TypeMeta, why: &str) -> anyhow::Error {
    anyhow!(
        "unknown kind {} {}: {why} (is its CRD installed and Established? a CRD applied in the same file \
         needs apply_manifests_crds_first)",
        types.api_version,
        types.kind
    )
}

/// Applies every document of `yaml` (server-side, forced, as `field_manager`) in file order.
pub async fn apply_manifests(client: &Client, yaml: &str, source: &str, field_manager: &str) -> Result<Vec<AppliedObject>> {
    let manifests = parse_manifests(yaml, source)?;
    apply_parsed(client, &manifests, field_manager).await
}

/// Applies the CRDs of `yaml` first, waits until each is Established, then applies the rest.
pub async fn apply_manifests_crds_first(
    client: &Client,
    yaml: &str,
    source: &str,
    field_manager: &str,
    crd_timeout: Duration,
) -> Result<Vec<AppliedObject>> {
    let manifests = parse_manifests(yaml, source)?;
    let (crds, rest): (Vec<Manifest>, Vec<Manifest>) = manifests.into_iter().partition(Manifest::is_crd);
    let mut applied = apply_parsed(client, &crds, field_manager).await?;
    for crd in &applied {
        crate::k8s::waits::crd_established(client, &crd.name, crd_timeout).await?;
    }
    // Discovery can lag a moment behind Established: wait until it serves the new kinds.
    let new_groups: Vec<&str> = applied.iter().filter_map(|c| c.name.split_once('.').map(|(_, g)| g)).collect();
    let mut pending: Vec<TypeMeta> = rest
        .iter()
        .filter(|m| m.api_version().split_once('/').is_some_and(|(g, _)| new_groups.contains(&g)))
        .filter_map(|m| m.object.types.clone())
        .collect();
    pending.sort_by(|a, b| (&a.api_version, &a.kind).cmp(&(&b.api_version, &b.kind)));
    pending.dedup();
    for types in &pending {
        let what = format!("discovery to serve {} {}", types.api_version, types.kind);
        crate::wait::until(&what, crd_timeout, || async move {
            Ok(match resolve_kind(client, types).await {
                Ok(_) => crate::wait::Check::Met(()),
                Err(e) => crate::wait::Check::NotYet(format!("{e:#}")),
            })
        })
        .await
        .with_context(|| format!("{source}: {what}"))?;
    }
    applied.extend(apply_parsed(client, &rest, field_manager).await?);
    Ok(applied)
}

/// Applies already parsed documents in order; stops at the first failure.
pub async fn apply_parsed(client: &Client, manifests: &[Manifest], field_manager: &str) -> Result<Vec<AppliedObject>> {
    let mut kinds = KindCache::default();
    let mut applied = Vec::with_capacity(manifests.len());
    for m in manifests {
        let (ar, scope) = kinds.resolve(client, m).await?;
        applied.push(apply_one(client, m, &ar, &scope, field_manager).await?);
    }
    Ok(applied)
}

async fn apply_one(client: &Client, m: &Manifest, ar: &ApiResource, scope: &Scope, field_manager: &str) -> Result<AppliedObject> {
    let mut object = m.object.clone();
    let name = m.name().to_string();
    let (api, namespace) = match scope {
        Scope::Namespaced => {
            let ns = object.metadata.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| DEFAULT_NAMESPACE.into());
            object.metadata.namespace = Some(ns.clone());
            (Api::<DynamicObject>::namespaced_with(client.clone(), &ns, ar), Some(ns))
        }
        Scope::Cluster => {
            object.metadata.namespace = None;
            (Api::<DynamicObject>::all_with(client.clone(), ar), None)
        }
    };
    let target = AppliedObject { api_version: ar.api_version.clone(), kind: ar.kind.clone(), namespace, name };
    let params = PatchParams::apply(field_manager).force();
    api.patch(&target.name, &params, &Patch::Apply(&object))
        .await
        .with_context(|| format!("apply {target} ({})", m.locate()))?;
    tracing::debug!(object = %target, "applied");
    Ok(target)
}

/// Deletes a namespace (foreground, so its objects go first); returns false when it did not exist.
pub async fn delete_namespace(client: &Client, name: &str) -> Result<bool> {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.delete(name, &DeleteParams::foreground()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(anyhow!(e).context(format!("delete Namespace {name}"))),
    }
}

#[cfg(test)]
mod api_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_empty_documents_are_skipped_and_indices_count_the_rest() {
        let yaml = "---\n---\n~\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: shop}\n";
        let docs = parse_manifests(yaml, "fixtures/x.yaml").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[0].kind(), docs[0].index), ("Namespace", 1));
        assert_eq!((docs[1].kind(), docs[1].index), ("ConfigMap", 2));
    }

    #[test]
    fn a_file_without_objects_is_an_error_naming_the_file() {
        for yaml in ["", "---\n", "# nothing\n---\n~\n"] {
            let err = parse_manifests(yaml, "kind/empty.yaml").unwrap_err().to_string();
            assert!(err.contains("kind/empty.yaml") && err.contains("zero"), "{err}");
        }
    }

    #[test]
    fn a_document_without_kind_names_the_source_and_index() {
        let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nmetadata: {name: b}\n";
        let err = format!("{:#}", parse_manifests(yaml, "x.yaml").unwrap_err());
        assert!(err.contains("x.yaml document 2"), "{err}");
    }

    #[test]
    fn a_list_expands_to_its_items() {
        let yaml = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n";
        let docs = parse_manifests(yaml, "x.yaml").unwrap();
        assert_eq!(docs.iter().map(Manifest::name).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn crds_are_recognised_by_group_and_kind() {
        let yaml = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: gateways.gateway.networking.k8s.io}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: eg}\n";
        let docs = parse_manifests(yaml, "x.yaml").unwrap();
        assert!(docs[0].is_crd());
        assert!(!docs[1].is_crd());
    }

    #[test]
    fn applied_objects_display_as_kind_namespace_name() {
        let o = AppliedObject { api_version: "gateway.networking.k8s.io/v1".into(), kind: "HTTPRoute".into(), namespace: Some("shop".into()), name: "web".into() };
        assert_eq!(o.to_string(), "HTTPRoute shop/web");
        let c = AppliedObject { namespace: None, kind: "GatewayClass".into(), name: "eg".into(), ..o };
        assert_eq!(c.to_string(), "GatewayClass eg");
    }
}
