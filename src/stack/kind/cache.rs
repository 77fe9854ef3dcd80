//! Release-manifest downloads: cached on disk, sha256 recorded on first download (lock file) and verified after.

use crate::profile::Download;
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default cache directory: `$XDG_CACHE_HOME/waf-e2e`, else `~/.cache/waf-e2e`.
pub fn default_dir() -> PathBuf {
    dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

fn dir_from(xdg: Option<std::ffi::OsString>, home: Option<std::ffi::OsString>) -> PathBuf {
    match (xdg.filter(|x| !x.is_empty()), home) {
        (Some(x), _) => PathBuf::from(x).join("waf-e2e"),
        (None, Some(h)) => PathBuf::from(h).join(".cache").join("waf-e2e"),
        (None, None) => std::env::temp_dir().join("waf-e2e-cache"),
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The trust-on-first-use record of every downloaded manifest's sha256, keyed by URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockFile {
    /// Where the lock lives (`kind/profiles/<profile>.lock`).
    pub path: PathBuf,
    /// URL -> sha256 hex.
    pub entries: BTreeMap<String, String>,
}

const LOCK_HEADER: &str = "# waf-e2e lock: sha256 of each release manifest, recorded on its first download\n\
# (trust on first use) and verified on every later use. Commit this file.\n";

impl LockFile {
    /// Reads the lock at `path`; a missing file is an empty lock.
    pub fn load(path: &Path) -> Result<LockFile> {
        let mut lock = LockFile { path: path.to_path_buf(), entries: BTreeMap::new() };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(lock),
            Err(e) => return Err(anyhow!(e).context(format!("cannot read lock file {}", path.display()))),
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (sum, url) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| anyhow!("{}:{}: expected `<sha256> <url>`", path.display(), n + 1))?;
            lock.entries.insert(url.trim().to_string(), sum.to_string());
        }
        Ok(lock)
    }

    /// The recorded sha256 for `url`.
    pub fn get(&self, url: &str) -> Option<&str> {
        self.entries.get(url).map(String::as_str)
    }

    /// Records `sha256` for `url` and rewrites the file.
    pub fn record(&mut self, url: &str, sha256: &str) -> Result<()> {
        self.entries.insert(url.to_string(), sha256.to_string());
        let mut text = LOCK_HEADER.to_string();
        for (url, sum) in &self.entries {
            text.push_str(&format!("{sum}  {url}\n"));
        }
        write_atomically(&self.path, text.as_bytes()).with_context(|| format!("cannot write lock file {}", self.path.display()))
    }
}

/// Whether a manifest is already on disk (for the plan and doctor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheState {
    /// Cached; the checksum it must have is known (pinned or locked).
    Cached {
        /// Expected sha256, verified when used.
        sha256: String,
    },
    /// Cached but no checksum is recorded yet: it will be recorded (trust on first use).
    CachedUnlocked,
    /// Not cached: it will be downloaded.
    Missing,
}

impl std::fmt::Display for CacheState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheState::Cached { sha256 } => write!(f, "cached, sha256 {}", &sha256[..12.min(sha256.len())]),
            CacheState::CachedUnlocked => write!(f, "cached, sha256 not yet locked (recorded on use)"),
            CacheState::Missing => write!(f, "not cached (downloaded on run)"),
        }
    }
}

/// A manifest ready to apply.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The cached file.
    pub path: PathBuf,
    /// Its verified sha256.
    pub sha256: String,
    /// True when no network was used.
    pub from_cache: bool,
}

/// The on-disk cache of release manifests.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    timeout: Duration,
}

