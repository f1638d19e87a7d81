//! A run's results as Prometheus metrics, exactly as ci/monitor/METRICS.md (the contract)
//! says: [`Exporter`] keeps serve's metrics across runs (consecutive failures, the last
//! success, runs by result) and renders them for `/metrics`; [`batch`] renders one run alone,
//! the families `verify --pushgateway` pushes. Rendered by `prometheus-client` in the
//! Prometheus text format 0.0.4 or OpenMetrics, never by hand.
//!
//! Label values come from the run's own model: check names (the suite's, with aliases filled
//! in), layers, cause codes and fixed words; never a summary, detail or other server text.
//! Series of a check that left the run (an alias gone, a setup failure) are removed, so the
//! series count follows the current selection and never grows with history.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::outcome::{CheckResult, Layer, RunReport, Status};

/// A float gauge.
type Value = Gauge<f64, AtomicU64>;
/// A gauge without labels that may be absent (`[]`: its one series, when present).
type Optional = Family<[(String, String); 0], Value>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct CheckLabels {
    check: String,
    layer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    check: String,
    layer: String,
    cause: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct E2eLabels {
    check: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// How a run ended, as `smokecheck_runs_total{result}` counts it (and the exit code says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    /// Exit code 0: every selected check passed.
    Passed,
    /// Exit code 1: a check failed.
    Failed,
    /// Exit code 2: nothing could be checked (one failed `smokecheck::setup`).
    Error,
}

impl RunResult {
    pub const ALL: [RunResult; 3] = [RunResult::Passed, RunResult::Failed, RunResult::Error];

    pub fn of(report: &RunReport) -> RunResult {
        if report.error.is_some() {
            RunResult::Error
        } else if report.counts().failed > 0 {
            RunResult::Failed
        } else {
            RunResult::Passed
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Passed => "passed",
            RunResult::Failed => "failed",
            RunResult::Error => "error",
        }
    }
}

/// Which text format a scraper gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// The Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0, for a scraper whose `Accept` asks for it.
    OpenMetrics,
}

impl Exposition {
    /// The format an `Accept` header asks for: OpenMetrics when it names it, else 0.0.4.
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Exposition::OpenMetrics,
            _ => Exposition::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Prometheus => prometheus_text::CONTENT_TYPE,
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The cause label of a check that passed, and of one that was skipped.
const NONE: &str = "none";
const SKIPPED: &str = "skipped";

/// Every family, registered in the contract's order. `serve` adds the ones only a long-lived
/// process has (consecutive failures, per-check last success, runs by result, interval, start).
struct Families {
    registry: Registry,
    check_success: Family<CheckLabels, Value>,
    check_duration: Family<CheckLabels, Value>,
    consecutive_failures: Family<CheckLabels, Value>,
    check_last_success: Family<CheckLabels, Value>,
    failure_info: Family<CauseLabels, Value>,
    warnings: Family<CheckLabels, Value>,
    run_success: Value,
    run_duration: Value,
    last_run: Value,
    last_success: Optional,
    runs: Family<ResultLabels, Counter>,
    interval: Value,
    start_time: Value,
    e2e_latency: Family<E2eLabels, Value>,
    e2e_ttft: Family<E2eLabels, Value>,
}

impl Families {
    fn new(serve: bool) -> Families {
        let f = Families {
            registry: Registry::default(),
            check_success: Family::default(),
            check_duration: Family::default(),
            consecutive_failures: Family::default(),
            check_last_success: Family::default(),
            failure_info: Family::default(),
            warnings: Family::default(),
            run_success: Value::default(),
            run_duration: Value::default(),
            last_run: Value::default(),
            last_success: Optional::default(),
            runs: Family::default(),
            interval: Value::default(),
            start_time: Value::default(),
            e2e_latency: Family::default(),
            e2e_ttft: Family::default(),
        };
        let build_info = Family::<VersionLabels, Value>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1.0);
        let mut r = f.registry;
        r.register(
            "smokecheck_check_success",
            "1 if the check passed in the last run, 0 if it failed; absent while skipped",
            f.check_success.clone(),
        );
        r.register(
            "smokecheck_check_duration_seconds",
            "How long the check took in the last run in which it ran, all attempts",
            f.check_duration.clone(),
        );
        if serve {
            r.register(
                "smokecheck_check_consecutive_failures",
                "In how many runs in a row the check has failed",
                f.consecutive_failures.clone(),
            );
            r.register(
                "smokecheck_check_last_success_timestamp_seconds",
                "When the last run in which the check passed ended, in Unix seconds",
                f.check_last_success.clone(),
            );
        }
        r.register(
            "smokecheck_check_failure_info",
            "The cause code of the check's failure in the last run: none when it passed, skipped when skipped",
            f.failure_info.clone(),
        );
        r.register(
            "smokecheck_check_warnings",
            "How many warnings the check carried in the last run; absent when none",
            f.warnings.clone(),
        );
        r.register(
            "smokecheck_run_success",
            "1 if every selected check passed in the last run, else 0",
            f.run_success.clone(),
        );
        r.register(
            "smokecheck_run_duration_seconds",
            "How long the last run took, setup included",
            f.run_duration.clone(),
        );
        r.register(
            "smokecheck_last_run_timestamp_seconds",
            "When the last run ended, in Unix seconds",
            f.last_run.clone(),
        );
        r.register(
            "smokecheck_last_success_timestamp_seconds",
            "When the last successful run ended, in Unix seconds",
            f.last_success.clone(),
        );
        if serve {
            // Registered as `smokecheck_runs`: the crate appends `_total` to a counter.
            r.register(
                "smokecheck_runs",
                "Runs since serve started, by result: passed, failed, error",
                f.runs.clone(),
            );
            for result in RunResult::ALL {
                // Each result exported from the start, at 0.
                drop(f.runs.get_or_create(&ResultLabels {
                    result: result.as_str().into(),
                }));
            }
            r.register(
                "smokecheck_interval_seconds",
                "The interval between two runs (--interval), without jitter",
                f.interval.clone(),
            );
            r.register(
                "smokecheck_start_time_seconds",
                "When serve started, in Unix seconds",
                f.start_time.clone(),
            );
        }
        r.register(
            "smokecheck_build_info",
            "smokecheck's own version, as a label; always 1",
            build_info,
        );
        r.register(
            "smokecheck_e2e_latency_seconds",
            "The whole answer's latency of an end-to-end check in the last run, while it passes",
            f.e2e_latency.clone(),
        );
        r.register(
            "smokecheck_e2e_ttft_seconds",
            "Time to the first content token of a streamed end-to-end check in the last run, while it passes",
            f.e2e_ttft.clone(),
        );
        Families { registry: r, ..f }
    }

