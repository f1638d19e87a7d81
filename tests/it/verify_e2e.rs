//! The LiteLLM, vLLM and end-to-end layers: the real binary against the real LiteLLM proxy of
//! the bed (tests/support/litellm.rs) and its fake vLLMs, with the fake API server serving the
//! deployment's objects. The ConfigMap mirrors the bed's proxy config the way a cluster's would
//! (in-cluster `api_base`s, one vLLM Service per backend); `--endpoint` maps each to the bed.
//! Each scenario asserts the exact check, its cause code and what it says.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::harness::{Run, failed, metric, passed, run_in, text};
use crate::support::fake_kube::{FakeKube, Scenario, load_scenario};
use crate::support::litellm::{
    MASTER_KEY, MAX_MODEL_LEN, OTHER_VLLM_KEY, SERVED_MODEL, VLLM_KEY, alias, litellm_proxy,
};
use crate::support::open_proxy::OpenProxy;

/// The in-cluster Service of a bed alias's backend.
pub(crate) fn service_of(alias: &str) -> String {
    format!("vllm-{alias}")
}

fn api_base(alias: &str) -> String {
    format!("http://{}.vllm.svc.cluster.local/v1", service_of(alias))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Aliases whose config enables the trimming guardrail. `trim-off` claims it too: the running
/// proxy does not trim there, as when the script does not pass `max_tokens` to
/// `trim_messages` or the proxy runs an older config.
const GUARDED: [&str; 3] = [alias::HEALTHY, alias::TRIM_OFF, alias::GUARDRAIL_CRASH];

/// The proxy config as the cluster's ConfigMap would hold it: the bed's aliases, each with its
/// in-cluster `api_base`, plus `extra` model_list entries (`(alias, api_base)`).
fn config_yaml(extra: &[(&str, &str)]) -> String {
    let mut y = String::from("model_list:\n");
    let mut entries: Vec<(String, String)> = alias::ALL
        .iter()
        .map(|a| (a.to_string(), api_base(a)))
        .collect();
    entries.extend(extra.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    for (name, base) in entries {
        y.push_str(&format!(
            "  - model_name: {name}\n    litellm_params:\n      model: openai/{SERVED_MODEL}\n      api_base: {base}\n      api_key: os.environ/CA_VLLM_LOCAL_API_KEY\n"
        ));
        if GUARDED.contains(&name.as_str()) {
            y.push_str("      guardrails: [message_trimming]\n");
        }
    }
    y.push_str(
        "guardrails:\n  - guardrail_name: message_trimming\n    litellm_params:\n      guardrail: custom_guardrails.message_overflow.MessageOverflowGuardrail\n      mode: pre_call\n      default_on: false\ngeneral_settings:\n  master_key: os.environ/PROXY_MASTER_KEY\n",
    );
    y
}

/// `base` with the bed's keys in the proxy Secret, the mirrored config, and one vLLM Service
/// per bed alias (`extra` adds model_list entries).
pub(crate) fn scenario(base: &str, extra: &[(&str, &str)]) -> Scenario {
    let mut s = load_scenario(base);
    let template = s
        .get("Service", Some("vllm"), "vllm")
        .cloned()
        .expect("the base scenario has Service vllm/vllm");
    for o in s.objects.iter_mut() {
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match (o["kind"].as_str().unwrap_or_default(), name.as_str()) {
            ("Secret", "litellm-secrets") => {
                o["data"] = json!({
                    "PROXY_MASTER_KEY": b64(MASTER_KEY),
                    "CA_VLLM_LOCAL_API_KEY": b64(VLLM_KEY),
                });
            }
            ("Secret", "vllm-secrets") => {
                o["data"] = json!({"VLLM_API_KEY": b64(VLLM_KEY)});
            }
            ("ConfigMap", "litellm-config") => {
                o["data"]["config.yaml"] = Value::String(config_yaml(extra));
            }
            _ => {}
        }
    }
    for a in alias::ALL {
        let mut svc = template.clone();
        svc["metadata"]["name"] = json!(service_of(a));
        svc["metadata"]["uid"] = json!(format!("0000-{a}"));
        s.objects.push(svc);
    }
    s
}

/// A suite for the bed: the chosen aliases and vLLM services, no database, `litellm` extras
/// (YAML lines, two-space indented) appended to its `litellm` block.
pub(crate) fn suite(aliases: &[&str], backends: &[&str], litellm_extra: &str) -> String {
    let mut y = format!(
        "version: 1\ndatabase: null\nlitellm:\n  aliases: [{}]\n{litellm_extra}vllm:{}\n",
        aliases.join(", "),
        if backends.is_empty() { " []" } else { "" }
    );
    for b in backends {
        y.push_str(&format!(
            "  - namespace: vllm\n    service: {{name: {b}, port: 80}}\n    secret: null\n"
        ));
    }
    y
}

pub(crate) const NO_DB: &str = "  expect_db: false\n";

/// Runs `smokecheck verify` on `scenario` with `suite`, the bed's proxy as `litellm`, each
/// backend of the suite mapped to its fake vLLM, the platform and Kubernetes layers skipped
/// unless `args` select them, then `args`.
fn verify(scenario: Scenario, suite: &str, args: &[&str]) -> Run {
    verify_at(scenario, suite, &litellm_proxy().url(), args)
}

fn verify_at(scenario: Scenario, suite_text: &str, litellm_url: &str, args: &[&str]) -> Run {
    verify_with(scenario, suite_text, litellm_url, true, args)
}

/// `map_backends: false` leaves vLLM at its in-cluster address, unreachable from here.
fn verify_with(
    scenario: Scenario,
    suite_text: &str,
    litellm_url: &str,
    map_backends: bool,
    args: &[&str],
) -> Run {
    let proxy = litellm_proxy();
    let fake = FakeKube::start_with(scenario);
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let suite_path = dir.path().join("suite.yaml");
    std::fs::write(&suite_path, suite_text).expect("writing the suite");
    let mut owned: Vec<String> = vec![
        "--suite".into(),
        suite_path.display().to_string(),
        "--endpoint".into(),
        format!("litellm={litellm_url}"),
    ];
    for a in alias::ALL {
        let svc = service_of(a);
        if map_backends && suite_text.contains(&format!("name: {svc},")) {
            owned.push("--endpoint".into());
            owned.push(format!("vllm:vllm/{svc}={}", proxy.fake(a).url()));
        }
    }
    if !args.iter().any(|a| a.starts_with("kubernetes")) {
        owned.push("--skip".into());
        owned.push("kubernetes::".into());
    }
    if !args.iter().any(|a| a.starts_with("platform")) {
        owned.push("--skip".into());
        owned.push("platform::".into());
    }
    owned.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
    let run = run_in(dir, &kubeconfig, &["--format", "json"], &refs);
    assert_no_key_leaks(&run);
    run
}

#[track_caller]
fn assert_no_key_leaks(run: &Run) {
    let output = run.all_output();
    for key in [MASTER_KEY, VLLM_KEY, OTHER_VLLM_KEY] {
        assert!(
            !output.contains(key),
            "a key leaked into the output:\n{output}"
        );
    }
}

#[test]
fn healthy_alias_passes_every_litellm_vllm_and_e2e_check() {
    let h = alias::HEALTHY;
    let run = verify(
        scenario("healthy", &[]),
        &suite(&[h], &[&service_of(h)], NO_DB),
        &[],
    );
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let names: Vec<String> = run.statuses().into_iter().map(|(n, _)| n).collect();
    let expected = [
        "litellm::live",
        "litellm::ready",
        "litellm::auth",
        "litellm::models",
        "vllm::health",
        "vllm::models",
        "vllm::api_base::healthy",
        "e2e::chat::healthy",
        "e2e::chat::healthy::stream",
        "e2e::trimming::healthy",
        "e2e::trimming::healthy::control",
    ];
    for name in expected {
        assert!(
            names.contains(&name.to_string()),
            "{name} not run: {names:?}"
        );
        passed(&run, name);
    }
    assert_eq!(names.len(), expected.len(), "{names:?}");

    let ready = run.check("litellm::ready");
    assert!(
        text(&ready, "summary").contains("db Not connected"),
        "{ready:#}"
    );
    let auth = run.check("litellm::auth");
    assert!(
        text(&auth, "summary").contains("(401 auth_error)"),
        "{auth:#}"
    );
    let models = run.check("litellm::models");
    assert!(
        text(&models["warnings"][0], "reason").contains("served but not expected from "),
        "{models:#}"
    );
    let vm = run.check("vllm::models");
    assert_eq!(metric(&vm, "max_model_len"), f64::from(MAX_MODEL_LEN));

    let chat = run.check("e2e::chat::healthy");
    assert!(metric(&chat, "latency_ms") > 0.0);
    assert_eq!(metric(&chat, "completion_tokens"), 5.0);
    assert!(
        text(&chat, "details").contains("guardrails applied: message_trimming"),
        "{chat:#}"
    );
    let stream = run.check("e2e::chat::healthy::stream");
    let ttft = metric(&stream, "ttft_ms");
    assert!(
        ttft > 0.0 && ttft <= metric(&stream, "latency_ms"),
        "{stream:#}"
    );

    let trim = run.check("e2e::trimming::healthy");
    let prompt = metric(&trim, "prompt_tokens");
    assert_eq!(
        metric(&trim, "prompt_words"),
        f64::from(MAX_MODEL_LEN + 256)
    );
    assert!(prompt + 5.0 <= f64::from(MAX_MODEL_LEN), "{trim:#}");
    assert!(
        text(&trim, "details").contains("x-litellm-applied-guardrails: message_trimming"),
        "{trim:#}"
    );
    let control = run.check("e2e::trimming::healthy::control");
    assert!(
        text(&control, "summary").contains("maximum context length is 512 tokens"),
        "{control:#}"
    );

    let junit = run.junit.clone().expect("junit written");
    assert!(junit.contains(r#"<property name="ttft_ms""#), "{junit}");
    assert!(junit.contains(r#"<property name="latency_ms""#), "{junit}");
    eprintln!(
        "e2e healthy: chat {} ms, stream ttft {ttft} ms / {} ms, trimming {} ms ({prompt} prompt tokens)",
        metric(&chat, "latency_ms"),
        metric(&stream, "latency_ms"),
        metric(&trim, "latency_ms"),
    );
}

#[test]
fn readiness_without_a_database_fails_unless_the_suite_expects_none() {
    let run = verify(
        scenario("healthy", &[]),
        &suite(&[alias::HEALTHY], &[], ""),
        &["--exact", "litellm::ready"],
    );
    let c = failed(
        &run,
        "litellm::ready",
        "db_disconnected",
        "its db field is \"Not connected\"",
    );
    assert!(text(&c, "hint").contains("expect_db: false"), "{c:#}");
}

#[test]
fn trimming_off_fails_with_context_window_and_the_control_proves_the_prompt_was_oversized() {
    let a = alias::TRIM_OFF;
    let run = verify(
        scenario("healthy", &[]),
        &suite(&[a], &[&service_of(a)], NO_DB),
        &["e2e::trimming::"],
    );
    let c = failed(
        &run,
        "e2e::trimming::trim-off",
        "context_window",
        "guardrail message_trimming did not trim: vLLM refused the 768-word prompt as over its 512-token window",
    );
    assert!(
        text(&c, "details").contains("ContextWindowExceededError"),
        "{c:#}"
    );
    assert!(
        text(&c, "hint").contains("pass max_tokens to trim_messages"),
        "{c:#}"
    );
    passed(&run, "e2e::trimming::trim-off::control");
}

#[test]
fn crashing_guardrail_is_named_as_such() {
    let a = alias::GUARDRAIL_CRASH;
    let run = verify(
        scenario("healthy", &[]),
        &suite(&[a], &[&service_of(a)], NO_DB),
        &[
            "--exact",
            "e2e::chat::guardrail-crash",
            "e2e::trimming::guardrail-crash",
        ],
    );
    let c = failed(
        &run,
        "e2e::chat::guardrail-crash",
        "guardrail_crashed",
        "guardrail message_trimming crashed on alias guardrail-crash",
    );
    assert!(
        text(&c, "details").contains("the proxy answered 500"),
        "{c:#}"
    );
    failed(
        &run,
        "e2e::trimming::guardrail-crash",
        "guardrail_crashed",
        "crashed",
    );
}

#[test]
fn guardrail_module_missing_shows_as_an_unreachable_proxy_and_the_import_error_in_the_pod_log() {
    // In a cluster the proxy never starts: its pod crash-loops with ModuleNotFoundError, and
    // nothing listens behind the Service.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let run = verify_at(
        scenario("crash-loop", &[]),
        &suite(&[alias::HEALTHY], &[], NO_DB),
        &format!("http://{closed}"),
        &["--exact", "litellm::live", "kubernetes::pods::litellm"],
    );
    let live = failed(
        &run,
        "litellm::live",
        "unreachable",
        "cannot reach LiteLLM at http://127.0.0.1:",
    );
    assert!(
        text(&live, "hint").contains("ModuleNotFoundError"),
        "{live:#}"
    );
    let pods = failed(
        &run,
        "kubernetes::pods::litellm",
        "crash_loop",
        "CrashLoopBackOff",
    );
    assert!(
        text(&pods, "details").contains("ModuleNotFoundError: No module named 'custom_guardrails'"),
        "{pods:#}"
    );
}

#[test]
fn vllm_rejecting_litellms_key_is_the_coupling_and_the_later_cooldown_does_not_hide_it() {
    let a = alias::VERIFY_KEY_MISMATCH;
    let run = verify(
        scenario("healthy", &[]),
        &suite(&[a], &[&service_of(a)], NO_DB),
        &[
            "--exact",
            "vllm::models",
            "e2e::chat::verify-key-mismatch",
            "--wait",
            "3s",
        ],
    );
    let direct = failed(
        &run,
        "vllm::models",
        "upstream_auth",
        "vLLM vllm/vllm-verify-key-mismatch rejects the key LiteLLM sends (401): litellm/litellm-secrets CA_VLLM_LOCAL_API_KEY",
    );
    assert!(text(&direct, "hint").contains("key coupling"), "{direct:#}");
    let chat = failed(
        &run,
        "e2e::chat::verify-key-mismatch",
        "upstream_auth",
        "vLLM rejected the key LiteLLM sends for alias verify-key-mismatch",
    );
    assert!(
        text(&chat, "hint").contains("CA_VLLM_LOCAL_API_KEY"),
        "{chat:#}"
    );
    assert!(chat["attempts"].as_u64().unwrap_or(0) > 1, "{chat:#}");
    let later = chat.to_string();
    assert!(
        later.contains("cooldown"),
        "the retries met the cooldown: {chat:#}"
    );
}

#[test]
fn vllm_down_is_upstream_unreachable_within_a_second() {
    let a = alias::VERIFY_DOWN;
    let run = verify(
        scenario("healthy", &[]),
        &suite(&[a], &[&service_of(a)], NO_DB),
        &["--exact", "e2e::chat::verify-down", "vllm::health"],
    );
    let c = failed(
        &run,
        "e2e::chat::verify-down",
        "upstream_unreachable",
        "LiteLLM cannot connect to vLLM for alias verify-down (500 Connection error)",
    );
    assert!(
        c["duration_ms"].as_f64().unwrap_or(f64::MAX) < 1500.0,
        "num_retries 0 fails fast: {c:#}"
    );
    failed(
        &run,
        "vllm::health",
        "unreachable",
        "cannot reach vLLM vllm/vllm-verify-down",
    );
}

#[test]
fn slow_vllm_fails_the_check_on_time_with_what_it_waited_for() {
    let a = alias::SLOW;
    let started = std::time::Instant::now();
    let run = verify(
        scenario("healthy", &[]),
        &suite(&[a], &[&service_of(a)], NO_DB),
        &["--exact", "e2e::chat::slow", "--timeout", "1s"],
    );
    let c = failed(&run, "e2e::chat::slow", "timeout", "no answer within 1s");
    assert!(
        text(&c, "details").contains("waiting for POST"),
        "the last observed state: {c:#}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "nothing hangs: {:?}",
        started.elapsed()
    );
}

#[test]
fn unknown_alias_in_the_suite_is_named_by_both_the_proxy_and_the_model_list() {
    let run = verify(
        scenario("healthy", &[]),
        &suite(&["no-such-alias"], &[], NO_DB),
        &["--exact", "e2e::chat::no-such-alias", "litellm::models"],
    );
    let c = failed(
        &run,
        "e2e::chat::no-such-alias",
        "unknown_alias",
        "the proxy does not know alias no-such-alias (400 Invalid model name)",
    );
    assert!(text(&c, "hint").contains("litellm.aliases"), "{c:#}");
    failed(
        &run,
        "litellm::models",
        "alias_missing",
        "the proxy does not serve no-such-alias (expected from the suite's litellm.aliases)",
    );
}

#[test]
fn proxy_without_auth_fails_litellm_auth_as_critical() {
    let open = OpenProxy::start();
    let run = verify_at(
        scenario("healthy", &[]),
        &suite(&[alias::HEALTHY], &[], NO_DB),
        &open.url(),
        &["--exact", "litellm::auth"],
    );
    let c = failed(
        &run,
        "litellm::auth",
        "proxy_open",
        "CRITICAL: the proxy answered 200 to a request without a key",
    );
    assert!(text(&c, "hint").contains("master_key"), "{c:#}");
}

#[test]
fn api_base_outside_the_suite_or_without_a_service_is_a_failure_of_its_own() {
    let run = verify(
        scenario(
            "healthy",
            &[("ghost", "http://vllm-ghost.vllm.svc.cluster.local/v1")],
        ),
        &suite(
            &[alias::HEALTHY, alias::TRIM_OFF, "ghost"],
            &[&service_of(alias::HEALTHY), "vllm-ghost"],
            NO_DB,
        ),
        &["vllm::api_base::"],
    );
    passed(&run, "vllm::api_base::healthy");
    let c = failed(
        &run,
        "vllm::api_base::trim-off",
        "api_base_outside_suite",
        "points at service vllm/vllm-trim-off, which is not one of the suite's vLLM services",
    );
    assert!(text(&c, "hint").contains("api_base"), "{c:#}");
    failed(
        &run,
        "vllm::api_base::ghost",
        "not_found",
        "points at service vllm/vllm-ghost, which does not exist",
    );
}

#[test]
fn a_dedicated_chat_key_is_used_and_its_rejection_is_ours() {
    let mut s = scenario("healthy", &[]);
    let mut secret = s
        .get("Secret", Some("litellm"), "litellm-secrets")
        .cloned()
        .expect("proxy secret");
    secret["metadata"]["name"] = json!("litellm-chat-key");
    secret["metadata"]["uid"] = json!("0000-chat-key");
    secret["data"] = json!({"KEY": b64("sk-smokecheck-chat-unknown-5d1e")});
    s.objects.push(secret);
    let run = verify(
        s,
        &suite(
            &[alias::HEALTHY],
            &[],
            "  expect_db: false\n  chat_key: {secret: litellm-chat-key, key: KEY}\n",
        ),
        &["--exact", "e2e::chat::healthy"],
    );
    let c = failed(
        &run,
        "e2e::chat::healthy",
        "proxy_auth",
        "the proxy rejected our chat key (litellm/litellm-chat-key KEY) (400 no_db_connection)",
    );
    assert!(
        !run.all_output().contains("sk-smokecheck-chat-unknown-5d1e"),
        "{c:#}"
    );
}

#[test]
fn a_stream_cut_before_done_is_incomplete() {
    let cut = OpenProxy::cutting_streams();
    let run = verify_at(
        scenario("healthy", &[]),
        &suite(&[alias::HEALTHY], &[], NO_DB),
        &cut.url(),
        &["--exact", "e2e::chat::healthy::stream"],
    );
    let c = failed(
        &run,
        "e2e::chat::healthy::stream",
        "stream_incomplete",
        "alias healthy: the stream ended after 1 chunks without data: [DONE]",
    );
    assert!(c["metrics"]["ttft_ms"].is_number(), "{c:#}");
}

#[test]
fn a_master_key_the_proxy_does_not_know_is_ours_not_vllms() {
    let mut s = scenario("healthy", &[]);
    for o in s.objects.iter_mut() {
        if o["kind"] == "Secret" && o["metadata"]["name"] == "litellm-secrets" {
            o["data"]["PROXY_MASTER_KEY"] = json!(b64("sk-smokecheck-rotated-master-0b7a"));
        }
    }
    let run = verify(
        s,
        &suite(&[alias::HEALTHY], &[], NO_DB),
        &["--exact", "litellm::models", "e2e::chat::healthy"],
    );
    let m = failed(
        &run,
        "litellm::models",
        "proxy_auth",
        "GET /v1/models with the master key (litellm/litellm-secrets PROXY_MASTER_KEY) answered 400",
    );
    assert!(text(&m, "hint").contains("restart the proxy"), "{m:#}");
    failed(
        &run,
        "e2e::chat::healthy",
        "proxy_auth",
        "the proxy rejected our master key (litellm/litellm-secrets PROXY_MASTER_KEY)",
    );
    assert!(
        !run.all_output()
            .contains("sk-smokecheck-rotated-master-0b7a")
    );
}

#[test]
fn vllm_out_of_reach_uses_the_suites_window_and_skips_the_control_with_the_reason() {
    let h = alias::HEALTHY;
    let suite_text = suite(&[h], &[&service_of(h)], NO_DB)
        .replace("secret: null\n", "secret: null\n    max_model_len: 512\n");
    let run = verify_with(
        scenario("healthy", &[]),
        &suite_text,
        &litellm_proxy().url(),
        false,
        &["e2e::trimming::"],
    );
    let t = passed(&run, "e2e::trimming::healthy");
    let details = text(&t, "details");
    assert!(
        details.contains("max_model_len from the suite's vllm[].max_model_len"),
        "{t:#}"
    );
    assert!(
        details.contains("vLLM's own value could not be read"),
        "{t:#}"
    );
    let c = run.check("e2e::trimming::healthy::control");
    assert_eq!(c["status"], "skipped", "{c:#}");
    assert!(
        text(&c, "skip_reason").contains("vLLM vllm/vllm-healthy is not usable from here"),
        "{c:#}"
    );
    assert_eq!(
        run.code, 0,
        "a skipped control fails nothing: {}",
        run.stdout
    );
}
