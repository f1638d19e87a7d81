//! How a run spends its time (issue 11): checks in flight by destination, not by core; a check
//! started as soon as what it requires has passed; one read per object per run (a Secret, a
//! backend's `/v1/models`); the per-destination caps honoured. Behaviour, not timing: overlaps and orderings read from the
//! report's timeline (`started_ms`, `duration_ms`) and from the fake servers' counts, with
//! delays far larger than the margins they prove.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::{Run, command_under, run_in, run_with, verify_json};
use crate::support::fake_kube::FakeKube;
use crate::support::in_flight::Span;
use crate::support::latency::{Latency, ModelLatency};
use crate::support::stack::{self, Options};

/// `(name, started_ms, ended_ms)` of every check that ran (skipped ones did not).
fn timeline(run: &Run) -> Vec<(String, u64, u64)> {
    run.json()["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] != "skipped")
        .map(|c| {
            let started = c["started_ms"].as_u64().expect("started_ms");
            let duration = c["duration_ms"].as_u64().expect("duration_ms");
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                started,
                started + duration,
            )
        })
        .collect()
}

/// Pairs of checks that ran at the same time.
fn overlapping(run: &Run) -> Vec<(String, String)> {
    let t = timeline(run);
    let mut out = Vec::new();
    for (i, a) in t.iter().enumerate() {
        for b in &t[i + 1..] {
            if a.1 < b.2 && b.1 < a.2 {
                out.push((a.0.clone(), b.0.clone()));
            }
        }
    }
    out
}

/// The fake API server's first request whose path ends in `part`.
fn span_of(spans: &[Span], part: &str) -> Span {
    spans
        .iter()
        .find(|s| s.path.ends_with(part))
        .cloned()
        .unwrap_or_else(|| panic!("no request for {part}: {spans:?}"))
}

fn all_passed(run: &Run) {
    let not: Vec<(String, String)> = run
        .statuses()
        .into_iter()
        .filter(|(_, s)| s != "passed")
        .collect();
    assert!(
        not.is_empty() && run.code == 0,
        "not passed: {not:?}\nstderr: {}",
        run.stderr
    );
}

/// A healthy cluster whose every answer takes `latency`: each kubernetes check then lasts at
/// least that long, so checks run side by side show as overlapping in the timeline.
fn slow_healthy(latency: Duration) -> FakeKube {
    let fake = FakeKube::start("healthy");
    fake.set_latency(Latency::fixed(latency));
    fake
}

#[test]
fn checks_run_side_by_side_on_one_core() {
    // A pod limited to one core: available_parallelism() is 1 there, and libtest-mimic's
    // threads made the run serial. Pinned to one CPU here, the checks still overlap.
    let fake = slow_healthy(Duration::from_millis(300));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let run = run_with(
        dir,
        &kubeconfig,
        &["--format", "json"],
        &["kubernetes::"],
        command_under(&["taskset", "-c", "0"]),
    );
    all_passed(&run);
    let overlaps = overlapping(&run);
    assert!(
        !overlaps.is_empty(),
        "no two checks ran at once on one core: {:?}",
        timeline(&run)
    );
    assert!(
        fake.in_flight().peak() <= 8,
        "the API server's cap (8) was exceeded: {}",
        fake.in_flight().peak()
    );
}

#[test]
fn test_threads_1_still_runs_one_check_at_a_time() {
    let fake = slow_healthy(Duration::from_millis(100));
    let run = verify_json(
        &fake,
        &["--test-threads", "1", "kubernetes::", "platform::"],
    );
    all_passed(&run);
    let overlaps = overlapping(&run);
    assert!(
        overlaps.is_empty(),
        "checks overlapped with --test-threads 1: {overlaps:?}\n{:?}",
        timeline(&run)
    );
    assert!(timeline(&run).len() >= 5, "{:?}", timeline(&run));
}

