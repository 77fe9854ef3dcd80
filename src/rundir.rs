//! Run directories: every temporary directory of a run lives under one parent,
//! `$TMPDIR/waf-e2e-runs/<name>/`, and records its owner (pid and process start time) in a file
//! named `owner`. A harness that is SIGKILLed (a CI timeout, the OOM killer) cannot remove its
//! directories; the next one that creates a run directory (or starts `waf-e2e run`) removes every
//! directory whose owner is gone. The sweep only deletes directories; it never signals a process.
//!
//! "Gone" is decided from `/proc`: no process with that pid, a process with that pid but another
//! start time (the pid was reused), a zombie, or a different boot. A directory recorded from
//! another pid namespace (a container sharing `/tmp`) is left alone: its owner cannot be seen.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The parent of every run directory, under the temporary directory (`$TMPDIR`, else `/tmp`).
pub const RUNS_DIR: &str = "waf-e2e-runs";

/// The owner record inside each run directory.
const OWNER_FILE: &str = "owner";

/// A directory with no owner record yet is being created right now (the record is written right
/// after `mkdir`), unless it is older than this: then its creator died in between.
const UNRECORDED_GRACE: Duration = Duration::from_secs(60);

/// `$TMPDIR/waf-e2e-runs`.
pub fn runs_root() -> PathBuf {
    std::env::temp_dir().join(RUNS_DIR)
}

/// A temporary directory of this run, removed on drop; it records this process as its owner.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates `$TMPDIR/waf-e2e-runs/<name>` (an error if it exists), after removing the directories
    /// of owners that are gone.
    pub fn create(name: &str) -> Result<RunDir> {
        Self::create_in(&runs_root(), name)
    }

    /// Like [`RunDir::create`], named `<prefix>-<8 random hex digits>`.
    pub fn create_unique(prefix: &str) -> Result<RunDir> {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self::create(&format!("{prefix}-{}", &random[..8]))
    }

    /// Like [`RunDir::create`], under `root` instead of `$TMPDIR/waf-e2e-runs`.
    pub fn create_in(root: &Path, name: &str) -> Result<RunDir> {
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
            bail!("invalid run directory name {name:?}: one path component, not starting with `.`");
        }
        std::fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
        for removed in sweep(root) {
            tracing::info!("removed {} (its owner is gone)", removed.display());
        }
        let path = root.join(name);
        std::fs::create_dir(&path).with_context(|| format!("create the run directory {}", path.display()))?;
        let dir = RunDir { path };
        Owner::current().write_into(&dir.path)?;
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not remove {}: {e}", self.path.display()),
        }
    }
}

/// Removes the run directories under `root` whose owner is gone; returns what it removed.
/// Problems are logged, never returned: a sweep must not stop a run.
pub fn sweep(root: &Path) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!("cannot list {}: {e}", root.display());
            return Vec::new();
        }
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || !abandoned(&path) {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed.push(path),
            // Another run's sweep got there first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove {} (its owner is gone): {e}", path.display()),
        }
    }
    removed
}

/// Sweeps `$TMPDIR/waf-e2e-runs` (every `waf-e2e run` does, whatever its stack).
pub fn sweep_runs() -> Vec<PathBuf> {
    sweep(&runs_root())
}

fn abandoned(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join(OWNER_FILE)).ok().and_then(|t| Owner::parse(&t)) {
        Some(owner) => owner.liveness() == Liveness::Gone,
        None => {
            let age = std::fs::metadata(dir).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            age.is_some_and(|age| age > UNRECORDED_GRACE)
        }
    }
}

/// Whether the owner of a run directory still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The recorded process runs.
    Alive,
    /// It has exited (or its pid now belongs to another process, or the machine rebooted).
    Gone,
    /// It cannot be seen from here (another pid namespace).
    Unknown,
}

