//! Warnings: a passed check that found a state about to become a failure. The run still exits
//! 0; the terminal shows `WARN` lines with their hints, JSON a `warnings` list per check and a
//! `warned` count, JUnit the warnings in `system-out` and a `warnings` property. Each first
//! user of warnings is proven here (the certificate's in tests/it/ingress.rs).

use crate::harness::{Run, passed, run_in, text};
use crate::support::fake_kube::{FakeKube, load_scenario};
use crate::support::litellm::alias;
use crate::support::stack;
use crate::support::warnings::{self, Restart};

const POD: &str = "litellm-7c9d8f6b5d-4xk2p";

/// The stale SealedSecret, and a LiteLLM pod that restarted 12 minutes ago and is Ready.
fn warned_cluster() -> FakeKube {
    let mut s = load_scenario("sealedsecret-stale");
    warnings::restarted(
        &mut s,
        "litellm",
        POD,
        "litellm",
        Restart {
            count: 5,
            ago: 12 * 60,
            reason: "Error",
            exit_code: 137,
        },
    );
    FakeKube::start_with(s)
}

fn run(fake: &FakeKube, format: &str) -> Run {
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
        &[
            "kubernetes::pods::litellm",
            "kubernetes::secrets::litellm-secrets",
        ],
    )
}

fn settings() -> insta::Settings {
    let mut s = crate::snapshots::settings();
    // A restart "12 minutes ago" may be 13 by the time a loaded machine reads it.
    s.add_filter(r"the last 1[23] minutes ago", "the last [12] minutes ago");
    s
}

#[test]
fn warnings_in_the_terminal_json_and_junit() {
    let fake = warned_cluster();
    let plain = run(&fake, "plain");
    assert_eq!(plain.code, 0, "{}\n{}", plain.stdout, plain.stderr);
    assert!(
        plain.stdout.contains("      WARN pod litellm/"),
        "{}",
        plain.stdout
    );
    let json = run(&fake, "json");
    assert_eq!(json.code, 0);
    let doc = json.json();
    assert_eq!(doc["summary"]["warned"], 2, "{}", json.stdout);
    assert_eq!(doc["summary"]["passed"], 2);
    settings().bind(|| {
        insta::assert_snapshot!("warnings_terminal", plain.stdout);
        insta::assert_snapshot!("warnings_json", json.stdout);
        insta::assert_snapshot!("warnings_junit", json.junit.clone().unwrap_or_default());
    });
}

#[test]
fn a_stale_sealedsecret_warns_instead_of_noting() {
    let fake = FakeKube::start("sealedsecret-stale");
    let run = run(&fake, "json");
    let c = passed(&run, "kubernetes::secrets::litellm-secrets");
    let w = &c["warnings"][0];
    assert!(
        text(w, "reason").contains("SealedSecret litellm/litellm-secrets reports Synced=False"),
        "{c:#}"
    );
    assert!(text(w, "hint").contains("kubeseal"), "{c:#}");
    // The healthy SealedSecret warns of nothing.
    let run = self::run(&FakeKube::start("healthy"), "json");
    assert_eq!(run.json()["summary"]["warned"], 0, "{}", run.stdout);
    assert!(!run.stdout.contains("\"warnings\""), "{}", run.stdout);
}

#[test]
fn a_pod_oom_killed_recently_warns_and_one_killed_over_an_hour_ago_does_not() {
    let run = run(&FakeKube::start("pod-oom-killed"), "json");
    let c = passed(&run, "kubernetes::pods::litellm");
    let reason = text(&c["warnings"][0], "reason");
    assert!(
        reason.contains("was OOMKilled 20 minutes ago at its 2Gi memory limit"),
        "{c:#}"
    );

    let mut s = load_scenario("healthy");
    warnings::restarted(&mut s, "litellm", POD, "litellm", Restart::oom_killed(61));
    let run = self::run(&FakeKube::start_with(s), "json");
    let c = passed(&run, "kubernetes::pods::litellm");
    assert!(c.get("warnings").is_none(), "{c:#}");
}

#[test]
fn an_alias_served_but_not_in_the_config_warns() {
    let stack = stack::start(stack::fault("alias-not-in-config").expect("fault"));
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = stack.suite.display().to_string();
    let run = run_in(
        dir,
        &stack.kubeconfig,
        &["--format", "json"],
        &["--suite", &suite, "litellm::models"],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let c = passed(&run, "litellm::models");
    let reason = text(&c["warnings"][0], "reason");
    assert!(
        reason.contains("served but not expected from the proxy config's model_list")
            && reason.contains(alias::TRIM_OFF),
        "{c:#}"
    );
    assert!(
        text(&c["warnings"][0], "hint").contains("rollout restart"),
        "{c:#}"
    );
}
