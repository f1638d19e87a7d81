//! The Kubernetes layer end to end: the real binary against the fake API server, one test per
//! failure our users meet, each asserting which check fails, what it says, and the exit code.
//! What the command line does around the checks (filters, exit codes, the clock, signals, hook
//! mode, colour) is cli_run.rs.

use serde_json::Value;

use crate::harness::{
    CLUSTER_LAYERS, Run, TERMINAL_ATTACK, TERMINAL_ATTACK_SHOWN, assert_no_secret_leaks, failed,
    passed, raw_controls, secret_values, text, verify_json, verify_reporting,
};
use crate::support::fake_kube::{FakeKube, load_scenario};

fn run(scenario: &str) -> Run {
    let fake = FakeKube::start(scenario);
    let run = verify_json(&fake, &CLUSTER_LAYERS);
    assert_no_secret_leaks(scenario, &run);
    run
}

#[test]
fn healthy_cluster_passes_every_kubernetes_check() {
    let run = run("healthy");
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let statuses = run.statuses();
    assert!(statuses.len() >= 14, "{statuses:?}");
    for (name, status) in &statuses {
        assert_eq!(status, "passed", "{name}");
    }
    let g = passed(&run, "kubernetes::guardrail::message_trimming");
    assert!(
        text(&g, "summary").contains("working directory /app"),
        "{g:#}"
    );
    let cnpg = passed(&run, "kubernetes::cnpg::cloudnative-pg-cluster");
    assert!(
        text(&cnpg, "summary").contains("primary cloudnative-pg-cluster-1"),
        "{cnpg:#}"
    );
    let doc = run.json();
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["context"], "fake-healthy");
    assert_eq!(doc["namespace"], "litellm");
    assert_eq!(doc["summary"]["failed"], 0);
    assert_eq!(doc["summary"]["passed"], statuses.len());
    // The hook runs with a 128Mi limit; a healthy run is a small fraction of it.
    assert!(
        run.peak_rss_kib < 64 * 1024,
        "peak RSS {} KiB",
        run.peak_rss_kib
    );
    assert!(
        run.elapsed < std::time::Duration::from_secs(30),
        "{:?}",
        run.elapsed
    );
}

#[test]
fn crash_loop_shows_restarts_exit_code_and_the_previous_log_redacted() {
    // The fixture's log echoes the database URL early; put a line with the password and the
    // master key at the very end too, inside the tail the check reads.
    let mut scenario = load_scenario("crash-loop");
    let secrets = secret_values("crash-loop");
    for ((_, _, file), text) in scenario.logs.iter_mut() {
        if file == "litellm.previous.log" {
            text.push_str(&format!("DEBUG: connecting with {}\n", secrets.join(" ")));
        }
    }
    let fake = FakeKube::start_with(scenario);
    let run = verify_json(&fake, &CLUSTER_LAYERS);
    assert_no_secret_leaks("crash-loop", &run);
    let c = failed(
        &run,
        "kubernetes::pods::litellm",
        "crash_loop",
        "CrashLoopBackOff (7 restarts, last exit: Error (exit code 1))",
    );
    let details = text(&c, "details");
    assert!(
        details.contains("ModuleNotFoundError: No module named 'custom_guardrails'"),
        "{details}"
    );
    assert!(
        details.contains("<redacted>"),
        "the database URL's password is scrubbed: {details}"
    );
    assert!(text(&c, "hint").contains("--previous"), "{c:#}");
    let log_calls: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/log"))
        .collect();
    assert!(
        log_calls
            .iter()
            .any(|r| r.param("previous").as_deref() == Some("true")
                && r.param("tailLines").as_deref() == Some("20")),
        "{log_calls:?}"
    );
    // The other replica still serves: the Service is fine, the crash loop is the finding.
    passed(&run, "kubernetes::services::litellm");
}

/// A 64-character database password (the Secret's own, so it is registered for redaction).
const LONG_PASSWORD: &str = "Zq3kT9vW2mXc8LrB5nHy7JdF4gPs6QaE1uKo0VbNwRtYe2MiCx9UzLh3GjDf5SkA";

