//! The one report of a fleet run: on the terminal a live line per cluster (when its checks
//! start, when it ends), then a matrix cluster × layer (passed/failed/skipped) and each failing
//! cluster's failures with cause and hint as a single run shows them; JSON
//! (`{"schema_version": 1, "kind": "fleet", "clusters": [{name, context, report}], "summary"}`,
//! each `report` exactly a single run's document); JUnit, one testsuite per cluster and layer.
//! A fleet run writes no termination message: a hook checks its own cluster.

use owo_colors::{OwoColorize, Style};
use serde::Serialize;

use super::terminal::{self, Styles, Terminal};
use super::{WriteError, files, human_duration, json, junit, visible};
use crate::events::{Event, FleetEvents};
use crate::fleet::{ClusterCounts, ClusterReport, FleetReport, Verdict};
use crate::outcome::{Counts, Layer, RunReport, Status};
use crate::plan::{Format, Output};

/// Every report of a fleet run, from its events and its outcome.
pub struct FleetReporter {
    output: Output,
    terminal: Terminal,
}

impl FleetReporter {
    pub fn new(output: Output) -> FleetReporter {
        let styles = if output.color {
            Styles::colored()
        } else {
            Styles::default()
        };
        // Lines only: one progress bar per cluster would fight over the terminal.
        FleetReporter {
            output,
            terminal: Terminal::new(styles, false),
        }
    }

    /// Clears what an earlier run left where the reports go (see
    /// [`super::Reporter::start`]).
    pub fn start(&self) -> Vec<WriteError> {
        files::clear(&self.output)
    }

    /// Writes the reports of `fleet`: the JUnit file, and on stdout the JSON document or the
    /// matrix, the failures and the closing line.
    pub fn finish(&mut self, fleet: &FleetReport) -> Vec<WriteError> {
        let mut problems = Vec::new();
        if let Some(path) = &self.output.junit
            && let Err(source) = files::write_report(path, &junit::render_fleet(fleet))
        {
            problems.push(WriteError::Junit {
                path: path.clone(),
                source,
            });
        }
        match self.output.format {
            Format::Json => terminal::print_stdout(&render_json(fleet)),
            Format::Pretty | Format::Plain => {
                let s = self.terminal.styles();
                let text = format!(
                    "{}{}{}",
                    render_matrix(fleet, s),
                    render_failures(fleet, s),
                    render_summary(fleet, s)
                );
                self.terminal.print(&text);
            }
        }
        problems
    }
}

impl FleetEvents for FleetReporter {
    fn event(&mut self, cluster: &str, event: &Event) {
        if self.output.format == Format::Json {
            return;
        }
        let s = *self.terminal.styles();
        match event {
            Event::RunStarted(start) => self.terminal.print(&format!(
                "{} {} · context {} · namespace {} · {} checks\n",
                paint("·    ", s.dim),
                one_line(cluster),
                one_line(&start.context),
                one_line(&start.namespace),
                start.checks
            )),
            Event::CheckFinished(_) => {}
            Event::RunFinished(report) => {
                self.terminal
                    .print(&render_line(cluster, report, Verdict::of(report), &s))
            }
        }
    }
}

/// A cluster's live line when it ends.
pub fn render_line(cluster: &str, report: &RunReport, verdict: Verdict, s: &Styles) -> String {
    let c = report.counts();
    let (label, style) = match verdict {
        Verdict::Passed => ("PASS ", s.pass),
        Verdict::Failed => ("FAIL ", s.fail),
        Verdict::NotChecked | Verdict::Panicked => ("ERROR", s.fail),
    };
    let what = match verdict {
        Verdict::NotChecked | Verdict::Panicked => {
            let cause = report
                .checks
                .first()
                .and_then(|r| r.cause)
                .map(|c| format!(" [{c}]"))
                .unwrap_or_default();
            format!("could not be checked{cause}")
        }
        Verdict::Passed | Verdict::Failed => format!(
            "{} passed, {} failed, {} skipped in {}",
            c.passed,
            c.failed,
            c.skipped,
            human_duration(report.duration)
        ),
    };
    let context = report
        .context
        .as_deref()
        .map(|c| format!(" · context {}", one_line(c)))
        .unwrap_or_default();
    format!(
        "{} {}{context} · {what}\n",
        paint(label, style),
        paint(&one_line(cluster), s.name)
    )
}

/// The layers any cluster reported, in the chain's order (`setup` last, where a cluster could
/// not be checked).
fn layers(fleet: &FleetReport) -> Vec<Layer> {
    use strum::VariantArray;
    Layer::VARIANTS
        .iter()
        .copied()
        .filter(|l| {
            fleet
                .clusters
                .iter()
                .any(|c| c.report.checks.iter().any(|r| r.layer == *l))
        })
        .collect()
}

