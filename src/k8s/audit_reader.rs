//! The audit reader: an ephemeral container attached to a running Envoy Gateway proxy pod.
//!
//! The rendered EnvoyProxy runs envoy with `--log-path /access_logs/envoy.log` on an emptyDir, and
//! the proxy image is distroless (no `sh`, `wc`, `tail`), so the file cannot be read by exec in
//! `envoy`. The harness must not change the resource under test to fix that, so it adds nothing to
//! the EnvoyProxy or the Deployment Envoy Gateway renders from it: instead it adds an *ephemeral
//! container* to each proxy pod (the `pods/ephemeralcontainers` subresource), with a small pinned
//! image (the profile's `audit_reader.image`, e.g. `busybox:1.36`) that sleeps and mounts the pod
//! volume holding the log read-only. The file is then read by exec in that container with the
//! existing [`AuditSource::File`] script.
//!
//! Requirements: Kubernetes >= 1.25 (ephemeral containers are GA there), and RBAC permission to
//! `patch` `pods/ephemeralcontainers` in the proxy namespace (kind's admin kubeconfig has it).
//! An ephemeral container can never be removed or changed: it lives as long as the pod (its `sleep`
//! ends after a day; a terminated reader is replaced by a new one with the next free name).
//!
//! NOT RUN against a real cluster where this was written (no registry, no images): the request
//! shape and the wait are tested against a mock API server only. See docs/kind.md.

use super::audit::{detect_audit_source, locate_envoy_log, AuditSource, EnvoyLog, LogVolume, ENVOY_CONTAINER};
use crate::wait::{self, Check};
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Capabilities, EphemeralContainer, Pod, SeccompProfile, SecurityContext, VolumeMount};
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use std::time::Duration;

/// Name of the first audit reader in a pod; later ones (after a reader terminated) get `-2`, `-3`, ...
pub const READER_NAME: &str = "waf-e2e-audit-reader";
/// Where the reader mounts the log volume (read-only).
pub const READER_MOUNT: &str = "/waf-e2e-audit";
/// The reader's user and group: Envoy Gateway's envoy user (65532), so it can read the log under
/// `runAsNonRoot` pods and files envoy created with mode 0600.
pub const READER_UID: i64 = 65532;
/// The field manager of the ephemeral-containers patch.
pub const READER_FIELD_MANAGER: &str = "waf-e2e-audit-reader";
/// How long the reader's `sleep` keeps it running (a day; longer than any run).
pub const READER_SLEEP_SECONDS: &str = "86400";

/// How to attach audit readers: the pinned image and how long to wait for one to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReader {
    /// Pinned image with `sh`, `wc` and `tail` (e.g. `busybox:1.36`).
    pub image: String,
    /// Deadline for the reader to be running (image pull included), from `Timeouts::audit_reader_running`.
    pub running_timeout: Duration,
}

