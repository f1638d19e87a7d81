//! Ending a run early: on its deadline, or when whoever runs it says so (the CLI on SIGTERM or
//! SIGINT, a server shutting down). Checks that were running report where they were; checks
//! not started report that they were not run, and why.
//!
//! Only the edge listens for signals ([`signal`]): a run started as a library call (serve,
//! fleet) is stopped through its [`Stopper`] and never touches the process's signal handling.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::outcome::Cause;

/// Why the run stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Deadline(Duration),
    Signal(&'static str),
}

impl Stop {
    /// The cause and the words a stopped check reports.
    pub fn describe(self) -> (Cause, String) {
        match self {
            Stop::Deadline(d) => (
                Cause::Deadline,
                format!(
                    "the run's deadline ({}) passed",
                    humantime::format_duration(d)
                ),
            ),
            Stop::Signal(sig) => (Cause::Interrupted, format!("interrupted by {sig}")),
        }
    }
}

/// Ends a run early, saying why; checks that were running report where they were. A
/// [`Stopper::child`] stops with its parent, and on its own without stopping the parent: one
/// run's deadline never ends the next run.
#[derive(Debug, Clone, Default)]
pub struct Stopper {
    token: CancellationToken,
    reason: Arc<OnceLock<Stop>>,
    parent: Option<Arc<Stopper>>,
}

impl Stopper {
    pub fn stop(&self, why: Stop) {
        let _ = self.reason.set(why);
        self.token.cancel();
    }

    /// Resolves once the run is stopped.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// Why the run was stopped; `None` while it runs (or when it was stopped without a word,
    /// by dropping it: callers say "a signal").
    pub fn reason(&self) -> Option<Stop> {
        self.reason
            .get()
            .copied()
            .or_else(|| self.parent.as_ref().and_then(|p| p.reason()))
    }

    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// A stopper for one run: stopped when this one is, or on its own.
    pub fn child(&self) -> Stopper {
        Stopper {
            token: self.token.child_token(),
            reason: Arc::default(),
            parent: Some(Arc::new(self.clone())),
        }
    }

    /// Stops the run when the guard is dropped (a run whose caller went away ends its checks).
    pub fn stop_on_drop(&self) -> tokio_util::sync::DropGuard {
        self.token.clone().drop_guard()
    }
}

/// Stops `stopper` once `deadline` has passed.
pub async fn at_deadline(stopper: Stopper, deadline: Duration) {
    tokio::time::sleep(deadline).await;
    stopper.stop(Stop::Deadline(deadline));
}

/// Resolves with the next termination signal this process receives (SIGTERM, or SIGINT from
/// Ctrl-C); never, where no handler can be installed. For the edge only: it installs
/// process-wide signal handlers.
pub async fn signal() -> Stop {
    #[cfg(unix)]
    let sigterm = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
                Stop::Signal("SIGTERM")
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let sigterm = std::future::pending::<Stop>();
    let interrupt = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => Stop::Signal("SIGINT"),
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        why = sigterm => why,
        why = interrupt => why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_own_stop_leaves_the_parent_running() {
        let parent = Stopper::default();
        let run = parent.child();
        run.stop(Stop::Deadline(Duration::from_secs(1)));
        assert!(run.is_stopped());
        assert!(!parent.is_stopped());
        assert_eq!(parent.reason(), None);
        let next = parent.child();
        assert!(!next.is_stopped());
    }

    #[test]
    fn a_parents_stop_reaches_its_runs_with_the_reason() {
        let parent = Stopper::default();
        let run = parent.child();
        parent.stop(Stop::Signal("SIGTERM"));
        assert!(run.is_stopped());
        assert_eq!(run.reason(), Some(Stop::Signal("SIGTERM")));
    }
}
