//! The command-line contract of a run, against the fake API server: which checks run
//! (filters, `--list`, `--context`), the exit codes when nothing could be checked, the clock
//! (`--timeout`, `--deadline`, SIGTERM, `--wait`), hook mode's termination message, and colour.
//! What the checks say about each cluster is verify_kube.rs; usage errors are cli_contract.rs.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    assert_no_secret_leaks, command, eventually, failed, run_in, run_reporting_in, secret_values,
    text, unreachable_kubeconfig, verify_json,
};
use crate::support::fake_kube::FakeKube;

#[test]
fn list_needs_no_cluster() {
    let out = command()
        .args([
            "verify",
            "--list",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l == "kubernetes::pods::litellm"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l == "kubernetes::secrets::vllm-api-key"),
        "{stdout}"
    );
}

#[test]
fn filters_select_checks_like_cargo_test() {
    let fake = FakeKube::start("healthy");
    let run = verify_json(&fake, &["pods", "--skip", "database"]);
    let names: Vec<String> = run.statuses().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["kubernetes::pods::litellm".to_string()]);
    let exact = verify_json(&fake, &["--exact", "kubernetes::services::litellm"]);
    let names: Vec<String> = exact.statuses().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["kubernetes::services::litellm".to_string()]);
}

#[test]
fn filter_matching_nothing_exits_2_and_says_so_in_the_reports() {
    // Per-alias checks (e2e::chat::<alias>) are named from the proxy config, so "matches
    // nothing" is only final once the cluster was read: this needs a cluster.
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let junit = dir.path().join("j.xml");
    let out = command()
        .args(["verify", "podz", "--format", "json", "--junit"])
        .arg(&junit)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no check matches the filter \"podz\""),
        "{stderr}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["checks"][0]["cause"], "setup");
    assert!(
        std::fs::read_to_string(&junit)
            .expect("junit")
            .contains("no check matches")
    );
}

#[test]
fn context_flag_picks_the_named_context() {
    let fake = FakeKube::start("healthy");
    let run = verify_json(&fake, &["--context", "fake-healthy", "namespace"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["context"], "fake-healthy");
}

#[test]
fn unknown_context_is_a_usage_error() {
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let run = run_in(
        dir,
        &kubeconfig,
        &["--format", "plain"],
        &["--context", "nope"],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("error: ") && run.stderr.contains("nope"),
        "{}",
        run.stderr
    );
}

#[test]
fn unreachable_api_server_exits_2_with_one_line_and_still_writes_reports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (kubeconfig, port) = unreachable_kubeconfig(dir.path());
    let run = run_in(
        dir,
        &kubeconfig,
        &["--format", "json"],
        &["--timeout", "3s"],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    let lines: Vec<_> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].starts_with(&format!(
            "error: cannot reach the API server at https://127.0.0.1:{port}"
        )),
        "{}",
        lines[0]
    );
    let doc = run.json();
    assert_eq!(doc["checks"][0]["name"], "smokecheck::setup");
    assert_eq!(doc["checks"][0]["cause"], "api_unreachable");
    assert!(
        doc["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot reach")
    );
    let junit = run.junit.expect("junit written");
    assert!(
        junit.contains("<error") && junit.contains("cannot reach the API server"),
        "{junit}"
    );
}

#[test]
fn slow_api_fails_the_check_on_time_with_the_last_observed_state() {
    let fake = FakeKube::start("healthy");
    fake.delay_requests("/pods", Duration::from_secs(20));
    let run = verify_json(
        &fake,
        &["--exact", "kubernetes::pods::litellm", "--timeout", "1s"],
    );
    let c = failed(
        &run,
        "kubernetes::pods::litellm",
        "timeout",
        "no answer within 1s",
    );
    assert_eq!(
        text(&c, "details"),
        "last observed: listing pods app.kubernetes.io/name=litellm in litellm"
    );
}

#[test]
fn deadline_stops_the_run_and_still_writes_the_reports() {
    let fake = FakeKube::start("healthy");
    fake.delay_requests("/pods", Duration::from_secs(60));
    let started = Instant::now();
    let run = verify_json(&fake, &["pods", "--deadline", "3s", "--timeout", "50s"]);
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the deadline did not stop the run"
    );
    let c = failed(
        &run,
        "kubernetes::pods::litellm",
        "deadline",
        "the run's deadline (3s) passed while this check was running",
    );
    assert!(
        text(&c, "details").contains("last observed: listing pods"),
        "{c:#}"
    );
    assert!(
        run.junit
            .expect("junit written")
            .contains("type=\"deadline\"")
    );
}