impl Cache {
    /// A cache in `dir`, downloads bounded by `timeout`.
    pub fn new(dir: impl Into<PathBuf>, timeout: Duration) -> Cache {
        Cache { dir: dir.into(), timeout }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `d` is cached: `<dir>/<name>-<version>-<url hash>.yaml`.
    pub fn path_for(&self, d: &Download) -> PathBuf {
        let safe = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect::<String>();
        let url_hash = &sha256_hex(d.url.as_bytes())[..12];
        self.dir.join(format!("{}-{}-{url_hash}.yaml", safe(&d.name), safe(&d.version)))
    }

    /// What a run would find for `d`, without reading the network.
    pub fn state(&self, d: &Download, lock: &LockFile) -> CacheState {
        let expected = d.sha256.clone().or_else(|| lock.get(&d.url).map(str::to_string));
        match (self.path_for(d).is_file(), expected) {
            (false, _) => CacheState::Missing,
            (true, Some(sha256)) => CacheState::Cached { sha256 },
            (true, None) => CacheState::CachedUnlocked,
        }
    }

    /// The verified manifest for `d`: from the cache, else downloaded; the lock records a first checksum.
    pub async fn fetch(&self, d: &Download, lock: &mut LockFile) -> Result<Fetched> {
        let path = self.path_for(d);
        let expected = d.sha256.clone().or_else(|| lock.get(&d.url).map(str::to_string));
        if path.is_file() {
            let bytes = std::fs::read(&path).with_context(|| format!("cannot read cached {}", path.display()))?;
            let actual = sha256_hex(&bytes);
            match &expected {
                Some(e) if *e != actual => bail!(
                    "checksum mismatch for cached {} ({} {}): expected sha256 {e}, actual {actual}; \
                     delete the file to download it again, or fix the pin in {}",
                    path.display(), d.name, d.version, lock.path.display()
                ),
                Some(_) => {}
                None => lock.record(&d.url, &actual)?,
            }
            return Ok(Fetched { path, sha256: actual, from_cache: true });
        }
        let bytes = self.download(d, &path).await?;
        let actual = sha256_hex(&bytes);
        match &expected {
            Some(e) if *e != actual => bail!(
                "checksum mismatch for {} {} downloaded from {}: expected sha256 {e}, actual {actual} (recorded in {}); \
                 the release changed or the download was tampered with",
                d.name, d.version, d.url, lock.path.display()
            ),
            Some(_) => {}
            None => lock.record(&d.url, &actual)?,
        }
        std::fs::create_dir_all(&self.dir).with_context(|| format!("cannot create cache dir {}", self.dir.display()))?;
        write_atomically(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Fetched { path, sha256: actual, from_cache: false })
    }

    async fn download(&self, d: &Download, path: &Path) -> Result<Vec<u8>> {
        let offline_hint = || {
            format!(
                "{} {} is not cached ({}) and could not be downloaded from {}; \
                 connect to the network once (later runs use the cache), or place the file there by hand",
                d.name, d.version, path.display(), d.url
            )
        };
        let client = reqwest::Client::builder().timeout(self.timeout).build()?;
        let response = client.get(&d.url).send().await.map_err(|e| anyhow!("{e}").context(offline_hint()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(anyhow!("HTTP {status}").context(offline_hint()));
        }
        let bytes = response.bytes().await.map_err(|e| anyhow!("{e}").context(offline_hint()))?;
        Ok(bytes.to_vec())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::HarnessError;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const BODY: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n";

    struct Server {
        url: String,
        hits: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn serve() -> Server {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/bundle.yaml",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { BODY }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/bundle.yaml", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server { url, hits, task }
    }

    fn download(url: &str) -> Download {
        Download { name: "bundle".into(), version: "v1".into(), url: url.into(), sha256: None }
    }

    #[tokio::test]
    async fn a_first_download_records_the_checksum_and_a_second_uses_the_cache_without_network() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path().join("cache"), Duration::from_secs(5));
        let mut lock = LockFile::load(&tmp.path().join("oss.lock")).unwrap();
        let server = serve().await;
        let d = download(&server.url);
        assert_eq!(cache.state(&d, &lock), CacheState::Missing);

        let first = cache.fetch(&d, &mut lock).await.unwrap();
        assert!(!first.from_cache);
        assert_eq!(first.sha256, sha256_hex(BODY.as_bytes()));
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
        let reread = LockFile::load(&tmp.path().join("oss.lock")).unwrap();
        assert_eq!(reread.get(&server.url), Some(first.sha256.as_str()));
        assert!(matches!(cache.state(&d, &reread), CacheState::Cached { .. }));

        drop(server); // no network from here on
        let mut lock = reread;
        let second = cache.fetch(&d, &mut lock).await.unwrap();
        assert!(second.from_cache);
        assert_eq!(std::fs::read_to_string(second.path).unwrap(), BODY);
    }

    #[tokio::test]
    async fn a_tampered_cache_file_fails_naming_the_file_and_both_checksums() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path().join("cache"), Duration::from_secs(5));
        let mut lock = LockFile::load(&tmp.path().join("oss.lock")).unwrap();
        let server = serve().await;
        let d = download(&server.url);
        let first = cache.fetch(&d, &mut lock).await.unwrap();
        std::fs::write(&first.path, "kind: Tampered\n").unwrap();

        let err = format!("{:#}", cache.fetch(&d, &mut lock).await.unwrap_err());
        assert!(err.contains(&first.path.display().to_string()), "{err}");
        assert!(err.contains(&format!("expected sha256 {}", first.sha256)), "{err}");
        assert!(err.contains(&format!("actual {}", sha256_hex(b"kind: Tampered\n"))), "{err}");
    }

    #[tokio::test]
    async fn a_download_that_differs_from_the_pinned_checksum_is_rejected_and_not_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path().join("cache"), Duration::from_secs(5));
        let mut lock = LockFile::load(&tmp.path().join("oss.lock")).unwrap();
        let server = serve().await;
        let mut d = download(&server.url);
        d.sha256 = Some("0".repeat(64));
        let err = format!("{:#}", cache.fetch(&d, &mut lock).await.unwrap_err());
        assert!(err.contains(&"0".repeat(64)) && err.contains(&sha256_hex(BODY.as_bytes())), "{err}");
        assert!(!cache.path_for(&d).exists());
    }

    #[tokio::test]
    async fn offline_and_uncached_is_a_clear_infrastructure_error() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path().join("cache"), Duration::from_secs(5));
        let mut lock = LockFile::load(&tmp.path().join("oss.lock")).unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/bundle.yaml", closed.local_addr().unwrap());
        drop(closed);
        let d = download(&url);

        let err = cache.fetch(&d, &mut lock).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("bundle v1 is not cached") && text.contains(&url), "{text}");
        assert!(text.contains("connect to the network once"), "{text}");
        assert_eq!(HarnessError::classify(err).exit_code(), 3);
        assert!(lock.entries.is_empty());
    }

    #[test]
    fn the_cache_dir_prefers_xdg_then_home() {
        assert_eq!(dir_from(Some("/x".into()), Some("/h".into())), PathBuf::from("/x/waf-e2e"));
        assert_eq!(dir_from(Some("".into()), Some("/h".into())), PathBuf::from("/h/.cache/waf-e2e"));
    }

    #[test]
    fn a_lock_file_round_trips_and_keeps_a_header() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("p.lock");
        let mut lock = LockFile::load(&path).unwrap();
        lock.record("https://b/x.yaml", &"b".repeat(64)).unwrap();
        lock.record("https://a/x.yaml", &"a".repeat(64)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# waf-e2e lock"), "{text}");
        assert_eq!(LockFile::load(&path).unwrap().entries, lock.entries);
    }
}
