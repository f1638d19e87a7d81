//! What ships for the continuous checks (ci/monitor, issue 12) is tested as the cluster and
//! Prometheus would take it: `kubectl kustomize` renders a safe Deployment under the hook's own
//! RBAC (renamed, never copied), a Service the ServiceMonitor really selects; the rule file
//! passes `promtool check rules`, `promtool test rules` proves when each alert fires and
//! resolves (and fails when a rule is weakened), the PrometheusRule carries the same rules; the
//! metrics contract (METRICS.md) and its example expositions agree and pass promtool's lint;
//! a real Prometheus scraping those examples fires and resolves the alerts; and one run sends
//! vLLM exactly the requests the cost note (README.md, Continuous checks) multiplies.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::deploy::{generated_rbac, kustomize, sorted};
use crate::harness::run_in;
use crate::support::litellm::{MAX_MODEL_LEN, alias, litellm_proxy};
use crate::support::postgres::Scenario as DbScenario;
use crate::support::prometheus::{
    FixedMetrics, Prometheus, ScrapeJob, check_metrics, promtool, wait_for,
};
use crate::support::stack::{self, Fault};

const PATIENCE: Duration = Duration::from_secs(60);
const RULES: &str = "ci/monitor/smokecheck.rules.yaml";
const ALERT_TESTS: &str = "ci/monitor/tests/alerts.test.yaml";
/// The kustomization's nameSuffix: serve's copy of the shared objects.
const SUFFIX: &str = "-serve";
const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    serde_saphyr::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn rendered() -> Vec<Value> {
    kustomize("ci/monitor")
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in ci/monitor");
    found[0]
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// Whether every label of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k] == *v))
}

#[test]
fn monitor_runs_under_the_hooks_rbac_renamed_never_copied() {
    // smokecheck rbac's objects, as the kustomization's nameSuffix renames them: every name,
    // every roleRef and every ServiceAccount subject gets the suffix, nothing else changes.
    let expected: Vec<Value> = serde_saphyr::from_multiple::<Value>(&generated_rbac())
        .expect("rbac yaml")
        .into_iter()
        .map(|mut doc| {
            let renamed = format!("{}{SUFFIX}", name(&doc));
            doc["metadata"]["name"] = Value::from(renamed);
            if let Some(role) = doc["roleRef"]["name"].as_str() {
                doc["roleRef"]["name"] = Value::from(format!("{role}{SUFFIX}"));
            }
            if let Some(subjects) = doc.get_mut("subjects").and_then(Value::as_array_mut) {
                for s in subjects
                    .iter_mut()
                    .filter(|s| s["kind"] == "ServiceAccount")
                {
                    let sa = s["name"].as_str().unwrap_or_default().to_string();
                    s["name"] = Value::from(format!("{sa}{SUFFIX}"));
                }
            }
            doc
        })
        .collect();
    let rbac: Vec<Value> = rendered()
        .into_iter()
        .filter(|d| RBAC_KINDS.iter().any(|k| d["kind"] == *k))
        .collect();
    assert_eq!(sorted(rbac), sorted(expected));
    // The monitor folder holds no RBAC of its own: only ../base's.
    for file in std::fs::read_dir(root().join("ci/monitor")).expect("ci/monitor") {
        let path = file.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("readable");
            assert!(
                !text.contains("rbac.authorization.k8s.io"),
                "{}: RBAC belongs in ci/base",
                path.display()
            );
        }
    }
}

#[test]
fn serve_deployment_is_non_root_read_only_limited_and_runs_the_shared_suite() {
    let docs = rendered();
    let deployment = one(&docs, "Deployment");
    assert_eq!(name(deployment), "smokecheck-serve");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 1, "a second replica doubles the chats");
    let pod = &spec["template"]["spec"];
    assert_eq!(
        pod["serviceAccountName"].as_str(),
        Some(name(one(&docs, "ServiceAccount")))
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(
        pod["securityContext"]["runAsUser"]
            .as_u64()
            .is_some_and(|u| u > 0)
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    for kind in ["requests", "limits"] {
        assert!(
            c["resources"][kind]["cpu"].is_string() && c["resources"][kind]["memory"].is_string(),
            "{kind}"
        );
    }
    assert_eq!(c["args"][0], "serve");
    // The probes and the Service reach the port by a name the container declares.
    let ports: Vec<&str> = c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for probe in ["livenessProbe", "readinessProbe"] {
        let port = c[probe]["httpGet"]["port"].as_str().expect("a named port");
        assert!(ports.contains(&port), "{probe} on {port}, ports {ports:?}");
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");

    // The suite: the shared ConfigMap (renamed with the rest), mounted where SMOKECHECK_SUITE
    // points, holding the default suite.
    let suite = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "SMOKECHECK_SUITE")
        .and_then(|e| e["value"].as_str())
        .expect("SMOKECHECK_SUITE");
    let mount = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| suite.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap_or("-"))))
        .expect("the suite's mount");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the suite's volume");
    let cm = one(&docs, "ConfigMap");
    assert_eq!(volume["configMap"]["name"].as_str(), Some(name(cm)));
    assert_eq!(name(cm), "smokecheck-suite-serve");
    let key = suite
        .rsplit('/')
        .next()
        .expect("a file name under the mount");
    assert_eq!(
        cm["data"][key].as_str(),
        Some(read("suites/litellm.yaml").as_str())
    );
}

