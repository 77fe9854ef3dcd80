//! Appends the reference proxy's `AuditLog:` lines to its audit log file (the imitation's log writer, local
//! stack only; real Envoy writes these lines once the stand-in filter replaces the proxy).

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Appends complete lines to the audit log file, one `write` per line.
pub struct AuditWriter {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditWriter {
    /// Opens (creating if needed) `path` for appending; existing content is kept.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating audit log directory {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening audit log {}", path.display()))?;
        Ok(AuditWriter { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line` and a newline in a single write, then flushes, so readers never see half a line.
    pub fn append(&self, line: &str) -> Result<()> {
        let mut buf = String::with_capacity(line.len() + 1);
        buf.push_str(line);
        buf.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(buf.as_bytes()).with_context(|| format!("appending to audit log {}", self.path.display()))?;
        file.flush().with_context(|| format!("flushing audit log {}", self.path.display()))
    }
}

