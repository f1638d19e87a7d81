//! Runs checks on the caller's tokio runtime, each as soon as the checks it requires have
//! passed, as many at once as `--test-threads` allows (default [`DEFAULT_IN_FLIGHT`], never the
//! CPU count: checks wait on networks, and a pod limited to one core still has dozens of
//! requests to wait on). What limits the load on a destination is not this number but its
//! per-request caps (crate::destinations). "Eventually" lives here, not in the checks: the
//! per-check timeout, the run's deadline, `--wait` retries with backoff, and the last observed
//! state when time runs out. Every result is redacted before anyone sees it, and once more at
//! the end with everything the run learnt (a Secret read by a later check). Each result is
//! emitted as an event as soon as it is final.
//!
//! Prerequisites: a check requiring another check (`Prerequisite::Check`) starts once that
//! one passed, and is skipped with its cause otherwise. Some start at once, optimistically,
//! their result held until what they require has finished, and replaced (the check stopped if
//! still running) by a skip with its cause were that to fail, as if they had waited:
//! - a check requiring a namespace or a CRD: the platform checks that could say it is missing
//!   run beside it, and the checks needing one make cheap, harmless reads of the API server;
//! - a check that starts [`Check::beside`] a required check: the LiteLLM and chat checks
//!   beside `litellm::live`, as a proxy that is not live refuses them at once, at no model's
//!   cost.
//!
//! A check that needs what another learns (the trimming proof, `vllm::models`'s context
//! window) waits for it.
//!
//! Architecture invariant: the runner knows checks, the result model and events; it imports no
//! reporter and no check of its own.

pub mod stop;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::check::{Attempt, Check, Probe};
use crate::context::Context;
use crate::events::{Event, Events};
use crate::outcome::{
    Cause, CheckResult, Failure, Layer, Prerequisite, ProbeResult, Status, Verdict, Warning,
};

pub use self::stop::{Stop, Stopper};

/// Checks in flight at once unless `--test-threads` says otherwise: enough that a run of 200
/// aliases is never held back by it, far below what the per-destination caps let through.
pub const DEFAULT_IN_FLIGHT: usize = 32;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub timeout: Duration,
    pub wait: Option<Duration>,
    /// Checks in flight at once (`--test-threads`); `None`: [`DEFAULT_IN_FLIGHT`].
    pub threads: Option<usize>,
    /// The run's start: each result's `started` is its offset from here.
    pub started: Instant,
}

/// Where a check is in the run.
enum State {
    /// Not started: waits for a check it requires, or for a free slot.
    Waiting,
    Running(AbortHandle),
    /// Its probe is done; the result is held until its prerequisites are settled.
    Done(CheckResult, Vec<(Prerequisite, String)>),
    /// Reported.
    Final(CheckResult),
}

/// What a finished task hands back.
struct Finished {
    index: usize,
    result: CheckResult,
    unmet: Vec<(Prerequisite, String)>,
}

/// Runs `checks` and returns their results in check order; each result is emitted to `events`
/// once final. See the module header for the order they run in.
pub async fn run(
    cx: Arc<Context>,
    checks: Vec<Check>,
    options: &RunOptions,
    stopper: &Stopper,
    events: &mut dyn Events,
) -> Vec<CheckResult> {
    // A check's name is the report's own text, never a secret's.
    cx.redactor.protect(checks.iter().map(|c| c.name.clone()));
    let mut run = Schedule::new(cx, checks, options, stopper);
    run.drive(events).await;
    let results = run.results(events);
    // A value registered after a result was recorded (its Secret's first read failed, a later
    // one succeeded) is scrubbed from the reports too; the terminal line is already out.
    results.into_iter().map(|r| redact(&run.cx, r)).collect()
}

struct Schedule<'a> {
    cx: Arc<Context>,
    checks: Vec<Check>,
    options: &'a RunOptions,
    stopper: &'a Stopper,
    /// One --wait window for the whole run.
    wait_until: Option<Instant>,
    limit: usize,
    state: Vec<State>,
    /// Per check, the checks of this run it requires by name: its result stands once they
    /// have passed.
    after: Vec<Vec<usize>>,
    /// Per check, those of `after` it starts after (the others it starts beside).
    gate: Vec<Vec<usize>>,
    /// The platform checks that settle namespace and CRD prerequisites: those requiring none
    /// themselves (the namespace and CRD checks).
    settlers: Vec<usize>,
    /// Prerequisites a finished check showed do not hold, with the reason dependents report.
    unmet: BTreeMap<Prerequisite, String>,
    tasks: JoinSet<Finished>,
    /// A task's index, for a task that panicked.
    task_index: HashMap<tokio::task::Id, usize>,
}

