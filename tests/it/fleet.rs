//! Fleet runs (`verify --fleet FILE`, repeated `--context`): several clusters checked at once,
//! each its own fake API server, one report. The proof: three whole stacks (healthy,
//! crash-loop, key mismatch) sharing the real LiteLLM and PostgreSQL each get the verdict their
//! scenario gives alone, and junitparser reads the merged JUnit with each cluster's counts.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::harness::{command, run_in};
use crate::junit_consumer;
use crate::support::fake_kube::{FakeKube, write_kubeconfig_file};
use crate::support::litellm::{MASTER_KEY, VLLM_KEY, alias};
use crate::support::stack::{self, Stack};

/// What a fleet run wrote.
struct FleetRun {
    code: i32,
    stdout: String,
    stderr: String,
    junit: Option<String>,
}

impl FleetRun {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The single-run report of cluster `name`.
    fn report(&self, name: &str) -> Value {
        let doc = self.json();
        doc["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .map(|c| c["report"].clone())
            .unwrap_or_else(|| panic!("no cluster {name} in {doc:#}"))
    }
}

/// `smokecheck verify --junit <dir>/junit.xml ARGS` in `dir`.
fn verify(dir: &Path, args: &[&str]) -> FleetRun {
    let junit = dir.join("junit.xml");
    let out = command()
        .arg("verify")
        .arg("--junit")
        .arg(&junit)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run smokecheck");
    FleetRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        junit: std::fs::read_to_string(&junit).ok(),
    }
}

