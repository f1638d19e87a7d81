//! What a run tells whoever watches it, as it happens (cargo-nextest's model): the run started
//! (what it checks and how it reaches the cluster), each check finished, the run finished. The
//! pipeline emits them, in that order, from one task; consumers (the terminal, a metrics
//! exporter, a test's recorder) implement [`Events`].
//!
//! Architecture invariant: events carry the result model ([`crate::outcome`]) and nothing else of
//! the crate, so consumers depend on neither the runner nor the checks.

use crate::outcome::{CheckResult, RunReport};

/// One thing that happened in a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The checks are about to run: the cluster is connected and every endpoint final.
    RunStarted(RunStart),
    /// One check is done (after its retries), redacted with what the run knew then.
    CheckFinished(CheckResult),
    /// The run is over: every result, redacted once more with everything the run learnt.
    RunFinished(RunReport),
}

/// What a run is about to check, and how it reaches the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStart {
    /// The kube context's name, or `in-cluster`.
    pub context: String,
    pub namespace: String,
    /// How many checks will report.
    pub checks: usize,
    /// How endpoints are reached: each port-forward, and each one that could not be set up.
    pub notes: Vec<String>,
}

/// A consumer of a run's events. Called from the task that runs the pipeline, one event at a
/// time: an implementation needs no locking of its own.
pub trait Events: Send {
    fn event(&mut self, event: &Event);
}

/// A closure is a consumer: `verify::run(&plan, &mut |e: &Event| seen.push(e.clone()), ..)`.
impl<F: FnMut(&Event) + Send> Events for F {
    fn event(&mut self, event: &Event) {
        self(event)
    }
}

/// A consumer of a fleet run's events: each cluster's run's, in order, tagged with the
/// cluster's name. Runs interleave; one cluster's events keep their order. A cluster that
/// could not be checked gets one [`Event::RunFinished`] with its setup entry.
pub trait FleetEvents: Send {
    fn event(&mut self, cluster: &str, event: &Event);
}
