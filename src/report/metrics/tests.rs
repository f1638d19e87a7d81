use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::outcome::{Cause, Metrics};

fn check(name: &str, layer: Layer, status: Status, cause: Option<Cause>) -> CheckResult {
    let mut metrics = Metrics::default();
    if layer == Layer::E2e {
        metrics.millis("latency_ms", Duration::from_millis(412));
        if name.ends_with("::stream") {
            metrics.millis("ttft_ms", Duration::from_millis(118));
        }
    }
    CheckResult {
        name: name.into(),
        layer,
        status,
        duration: Duration::from_millis(1234),
        attempts: 1,
        cause,
        // Server text a report may carry: never a label or a metric.
        summary: "vLLM said: key sk-hunter2-from-server".into(),
        details: Some("Authorization: Bearer sk-hunter2-from-server".into()),
        hint: Some("rotate the key".into()),
        skip_reason: (status == Status::Skipped).then(|| "prerequisite failed".into()),
        metrics,
        failed_attempts: Vec::new(),
        started: Duration::ZERO,
        warnings: Vec::new(),
    }
}

fn run(checks: Vec<CheckResult>) -> RunReport {
    RunReport {
        context: Some("bed".into()),
        namespace: "litellm".into(),
        duration: Duration::from_millis(2411),
        checks,
        error: None,
        started_at: UNIX_EPOCH,
    }
}

fn healthy() -> RunReport {
    run(vec![
        check("vllm::models", Layer::Vllm, Status::Passed, None),
        check("e2e::chat::gpt", Layer::E2e, Status::Passed, None),
        check("e2e::chat::gpt::stream", Layer::E2e, Status::Passed, None),
    ])
}

fn key_rotated() -> RunReport {
    run(vec![
        check(
            "vllm::models",
            Layer::Vllm,
            Status::Failed,
            Some(Cause::UpstreamAuth),
        ),
        check(
            "e2e::chat::gpt",
            Layer::E2e,
            Status::Failed,
            Some(Cause::UpstreamAuth),
        ),
        check("e2e::chat::gpt::stream", Layer::E2e, Status::Skipped, None),
    ])
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(secs * 1000 + 537)
}

fn exporter() -> Exporter {
    Exporter::new(Duration::from_secs(300), at(1_764_800_000))
}

/// The series lines of `text` whose metric name is `name` exactly.
fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .collect()
}

/// Whether `text` has the series `line` (`name{labels} value`), the value compared as a number
/// (the crate writes a float gauge's 1 as `1.0`).
fn has(text: &str, line: &str) -> bool {
    let Some((key, want)) = line.rsplit_once(' ') else {
        return false;
    };
    let want: f64 = want.parse().expect("a number");
    text.lines().any(|l| {
        l.rsplit_once(' ')
            .is_some_and(|(k, v)| k == key && v.parse::<f64>().ok() == Some(want))
    })
}

