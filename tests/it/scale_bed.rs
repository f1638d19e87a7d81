//! The bed at scale, and the script baseline kept honest.
//!
//! A crowded namespace (filler Pods and Secrets, support/scale.rs) changes nothing the suite
//! checks; a stack with a proxy of its own, many aliases, filler and every latency knob on
//! still passes a healthy run of today's smokecheck; and the script baseline
//! (ci/baseline/verify.sh) runs the same checks as smokecheck, by name, passes a healthy stack
//! and names the fault of a broken one. The long runs (200 aliases, 2,000 pods at benchmark
//! latencies) are ci/bench's, not these tests'; the critical path ci/bench prints
//! (ci/critical-path.jq) is checked here on made-up timelines.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Measured, Run, measured, run_in};
use crate::support::fake_kube::{ForwardLatency, load_scenario, str_at};
use crate::support::latency::{Latency, ModelLatency};
use crate::support::litellm::{MASTER_KEY, VLLM_KEY};
use crate::support::scale::{self, FILLER_LABEL};
use crate::support::stack::{self, Options, Stack};

fn verify(stack: &Stack) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = stack.suite.display().to_string();
    run_in(
        dir,
        &stack.kubeconfig,
        &["--format", "json"],
        &["--suite", &suite],
    )
}

fn not_passed(run: &Run) -> Vec<String> {
    run.statuses()
        .into_iter()
        .filter(|(_, status)| status != "passed")
        .map(|(name, status)| format!("{name} {status}"))
        .collect()
}

#[test]
fn filler_crowds_the_namespace_with_real_shapes_and_no_suite_labels() {
    let mut scenario = load_scenario("healthy");
    let (own_pods, own_secrets) = (
        scenario.of_kind("Pod").count(),
        scenario.of_kind("Secret").count(),
    );
    scale::fill(&mut scenario, "litellm", 2000, 50, 1);
    let filler = |kind: &'static str| -> Vec<Value> {
        scenario
            .of_kind(kind)
            .filter(|o| {
                str_at(
                    o,
                    &format!("/metadata/labels/{}", FILLER_LABEL.replace('/', "~1")),
                ) == Some("true")
            })
            .cloned()
            .collect()
    };
    let (pods, secrets) = (filler("Pod"), filler("Secret"));
    assert_eq!(scenario.of_kind("Pod").count(), own_pods + 2000);
    assert_eq!(scenario.of_kind("Secret").count(), own_secrets + 50);
    assert_eq!((pods.len(), secrets.len()), (2000, 50));

    let names: BTreeSet<&str> = pods
        .iter()
        .chain(&secrets)
        .filter_map(|o| str_at(o, "/metadata/name"))
        .collect();
    assert_eq!(names.len(), 2050, "filler names must be unique");
    for pod in &pods {
        assert_eq!(str_at(pod, "/metadata/namespace"), Some("litellm"));
        let labels = pod["metadata"]["labels"].as_object().expect("labels");
        for suite_label in ["cnpg.io/cluster", "cnpg.io/instanceRole", "role"] {
            assert!(!labels.contains_key(suite_label), "{pod}");
        }
        let app = labels["app.kubernetes.io/name"]
            .as_str()
            .unwrap_or_default();
        assert!(app.starts_with("filler-"), "{app}");
        // The fixture's shape: containers, probes, status.
        assert!(pod.pointer("/spec/containers/0/image").is_some(), "{pod}");
        assert!(pod.pointer("/status/conditions").is_some(), "{pod}");
    }
    let size = |objects: &[Value]| -> usize { objects.iter().map(|o| o.to_string().len()).sum() };
    let pod_bytes = size(&pods) / pods.len();
    assert!(
        (2_000..20_000).contains(&pod_bytes),
        "a filler pod is {pod_bytes} bytes of JSON on average; the fixtures' are 3-6 KB"
    );
    let helm: Vec<&Value> = secrets
        .iter()
        .filter(|s| s["type"] == "helm.sh/release.v1")
        .collect();
    assert_eq!(helm.len(), 10);
    assert!(
        helm.iter().all(|s| s.to_string().len() > 40_000),
        "Helm release Secrets are the large ones"
    );
    let kinds: BTreeSet<&str> = secrets.iter().filter_map(|s| s["type"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "Opaque",
            "helm.sh/release.v1",
            "kubernetes.io/dockerconfigjson",
            "kubernetes.io/tls"
        ])
    );
}

