//! Diagnostics bundles: pod logs, events and object status written to files for a failed scenario.
//!
//! Collection never aborts: a failure to read something is written into the bundle in place of
//! what could not be read. Secrets are never read; env values whose name looks sensitive are
//! redacted from every dumped object.

use crate::k8s::apply::{resolve_kind, AppliedObject};
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DynamicObject, ListParams, LogParams};
use kube::core::TypeMeta;
use kube::discovery::Scope;
use kube::Client;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Substrings (upper case) of env var names whose values are never written.
pub const SENSITIVE_ENV: &[&str] = &["LICENSE", "TOKEN", "PASSWORD", "SECRET", "AUTH"];

/// What replaces a redacted value.
pub const REDACTED: &str = "<redacted>";

/// How many trailing lines of each container log a bundle keeps.
pub const LOG_TAIL_LINES: i64 = 5000;

/// Writes `dir/<ns>/`: `pods.txt` (summary), `pods.yaml` (redacted), `events.txt` (by time),
/// `logs/<pod>.<container>[.previous].log`; returns the directory written.
pub async fn dump_namespace(client: &Client, ns: &str, dir: &Path) -> Result<PathBuf> {
    let out = dir.join(sanitize(ns));
    std::fs::create_dir_all(out.join("logs")).with_context(|| format!("create {}", out.display()))?;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods = pods_api.list(&ListParams::default()).await.map(|l| l.items);
    match &pods {
        Ok(pods) => {
            write_collected(&out, "pods.txt", "pod summary", Ok(pod_summary(pods)))?;
            let yaml = pods.iter().map(to_redacted_yaml).collect::<Result<Vec<_>>>().map(|docs| docs.join("---\n"));
            write_collected(&out, "pods.yaml", "pod specs", yaml)?;
        }
        Err(e) => write_collected(&out, "pods.txt", "pod summary", Err(anyhow::anyhow!("list pods in {ns}: {e}")))?,
    }
    for pod in pods.as_deref().unwrap_or_default() {
        for (container, restarts) in containers_of(pod) {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let mut runs = vec![false];
            if restarts > 0 {
                runs.push(true);
            }
            for previous in runs {
                let lp = LogParams { container: Some(container.clone()), previous, tail_lines: Some(LOG_TAIL_LINES), timestamps: true, ..Default::default() };
                let file = format!("{}.{}{}.log", sanitize(&name), sanitize(&container), if previous { ".previous" } else { "" });
                let what = format!("log of {ns}/{name} container {container}{}", if previous { " (previous)" } else { "" });
                let text = pods_api.logs(&name, &lp).await.map_err(anyhow::Error::from);
                write_collected(&out.join("logs"), &file, &what, text)?;
            }
        }
    }
    let events = Api::<Event>::namespaced(client.clone(), ns).list(&ListParams::default()).await;
    write_collected(&out, "events.txt", "events", events.map(|l| format_events(l.items)).map_err(anyhow::Error::from))?;
    Ok(out)
}

/// Writes each object (minus managedFields, env values redacted, Secrets skipped) to `dir/objects/<Kind>_<ns>_<name>.yaml`.
pub async fn dump_objects(client: &Client, objects: &[AppliedObject], dir: &Path) -> Result<()> {
    let out = dir.join("objects");
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    for o in objects.iter().filter(|o| o.kind != "Secret") {
        let file = format!("{}_{}_{}.yaml", sanitize(&o.kind), sanitize(o.namespace.as_deref().unwrap_or("_cluster")), sanitize(&o.name));
        write_collected(&out, &file, &o.to_string(), fetch_object(client, o).await)?;
    }
    Ok(())
}