fn soft(p: &Prerequisite) -> bool {
    matches!(p, Prerequisite::Namespace(_) | Prerequisite::Crd(_))
}

impl<'a> Schedule<'a> {
    fn new(
        cx: Arc<Context>,
        checks: Vec<Check>,
        options: &'a RunOptions,
        stopper: &'a Stopper,
    ) -> Self {
        let names: HashMap<&str, usize> = checks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let after: Vec<Vec<usize>> = checks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.requires
                    .iter()
                    .filter_map(|p| match p {
                        Prerequisite::Check(name) => names.get(name.as_str()).copied(),
                        _ => None,
                    })
                    .filter(|j| *j != i)
                    .collect()
            })
            .collect();
        let gate = after
            .iter()
            .zip(&checks)
            .map(|(after, c)| {
                after
                    .iter()
                    .copied()
                    .filter(|&j| !c.beside.contains(&checks[j].name))
                    .collect()
            })
            .collect();
        let settlers = checks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.layer == Layer::Platform && !c.requires.iter().any(soft))
            .map(|(i, _)| i)
            .collect();
        let state = checks.iter().map(|_| State::Waiting).collect();
        Schedule {
            cx,
            options,
            stopper,
            wait_until: options.wait.map(|w| Instant::now() + w),
            limit: options.threads.unwrap_or(DEFAULT_IN_FLIGHT).max(1),
            state,
            after,
            gate,
            settlers,
            unmet: BTreeMap::new(),
            tasks: JoinSet::new(),
            task_index: HashMap::new(),
            checks,
        }
    }

    /// Starts, settles and reports until every check is final.
    async fn drive(&mut self, events: &mut dyn Events) {
        loop {
            let started = self.start_ready(events);
            let settled = self.settle(events);
            if self.state.iter().all(|s| matches!(s, State::Final(_))) {
                return;
            }
            match self.tasks.join_next_with_id().await {
                Some(joined) => self.finished(joined, events),
                // Nothing runs and nothing could start: checks requiring each other (a mistake
                // in the catalog). Start the first waiting one regardless, as phases once did.
                None if !started && !settled => {
                    if let Some(i) = self.state.iter().position(|s| matches!(s, State::Waiting)) {
                        self.spawn(i);
                    }
                }
                None => {}
            }
        }
    }

    fn offset(&self) -> Duration {
        self.options.started.elapsed()
    }

    /// Starts waiting checks whose required checks passed, in catalog order, while slots are
    /// free; reports as skipped those a failed prerequisite rules out. Whether anything
    /// changed.
    fn start_ready(&mut self, events: &mut dyn Events) -> bool {
        let mut changed = false;
        for i in 0..self.checks.len() {
            if !matches!(self.state[i], State::Waiting) {
                continue;
            }
            if let Some(reason) = self.ruled_out(i) {
                self.skip(i, &reason, events);
                changed = true;
                continue;
            }
            let required_passed = self.gate[i].iter().all(|&j| match &self.state[j] {
                State::Done(r, _) | State::Final(r) => r.status == Status::Passed,
                State::Waiting | State::Running(_) => false,
            });
            if required_passed && self.running() < self.limit {
                self.spawn(i);
                changed = true;
            }
        }
        changed
    }

    fn running(&self) -> usize {
        self.state
            .iter()
            .filter(|s| matches!(s, State::Running(_)))
            .count()
    }

    /// Why check `i` cannot run (or its result cannot stand), as far as known now: a
    /// prerequisite shown not to hold, or a required check that did not pass. The first of its
    /// prerequisites in its own order, as the phases reported it.
    fn ruled_out(&self, i: usize) -> Option<String> {
        self.checks[i].requires.iter().find_map(|p| {
            if let Some(why) = self.unmet.get(p) {
                return Some(why.clone());
            }
            let Prerequisite::Check(name) = p else {
                return None;
            };
            let j = self.after[i]
                .iter()
                .copied()
                .find(|&j| self.checks[j].name == *name)?;
            match &self.state[j] {
                State::Done(r, _) | State::Final(r) => not_passed(name, r),
                State::Waiting | State::Running(_) => None,
            }
        })
    }

    fn spawn(&mut self, i: usize) {
        let check = &self.checks[i];
        let job = Job {
            name: check.name.clone(),
            layer: check.layer,
            probe: Arc::clone(&check.probe),
        };
        let (cx, options, stopper) = (
            Arc::clone(&self.cx),
            self.options.clone(),
            self.stopper.clone(),
        );
        let wait_until = self.wait_until;
        let offset = self.offset();
        let handle = self.tasks.spawn(async move {
            let (mut result, unmet) =
                execute(&job, Arc::clone(&cx), &options, wait_until, &stopper).await;
            result.started = offset;
            Finished {
                index: i,
                result: redact(&cx, result),
                unmet,
            }
        });
        self.task_index.insert(handle.id(), i);
        self.state[i] = State::Running(handle);
    }

    /// Records a finished task; a check it shows cannot stand (a namespace it reported
    /// missing) is stopped if it runs.
    fn finished(
        &mut self,
        joined: Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
        events: &mut dyn Events,
    ) {
        let (index, result, unmet) = match joined {
            Ok((_, f)) => (f.index, f.result, f.unmet),
            // Aborted: already reported as skipped.
            Err(e) if e.is_cancelled() => return,
            Err(e) => {
                let Some(&i) = self.task_index.get(&e.id()) else {
                    return;
                };
                // A bug in a check: reported as such, the run goes on.
                let f = Failure::new(
                    Cause::Panicked,
                    "the check panicked: this is a smokecheck bug, please report it",
                );
                let c = &self.checks[i];
                let mut r = result_of(&c.name, c.layer, Duration::ZERO, 1, Vec::new(), Err(f));
                r.started = self.offset();
                (i, r, Vec::new())
            }
        };
        let name = self.checks[index].name.clone();
        for (prerequisite, why) in &unmet {
            self.unmet
                .entry(prerequisite.clone())
                .or_insert_with(|| format!("{why} (see {name})"));
        }
        self.state[index] = State::Done(result, unmet);
        // Optimistic starts the new facts rule out end here.
        for i in 0..self.checks.len() {
            if matches!(self.state[i], State::Running(_))
                && let Some(reason) = self.ruled_out(i)
            {
                if let State::Running(handle) = &self.state[i] {
                    handle.abort();
                }
                self.skip(i, &reason, events);
            }
        }
    }

    /// Reports held results whose prerequisites are settled. Whether anything changed.
    fn settle(&mut self, events: &mut dyn Events) -> bool {
        let mut changed = false;
        // Results become final in dependency order; a pass per chain link.
        loop {
            let mut progress = false;
            for i in 0..self.checks.len() {
                if !matches!(self.state[i], State::Done(..)) {
                    continue;
                }
                let platform_settled = !self.checks[i].requires.iter().any(soft)
                    || self.settlers.iter().all(|&j| {
                        j == i || matches!(self.state[j], State::Done(..) | State::Final(_))
                    });
                let required_final = self.after[i]
                    .iter()
                    .all(|&j| matches!(self.state[j], State::Final(_)));
                if !(platform_settled && required_final) {
                    continue;
                }
                if let Some(reason) = self.ruled_out(i) {
                    self.skip(i, &reason, events);
                } else if let State::Done(r, unmet) =
                    std::mem::replace(&mut self.state[i], State::Waiting)
                {
                    events.event(&Event::CheckFinished(r.clone()));
                    drop(unmet);
                    self.state[i] = State::Final(r);
                }
                progress = true;
            }
            if !progress {
                return changed;
            }
            changed = true;
        }
    }

    /// Reports check `i` as skipped for `reason`.
    fn skip(&mut self, i: usize, reason: &str, events: &mut dyn Events) {
        let c = &self.checks[i];
        let mut r = redact(
            &self.cx,
            CheckResult::skipped(&c.name, c.layer, format!("skipped: {reason}")),
        );
        r.started = self.offset();
        events.event(&Event::CheckFinished(r.clone()));
        self.state[i] = State::Final(r);
    }

    /// Every result in check order.
    fn results(&mut self, events: &mut dyn Events) -> Vec<CheckResult> {
        let offset = self.offset();
        let checks = std::mem::take(&mut self.checks);
        std::mem::take(&mut self.state)
            .into_iter()
            .zip(checks)
            .map(|(state, c)| match state {
                State::Final(r) => r,
                // Unreachable: drive() returns once every check is final; still a result.
                State::Waiting | State::Running(_) | State::Done(..) => {
                    let f = Failure::new(
                        Cause::Panicked,
                        "the check never finished: this is a smokecheck bug, please report it",
                    );
                    let mut r = result_of(&c.name, c.layer, Duration::ZERO, 0, Vec::new(), Err(f));
                    r.started = offset;
                    events.event(&Event::CheckFinished(r.clone()));
                    r
                }
            })
            .collect()
    }
}

