//! The platform the deployment stands on, checked first: namespaces, the CRDs the suite relies
//! on (found through API discovery), the CloudNativePG operator and Sealed Secrets controller,
//! and the Argo CD Application. A failure here names the prerequisite it breaks, so the checks
//! that need it are skipped with that reason instead of failing in twenty confusing ways.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

use crate::check::Check;
use crate::cluster::Access;
use crate::context::{Context, suite_namespaces};
use crate::outcome::{Cause, Failure, Layer, Passed, Prerequisite, ProbeResult, Verdict};
use crate::suite::{ArgoApp, Suite, Workload};

/// A custom resource the suite relies on: (group, version, plural, who installs it).
struct Crd {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    installer: &'static str,
}

impl Crd {
    fn name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

const CNPG: Crd = Crd {
    group: "postgresql.cnpg.io",
    version: "v1",
    plural: "clusters",
    installer: "the CloudNativePG operator",
};
const SEALED: Crd = Crd {
    group: "bitnami.com",
    version: "v1alpha1",
    plural: "sealedsecrets",
    installer: "the Sealed Secrets controller",
};
const ARGO: Crd = Crd {
    group: "argoproj.io",
    version: "v1alpha1",
    plural: "applications",
    installer: "Argo CD",
};

pub const NAMESPACE: &str = "platform::namespace";
pub const CRDS: &str = "platform::crds";
pub const CNPG_OPERATOR: &str = "platform::cnpg-operator";
pub const SEALED_SECRETS_CONTROLLER: &str = "platform::sealed-secrets-controller";
pub const ARGOCD_APP: &str = "platform::argocd-app";

/// The CNPG Cluster CRD's prerequisite, for the checks that read Clusters.
pub fn cnpg_crd() -> Prerequisite {
    Prerequisite::Crd(CNPG.name())
}

fn argo_crd() -> Prerequisite {
    Prerequisite::Crd(ARGO.name())
}

pub fn checks(suite: &Suite) -> Vec<Check> {
    let mut out = vec![namespaces(suite), crds(suite)];
    let p = &suite.platform;
    if let Some(w) = &p.cnpg_operator {
        out.push(operator(CNPG_OPERATOR, "the CloudNativePG operator", w));
    }
    if let Some(w) = &p.sealed_secrets_controller {
        out.push(operator(
            SEALED_SECRETS_CONTROLLER,
            "the Sealed Secrets controller",
            w,
        ));
    }
    if let Some(app) = &p.argocd {
        out.push(argocd_app(app));
    }
    out
}

fn namespaces(suite: &Suite) -> Check {
    let wanted = suite_namespaces(suite);
    Check::new(NAMESPACE, Layer::Platform, move |cx, attempt| {
        let wanted = wanted.clone();
        async move {
            let api: Api<Namespace> = Api::all(cx.cluster.client.clone());
            let mut failure: Option<Failure> = None;
            for ns in &wanted {
                attempt.observe(format!("getting namespace {ns}"));
                let problem = match api.get_opt(ns).await {
                    Ok(Some(n)) if terminating(&n) => {
                        let since = n
                            .metadata
                            .deletion_timestamp
                            .as_ref()
                            .map(|t| format!(" since {}", t.0))
                            .unwrap_or_default();
                        let why = n
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .and_then(|c| c.iter().find(|c| c.status == "True"))
                            .and_then(|c| c.message.clone())
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default();
                        Some((
                            Cause::NamespaceTerminating,
                            format!("namespace {ns} is Terminating{since}{why}"),
                            format!(
                                "something deleted namespace {ns} (an Argo CD prune, or kubectl delete); recreate it by re-syncing its Application once it is gone"
                            ),
                        ))
                    }
                    Ok(Some(_)) => None,
                    Ok(None) => Some((
                        Cause::NamespaceMissing,
                        format!("namespace {ns} does not exist"),
                        format!(
                            "is the context right (kubectl config current-context)? Otherwise the Application that creates {ns} has not synced"
                        ),
                    )),
                    Err(e) => {
                        return Err(Access {
                            verb: "get",
                            resource: "namespaces",
                            group: "",
                            namespace: "",
                            name: Some(ns),
                        }
                        .failure(e));
                    }
                };
                if let Some((cause, summary, hint)) = problem {
                    failure = Some(
                        match failure {
                            None => Failure::new(cause, summary.clone()).hint(hint),
                            Some(mut f) => {
                                f.summary = format!("{}; {summary}", f.summary);
                                f
                            }
                        }
                        .unmet(Prerequisite::Namespace(ns.clone()), summary),
                    );
                }
            }
            match failure {
                Some(f) => Err(f),
                None => Ok(Verdict::pass(format!(
                    "{} exist and are Active",
                    wanted.join(", ")
                ))),
            }
        }
    })
}

fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

fn crds(suite: &Suite) -> Check {
    let mut wanted = Vec::new();
    if suite.database.is_some() {
        wanted.push(&CNPG);
    }
    // A suite that leaves the controller out (`sealed_secrets_controller: null`) may not use
    // Sealed Secrets at all.
    if suite.platform.sealed_secrets_controller.is_some() {
        wanted.push(&SEALED);
    }
    if suite.platform.argocd.is_some() {
        wanted.push(&ARGO);
    }
    Check::new(CRDS, Layer::Platform, move |cx, attempt| {
        let wanted = wanted.clone();
        async move {
            let mut missing: Vec<&Crd> = Vec::new();
            for crd in &wanted {
                let gv = format!("{}/{}", crd.group, crd.version);
                attempt.observe(format!("discovering {gv}"));
                match cx.cluster.client.list_api_group_resources(&gv).await {
                    Ok(list) if list.resources.iter().any(|r| r.name == crd.plural) => {}
                    Ok(_) => missing.push(crd),
                    Err(kube::Error::Api(s)) if s.code == 404 => missing.push(crd),
                    Err(e) => {
                        // An answer cut at its cap is that, whichever request it was.
                        let cause = crate::cluster::answer::unreadable(&e)
                            .map_or(Cause::ApiError, |u| u.cause());
                        return Err(Failure::new(cause, format!("API discovery of {gv} failed"))
                            .details(crate::text::error_chain(&e)));
                    }
                }
            }
            let names: Vec<String> = wanted.iter().map(|c| c.name()).collect();
            if missing.is_empty() {
                return Ok(Verdict::pass(format!("served: {}", names.join(", "))));
            }
            let mut f = Failure::new(
                Cause::CrdMissing,
                format!(
                    "not served by the API server: {}",
                    missing.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")),
            )
            .hint(format!(
                "install {} (their Argo CD Applications sync before LiteLLM's); kubectl api-resources shows what is served",
                missing.iter().map(|c| c.installer).collect::<Vec<_>>().join(" and ")));
            for crd in missing {
                f = f.unmet(
                    Prerequisite::Crd(crd.name()),
                    format!("CRD {} is not served", crd.name()),
                );
            }
            Err(f)
        }
    })
}

fn operator(name: &'static str, what: &'static str, w: &Workload) -> Check {
    let w = w.clone();
    Check::new(name, Layer::Platform, move |cx, attempt| {
        let w = w.clone();
        async move {
            attempt.observe(format!(
                "getting deployment {}/{}",
                w.namespace, w.deployment
            ));
            let found = match cx
                .cluster
                .get::<Deployment>(&w.namespace, &w.deployment)
                .await
            {
                // The hook's Role need not reach the operators' namespaces: say so, don't fail.
                Err(f) if f.cause == Cause::Forbidden => {
                    return Ok(Verdict::skip(format!(
                        "cannot read {what} ({}): {}",
                        f.summary, "smokecheck's RBAC does not reach that namespace"
                    )));
                }
                other => other?,
            };
            let Some(d) = found else {
                return Err(Failure::new(
                    Cause::OperatorUnavailable,
                    format!("{what}: deployment {}/{} not found", w.namespace, w.deployment),
                )
                .hint(format!(
                    "install {what}, or point the suite's platform section at where it runs (kubectl get deploy -A | grep -i {})",
                    w.deployment
                )));
            };
            let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            // Available=True alone is not enough: a Deployment scaled to zero reports it.
            if ready >= 1 {
                return Ok(Passed::new(format!("{ready}/{wanted} replicas ready")).into());
            }
            let summary = if wanted == 0 {
                format!(
                    "{what} is scaled to zero ({}/{} has replicas: 0)",
                    w.namespace, w.deployment
                )
            } else {
                format!(
                    "{what} has no ready replica (0/{wanted} in {}/{})",
                    w.namespace, w.deployment
                )
            };
            Err(Failure::new(Cause::OperatorUnavailable, summary)
                .details(conditions(&d))
                .hint(format!(
                    "nothing reconciles its resources until it runs: kubectl -n {0} scale deploy/{1} --replicas=1, or kubectl -n {0} describe deploy/{1}",
                    w.namespace, w.deployment
                ))
                )
        }
    })
}

fn conditions(d: &Deployment) -> String {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "condition {}={} {}: {}",
                c.type_,
                c.status,
                c.reason.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn argocd_app(app: &ArgoApp) -> Check {
    let app = app.clone();
    Check::new(ARGOCD_APP, Layer::Platform, move |cx, attempt| {
        let app = app.clone();
        async move {
            if cx
                .hook
                .as_ref()
                .is_some_and(|h| h.app_namespace == app.namespace && h.app_name == app.application)
            {
                return Ok(Verdict::skip(format!(
                    "running inside this Application's sync (PostSync hook of {}/{}): never waited on",
                    app.namespace, app.application
                )));
            }
            attempt.observe(format!("getting application {}/{}", app.namespace, app.application));
            application(&cx, &app).await
        }
    })
    .requires(argo_crd())
}

async fn application(cx: &Context, app: &ArgoApp) -> ProbeResult {
    let gvk = GroupVersionKind::gvk(ARGO.group, ARGO.version, "Application");
    let ar = ApiResource::from_gvk_with_plural(&gvk, ARGO.plural);
    let api: Api<DynamicObject> =
        Api::namespaced_with(cx.cluster.client.clone(), &app.namespace, &ar);
    let obj = match api.get_opt(&app.application).await {
        Ok(Some(o)) => o,
        Ok(None) => {
            return Err(Failure::new(
                Cause::NotFound,
                format!("Argo CD Application {}/{} not found", app.namespace, app.application),
            )
            .hint("set platform.argocd in the suite to the Application that deploys LiteLLM, or null without Argo CD"));
        }
        Err(e) => {
            let f = Access {
                verb: "get",
                resource: ARGO.plural,
                group: ARGO.group,
                namespace: &app.namespace,
                name: Some(&app.application),
            }
            .failure(e);
            if f.cause == Cause::Forbidden {
                return Ok(Verdict::skip(format!(
                    "cannot read the Application ({}): smokecheck's RBAC does not reach namespace {}",
                    f.summary, app.namespace
                )));
            }
            return Err(f);
        }
    };
    let status = obj.data.get("status").cloned().unwrap_or(Value::Null);
    let at = |path: &str| {
        status
            .pointer(path)
            .and_then(Value::as_str)
            .unwrap_or("Unknown")
            .to_string()
    };
    let sync = at("/sync/status");
    let health = at("/health/status");
    let phase = status
        .pointer("/operationState/phase")
        .and_then(Value::as_str);
    let name = format!("{}/{}", app.namespace, app.application);
    let hint_app = format!(
        "argocd app get {} --show-operation (or the Argo CD UI)",
        app.application
    );
    if phase == Some("Running") {
        let message = at("/operationState/message");
        return Err(Failure::new(
            Cause::AppSyncing,
            format!("Application {name} is syncing (operation Running: {message})"),
        )
        .hint(format!(
            "wait for the sync to finish (rerun with --wait), or, for the PostSync hook, set SMOKECHECK_ARGOCD_APP={name} so the hook never waits on its own sync; {hint_app}"
        ))
        );
    }
    if sync != "Synced" {
        let drifted: Vec<String> = status
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|r| r.get("status").and_then(Value::as_str) == Some("OutOfSync"))
            .map(|r| {
                let g = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
                let ns = if g("namespace").is_empty() {
                    String::new()
                } else {
                    format!("{}/", g("namespace"))
                };
                format!("{} {ns}{}", g("kind"), g("name"))
            })
            .collect();
        let mut f = Failure::new(
            Cause::AppOutOfSync,
            format!(
                "Application {name} is {sync}{}",
                if drifted.is_empty() {
                    String::new()
                } else {
                    format!(": {} resource(s) drifted from Git: {}", drifted.len(), drifted.join(", "))
                }
            ),
        )
        .hint(format!("the cluster differs from Git: {hint_app} shows the diff; sync, or find who changed it by hand"));
        if !drifted.is_empty() {
            f = f.details(drifted.join("\n"));
        }
        return Err(f);
    }
    if health != "Healthy" {
        return Err(Failure::new(
            Cause::AppUnhealthy,
            format!("Application {name} is Synced but {health}"),
        )
        .details(at("/health/message"))
        .hint(format!("{hint_app} shows which resource is not healthy")));
    }
    Ok(Verdict::pass(format!(
        "Application {name} is Synced and Healthy"
    )))
}
