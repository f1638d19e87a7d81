//! `--format json`: one JSON document on stdout, for scripts (`jq`). The shape is a contract:
//! `schema_version` changes when a field changes meaning or goes away; fields are only added.

use serde::Serialize;

use crate::outcome::{Cause, CheckResult, Counts, Layer, Metrics, RunReport, Status, Warning};

pub const SCHEMA_VERSION: u32 = 1;

/// The single-run document; a fleet document embeds one per cluster, unchanged.
#[derive(Serialize)]
pub(super) struct Document<'a> {
    schema_version: u32,
    version: &'static str,
    context: Option<&'a str>,
    namespace: &'a str,
    summary: Summary,
    checks: Vec<Entry<'a>>,
    /// Why nothing could be checked, when the run ended with exit code 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct Summary {
    #[serde(flatten)]
    counts: Counts,
    duration_ms: u128,
}

#[derive(Serialize)]
struct Entry<'a> {
    name: &'a str,
    layer: Layer,
    status: Status,
    /// From the run's start: with `duration_ms`, the run's timeline (ci/critical-path.jq).
    started_ms: u128,
    duration_ms: u128,
    attempts: u32,
    cause: Option<Cause>,
    summary: &'a str,
    details: Option<&'a str>,
    hint: Option<&'a str>,
    skip_reason: Option<&'a str>,
    metrics: &'a Metrics,
    /// What a passed check found that will become a failure; absent when none.
    #[serde(skip_serializing_if = "<[Warning]>::is_empty")]
    warnings: &'a [Warning],
}

impl<'a> From<&'a CheckResult> for Entry<'a> {
    fn from(r: &'a CheckResult) -> Entry<'a> {
        Entry {
            name: &r.name,
            layer: r.layer,
            status: r.status,
            started_ms: r.started.as_millis(),
            duration_ms: r.duration.as_millis(),
            attempts: r.attempts,
            cause: r.cause,
            summary: &r.summary,
            details: r.details.as_deref(),
            hint: r.hint.as_deref(),
            skip_reason: r.skip_reason.as_deref(),
            metrics: &r.metrics,
            warnings: &r.warnings,
        }
    }
}

pub fn render(report: &RunReport) -> String {
    // Serializing plain structs of strings and numbers cannot fail.
    let mut out = serde_json::to_string_pretty(&document(report)).unwrap_or_default();
    out.push('\n');
    out
}

/// The document of `report`.
pub(super) fn document(report: &RunReport) -> Document<'_> {
    Document {
        schema_version: SCHEMA_VERSION,
        version: env!("CARGO_PKG_VERSION"),
        context: report.context.as_deref(),
        namespace: &report.namespace,
        summary: Summary {
            counts: report.counts(),
            duration_ms: report.duration.as_millis(),
        },
        checks: report.checks.iter().map(Entry::from).collect(),
        error: report.error.as_deref(),
    }
}
