//! Runs checks: libtest-mimic trials on the caller's tokio runtime. "Eventually" lives here,
//! not in the checks: the per-check timeout, the run's deadline, `--wait` retries with
//! backoff, and the last observed state when time runs out. Every result is redacted before
//! anyone sees it, and once more at the end with everything the run learnt (a Secret read by
//! a later check). Each result is emitted as an event as soon as it is recorded.
//!
//! Architecture invariant: the runner knows checks, the result model and events; it imports no
//! reporter and no check of its own.

pub mod stop;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libtest_mimic::{Arguments, Trial};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use crate::check::{Attempt, Check};
use crate::context::Context;
use crate::events::{Event, Events};
use crate::outcome::{
    Cause, CheckResult, Failure, Layer, Prerequisite, ProbeResult, Status, Verdict, Warning,
};

pub use self::stop::{Stop, Stopper};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub timeout: Duration,
    pub wait: Option<Duration>,
    pub threads: Option<usize>,
}

/// What a phase records per check: its result, and the prerequisites its failure showed do not
/// hold (with the reason dependents report).
type Recorded = BTreeMap<String, (CheckResult, Vec<(Prerequisite, String)>)>;

/// Runs `checks` and returns their results in check order; each result is emitted to `events`
/// as it is recorded. Platform checks run first, as their own phase; the others are then built
/// from their outcomes: a check needing a prerequisite that failed is skipped with the reason.
pub async fn run(
    cx: Arc<Context>,
    checks: Vec<Check>,
    options: &RunOptions,
    stopper: &Stopper,
    events: &mut dyn Events,
) -> Vec<CheckResult> {
    let (finished, mut recorded) = tokio::sync::mpsc::unbounded_channel();
    let runtime = tokio::runtime::Handle::current();
    let (options, stopper) = (options.clone(), stopper.clone());
    // libtest-mimic blocks until its trials are done: off the async threads, each trial driving
    // its check on this runtime.
    let trials = tokio::task::spawn_blocking(move || {
        run_phases(&runtime, cx, checks, &options, &stopper, &finished)
    });
    // Ends when the trials are done (the last sender is dropped with them).
    while let Some(result) = recorded.recv().await {
        events.event(&Event::CheckFinished(result));
    }
    match trials.await {
        Ok(results) => results,
        // A bug in the runner itself: the caller's panic handling reports it.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// [`run`]'s blocking part: every phase, one after another, as libtest-mimic runs.
fn run_phases(
    runtime: &tokio::runtime::Handle,
    cx: Arc<Context>,
    checks: Vec<Check>,
    options: &RunOptions,
    stopper: &Stopper,
    finished: &UnboundedSender<CheckResult>,
) -> Vec<CheckResult> {
    let order: Vec<(String, Layer)> = checks.iter().map(|c| (c.name.clone(), c.layer)).collect();
    // A check's name is the report's own text, never a secret's.
    cx.redactor
        .protect(order.iter().map(|(name, _)| name.clone()));
    // One --wait window for the whole run, every phase included.
    let wait_until = options.wait.map(|w| Instant::now() + w);
    let phases = phases(checks);

    let mut recorded = Recorded::new();
    let mut unmet: BTreeMap<Prerequisite, String> = BTreeMap::new();
    for checks in phases {
        let done = phase(
            runtime, &cx, checks, options, wait_until, stopper, finished, &unmet,
        );
        for (name, (result, broken)) in &done {
            for (prerequisite, why) in broken {
                unmet
                    .entry(prerequisite.clone())
                    .or_insert_with(|| format!("{why} (see {name})"));
            }
            let why = match result.status {
                Status::Passed => continue,
                Status::Failed => format!("{name} failed: {}", result.summary),
                Status::Skipped => format!(
                    "{name} was skipped: {}",
                    result
                        .skip_reason
                        .as_deref()
                        .unwrap_or_default()
                        .trim_start_matches("skipped: ")
                ),
            };
            unmet
                .entry(Prerequisite::Check(name.clone()))
                .or_insert(why);
        }
        recorded.extend(done);
    }

    let results: Vec<CheckResult> = order
        .into_iter()
        .map(|(name, layer)| match recorded.remove(&name) {
            Some((result, _)) => result,
            None => {
                // A check that panicked recorded nothing; libtest-mimic caught the panic.
                let f = Failure::new(
                    Cause::Panicked,
                    "the check panicked: this is a smokecheck bug, please report it",
                );
                let r = result_of(&name, layer, Duration::ZERO, 1, Vec::new(), Err(f));
                let _ = finished.send(r.clone());
                r
            }
        })
        .collect();
    // A value registered after a result was recorded (its Secret's first read failed, a later
    // one succeeded) is scrubbed from the reports too; the terminal line is already out.
    results.into_iter().map(|r| redact(&cx, r)).collect()
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

/// Orders checks into phases: the platform checks first (they say which namespaces and CRDs
/// are missing), then every check after the checks it requires by name.
fn phases(checks: Vec<Check>) -> Vec<Vec<Check>> {
    let names: BTreeMap<String, usize> = checks
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), i))
        .collect();
    let mut level: Vec<Option<usize>> = vec![None; checks.len()];
    fn level_of(
        i: usize,
        checks: &[Check],
        names: &BTreeMap<String, usize>,
        level: &mut Vec<Option<usize>>,
        depth: usize,
    ) -> usize {
        if let Some(l) = level[i] {
            return l;
        }
        let base = usize::from(checks[i].layer != Layer::Platform);
        // Depth bounds a (mistaken) cycle of requirements instead of recursing forever.
        let l = if depth > checks.len() {
            base
        } else {
            checks[i]
                .requires
                .iter()
                .filter_map(|p| match p {
                    Prerequisite::Check(name) => names.get(name).copied(),
                    _ => None,
                })
                .map(|j| level_of(j, checks, names, level, depth + 1) + 1)
                .fold(base, usize::max)
        };
        level[i] = Some(l);
        l
    }
    let levels: Vec<usize> = (0..checks.len())
        .map(|i| level_of(i, &checks, &names, &mut level, 0))
        .collect();
    let count = levels.iter().copied().max().map_or(0, |m| m + 1);
    let mut out: Vec<Vec<Check>> = (0..count).map(|_| Vec::new()).collect();
    for (check, l) in checks.into_iter().zip(levels) {
        out[l].push(check);
    }
    out.retain(|p| !p.is_empty());
    out
}