    fn render(&self, format: Exposition) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = match format {
            Exposition::Prometheus => prometheus_text::encode(&mut out, &self.registry),
            Exposition::OpenMetrics => text::encode(&mut out, &self.registry),
        };
        out
    }

    /// The values of one run every consumer shares: per check success, duration, failure
    /// info and the e2e gauges; per run success, duration and end. Returns each check's
    /// labels with how it ended.
    fn record_run<'a>(
        &self,
        report: &'a RunReport,
        ended: f64,
    ) -> Vec<(CheckLabels, &'a CheckResult)> {
        let result = RunResult::of(report);
        self.run_success
            .set(bool_value(result == RunResult::Passed));
        self.run_duration.set(seconds(report.duration));
        self.last_run.set(ended);
        if result == RunResult::Passed {
            self.last_success.get_or_create(&[]).set(ended);
        }
        let mut checks = Vec::new();
        for r in &report.checks {
            let labels = CheckLabels {
                check: r.name.clone(),
                layer: r.layer.as_str().into(),
            };
            let e2e = E2eLabels {
                check: r.name.clone(),
            };
            match r.status {
                Status::Passed | Status::Failed => {
                    self.check_success
                        .get_or_create(&labels)
                        .set(bool_value(r.status == Status::Passed));
                    self.check_duration
                        .get_or_create(&labels)
                        .set(seconds(r.duration));
                }
                // Did not run: a gap, not a fake 0 or 1; its duration stays the last run's.
                Status::Skipped => {
                    self.check_success.remove(&labels);
                }
            }
            // A warning is server-influenced text: only its count is exported, never its words.
            match r.warnings.len() {
                0 => {
                    self.warnings.remove(&labels);
                }
                n => {
                    self.warnings.get_or_create(&labels).set(n as f64);
                }
            }
            let measured = |name: &str| {
                r.metrics
                    .iter()
                    .find(|(n, _)| *n == name)
                    .and_then(|(_, v)| v.as_f64())
                    .filter(|ms| ms.is_finite() && *ms >= 0.0)
                    .map(|ms| ms / 1000.0)
            };
            for (family, metric) in [
                (&self.e2e_latency, "latency_ms"),
                (&self.e2e_ttft, "ttft_ms"),
            ] {
                match measured(metric) {
                    Some(s) if r.layer == Layer::E2e && r.status == Status::Passed => {
                        family.get_or_create(&e2e).set(s);
                    }
                    _ => {
                        family.remove(&e2e);
                    }
                }
            }
            checks.push((labels, r));
        }
        checks
    }

    /// Removes every series of the check `labels` names.
    fn forget(&self, labels: &CheckLabels, cause: Option<&str>) {
        self.check_success.remove(labels);
        self.check_duration.remove(labels);
        self.consecutive_failures.remove(labels);
        self.check_last_success.remove(labels);
        self.warnings.remove(labels);
        if let Some(cause) = cause {
            self.failure_info.remove(&cause_labels(labels, cause));
        }
        let e2e = E2eLabels {
            check: labels.check.clone(),
        };
        self.e2e_latency.remove(&e2e);
        self.e2e_ttft.remove(&e2e);
    }
}

