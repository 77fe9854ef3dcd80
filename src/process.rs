//! Child processes that never outlive the harness.
//!
//! Every program the harness starts (Prometheus, Envoy, the filter toolchain) is spawned through
//! [`harness_child`]: its own process group (so a stop signal reaches its helpers too) and, on
//! Linux, a parent-death signal, so a SIGKILLed harness (a CI timeout, the OOM killer) takes its
//! children with it instead of leaving them as orphans. [`stop_child`] ends such a child gracefully,
//! [`kill_and_reap`] at once (from `Drop`).

use crate::wait::{self, Check};
use anyhow::Result;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

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

/// Asks `child`'s process group to exit (SIGTERM), waits up to `grace` for "`what` (pid N) to exit",
/// then kills the group (SIGKILL) if it still runs and reaps the child; the error is the wait's.
pub async fn stop_child(mut child: Child, what: &str, grace: Duration) -> Result<()> {
    let pid = child.id();
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let exited = wait::until(&format!("{what} (pid {pid}) to exit"), grace, || {
        let status = child.try_wait();
        async move {
            Ok(match status? {
                Some(s) => Check::Met(s),
                None => Check::NotYet("still running".into()),
            })
        }
    })
    .await;
    kill_and_reap(child);
    exited.map(|_| ())
}

/// Kills `child`'s process group (SIGKILL) unless it already exited, and reaps the child.
pub fn kill_and_reap(mut child: Child) {
    if let Ok(None) = child.try_wait() {
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// A program the harness started: a child process, or a container (`--runtime docker`).
#[derive(Debug)]
pub enum Supervised {
    /// A child spawned through [`harness_child`].
    Process(Child),
    /// A container on the stack's private network.
    Container(Box<crate::container::RunningContainer>),
}

impl Supervised {
    /// `pid N` or `container NAME`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Supervised::Process(c) => format!("pid {}", c.id()),
            Supervised::Container(c) => format!("container {}", c.name()),
        }
    }

    /// The process id of a child process.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Supervised::Process(c) => Some(c.id()),
            Supervised::Container(_) => None,
        }
    }

    /// `Some(how it ended)` once it exited by itself, `None` while it runs.
    pub fn exited(&mut self) -> Result<Option<String>> {
        match self {
            Supervised::Process(c) => Ok(c.try_wait()?.map(|s| s.to_string())),
            Supervised::Container(c) => Ok(c.exited()),
        }
    }

    /// Ends it gracefully ([`stop_child`], or a container stop with the same grace) and cleans up.
    pub async fn stop(self, what: &str, grace: Duration) -> Result<()> {
        match self {
            Supervised::Process(c) => stop_child(c, what, grace).await,
            Supervised::Container(c) => (*c).stop(grace).await,
        }
    }

    /// Ends it at once (from `Drop`).
    pub fn kill(self) {
        match self {
            Supervised::Process(c) => kill_and_reap(c),
            Supervised::Container(c) => drop(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(script: &str) -> Child {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).stdout(std::process::Stdio::piped());
        harness_child(&mut cmd).spawn().expect("spawn sh")
    }

    #[tokio::test]
    async fn a_child_that_exits_on_sigterm_stops_within_the_grace() {
        let child = spawn("sleep 30");
        let pid = child.id();
        stop_child(child, "sleep", Duration::from_secs(5)).await.expect("sleep exits on SIGTERM");
        assert!(nix::sys::signal::kill(Pid::from_raw(pid as i32), None).is_err(), "pid {pid} still exists");
    }

    #[tokio::test]
    async fn a_child_ignoring_sigterm_is_killed_and_the_wait_names_it() {
        // The shell ignores TERM and so does the sleep it becomes (ignored signals are inherited);
        // its first line says the trap is set, so the SIGTERM cannot arrive before it.
        let mut child = spawn("trap '' TERM; echo trapped; exec sleep 30");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("piped")), &mut line).expect("read");
        assert_eq!(line, "trapped\n");
        let pid = child.id();
        let err = stop_child(child, "stubborn", Duration::from_millis(300)).await.expect_err("TERM is ignored");
        assert!(format!("{err:#}").contains(&format!("stubborn (pid {pid}) to exit")), "{err:#}");
        assert!(nix::sys::signal::kill(Pid::from_raw(pid as i32), None).is_err(), "pid {pid} was not reaped");
    }
}