#[test]
fn a_passing_run_exports_every_check_and_run_family_of_the_contract() {
    let e = exporter();
    e.record(&healthy(), at(1_764_806_400));
    let text = e.render(Exposition::Prometheus);
    for line in [
        "smokecheck_check_success{check=\"vllm::models\",layer=\"vllm\"} 1",
        "smokecheck_check_duration_seconds{check=\"e2e::chat::gpt\",layer=\"e2e\"} 1.234",
        "smokecheck_check_consecutive_failures{check=\"vllm::models\",layer=\"vllm\"} 0",
        "smokecheck_check_last_success_timestamp_seconds{check=\"vllm::models\",layer=\"vllm\"} 1764806400.537",
        "smokecheck_check_failure_info{check=\"vllm::models\",layer=\"vllm\",cause=\"none\"} 1",
        "smokecheck_run_success 1",
        "smokecheck_run_duration_seconds 2.411",
        "smokecheck_last_run_timestamp_seconds 1764806400.537",
        "smokecheck_last_success_timestamp_seconds 1764806400.537",
        "smokecheck_runs_total{result=\"passed\"} 1",
        "smokecheck_runs_total{result=\"failed\"} 0",
        "smokecheck_runs_total{result=\"error\"} 0",
        "smokecheck_interval_seconds 300",
        "smokecheck_start_time_seconds 1764800000.537",
        "smokecheck_e2e_latency_seconds{check=\"e2e::chat::gpt\"} 0.412",
        "smokecheck_e2e_ttft_seconds{check=\"e2e::chat::gpt::stream\"} 0.118",
        "# TYPE smokecheck_runs_total counter",
    ] {
        if line.starts_with('#') {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        } else {
            assert!(has(&text, line), "missing {line:?} in\n{text}");
        }
    }
    assert!(
        has(
            &text,
            &format!(
                "smokecheck_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )
        ),
        "{text}"
    );
    // No ttft for a check that measured none.
    assert_eq!(
        series(&text, "smokecheck_e2e_ttft_seconds").len(),
        1,
        "{text}"
    );
}

#[test]
fn server_text_is_never_a_label_or_a_value() {
    let e = exporter();
    e.record(&healthy(), at(1));
    e.record(&key_rotated(), at(2));
    for format in [Exposition::Prometheus, Exposition::OpenMetrics] {
        let text = e.render(format);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("rotate the key"), "{text}");
    }
    let pushed = batch(&key_rotated(), at(2));
    assert!(!pushed.contains("hunter2"), "{pushed}");
}

#[test]
fn failures_count_in_runs_and_a_cause_change_replaces_its_series() {
    let e = exporter();
    e.record(&healthy(), at(1));
    e.record(&key_rotated(), at(2));
    e.record(&key_rotated(), at(3));
    let text = e.render(Exposition::Prometheus);
    let info = series(&text, "smokecheck_check_failure_info");
    // Exactly one info series per check: `none` went when the failure came.
    assert_eq!(info.len(), 3, "{text}");
    assert!(
        has(
            &text,
            "smokecheck_check_failure_info{check=\"vllm::models\",layer=\"vllm\",cause=\"upstream_auth\"} 1"
        ),
        "{text}"
    );
    assert!(
        info.iter()
            .any(|l| l.contains("gpt::stream") && l.contains("cause=\"skipped\""))
    );
    let consecutive = series(&text, "smokecheck_check_consecutive_failures");
    assert!(
        has(
            &text,
            "smokecheck_check_consecutive_failures{check=\"vllm::models\",layer=\"vllm\"} 2"
        ),
        "{text}"
    );
    // Skipped: consecutive reset to 0, success absent (a gap), no e2e gauges.
    assert!(
        consecutive
            .iter()
            .any(|l| l.contains("gpt::stream") && (l.ends_with(" 0") || l.ends_with(" 0.0")))
    );
    let success = series(&text, "smokecheck_check_success");
    assert_eq!(success.len(), 2, "{text}");
    assert!(!success.iter().any(|l| l.contains("gpt::stream")));
    assert!(
        series(&text, "smokecheck_e2e_latency_seconds").is_empty(),
        "{text}"
    );
    assert!(
        series(&text, "smokecheck_e2e_ttft_seconds").is_empty(),
        "{text}"
    );
    assert!(has(&text, "smokecheck_run_success 0"));
    assert!(has(&text, "smokecheck_runs_total{result=\"failed\"} 2"));
    // The last success stays the first run's.
    assert!(
        has(&text, "smokecheck_last_success_timestamp_seconds 1.537"),
        "{text}"
    );
    assert!(
        has(&text, "smokecheck_last_run_timestamp_seconds 3.537"),
        "{text}"
    );

    // Healed: back to one `none` series each, counts reset.
    e.record(&healthy(), at(4));
    let text = e.render(Exposition::Prometheus);
    let info = series(&text, "smokecheck_check_failure_info");
    assert_eq!(info.len(), 3, "{text}");
    assert!(info.iter().all(|l| l.contains("cause=\"none\"")), "{text}");
    assert!(
        series(&text, "smokecheck_check_consecutive_failures")
            .iter()
            .all(|l| l.ends_with(" 0") || l.ends_with(" 0.0"))
    );
}