fn cause_labels(labels: &CheckLabels, cause: &str) -> CauseLabels {
    CauseLabels {
        check: labels.check.clone(),
        layer: labels.layer.clone(),
        cause: cause.into(),
    }
}

/// The `cause` label of a check's result.
fn cause_of(r: &CheckResult) -> &'static str {
    match r.status {
        Status::Passed => NONE,
        Status::Skipped => SKIPPED,
        // A failure always has a cause; `none` keeps exactly one info series should one not.
        Status::Failed => r.cause.map_or(NONE, |c| c.code()),
    }
}

fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Seconds, to the millisecond (the contract's precision).
fn seconds(d: std::time::Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}

/// Unix seconds, to the millisecond; 0 for a clock before 1970.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(seconds)
        .unwrap_or_default()
}

/// What serve keeps across runs besides the families themselves.
#[derive(Default)]
struct History {
    /// Each check of the last run: its cause label and its failed runs in a row.
    checks: BTreeMap<CheckLabels, (&'static str, u64)>,
}

/// serve's metrics: every family of the contract, updated run by run. One lock covers an
/// update and a render, so a scrape sees one run whole, never half of two (the alerts join
/// series of a run).
pub struct Exporter {
    inner: Mutex<(Families, History)>,
}

impl Exporter {
    /// The exporter of a serve started at `start` that runs every `interval`.
    pub fn new(interval: std::time::Duration, start: SystemTime) -> Exporter {
        let families = Families::new(true);
        families.interval.set(interval.as_secs_f64());
        families.start_time.set(unix_seconds(start));
        Exporter {
            inner: Mutex::new((families, History::default())),
        }
    }

    /// Takes in the run `report`, which ended at `ended`.
    pub fn record(&self, report: &RunReport, ended: SystemTime) {
        let ended = unix_seconds(ended);
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (families, history) = &mut *guard;
        let checks = families.record_run(report, ended);
        let mut seen = BTreeMap::new();
        for (labels, r) in checks {
            let cause = cause_of(r);
            let (old_cause, failures) = history.checks.get(&labels).copied().unwrap_or((cause, 0));
            let failures = match r.status {
                Status::Failed => failures + 1,
                Status::Passed | Status::Skipped => 0,
            };
            families
                .consecutive_failures
                .get_or_create(&labels)
                .set(failures as f64);
            if r.status == Status::Passed {
                families
                    .check_last_success
                    .get_or_create(&labels)
                    .set(ended);
            }
            // Exactly one info series per check: the old cause's goes in the same update.
            if old_cause != cause {
                families
                    .failure_info
                    .remove(&cause_labels(&labels, old_cause));
            }
            families
                .failure_info
                .get_or_create(&cause_labels(&labels, cause))
                .set(1.0);
            seen.insert(labels, (cause, failures));
        }
        // Checks that left the run (an alias gone from the config, a run that could not
        // start): their series go, so nothing stays from an earlier selection.
        for (labels, (cause, _)) in &history.checks {
            if !seen.contains_key(labels) {
                families.forget(labels, Some(cause));
            }
        }
        history.checks = seen;
        families
            .runs
            .get_or_create(&ResultLabels {
                result: RunResult::of(report).as_str().into(),
            })
            .inc();
    }

    pub fn render(&self, format: Exposition) -> String {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.render(format)
    }
}

/// The metrics of the one run `report`, which ended at `ended`, as `verify --pushgateway`
/// pushes them (Prometheus text format 0.0.4): every per-run family but serve's own, with
/// `smokecheck_last_success_timestamp_seconds` only when the run succeeded.
pub fn batch(report: &RunReport, ended: SystemTime) -> String {
    let families = Families::new(false);
    for (labels, r) in families.record_run(report, unix_seconds(ended)) {
        families
            .failure_info
            .get_or_create(&cause_labels(&labels, cause_of(r)))
            .set(1.0);
    }
    families.render(Exposition::Prometheus)
}

#[cfg(test)]
mod tests;