/// `passed/failed/skipped` of one cluster's checks in `layer`; `-` where it has none.
fn cell(report: &RunReport, layer: Layer) -> (String, bool) {
    let mut c = Counts::default();
    for r in report.checks.iter().filter(|r| r.layer == layer) {
        match r.status {
            Status::Passed => c.passed += 1,
            Status::Failed => c.failed += 1,
            Status::Skipped => c.skipped += 1,
        }
    }
    if c == Counts::default() {
        ("-".into(), false)
    } else {
        (
            format!("{}/{}/{}", c.passed, c.failed, c.skipped),
            c.failed > 0,
        )
    }
}

/// The matrix: a row per cluster, a column per layer, each cell passed/failed/skipped.
pub fn render_matrix(fleet: &FleetReport, s: &Styles) -> String {
    let layers = layers(fleet);
    let mut header: Vec<String> = vec!["cluster".into()];
    header.extend(layers.iter().map(|l| l.as_str().to_string()));
    let rows: Vec<Vec<(String, bool)>> = fleet
        .clusters
        .iter()
        .map(|c| {
            let mut row = vec![(one_line(&c.name), false)];
            row.extend(layers.iter().map(|l| cell(&c.report, *l)));
            row
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].0.chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| cells.join("  ").trim_end().to_string() + "\n";
    let mut out = format!(
        "\n{}\n",
        paint("passed/failed/skipped per cluster and layer", s.dim)
    );
    out.push_str(&line(
        header
            .iter()
            .zip(&widths)
            .map(|(h, w)| paint(&format!("{h:<w$}"), s.name))
            .collect(),
    ));
    for row in rows {
        out.push_str(&line(
            row.into_iter()
                .zip(&widths)
                .map(|((text, failed), w)| {
                    let padded = format!("{text:<w$}");
                    if failed {
                        paint(&padded, s.fail)
                    } else {
                        padded
                    }
                })
                .collect(),
        ));
    }
    out
}

/// Each failing cluster's failures, as a single run shows them.
pub fn render_failures(fleet: &FleetReport, s: &Styles) -> String {
    let mut out = String::new();
    for cluster in fleet
        .clusters
        .iter()
        .filter(|c| c.verdict != Verdict::Passed)
    {
        let context = cluster
            .context
            .as_deref()
            .map(|c| format!(" · context {}", one_line(c)))
            .unwrap_or_default();
        out.push_str(&format!(
            "\n{}{context} · namespace {}\n",
            paint(&one_line(&cluster.name), s.name),
            one_line(&cluster.report.namespace)
        ));
        for r in cluster
            .report
            .checks
            .iter()
            .filter(|r| r.status == Status::Failed)
        {
            out.push_str(&terminal::render_result(r, s));
        }
    }
    out
}

/// The closing line.
pub fn render_summary(fleet: &FleetReport, s: &Styles) -> String {
    let c = fleet.counts();
    let verdict = if c.failed + c.not_checked > 0 {
        paint("FAILED", s.fail)
    } else {
        paint("PASSED", s.pass)
    };
    format!(
        "\n{verdict} {} of {} clusters passed, {} failed, {} not checked in {}\n",
        c.passed,
        fleet.clusters.len(),
        c.failed,
        c.not_checked,
        human_duration(fleet.duration)
    )
}

#[derive(Serialize)]
struct Document<'a> {
    schema_version: u32,
    kind: &'static str,
    version: &'static str,
    clusters: Vec<Entry<'a>>,
    summary: Summary,
}

#[derive(Serialize)]
struct Entry<'a> {
    name: &'a str,
    context: Option<&'a str>,
    /// Exactly the single-run document.
    report: json::Document<'a>,
}

#[derive(Serialize)]
struct Summary {
    clusters: ClusterCounts,
    checks: Counts,
    duration_ms: u128,
}

/// The fleet's JSON document.
pub fn render_json(fleet: &FleetReport) -> String {
    let mut checks = Counts::default();
    for c in &fleet.clusters {
        let n = c.report.counts();
        checks.passed += n.passed;
        checks.failed += n.failed;
        checks.skipped += n.skipped;
    }
    let doc = Document {
        schema_version: json::SCHEMA_VERSION,
        kind: "fleet",
        version: env!("CARGO_PKG_VERSION"),
        clusters: fleet.clusters.iter().map(entry).collect(),
        summary: Summary {
            clusters: fleet.counts(),
            checks,
            duration_ms: fleet.duration.as_millis(),
        },
    };
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}

