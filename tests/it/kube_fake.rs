//! Fidelity of the fake Kubernetes API server: real kubectl (and kube-rs) must read every scenario
//! object back from it, get the apiserver's own error texts, and the scenarios must be internally
//! consistent (a pod's readiness agrees with its EndpointSlice endpoints).
//!
//! kubectl is required: without it these tests fail, because a skipped fidelity test would let the
//! fake drift from what a real apiserver does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::fake_kube::{
    FakeKube, RESOURCES, Scenario, installed, load_scenario, scenario_names, str_at,
};

/// kubectl pointed at one kubeconfig, with its own discovery cache.
struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn new(kubeconfig: PathBuf, dir: &Path) -> Kubectl {
        Kubectl {
            kubeconfig,
            cache: dir.join("kube-cache"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.cache.parent().unwrap_or(Path::new("/tmp")));
        match cmd.output() {
            Ok(out) => out,
            Err(e) => panic!(
                "running kubectl failed ({e}): the fake-kube fidelity tests need kubectl on PATH \
                 (ci/test installs it when missing); they never skip"
            ),
        }
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\nstdout: {}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn start(scenario: &str) -> (FakeKube, tempfile::TempDir, Kubectl) {
    let kube = FakeKube::start(scenario);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubectl = Kubectl::new(kube.write_kubeconfig(dir.path()), dir.path());
    (kube, dir, kubectl)
}

/// `pods` or `deployments.apps`: how kubectl names an object's resource type unambiguously.
fn resource_arg(object: &Value) -> String {
    let api_version = str_at(object, "/apiVersion").unwrap_or_default();
    let kind = str_at(object, "/kind").unwrap_or_default();
    let rt = RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
        .unwrap_or_else(|| panic!("the fake serves no {api_version} {kind}"));
    if rt.group.is_empty() {
        rt.plural.to_string()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    }
}

/// Reads every object back with `kubectl get -o json` (discovery cache warmed once, then a few
/// threads); returns how each one that does not come back unchanged differs.
fn read_back(kubectl: &Kubectl, objects: &[Value]) -> Vec<String> {
    kubectl.ok(&["api-resources", "-o", "name"]);
    std::thread::scope(|s| {
        let chunks: Vec<&[Value]> = objects.chunks(objects.len().div_ceil(4).max(1)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    let mut failures = Vec::new();
                    for object in chunk {
                        let resource = resource_arg(object);
                        let name = str_at(object, "/metadata/name").unwrap_or_default();
                        let mut args = vec!["get", resource.as_str(), name, "-o", "json"];
                        if let Some(ns) = str_at(object, "/metadata/namespace") {
                            args.extend(["-n", ns]);
                        }
                        let out = kubectl.run(&args);
                        if !out.status.success() {
                            failures.push(format!(
                                "kubectl {args:?}: {}",
                                String::from_utf8_lossy(&out.stderr)
                            ));
                            continue;
                        }
                        let got: Value = serde_json::from_slice(&out.stdout)
                            .unwrap_or_else(|e| panic!("kubectl {args:?} printed no JSON: {e}"));
                        if &got != object {
                            failures.push(format!(
                                "kubectl {args:?} printed a different object:\n got: {got}\nwant: {object}"
                            ));
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a kubectl thread panicked"))
            .collect()
    })
}

#[test]
fn kubectl_gets_every_healthy_object_back_unchanged() {
    let (kube, _dir, kubectl) = start("healthy");
    let objects = kube.scenario().objects.clone();
    assert!(
        objects.len() > 30,
        "healthy scenario looks truncated: {} objects",
        objects.len()
    );
    let failures = read_back(&kubectl, &objects);
    assert!(
        failures.is_empty(),
        "{} objects differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // kubectl asked for aggregated discovery and fell back to the legacy documents.
    let paths: BTreeSet<String> = kube.requests().into_iter().map(|r| r.path).collect();
    for path in [
        "/api",
        "/apis",
        "/api/v1",
        "/apis/postgresql.cnpg.io/v1",
        "/apis/apps/v1",
    ] {
        assert!(
            paths.contains(path),
            "kubectl never fetched {path}; it fetched {paths:?}"
        );
    }
}

#[test]
fn kubectl_label_and_field_selectors_are_evaluated_by_the_server() {
    let (kube, _dir, kubectl) = start("healthy");
    let names = kubectl.ok(&[
        "get",
        "pods",
        "-n",
        "litellm",
        "-l",
        "app.kubernetes.io/name=litellm",
        "-o",
        "name",
    ]);
    let want: Vec<String> = kube
        .scenario()
        .of_kind("Pod")
        .filter(|p| str_at(p, "/metadata/labels/app.kubernetes.io~1name") == Some("litellm"))
        .map(|p| format!("pod/{}", str_at(p, "/metadata/name").unwrap_or_default()))
        .collect();
    assert_eq!(want.len(), 2, "healthy has two LiteLLM pods");
    assert_eq!(names.lines().collect::<Vec<_>>(), want);
    let selector_sent = kube.requests().iter().any(|r| {
        r.path == "/api/v1/namespaces/litellm/pods"
            && r.param("labelSelector").as_deref() == Some("app.kubernetes.io/name=litellm")
    });
    assert!(
        selector_sent,
        "kubectl did not send the label selector: {:?}",
        kube.requests()
    );

    let set_based = kubectl.ok(&[
        "get",
        "pods",
        "-n",
        "litellm",
        "-l",
        "cnpg.io/cluster,role notin (primary),!job-name",
        "-o",
        "name",
    ]);
    assert_eq!(set_based.trim(), "pod/cloudnative-pg-cluster-2");

    let succeeded = kubectl.ok(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        "status.phase=Succeeded",
        "-o",
        "name",
    ]);
    assert_eq!(succeeded.trim(), "pod/litellm-migrations-hx7kd");

    let err = kubectl.fails(&[
        "get",
        "pods",
        "-n",
        "litellm",
        "--field-selector",
        "spec.bogus=x",
    ]);
    assert!(
        err.contains("field label not supported: spec.bogus"),
        "{err}"
    );
}

#[test]
fn kubectl_logs_previous_tail_of_a_crash_looping_pod() {
    let (kube, _dir, kubectl) = start("crash-loop");
    let pod = "litellm-7c9d8f6b5d-9mzt7";
    let previous = kube
        .scenario()
        .log("litellm", pod, "litellm", true)
        .expect("crash-loop has a previous log")
        .to_string();
    let out = kubectl.ok(&[
        "logs",
        "-n",
        "litellm",
        "--previous",
        "--tail=5",
        "-c",
        "litellm",
        pod,
    ]);
    let lines: Vec<&str> = previous.lines().collect();
    let want = lines[lines.len() - 5..].join("\n") + "\n";
    assert_eq!(out, want);
    assert!(
        out.contains("ModuleNotFoundError: No module named 'custom_guardrails'"),
        "{out}"
    );
    let call = kube
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/log"))
        .expect("kubectl made a log request");
    assert_eq!(
        call.path,
        format!("/api/v1/namespaces/litellm/pods/{pod}/log")
    );
    assert_eq!(call.param("previous").as_deref(), Some("true"));
    assert_eq!(call.param("tailLines").as_deref(), Some("5"));
    assert_eq!(call.param("container").as_deref(), Some("litellm"));

    let current = kubectl.ok(&["logs", "-n", "litellm", pod]);
    assert_eq!(
        Some(current.as_str()),
        kube.scenario().log("litellm", pod, "litellm", false)
    );
}

/// kubectl pages through lists (`--chunk-size`, `limit`/`continue`) and cuts logs with
/// `--limit-bytes` as a real apiserver serves them: the pages add up to the unpaged list, and
/// the log is the first bytes of the tail.
#[test]
fn kubectl_pages_through_lists_and_limits_log_bytes() {
    let (kube, _dir, kubectl) = start("crash-loop");
    let all = kubectl.ok(&["get", "pods", "-A", "-o", "name"]);
    let count = all.lines().count();
    assert!(
        count > 4,
        "crash-loop has pods in several namespaces: {all}"
    );
    let chunked = kubectl.ok(&["get", "pods", "-A", "-o", "name", "--chunk-size=2"]);
    assert_eq!(chunked, all);
    let pages = kube
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/pods" && r.param("limit").as_deref() == Some("2"))
        .collect::<Vec<_>>();
    assert_eq!(pages.len(), count.div_ceil(2), "{pages:?}");
    assert!(pages[0].param("continue").is_none());
    assert!(pages[1..].iter().all(|p| p.param("continue").is_some()));
    let selected = kubectl.ok(&[
        "get",
        "pods",
        "-n",
        "litellm",
        "-l",
        "app.kubernetes.io/name=litellm",
        "-o",
        "name",
        "--chunk-size=1",
    ]);
    assert_eq!(selected.lines().count(), 2, "{selected}");

    let pod = "litellm-7c9d8f6b5d-9mzt7";
    let previous = kube
        .scenario()
        .log("litellm", pod, "litellm", true)
        .expect("crash-loop has a previous log")
        .to_string();
    let head = kubectl.ok(&[
        "logs",
        "-n",
        "litellm",
        "--previous",
        "--limit-bytes=100",
        pod,
    ]);
    assert_eq!(head, previous[..100]);
    let lines: Vec<&str> = previous.lines().collect();
    let tail = lines[lines.len() - 3..].join("\n") + "\n";
    let cut = kubectl.ok(&[
        "logs",
        "-n",
        "litellm",
        "--previous",
        "--tail=3",
        "--limit-bytes=20",
        pod,
    ]);
    assert_eq!(cut, tail[..20]);
}

#[test]
fn kubectl_log_errors_are_the_apiservers() {
    let (_kube, _dir, kubectl) = start("healthy");
    let pod = "litellm-7c9d8f6b5d-4xk2p";
    let err = kubectl.fails(&["logs", "-n", "litellm", "--previous", pod]);
    assert!(
        err.contains(&format!(
            "previous terminated container \"litellm\" in pod \"{pod}\" not found"
        )),
        "{err}"
    );
    let err = kubectl.fails(&["logs", "-n", "litellm", "-c", "nope", pod]);
    assert!(
        err.contains(&format!("container nope is not valid for pod {pod}")),
        "{err}"
    );
    let err = kubectl.fails(&["logs", "-n", "litellm", "no-such-pod"]);
    assert!(err.contains("pods \"no-such-pod\" not found"), "{err}");

    let (_kube, _dir, kubectl) = start("image-pull");
    let err = kubectl.fails(&["logs", "-n", "litellm", pod]);
    assert!(
        err.contains(&format!(
            "container \"litellm\" in pod \"{pod}\" is waiting to start: trying and failing to pull image"
        )),
        "{err}"
    );
}

#[test]
fn kubectl_prints_the_forbidden_and_not_found_texts() {
    let (_kube, _dir, kubectl) = start("rbac-forbidden");
    let err = kubectl.fails(&["get", "pods", "-n", "litellm"]);
    assert!(
        err.contains(
            "Error from server (Forbidden): pods is forbidden: User \"system:serviceaccount:litellm:smokecheck\" \
             cannot list resource \"pods\" in API group \"\" in the namespace \"litellm\""
        ),
        "{err}"
    );
    let err = kubectl.fails(&["get", "secret", "litellm-secrets", "-n", "litellm"]);
    assert!(
        err.contains(
            "Error from server (Forbidden): secrets \"litellm-secrets\" is forbidden: User \
             \"system:serviceaccount:litellm:smokecheck\" cannot get resource \"secrets\" in API group \"\" in the namespace \"litellm\""
        ),
        "{err}"
    );
    // What is not forbidden still works.
    kubectl.ok(&[
        "get",
        "pod",
        "litellm-7c9d8f6b5d-4xk2p",
        "-n",
        "litellm",
        "-o",
        "name",
    ]);
    kubectl.ok(&["get", "secrets", "-n", "vllm", "-o", "name"]);

    let err = kubectl.fails(&["get", "pod", "nope", "-n", "litellm"]);
    assert!(
        err.contains("Error from server (NotFound): pods \"nope\" not found"),
        "{err}"
    );
    let err = kubectl.fails(&[
        "get",
        "clusters.postgresql.cnpg.io",
        "nope",
        "-n",
        "litellm",
    ]);
    assert!(
        err.contains(
            "Error from server (NotFound): clusters.postgresql.cnpg.io \"nope\" not found"
        ),
        "{err}"
    );
}

#[test]
fn kubectl_is_refused_with_a_wrong_token() {
    let (kube, dir, kubectl) = start("healthy");
    let config = std::fs::read_to_string(&kubectl.kubeconfig).expect("reading the kubeconfig");
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, config.replace(kube.token(), "not-the-token"))
        .expect("writing a kubeconfig");
    let err = Kubectl::new(wrong, dir.path()).fails(&["get", "pods", "-n", "litellm"]);
    assert!(err.contains("You must be logged in to the server"), "{err}");
    // Without any credentials kubectl prompts for a username (and reads EOF); kube-rs sends the
    // request anonymously: see kube_rs_reads_typed_objects_and_errors.
}

#[test]
fn kubectl_with_an_exec_credential_plugin_kubeconfig() {
    let kube = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubectl = Kubectl::new(kube.write_kubeconfig_exec(dir.path()), dir.path());
    let out = kubectl.ok(&["get", "namespaces", "-o", "name"]);
    assert_eq!(
        out,
        "namespace/argocd\nnamespace/cnpg-system\nnamespace/kube-system\nnamespace/litellm\nnamespace/vllm\n"
    );
    let context = kubectl.ok(&["config", "current-context"]);
    assert_eq!(context.trim(), "fake-healthy");
}

#[test]
fn kubectl_api_resources_lists_installed_crds_only() {
    let (_kube, _dir, kubectl) = start("healthy");
    let all = kubectl.ok(&["api-resources", "-o", "name"]);
    for name in [
        "clusters.postgresql.cnpg.io",
        "sealedsecrets.bitnami.com",
        "applications.argoproj.io",
        "endpointslices.discovery.k8s.io",
        "jobs.batch",
        "pods",
    ] {
        assert!(
            all.lines().any(|l| l == name),
            "api-resources lacks {name}:\n{all}"
        );
    }

    let (kube, _dir, kubectl) = start("cnpg-not-installed");
    let all = kubectl.ok(&["api-resources", "-o", "name"]);
    assert!(
        !all.contains("postgresql.cnpg.io"),
        "cnpg still served:\n{all}"
    );
    assert!(
        all.lines().any(|l| l == "sealedsecrets.bitnami.com"),
        "{all}"
    );
    let err = kubectl.fails(&["get", "clusters.postgresql.cnpg.io", "-n", "litellm"]);
    assert!(
        err.contains("the server doesn't have a resource type"),
        "{err}"
    );
    // A real apiserver's mux answers unknown group paths with plain text.
    assert!(
        kube.requests()
            .iter()
            .all(|r| !r.path.starts_with("/apis/postgresql.cnpg.io"))
    );
}

/// What issue 14's checks will read, where the scenarios hold it: Ingresses and IngressClasses
/// (`networking.k8s.io/v1`), TLS Secrets with their generated certificates, Traefik's
/// IngressRoute in both API groups, and pods whose restart times were filled in at load.
#[test]
fn kubectl_gets_every_ingress_and_warning_object_back_unchanged() {
    for scenario in [
        "ingress-healthy",
        "ingress-tls-secret-wrong-type",
        "ingressroute-acme",
        "ingressroute-containo-us",
        "pod-restarted-recently",
        "pod-oom-killed",
    ] {
        let (kube, _dir, kubectl) = start(scenario);
        let objects: Vec<Value> = kube
            .scenario()
            .objects
            .iter()
            .filter(|o| match str_at(o, "/kind") {
                Some("Ingress" | "IngressClass" | "IngressRoute") => true,
                Some("Secret") => str_at(o, "/metadata/name") == Some("litellm-tls"),
                Some("Pod") => str_at(o, "/metadata/name") == Some("litellm-7c9d8f6b5d-4xk2p"),
                _ => false,
            })
            .cloned()
            .collect();
        assert!(!objects.is_empty(), "{scenario}: none of its objects");
        let failures = read_back(&kubectl, &objects);
        assert!(failures.is_empty(), "{scenario}:\n{}", failures.join("\n"));
    }
    // Lists, as the checks will make them (kind and apiVersion on the list; a CRD's items keep
    // theirs, a built-in type's do not).
    let (_kube, _dir, kubectl) = start("ingressroute-containo-us");
    let list: Value = serde_json::from_str(&kubectl.ok(&[
        "get",
        "ingressroutes.traefik.containo.us,ingresses,secrets",
        "-n",
        "litellm",
        "-o",
        "json",
    ]))
    .expect("a JSON list");
    let kinds: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| str_at(i, "/kind"))
        .collect();
    assert!(kinds.contains(&"IngressRoute"), "{kinds:?}");
    let (_kube, _dir, kubectl) = start("pod-restarted-recently");
    let previous = kubectl.ok(&[
        "logs",
        "-n",
        "litellm",
        "--previous",
        "litellm-7c9d8f6b5d-4xk2p",
    ]);
    assert!(previous.contains("POST /v1/chat/completions"), "{previous}");
}

#[test]
fn kubectl_sees_traefiks_crds_only_where_a_scenario_installs_them() {
    for (scenario, v3, v2) in [
        ("ingress-healthy", false, false),
        ("ingressroute-acme", true, false),
        ("ingressroute-containo-us", false, true),
    ] {
        let (_kube, _dir, kubectl) = start(scenario);
        let all = kubectl.ok(&["api-resources", "-o", "name"]);
        let has = |name: &str| all.lines().any(|l| l == name);
        for name in [
            "ingresses.networking.k8s.io",
            "ingressclasses.networking.k8s.io",
        ] {
            assert!(has(name), "{scenario}: api-resources lacks {name}:\n{all}");
        }
        for (group, installed) in [("traefik.io", v3), ("traefik.containo.us", v2)] {
            for kind in ["ingressroutes", "middlewares", "tlsoptions"] {
                let name = format!("{kind}.{group}");
                assert_eq!(has(&name), installed, "{scenario}: {name}:\n{all}");
            }
            let resource = format!("ingressroutes.{group}");
            if installed {
                let names = kubectl.ok(&["get", &resource, "-n", "litellm", "-o", "name"]);
                assert_eq!(names.trim(), format!("ingressroute.{group}/litellm"));
            } else {
                let err = kubectl.fails(&["get", &resource, "-n", "litellm"]);
                assert!(
                    err.contains("the server doesn't have a resource type"),
                    "{err}"
                );
            }
        }
    }
}

/// kube-rs reads the Ingress, IngressClass and TLS Secret as typed objects, field for field
/// (serde drops a field the API does not have, so a misspelt one comes back missing), and its
/// discovery finds Traefik's IngressRoute (no status subresource, as Traefik's CRD declares).
#[test]
fn kube_rs_reads_ingress_objects_typed_and_discovers_ingress_routes() {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
    use kube::api::{Api, DynamicObject};

    for scenario in ["ingress-healthy", "ingressroute-acme"] {
        let kube_fake = FakeKube::start(scenario);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = kube_fake.write_kubeconfig(dir.path());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let want = |kind: &str, ns: Option<&str>, name: &str| {
            kube_fake.scenario().object(kind, ns, name).clone()
        };
        runtime.block_on(async {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(&path).expect("reading the kubeconfig");
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .expect("a kube config");
            let client = kube::Client::try_from(config).expect("a kube client");
            let classes: Api<IngressClass> = Api::all(client.clone());
            let class = classes.get("traefik").await.expect("the IngressClass");
            assert_eq!(
                serde_json::to_value(&class).expect("serializes"),
                want("IngressClass", None, "traefik")
            );
            let discovery = kube::Discovery::new(client.clone())
                .run()
                .await
                .expect("discovery");
            let ingress = discovery
                .get("networking.k8s.io")
                .and_then(|g| g.recommended_kind("Ingress"))
                .expect("networking.k8s.io/v1 Ingress");
            assert!(
                ingress
                    .1
                    .subresources
                    .iter()
                    .any(|(r, _)| r.plural == "ingresses/status" || r.plural == "status"),
                "{:?}",
                ingress.1
            );
            if scenario == "ingress-healthy" {
                let ingresses: Api<Ingress> = Api::namespaced(client.clone(), "litellm");
                let list = ingresses
                    .list(&Default::default())
                    .await
                    .expect("listing ingresses");
                assert_eq!(list.items.len(), 1);
                assert_eq!(
                    serde_json::to_value(&list.items[0]).expect("serializes"),
                    want("Ingress", Some("litellm"), "litellm")
                );
                let secrets: Api<Secret> = Api::namespaced(client.clone(), "litellm");
                let tls = secrets.get("litellm-tls").await.expect("the TLS Secret");
                assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
                assert_eq!(
                    serde_json::to_value(&tls).expect("serializes"),
                    want("Secret", Some("litellm"), "litellm-tls")
                );
                assert!(!discovery.has_group("traefik.io"));
            } else {
                let (resource, caps) = discovery
                    .get("traefik.io")
                    .and_then(|g| g.recommended_kind("IngressRoute"))
                    .expect("traefik.io IngressRoute");
                assert_eq!(resource.plural, "ingressroutes");
                assert!(caps.subresources.is_empty(), "{caps:?}");
                let routes: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), "litellm", &resource);
                let route = routes.get("litellm").await.expect("the IngressRoute");
                assert_eq!(route.data["spec"]["tls"]["certResolver"], "letsencrypt");
                assert!(!discovery.has_group("traefik.containo.us"));
            }
        });
    }
}

/// kube-rs, the client smokecheck itself uses, against the same server.
#[test]
fn kube_rs_reads_typed_objects_and_errors() {
    use k8s_openapi::api::core::v1::{Pod, Secret};
    use kube::api::{Api, ListParams};

    let kube_fake = FakeKube::start("rbac-forbidden");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = kube_fake.write_kubeconfig(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&path).expect("reading the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("a kube config");
        let mut anonymous = config.clone();
        anonymous.auth_info = Default::default();
        let anonymous = kube::Client::try_from(anonymous).expect("a kube client");
        match Api::<Pod>::namespaced(anonymous, "vllm").list(&ListParams::default()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));
                assert_eq!(status.message, "Unauthorized");
            }
            other => panic!("a request without a token must be refused, got {other:?}"),
        }
        let client = kube::Client::try_from(config).expect("a kube client");
        let version = client.apiserver_version().await.expect("/version");
        assert_eq!(
            (version.major.as_str(), version.minor.as_str()),
            ("1", "33")
        );

        let vllm_pods: Api<Pod> = Api::namespaced(client.clone(), "vllm");
        let listed = vllm_pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=vllm"))
            .await
            .expect("listing vllm pods");
        assert_eq!(listed.items.len(), 1);
        assert_eq!(
            listed.items[0].metadata.name.as_deref(),
            Some("vllm-5b6f7d8c9f-q8r2n")
        );

        // A watch from "0" replays the current objects, then the quiet cluster says nothing.
        let events: Vec<_> = futures::StreamExt::collect(
            vllm_pods
                .watch(&kube::api::WatchParams::default().timeout(1), "0")
                .await
                .expect("watching vllm pods"),
        )
        .await;
        match events.as_slice() {
            [Ok(kube::api::WatchEvent::Added(pod))] => {
                assert_eq!(pod.metadata.name.as_deref(), Some("vllm-5b6f7d8c9f-q8r2n"))
            }
            other => panic!("expected one ADDED event, got {other:?}"),
        }

        let pods: Api<Pod> = Api::namespaced(client.clone(), "litellm");
        assert!(pods.get_opt("nope").await.expect("a 404 is None").is_none());
        match pods.list(&ListParams::default()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403);
                assert_eq!(status.reason, "Forbidden");
            }
            other => panic!("listing pods in litellm should be forbidden, got {other:?}"),
        }
        let gvk = kube::api::GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster");
        let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "clusters");
        let clusters: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), "litellm", &resource);
        let cluster = clusters.get("cloudnative-pg-cluster").await.expect("the CNPG cluster");
        assert_eq!(cluster.data["status"]["phase"], "Cluster in healthy state");
        match clusters.get("x").await {
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
                assert_eq!(status.message, "clusters.postgresql.cnpg.io \"x\" not found");
                let details = serde_json::to_value(&status.details).expect("details serialize");
                assert_eq!(details, serde_json::json!({"name": "x", "group": "postgresql.cnpg.io", "kind": "clusters"}));
            }
            other => panic!("a missing cluster must be a 404, got {other:?}"),
        }
        let secrets: Api<Secret> = Api::namespaced(client, "litellm");
        match secrets.get("litellm-secrets").await {
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
                let details = serde_json::to_value(&status.details).expect("details serialize");
                assert_eq!(details, serde_json::json!({"name": "litellm-secrets", "kind": "secrets"}));
            }
            other => panic!("getting a secret in litellm should be forbidden, got {other:?}"),
        }
    });
}

