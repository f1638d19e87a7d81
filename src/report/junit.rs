//! `--junit PATH`: JUnit XML that GitLab and Jenkins read (quick-junit, as nextest writes it):
//! one testsuite per layer, one testcase per check; a failure carries the summary as its
//! message, the cause code as its type, and details plus hint as its text; metrics are
//! testcase properties; a check that passed after retries is flaky with its failed runs; a
//! passed check's warnings follow its summary in `system-out`, counted in a `warnings` property.
//! Each testcase has the time it started (`timestamp`), the run's timeline.
//!
//! Server text goes through [`visible`] first: quick-junit silently drops ANSI sequences and
//! most C0 controls but keeps others XML 1.0 forbids (U+FFFF), and CI pages show bidi
//! overrides as they act. Visible, the report stays valid XML and says what the server sent.

use quick_junit::{
    NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite,
};

use std::time::SystemTime;

use chrono::{DateTime, Utc};

use super::visible;
use crate::fleet::FleetReport;
use crate::outcome::{CheckResult, RunReport, SETUP_CHECK, Status};

pub fn render(report: &RunReport) -> String {
    let mut out = Report::new("smokecheck");
    out.set_time(report.duration);
    add_suites(&mut out, report, None);
    // quick-junit writes to a Vec<u8>; that cannot fail for well-formed strings.
    out.to_string().unwrap_or_default()
}

/// A fleet run: one testsuite per cluster and layer (`<cluster>/<layer>`), each test named
/// `<cluster>/<check>`, so GitLab and Jenkins show the clusters apart.
pub fn render_fleet(fleet: &FleetReport) -> String {
    let mut out = Report::new("smokecheck");
    out.set_time(fleet.duration);
    for cluster in &fleet.clusters {
        add_suites(&mut out, &cluster.report, Some(&cluster.name));
    }
    out.to_string().unwrap_or_default()
}

/// One testsuite per layer of `report`, in the order the layers first appear; names prefixed
/// with `cluster/` in a fleet run.
fn add_suites(out: &mut Report, report: &RunReport, cluster: Option<&str>) {
    let prefixed = |name: &str| match cluster {
        Some(cluster) => format!("{cluster}/{name}"),
        None => name.to_string(),
    };
    let mut layers: Vec<_> = report.checks.iter().map(|c| c.layer).collect();
    layers.dedup();
    let mut seen = Vec::new();
    for layer in layers {
        if seen.contains(&layer) {
            continue;
        }
        seen.push(layer);
        let mut suite = TestSuite::new(visible(&prefixed(layer.as_str())));
        for check in report.checks.iter().filter(|c| c.layer == layer) {
            let mut case = case(check, report.started_at);
            if cluster.is_some() {
                case.name = visible(&prefixed(&check.name)).into();
                case.set_classname(visible(&prefixed(&format!(
                    "smokecheck.{}",
                    layer.as_str()
                ))));
            }
            suite.add_test_case(case);
        }
        out.add_test_suite(suite);
    }
}

fn case(check: &CheckResult, run_started: SystemTime) -> TestCase {
    let status = match check.status {
        Status::Passed => {
            let mut s = TestCaseStatus::success();
            for earlier in &check.failed_attempts {
                let mut rerun = TestRerun::new(NonSuccessKind::Failure);
                rerun.set_message(visible(earlier));
                s.add_rerun(rerun);
            }
            s
        }
        Status::Failed => {
            let kind = if check.name == SETUP_CHECK {
                NonSuccessKind::Error
            } else {
                NonSuccessKind::Failure
            };
            let mut s = TestCaseStatus::non_success(kind);
            s.set_message(visible(&check.summary));
            if let Some(cause) = check.cause {
                s.set_type(cause.code());
            }
            let mut text = check.details.clone().unwrap_or_default();
            if let Some(hint) = &check.hint {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str("hint: ");
                text.push_str(hint);
            }
            if !text.is_empty() {
                s.set_description(visible(&text));
            }
            s
        }
        Status::Skipped => {
            let mut s = TestCaseStatus::skipped();
            if let Some(reason) = &check.skip_reason {
                s.set_message(visible(reason));
            }
            s
        }
    };
    let mut case = TestCase::new(visible(&check.name), status);
    case.set_classname(format!("smokecheck.{}", check.layer.as_str()));
    case.set_time(check.duration);
    case.set_timestamp(DateTime::<Utc>::from(run_started + check.started));
    if check.attempts > 1 {
        case.add_property(Property::new("attempts", check.attempts.to_string()));
    }
    for (name, value) in check.metrics.iter() {
        case.add_property(Property::new(name, value.to_string()));
    }
    if !check.warnings.is_empty() {
        case.add_property(Property::new("warnings", check.warnings.len().to_string()));
    }
    if check.status == Status::Passed {
        // The summary, then each warning with its hint, as the terminal shows them.
        let mut out = check.summary.clone();
        for w in &check.warnings {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("WARN {}\nhint: {}", w.reason, w.hint));
        }
        if !out.is_empty() {
            case.set_system_out(visible(&out));
        }
    }
    case
}