/// Runs one phase's checks as libtest-mimic trials; checks needing an `unmet` prerequisite
/// are recorded as skipped without running.
#[allow(clippy::too_many_arguments)]
fn phase(
    runtime: &tokio::runtime::Handle,
    cx: &Arc<Context>,
    checks: Vec<Check>,
    options: &RunOptions,
    wait_until: Option<Instant>,
    stopper: &Stopper,
    finished: &UnboundedSender<CheckResult>,
    unmet: &BTreeMap<Prerequisite, String>,
) -> Recorded {
    let recorded: Arc<Mutex<Recorded>> = Arc::default();
    let mut trials = Vec::new();
    for check in checks {
        if let Some(reason) = check.requires.iter().find_map(|p| unmet.get(p)) {
            let r = redact(
                cx,
                CheckResult::skipped(&check.name, check.layer, format!("skipped: {reason}")),
            );
            let _ = finished.send(r.clone());
            if let Ok(mut map) = recorded.lock() {
                map.insert(r.name.clone(), (r, Vec::new()));
            }
            continue;
        }
        let (cx, options, stopper) = (Arc::clone(cx), options.clone(), stopper.clone());
        let handle = runtime.clone();
        let (finished, recorded) = (finished.clone(), Arc::clone(&recorded));
        trials.push(Trial::test(check.name.clone(), move || {
            let (result, broken) =
                handle.block_on(execute(&check, cx.clone(), &options, wait_until, &stopper));
            let result = redact(&cx, result);
            let _ = finished.send(result.clone());
            if let Ok(mut map) = recorded.lock() {
                map.insert(result.name.clone(), (result, broken));
            }
            Ok(())
        }));
    }
    let args = Arguments {
        test_threads: options.threads,
        quiet: true,
        // libtest-mimic always prints libtest-style lines; our reporters own the output.
        logfile: Some(NULL_DEVICE.to_string()),
        ..Arguments::default()
    };
    // The recorded results, not libtest-mimic's counts, decide the exit code.
    let _ = libtest_mimic::run(&args, trials);
    recorded.lock().map(|m| m.clone()).unwrap_or_default()
}

#[cfg(unix)]
const NULL_DEVICE: &str = "/dev/null";
#[cfg(not(unix))]
const NULL_DEVICE: &str = "NUL";

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
    check: &Check,
    cx: Arc<Context>,
    options: &RunOptions,
    wait_until: Option<Instant>,
    stopper: &Stopper,
) -> (CheckResult, Vec<(Prerequisite, String)>) {
    let start = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut failures: Vec<Failure> = Vec::new();
    let mut attempts = 0;
    loop {
        attempts += 1;
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
            Ok(verdict) => {
                let earlier = failures.iter().map(|f| f.summary.clone()).collect();
                let result = result_of(
                    &check.name,
                    check.layer,
                    start.elapsed(),
                    attempts,
                    earlier,
                    Ok(verdict),
                );
                return (result, Vec::new());
            }
            Err(f) => f,
        };
        let stopped_now = stopper.reason().is_some();
        failures.push(failure);
        let retry =
            !stopped_now && wait_until.is_some_and(|until| Instant::now() + backoff < until);
        if !retry {
            break;
        }
        tokio::select! {
            _ = stopper.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    let reported = pick(&mut failures);
    let unmet = reported.unmet.clone();
    let earlier = failures.iter().map(|f| f.summary.clone()).collect();
    let result = result_of(
        &check.name,
        check.layer,
        start.elapsed(),
        attempts,
        earlier,
        Err(reported),
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