#[test]
fn every_scenario_loads_and_is_consistent() {
    let names = scenario_names();
    for expected in [
        "healthy",
        "crash-loop",
        "rbac-forbidden",
        "namespace-missing",
        "cnpg-not-installed",
        "ingress-healthy",
        "ingressroute-acme",
        "pod-restarted-recently",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "scenario {expected} missing: {names:?}"
        );
    }
    let mut problems = Vec::new();
    for name in &names {
        let scenario = load_scenario(name);
        consistency_problems(&scenario, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "inconsistent scenarios:\n{}",
        problems.join("\n")
    );
}

/// Scenarios make claims about each other's objects; a failure scenario that changes a pod but
/// not its EndpointSlice would test a cluster that cannot exist.
fn consistency_problems(s: &Scenario, problems: &mut Vec<String>) {
    let name = &s.name;
    let ready = |pod: &Value| {
        pod.pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| str_at(c, "/type") == Some("Ready") && str_at(c, "/status") == Some("True"))
    };
    let mut seen = BTreeMap::new();
    for object in &s.objects {
        let key = crate::support::fake_kube::identity(object);
        if seen.insert(key.clone(), ()).is_some() {
            problems.push(format!("{name}: duplicate {key:?}"));
        }
        if let Some(ns) = str_at(object, "/metadata/namespace")
            && s.get("Namespace", None, ns).is_none()
        {
            problems.push(format!("{name}: {key:?} lives in missing namespace {ns}"));
        }
        // Served by this scenario: a Traefik object needs its CRD group installed.
        let served = installed(&s.crds_not_installed, &s.crds_installed)
            .iter()
            .any(|r| {
                Some(r.api_version().as_str()) == str_at(object, "/apiVersion")
                    && Some(r.kind) == str_at(object, "/kind")
            });
        if !served {
            problems.push(format!(
                "{name}: the scenario serves no resource for {key:?}"
            ));
        }
        // The apiserver refuses a kubernetes.io/tls Secret without both keys.
        if str_at(object, "/kind") == Some("Secret")
            && str_at(object, "/type") == Some("kubernetes.io/tls")
            && ["tls.crt", "tls.key"].iter().any(|k| {
                object
                    .pointer(&format!("/data/{}", k.replace('/', "~1")))
                    .is_none()
            })
        {
            problems.push(format!(
                "{name}: TLS Secret {key:?} lacks tls.crt or tls.key"
            ));
        }
    }
    for slice in s.of_kind("EndpointSlice") {
        let ns = str_at(slice, "/metadata/namespace").unwrap_or_default();
        let slice_name = str_at(slice, "/metadata/name").unwrap_or_default();
        let Some(svc_name) = str_at(slice, "/metadata/labels/kubernetes.io~1service-name") else {
            problems.push(format!(
                "{name}: EndpointSlice {slice_name} names no service"
            ));
            continue;
        };
        let Some(service) = s.get("Service", Some(ns), svc_name) else {
            problems.push(format!(
                "{name}: EndpointSlice {slice_name} for missing service {svc_name}"
            ));
            continue;
        };
        let endpoints: Vec<&Value> = slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        for ep in &endpoints {
            let pod_name = str_at(ep, "/targetRef/name").unwrap_or_default();
            let Some(pod) = s.get("Pod", Some(ns), pod_name) else {
                problems.push(format!(
                    "{name}: {slice_name} targets missing pod {pod_name}"
                ));
                continue;
            };
            if ep.pointer("/addresses/0").and_then(Value::as_str) != str_at(pod, "/status/podIP") {
                problems.push(format!(
                    "{name}: {slice_name} address of {pod_name} is not its podIP"
                ));
            }
            if str_at(ep, "/targetRef/uid") != str_at(pod, "/metadata/uid") {
                problems.push(format!(
                    "{name}: {slice_name} targetRef uid of {pod_name} is stale"
                ));
            }
            let ep_ready = ep.pointer("/conditions/ready").and_then(Value::as_bool) == Some(true);
            if ep_ready != ready(pod) {
                problems.push(format!(
                    "{name}: {slice_name} says {pod_name} ready={ep_ready}, the pod disagrees"
                ));
            }
        }
        // Every pod the Service selects that has an IP is in its slice (a replica deliberately
        // behind -rw in rw-on-replica is the one allowed mismatch of the selector).
        let selector = service.pointer("/spec/selector").and_then(Value::as_object);
        let selected = s.of_kind("Pod").filter(|pod| {
            str_at(pod, "/metadata/namespace") == Some(ns)
                && selector.is_some_and(|sel| {
                    sel.iter().all(|(k, v)| {
                        pod.pointer(&format!("/metadata/labels/{}", k.replace('/', "~1")))
                            == Some(v)
                    })
                })
                && str_at(pod, "/status/podIP").is_some()
        });
        let targets: BTreeSet<&str> = endpoints
            .iter()
            .filter_map(|ep| str_at(ep, "/targetRef/name"))
            .collect();
        let selected: BTreeSet<&str> = selected
            .filter_map(|p| str_at(p, "/metadata/name"))
            .collect();
        if selected != targets
            && !(s.name == "rw-on-replica" && svc_name == "cloudnative-pg-cluster-rw")
        {
            problems.push(format!(
                "{name}: service {svc_name} selects {selected:?} but {slice_name} lists {targets:?}"
            ));
        }
    }
    for (ns, pod, file) in s.logs.keys() {
        let Some(object) = s.get("Pod", Some(ns), pod) else {
            problems.push(format!("{name}: log {ns}/{pod}/{file} of a missing pod"));
            continue;
        };
        let container = file.trim_end_matches(".log").trim_end_matches(".previous");
        let known = object
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| str_at(c, "/name") == Some(container));
        if !known {
            problems.push(format!("{name}: log {file} for no container of {pod}"));
        }
        let has_previous = object
            .pointer("/status/containerStatuses/0/lastState/terminated")
            .is_some();
        if file.ends_with(".previous.log") && !has_previous {
            problems.push(format!(
                "{name}: previous log of {pod}, whose status has no terminated last state"
            ));
        }
    }
    for pod in s.of_kind("Pod") {
        let restarts = pod
            .pointer("/status/containerStatuses/0/restartCount")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let waiting = str_at(pod, "/status/containerStatuses/0/state/waiting/reason");
        let pod_name = str_at(pod, "/metadata/name").unwrap_or_default();
        if waiting == Some("CrashLoopBackOff") && restarts == 0 {
            problems.push(format!("{name}: {pod_name} crash-loops without restarts"));
        }
        if waiting.is_some() && ready(pod) {
            problems.push(format!("{name}: {pod_name} is waiting yet Ready"));
        }
    }
}

