//! The API server cannot hang, flood or starve a run (issue 9, defects 1, 8 and 10, and the
//! "Hostile servers" property for the API server).
//!
//! Whatever the API server does, at connect (`/version`) or mid-run (a LIST of pods while every
//! other path answers normally), the run ends in a clean failure with a stable cause within
//! `--timeout` + 1 s, writes its reports (JSON, JUnit, termination message) and stays under
//! 64 MiB. Setup reads (the proxy config, the Secrets, the port-forwards' Service lookups) are
//! bounded by `--timeout` too, pod logs are asked for with `limitBytes` and decoded lossily, and
//! LISTs are read in pages within a total budget.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Run, metric, passed, run_in, text};
use crate::support::fake_kube::{FakeKube, Tls, load_scenario, write_kubeconfig_file};
use crate::support::hostile::{
    Behaviour, Hostile, chunk, chunked_head, garbage, gigabyte_head, http_response,
};

/// The `--timeout` of every run here: short, so a hang shows as a bound exceeded.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The property: a clean end within `--timeout` + 1 s on an idle machine.
const BOUND: Duration = Duration::from_secs(3);
/// What a loaded 2-core machine shared by several builds may add to a run's wall time.
const SLACK: Duration = Duration::from_secs(4);
/// The hook's limit is 128 MiB; a run facing any of these servers stays under half of it.
const MAX_RSS_KIB: u64 = 64 * 1024;
/// The pods LIST the mid-run cases break (kubernetes::pods::litellm makes it).
const PODS: &str = "/api/v1/namespaces/litellm/pods";
const POD_CHECK: &str = "kubernetes::pods::litellm";

// The hostile answers, each a way a broken, huge or malicious API server (or a proxy in front of
// it) answers.

fn silent() -> Behaviour {
    Behaviour::Silent
}