/// Every 12-character window of `secret` found in `text`.
fn fragments<'a>(secret: &'a str, text: &str) -> Vec<&'a str> {
    (0..=secret.len().saturating_sub(12))
        .map(|i| &secret[i..i + 12])
        .filter(|w| text.contains(w))
        .collect()
}

#[test]
fn a_password_straddling_the_log_line_cut_leaks_no_fragment() {
    // Log lines are cut at 300 characters for the report. Cut before redaction, the URL below
    // lost its `@` and the password its end, so neither the password's value nor the URL
    // pattern matched any more and its first characters went out. The line (280
    // filler characters) leaves 2 of them; shorter fillers leave more.
    let mut scenario = load_scenario("crash-loop");
    scenario.set_secret_value(
        "litellm",
        "cloudnative-pg-cluster-litellm",
        "password",
        LONG_PASSWORD,
    );
    for ((_, _, file), text) in scenario.logs.iter_mut() {
        if file == "litellm.previous.log" {
            for filler in [280, 270, 250] {
                text.push_str(&format!(
                    "{}postgresql://user:{LONG_PASSWORD}@host\n",
                    "x".repeat(filler)
                ));
            }
        }
    }
    let fake = FakeKube::start_with(scenario);
    for format in ["json", "plain"] {
        let run = verify_reporting(&fake, &["--format", format], &CLUSTER_LAYERS);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(run.termination.is_some(), "termination message written");
        let output = run.all_output();
        assert!(
            output.contains("postgresql://user:"),
            "the log lines are shown: {output}"
        );
        let leaked = fragments(LONG_PASSWORD, &output);
        assert!(leaked.is_empty(), "{format}: {leaked:?} in\n{output}");
        assert!(
            !output.contains(&format!("user:{}", &LONG_PASSWORD[..2])),
            "{format}: the password's first characters follow the cut URL:\n{output}"
        );
    }
}

/// A value in the proxy Secret that no suite field names (LiteLLM's salt key).
const SALT: &str = "litellm-salt/4d1f9b27+e08c53a6=";

/// crash-loop with `LITELLM_SALT_KEY` beside the suite's keys, echoed by the crashing container
/// in every form the redactor knows.
fn salted_crash_loop() -> crate::support::fake_kube::Scenario {
    use base64::Engine as _;
    let mut scenario = load_scenario("crash-loop");
    scenario.set_secret_value("litellm", "litellm-secrets", "LITELLM_SALT_KEY", SALT);
    let forms = [
        SALT.to_string(),
        base64::engine::general_purpose::STANDARD.encode(SALT),
        "litellm-salt%2F4d1f9b27%2Be08c53a6%3D".to_string(),
        serde_json::to_string(SALT).unwrap_or_default(),
    ];
    for ((_, _, file), text) in scenario.logs.iter_mut() {
        if file == "litellm.previous.log" {
            text.push_str(&format!("DEBUG: salt {}\n", forms.join(" ")));
        }
    }
    scenario
}

#[test]
fn a_secret_key_no_suite_field_names_is_scrubbed_too() {
    let fake = FakeKube::start_with(salted_crash_loop());
    for format in ["json", "plain"] {
        let run = verify_reporting(&fake, &["--format", format], &CLUSTER_LAYERS);
        assert_eq!(run.code, 1, "{}", run.stderr);
        let output = run.all_output();
        assert!(
            output.contains("DEBUG: salt "),
            "the line is shown: {output}"
        );
        let leaked = fragments(SALT, &output);
        assert!(leaked.is_empty(), "{format}: {leaked:?} in\n{output}");
    }
}

