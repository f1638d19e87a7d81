//! What a check is and what it returns.
//!
//! A check is a named, async probe. It never prints: it returns a typed [`ProbeResult`], and the
//! runner turns outcomes into [`crate::outcome::CheckResult`]s that every reporter renders.
//! Later layers (database, LiteLLM, vLLM, end to end) add checks; nothing here changes for
//! them.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::context::Context;
use crate::outcome::{Layer, Prerequisite, ProbeResult, Verdict};

pub type Probe =
    Arc<dyn Fn(Arc<Context>, Attempt) -> BoxFuture<'static, ProbeResult> + Send + Sync>;

/// A named check, built from the suite alone (no network), so `--list` and filters need no
/// cluster.
pub struct Check {
    pub name: String,
    pub layer: Layer,
    pub requires: Vec<Prerequisite>,
    /// Required checks (of `requires`) this one starts beside rather than after: see
    /// [`Check::beside`].
    pub beside: Vec<String>,
    pub probe: Probe,
}

impl Check {
    pub fn new<F, Fut>(name: impl Into<String>, layer: Layer, probe: F) -> Check
    where
        F: Fn(Arc<Context>, Attempt) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ProbeResult> + Send + 'static,
    {
        Check {
            name: name.into(),
            layer,
            requires: Vec::new(),
            beside: Vec::new(),
            probe: Arc::new(move |cx, attempt| Box::pin(probe(cx, attempt))),
        }
    }

    pub fn requires(mut self, prerequisite: Prerequisite) -> Check {
        self.requires.push(prerequisite);
        self
    }

    /// Requires check `name` to pass, but starts at once, beside it, rather than after it: for
    /// a check that costs nothing where `name` would fail (a request to a proxy that is not
    /// live is refused at once) and needs nothing `name` learns. Its result is held until
    /// `name` has finished; were `name` not to pass, it is stopped (if still running) and
    /// reported skipped with its cause, as if it had waited.
    pub fn beside(mut self, name: impl Into<String>) -> Check {
        let name = name.into();
        self.beside.push(name.clone());
        self.requires(Prerequisite::Check(name))
    }

    /// Makes this check the proof for `aliases` too, whose deployment equals its alias's (see
    /// [`Family::per_deployment`]): its result says which aliases it stands for, so a reader
    /// looking for one of them finds it.
    pub fn stands_for(mut self, aliases: Vec<String>) -> Check {
        if aliases.is_empty() {
            return self;
        }
        const SHOWN: usize = 5;
        let mut named = aliases[..aliases.len().min(SHOWN)].join(", ");
        if aliases.len() > SHOWN {
            named.push_str(&format!(" and {} more", aliases.len() - SHOWN));
        }
        let line = format!(
            "stands for {} more alias{} of the same deployment (equal litellm_params and model_info): {named}; --every-alias checks each",
            aliases.len(),
            if aliases.len() == 1 { "" } else { "es" },
        );
        let probe = self.probe;
        self.probe = Arc::new(move |cx, attempt| {
            let (probe, line) = (Arc::clone(&probe), line.clone());
            Box::pin(async move {
                match probe(cx, attempt).await {
                    Ok(Verdict::Passed(mut p)) => {
                        p.notes.push(line);
                        Ok(Verdict::Passed(p))
                    }
                    Err(mut f) => {
                        f.details = Some(match f.details.take() {
                            Some(d) => format!("{d}\n{line}"),
                            None => line,
                        });
                        Err(f)
                    }
                    skipped => skipped,
                }
            })
        });
        self
    }
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

/// Where a [`Family`]'s pattern has the alias: `e2e::chat::<alias>`.
pub const ALIAS: &str = "<alias>";

/// Checks with one instance per model alias (`e2e::chat::<alias>`). Aliases come from the
/// cluster (the proxy config), so these are built after the run has read it; `--list` shows
/// the pattern unless the suite names the aliases.
pub struct Family {
    /// The check name with [`ALIAS`] where the alias goes.
    pub pattern: String,
    /// Builds the check for one alias, or `None` where it does not apply (no guardrail on it).
    pub build: FamilyBuild,
    /// Whether one alias's check proves every alias of the same deployment (a chat through
    /// `a` and through `b`, equal but for their names, takes the same route to the same
    /// backend with the same key and guardrails): the run then builds it for the first
    /// selected alias of each deployment only, unless `--every-alias`.
    pub per_deployment: bool,
}

/// Builds a family's check for one alias (see [`Family::build`]).
pub type FamilyBuild = Arc<dyn Fn(&Context, &str) -> Option<Check> + Send + Sync>;

impl Family {
    pub fn new<F>(pattern: impl Into<String>, build: F) -> Family
    where
        F: Fn(&Context, &str) -> Option<Check> + Send + Sync + 'static,
    {
        Family {
            pattern: pattern.into(),
            build: Arc::new(build),
            per_deployment: false,
        }
    }

    /// See [`Family::per_deployment`].
    pub fn per_deployment(mut self) -> Family {
        self.per_deployment = true;
        self
    }

    pub fn name_for(&self, alias: &str) -> String {
        self.pattern.replace(ALIAS, alias)
    }
}

/// Everything the suite describes: checks known up front, and per-alias families.
#[derive(Default)]
pub struct Catalog {
    pub checks: Vec<Check>,
    pub families: Vec<Family>,
}

/// Handed to a probe: lets it leave a trace of what it last saw, which the runner reports if
/// the probe runs out of time ("waiting for logs of pod x"), instead of a bare "timed out",
/// and tells it when the runner will give up on it, so limits it sets on servers (a
/// database session's statement timeout) end before it does.
#[derive(Clone, Default)]
pub struct Attempt {
    observed: Arc<Mutex<Option<String>>>,
    deadline: Option<tokio::time::Instant>,
}

impl Attempt {
    /// The context of an attempt the runner cuts at `deadline`.
    pub fn until(deadline: tokio::time::Instant) -> Attempt {
        Attempt {
            deadline: Some(deadline),
            ..Attempt::default()
        }
    }

    /// Time left before the runner gives up on this attempt; `None` outside a run.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }

    pub fn observe(&self, state: impl Into<String>) {
        if let Ok(mut slot) = self.observed.lock() {
            *slot = Some(state.into());
        }
    }

    pub fn last_observed(&self) -> Option<String> {
        self.observed.lock().ok().and_then(|s| s.clone())
    }
}