/// A complete, valid answer, one byte a second: always almost there.
fn trickle() -> Behaviour {
    Behaviour::Trickle {
        bytes: http_response(200, "application/json", br#"{"kind":"PodList","items":[]}"#),
        every: Duration::from_secs(1),
    }
}

/// A chunked JSON answer that never ends.
fn endless() -> Behaviour {
    Behaviour::Endless {
        head: chunked_head("application/json"),
        pattern: chunk(&[b' '; 4096]),
    }
}

/// A 1 GiB answer announced by its content-length (whitespace: valid JSON to a lazy parser).
fn gigabyte() -> Behaviour {
    Behaviour::Endless {
        head: gigabyte_head("application/json"),
        pattern: b" ".to_vec(),
    }
}

fn invalid_json() -> Behaviour {
    Behaviour::Close(http_response(
        200,
        "application/json",
        br#"{"kind":"PodList","apiVersion":"v1","items":[{"metadata":"#,
    ))
}

/// An SSO proxy's login page where the API should be.
fn wrong_content_type() -> Behaviour {
    Behaviour::Close(http_response(
        200,
        "text/html; charset=utf-8",
        b"<!doctype html><html><body><form>Sign in to continue</form></body></html>",
    ))
}

/// Bytes that are not HTTP, after a good TLS handshake; the connection stays open.
fn garbage_after_handshake() -> Behaviour {
    Behaviour::Hang(garbage())
}

/// Runs `smokecheck verify ARGS --timeout 2s --format json` with the JUnit file and the
/// termination message in a temporary folder; returns the run and the termination message.
fn verify(kubeconfig: impl FnOnce(&Path) -> PathBuf, args: &[&str]) -> (Run, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = kubeconfig(dir.path());
    let termination = dir.path().join("termination-log");
    let timeout = humantime::format_duration(TIMEOUT).to_string();
    let mut all = vec!["--timeout", &timeout, "--termination-log"];
    let termination_arg = termination.display().to_string();
    all.push(&termination_arg);
    all.extend_from_slice(args);
    let run = run_in(dir, &kubeconfig, &["--format", "json"], &all);
    let message = std::fs::read_to_string(&termination).unwrap_or_default();
    (run, message)
}

/// A run whose API server is `behaviour` from the first byte after the TLS handshake (the
/// kubeconfig trusts the hostile server's CA, so only its behaviour is wrong).
fn at_connect(behaviour: Behaviour) -> (Run, String) {
    let tls = Tls::generate();
    let server = Hostile::start_tls(behaviour, tls.acceptor());
    let url = format!("https://{}", server.addr());
    verify(
        |dir| {
            write_kubeconfig_file(
                &dir.join("kubeconfig"),
                "hostile",
                &url,
                &tls.ca_pem,
                "    token: hostile-token\n",
            )
        },
        &["--exact", POD_CHECK],
    )
}

/// A run against the healthy fake cluster whose pods LIST is `behaviour`: the connect step,
/// discovery and the setup reads are answered normally.
fn mid_run(behaviour: Behaviour) -> (Run, String) {
    let fake = FakeKube::start("healthy");
    fake.misbehave(PODS, behaviour);
    verify(|dir| fake.write_kubeconfig(dir), &["--exact", POD_CHECK])
}

/// The property: exit `code`, `check` failed with `cause`, within the bound, in bounded memory,
/// with every report written. Returns the check's JSON entry.
#[track_caller]
fn ended_cleanly((run, termination): &(Run, String), code: i32, check: &str, cause: &str) -> Value {
    let entry = run.json()["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == check).cloned())
        .unwrap_or_default();
    println!(
        "measured: {check} {}: exit {} in {:.2}s, peak RSS {} KiB: {}",
        entry["cause"],
        run.code,
        run.elapsed.as_secs_f64(),
        run.peak_rss_kib,
        entry["summary"]
    );
    assert_eq!(
        run.code, code,
        "exit code; stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let c = run.check(check);
    assert_eq!(c["status"], "failed", "{c:#}");
    assert_eq!(c["cause"], cause, "{c:#}");
    assert!(
        run.elapsed < BOUND + SLACK,
        "the run took {:?}, over --timeout {TIMEOUT:?} + 1 s (+ {SLACK:?} for a loaded machine)",
        run.elapsed
    );
    assert!(
        run.peak_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB, over {MAX_RSS_KIB} KiB",
        run.peak_rss_kib
    );
    let junit = run.junit.as_deref().expect("the JUnit report is written");
    assert!(
        junit.contains(check) && junit.contains(cause),
        "the JUnit report lacks {check} or {cause}:\n{junit}"
    );
    assert!(
        termination.starts_with("smokecheck: "),
        "the termination message is written: {termination:?}"
    );
    c
}

/// Exit 2 with the one `smokecheck::setup` entry: nothing could be checked.
#[track_caller]
fn setup_failed(run: &(Run, String), cause: &str) -> Value {
    let c = ended_cleanly(run, 2, "smokecheck::setup", cause);
    assert_eq!(
        run.0.json()["checks"].as_array().map(Vec::len),
        Some(1),
        "{}",
        run.0.stdout
    );
    c
}

// At connect: `/version` is the first request, and nothing could be checked.

#[test]
fn connect_to_a_silent_api_server_ends_in_time() {
    let c = setup_failed(&at_connect(silent()), "api_unreachable");
    assert!(text(&c, "summary").contains("no answer"), "{c:#}");
}

#[test]
fn connect_to_a_trickling_api_server_ends_in_time() {
    setup_failed(&at_connect(trickle()), "api_unreachable");
}

#[test]
fn connect_to_an_endless_version_answer_is_cut_at_the_cap() {
    let c = setup_failed(&at_connect(endless()), "body_too_large");
    let summary = text(&c, "summary");
    assert!(
        summary.contains("GET /version") && summary.contains("4 MiB"),
        "{summary}"
    );
}

#[test]
fn connect_to_a_gigabyte_version_answer_is_cut_at_the_cap() {
    let c = setup_failed(&at_connect(gigabyte()), "body_too_large");
    assert!(text(&c, "summary").contains("GET /version"), "{c:#}");
}

#[test]
fn connect_to_an_api_server_answering_invalid_json_is_a_bad_response() {
    setup_failed(&at_connect(invalid_json()), "bad_response");
}

#[test]
fn connect_to_a_login_page_instead_of_the_api_is_a_bad_response() {
    let c = setup_failed(&at_connect(wrong_content_type()), "bad_response");
    assert!(text(&c, "summary").contains("text/html"), "{c:#}");
}

#[test]
fn connect_to_garbage_after_the_handshake_ends_in_time() {
    setup_failed(&at_connect(garbage_after_handshake()), "api_unreachable");
}

// Mid-run: the API server answered /version, discovery and the setup reads; then the pods LIST
// misbehaves. The check facing it fails; the run still ends with its reports.

#[test]
fn a_silent_pods_list_times_out_the_check() {
    ended_cleanly(&mid_run(silent()), 1, POD_CHECK, "timeout");
}

#[test]
fn a_trickling_pods_list_times_out_the_check() {
    ended_cleanly(&mid_run(trickle()), 1, POD_CHECK, "timeout");
}

#[test]
fn an_endless_pods_list_is_cut_at_the_cap() {
    let c = ended_cleanly(&mid_run(endless()), 1, POD_CHECK, "body_too_large");
    let summary = text(&c, "summary");
    assert!(
        summary.contains("list pods in namespace litellm")
            && summary.contains(&format!("GET {PODS}"))
            && summary.contains("4 MiB"),
        "{summary}"
    );
}

#[test]
fn a_gigabyte_pods_list_is_cut_at_the_cap() {
    ended_cleanly(&mid_run(gigabyte()), 1, POD_CHECK, "body_too_large");
}

#[test]
fn a_pods_list_of_invalid_json_is_a_bad_response() {
    let c = ended_cleanly(&mid_run(invalid_json()), 1, POD_CHECK, "bad_response");
    assert!(
        !text(&c, "summary").contains("did not answer"),
        "the server did answer: {c:#}"
    );
}

#[test]
fn a_login_page_instead_of_the_pods_list_is_a_bad_response() {
    let c = ended_cleanly(&mid_run(wrong_content_type()), 1, POD_CHECK, "bad_response");
    assert!(text(&c, "summary").contains("text/html"), "{c:#}");
}

#[test]
fn garbage_instead_of_the_pods_list_ends_the_check() {
    ended_cleanly(
        &mid_run(garbage_after_handshake()),
        1,
        POD_CHECK,
        "api_unreachable",
    );
}

// Setup (defect 8): kube's read timeout is an idle timeout, so a byte every second keeps a read
// alive forever; every setup step is bounded by --timeout instead.

#[test]
fn a_trickling_proxy_config_read_ends_setup_within_the_timeout() {
    let fake = FakeKube::start("healthy");
    fake.misbehave(
        "/api/v1/namespaces/litellm/configmaps/litellm-config",
        trickle(),
    );
    let run = verify(|dir| fake.write_kubeconfig(dir), &["--exact", POD_CHECK]);
    let c = setup_failed(&run, "timeout");
    let summary = text(&c, "summary");
    assert!(
        summary.contains("proxy config") && summary.contains("2s"),
        "{summary}"
    );
    assert_eq!(run.0.json()["context"], "fake-healthy", "{}", run.0.stdout);
}

#[test]
fn a_trickling_secret_read_ends_setup_within_the_timeout() {
    let fake = FakeKube::start("healthy");
    fake.misbehave(
        "/api/v1/namespaces/litellm/secrets/litellm-secrets",
        trickle(),
    );
    let run = verify(|dir| fake.write_kubeconfig(dir), &["--exact", POD_CHECK]);
    setup_failed(&run, "timeout");
}

#[test]
fn a_trickling_service_lookup_ends_port_forward_setup_within_the_timeout() {
    let fake = FakeKube::start("healthy");
    fake.misbehave("/api/v1/namespaces/litellm/services/litellm", trickle());
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let timeout = humantime::format_duration(TIMEOUT).to_string();
    let run = run_in(
        dir,
        &kubeconfig,
        &["--format", "plain"],
        &[
            "--timeout",
            &timeout,
            "--connect",
            "port-forward",
            "--exact",
            "litellm::live",
        ],
    );
    println!(
        "measured: port-forward setup: exit {} in {:.2}s, peak RSS {} KiB",
        run.code,
        run.elapsed.as_secs_f64(),
        run.peak_rss_kib
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("cannot port-forward to service litellm/litellm: no answer from the API server within 2s"),
        "{}",
        run.stdout
    );
    // Setup and the one check facing the unforwarded address: each within --timeout.
    assert!(
        run.elapsed < TIMEOUT + BOUND + SLACK,
        "the run took {:?}",
        run.elapsed
    );
    assert!(run.junit.is_some(), "the JUnit report is written");
}

// Pod logs (defects 1 and 10): asked for with limitBytes, cut by the server as the kubelet
// cuts them, and shown even when the bytes are not UTF-8.

const CRASHING: &str = "litellm-7c9d8f6b5d-9mzt7";

#[test]
fn a_log_tail_cut_by_limit_bytes_inside_a_character_is_still_shown() {
    // 19 short lines, then a line of 2-byte characters the 256 KiB cut lands inside of.
    let mut scenario = load_scenario("crash-loop");
    let short = "x".repeat(100);
    let mut log = format!("{short}\n").repeat(19);
    log.push_str(&"é".repeat(140_000));
    log.push_str("\nModuleNotFoundError: No module named 'custom_guardrails'\n");
    assert_eq!((262_144 - 19 * 101) % 2, 1, "the cut splits an é");
    for ((_, pod, file), text) in scenario.logs.iter_mut() {
        if pod == CRASHING && file == "litellm.previous.log" {
            *text = log.clone();
        }
    }
    let fake = FakeKube::start_with(scenario);
    let (run, _) = verify(|dir| fake.write_kubeconfig(dir), &["--exact", POD_CHECK]);
    let c = crate::harness::failed(&run, POD_CHECK, "crash_loop", "CrashLoopBackOff");
    let details = text(&c, "details");
    assert!(
        !details.contains("unavailable") && details.contains("éééé"),
        "{details}"
    );
    assert!(details.contains("cut at 256 KiB"), "{details}");
    let asked = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&format!("/pods/{CRASHING}/log")))
        .map(|r| r.param("limitBytes"))
        .collect::<Vec<_>>();
    assert_eq!(asked, vec![Some("262144".to_string())]);
}

#[test]
fn a_log_that_is_not_utf8_is_shown_not_reported_as_unanswered() {
    let fake = FakeKube::start("crash-loop");
    let log = b"Traceback (most recent call last):\n  caf\xe9 \xff\xfe\nModuleNotFoundError: No module named 'custom_guardrails'\n";
    fake.misbehave(
        &format!("/api/v1/namespaces/litellm/pods/{CRASHING}/log"),
        Behaviour::Close(http_response(200, "text/plain", log)),
    );
    let (run, _) = verify(|dir| fake.write_kubeconfig(dir), &["--exact", POD_CHECK]);
    let c = crate::harness::failed(&run, POD_CHECK, "crash_loop", "CrashLoopBackOff");
    let details = text(&c, "details");
    assert!(
        details.contains("ModuleNotFoundError") && details.contains("caf\u{FFFD}"),
        "{details}"
    );
}

#[test]
fn an_endless_log_is_cut_and_the_crash_loop_still_reported() {
    let fake = FakeKube::start("crash-loop");
    fake.misbehave(
        &format!("/api/v1/namespaces/litellm/pods/{CRASHING}/log"),
        Behaviour::Endless {
            head: chunked_head("text/plain"),
            pattern: chunk(format!("{}\n", "Traceback line ".repeat(270)).as_bytes()),
        },
    );
    let run = verify(|dir| fake.write_kubeconfig(dir), &["--exact", POD_CHECK]);
    let c = ended_cleanly(&run, 1, POD_CHECK, "crash_loop");
    let details = text(&c, "details");
    assert!(
        details.contains(&format!("log of {CRASHING} unavailable"))
            && details.contains("is over 512 KiB"),
        "{details}"
    );
}

// LISTs (defect 1): read in pages, so no single answer needs a large cap, within a total budget.

/// The healthy scenario with `count` more Ready LiteLLM pods, each carrying `padding` bytes of
/// annotation (as managedFields and big annotations make real pods heavy).
fn with_extra_pods(count: usize, padding: usize) -> crate::support::fake_kube::Scenario {
    let mut scenario = load_scenario("healthy");
    let template = scenario
        .objects
        .iter()
        .find(|o| o["kind"] == "Pod" && o["metadata"]["name"] == "litellm-7c9d8f6b5d-4xk2p")
        .cloned()
        .expect("a healthy LiteLLM pod");
    for i in 0..count {
        let mut pod = template.clone();
        pod["metadata"]["name"] = json!(format!("litellm-7c9d8f6b5d-x{i:04}"));
        pod["metadata"]["annotations"]["example.com/padding"] = json!("p".repeat(padding));
        scenario.objects.push(pod);
    }
    scenario
}

/// A run with a generous --timeout: what the LIST tests prove is the paging and the budget,
/// and parsing megabytes of pods in a debug build is slow on a loaded machine.
fn patient(fake: &FakeKube) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let run = run_in(
        dir,
        &kubeconfig,
        &["--format", "json"],
        &["--timeout", "60s", "--exact", POD_CHECK],
    );
    println!(
        "measured: {} pods listed: exit {} in {:.2}s, peak RSS {} KiB",
        fake.scenario().of_kind("Pod").count(),
        run.code,
        run.elapsed.as_secs_f64(),
        run.peak_rss_kib
    );
    run
}

