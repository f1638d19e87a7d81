//! Snapshots of what people and CI read: the terminal, JUnit and JSON output of a healthy and a
//! failing run (one check at a time, so the order is stable; durations redacted).

use crate::harness::{CLUSTER_LAYERS, Run, run_in};
use crate::support::fake_kube::FakeKube;

fn run(scenario: &str, format: &str) -> Run {
    let fake = FakeKube::start(scenario);
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    run_in(
        dir,
        &kubeconfig,
        &[
            "--format",
            format,
            "--test-threads",
            "1",
            "--color",
            "never",
        ],
        // The Kubernetes layer's output; the other layers reach servers these fakes lack.
        &CLUSTER_LAYERS,
    )
}

/// The filters every snapshot of a run needs: durations, start offsets, versions.
pub(crate) fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"\((\d+ms|\d+\.\d+s)", "([duration]");
    s.add_filter(r"in (\d+ms|\d+\.\d+s)", "in [duration]");
    s.add_filter(r#""duration_ms": \d+"#, r#""duration_ms": "[duration]""#);
    s.add_filter(r#""started_ms": \d+"#, r#""started_ms": "[started]""#);
    s.add_filter(r#"time="[0-9.]+""#, r#"time="[duration]""#);
    s.add_filter(r#"timestamp="[^"]+""#, r#"timestamp="[timestamp]""#);
    s.add_filter(r"smokecheck \d+\.\d+\.\d+", "smokecheck [version]");
    s.add_filter(r#""version": "\d+\.\d+\.\d+""#, r#""version": "[version]""#);
    s
}

#[test]
fn healthy_terminal_output() {
    let r = run("healthy", "plain");
    assert_eq!(r.code, 0, "{}", r.stderr);
    settings().bind(|| insta::assert_snapshot!(r.stdout));
}

#[test]
fn crash_loop_terminal_output() {
    let r = run("crash-loop", "plain");
    assert_eq!(r.code, 1, "{}", r.stderr);
    settings().bind(|| insta::assert_snapshot!(r.stdout));
}

#[test]
fn healthy_json_and_junit() {
    let r = run("healthy", "json");
    settings().bind(|| {
        insta::assert_snapshot!("healthy_json", r.stdout);
        insta::assert_snapshot!("healthy_junit", r.junit.clone().unwrap_or_default());
    });
}

#[test]
fn crash_loop_json_and_junit() {
    let r = run("crash-loop", "json");
    settings().bind(|| {
        insta::assert_snapshot!("crash_loop_json", r.stdout);
        insta::assert_snapshot!("crash_loop_junit", r.junit.clone().unwrap_or_default());
    });
}