async fn fetch_object(client: &Client, o: &AppliedObject) -> Result<String> {
    let types = TypeMeta { api_version: o.api_version.clone(), kind: o.kind.clone() };
    let (ar, scope) = resolve_kind(client, &types).await?;
    let api: Api<DynamicObject> = match (&scope, &o.namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    };
    match api.get_opt(&o.name).await.with_context(|| format!("get {o}"))? {
        Some(obj) => to_redacted_yaml(&obj),
        None => Ok(format!("# {o} does not exist\n")),
    }
}

/// Writes `text` to `dir/file`, or, when collecting failed, a line saying what failed and why.
pub fn write_collected(dir: &Path, file: &str, what: &str, text: Result<String>) -> Result<()> {
    let body = match text {
        Ok(t) => t,
        Err(e) => format!("ERROR collecting {what}: {e:#}\n"),
    };
    let path = dir.join(file);
    std::fs::write(&path, body).with_context(|| format!("write {}", path.display()))
}

/// YAML of an object without managedFields or last-applied annotations, sensitive env values redacted.
pub fn to_redacted_yaml<T: serde::Serialize>(obj: &T) -> Result<String> {
    let mut v = serde_json::to_value(obj)?;
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            ann.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    redact_env(&mut v);
    serde_saphyr::to_string(&v).context("render YAML")
}

/// Replaces, anywhere in `v`, the `value` of `env` entries whose name contains a [`SENSITIVE_ENV`] word.
pub fn redact_env(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(env)) = map.get_mut("env") {
                for var in env.iter_mut() {
                    let sensitive = var.get("name").and_then(Value::as_str).is_some_and(is_sensitive);
                    if sensitive && var.get("value").is_some() {
                        var["value"] = Value::String(REDACTED.into());
                    }
                }
            }
            map.values_mut().for_each(redact_env);
        }
        Value::Array(items) => items.iter_mut().for_each(redact_env),
        _ => {}
    }
}

fn is_sensitive(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SENSITIVE_ENV.iter().any(|w| upper.contains(w))
}

/// (container name, restart count) for init and regular containers.
fn containers_of(pod: &Pod) -> Vec<(String, i32)> {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let restarts = |name: &str| {
        status
            .into_iter()
            .flat_map(|s| s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten()))
            .find(|cs| cs.name == name)
            .map_or(0, |cs| cs.restart_count)
    };
    spec.into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()))
        .map(|c| (c.name.clone(), restarts(&c.name)))
        .collect()
}

fn pod_summary(pods: &[Pod]) -> String {
    let mut out = String::new();
    for p in pods {
        let name = p.metadata.name.as_deref().unwrap_or("?");
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
        let ready = crate::k8s::waits::pod_unready(p).unwrap_or_else(|| "Ready".into());
        let restarts: i32 = containers_of(p).iter().map(|(_, r)| r).sum();
        out.push_str(&format!("{name}\tphase={phase}\t{ready}\trestarts={restarts}\n"));
    }
    if out.is_empty() {
        out.push_str("(no pods)\n");
    }
    out
}

/// One line per event, oldest first: `time type reason Kind/name: message (xN)`.
pub fn format_events(mut events: Vec<Event>) -> String {
    let when = |e: &Event| {
        e.event_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
            .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    events.sort_by_key(|e| when(e));
    let mut out = String::new();
    for e in &events {
        let t = when(e).map_or_else(|| "-".to_string(), |t| t.to_string());
        let count = e.count.filter(|&c| c > 1).map_or(String::new(), |c| format!(" (x{c})"));
        out.push_str(&format!(
            "{t} {} {} {}/{}: {}{count}\n",
            e.type_.as_deref().unwrap_or("-"),
            e.reason.as_deref().unwrap_or("-"),
            e.involved_object.kind.as_deref().unwrap_or("?"),
            e.involved_object.name.as_deref().unwrap_or("?"),
            e.message.as_deref().unwrap_or("").trim_end(),
        ));
    }
    if out.is_empty() {
        out.push_str("(no events)\n");
    }
    out
}

/// A file-name-safe version of a Kubernetes name.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests;
