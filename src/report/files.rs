//! Reports that always land: the JUnit file is written beside its path and renamed into place
//! (CI sees the earlier state or the whole report, never part of one), an earlier run's report
//! is removed when a run starts, and the termination message says "no outcome" until the run
//! writes its own, so a killed run is never shown as an earlier run's result.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::plan::Output;

/// What the termination message says while the run is on: if the process is killed (the Job's
/// deadline, OOM) before it writes its outcome, this is what `kubectl get pod` shows.
const NO_OUTCOME: &str =
    "smokecheck: no outcome: the run ended before it finished (killed, or out of memory?)";

/// A report that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("--junit: removing the previous report {}", .path.display())]
    RemovePrevious {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing JUnit report {}", .path.display())]
    Junit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the termination message to {}", .path.display())]
    TerminationMessage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl WriteError {
    /// Whether the run cannot count as done: CI would find no JUnit report, or an earlier one.
    /// A termination message that cannot be written is said, not fatal (the exit code and the
    /// logs still tell).
    pub fn fails_the_run(&self) -> bool {
        match self {
            WriteError::RemovePrevious { .. } | WriteError::Junit { .. } => true,
            WriteError::TerminationMessage { .. } => false,
        }
    }
}

/// Clears what an earlier run left where `output`'s reports go (see [`super::Reporter::start`]).
pub(super) fn clear(output: &Output) -> Vec<WriteError> {
    let mut problems = Vec::new();
    if let Some(path) = &output.termination_log
        && let Err(e) = write_termination_message(path, NO_OUTCOME)
    {
        problems.push(e);
    }
    if let Some(path) = &output.junit
        && is_plain_file(path)
        && let Err(source) = std::fs::remove_file(path)
        && source.kind() != std::io::ErrorKind::NotFound
    {
        problems.push(WriteError::RemovePrevious {
            path: path.clone(),
            source,
        });
    }
    problems
}

/// A regular file, or nothing yet: a report path that is replaced by renaming. Anything else
/// (`/dev/stdout`, a FIFO, a symlink) is written in place, as the user pointed it there.
fn is_plain_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).map_or(true, |m| m.file_type().is_file())
}

/// Writes a report whole or not at all: into a temporary file beside `path`, then renamed over
/// it, so CI sees the earlier state or this report, never part of one.
pub(super) fn write_report(path: &Path, contents: &str) -> std::io::Result<()> {
    if !is_plain_file(path) {
        return std::fs::write(path, contents);
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    let permissions = {
        use std::os::unix::fs::PermissionsExt;
        // What `fs::write` would give (the umask still applies), not tempfile's private 0600.
        std::fs::Permissions::from_mode(0o644)
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".smokecheck-").suffix(".tmp");
    #[cfg(unix)]
    builder.permissions(permissions);
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(contents.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The termination message is written in place: Kubernetes mounts it as a single file, which
/// cannot be replaced by renaming.
pub fn write_termination_message(path: &Path, message: &str) -> Result<(), WriteError> {
    std::fs::write(path, message).map_err(|source| WriteError::TerminationMessage {
        path: path.to_path_buf(),
        source,
    })
}