#[test]
fn a_check_starts_before_an_unrelated_slow_platform_check_finishes() {
    // The CloudNativePG operator's Deployment answers after 3 s; the LiteLLM pods check needs
    // only its namespace, which platform::namespace settles at once. Phases made it wait for
    // the whole platform layer.
    let fake = FakeKube::start("healthy");
    fake.delay_requests(
        "/deployments/cnpg-controller-manager",
        Duration::from_secs(3),
    );
    let run = verify_json(&fake, &["platform::", "kubernetes::pods::litellm"]);
    all_passed(&run);
    let t: BTreeMap<String, (u64, u64)> = timeline(&run)
        .into_iter()
        .map(|(n, s, e)| (n, (s, e)))
        .collect();
    let slow = t["platform::cnpg-operator"];
    let pods = t["kubernetes::pods::litellm"];
    assert!(
        slow.1 - slow.0 >= 3000,
        "the operator check was not slow: {t:?}"
    );
    assert!(
        pods.1 < slow.1,
        "kubernetes::pods::litellm did not finish before the slow operator check: {t:?}"
    );
}

#[test]
fn each_secret_is_read_once_per_run() {
    let fake = FakeKube::start("healthy");
    let run = verify_json(&fake, &["kubernetes::", "platform::"]);
    all_passed(&run);
    let mut gets: BTreeMap<String, usize> = BTreeMap::new();
    for r in fake.requests() {
        if r.method == "GET" && r.path.contains("/secrets/") {
            *gets.entry(r.path).or_default() += 1;
        }
    }
    assert!(gets.len() >= 2, "the run read too few Secrets: {gets:?}");
    assert!(
        gets.values().all(|n| *n == 1),
        "a Secret was read more than once: {gets:?}"
    );
}

#[test]
fn the_setup_reads_go_out_together() {
    // Every answer takes 500 ms: read one after another, the proxy config and the Secrets
    // would never be in flight at the same time.
    let fake = slow_healthy(Duration::from_millis(500));
    let run = verify_json(&fake, &["--exact", "platform::namespace"]);
    all_passed(&run);
    let spans = fake.in_flight().spans();
    let span = |part: &str| span_of(&spans, part);
    let config = span("/configmaps/litellm-config");
    let secrets = span("/secrets/litellm-secrets");
    assert!(
        config.overlaps(&secrets),
        "the proxy config and the Secrets were read one after the other"
    );
}

#[test]
fn the_port_forwards_and_the_api_discovery_are_set_up_beside_the_setup_reads() {
    // Each port-forward reads its Service and EndpointSlices, the connection the API's
    // version and groups: one after another, at 500 ms an answer, they cost seconds before
    // the first check could start. The forwards lead nowhere here; only their setup counts.
    let fake = slow_healthy(Duration::from_millis(500));
    let run = verify_json(
        &fake,
        &[
            "--connect",
            "port-forward",
            "--timeout",
            "5s",
            "--exact",
            "litellm::live",
            "vllm::health",
            "database::connect",
        ],
    );
    assert!(!run.stdout.is_empty(), "no report: {}", run.stderr);
    let spans = fake.in_flight().spans();
    let span = |part: &str| span_of(&spans, part);
    let config = span("/configmaps/litellm-config");
    let services = [
        span("/services/litellm"),
        span("/services/vllm"),
        span("/services/cloudnative-pg-cluster-rw"),
    ];
    for (i, a) in services.iter().enumerate() {
        assert!(a.overlaps(&config), "{} after the proxy config", a.path);
        for b in &services[i + 1..] {
            assert!(
                a.overlaps(b),
                "{} and {} one after the other",
                a.path,
                b.path
            );
        }
    }
    let version = span("/version");
    for part in ["/api", "/apis"] {
        let discovery = span(part);
        assert!(
            version.overlaps(&discovery),
            "{part} after /version: {spans:?}"
        );
    }
}