fn entry(c: &ClusterReport) -> Entry<'_> {
    Entry {
        name: &c.name,
        context: c.context.as_deref(),
        report: json::document(&c.report),
    }
}

fn paint(text: &str, style: Style) -> String {
    text.style(style).to_string()
}

/// A name on one line, made visible.
fn one_line(text: &str) -> String {
    visible(text).replace('\n', "\u{2424}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fleet::Verdict;
    use crate::outcome::{Cause, CheckResult};

    fn check(name: &str, layer: Layer, status: Status) -> CheckResult {
        let mut r = CheckResult::skipped(name, layer, "needs the pods".into());
        r.status = status;
        if status != Status::Skipped {
            r.skip_reason = None;
            r.attempts = 1;
            r.duration = Duration::from_millis(12);
        }
        if status == Status::Failed {
            r.cause = Some(Cause::CrashLoop);
            r.summary = "1/2 pods ready: litellm-7c9d crash-looping".into();
            r.hint = Some("kubectl logs --previous".into());
        }
        r
    }

    fn fleet() -> FleetReport {
        let run = |checks: Vec<CheckResult>| RunReport {
            context: Some("ctx".into()),
            namespace: "litellm".into(),
            duration: Duration::from_millis(1500),
            checks,
            error: None,
            started_at: std::time::UNIX_EPOCH,
        };
        let healthy = run(vec![
            check("platform::namespace", Layer::Platform, Status::Passed),
            check(
                "kubernetes::pods::litellm",
                Layer::Kubernetes,
                Status::Passed,
            ),
            check("e2e::chat::small", Layer::E2e, Status::Passed),
        ]);
        let broken = run(vec![
            check("platform::namespace", Layer::Platform, Status::Passed),
            check(
                "kubernetes::pods::litellm",
                Layer::Kubernetes,
                Status::Failed,
            ),
            check("e2e::chat::small", Layer::E2e, Status::Skipped),
        ]);
        let gone = RunReport::setup_failure(
            Some("gone-ctx".into()),
            "litellm".into(),
            Cause::ApiUnreachable,
            "the API server at https://10.0.0.1 did not answer".into(),
        );
        let cluster = |name: &str, report: RunReport| ClusterReport {
            name: name.into(),
            context: report.context.clone(),
            verdict: Verdict::of(&report),
            report,
        };
        FleetReport {
            clusters: vec![
                cluster("north", healthy),
                cluster("south-long-name", broken),
                cluster("gone", gone),
            ],
            duration: Duration::from_millis(2500),
        }
    }

    #[test]
    fn the_terminal_shows_a_matrix_then_each_failing_clusters_failures() {
        let f = fleet();
        let s = Styles::default();
        let text = format!(
            "{}{}{}",
            render_matrix(&f, &s),
            render_failures(&f, &s),
            render_summary(&f, &s)
        );
        insta::assert_snapshot!(text);
    }

    #[test]
    fn each_cluster_has_a_live_line() {
        let f = fleet();
        let s = Styles::default();
        let lines: String = f
            .clusters
            .iter()
            .map(|c| render_line(&c.name, &c.report, c.verdict, &s))
            .collect();
        insta::assert_snapshot!(lines);
    }

    #[test]
    fn the_json_embeds_each_single_run_document_unchanged() {
        let f = fleet();
        let doc: serde_json::Value = serde_json::from_str(&render_json(&f)).expect("json");
        assert_eq!(doc["kind"], "fleet");
        assert_eq!(doc["schema_version"], 1);
        for (i, c) in f.clusters.iter().enumerate() {
            let single: serde_json::Value =
                serde_json::from_str(&json::render(&c.report)).expect("json");
            assert_eq!(doc["clusters"][i]["report"], single);
            assert_eq!(doc["clusters"][i]["name"], c.name.as_str());
        }
        assert_eq!(
            doc["summary"],
            serde_json::json!({
                "clusters": {"passed": 1, "failed": 1, "not_checked": 1},
                "checks": {"passed": 4, "failed": 2, "skipped": 1, "warned": 0},
                "duration_ms": 2500
            })
        );
    }

    #[test]
    fn junit_names_suites_and_tests_after_their_cluster() {
        let xml = junit::render_fleet(&fleet());
        for needle in [
            "<testsuite name=\"north/platform\"",
            "<testsuite name=\"south-long-name/kubernetes\"",
            "<testsuite name=\"gone/setup\"",
            "name=\"south-long-name/kubernetes::pods::litellm\"",
            "classname=\"south-long-name/smokecheck.kubernetes\"",
            "name=\"gone/smokecheck::setup\"",
        ] {
            assert!(xml.contains(needle), "{needle} in\n{xml}");
        }
    }
}