#[test]
fn a_list_is_read_in_pages_of_a_hundred() {
    let fake = FakeKube::start_with(with_extra_pods(248, 0));
    let run = patient(&fake);
    let c = passed(&run, POD_CHECK);
    assert_eq!(metric(&c, "pods"), 250.0, "{c:#}");
    let pages: Vec<(Option<String>, bool)> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == PODS)
        .map(|r| (r.param("limit"), r.param("continue").is_some()))
        .collect();
    let hundred = Some("100".to_string());
    assert_eq!(
        pages,
        vec![
            (hundred.clone(), false),
            (hundred.clone(), true),
            (hundred, true)
        ]
    );
}

#[test]
fn a_list_over_its_total_budget_fails_as_body_too_large() {
    // 150 pods of 30 KiB: each page of 100 is ~3 MiB, under the cap of one answer; together
    // they are over the budget of one LIST.
    let fake = FakeKube::start_with(with_extra_pods(150, 30 * 1024));
    let run = patient(&fake);
    let c = crate::harness::failed(
        &run,
        POD_CHECK,
        "body_too_large",
        "cannot list pods in namespace litellm: its pages are over 4 MiB together",
    );
    assert!(text(&c, "summary").contains("in 2 pages"), "{c:#}");
    assert!(
        run.peak_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB",
        run.peak_rss_kib
    );
    assert!(run.junit.is_some(), "the JUnit report is written");
}