#[test]
fn a_healthy_run_passes_against_a_scaled_slow_stack() {
    let aliases = 4;
    let options = Options {
        aliases: Some(aliases),
        filler_pods: 2000,
        filler_secrets: 50,
        seed: 3,
        api_latency: Latency::range(Duration::from_millis(1), Duration::from_millis(5), 1),
        forward: ForwardLatency {
            setup: Latency::fixed(Duration::from_millis(2)),
            round_trip: Latency::fixed(Duration::from_millis(2)),
        },
        model: ModelLatency {
            completion: Latency::fixed(Duration::from_millis(60)),
            first_token: Latency::fixed(Duration::from_millis(20)),
            ..ModelLatency::default()
        },
    };
    let stack = stack::start_with_options(stack::fault("healthy").expect("fault"), &options);
    let run = verify(&stack);
    assert!(
        not_passed(&run).is_empty() && run.code == 0,
        "exit {}; not passed: {:?}\nstderr: {}",
        run.code,
        not_passed(&run),
        run.stderr
    );
    let named = |prefix: &str| -> Vec<String> {
        run.statuses()
            .into_iter()
            .filter(|(name, _)| name.starts_with(prefix) && !name.ends_with("::stream"))
            .map(|(name, _)| name)
            .collect()
    };
    // The aliases are one deployment: the first one's chat stands for all of them, and each
    // alias's backend is still checked.
    let names = scale::alias_names(aliases);
    assert_eq!(named("e2e::chat::"), [format!("e2e::chat::{}", names[0])]);
    let backends: Vec<String> = names
        .iter()
        .map(|a| format!("vllm::api_base::{a}"))
        .collect();
    assert_eq!(named("vllm::api_base::"), backends);
    assert_eq!(stack.fake.scenario().of_kind("Pod").count(), 2000 + 6);
    // Every chat of the run reached the stack's own fake vLLM, not the shared proxy's.
    let reached: BTreeSet<String> = stack
        .vllm()
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .filter_map(|r| r.model)
        .collect();
    assert!(!reached.is_empty(), "no chat reached the stack's own vLLM");
    eprintln!(
        "scaled stack: {aliases} aliases, 2,000 filler pods, 50 filler secrets: {} checks in {:?}, peak RSS {} KiB",
        run.statuses().len(),
        run.elapsed,
        run.peak_rss_kib
    );
}

/// `bash ci/baseline/verify.sh` with the stack's settings, through port-forwards held open.
fn baseline(stack: &Stack) -> Measured {
    let relays = stack.relays();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/baseline/verify.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).env_clear();
    for var in ["PATH", "LANG", "LC_ALL", "TMPDIR"] {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    // kubectl keeps its discovery cache under HOME.
    cmd.env("HOME", std::env::temp_dir().join("smokecheck-test-home"));
    for line in stack.baseline_env(&relays).lines() {
        let (name, value) = line.split_once('=').expect("NAME=value");
        cmd.env(name, value);
    }
    let out = measured(cmd);
    drop(relays);
    for secret in [MASTER_KEY, VLLM_KEY, stack.db.password.as_str()] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "the script printed a secret:\n{}{}",
            out.stdout,
            out.stderr
        );
    }
    out
}

