//! Child processes that never outlive the harness.
//!
//! Every program the harness starts (Prometheus, Envoy, the filter toolchain) is spawned through
//! [`harness_child`]: its own process group (so a stop signal reaches its helpers too) and, on
//! Linux, a parent-death signal, so a SIGKILLed harness (a CI timeout, the OOM killer) takes its
//! children with it instead of leaving them as orphans.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes `cmd` start in its own process group and, on Linux, receive SIGKILL when the harness dies.
pub fn harness_child(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0);
    // The parent-death signal fires when the spawning THREAD ends: spawn from a runtime worker or
    // the main thread, never from a short-lived thread such as tokio's blocking pool.
    #[cfg(target_os = "linux")]
    {
        // SAFETY: the closure runs between fork and exec and only calls async-signal-safe prctl(2).
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
    }
    cmd
}