/// The ephemeral container that reads `volume`: sleeps, mounts the volume read-only, runs unprivileged.
pub fn reader_container(name: &str, image: &str, volume: &LogVolume) -> EphemeralContainer {
    EphemeralContainer {
        name: name.to_string(),
        image: Some(image.to_string()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["sleep".into(), READER_SLEEP_SECONDS.into()]),
        // The whole volume, no subPath: the file is found below it at `<subPath>/<rel>` (see LogVolume::path_in).
        volume_mounts: Some(vec![VolumeMount {
            name: volume.volume.clone(),
            mount_path: READER_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        // Compliant with the `restricted` Pod Security Standard, so it is admitted wherever the proxy is.
        security_context: Some(SecurityContext {
            run_as_user: Some(READER_UID),
            run_as_group: Some(READER_UID),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The strategic-merge patch of `pods/ephemeralcontainers` that adds `container` (merged by name, so
/// existing ephemeral containers are kept).
pub fn attach_patch(container: &EphemeralContainer) -> serde_json::Value {
    serde_json::json!({ "spec": { "ephemeralContainers": [container] } })
}

/// What [`choose_reader`] decided for a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum ReaderChoice {
    /// A reader of this image and volume is already attached and not terminated: wait for it.
    Reuse(EphemeralContainer),
    /// Attach this new reader.
    Add(EphemeralContainer),
}

/// Reuses an attached, not terminated reader of the same image and volume, or names a new one
/// (`waf-e2e-audit-reader`, then `-2`, ...: ephemeral container names can never be reused).
pub fn choose_reader(pod: &Pod, image: &str, volume: &LogVolume) -> ReaderChoice {
    let spec = pod.spec.as_ref();
    let ephemeral = spec.and_then(|s| s.ephemeral_containers.as_deref()).unwrap_or_default();
    let statuses = pod.status.as_ref().and_then(|s| s.ephemeral_container_statuses.as_deref()).unwrap_or_default();
    let terminated = |name: &str| {
        statuses.iter().any(|s| s.name == name && s.state.as_ref().is_some_and(|st| st.terminated.is_some()))
    };
    let usable = ephemeral.iter().find(|c| {
        c.name.starts_with(READER_NAME)
            && c.image.as_deref() == Some(image)
            && volume.path_in(c.volume_mounts.as_deref().unwrap_or_default()).is_some()
            && !terminated(&c.name)
    });
    if let Some(c) = usable {
        return ReaderChoice::Reuse(c.clone());
    }
    let taken: Vec<&str> = spec
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).chain(ephemeral.iter().map(|c| c.name.as_str())).collect())
        .unwrap_or_default();
    let name = std::iter::once(READER_NAME.to_string())
        .chain((2..).map(|n| format!("{READER_NAME}-{n}")))
        .find(|n| !taken.contains(&n.as_str()))
        .unwrap_or_else(|| READER_NAME.to_string());
    ReaderChoice::Add(reader_container(&name, image, volume))
}

/// Whether ephemeral container `name` of `pod` is running; otherwise what its status says.
pub fn reader_running(pod: &Pod, name: &str) -> Check<()> {
    let statuses = pod.status.as_ref().and_then(|s| s.ephemeral_container_statuses.as_deref()).unwrap_or_default();
    let Some(state) = statuses.iter().find(|s| s.name == name).and_then(|s| s.state.as_ref()) else {
        return Check::NotYet(format!("no status for ephemeral container {name} yet"));
    };
    if state.running.is_some() {
        return Check::Met(());
    }
    if let Some(w) = &state.waiting {
        return Check::NotYet(format!(
            "waiting: {} {}",
            w.reason.as_deref().unwrap_or("(no reason)"),
            w.message.as_deref().unwrap_or("")
        ));
    }
    if let Some(t) = &state.terminated {
        return Check::NotYet(format!(
            "terminated (exit code {}): {} {}",
            t.exit_code,
            t.reason.as_deref().unwrap_or("(no reason)"),
            t.message.as_deref().unwrap_or("")
        ));
    }
    Check::NotYet("state unknown".into())
}

/// The audit source of one proxy pod, attaching an audit reader first when envoy's log file is on a
/// volume that no running container mounts (see module docs); stderr logging needs none.
pub async fn ensure_audit_reader(client: &Client, ns: &str, pod: &str, reader: &AuditReader) -> Result<AuditSource> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let current = api.get(pod).await.with_context(|| format!("get Pod {ns}/{pod}"))?;
    let source = detect_audit_source(&current);
    let volume = match (&source, locate_envoy_log(&current)) {
        (AuditSource::File { container, .. }, EnvoyLog::Volume(v)) if container == ENVOY_CONTAINER => v,
        (AuditSource::File { container, path }, EnvoyLog::RootFs { .. }) if container == ENVOY_CONTAINER => {
            tracing::warn!(%ns, %pod, %path, "envoy's --log-path is on no pod volume: an audit reader cannot see it; trying exec in envoy");
            return Ok(source);
        }
        _ => return Ok(source),
    };
    let container = match choose_reader(&current, &reader.image, &volume) {
        ReaderChoice::Reuse(c) => c,
        ReaderChoice::Add(c) => {
            tracing::info!(%ns, %pod, name = %c.name, image = %reader.image, volume = %volume.volume, "attaching audit reader");
            let params = PatchParams { field_manager: Some(READER_FIELD_MANAGER.into()), ..Default::default() };
            api.patch_ephemeral_containers(pod, &params, &Patch::Strategic(attach_patch(&c))).await.with_context(|| {
                format!(
                    "attach audit reader {} ({}) to Pod {ns}/{pod}: adding an ephemeral container needs Kubernetes >= 1.25 \
                     and permission to patch pods/ephemeralcontainers in {ns}",
                    c.name, reader.image
                )
            })?;
            c
        }
    };
    let name = container.name.clone();
    wait::until(&format!("audit reader {name} ({}) running in Pod {ns}/{pod}", reader.image), reader.running_timeout, || {
        let (api, name) = (api.clone(), name.clone());
        async move { Ok(reader_running(&api.get(pod).await?, &name)) }
    })
    .await?;
    let path = volume
        .path_in(container.volume_mounts.as_deref().unwrap_or_default())
        .with_context(|| format!("audit reader {name} in Pod {ns}/{pod} does not mount volume {}", volume.volume))?;
    Ok(AuditSource::File { container: name, path })
}

/// The audit source of every pod: with `reader`, attaching audit readers where needed; without, as detected.
pub async fn audit_sources(
    client: &Client,
    pods: &[(String, String)],
    reader: Option<&AuditReader>,
) -> Result<Vec<(String, String, AuditSource)>> {
    let mut out = Vec::with_capacity(pods.len());
    for (ns, pod) in pods {
        let source = match reader {
            Some(r) => ensure_audit_reader(client, ns, pod, r).await?,
            None => {
                let spec = Api::<Pod>::namespaced(client.clone(), ns).get(pod).await.with_context(|| format!("get Pod {ns}/{pod}"))?;
                detect_audit_source(&spec)
            }
        };
        out.push((ns.clone(), pod.clone(), source));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