#[test]
fn servicemonitor_selects_the_service_by_its_labels_and_port_name() {
    let docs = rendered();
    let service = one(&docs, "Service");
    let monitor = one(&docs, "ServiceMonitor");
    let deployment = one(&docs, "Deployment");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    let namespaces = monitor["spec"]["namespaceSelector"]["matchNames"]
        .as_array()
        .expect("matchNames");
    assert!(namespaces.contains(&service["metadata"]["namespace"]));
    let port_names: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| &p["name"])
        .collect();
    let endpoints = monitor["spec"]["endpoints"].as_array().expect("endpoints");
    assert!(!endpoints.is_empty());
    for e in endpoints {
        assert!(port_names.contains(&&e["port"]), "{e} vs {port_names:?}");
        assert_eq!(e["path"], "/metrics");
    }
    // The Service reaches serve's pods on the container's named port...
    let template = &deployment["spec"]["template"];
    assert!(selects(
        &service["spec"]["selector"],
        &template["metadata"]["labels"]
    ));
    let container_ports: Vec<&Value> = template["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .map(|p| &p["name"])
        .collect();
    for p in service["spec"]["ports"].as_array().expect("ports") {
        assert!(container_ports.contains(&&p["targetPort"]), "{p}");
    }
    // ...and never the hook's Job pods, which carry the same app name.
    let hook = yaml("ci/argocd/job.yaml");
    assert!(!selects(
        &service["spec"]["selector"],
        &hook["spec"]["template"]["metadata"]["labels"]
    ));
}

#[test]
fn the_rules_name_the_objects_the_kustomization_renders() {
    // The Prometheus Operator names a ServiceMonitor's job after the Service; the hints name
    // the Service and the Deployment as rendered.
    let docs = rendered();
    let service = name(one(&docs, "Service"));
    let deployment = name(one(&docs, "Deployment"));
    let rules = read(RULES);
    assert!(
        rules.contains(&format!("up{{job=\"{service}\"}}")),
        "{rules}"
    );
    assert!(rules.contains(&format!("svc/{service} ")), "{rules}");
    assert!(rules.contains(&format!("deploy/{deployment})")), "{rules}");
}

#[test]
fn prometheusrule_carries_exactly_the_rule_file() {
    let docs = rendered();
    let rule = one(&docs, "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        rule["spec"]["groups"],
        yaml(RULES)["groups"],
        "keep ci/monitor/prometheusrule.yaml's spec.groups equal to {RULES}"
    );
}

#[test]
fn promtool_accepts_the_shipped_rules() {
    let verdict = promtool(&["check", "rules", RULES], None, Some(root()));
    assert_eq!(verdict.code, Some(0), "{}", verdict.output());
    assert!(
        verdict.stdout.contains("SUCCESS: 4 rules found"),
        "{}",
        verdict.output()
    );
}

fn alert_names() -> Vec<String> {
    yaml(RULES)["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect()
}

#[test]
fn promtool_proves_when_each_alert_fires_and_resolves() {
    let verdict = promtool(&["test", "rules", ALERT_TESTS], None, Some(root()));
    assert_eq!(verdict.code, Some(0), "{}", verdict.output());
    assert!(verdict.stdout.contains("SUCCESS"), "{}", verdict.output());
    // Every alert is shown both firing and not firing.
    let tests = yaml(ALERT_TESTS);
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    for alert in alert_names() {
        let of: Vec<&&Value> = cases.iter().filter(|c| c["alertname"] == *alert).collect();
        let fires = of
            .iter()
            .any(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()));
        let quiet = of
            .iter()
            .any(|c| c["exp_alerts"].as_array().is_some_and(Vec::is_empty));
        assert!(
            fires && quiet,
            "{alert}: fires {fires}, shown quiet {quiet}"
        );
    }
}

/// Runs the alert tests against the rule file with `from` replaced by `to`.
fn alert_tests_against_mutated_rules(from: &str, to: &str) -> crate::support::prometheus::Promtool {
    let rules = read(RULES);
    assert!(rules.contains(from), "{from:?} is not in {RULES}");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("tests")).expect("tests dir");
    std::fs::write(
        dir.path().join("smokecheck.rules.yaml"),
        rules.replacen(from, to, 1),
    )
    .expect("mutated rules");
    std::fs::write(dir.path().join("tests/alerts.test.yaml"), read(ALERT_TESTS))
        .expect("tests copy");
    promtool(
        &["test", "rules", "tests/alerts.test.yaml"],
        None,
        Some(dir.path()),
    )
}

