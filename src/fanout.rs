//! Runs a [`FleetPlan`]: each cluster's pipeline ([`verify::run_redacting`]) at once, at most
//! `concurrency` of them, each with its own connection, port-forwards, timeouts and deadline
//! (they are its plan's), so an unreachable cluster costs its own `--timeout` and never slows
//! the others. Their events reach one [`FleetEvents`] sink tagged with the cluster; their
//! reports become one [`FleetReport`], every text in it redacted by every cluster's redactor
//! (a server of one cluster may echo a value that is a secret of another).
//!
//! Architecture invariant: as [`crate::verify`]: no printing, no exit, no signal handlers, no
//! process environment; the edge ([`crate::run`]) renders the report and decides the exit code.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::events::{Event, FleetEvents};
use crate::fleet::{ClusterReport, FleetPlan, FleetReport, Verdict};
use crate::outcome::{Cause, CheckResult, RunReport};
use crate::runner::Stopper;
use crate::secret::Redactor;
use crate::verify::{self, SetupFailure};

/// Checks every cluster of `fleet`, at most `fleet.concurrency` at once, and returns their
/// reports in the plan's order. `stop` stops every cluster's run (each still reports where it
/// was); a cluster not yet started then reports that it was stopped before it started.
///
/// Needs a multi-thread tokio runtime whose blocking pool has room for one thread per cluster
/// in flight (tokio's default of 512 is plenty): each run's checks hold one while they run.
pub async fn run(fleet: &FleetPlan, events: &mut dyn FleetEvents, stop: &Stopper) -> FleetReport {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(fleet.concurrency.max(1)));
    let (sender, mut received) = mpsc::unbounded_channel::<(usize, Event)>();
    let redactors: Vec<Redactor> = fleet.clusters.iter().map(|_| Redactor::default()).collect();
    let mut runs = JoinSet::new();
    let mut index_of = std::collections::HashMap::new();
    for (i, cluster) in fleet.clusters.iter().enumerate() {
        let plan = cluster.plan.clone();
        let redactor = redactors[i].clone();
        let stopper = stop.child();
        let gate = gate.clone();
        let sender = sender.clone();
        let handle = runs.spawn(async move {
            // The semaphore is never closed; without a permit the run would not be bounded.
            let _permit = gate.acquire_owned().await.ok();
            let mut sink = move |event: &Event| {
                // The receiver lives until every run has ended.
                let _ = sender.send((i, event.clone()));
            };
            verify::run_redacting(&plan, redactor, &mut sink, &stopper).await
        });
        index_of.insert(handle.id(), i);
    }
    drop(sender);

    let mut reports: Vec<Option<ClusterReport>> = vec![None; fleet.clusters.len()];
    let name = |i: usize| fleet.clusters[i].name.as_str();
    loop {
        tokio::select! {
            // Events first: a cluster's finish is handled after everything it sent.
            biased;
            Some((i, event)) = received.recv() => events.event(name(i), &event),
            joined = runs.join_next_with_id() => {
                let Some(joined) = joined else { break };
                let (i, outcome) = match joined {
                    Ok((id, outcome)) => (index_of[&id], Ok(outcome)),
                    Err(e) => (index_of[&e.id()], Err(e)),
                };
                // Everything the run sent was sent before it ended.
                while let Ok((j, event)) = received.try_recv() {
                    events.event(name(j), &event);
                }
                let plan = &fleet.clusters[i].plan;
                let (report, verdict) = match outcome {
                    Ok(Ok(report)) => {
                        let verdict = Verdict::of(&report);
                        (report, verdict)
                    }
                    Ok(Err(failure)) => {
                        let report = failure.report();
                        // A run that could not start sent no events: its line still shows.
                        events.event(name(i), &Event::RunFinished(report.clone()));
                        (report, Verdict::NotChecked)
                    }
                    Err(_) => {
                        let failure = SetupFailure::new(
                            plan.suite.namespace.clone(),
                            Cause::Panicked,
                            "smokecheck panicked while checking this cluster (a bug: please report it)",
                        );
                        let report = failure.report();
                        events.event(name(i), &Event::RunFinished(report.clone()));
                        (report, Verdict::Panicked)
                    }
                };
                reports[i] = Some(ClusterReport {
                    name: name(i).to_string(),
                    context: report.context.clone().or_else(|| plan.kube.context.clone()),
                    report,
                    verdict,
                });
            }
        }
    }
    let clusters = reports
        .into_iter()
        .flatten()
        .map(|mut cluster| {
            cluster.report = redacted_by_all(cluster.report, &redactors);
            cluster
        })
        .collect();
    FleetReport {
        clusters,
        duration: started.elapsed(),
    }
}

/// `report` with every text redacted by each of `redactors`.
fn redacted_by_all(mut report: RunReport, redactors: &[Redactor]) -> RunReport {
    let redact = |text: &str| {
        redactors
            .iter()
            .fold(text.to_string(), |text, r| r.redact(&text))
    };
    report.error = report.error.as_deref().map(redact);
    report.checks = report
        .checks
        .into_iter()
        .map(|c| CheckResult {
            summary: redact(&c.summary),
            details: c.details.as_deref().map(redact),
            hint: c.hint.as_deref().map(redact),
            skip_reason: c.skip_reason.as_deref().map(redact),
            failed_attempts: c.failed_attempts.iter().map(|s| redact(s)).collect(),
            ..c
        })
        .collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Cause, Layer};
    use crate::secret::SecretValue;

    #[test]
    fn each_report_is_redacted_by_every_clusters_redactor() {
        let a = Redactor::default();
        let b = Redactor::default();
        a.register(&SecretValue::new(b"secret-of-cluster-a".to_vec()));
        b.register(&SecretValue::new(b"secret-of-cluster-b".to_vec()));
        let mut check = CheckResult::skipped("e2e::chat::x", Layer::E2e, "x".into());
        check.summary = "echoed secret-of-cluster-b and secret-of-cluster-a".into();
        check.failed_attempts = vec!["once secret-of-cluster-b".into()];
        let mut report = RunReport::setup_failure(
            None,
            "litellm".into(),
            Cause::Setup,
            "secret-of-cluster-b".into(),
        );
        report.checks.push(check);
        let out = redacted_by_all(report, &[a, b]);
        let text = format!("{out:?}");
        assert!(!text.contains("secret-of-cluster"), "{text}");
    }
}