#[test]
fn scenario_secrets_are_loadable_without_a_server() {
    let healthy = load_scenario("healthy");
    let master = healthy
        .secret_value("litellm", "litellm-secrets", "PROXY_MASTER_KEY")
        .expect("master key");
    assert!(master.starts_with("sk-smokecheck-"), "{master}");
    let vllm_key = healthy.secret_value("vllm", "vllm-secrets", "VLLM_API_KEY");
    assert_eq!(
        vllm_key,
        healthy.secret_value("litellm", "litellm-secrets", "CA_VLLM_LOCAL_API_KEY")
    );
    let password = healthy
        .secret_value("litellm", "cloudnative-pg-cluster-litellm", "password")
        .expect("db password");
    assert!(healthy.secret_values().contains(&password));
    assert!(
        !healthy.secret_values().iter().any(|v| v == "litellm"),
        "names are not secrets"
    );

    let crash = load_scenario("crash-loop");
    let previous = crash
        .log("litellm", "litellm-7c9d8f6b5d-9mzt7", "litellm", true)
        .expect("previous log");
    assert!(
        previous.contains(&format!("postgresql://litellm:{password}@")),
        "redaction needs the password in the log"
    );

    let mismatch = load_scenario("key-mismatch");
    assert_ne!(
        mismatch.secret_value("vllm", "vllm-secrets", "VLLM_API_KEY"),
        mismatch.secret_value("litellm", "litellm-secrets", "CA_VLLM_LOCAL_API_KEY")
    );
    let missing = load_scenario("missing-key");
    assert_eq!(
        missing.secret_value("litellm", "litellm-secrets", "CA_VLLM_LOCAL_API_KEY"),
        None
    );
    let empty = load_scenario("empty-key");
    assert_eq!(
        empty
            .secret_value("litellm", "litellm-secrets", "CA_VLLM_LOCAL_API_KEY")
            .as_deref(),
        Some("")
    );
    // A pod replaced by a scenario does not inherit the healthy log.
    let pull = load_scenario("image-pull");
    assert_eq!(
        pull.log("litellm", "litellm-7c9d8f6b5d-4xk2p", "litellm", false),
        None
    );
    let gone = load_scenario("namespace-missing");
    assert!(
        gone.objects
            .iter()
            .all(|o| str_at(o, "/metadata/namespace") != Some("litellm"))
    );
}