#[test]
fn the_alert_proofs_fail_when_a_rule_is_weakened() {
    // Each mutation is a plausible slip; the proofs must name the alert it breaks.
    for (from, to, alert) in [
        (
            "(smokecheck_check_consecutive_failures >= 2)",
            "(smokecheck_check_consecutive_failures >= 1)",
            "SmokecheckCheckFailing",
        ),
        (
            "group_left(cause)",
            "group_left()",
            "SmokecheckCheckFailing",
        ),
        (
            "> 3 * smokecheck_interval_seconds",
            "> 4 * smokecheck_interval_seconds",
            "SmokecheckStale",
        ),
        (
            "or smokecheck_start_time_seconds",
            "or vector(0)",
            "SmokecheckStale",
        ),
        ("for: 15m", "for: 5m", "SmokecheckServeDown"),
        (
            "e2e::chat::.+\"} > 5",
            "e2e::.+\"} > 5",
            "SmokecheckChatSlow",
        ),
        ("for: 10m", "for: 1m", "SmokecheckChatSlow"),
    ] {
        let verdict = alert_tests_against_mutated_rules(from, to);
        assert_eq!(
            verdict.code,
            Some(1),
            "{from} -> {to} went unnoticed: {}",
            verdict.output()
        );
        assert!(
            verdict.output().contains(&format!("alertname: {alert}")),
            "{from} -> {to}: {}",
            verdict.output()
        );
    }
}

/// The metric names of a table row of METRICS.md (`| \`smokecheck_...\` | ...`).
fn contract_names() -> BTreeSet<String> {
    read("ci/monitor/METRICS.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `smokecheck_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|n| format!("smokecheck_{n}"))
        .collect()
}

fn exposition_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

#[test]
fn metrics_contract_examples_pass_promtool_and_name_every_metric() {
    let contract = contract_names();
    assert!(contract.len() >= 15, "{contract:?}");
    for example in [
        "ci/monitor/tests/metrics-healthy.prom",
        "ci/monitor/tests/metrics-failing.prom",
    ] {
        let text = read(example);
        check_metrics(&text).unwrap_or_else(|p| panic!("{example}: {p:?}"));
        assert_eq!(exposition_names(&text), contract, "{example}");
    }
    // Every metric the alerts use is in the contract (the alerts' `up` is Prometheus' own).
    let rules = read(RULES);
    let re = regex::Regex::new(r"smokecheck_[a-z0-9_]+").expect("regex");
    for used in re.find_iter(&rules).map(|m| m.as_str()) {
        assert!(contract.contains(used), "{used} is not in METRICS.md");
    }
}

/// The example exposition as if its last run had ended `now`: every timestamp shifted alike.
fn as_if_just_ended(text: &str, now: f64) -> String {
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the example"))
    };
    let shift = now - value("smokecheck_last_run_timestamp_seconds");
    text.lines()
        .map(|l| {
            let metric = l.split(['{', ' ']).next().unwrap_or_default();
            let timestamp = !l.starts_with('#')
                && (metric.ends_with("_timestamp_seconds")
                    || metric == "smokecheck_start_time_seconds");
            match l.rsplit_once(' ') {
                Some((series, v)) if timestamp => {
                    let v: f64 = v.parse().expect("a timestamp");
                    format!("{series} {:.3}\n", v + shift)
                }
                _ => format!("{l}\n"),
            }
        })
        .collect()
}

