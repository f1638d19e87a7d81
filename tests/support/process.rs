//! Child processes of the test bed (PostgreSQL, the LiteLLM proxy, ...) that must never outlive
//! the test binary.
//!
//! Rust never drops statics, so a server started "once per test binary" would be orphaned when
//! the binary exits. Each child gets `PR_SET_PDEATHSIG(SIGKILL)` (the kernel kills it when the
//! test process dies, however it dies), its own process group (so a `Drop` can kill helpers it
//! forked too), and its output in a log file (an inherited stdout would keep CI's pipe open).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running child tied to the lifetime of the test process.
pub struct Supervised {
    child: Child,
    log: PathBuf,
}

impl Supervised {
    /// Spawns `cmd` with its stdout and stderr appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> std::io::Result<Supervised> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(Supervised { child, log: log.to_path_buf() })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The last `lines` lines of the child's log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the child has exited (and with what), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // SAFETY: plain syscall on a process group we created.
        unsafe {
            libc::killpg(self.child.id() as libc::pid_t, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
