//! The bed states the first warnings (issue 14) are about, proven before any check warns: pods
//! that restarted or were OOMKilled minutes ago whenever the tests run, and a stack whose proxy
//! serves an alias its config lacks while a healthy stack's serves exactly its config's. Each
//! test also pins what today's smokecheck says of the state (a pass, at most with a note), the
//! verdict tests/fixtures/scenarios/README.md writes down.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::harness::{CLUSTER_LAYERS, Run, metric, passed, run_in, text, verify_json};
use crate::support::certs;
use crate::support::fake_kube::{FakeKube, load_scenario, relative_time, rfc3339};
use crate::support::litellm::{MASTER_KEY, alias};
use crate::support::stack::{self, Stack};
use crate::support::warnings::{self, Restart};

const POD: &str = "litellm-7c9d8f6b5d-4xk2p";

/// (restartCount, last termination reason and exit code, seconds since it ended, seconds since
/// the pod became Ready again) of the LiteLLM container, read as kube-rs reads it.
fn restart_of(pod: &Value) -> (i32, String, i32, i64, i64) {
    let pod: Pod = serde_json::from_value(pod.clone()).expect("a Pod kube-rs reads");
    let now = certs::now();
    let status = pod.status.expect("status");
    let cs = &status.container_statuses.expect("container statuses")[0];
    let last = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("a terminated last state");
    let ended = last.finished_at.as_ref().expect("finishedAt").0.as_second();
    let started = cs
        .state
        .as_ref()
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
        .expect("running since")
        .0
        .as_second();
    assert_eq!(
        started, ended,
        "the container restarted when the last one ended"
    );
    let ready = status
        .conditions
        .expect("conditions")
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    assert_eq!(ready.status, "True");
    assert!(cs.ready);
    let ready_since = ready
        .last_transition_time
        .expect("lastTransitionTime")
        .0
        .as_second();
    (
        cs.restart_count,
        last.reason.clone().unwrap_or_default(),
        last.exit_code,
        now - ended,
        now - ready_since,
    )
}

#[test]
fn restarts_and_oom_kills_are_minutes_old_whenever_the_tests_run() {
    // Loaded now: the folders' ${now-12m} are 12 minutes ago now (a minute of slack for a
    // loaded machine between loading and reading the clock).
    for (name, count, reason, minutes) in [
        ("pod-restarted-recently", 5, "Error", 12),
        ("pod-oom-killed", 1, "OOMKilled", 20),
    ] {
        let s = load_scenario(name);
        let (restarts, why, exit, ago, ready) = restart_of(s.object("Pod", Some("litellm"), POD));
        assert_eq!(
            (restarts, why.as_str(), exit),
            (count, reason, 137),
            "{name}"
        );
        assert!(
            (minutes * 60..minutes * 60 + 60).contains(&ago),
            "{name}: ended {ago} s ago"
        );
        assert!(ready < ago, "{name}: Ready after the restart");
        assert!(
            s.log("litellm", POD, "litellm", true).is_some(),
            "{name}: the killed instance's log"
        );
    }

    // Any other age on a loaded scenario: an OOM kill 61 minutes ago, outside the last hour.
    let mut s = load_scenario("healthy");
    warnings::restarted(&mut s, "litellm", POD, "litellm", Restart::oom_killed(61));
    let (restarts, why, _, ago, _) = restart_of(s.object("Pod", Some("litellm"), POD));
    assert_eq!((restarts, why.as_str()), (1, "OOMKilled"));
    assert!((61 * 60..61 * 60 + 60).contains(&ago), "ended {ago} s ago");
}

/// The fixtures' relative times: a typo is refused (the loader then panics naming the folder),
/// never read as some other time.
#[test]
fn relative_times_are_read_exactly_or_refused() {
    let now = 1_796_345_511;
    for (text, want) in [
        ("${now}", Some(now)),
        ("${now-12m}", Some(now - 720)),
        ("${now+10d}", Some(now + 864_000)),
        ("${now-90s}", Some(now - 90)),
        ("${now-2h}", Some(now - 7200)),
        ("${now-+5m}", None),
        ("${now--5m}", None),
        ("${now-5}", None),
        ("${now-5w}", None),
        ("${now-m}", None),
        ("${now 5m}", None),
        ("${now-5m", None),
        ("${later}", None),
    ] {
        assert_eq!(relative_time(text, now), want, "{text}");
    }
    assert_eq!(rfc3339(now), "2026-12-04T00:51:51Z");
}

#[test]
fn a_pod_restarted_minutes_ago_but_ready_passes_today_with_its_restarts_counted() {
    for (name, restarts) in [("pod-restarted-recently", 5.0), ("pod-oom-killed", 1.0)] {
        let fake = FakeKube::start(name);
        let run = verify_json(&fake, &CLUSTER_LAYERS);
        assert_eq!(run.code, 0, "{name}: {}", run.stdout);
        let c = passed(&run, "kubernetes::pods::litellm");
        assert_eq!(metric(&c, "restarts"), restarts, "{name}: {c:#}");
        assert_eq!(metric(&c, "ready_pods"), 2.0, "{name}: {c:#}");
    }
}

/// The aliases a stack's LiteLLM lists on `/v1/models` (with the master key).
fn served_aliases(stack: &Stack) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let doc: Value = runtime.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a client")
            .get(format!("{}/v1/models", stack.litellm.url()))
            .bearer_auth(MASTER_KEY)
            .send()
            .await
            .expect("the model list")
            .json()
            .await
            .expect("JSON")
    });
    let mut ids: Vec<String> = doc["data"]
        .as_array()
        .expect("a model list")
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

fn models_check(stack: &Stack) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = stack.suite.display().to_string();
    let run: Run = run_in(
        dir,
        &stack.kubeconfig,
        &["--format", "json"],
        &["--suite", &suite, "--exact", "litellm::models"],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    passed(&run, "litellm::models")
}

/// The bed's one proxy serves every scenario's alias; before the stack saw it through a view,
/// every stack run noted the eleven aliases its config does not have.
#[test]
fn a_stacks_proxy_serves_its_config_aliases_and_the_fault_adds_one() {
    let healthy = stack::start(stack::fault("healthy").expect("fault"));
    assert_eq!(served_aliases(&healthy), [alias::HEALTHY]);
    let c = models_check(&healthy);
    assert_eq!(text(&c, "details"), "", "no alias noted: {c:#}");

    let stale = stack::start(stack::fault("alias-not-in-config").expect("fault"));
    assert_eq!(served_aliases(&stale), [alias::HEALTHY, alias::TRIM_OFF]);
    let c = models_check(&stale);
    assert!(
        text(&c["warnings"][0], "reason").contains(&format!(
            "served but not expected from the proxy config's model_list: {}",
            alias::TRIM_OFF
        )),
        "{c:#}"
    );
}