#[test]
fn the_shipped_alerts_fire_and_resolve_in_a_real_prometheus() {
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
    };
    let failing = read("ci/monitor/tests/metrics-failing.prom");
    let healthy = read("ci/monitor/tests/metrics-healthy.prom");
    let serve = FixedMetrics::serve(&as_if_just_ended(&failing, now()));
    let prom = Prometheus::start_with_rules(
        &[ScrapeJob::new("smokecheck-serve", &[serve.addr()])],
        &[root().join(RULES)],
    );
    prom.wait_target_up("smokecheck-serve", PATIENCE);

    // After the second failing run: one alert per failing check, with its cause, none for the
    // passing or the skipped one; and the last success is 20 minutes old: stale.
    let failing_checks = wait_for(
        "SmokecheckCheckFailing firing for the three failing checks",
        PATIENCE,
        || prom.log_tail(20),
        || {
            let alerts = prom.alerts();
            let firing: BTreeSet<(String, String)> = alerts
                .iter()
                .filter(|a| a.name == "SmokecheckCheckFailing" && a.state == "firing")
                .map(|a| (a.labels["check"].clone(), a.labels["cause"].clone()))
                .collect();
            if firing.len() == 3 {
                Ok(firing)
            } else {
                Err(format!("{alerts:?}"))
            }
        },
    );
    let upstream = |check: &str| (check.to_string(), "upstream_auth".to_string());
    assert_eq!(
        failing_checks,
        BTreeSet::from([
            upstream("e2e::chat::gpt"),
            upstream("e2e::chat::gpt::stream"),
            upstream("vllm::models"),
        ])
    );
    let models = prom
        .alerts()
        .into_iter()
        .find(|a| a.name == "SmokecheckCheckFailing" && a.labels["check"] == "vllm::models")
        .expect("the vllm::models alert");
    assert_eq!(models.labels["severity"], "critical");
    assert_eq!(
        models.annotations["summary"],
        "smokecheck: vllm::models failed 2 runs in a row (upstream_auth)"
    );
    assert!(
        models.annotations["hint"].contains(r#"jq '.checks[] | select(.name == "vllm::models")'"#),
        "{models:?}"
    );
    let stale = prom.wait_alert("SmokecheckStale", "firing", PATIENCE);
    assert!(stale.value > 1100.0, "{stale:?}");

    // A passing run resolves both.
    serve.set(&as_if_just_ended(&healthy, now()));
    prom.wait_alert_gone("SmokecheckCheckFailing", PATIENCE);
    prom.wait_alert_gone("SmokecheckStale", PATIENCE);
}

#[test]
fn one_run_sends_vllm_the_requests_the_cost_note_counts() {
    // README.md (Continuous checks, "Cost") multiplies these by the runs per day: a check that starts
    // sending more must change the note. The alias's fake serves this test only, so it counts
    // exactly one run of the default suite (one vLLM backend, one guarded alias).
    let stack = stack::start(Fault {
        name: "serve-cost",
        scenario: "healthy",
        alias: alias::SERVE_COST,
        database: DbScenario::Migrated,
        what: "a healthy stack on an alias of its own",
        also_served: &[],
    });
    let fake = litellm_proxy().fake(alias::SERVE_COST);
    fake.clear_requests();
    let api_before = stack.fake.requests().len();
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = stack.suite.display().to_string();
    let run = run_in(
        dir,
        &stack.kubeconfig,
        &["--format", "json"],
        &["--suite", &suite],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.json()["summary"]["passed"], 32, "{}", run.stdout);
    // And the API server (the note's own line): one GET per object, one LIST per kind and
    // selector, whichever checks and port-forwards need them; port-forward streams apart (one
    // per connection from a laptop, as many as the HTTP clients open).
    let api: Vec<_> = stack.fake.requests().split_off(api_before);
    let (forwards, reads): (Vec<_>, Vec<_>) = api
        .iter()
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .partition(|r| r.contains("/portforward?"));
    let distinct: BTreeSet<&String> = reads.iter().collect();
    assert_eq!(distinct.len(), reads.len(), "a read made twice: {reads:#?}");
    assert_eq!(reads.len(), 31, "{reads:#?}");
    assert!(forwards.len() <= 16, "{forwards:#?}");

    let seen = fake.requests();
    let count = |path: &str| seen.iter().filter(|r| r.path == path).count();
    assert_eq!(count("/health"), 1, "{seen:#?}");
    // vllm::models; the trimming checks size their prompts by its answer (one read per run).
    assert_eq!(count("/v1/models"), 1, "{seen:#?}");
    let chats: Vec<_> = seen
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .collect();
    assert_eq!(chats.len(), 4, "{seen:#?}");
    // Three generate, each at most 5 tokens: the chat and the stream with a prompt of a few
    // words, the trimmed prompt filling the window.
    let generated: Vec<_> = chats.iter().filter(|r| r.status == 200).collect();
    assert_eq!(generated.len(), 3, "{chats:#?}");
    assert!(
        generated.iter().all(|r| r.max_tokens == Some(5)),
        "{chats:#?}"
    );
    let mut prompts: Vec<u32> = generated.iter().filter_map(|r| r.prompt_tokens).collect();
    prompts.sort_unstable();
    assert!(prompts[1] <= 10, "short prompts: {prompts:?}");
    assert!(
        prompts[2] > MAX_MODEL_LEN / 2 && prompts[2] <= MAX_MODEL_LEN - 5,
        "the trimmed prompt: {prompts:?}"
    );
    assert_eq!(generated.iter().filter(|r| r.stream).count(), 1);
    // The control: the untrimmed prompt straight to vLLM, refused before any generation.
    let refused: Vec<_> = chats.iter().filter(|r| r.status == 400).collect();
    assert_eq!(refused.len(), 1, "{chats:#?}");
    assert!(
        refused[0]
            .prompt_tokens
            .is_some_and(|p| p >= MAX_MODEL_LEN + 256)
    );
}
