//! Reading the proxy's audit-log lines written after a cursor taken before the traffic.
//!
//! Envoy Gateway's proxy image (`envoyproxy/envoy:distroless-*`) holds only `/usr/local/bin/envoy`
//! on a distroless base: no shell, no `cat`, so its `--log-path` file cannot be read by exec in
//! the `envoy` container. Two sources work, chosen per pod by [`detect_audit_source`]:
//!
//! - [`AuditSource::File`]: exec `sh` in a container that mounts the same volume as the log
//!   directory: a sidecar, or (what the kind stack does, leaving the EnvoyProxy under test alone)
//!   an ephemeral busybox container that [`crate::k8s::audit_reader`] attaches to the running pod.
//!   It needs `sh`, `wc` and `tail`. The cursor is a byte offset at the end of the last complete
//!   line; reads return complete lines only and a file that shrank (rotated or truncated) is read
//!   from 0 with a warning. Exact.
//! - [`AuditSource::LogStream`]: the container's log stream, when envoy logs to stderr (no
//!   `--log-path`). The cursor is the CRI timestamp (ns since the epoch) of the last complete line;
//!   lines stamped later are returned. Lines sharing the cursor line's exact timestamp would be
//!   missed, and kubelet serves only the current log file (rotation at 10Mi loses older lines).
//!
//! With `--log-path` and no container mounting its volume, [`AuditSource::File`] in `envoy` itself
//! is tried; it works only with a debug (non-distroless) envoy image, and its error says so.

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::{Pod, VolumeMount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, AttachParams, LogParams};
use kube::Client;
use std::collections::BTreeMap;
use tokio::io::AsyncReadExt;

use crate::audit::offsets::{align_cursor, plan_read, split_complete_lines};
use crate::audit::{AuditCursor, AuditLines};

/// The container running Envoy in an Envoy Gateway proxy pod.
pub const ENVOY_CONTAINER: &str = "envoy";

/// How many trailing bytes a file cursor inspects to find the last complete line.
pub const CURSOR_WINDOW: u64 = 64 * 1024;

/// Where one pod's audit lines are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSource {
    /// A file read by exec of `sh`/`wc`/`tail` in `container`, at `path` as that container sees it.
    File {
        /// Container to exec in.
        container: String,
        /// The log file's path inside that container.
        path: String,
    },
    /// The container's log stream (kubelet), for envoy logging to stderr.
    LogStream {
        /// Container whose log is read.
        container: String,
    },
}

/// Where envoy writes its log, as the pod spec says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvoyLog {
    /// No `--log-path`: envoy logs to stderr, read through the container's log stream.
    Stderr,
    /// `--log-path` on a pod volume, which another container can mount.
    Volume(LogVolume),
    /// `--log-path` on no volume (the image's own filesystem): only exec in `envoy` can read it.
    RootFs {
        /// The log file's path in the envoy container.
        path: String,
    },
}

/// A log file on a pod volume: which volume, and where the file is below the volume's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogVolume {
    /// The log file's path in the envoy container (`/access_logs/envoy.log`).
    pub log_path: String,
    /// The pod volume holding it (`access-logs`).
    pub volume: String,
    /// The envoy mount's `subPath` (empty when the whole volume is mounted).
    pub sub_path: String,
    /// The file's path below the envoy mount (`envoy.log`).
    pub rel: String,
}

impl LogVolume {
    /// The file's path in a container with these mounts, if one of them mounts the volume (whole, or the same subPath).
    pub fn path_in(&self, mounts: &[VolumeMount]) -> Option<String> {
        let m = mounts.iter().find(|m| m.name == self.volume && m.sub_path_expr.is_none())?;
        let theirs = m.sub_path.as_deref().unwrap_or("");
        let base = m.mount_path.trim_end_matches('/');
        if theirs == self.sub_path {
            Some(format!("{base}/{}", self.rel))
        } else if theirs.is_empty() {
            Some(format!("{base}/{}/{}", self.sub_path.trim_matches('/'), self.rel))
        } else {
            None
        }
    }
}

