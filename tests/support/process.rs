//! Child processes of the test bed (PostgreSQL, the LiteLLM proxy, ...) that must never outlive
//! the test binary.
//!
//! Rust never drops statics, so a server started "once per test binary" would be orphaned when
//! the binary exits. Each child gets `PR_SET_PDEATHSIG(SIGKILL)` (the kernel kills it when its
//! parent dies, however it dies), its own process group (so a `Drop` can kill helpers it forked
//! too), and its output in a log file (an inherited stdout would keep CI's pipe open).
//!
//! The "parent" of PR_SET_PDEATHSIG is the *thread* that forked the child, and libtest ends each
//! test's thread when the test returns: a shared server started from a test would be killed as
//! soon as that first test finished. So every child is forked by one spawner thread that lives
//! as long as the test binary.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};

type SpawnRequest = (Command, Sender<std::io::Result<Child>>);

/// Forks `cmd` from the spawner thread, which never exits before the process does.
fn spawn_from_lasting_thread(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("test-bed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the test bed's spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = channel();
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

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
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = spawn_from_lasting_thread(cmd)?;
        Ok(Supervised {
            child,
            log: log.to_path_buf(),
        })
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

/// Runs a short-lived tool (`promtool`, `kubectl kustomize`) to completion within `timeout`,
/// feeding it `input` on stdin, and returns what it printed and how it exited, whatever the
/// exit code (tests assert on failures too). A tool still running at the deadline is killed
/// and reported as such, so a hung tool fails its test instead of hanging the binary.
pub fn run_bounded(
    mut cmd: Command,
    input: Option<Vec<u8>>,
    timeout: std::time::Duration,
) -> Result<std::process::Output, String> {
    let what = format!("{cmd:?}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("spawning {what}: {e}"))?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        if let (Some(mut stdin), Some(input)) = (stdin, input) {
            use std::io::Write;
            // A tool that exits without reading all of its input closes the pipe: its exit
            // status and stderr say why, the write error adds nothing.
            let _ = stdin.write_all(&input);
        }
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.map_err(|e| format!("waiting for {what}: {e}")),
        Err(_) => {
            // SAFETY: plain syscall on our own child, which has not been reaped (its waiter
            // thread is still blocked in wait).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            Err(format!("{what} did not finish within {timeout:?}"))
        }
    }
}