/// Why a dependent of check `name` is skipped, when it did not pass.
fn not_passed(name: &str, result: &CheckResult) -> Option<String> {
    match result.status {
        Status::Passed => None,
        Status::Failed => Some(format!("{name} failed: {}", result.summary)),
        Status::Skipped => Some(format!(
            "{name} was skipped: {}",
            result
                .skip_reason
                .as_deref()
                .unwrap_or_default()
                .trim_start_matches("skipped: ")
        )),
    }
}

/// What a task needs of a check.
struct Job {
    name: String,
    layer: Layer,
    probe: Probe,
}

/// The results of checks the run was stopped before it could start (a deadline or a signal
/// while it was still reading the cluster).
pub fn not_run(checks: &[Check], stop: Stop) -> Vec<CheckResult> {
    checks
        .iter()
        .map(|c| {
            let failure = stopped(stop, &Attempt::default(), false);
            result_of(
                &c.name,
                c.layer,
                Duration::ZERO,
                0,
                Vec::new(),
                Err(failure),
            )
        })
        .collect()
}

fn redact(cx: &Context, mut r: CheckResult) -> CheckResult {
    let red = &cx.redactor;
    r.summary = red.redact(&r.summary);
    r.details = r.details.map(|d| red.redact(&d));
    r.hint = r.hint.map(|h| red.redact(&h));
    r.skip_reason = r.skip_reason.map(|s| red.redact(&s));
    r.failed_attempts = r.failed_attempts.iter().map(|s| red.redact(s)).collect();
    r.warnings = bounded_warnings(red, std::mem::take(&mut r.warnings));
    r
}