/// Each check of a single-run document: name → (status, cause).
fn verdicts(report: &Value) -> BTreeMap<String, (String, String)> {
    report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                (
                    c["status"].as_str().unwrap_or_default().to_string(),
                    c["cause"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

/// A fleet file entry for a stack.
fn entry(name: &str, stack: &Stack) -> String {
    format!(
        "  - name: {name}\n    context: {}\n    kubeconfig: {}\n    suite: {}\n",
        stack.fake.context(),
        stack.kubeconfig.display(),
        stack.suite.display()
    )
}

/// The stack alone, as a single run: its document.
fn alone(stack: &Stack) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = stack.suite.display().to_string();
    let run = run_in(
        dir,
        &stack.kubeconfig,
        &["--format", "json"],
        &["--suite", &suite],
    );
    run.json()
}

#[test]
fn three_clusters_at_once_each_get_the_verdict_their_scenario_gives_alone() {
    let healthy = stack::start(stack::fault("healthy").expect("fault"));
    let crash = stack::start(stack::fault("crash-loop").expect("fault"));
    let mismatch = stack::start(stack::Fault {
        alias: alias::FLEET_KEY_MISMATCH,
        ..stack::fault("key-mismatch").expect("fault")
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(
        &fleet,
        format!(
            "version: 1\nclusters:\n{}{}{}",
            entry("healthy", &healthy),
            entry("crash-loop", &crash),
            entry("key-mismatch", &mismatch)
        ),
    )
    .expect("fleet file");
    let run = verify(
        dir.path(),
        &[
            "--fleet",
            fleet.to_str().expect("utf-8"),
            "--format",
            "json",
        ],
    );
    assert_eq!(
        run.code, 1,
        "a cluster failed: {}\n{}",
        run.stdout, run.stderr
    );
    let doc = run.json();
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["kind"], "fleet");
    let names: Vec<&str> = doc["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["healthy", "crash-loop", "key-mismatch"]);
    assert_eq!(
        doc["summary"]["clusters"],
        serde_json::json!({"passed": 1, "failed": 2, "not_checked": 0})
    );
    for (name, stack) in [
        ("healthy", &healthy),
        ("crash-loop", &crash),
        ("key-mismatch", &mismatch),
    ] {
        let c = doc["clusters"]
            .as_array()
            .expect("clusters")
            .iter()
            .find(|c| c["name"] == name)
            .expect("cluster");
        assert_eq!(c["context"], stack.fake.context().as_str());
        // Exactly a single run's document.
        assert_eq!(c["report"]["schema_version"], 1);
        assert_eq!(c["report"]["context"], stack.fake.context().as_str());
        assert!(c["report"]["summary"]["duration_ms"].is_u64(), "{c:#}");
    }

    // The healthy and crash-looping clusters: the same verdicts, check by check, as alone.
    for (name, stack) in [("healthy", &healthy), ("crash-loop", &crash)] {
        assert_eq!(
            verdicts(&run.report(name)),
            verdicts(&alone(stack)),
            "{name}: in the fleet and alone"
        );
    }
    let healthy_report = run.report("healthy");
    assert_eq!(healthy_report["summary"]["failed"], 0, "{healthy_report:#}");
    let crash_report = verdicts(&run.report("crash-loop"));
    assert_eq!(
        crash_report["kubernetes::pods::litellm"],
        ("failed".into(), "crash_loop".into())
    );
    // The rotated key (not run alone here: a 401 puts its alias into LiteLLM's cooldown, which
    // a second run would meet; its own alias, so no other test's does): what
    // tests/it/laptop.rs pins for the single run.
    let mismatch_report = verdicts(&run.report("key-mismatch"));
    for (check, cause) in [
        ("kubernetes::secrets::vllm-api-key", "key_mismatch"),
        ("vllm::models", "upstream_auth"),
        ("e2e::chat::fleet-key-mismatch", "upstream_auth"),
    ] {
        assert_eq!(
            mismatch_report[check],
            ("failed".into(), cause.into()),
            "{check}"
        );
    }
    assert_eq!(mismatch_report["database::connect"].0, "passed");

    // The merged JUnit, read as CI reads it: one testsuite per cluster and layer, each test
    // named after its cluster, each cluster's counts its own.
    let junit = run.junit.clone().expect("junit written");
    let parsed = junit_consumer::parse(&junit);
    let mut total = 0;
    for name in ["healthy", "crash-loop", "key-mismatch"] {
        let report = run.report(name);
        let checks = report["checks"].as_array().expect("checks");
        total += checks.len();
        let prefix = format!("{name}/");
        let cases: Vec<(&String, &Value)> = parsed["cases"]
            .as_object()
            .expect("cases")
            .iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .collect();
        assert_eq!(cases.len(), checks.len(), "{name}: tests");
        let count = |kind: &str| {
            cases
                .iter()
                .filter(|(_, c)| c["result"].get(0).and_then(Value::as_str) == Some(kind))
                .count()
        };
        assert_eq!(
            count("Failure") as u64,
            report["summary"]["failed"],
            "{name}: failures"
        );
        assert_eq!(
            count("Skipped") as u64,
            report["summary"]["skipped"],
            "{name}: skipped"
        );
        let suites: usize = parsed["suites"]
            .as_object()
            .expect("suites")
            .iter()
            .filter(|(s, _)| s.starts_with(&prefix))
            .map(|(_, n)| n.as_u64().unwrap_or(0) as usize)
            .sum();
        assert_eq!(
            suites,
            checks.len(),
            "{name}: its testsuites hold its tests"
        );
    }
    assert_eq!(parsed["tests"], total);
    assert_eq!(
        parsed["cases"]["crash-loop/kubernetes::pods::litellm"]["type"][0],
        "crash_loop"
    );
    assert!(parsed["suites"]["key-mismatch/e2e"].as_u64().unwrap_or(0) > 0);

    // No cluster's secret in any output.
    let all = format!("{}{}{junit}", run.stdout, run.stderr);
    for secret in [
        MASTER_KEY,
        VLLM_KEY,
        healthy.db.password.as_str(),
        crash.db.password.as_str(),
        mismatch.db.password.as_str(),
    ] {
        assert!(!all.contains(secret), "a secret leaked");
    }
}

/// A kubeconfig reaching an address that accepts connections and never answers: a TLS
/// handshake there waits until smokecheck's `--timeout`.
fn black_hole(dir: &Path, name: &str, fake: &FakeKube) -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let path = write_kubeconfig_file(
        &dir.join(format!("{name}.kubeconfig")),
        name,
        &url,
        fake.ca_pem(),
        "    token: never-sent\n",
    );
    (listener, path.display().to_string())
}

#[test]
fn an_unreachable_cluster_is_a_failed_setup_and_the_others_do_not_wait_for_it() {
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let (_hole, gone) = black_hole(dir.path(), "gone", &fake);
    let fleet = dir.path().join("fleet.yaml");
    // The unreachable cluster first: had the clusters run one after another, the reachable
    // one would end after it.
    std::fs::write(
        &fleet,
        format!(
            "version: 1\nclusters:\n  - name: gone\n    kubeconfig: {gone}\n  - name: up\n    kubeconfig: {}\n",
            kubeconfig.display()
        ),
    )
    .expect("fleet file");
    let junit = dir.path().join("junit.xml");
    let mut child = command()
        .arg("verify")
        .args(["--fleet", fleet.to_str().expect("utf-8")])
        .args(["--format", "plain", "--timeout", "20s", "--junit"])
        .arg(&junit)
        .args(["kubernetes::pods", "kubernetes::secrets"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    // Each cluster's live line as it ends, in the order they end (bounded by the output).
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    let status = child.wait().expect("wait");
    let text = lines.join("\n");
    assert_eq!(status.code(), Some(1), "{text}");
    let up = lines
        .iter()
        .position(|l| l.starts_with("PASS  up · context fake-healthy · "))
        .unwrap_or_else(|| panic!("no live line for up:\n{text}"));
    let gone_line = lines
        .iter()
        .position(|l| l.starts_with("ERROR gone") && l.contains("could not be checked ["))
        .unwrap_or_else(|| panic!("no live line for gone:\n{text}"));
    assert!(up < gone_line, "the reachable cluster ended first:\n{text}");
    // The matrix: a setup column where a cluster could not be checked.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("gone ") && l.trim_end().ends_with("0/1/0")),
        "{text}"
    );
    assert!(
        text.contains("FAILED 1 of 2 clusters passed, 0 failed, 1 not checked in "),
        "{text}"
    );
    assert!(text.contains("FAIL  smokecheck::setup"), "{text}");

    let parsed = junit_consumer::parse(&std::fs::read_to_string(&junit).expect("junit"));
    assert_eq!(parsed["suites"]["gone/setup"], 1, "{parsed:#}");
    let setup = &parsed["cases"]["gone/smokecheck::setup"];
    assert_eq!(setup["result"][0], "Error", "{setup}");
    assert!(
        parsed["suites"]["up/kubernetes"].as_u64().unwrap_or(0) > 0,
        "{parsed:#}"
    );
}

#[test]
fn no_cluster_reachable_exits_2_with_each_reported() {
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    let (_a, a) = black_hole(dir.path(), "a", &fake);
    let (_b, b) = black_hole(dir.path(), "b", &fake);
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(
        &fleet,
        format!("version: 1\nclusters:\n  - name: a\n    kubeconfig: {a}\n  - name: b\n    kubeconfig: {b}\n"),
    )
    .expect("fleet file");
    let run = verify(
        dir.path(),
        &[
            "--fleet",
            fleet.to_str().expect("utf-8"),
            "--format",
            "json",
            "--timeout",
            "2s",
        ],
    );
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(
        doc["summary"]["clusters"],
        serde_json::json!({"passed": 0, "failed": 0, "not_checked": 2})
    );
    for name in ["a", "b"] {
        let report = run.report(name);
        assert_eq!(report["checks"][0]["name"], "smokecheck::setup");
        assert_eq!(report["checks"][0]["status"], "failed");
        assert!(report["error"].is_string(), "{report:#}");
        assert!(
            run.stderr
                .lines()
                .any(|l| l.starts_with(&format!("error: {name}: "))),
            "{}",
            run.stderr
        );
    }
}

/// One kubeconfig with a context per fake API server, named as each fake names its own.
fn kubeconfig_of(path: &Path, fakes: &[&FakeKube]) {
    use base64::Engine as _;
    let mut clusters = String::new();
    let mut contexts = String::new();
    let mut users = String::new();
    for fake in fakes {
        let name = fake.context();
        let ca = base64::engine::general_purpose::STANDARD.encode(fake.ca_pem());
        clusters.push_str(&format!(
            "- name: {name}\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n",
            fake.url()
        ));
        contexts.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n"
        ));
        users.push_str(&format!(
            "- name: {name}\n  user:\n    token: {}\n",
            fake.token()
        ));
    }
    std::fs::write(
        path,
        format!("apiVersion: v1\nkind: Config\nclusters:\n{clusters}contexts:\n{contexts}users:\n{users}"),
    )
    .expect("kubeconfig");
}

#[test]
fn repeated_contexts_are_a_fleet_with_the_same_suite() {
    let healthy = FakeKube::start("healthy");
    let crash = FakeKube::start("crash-loop");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    kubeconfig_of(&kubeconfig, &[&healthy, &crash]);
    let run = verify(
        dir.path(),
        &[
            "--kubeconfig",
            kubeconfig.to_str().expect("utf-8"),
            "--context",
            "fake-healthy",
            "--context",
            "fake-crash-loop",
            "--format",
            "json",
            "kubernetes::pods",
        ],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["kind"], "fleet");
    let healthy_report = verdicts(&run.report("fake-healthy"));
    let crash_report = verdicts(&run.report("fake-crash-loop"));
    assert_eq!(healthy_report["kubernetes::pods::litellm"].0, "passed");
    assert_eq!(
        crash_report["kubernetes::pods::litellm"],
        ("failed".into(), "crash_loop".into())
    );
    assert_eq!(run.report("fake-crash-loop")["namespace"], "litellm");
}

#[test]
fn fleet_flags_that_cannot_hold_are_refused_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(
        &fleet,
        "version: 1\nclusters:\n  - name: a\n    context: a\n",
    )
    .expect("write");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "version: 1\nclusters:\n  - name: a\n    contxt: a\n",
    )
    .expect("write");
    let f = fleet.to_str().expect("utf-8");
    let b = broken.to_str().expect("utf-8");
    for (args, says) in [
        (
            vec!["--fleet", f, "--argocd-app", "argocd/litellm"],
            "--argocd-app: is for the PostSync hook of one cluster",
        ),
        (vec!["--fleet", f, "--cluster", "b"], "--cluster: "),
        (
            vec!["--cluster", "a"],
            "--cluster: selects clusters of a --fleet file",
        ),
        (
            vec!["--fleet", f, "--suite", "x.yaml"],
            "--suite: is set per cluster in the --fleet file",
        ),
        (
            vec!["--fleet", f, "--endpoint", "litellm=http://127.0.0.1:1"],
            "--endpoint: reaches one cluster's Service",
        ),
        (
            vec!["--context", "a", "--context", "a"],
            "--context: \"a\" is given twice",
        ),
        (
            vec!["--fleet", b],
            ":4:5: clusters[0].contxt: unknown field `contxt`",
        ),
    ] {
        let run = verify(dir.path(), &args);
        assert_eq!(run.code, 2, "{args:?}: {}\n{}", run.stdout, run.stderr);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {}", run.stderr);
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(says),
            "{args:?}: {}",
            run.stderr
        );
        // The JUnit report still says why nothing was checked.
        let junit = run.junit.expect("junit written");
        assert!(junit.contains("smokecheck::setup"), "{junit}");
    }
}

#[test]
fn list_names_each_clusters_checks_after_the_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(
        &fleet,
        "version: 1\nclusters:\n  - name: a\n    context: a\n  - name: b\n    context: b\n    namespace: other\n",
    )
    .expect("write");
    let out = Command::new(crate::harness::bin())
        .args(["verify", "--list", "--fleet"])
        .arg(&fleet)
        .arg("kubernetes::pods")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.lines().any(|l| l == "a/kubernetes::pods::litellm"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l == "b/kubernetes::pods::litellm"),
        "{stdout}"
    );
}