#[test]
fn aliases_of_one_deployment_are_chatted_through_once_and_every_alias_holds_the_caps() {
    // 24 aliases of one deployment (the same litellm_params): by default one alias's chats
    // prove them all; with --every-alias, four model requests each at 200 ms a completion are
    // far more requests than any cap, all ready to go at once.
    let options = Options {
        aliases: Some(24),
        api_latency: Latency::fixed(Duration::from_millis(10)),
        model: ModelLatency {
            completion: Latency::fixed(Duration::from_millis(200)),
            ..ModelLatency::default()
        },
        ..Options::default()
    };
    let stack = stack::start_with_options(stack::fault("healthy").expect("fault"), &options);
    let suite = stack.suite.display().to_string();
    let names = |run: &Run, prefix: &str| -> Vec<String> {
        run.json()["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .filter_map(|c| c["name"].as_str().filter(|n| n.starts_with(prefix)))
            .map(str::to_string)
            .collect()
    };
    let completions = || {
        stack
            .vllm()
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .count()
    };

    // One deployment: one alias's checks, saying which aliases they stand for.
    let run = run_in(
        tempfile::tempdir().expect("temp dir"),
        &stack.kubeconfig,
        &["--format", "json"],
        &["--suite", &suite],
    );
    all_passed(&run);
    assert_eq!(
        names(&run, "e2e::"),
        [
            "e2e::chat::chat-001",
            "e2e::chat::chat-001::stream",
            "e2e::trimming::chat-001",
            "e2e::trimming::chat-001::control"
        ],
        "{}",
        run.stdout
    );
    assert_eq!(
        names(&run, "vllm::api_base::").len(),
        24,
        "config checks stay per alias"
    );
    let chat = run.json()["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "e2e::chat::chat-001")
        .cloned()
        .expect("the chat");
    let said = chat.to_string();
    assert!(
        said.contains("stands for 23 more aliases of the same deployment")
            && said.contains("chat-002, chat-003")
            && said.contains("--every-alias"),
        "{said}"
    );
    assert_eq!(
        completions(),
        4,
        "model requests of one deployment's checks"
    );

    // A filter naming another alias selects that alias's own check.
    stack.vllm().clear_requests();
    let run = run_in(
        tempfile::tempdir().expect("temp dir"),
        &stack.kubeconfig,
        &["--format", "json"],
        &["--suite", &suite, "--exact", "e2e::chat::chat-017"],
    );
    all_passed(&run);
    assert_eq!(names(&run, ""), ["e2e::chat::chat-017"], "{}", run.stdout);
    assert!(!run.stdout.contains("stands for"), "{}", run.stdout);

    // Every alias: the load the caps are for.
    let models_reads = || {
        stack
            .vllm()
            .smokecheck_in_flight()
            .spans()
            .iter()
            .filter(|s| s.path == "/v1/models")
            .count()
    };
    let models_reads_before = models_reads();
    let dir = tempfile::tempdir().expect("temp dir");
    let run = run_in(
        dir,
        &stack.kubeconfig,
        &["--format", "json"],
        &["--suite", &suite, "--every-alias"],
    );
    all_passed(&run);
    let chats = run.json()["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("e2e::chat::"))
        })
        .count();
    assert!(chats >= 48, "{chats} chat checks for 24 aliases");
    let (litellm, api, vllm) = (
        stack.litellm.in_flight().peak(),
        stack.fake.in_flight().peak(),
        stack.vllm().smokecheck_in_flight().peak(),
    );
    eprintln!("peak requests in flight: LiteLLM {litellm}, API server {api}, vLLM {vllm}");
    assert!(litellm <= 8, "LiteLLM's cap (8) exceeded: {litellm}");
    assert!(api <= 8, "the API server's cap (8) exceeded: {api}");
    assert!(vllm <= 4, "the vLLM backend's cap (4) exceeded: {vllm}");
    // And the caps are used: the chats went out side by side.
    assert!(litellm >= 2, "LiteLLM never saw two requests at once");
    // max_model_len is read once for the backend, not by vllm::models and again by each of
    // the 48 trimming checks.
    assert_eq!(
        models_reads() - models_reads_before,
        1,
        "GET /v1/models per run"
    );
}