/// Finds envoy's log in an Envoy Gateway proxy pod spec: stderr, a file on a volume, or a file on no volume.
pub fn locate_envoy_log(pod: &Pod) -> EnvoyLog {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let Some(envoy) = containers.iter().find(|c| c.name == ENVOY_CONTAINER) else {
        return EnvoyLog::Stderr;
    };
    let command_line: Vec<String> = envoy.command.iter().flatten().chain(envoy.args.iter().flatten()).cloned().collect();
    let Some(log_path) = log_path_arg(&command_line) else {
        return EnvoyLog::Stderr;
    };
    match volume_holding(&log_path, envoy.volume_mounts.as_deref().unwrap_or_default()) {
        Some(v) => EnvoyLog::Volume(v),
        None => EnvoyLog::RootFs { path: log_path },
    }
}

/// The volume of `mounts` (a container's) holding `log_path`: the mount with the longest mountPath prefix.
pub fn volume_holding(log_path: &str, mounts: &[VolumeMount]) -> Option<LogVolume> {
    let m = mounts
        .iter()
        .filter(|m| m.sub_path_expr.is_none() && path_under(log_path, &m.mount_path).is_some())
        .max_by_key(|m| m.mount_path.len())?;
    Some(LogVolume {
        rel: path_under(log_path, &m.mount_path).unwrap_or_default(),
        volume: m.name.clone(),
        sub_path: m.sub_path.clone().unwrap_or_default(),
        log_path: log_path.to_string(),
    })
}

/// Names of the pod's ephemeral containers that are running now.
pub fn running_ephemeral_containers(pod: &Pod) -> Vec<String> {
    let statuses = pod.status.as_ref().and_then(|s| s.ephemeral_container_statuses.as_deref()).unwrap_or_default();
    statuses.iter().filter(|s| s.state.as_ref().is_some_and(|st| st.running.is_some())).map(|s| s.name.clone()).collect()
}

/// Chooses how to read the audit log of an Envoy Gateway proxy pod from its spec and status (see module docs).
///
/// A file on a volume is read through a container that mounts the same volume: a regular sidecar
/// first, else a running ephemeral container (the audit reader `crate::k8s::audit_reader` attaches).
pub fn detect_audit_source(pod: &Pod) -> AuditSource {
    let volume = match locate_envoy_log(pod) {
        EnvoyLog::Stderr => return AuditSource::LogStream { container: ENVOY_CONTAINER.into() },
        EnvoyLog::RootFs { path } => return AuditSource::File { container: ENVOY_CONTAINER.into(), path },
        EnvoyLog::Volume(v) => v,
    };
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    for c in containers.iter().filter(|c| c.name != ENVOY_CONTAINER) {
        if let Some(path) = volume.path_in(c.volume_mounts.as_deref().unwrap_or_default()) {
            return AuditSource::File { container: c.name.clone(), path };
        }
    }
    let running = running_ephemeral_containers(pod);
    let ephemeral = spec.and_then(|s| s.ephemeral_containers.as_deref()).unwrap_or_default();
    for c in ephemeral.iter().filter(|c| running.contains(&c.name)) {
        if let Some(path) = volume.path_in(c.volume_mounts.as_deref().unwrap_or_default()) {
            return AuditSource::File { container: c.name.clone(), path };
        }
    }
    AuditSource::File { container: ENVOY_CONTAINER.into(), path: volume.log_path }
}

/// The value of envoy's `--log-path` (`-l`) option in a command line, if given.
pub fn log_path_arg(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--log-path" || a == "-l" {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix("--log-path=") {
            return Some(v.to_string());
        }
    }
    None
}

/// The part of `path` below directory `dir`, if it is below it.
fn path_under(path: &str, dir: &str) -> Option<String> {
    let dir = dir.trim_end_matches('/');
    path.strip_prefix(dir)?.strip_prefix('/').map(str::to_string)
}

fn cursor_key(ns: &str, pod: &str, source: &AuditSource) -> String {
    match source {
        AuditSource::File { container, path } => format!("file:{ns}/{pod}/{container}:{path}"),
        AuditSource::LogStream { container } => format!("log:{ns}/{pod}/{container}"),
    }
}

