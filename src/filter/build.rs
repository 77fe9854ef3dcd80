//! Compiling a single C source file into a proxy-wasm module that Envoy's V8 runtime loads.
//!
//! No libc and no wasi: the module imports the proxy-wasm host functions from `env` and exports
//! its callbacks (ABI v0.2.1). Outputs are cached by a hash of the source, the flags and the
//! compiler's version, so a run builds a module once.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The compiler (Debian package `clang`; `wasm-ld` comes from `lld`).
pub const CLANG: &str = "clang";

/// Flags that give a freestanding wasm32 module with the host functions left as imports.
pub const WASM_FLAGS: &[&str] = &["--target=wasm32", "-O2", "-nostdlib", "-Wall", "-Werror", "-Wl,--no-entry", "-Wl,--allow-undefined"];

/// `clang --version`'s first line, or an error that says how to install the toolchain.
pub fn clang_version() -> Result<String> {
    let out = Command::new(CLANG)
        .arg("--version")
        .output()
        .with_context(|| format!("run `{CLANG} --version` (install Debian's clang and lld: apt-get install clang lld)"))?;
    if !out.status.success() {
        bail!("`{CLANG} --version` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string())
}

/// Compiles `source` (C text; `name` is used in file names and messages) into `<cache_dir>/<name>-<hash>.wasm`,
/// reusing an earlier build of the same source, flags and compiler. Compiler errors are returned verbatim.
pub fn compile_c_module(name: &str, source: &str, cache_dir: &Path) -> Result<PathBuf> {
    let version = clang_version()?;
    let key = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!("{version}\n{}\n{source}", WASM_FLAGS.join(" ")).as_bytes()));
    let out = cache_dir.join(format!("{name}-{}.wasm", &key[..16]));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(cache_dir).with_context(|| format!("create {}", cache_dir.display()))?;
    let scratch = tempfile::Builder::new().prefix("waf-e2e-wasm-").tempdir_in(cache_dir).context("create a build directory")?;
    let src = scratch.path().join(format!("{name}.c"));
    std::fs::write(&src, source).with_context(|| format!("write {}", src.display()))?;
    let built = scratch.path().join(format!("{name}.wasm"));
    let mut cmd = Command::new(CLANG);
    cmd.args(WASM_FLAGS).arg("-o").arg(&built).arg(&src);
    crate::process::harness_child(&mut cmd);
    let result = cmd.output().with_context(|| format!("run {CLANG} for {name}"))?;
    if !result.status.success() {
        bail!("{CLANG} could not build {name} ({}):\n{}", result.status, String::from_utf8_lossy(&result.stderr).trim());
    }
    // Rename into place: concurrent builds of the same source never see a half-written module.
    std::fs::rename(&built, &out).with_context(|| format!("move {} into {}", built.display(), out.display()))?;
    Ok(out)
}

/// The default module cache: `$XDG_CACHE_HOME/waf-e2e/wasm` (or `~/.cache/waf-e2e/wasm`, or the temp dir).
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("waf-e2e").join("wasm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_builds_once_and_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let src = "__attribute__((export_name(\"proxy_abi_version_0_2_1\"))) void abi(void) {}\n";
        let first = compile_c_module("abi-only", src, dir.path()).unwrap();
        let bytes = std::fs::read(&first).unwrap();
        assert_eq!(&bytes[..4], b"\0asm", "a wasm module starts with its magic number");
        let modified = std::fs::metadata(&first).unwrap().modified().unwrap();
        let second = compile_c_module("abi-only", src, dir.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(std::fs::metadata(&second).unwrap().modified().unwrap(), modified, "the cached module is not rebuilt");
    }

    #[test]
    fn a_compile_error_is_reported_with_the_compilers_words() {
        let dir = tempfile::tempdir().unwrap();
        let err = compile_c_module("broken", "int f(void) { return undefined_name; }\n", dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("undefined_name"), "{err:#}");
    }
}