#[test]
fn a_secret_whose_first_read_fails_is_scrubbed_once_a_later_read_succeeds() {
    // The run's first read of litellm-secrets (before any check) gets a 500 (kube-rs retries a
    // 503 by itself); the secrets check reads it later, after the pods check (one thread,
    // check order) quoted the log.
    let fake = FakeKube::start_with(salted_crash_loop());
    fake.fail_next_requests("/secrets/litellm-secrets", 500, 1);
    let run = verify_reporting(
        &fake,
        &["--format", "json"],
        &["--test-threads", "1", "kubernetes::"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    passed(&run, "kubernetes::secrets::litellm-secrets");
    let output = run.all_output();
    assert!(
        output.contains("DEBUG: salt "),
        "the line is shown: {output}"
    );
    let leaked = fragments(SALT, &output);
    assert!(leaked.is_empty(), "{leaked:?} in\n{output}");
    let secret_reads = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/secrets/litellm-secrets"))
        .count();
    assert!(
        secret_reads >= 2,
        "an early read failed, a later one succeeded"
    );
}

#[test]
fn control_characters_from_the_cluster_reach_the_terminal_neutralised() {
    // A crashing container's log (in the details) and a waiting message (in the summary, so in
    // the termination message too) carry the attack; plain logs and the coloured pretty format
    // both show it as visible text, and JUnit stays XML a consumer parses.
    let mut crash = load_scenario("crash-loop");
    for ((_, _, file), text) in crash.logs.iter_mut() {
        if file == "litellm.previous.log" {
            text.push_str(&format!("{TERMINAL_ATTACK}\n"));
        }
    }
    let mut config = load_scenario("config-error");
    for o in config.objects.iter_mut() {
        if o["kind"] == "Pod" && o["metadata"]["labels"]["app.kubernetes.io/name"] == "litellm" {
            o["status"]["containerStatuses"][0]["state"]["waiting"]["message"] =
                Value::from(TERMINAL_ATTACK);
        }
    }
    for scenario in [crash, config] {
        let name = scenario.name.clone();
        let fake = FakeKube::start_with(scenario);
        for format in [
            &["--format", "plain"][..],
            &["--format", "pretty", "--color", "always"],
        ] {
            let run = verify_reporting(&fake, format, &CLUSTER_LAYERS);
            assert_eq!(run.code, 1, "{}", run.stderr);
            let raw = raw_controls(&run.stdout);
            assert!(
                raw.is_empty(),
                "{name} {format:?}: {raw:?} in\n{}",
                run.stdout
            );
            assert!(
                run.stdout.contains(TERMINAL_ATTACK_SHOWN),
                "{name} {format:?}: shown visibly:\n{}",
                run.stdout
            );
            let termination = run.termination.clone().unwrap_or_default();
            let raw = raw_controls(&termination);
            assert!(raw.is_empty(), "{name}: {raw:?} in {termination}");
            let junit = run.junit.clone().expect("junit written");
            assert!(
                junit.contains(TERMINAL_ATTACK_SHOWN),
                "{name}: JUnit shows it visibly:\n{junit}"
            );
            crate::junit_consumer::parse(&junit);
        }
        let run = verify_reporting(&fake, &["--format", "plain"], &CLUSTER_LAYERS);
        if name == "config-error" {
            let termination = run.termination.unwrap_or_default();
            assert!(
                termination.contains(TERMINAL_ATTACK_SHOWN),
                "the summary's server text is in the termination message: {termination}"
            );
        }
    }
}

#[test]
fn image_pull_error_names_the_image() {
    let run = run("image-pull");
    let c = failed(
        &run,
        "kubernetes::pods::litellm",
        "image_pull",
        "ImagePullBackOff for image ",
    );
    assert!(text(&c, "hint").contains("image name and tag"), "{c:#}");
}

#[test]
fn container_config_error_names_the_missing_secret() {
    let run = run("config-error");
    failed(
        &run,
        "kubernetes::pods::litellm",
        "container_config",
        "CreateContainerConfigError",
    );
}

#[test]
fn pending_pod_gives_the_scheduler_reason() {
    let run = run("unschedulable");
    failed(
        &run,
        "kubernetes::pods::litellm",
        "unschedulable",
        "Insufficient memory",
    );
}

#[test]
fn service_without_ready_endpoints_names_its_selector() {
    let run = run("no-endpoints");
    let c = failed(
        &run,
        "kubernetes::services::litellm",
        "no_endpoints",
        "has no ready endpoints: its selector app.kubernetes.io/",
    );
    assert!(text(&c, "summary").contains("none ready"), "{c:#}");
    failed(
        &run,
        "kubernetes::pods::litellm",
        "not_ready",
        "0/2 pods ready",
    );
}

#[test]
fn missing_key_is_named_and_the_coupling_check_is_skipped_not_failed() {
    let run = run("missing-key");
    let c = failed(
        &run,
        "kubernetes::secrets::litellm-secrets",
        "missing_key",
        "has no key CA_VLLM_LOCAL_API_KEY",
    );
    assert!(text(&c, "hint").contains("re-seal"), "{c:#}");
    let coupling = run.check("kubernetes::secrets::vllm-api-key");
    assert_eq!(coupling["status"], "skipped", "{coupling:#}");
}

#[test]
fn empty_key_is_a_failure() {
    let run = run("empty-key");
    failed(
        &run,
        "kubernetes::secrets::litellm-secrets",
        "empty_key",
        "is empty",
    );
}

#[test]
fn key_mismatch_prints_neither_value_and_says_to_reseal() {
    let run = run("key-mismatch");
    let c = failed(
        &run,
        "kubernetes::secrets::vllm-api-key",
        "key_mismatch",
        "CA_VLLM_LOCAL_API_KEY and vllm/vllm-secrets VLLM_API_KEY differ",
    );
    assert!(
        text(&c, "hint").contains("re-seal litellm-secrets"),
        "{c:#}"
    );
    passed(&run, "kubernetes::secrets::litellm-secrets");
}

#[test]
fn stale_sealed_secret_is_reported_but_the_secret_decides() {
    let run = run("sealedsecret-stale");
    assert_eq!(run.code, 0, "{}", run.stdout);
    let c = passed(&run, "kubernetes::secrets::litellm-secrets");
    assert!(
        text(&c["warnings"][0], "reason").contains("Synced=False"),
        "{c:#}"
    );
}

#[test]
fn failed_migration_job_gives_reason_and_log_tail() {
    let run = run("migration-failed");
    let c = failed(
        &run,
        "kubernetes::jobs::litellm-migrations",
        "job_failed",
        "BackoffLimitExceeded",
    );
    assert!(
        text(&c, "details").contains("last 20 log lines of litellm-migrations-"),
        "{c:#}"
    );
    assert!(
        text(&c, "hint").contains("kubectl logs -n litellm job/litellm-migrations"),
        "{c:#}"
    );
}

#[test]
fn absent_migration_job_is_not_a_failure() {
    let run = run("migration-absent");
    assert_eq!(run.code, 0, "{}", run.stdout);
    let c = passed(&run, "kubernetes::jobs::litellm-migrations");
    assert!(
        text(&c, "details").contains("ttlSecondsAfterFinished"),
        "{c:#}"
    );
}

#[test]
fn running_migration_job_fails_until_it_completes() {
    let run = run("migration-running");
    failed(
        &run,
        "kubernetes::jobs::litellm-migrations",
        "job_running",
        "has not completed (1 active",
    );
}

#[test]
fn guardrail_at_the_wrong_path_shows_where_litellm_looks() {
    let run = run("guardrail-wrong-path");
    let c = failed(
        &run,
        "kubernetes::guardrail::message_trimming",
        "guardrail_wrong_path",
        "is mounted at /opt/guardrails/message_overflow.py",
    );
    let details = text(&c, "details");
    assert!(
        details.contains("/etc/litellm/custom_guardrails/message_overflow.py"),
        "{details}"
    );
    assert!(
        details.contains("/app/custom_guardrails/message_overflow.py"),
        "{details}"
    );
}

#[test]
fn guardrail_not_mounted_is_a_failure() {
    let run = run("guardrail-not-mounted");
    failed(
        &run,
        "kubernetes::guardrail::message_trimming",
        "guardrail_not_mounted",
        "is not mounted into container litellm",
    );
}

#[test]
fn guardrail_beside_the_config_file_is_accepted_and_named() {
    let run = run("guardrail-config-dir");
    let c = passed(&run, "kubernetes::guardrail::message_trimming");
    assert!(
        text(&c, "summary").contains("relative to the config file's directory /etc/litellm"),
        "{c:#}"
    );
}

#[test]
fn guardrail_on_pythonpath_is_accepted_and_named() {
    let run = run("guardrail-pythonpath");
    let c = passed(&run, "kubernetes::guardrail::message_trimming");
    assert!(
        text(&c, "summary").contains("PYTHONPATH entry /opt/guardrails"),
        "{c:#}"
    );
}

#[test]
fn undeclared_guardrail_is_a_failure() {
    let run = run("guardrail-not-declared");
    failed(
        &run,
        "kubernetes::guardrail::message_trimming",
        "guardrail_not_declared",
        "declares no guardrail named message_trimming",
    );
}

#[test]
fn unhealthy_cnpg_cluster_reports_phase_and_instances() {
    let run = run("cnpg-unhealthy");
    failed(
        &run,
        "kubernetes::cnpg::cloudnative-pg-cluster",
        "cnpg_unhealthy",
        "1/2 instances ready",
    );
}

#[test]
fn rw_service_on_a_replica_is_caught() {
    let run = run("rw-on-replica");
    failed(
        &run,
        "kubernetes::cnpg::cloudnative-pg-cluster",
        "rw_not_primary",
        "routes to cloudnative-pg-cluster-2, but the primary is cloudnative-pg-cluster-1",
    );
}

#[test]
fn missing_cnpg_crd_fails_the_platform_and_skips_the_cluster_check() {
    let run = run("cnpg-not-installed");
    let c = failed(
        &run,
        "platform::crds",
        "crd_missing",
        "not served by the API server: clusters.postgresql.cnpg.io",
    );
    assert!(
        text(&c, "hint").contains("install the CloudNativePG operator"),
        "{c:#}"
    );
    let cnpg = run.check("kubernetes::cnpg::cloudnative-pg-cluster");
    assert_eq!(cnpg["status"], "skipped", "{cnpg:#}");
    assert_eq!(
        text(&cnpg, "skip_reason"),
        "skipped: CRD clusters.postgresql.cnpg.io is not served (see platform::crds)"
    );
}

#[test]
fn without_the_platform_phase_the_cluster_check_still_names_the_missing_crd() {
    let fake = FakeKube::start("cnpg-not-installed");
    let run = verify_json(&fake, &["kubernetes::cnpg"]);
    failed(
        &run,
        "kubernetes::cnpg::cloudnative-pg-cluster",
        "crd_missing",
        "CloudNativePG is not installed",
    );
}

#[test]
fn forbidden_names_verb_resource_and_the_missing_rule() {
    let run = run("rbac-forbidden");
    let c = failed(
        &run,
        "kubernetes::pods::litellm",
        "forbidden",
        "forbidden: cannot list pods in namespace litellm",
    );
    assert!(
        text(&c, "hint").contains("resources: [\"pods\"], verbs: [\"list\"]"),
        "{c:#}"
    );
    let s = failed(
        &run,
        "kubernetes::secrets::litellm-secrets",
        "forbidden",
        "forbidden: cannot get secrets litellm/litellm-secrets",
    );
    assert!(
        text(&s, "hint").contains("resourceNames: [\"litellm-secrets\"]"),
        "{s:#}"
    );
}

#[test]
fn missing_namespace_fails_once_and_skips_what_lives_in_it() {
    let run = run("namespace-missing");
    failed(
        &run,
        "platform::namespace",
        "namespace_missing",
        "namespace litellm does not exist",
    );
    let pods = run.check("kubernetes::pods::litellm");
    assert_eq!(pods["status"], "skipped", "{pods:#}");
    assert_eq!(
        text(&pods, "skip_reason"),
        "skipped: namespace litellm does not exist (see platform::namespace)"
    );
    passed(&run, "kubernetes::services::vllm/vllm");
}
