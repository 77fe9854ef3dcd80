//! Memory protection keys: the native Envoy runs with `pkey_alloc` denied.
//!
//! On x86-64 CPUs with protection keys (`pku`/`ospke` in `/proc/cpuinfo`: most current server
//! CPUs), V8 allocates a key when its engine starts and guards its JIT code with it. Key rights are
//! per thread and inherited at thread creation, so Envoy's worker threads, created before the first
//! wasm filter starts V8 on the main thread, have none: the first request through a wasm filter
//! kills Envoy 1.37.0 with SIGSEGV (`si_code=SEGV_PKUERR`, measured here with strace). Where
//! `pkey_alloc` fails, V8 does without keys. Docker's default seccomp profile denies it, which is
//! why the same binary runs in a container; the native local stack denies it the same way, with a
//! seccomp filter installed between fork and exec that fails that one call with ENOSYS and allows
//! every other. Nothing in Envoy's configuration changes.

use anyhow::{Context, Result};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The seccomp program: `pkey_alloc` fails with ENOSYS, every other call is allowed. `None` where
/// there are no protection keys to deny (not Linux on x86-64).
pub fn deny_pkey_alloc() -> Result<Option<seccompiler::BpfProgram>> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
        let rules = std::collections::BTreeMap::from([(nix::libc::SYS_pkey_alloc, Vec::new())]);
        let enosys = u32::try_from(nix::libc::ENOSYS).context("ENOSYS as a seccomp errno")?;
        let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(enosys), TargetArch::x86_64)
            .context("build the seccomp filter denying pkey_alloc")?;
        Ok(Some(filter.try_into().context("compile the seccomp filter denying pkey_alloc")?))
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        Ok(None)
    }
}

/// Makes `cmd`'s child install [`deny_pkey_alloc`]'s program before it execs.
pub fn deny_pkey_alloc_in(cmd: &mut Command) -> Result<()> {
    if let Some(program) = deny_pkey_alloc()? {
        // SAFETY: the closure runs between fork and exec; it makes two syscalls (prctl, seccomp) on
        // memory compiled before the fork, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || seccompiler::apply_filter(&program).map_err(|_| std::io::Error::from_raw_os_error(nix::libc::EPERM)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn a_child_with_the_filter_cannot_allocate_a_protection_key_and_runs_otherwise() {
        // python3 is installed with the project's dependencies; it calls glibc's pkey_alloc(0, 0).
        let script = "import ctypes, os; r = ctypes.CDLL(None, use_errno=True).pkey_alloc(0, 0); print(r, ctypes.get_errno())";
        let mut cmd = Command::new("python3");
        cmd.args(["-c", script]);
        deny_pkey_alloc_in(&mut cmd).unwrap();
        let out = cmd.output().expect("run python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("-1 {}", nix::libc::ENOSYS));
    }
}