#[test]
fn nothing_stays_of_checks_that_left_the_run() {
    let e = exporter();
    e.record(&healthy(), at(1));
    let before = e.render(Exposition::Prometheus).lines().count();
    let setup = RunReport::setup_failure(
        None,
        "litellm".into(),
        Cause::ApiUnreachable,
        "cannot reach the API server".into(),
    );
    e.record(&setup, at(2));
    let text = e.render(Exposition::Prometheus);
    assert!(!text.contains("vllm::models"), "{text}");
    assert!(
        has(
            &text,
            "smokecheck_check_failure_info{check=\"smokecheck::setup\",layer=\"setup\",cause=\"api_unreachable\"} 1"
        ),
        "{text}"
    );
    assert!(has(&text, "smokecheck_runs_total{result=\"error\"} 1"));
    e.record(&healthy(), at(3));
    let text = e.render(Exposition::Prometheus);
    assert!(!text.contains("smokecheck::setup"), "{text}");
    assert_eq!(text.lines().count(), before, "{text}");
}

#[test]
fn the_batch_exposition_has_no_serve_only_family_and_a_success_time_only_on_success() {
    let passed = batch(&healthy(), at(5));
    assert!(
        has(&passed, "smokecheck_last_success_timestamp_seconds 5.537"),
        "{passed}"
    );
    let failed = batch(&key_rotated(), at(6));
    assert!(
        series(&failed, "smokecheck_last_success_timestamp_seconds").is_empty(),
        "{failed}"
    );
    for text in [&passed, &failed] {
        for serve_only in [
            "smokecheck_check_consecutive_failures",
            "smokecheck_check_last_success_timestamp_seconds",
            "smokecheck_runs_total",
            "smokecheck_interval_seconds",
            "smokecheck_start_time_seconds",
        ] {
            assert!(!text.contains(serve_only), "{serve_only} in\n{text}");
        }
        // Every family complete: one info series per check.
        assert_eq!(
            series(text, "smokecheck_check_failure_info").len(),
            3,
            "{text}"
        );
    }
}

#[test]
fn openmetrics_is_served_when_asked_for_and_ends_with_eof() {
    let e = exporter();
    e.record(&healthy(), at(1));
    assert_eq!(Exposition::negotiate(None), Exposition::Prometheus);
    assert_eq!(
        Exposition::negotiate(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )),
        Exposition::OpenMetrics
    );
    let text = e.render(Exposition::OpenMetrics);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE smokecheck_runs counter"), "{text}");
    assert!(!e.render(Exposition::Prometheus).contains("# EOF"));
}

#[test]
fn a_warned_check_exports_its_warning_count_and_never_the_words() {
    let e = exporter();
    let mut warned = healthy();
    warned.checks[0].warnings = vec![
        crate::outcome::Warning::new(
            "the certificate expires in 9 days (sk-hunter2-from-server)",
            "renew Secret litellm/litellm-tls",
        ),
        crate::outcome::Warning::new("pod litellm-7c9d restarted 5 times", "kubectl logs"),
    ];
    e.record(&warned, at(1));
    let text = e.render(Exposition::Prometheus);
    assert!(
        has(
            &text,
            "smokecheck_check_warnings{check=\"vllm::models\",layer=\"vllm\"} 2"
        ),
        "{text}"
    );
    assert_eq!(
        series(&text, "smokecheck_check_warnings").len(),
        1,
        "{text}"
    );
    for word in ["certificate", "hunter2", "restarted", "renew"] {
        assert!(!text.contains(word), "{word} in\n{text}");
    }
    // The next run carries none: the series goes, it does not stay at a stale count.
    e.record(&healthy(), at(2));
    let text = e.render(Exposition::Prometheus);
    assert!(
        series(&text, "smokecheck_check_warnings").is_empty(),
        "{text}"
    );
    assert!(!text.contains("smokecheck_check_warnings{"), "{text}");
}