/// The process that owns a run directory: enough to tell it from a later process with the same pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat`, field 22), where `/proc` exists.
    pub start_time: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id`: pids and start times only compare within one boot.
    pub boot_id: Option<String>,
    /// The pid namespace (`/proc/self/ns/pid`): pids only compare within one namespace.
    pub pid_namespace: Option<String>,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner { pid, start_time: proc_stat(pid).map(|s| s.start_time), boot_id: boot_id(), pid_namespace: pid_namespace() }
    }

    /// The record as written to the `owner` file: one `key=value` per line.
    pub fn render(&self) -> String {
        let mut text = format!("pid={}\n", self.pid);
        let fields = [("start_time", self.start_time.map(|t| t.to_string())), ("boot_id", self.boot_id.clone()), ("pid_namespace", self.pid_namespace.clone())];
        for (key, value) in fields {
            if let Some(value) = value {
                text.push_str(&format!("{key}={value}\n"));
            }
        }
        text
    }

    /// Reads a rendered record; `None` when it names no pid or a value does not parse.
    pub fn parse(text: &str) -> Option<Owner> {
        let mut owner = Owner { pid: 0, start_time: None, boot_id: None, pid_namespace: None };
        let mut pid = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line.split_once('=')?;
            match key {
                "pid" => pid = Some(value.parse().ok()?),
                "start_time" => owner.start_time = Some(value.parse().ok()?),
                "boot_id" => owner.boot_id = Some(value.to_string()),
                "pid_namespace" => owner.pid_namespace = Some(value.to_string()),
                _ => {}
            }
        }
        owner.pid = pid?;
        Some(owner)
    }

    /// Whether this owner still runs, as far as this process can see.
    pub fn liveness(&self) -> Liveness {
        if let (Some(recorded), Some(now)) = (&self.boot_id, boot_id()) {
            if *recorded != now {
                return Liveness::Gone;
            }
        }
        if let (Some(recorded), Some(ours)) = (&self.pid_namespace, pid_namespace()) {
            if *recorded != ours {
                return Liveness::Unknown;
            }
        }
        if proc_stat(std::process::id()).is_some() {
            return match proc_stat(self.pid) {
                None => Liveness::Gone,
                Some(stat) if stat.zombie => Liveness::Gone,
                Some(stat) if self.start_time.is_some_and(|t| t != stat.start_time) => Liveness::Gone,
                Some(_) => Liveness::Alive,
            };
        }
        // No /proc (not Linux): a signal-0 probe cannot tell a reused pid, so only ESRCH means gone.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
        match nix::sys::signal::kill(pid, None) {
            Err(nix::errno::Errno::ESRCH) => Liveness::Gone,
            _ => Liveness::Alive,
        }
    }

    /// Writes the record into `dir` atomically (a sweep never reads half of it).
    fn write_into(&self, dir: &Path) -> Result<()> {
        let partial = dir.join(format!("{OWNER_FILE}.partial"));
        std::fs::write(&partial, self.render()).with_context(|| format!("write {}", partial.display()))?;
        let record = dir.join(OWNER_FILE);
        std::fs::rename(&partial, &record).with_context(|| format!("write {}", record.display()))
    }
}

struct ProcStat {
    start_time: u64,
    zombie: bool,
}

/// State and start time of `pid` from `/proc/<pid>/stat`; `None` when there is no such process (or no `/proc`).
fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&text)
}

/// Field 2 (the command) is in parentheses and may hold spaces and `)`: count from the last `)`.
fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let after_command = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_command.split_whitespace().collect();
    // fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
    Some(ProcStat { zombie: matches!(*fields.first()?, "Z" | "X"), start_time: fields.get(19)?.parse().ok()? })
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string())
}

fn pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid").ok().map(|p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dir: &Path, owner: &Owner) {
        std::fs::create_dir(dir).unwrap();
        owner.write_into(dir).unwrap();
    }

    /// The pid of a process that has exited and been reaped.
    fn exited_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().expect("run `true`");
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn the_sweep_removes_directories_of_gone_owners_and_keeps_live_and_fresh_ones() {
        let root = tempfile::tempdir().unwrap();
        let live = RunDir::create_in(root.path(), "live").unwrap();
        let me = Owner::current();
        record(&root.path().join("exited"), &Owner { pid: exited_pid(), ..me.clone() });
        let reused_start = me.start_time.map(|t| t + 1);
        record(&root.path().join("pid-reused"), &Owner { start_time: reused_start, ..me.clone() });
        record(&root.path().join("other-boot"), &Owner { boot_id: Some("another-boot".into()), ..me.clone() });
        record(&root.path().join("other-namespace"), &Owner { pid: exited_pid(), pid_namespace: Some("pid:[1]".into()), ..me.clone() });
        std::fs::create_dir(root.path().join("being-created")).unwrap();

        let mut removed: Vec<String> = sweep(root.path()).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        removed.sort();
        assert_eq!(removed, ["exited", "other-boot", "pid-reused"]);
        for kept in ["live", "other-namespace", "being-created"] {
            assert!(root.path().join(kept).is_dir(), "{kept} was removed");
        }
        assert!(live.path().join(OWNER_FILE).is_file());
    }

    #[test]
    fn a_run_directory_records_this_process_and_is_removed_on_drop() {
        let root = tempfile::tempdir().unwrap();
        let dir = RunDir::create_in(root.path(), "r1").unwrap();
        let path = dir.path().to_path_buf();
        let owner = Owner::parse(&std::fs::read_to_string(path.join(OWNER_FILE)).unwrap()).expect("owner record parses");
        assert_eq!(owner, Owner::current());
        assert!(owner.start_time.is_some(), "Linux: the start time is recorded");
        assert_eq!(owner.liveness(), Liveness::Alive);
        assert!(RunDir::create_in(root.path(), "r1").is_err(), "a second run directory of the same name");
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn names_that_are_not_one_path_component_are_refused() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["", "a/b", "..", ".hidden"] {
            assert!(RunDir::create_in(root.path(), bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn owner_records_round_trip_and_garbage_is_no_record() {
        let owner = Owner { pid: 42, start_time: Some(7), boot_id: Some("b".into()), pid_namespace: Some("pid:[9]".into()) };
        assert_eq!(Owner::parse(&owner.render()), Some(owner));
        for garbage in ["", "pid=x\n", "start_time=1\n", "no equals sign\n"] {
            assert_eq!(Owner::parse(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn the_start_time_is_read_after_a_command_holding_spaces_and_parentheses() {
        let mut line = String::from("12 (a) b (c) S");
        for field in 4..=21 {
            line.push_str(&format!(" {field}"));
        }
        line.push_str(" 987654 5 6");
        let stat = parse_proc_stat(&line).expect("parses");
        assert_eq!((stat.start_time, stat.zombie), (987654, false));
        assert!(parse_proc_stat("12 (x) Z").is_none(), "too few fields");
        assert!(parse_proc_stat(&line.replacen(") S", ") Z", 1)).unwrap().zombie);
    }
}