/// The most warnings one check reports, and the most characters of a warning's reason or
/// hint: they quote servers (a SealedSecret's message, an alias name), so they are redacted,
/// then cut, like every other text from outside.
const MAX_WARNINGS: usize = 8;
const WARNING_CHARS: usize = 400;

fn bounded_warnings(red: &crate::secret::Redactor, warnings: Vec<Warning>) -> Vec<Warning> {
    let total = warnings.len();
    let mut out: Vec<Warning> = warnings
        .into_iter()
        .take(MAX_WARNINGS)
        .map(|w| Warning {
            reason: red.cut(&w.reason, WARNING_CHARS),
            hint: red.cut(&w.hint, WARNING_CHARS),
        })
        .collect();
    if total > MAX_WARNINGS
        && let Some(last) = out.last_mut()
    {
        last.reason = format!(
            "{} (and {} more warnings)",
            last.reason,
            total - MAX_WARNINGS
        );
    }
    out
}

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Runs one check: attempts until it passes, `--wait` runs out, or the run is stopped.
async fn execute(
    check: &Job,
    cx: Arc<Context>,
    options: &RunOptions,
    wait_until: Option<Instant>,
    stopper: &Stopper,
) -> (CheckResult, Vec<(Prerequisite, String)>) {
    let start = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut failures: Vec<Failure> = Vec::new();
    let mut attempts = 0;
    let outcome = loop {
        attempts += 1;
        if attempts > 1 {
            // A retry waits for the cluster to change: what the run read before is stale.
            cx.cluster.forget_reads();
            cx.answers.forget();
        }
        let attempt = Attempt::until(Instant::now() + options.timeout);
        let probed = if let Some(stop) = stopper.reason() {
            Err(stopped(stop, &attempt, false))
        } else {
            tokio::select! {
                biased;
                _ = stopper.cancelled() => Err(stopped(stopper.reason().unwrap_or(Stop::Signal("a signal")), &attempt, true)),
                r = tokio::time::timeout(options.timeout, (check.probe)(Arc::clone(&cx), attempt.clone())) => {
                    r.unwrap_or_else(|_| Err(timed_out(options.timeout, &attempt)))
                }
            }
        };
        let failure = match probed {
            Ok(verdict) => break Ok(verdict),
            Err(f) => f,
        };
        let stopped_now = stopper.reason().is_some();
        failures.push(failure);
        let retry =
            !stopped_now && wait_until.is_some_and(|until| Instant::now() + backoff < until);
        // Back off before the next attempt, unless the run is stopped meanwhile.
        let retry = retry
            && tokio::select! {
                _ = stopper.cancelled() => false,
                _ = tokio::time::sleep(backoff) => true,
            };
        if !retry {
            break Err(pick(&mut failures));
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    let unmet = outcome
        .as_ref()
        .err()
        .map(|f| f.unmet.clone())
        .unwrap_or_default();
    // The other failed attempts: a passed check with some was flaky.
    let earlier = failures.iter().map(|f| f.summary.clone()).collect();
    let result = result_of(
        &check.name,
        check.layer,
        start.elapsed(),
        attempts,
        earlier,
        outcome,
    );
    (result, unmet)
}

/// The failure to report after retries: the last one with a primary cause (a timeout or a
/// stop after a real failure reports the real failure, with the later state as details).
fn pick(failures: &mut Vec<Failure>) -> Failure {
    let last = failures.pop().expect("at least one attempt failed");
    if !last.cause.is_consequence() {
        return last;
    }
    match failures.iter().rposition(|f| !f.cause.is_consequence()) {
        Some(i) => {
            let mut primary = failures.remove(i);
            let later = format!("last attempt: {}", last.summary);
            primary.details = Some(match primary.details.take() {
                Some(d) => format!("{d}\n{later}"),
                None => later,
            });
            primary
        }
        None => last,
    }
}

fn timed_out(timeout: Duration, attempt: &Attempt) -> Failure {
    let mut f = Failure::new(
        Cause::Timeout,
        format!("no answer within {}", humantime::format_duration(timeout)),
    )
    .hint("raise --timeout if the cluster is slow, or look at what the check was waiting for");
    if let Some(state) = attempt.last_observed() {
        f = f.details(format!("last observed: {state}"));
    }
    f
}

fn stopped(stop: Stop, attempt: &Attempt, was_running: bool) -> Failure {
    let (cause, why) = stop.describe();
    let summary = if was_running {
        format!("{why} while this check was running")
    } else {
        format!("not run: {why}")
    };
    let mut f = Failure::new(cause, summary);
    if let Some(state) = attempt.last_observed() {
        f = f.details(format!("last observed: {state}"));
    }
    f
}

fn result_of(
    name: &str,
    layer: Layer,
    duration: Duration,
    attempts: u32,
    failed_attempts: Vec<String>,
    probed: ProbeResult,
) -> CheckResult {
    let base = CheckResult::skipped(name, layer, String::new());
    match probed {
        Ok(Verdict::Passed(p)) => CheckResult {
            status: Status::Passed,
            duration,
            attempts,
            summary: p.summary,
            details: (!p.notes.is_empty()).then(|| p.notes.join("\n")),
            skip_reason: None,
            metrics: p.metrics,
            failed_attempts,
            warnings: p.warnings,
            ..base
        },
        Err(f) => CheckResult {
            status: Status::Failed,
            duration,
            attempts,
            cause: Some(f.cause),
            summary: f.summary,
            details: f.details,
            hint: f.hint,
            skip_reason: None,
            metrics: f.metrics,
            failed_attempts,
            ..base
        },
        Ok(Verdict::Skipped(reason)) => CheckResult {
            duration,
            attempts,
            skip_reason: Some(reason),
            ..base
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_after_a_real_failure_reports_the_real_failure() {
        let mut fs = vec![
            Failure::new(Cause::CrashLoop, "crash"),
            Failure::new(Cause::Timeout, "slow"),
        ];
        let f = pick(&mut fs);
        assert_eq!(f.cause, Cause::CrashLoop);
        assert!(f.details.unwrap_or_default().contains("last attempt: slow"));
    }

    #[test]
    fn an_attempt_knows_its_time_left() {
        let attempt = Attempt::until(Instant::now() + Duration::from_secs(5));
        let left = attempt.remaining().expect("a deadline");
        assert!(left <= Duration::from_secs(5) && left > Duration::from_secs(4));
        assert_eq!(
            Attempt::until(Instant::now()).remaining(),
            Some(Duration::ZERO)
        );
        assert_eq!(Attempt::default().remaining(), None);
    }

    #[test]
    fn the_latest_primary_failure_wins() {
        let mut fs = vec![
            Failure::new(Cause::NotReady, "starting"),
            Failure::new(Cause::CrashLoop, "crash"),
        ];
        assert_eq!(pick(&mut fs).cause, Cause::CrashLoop);
    }
}