/// The check names of the script's `PASS`/`FAIL` lines, and of the failed ones.
fn script_checks(out: &Measured) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut all = BTreeSet::new();
    let mut failed = BTreeSet::new();
    for line in out.stdout.lines() {
        let Some((verdict, rest)) = line.split_once("  ") else {
            continue;
        };
        let Some((name, _)) = rest.split_once(": ") else {
            continue;
        };
        match verdict {
            "PASS" => {
                all.insert(name.to_string());
            }
            "FAIL" => {
                all.insert(name.to_string());
                failed.insert(name.to_string());
            }
            _ => {}
        }
    }
    (all, failed)
}

#[test]
fn the_script_baseline_runs_smokechecks_checks_and_names_a_rotated_key() {
    let healthy = stack::start(stack::fault("healthy").expect("fault"));
    let script = baseline(&healthy);
    let (checks, failed) = script_checks(&script);
    assert!(
        script.code == 0 && failed.is_empty(),
        "the script failed a healthy stack (exit {}): {failed:?}\n{}\n{}",
        script.code,
        script.stdout,
        script.stderr
    );
    // The same checks as smokecheck's, name for name: a check added to one and not the other
    // makes the benchmark compare different work.
    let run = verify(&healthy);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let smokecheck: BTreeSet<String> = run.statuses().into_iter().map(|(name, _)| name).collect();
    assert_eq!(
        checks, smokecheck,
        "the script baseline and smokecheck run different checks"
    );

    let rotated = stack::start(stack::fault("key-mismatch").expect("fault"));
    let script = baseline(&rotated);
    let (_, failed) = script_checks(&script);
    assert_eq!(script.code, 1, "{}\n{}", script.stdout, script.stderr);
    for expected in ["kubernetes::secrets::vllm-api-key", "vllm::models"] {
        assert!(
            failed.contains(expected),
            "the script did not fail {expected} on a rotated key: {failed:?}\n{}",
            script.stdout
        );
    }
}

/// `jq -r -f ci/critical-path.jq` on a report.
fn critical_path(report: &Value) -> Vec<String> {
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/critical-path.jq");
    let file = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(file.path(), report.to_string()).expect("writing the report");
    let out = Command::new("jq")
        .arg("-r")
        .arg("-f")
        .arg(&program)
        .arg(file.path())
        .output()
        .expect("running jq (ci/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn check(name: &str, started: u64, duration: u64) -> Value {
    serde_json::json!({"name": name, "status": "passed", "started_ms": started, "duration_ms": duration})
}

#[test]
fn the_critical_path_is_the_chain_each_check_waited_for() {
    // a → b → c is the chain; `side` is the slowest single check but ends early, `quick`
    // ends just before c starts but began after b, `late-skip` was skipped.
    let report = serde_json::json!({
        "summary": {"duration_ms": 1000},
        "checks": [
            check("a", 40, 300),
            check("side", 40, 500),
            check("b", 341, 200),
            check("quick", 400, 100),
            check("c", 541, 400),
            {"name": "late-skip", "status": "skipped", "started_ms": 990, "duration_ms": 0},
        ]
    });
    assert_eq!(
        critical_path(&report),
        [
            "critical path: 3 checks, the first starting at 40 ms, the last ending at 941 ms (run: 1000 ms)",
            "  40..340 ms  a (300 ms)",
            "  341..541 ms  b (200 ms)",
            "  541..941 ms  c (400 ms)",
            "slowest single check: side (500 ms)",
        ]
    );
}

#[test]
fn the_critical_path_is_unknown_until_the_report_has_started_ms() {
    let report = serde_json::json!({
        "summary": {"duration_ms": 800},
        "checks": [
            {"name": "a", "status": "passed", "duration_ms": 300},
            {"name": "b", "status": "failed", "duration_ms": 700},
        ]
    });
    assert_eq!(
        critical_path(&report),
        [
            "critical path: unknown, the report has no started_ms yet (issue 11)",
            "slowest single check: b (700 ms)",
        ]
    );
}
