//! What ships for the Argo CD hook (ci/argocd, with the RBAC and suite of ci/base, and
//! ci/Dockerfile) is tested against the code: the RBAC equals `smokecheck rbac`, the fake API
//! server enforcing it lets every check through and turns a missing rule into a 403, and the
//! image and Job reference what really exists. (ci/monitor's own tests: monitor.rs.)

use std::path::Path;

use serde_json::Value;

use crate::harness::{command, verify_json};
use crate::support::fake_kube::FakeKube;
use crate::support::process::run_bounded;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// `kubectl kustomize DIR` (kubectl has kustomize built in): the objects it renders.
pub fn kustomize(rel: &str) -> Vec<Value> {
    let mut cmd = std::process::Command::new("kubectl");
    cmd.arg("kustomize").arg(root().join(rel));
    let out = run_bounded(cmd, None, std::time::Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e} (ci/test provides kubectl)"));
    assert!(
        out.status.success(),
        "kubectl kustomize {rel}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{rel} renders YAML: {e}"))
}

/// Objects in a stable order (kind, namespace, name), for comparing sets of manifests.
pub fn sorted(mut docs: Vec<Value>) -> Vec<Value> {
    let key = |d: &Value| {
        (
            d["kind"].as_str().unwrap_or_default().to_string(),
            d["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    docs.sort_by_key(key);
    docs
}

pub fn generated_rbac() -> String {
    let out = command().arg("rbac").output().expect("smokecheck rbac");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn shipped_rbac_is_what_smokecheck_rbac_prints() {
    assert_eq!(
        read("ci/base/rbac.yaml"),
        generated_rbac(),
        "regenerate it: cargo run -- rbac > ci/base/rbac.yaml"
    );
}

#[test]
fn hook_kustomization_renders_the_shared_rbac_and_suite_with_its_job() {
    let rendered = kustomize("ci/argocd");
    let mut expected: Vec<Value> =
        serde_saphyr::from_multiple(&generated_rbac()).expect("rbac yaml");
    expected.push(serde_saphyr::from_str(&read("ci/base/suite-configmap.yaml")).expect("cm"));
    expected.push(job());
    assert_eq!(sorted(rendered), sorted(expected));
}

#[test]
fn every_check_passes_under_the_shipped_rbac() {
    let fake = FakeKube::start("healthy");
    fake.enforce_rbac(&read("ci/base/rbac.yaml"));
    let run = verify_json(&fake, &["kubernetes"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("forbidden"), "{}", run.stdout);
}

#[test]
fn a_missing_rule_shows_up_as_a_403_naming_it() {
    let fake = FakeKube::start("healthy");
    // Drop list on endpointslices from the first (litellm) Role.
    let rbac =
        read("ci/base/rbac.yaml").replacen("  - endpointslices\n", "  - endpointslicez\n", 1);
    fake.enforce_rbac(&rbac);
    let run = verify_json(&fake, &["kubernetes::services"]);
    assert_eq!(run.code, 1);
    let c = run.check("kubernetes::services::litellm");
    assert_eq!(c["cause"], "forbidden", "{c:#}");
    assert_eq!(
        c["summary"],
        "forbidden: cannot list endpointslices.discovery.k8s.io in namespace litellm"
    );
    assert!(c["hint"].as_str().unwrap_or_default().contains("{apiGroups: [\"discovery.k8s.io\"], resources: [\"endpointslices\"], verbs: [\"list\"]}"), "{c:#}");
    assert_eq!(
        run.check("kubernetes::services::vllm/vllm")["status"],
        "passed"
    );
}

#[test]
fn rbac_never_grants_list_on_secrets_or_writes() {
    let docs: Vec<Value> = serde_saphyr::from_multiple(&generated_rbac()).expect("yaml");
    for doc in docs
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
    {
        for rule in doc["rules"].as_array().expect("rules") {
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .expect("verbs")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(verbs.iter().all(|v| *v == "get" || *v == "list"), "{rule}");
            let resources: Vec<&str> = rule["resources"]
                .as_array()
                .expect("resources")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            if resources.contains(&"secrets") || resources.contains(&"namespaces") {
                assert_eq!(verbs, vec!["get"], "{rule}");
                assert!(
                    rule["resourceNames"]
                        .as_array()
                        .is_some_and(|n| !n.is_empty()),
                    "{rule}"
                );
            }
        }
    }
}

fn job() -> Value {
    serde_saphyr::from_str(&read("ci/argocd/job.yaml")).expect("job.yaml")
}

fn env_of(job: &Value, name: &str) -> Option<String> {
    job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(String::from))
}

#[test]
fn hook_job_is_a_safe_postsync_hook() {
    let job = job();
    let ann = &job["metadata"]["annotations"];
    assert_eq!(ann["argocd.argoproj.io/hook"], "PostSync");
    assert_eq!(
        ann["argocd.argoproj.io/hook-delete-policy"],
        "BeforeHookCreation"
    );
    let spec = &job["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    let deadline = spec["activeDeadlineSeconds"]
        .as_u64()
        .expect("activeDeadlineSeconds");
    assert_eq!(
        env_of(&job, "SMOKECHECK_JOB_ACTIVE_DEADLINE"),
        Some(format!("{deadline}s"))
    );
    assert_eq!(
        env_of(&job, "SMOKECHECK_ARGOCD_APP").as_deref(),
        Some("argocd/litellm")
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "smokecheck");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    for kind in ["requests", "limits"] {
        assert!(
            c["resources"][kind]["cpu"].is_string() && c["resources"][kind]["memory"].is_string(),
            "{kind}"
        );
    }
    // The suite comes from the ConfigMap, mounted where SMOKECHECK_SUITE points.
    let suite_path = env_of(&job, "SMOKECHECK_SUITE").expect("SMOKECHECK_SUITE");
    let mount = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == "suite")
        .expect("suite mount");
    let dir = mount["mountPath"].as_str().expect("mountPath");
    let key = suite_path
        .strip_prefix(&format!("{dir}/"))
        .expect("suite under its mount");
    let cm: Value =
        serde_saphyr::from_str(&read("ci/base/suite-configmap.yaml")).expect("configmap");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "suite")
        .expect("suite volume");
    assert_eq!(volume["configMap"]["name"], cm["metadata"]["name"]);
    assert_eq!(
        cm["data"][key].as_str(),
        Some(read("suites/litellm.yaml").as_str()),
        "keep ci/base/suite-configmap.yaml equal to suites/litellm.yaml"
    );
    // The JUnit file goes to a writable emptyDir, not the read-only root.
    let args = c["args"].as_array().expect("args");
    let junit = args
        .iter()
        .skip_while(|a| *a != "--junit")
        .nth(1)
        .and_then(Value::as_str)
        .expect("--junit PATH");
    assert!(
        c["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| junit.starts_with(m["mountPath"].as_str().unwrap_or("-"))),
        "{junit}"
    );
    let rbac = generated_rbac();
    assert!(rbac.contains("kind: ServiceAccount") && rbac.contains("name: smokecheck"));
}

#[test]
fn dockerfile_copies_what_exists_and_ships_the_package_binary() {
    let text = read("ci/Dockerfile");
    let mut saw_binary = false;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("COPY "))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.iter().any(|p| p.starts_with("--from=")) {
            let src = parts[2];
            assert_eq!(
                src,
                format!("/src/target/release/{}", env!("CARGO_PKG_NAME")),
                "{line}"
            );
            assert!(
                Path::new(env!("CARGO_BIN_EXE_smokecheck"))
                    .file_name()
                    .is_some_and(|n| n == "smokecheck")
            );
            saw_binary = true;
            continue;
        }
        for src in &parts[1..parts.len() - 1] {
            assert!(root().join(src).exists(), "{line}: {src} does not exist");
        }
    }
    assert!(saw_binary, "the runtime stage copies the binary");
    assert!(text.contains("--bin smokecheck"));
    assert!(
        text.contains("distroless") && text.contains("nonroot"),
        "distroless, non-root runtime"
    );
    assert!(text.contains("USER 65532"));
    let ignore = read(".dockerignore");
    assert!(
        ignore.lines().any(|l| l == "target"),
        ".dockerignore keeps target/ out of the context"
    );
}

#[test]
fn jq_example_reads_the_json_report() {
    let fake = FakeKube::start("key-mismatch");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_smokecheck"))
        .parent()
        .expect("bin dir");
    let out = std::process::Command::new(root().join("ci/examples/json-with-jq.sh"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("KUBECONFIG")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("kubernetes::secrets")
        .output()
        .expect("run the jq example (jq is installed by ci/test)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("kubernetes::secrets::vllm-api-key [key_mismatch]: litellm/litellm-secrets CA_VLLM_LOCAL_API_KEY and vllm/vllm-secrets VLLM_API_KEY differ"), "{stdout}");
    assert!(stdout.contains("3 passed, 1 failed, 0 skipped"), "{stdout}");
    assert!(stderr.contains("vLLM key coupling broken"), "{stderr}");
}

#[test]
fn a_missing_namespace_rule_is_named_as_a_clusterrole_rule() {
    let fake = FakeKube::start("healthy");
    let rbac = read("ci/base/rbac.yaml").replace("  - namespaces\n", "  - namespacez\n");
    fake.enforce_rbac(&rbac);
    let run = verify_json(&fake, &["platform::namespace"]);
    let c = run.check("platform::namespace");
    assert_eq!(c["cause"], "forbidden", "{c:#}");
    assert_eq!(c["summary"], "forbidden: cannot get namespaces/litellm");
    assert!(
        c["hint"]
            .as_str()
            .unwrap_or_default()
            .starts_with("the identity smokecheck runs as lacks a ClusterRole rule"),
        "{c:#}"
    );
}

const APPSET: &str = "ci/examples/applicationset.yaml";
const SPOKE_HOOK: &str = "ci/examples/applicationset-hook";

/// Fills the cluster generator's parameters into a template string, as Argo CD would.
fn for_cluster(template: &str, cluster: &str) -> String {
    let filled = template.replace("{{ .name }}", cluster).replace(
        "{{ .server }}",
        &format!("https://{cluster}.example.com:6443"),
    );
    assert!(
        !filled.contains("{{"),
        "a parameter left unfilled: {filled}"
    );
    filled
}

/// What Argo CD renders for the hook source of the ApplicationSet for `cluster`: the source's
/// folder with its inline kustomize patches (from a kustomization of our own that includes
/// the folder, as Argo CD does).
fn hook_rendered_for(source: &Value, cluster: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("temp dir");
    // Kustomize takes no absolute paths: reach the folder from the temp dir through `/`.
    let up = "../".repeat(dir.path().components().count() - 1);
    let folder = root().join(source["path"].as_str().expect("path"));
    let folder = format!(
        "{up}{}",
        folder.display().to_string().trim_start_matches('/')
    );
    let patches: Vec<Value> = source["kustomize"]["patches"]
        .as_array()
        .expect("patches")
        .iter()
        .map(|p| {
            let mut p = p.clone();
            let text = for_cluster(p["patch"].as_str().expect("patch"), cluster);
            p["patch"] = Value::from(text);
            p
        })
        .collect();
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [folder],
        "patches": patches,
    });
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        kustomization.to_string(),
    )
    .expect("writing the kustomization");
    let mut cmd = std::process::Command::new("kubectl");
    cmd.arg("kustomize").arg(dir.path());
    let out = run_bounded(cmd, None, std::time::Duration::from_secs(60)).expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).expect("yaml")
}

#[test]
fn applicationset_gives_each_cluster_an_application_whose_hook_names_it() {
    let set: Value = serde_saphyr::from_str(&read(APPSET)).expect("applicationset");
    assert_eq!(set["apiVersion"], "argoproj.io/v1alpha1");
    assert_eq!(set["kind"], "ApplicationSet");
    let generators = set["spec"]["generators"].as_array().expect("generators");
    assert!(
        generators.iter().all(|g| g.get("clusters").is_some()),
        "a cluster generator: {generators:?}"
    );
    let template = &set["spec"]["template"];
    let name = template["metadata"]["name"].as_str().expect("name");
    assert!(
        name.contains("{{ .name }}"),
        "one Application per cluster: {name}"
    );
    let spec = &template["spec"];
    assert_eq!(spec["destination"]["server"], "{{ .server }}");
    // Every cluster's overrides are its own.
    for source in spec["sources"].as_array().expect("sources") {
        let text = source.to_string();
        if text.contains("clusters/") {
            assert!(text.contains("clusters/{{ .name }}/"), "{source}");
        }
    }
    let hook = spec["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["path"] == SPOKE_HOOK)
        .expect("the hook's source");

    let mut apps = Vec::new();
    for cluster in ["muni-a", "muni-b"] {
        let objects = hook_rendered_for(hook, cluster);
        let job = objects
            .iter()
            .find(|o| o["kind"] == "Job")
            .expect("the hook Job");
        assert_eq!(
            job["metadata"]["annotations"]["argocd.argoproj.io/hook"],
            "PostSync"
        );
        // The hook runs where the Application deploys LiteLLM, and names that Application.
        assert_eq!(
            job["metadata"]["namespace"],
            spec["destination"]["namespace"]
        );
        let app = format!(
            "{}/{}",
            set["metadata"]["namespace"].as_str().expect("namespace"),
            for_cluster(name, cluster)
        );
        assert_eq!(env_of(job, "SMOKECHECK_ARGOCD_APP"), Some(app.clone()));
        // Nothing else of the hook changes.
        let mut unpatched = job.clone();
        let env = unpatched["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .expect("env");
        for e in env
            .iter_mut()
            .filter(|e| e["name"] == "SMOKECHECK_ARGOCD_APP")
        {
            e["value"] = Value::from("argocd/litellm");
        }
        assert_eq!(unpatched, self::job());
        apps.push(app);
    }
    assert_ne!(apps[0], apps[1]);
}

#[test]
fn applicationset_hook_is_the_argocd_hook_for_a_cluster_without_argo_cd() {
    let suite_path = format!("{SPOKE_HOOK}/litellm.yaml");
    let suite = read(&suite_path);
    // The default suite, minus the Argo CD Application (the central Argo CD is not here).
    let mut expected: Value = serde_saphyr::from_str(&read("suites/litellm.yaml")).expect("suite");
    expected["platform"]["argocd"] = Value::Null;
    let spoke: Value = serde_saphyr::from_str(&suite).expect("spoke suite");
    assert_eq!(spoke, expected, "keep {suite_path} the default suite");
    assert_eq!(spoke["namespace"], job()["metadata"]["namespace"]);

    let rendered = kustomize(SPOKE_HOOK);
    assert!(
        rendered
            .iter()
            .all(|o| o["metadata"]["namespace"] != "argocd"),
        "the cluster has no namespace argocd"
    );
    let out = command()
        .args(["rbac", "--suite"])
        .arg(root().join(&suite_path))
        .output()
        .expect("smokecheck rbac");
    assert_eq!(out.status.code(), Some(0));
    let mut expected: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).expect("rbac");
    let mut cm: Value =
        serde_saphyr::from_str(&read("ci/base/suite-configmap.yaml")).expect("configmap");
    cm["data"]["litellm.yaml"] = Value::from(suite);
    expected.push(cm);
    expected.push(job());
    assert_eq!(sorted(rendered), sorted(expected));
}