/// The log call smokecheck makes (kube-rs `Api::logs`), including the apiserver's 400 for a
/// multi-container pod without a container name (kubectl picks a default itself, so only a
/// client like ours meets it).
#[test]
fn kube_rs_log_calls_and_the_multi_container_error() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, LogParams};

    let mut scenario = load_scenario("crash-loop");
    let pod = "litellm-7c9d8f6b5d-4xk2p";
    let object = scenario
        .objects
        .iter_mut()
        .find(|o| str_at(o, "/metadata/name") == Some(pod))
        .expect("the healthy LiteLLM pod");
    let sidecar = serde_json::json!({"name": "cloud-sql-proxy", "image": "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.0"});
    object["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(sidecar);
    let kube_fake = FakeKube::start_with(scenario);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = kube_fake.write_kubeconfig(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("reading the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("a kube config");
        let pods: Api<Pod> = Api::namespaced(kube::Client::try_from(config).expect("a client"), "litellm");
        match pods.logs(pod, &LogParams::default()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
                assert_eq!(
                    status.message,
                    format!("a container name must be specified for pod {pod}, choose one of: [litellm cloud-sql-proxy]")
                );
            }
            other => panic!("expected a 400, got {other:?}"),
        }
        let crashing = "litellm-7c9d8f6b5d-9mzt7";
        let params = LogParams { container: Some("litellm".into()), previous: true, tail_lines: Some(2), ..Default::default() };
        let tail = pods.logs(crashing, &params).await.expect("the previous log");
        assert_eq!(tail, "\nERROR:    Application startup failed. Exiting.\n");
    });
    let log_call = kube_fake
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.ends_with("/log"))
        .expect("a log call");
    assert_eq!(log_call.param("previous").as_deref(), Some("true"));
}