fn parse_key(key: &str) -> Result<(String, String, AuditSource)> {
    let bad = || anyhow!("malformed audit cursor key {key:?}");
    let (kind, rest) = key.split_once(':').ok_or_else(bad)?;
    let (pod_part, path) = match kind {
        "file" => rest.split_once(':').map(|(p, path)| (p, Some(path))).ok_or_else(bad)?,
        "log" => (rest, None),
        _ => return Err(bad()),
    };
    let mut parts = pod_part.splitn(3, '/');
    let (ns, pod, container) = (parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?);
    let source = match path {
        Some(path) => AuditSource::File { container: container.into(), path: path.into() },
        None => AuditSource::LogStream { container: container.into() },
    };
    Ok((ns.into(), pod.into(), source))
}

/// Takes a cursor at the current end of every pod's audit log (source detected from each pod's spec).
pub async fn audit_cursor(client: &Client, pods: &[(String, String)]) -> Result<AuditCursor> {
    let mut with_sources = Vec::with_capacity(pods.len());
    for (ns, pod) in pods {
        let spec = Api::<Pod>::namespaced(client.clone(), ns).get(pod).await.with_context(|| format!("get Pod {ns}/{pod}"))?;
        with_sources.push((ns.clone(), pod.clone(), detect_audit_source(&spec)));
    }
    audit_cursor_with(client, &with_sources).await
}

/// Takes a cursor at the current end of each given source.
pub async fn audit_cursor_with(client: &Client, pods: &[(String, String, AuditSource)]) -> Result<AuditCursor> {
    let mut cursor = BTreeMap::new();
    for (ns, pod, source) in pods {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let position = match source {
            AuditSource::File { container, path } => {
                let read = exec_read(&api, pod, container, path, None).await?;
                align_cursor(read.from, &read.bytes)
            }
            AuditSource::LogStream { container } => {
                let lp = LogParams { container: Some(container.clone()), tail_lines: Some(1), timestamps: true, ..Default::default() };
                let text = api.logs(pod, &lp).await.with_context(|| format!("read log of {ns}/{pod} container {container}"))?;
                split_stamped_lines(&text, 0).1
            }
        };
        tracing::debug!(%ns, %pod, ?source, position, "audit cursor");
        cursor.insert(cursor_key(ns, pod, source), position);
    }
    Ok(AuditCursor(cursor))
}

/// Every complete audit-log line written after `cursor`, tagged `ns/pod`.
pub async fn audit_lines_since(client: &Client, cursor: &AuditCursor) -> Result<AuditLines> {
    Ok(read_since(client, cursor).await?.0)
}

/// Like [`audit_lines_since`], also returning the cursor after the lines read (for incremental polling).
pub async fn read_since(client: &Client, cursor: &AuditCursor) -> Result<(AuditLines, AuditCursor)> {
    let mut lines = Vec::new();
    let mut next = BTreeMap::new();
    for (key, &position) in &cursor.0 {
        let (ns, pod, source) = parse_key(key)?;
        let tag = format!("{ns}/{pod}");
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let (new_lines, after) = match &source {
            AuditSource::File { container, path } => {
                let mut read = exec_read(&api, &pod, container, path, Some(position)).await?;
                if plan_read(position, read.size).rotated {
                    tracing::warn!(%tag, %path, position, size = read.size, "audit log shrank (rotated or truncated); reading it from the start");
                    read = exec_read(&api, &pod, container, path, Some(0)).await?;
                }
                split_complete_lines(read.from, &read.bytes)
            }
            AuditSource::LogStream { container } => {
                let since = (position > 0).then(|| Timestamp::from_second((position / 1_000_000_000) as i64)).transpose()?;
                let lp = LogParams { container: Some(container.clone()), timestamps: true, since_time: since, ..Default::default() };
                let text = api.logs(&pod, &lp).await.with_context(|| format!("read log of {tag} container {container}"))?;
                split_stamped_lines(&text, position)
            }
        };
        lines.extend(new_lines.into_iter().map(|l| (tag.clone(), l)));
        next.insert(key.clone(), after);
    }
    Ok((AuditLines { lines }, AuditCursor(next)))
}

