//! `smokecheck serve`: the suite's checks every interval, their results on HTTP (server.rs)
//! as Prometheus metrics and the last run's JSON report. Runs go through [`verify::run`], one
//! at a time, each under its own deadline below the interval (and abandoned, should it still
//! not end, once the deadline has passed by [`ABANDON_AFTER`]); starts are jittered by up to a
//! tenth of the interval, so several serves started together drift apart.
//!
//! Like `verify`, it is an edge of the program: it writes one line per run to stderr (check
//! names and cause codes only, never server text) and is stopped by its caller's [`Stopper`]
//! (SIGTERM in the binary): the run in progress ends with its checks interrupted, or is
//! abandoned after [`SHUTDOWN_GRACE`], and the listener closes.

mod server;

use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::cli::ServePlan;
use crate::outcome::{RunReport, Status};
use crate::report::json;
use crate::report::metrics::{Exporter, RunResult};
use crate::runner::Stopper;
use crate::verify;

pub use server::Limits;

/// How long past its deadline a run may take to end before it is dropped (its checks cut off
/// where they are): ending reads nothing more, so this is only ever spent by a wedged run.
pub const ABANDON_AFTER: Duration = Duration::from_secs(15);
/// How long a run may take to end after the stop (SIGTERM) before it is abandoned: below
/// Kubernetes' default terminationGracePeriodSeconds (30 s).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the HTTP endpoint serves, shared with the run loop.
pub struct Shared {
    pub metrics: Exporter,
    /// The last run's `verify --format json` document; `None` until a first run has ended.
    pub report: RwLock<Option<Arc<String>>>,
}

impl Shared {
    pub fn ready(&self) -> bool {
        self.report.read().map(|r| r.is_some()).unwrap_or(true)
    }

    fn record(&self, report: &RunReport, ended: SystemTime) {
        // Rendered once per run, under the report's lock: /report.json and /metrics are of
        // the same run once both are updated (the metrics update is atomic on its own).
        let document = Arc::new(json::render(report));
        self.metrics.record(report, ended);
        if let Ok(mut slot) = self.report.write() {
            *slot = Some(document);
        }
    }
}

/// serve could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--listen {addr}: cannot listen there")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `plan` until `stop` is stopped: binds the listener (the only error), then runs the
/// checks every interval and serves the results. Needs a multi-thread runtime (as
/// [`verify::run`]).
pub async fn serve(plan: ServePlan, limits: Limits, stop: &Stopper) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(plan.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: plan.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(plan.listen);
    let shared = Arc::new(Shared {
        metrics: Exporter::new(plan.interval, SystemTime::now()),
        report: RwLock::new(None),
    });
    log(&format!(
        "serve: listening on http://{addr} (/metrics, /healthz, /readyz, /report.json); a run every {} (deadline {})",
        humantime::format_duration(plan.interval),
        humantime::format_duration(plan.plan.deadline.unwrap_or(plan.interval)),
    ));
    let server = tokio::spawn(server::serve(
        listener,
        shared.clone(),
        limits,
        stop.clone(),
    ));
    let _server = tokio_util::task::AbortOnDropHandle::new(server);
    let jitter = RandomState::new();
    let mut started = Instant::now();
    for n in 0u64.. {
        run_once(&plan, &shared, stop).await;
        // The next start: one jittered interval after this one's, never before this run ended.
        let next = started + jittered(plan.interval, jitter.hash_one(n));
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {},
            _ = stop.cancelled() => break,
        }
        started = Instant::now();
    }
    log("serve: stopped");
    Ok(())
}

/// One run, recorded unless the stop interrupted it (the process is ending: an interrupted run
/// says nothing about the deployment).
async fn run_once(plan: &ServePlan, shared: &Shared, stop: &Stopper) {
    if stop.is_stopped() {
        return;
    }
    let deadline = plan.plan.deadline.unwrap_or(plan.interval);
    let mut quiet = |_: &crate::events::Event| {};
    let run = verify::run(&plan.plan, &mut quiet, stop);
    let stopped = async {
        stop.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout(deadline + ABANDON_AFTER, run) => r.ok(),
        _ = stopped => None,
    };
    if stop.is_stopped() {
        return;
    }
    let report = match outcome {
        Some(Ok(report)) => report,
        Some(Err(failure)) => failure.report(),
        None => {
            // The run did not end past its deadline: dropping it stopped its checks. Said as
            // a setup failure, so the metrics say "error" and the stale alert counts on.
            let message = format!(
                "the run did not end within {} of its deadline ({}): abandoned",
                humantime::format_duration(ABANDON_AFTER),
                humantime::format_duration(deadline)
            );
            verify::SetupFailure::new(
                plan.plan.suite.namespace.clone(),
                crate::outcome::Cause::Deadline,
                message,
            )
            .report()
        }
    };
    shared.record(&report, SystemTime::now());
    log(&summary(&report));
}

/// `interval` moved by up to a tenth either way, by `random`.
fn jittered(interval: Duration, random: u64) -> Duration {
    let tenth = interval / 10;
    let span = (tenth * 2).as_millis().max(1) as u64;
    interval - tenth + Duration::from_millis(random % span)
}

/// One line per run: the result, the counts and what failed (names and cause codes).
fn summary(report: &RunReport) -> String {
    let counts = report.counts();
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Failed)
        .map(|c| match c.cause {
            Some(cause) => format!("{} ({cause})", c.name),
            None => c.name.clone(),
        })
        .collect();
    let mut line = format!(
        "serve: run {}: {} passed, {} failed, {} skipped in {:.1}s",
        RunResult::of(report).as_str(),
        counts.passed,
        counts.failed,
        counts.skipped,
        report.duration.as_secs_f64()
    );
    if !failed.is_empty() {
        line.push_str(&format!(": {}", failed.join(", ")));
    }
    line
}

/// A line on stderr, with control characters made visible (a check name holds an alias from
/// the cluster's config); a reader that went away is not an error of serve.
fn log(line: &str) {
    let line = crate::report::visible(line);
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("{line}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_tenth_of_the_interval() {
        let interval = Duration::from_secs(300);
        let jitter = RandomState::new();
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..1000u64 {
            let d = jittered(interval, jitter.hash_one(n));
            assert!(
                d >= Duration::from_secs(270) && d < Duration::from_secs(330),
                "{d:?}"
            );
            seen.insert(d.as_secs());
        }
        // Spread, not a constant.
        assert!(seen.len() > 20, "{seen:?}");
    }
}