#[test]
fn sigterm_stops_the_run_and_still_writes_the_reports() {
    let fake = FakeKube::start("healthy");
    fake.delay_requests("/pods", Duration::from_secs(60));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let junit = dir.path().join("junit.xml");
    let term = dir.path().join("termination-log");
    let mut child = command()
        .args([
            "verify",
            "pods",
            "--format",
            "json",
            "--argocd-app",
            "argocd/litellm",
            "--termination-log",
        ])
        .arg(&term)
        .arg("--junit")
        .arg(&junit)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn smokecheck");
    // Wait until a pods request is in flight, then terminate as Kubernetes would.
    eventually("smokecheck lists pods", Duration::from_secs(20), || {
        fake.requests().iter().any(|r| r.path.ends_with("/pods"))
    });
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("smokecheck did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout)
        .expect("read");
    let doc: Value = serde_json::from_str(&stdout).expect("json report");
    let pods = doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "kubernetes::pods::litellm")
        .cloned()
        .expect("pods entry");
    assert_eq!(pods["cause"], "interrupted", "{pods:#}");
    assert!(
        std::fs::read_to_string(&junit)
            .expect("junit")
            .contains("interrupted by SIGTERM")
    );
}

#[test]
fn wait_retries_a_failing_check_and_reports_the_attempts() {
    let fake = FakeKube::start("missing-key");
    let run = verify_json(
        &fake,
        &[
            "--exact",
            "kubernetes::secrets::litellm-secrets",
            "--wait",
            "2s",
        ],
    );
    let c = failed(
        &run,
        "kubernetes::secrets::litellm-secrets",
        "missing_key",
        "has no key CA_VLLM_LOCAL_API_KEY",
    );
    assert!(c["attempts"].as_u64().unwrap_or(0) >= 2, "{c:#}");
    let secret_gets = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/secrets/litellm-secrets"))
        .count();
    assert!(
        secret_gets >= 3,
        "one read to prime the redactor, then one per attempt: {secret_gets}"
    );
}

#[test]
fn colour_only_when_asked_or_on_a_terminal() {
    let fake = FakeKube::start("crash-loop");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let coloured = run_in(dir, &kubeconfig, &["--color", "always"], &["pods"]);
    assert!(
        coloured.stdout.contains("\u{1b}[31"),
        "red FAIL expected:\n{}",
        coloured.stdout
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    // Not a terminal: plain, even in the default pretty format.
    let auto = run_in(dir, &kubeconfig, &[], &["pods"]);
    assert!(!auto.stdout.contains('\u{1b}'), "{}", auto.stdout);
    assert!(
        auto.stdout.contains("FAIL  kubernetes::pods::litellm"),
        "{}",
        auto.stdout
    );
}

#[test]
fn hook_mode_writes_the_cause_of_failure_as_the_termination_message() {
    let fake = FakeKube::start("crash-loop");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let run = run_reporting_in(
        dir,
        &kubeconfig,
        &["--color", "auto"],
        &[
            "platform::",
            "kubernetes::",
            "--argocd-app",
            "argocd/litellm",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        !run.stdout.contains('\u{1b}'),
        "hook logs are plain: {}",
        run.stdout
    );
    let message = run
        .termination
        .clone()
        .expect("termination message written");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with("smokecheck: 1 of 17 checks failed: kubernetes::pods::litellm: 1/2 pods ready (need 1); litellm-7c9d8f6b5d-9mzt7: container litellm in CrashLoopBackOff"),
        "{message}"
    );
    assert_no_secret_leaks("crash-loop", &run);
    for value in secret_values("crash-loop") {
        assert!(!message.contains(&value));
    }
}

#[test]
fn hook_mode_says_why_nothing_could_be_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (kubeconfig, _) = unreachable_kubeconfig(dir.path());
    let run = run_reporting_in(
        dir,
        &kubeconfig,
        &["--format", "plain"],
        &["--argocd-app", "argocd/litellm", "--timeout", "2s"],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    let message = run.termination.expect("termination message written");
    assert!(
        message.starts_with("smokecheck: nothing could be checked: cannot reach the API server"),
        "{message}"
    );
}