/// What one exec read saw: the file size, where the bytes start, the bytes.
struct ExecRead {
    size: u64,
    from: u64,
    bytes: Vec<u8>,
}

/// Prints `<size> <from>` then the file from byte `from` (`from` < 0: the last CURSOR_WINDOW bytes).
const READ_SCRIPT: &str = r#"f="$1"; from="$2"; win="$3"
size=$(wc -c < "$f") || exit 2
size=$((size))
if [ "$from" -lt 0 ]; then from=$((size > win ? size - win : 0)); fi
echo "$size $from"
if [ "$size" -ge "$from" ]; then exec tail -c +$((from + 1)) "$f"; fi"#;

async fn exec_read(api: &Api<Pod>, pod: &str, container: &str, path: &str, from: Option<u64>) -> Result<ExecRead> {
    let ns = api.namespace().unwrap_or("default").to_string();
    let what = format!("read {path} in {ns}/{pod} container {container}");
    let from_arg = from.map_or("-1".to_string(), |f| f.to_string());
    let cmd = ["sh", "-c", READ_SCRIPT, "sh", path, &from_arg, &CURSOR_WINDOW.to_string()];
    let params = AttachParams::default().container(container).stdin(false).stdout(true).stderr(true);
    let mut proc = api.exec(pod, cmd, &params).await.map_err(|e| {
        anyhow!(e).context(format!(
            "{what}: exec failed; the envoy image is distroless (no sh): read the log volume from a container \
             with sh/wc/tail (the kind stack attaches an ephemeral audit reader: Kubernetes >= 1.25 and \
             permission to patch pods/ephemeralcontainers), or let envoy log to stderr (no --log-path)"
        ))
    })?;
    let (mut out, mut err) = (proc.stdout().ok_or_else(|| anyhow!("{what}: no stdout"))?, proc.stderr().ok_or_else(|| anyhow!("{what}: no stderr"))?);
    let status = proc.take_status();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let (r1, r2) = tokio::join!(out.read_to_end(&mut stdout), err.read_to_end(&mut stderr));
    r1.and(r2).with_context(|| what.clone())?;
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    proc.join().await.ok();
    if let Some(s) = status.filter(|s| s.status.as_deref() != Some("Success")) {
        bail!(
            "{what}: {} {}",
            s.message.unwrap_or_default(),
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    let (size, from, bytes) = parse_read_output(&stdout).with_context(|| format!("{what}: stderr {:?}", String::from_utf8_lossy(&stderr)))?;
    Ok(ExecRead { size, from, bytes })
}

/// Splits the read script's output into (size, from, bytes).
fn parse_read_output(out: &[u8]) -> Result<(u64, u64, Vec<u8>)> {
    let nl = out.iter().position(|&b| b == b'\n').ok_or_else(|| anyhow!("no size header in the output"))?;
    let header = std::str::from_utf8(&out[..nl])?;
    let mut nums = header.split_whitespace().map(str::parse::<u64>);
    match (nums.next(), nums.next()) {
        (Some(Ok(size)), Some(Ok(from))) => Ok((size, from, out[nl + 1..].to_vec())),
        _ => bail!("malformed size header {header:?}"),
    }
}

/// Lines of a `timestamps=true` log stamped after `after_ns` (ns since the epoch), and the stamp of
/// the last complete line (or `after_ns` when there is none); a line without a final newline is held back.
pub fn split_stamped_lines(text: &str, after_ns: u64) -> (Vec<String>, u64) {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => return (Vec::new(), after_ns),
    };
    let mut last = after_ns;
    let mut lines = Vec::new();
    for raw in complete.split('\n') {
        let (stamp, line) = raw.split_once(' ').unwrap_or((raw, ""));
        let Some(ns) = stamp.parse::<Timestamp>().ok().and_then(|t| u64::try_from(t.as_nanosecond()).ok()) else {
            tracing::warn!(line = raw, "log line without a timestamp; skipped");
            continue;
        };
        if ns > after_ns {
            lines.push(line.strip_suffix('\r').unwrap_or(line).to_string());
            last = last.max(ns);
        }
    }
    (lines, last)
}

#[cfg(test)]
mod tests;
