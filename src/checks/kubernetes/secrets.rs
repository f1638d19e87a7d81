//! Secrets: present, holding every key the deployment reads, non-empty; and the coupling that
//! breaks most often: LiteLLM's copy of vLLM's API key must equal vLLM's own. Values are
//! compared by digest and never shown. A SealedSecret's `Synced` condition is reported, but the
//! Secret itself is the truth (the condition is known to go stale).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

use crate::check::Check;
use crate::context::{Context, secret_value};
use crate::outcome::{Cause, Failure, Layer, Passed, ProbeResult, Verdict, Warning};
use crate::secret::SecretValue;
use crate::suite::Suite;

use super::{in_namespace, secrets_name, vllm_key_name};
use crate::checks::qualified;

const SEALED_GROUP_VERSION: &str = "bitnami.com/v1alpha1";

/// The secrets the suite names, with the keys each must hold, then the key coupling checks.
pub fn checks(suite: &Arc<Suite>) -> Vec<Check> {
    let ns = &suite.namespace;
    let mut out: Vec<Check> = suite
        .secrets()
        .into_iter()
        .filter(|s| s.checked)
        .map(|s| secret_check(suite, &s.namespace, &s.name, s.required))
        .collect();
    let many = suite.vllm.iter().filter(|v| v.secret.is_some()).count() > 1;
    for (i, v) in suite.vllm.iter().enumerate() {
        if v.secret.is_none() {
            continue;
        }
        let check_name = vllm_key_name(many.then_some((&v.namespace, &v.service.name)));
        let s = Arc::clone(suite);
        let check = Check::new(check_name, Layer::Kubernetes, move |cx, attempt| {
            let s = Arc::clone(&s);
            async move {
                attempt.observe("reading both copies of the vLLM API key");
                coupling(&cx, &s, i).await
            }
        });
        out.push(in_namespace(in_namespace(check, ns), &v.namespace));
    }
    out
}

/// `keys`: the keys the Secret must hold, non-empty. Reading it registers all its values with
/// the redactor (`Cluster::get`).
fn secret_check(suite: &Suite, namespace: &str, secret: &str, keys: Vec<String>) -> Check {
    let check_name = secrets_name(&qualified(suite, namespace, secret));
    let (ns, secret) = (namespace.to_string(), secret.to_string());
    in_namespace(
        Check::new(check_name, Layer::Kubernetes, move |cx, attempt| {
            let (ns, secret, keys) = (ns.clone(), secret.clone(), keys.clone());
            async move {
                attempt.observe(format!("getting secret {ns}/{secret}"));
                let sealed = sealed_status(&cx, &ns, &secret).await;
                let found = cx.cluster.get::<Secret>(&ns, &secret).await?;
                let Some(found) = found else {
                    let mut f = Failure::new(
                        Cause::NotFound,
                        format!("secret {ns}/{secret} not found"),
                    )
                    .hint(format!(
                        "the Sealed Secrets controller has not unsealed it: kubectl get sealedsecret -n {ns} {secret} -o yaml (status.conditions), and check the SealedSecret is in Git"
                    ));
                    if let Some(s) = sealed {
                        f = f.details(s);
                    }
                    return Err(f);
                };
                let mut missing = Vec::new();
                let mut empty = Vec::new();
                for key in &keys {
                    match secret_value(&found, key) {
                        None => missing.push(key.as_str()),
                        Some(v) if v.is_empty() => empty.push(key.as_str()),
                        Some(_) => {}
                    }
                }
                let reseal = format!(
                    "add the key to the SealedSecret and re-seal it (kubeseal), then let Argo CD sync: the Secret {ns}/{secret} is generated from it"
                );
                let failure = if !missing.is_empty() {
                    Some(
                        Failure::new(
                            Cause::MissingKey,
                            format!("secret {ns}/{secret} has no key {}", missing.join(", ")),
                        )
                        .hint(reseal),
                    )
                } else if !empty.is_empty() {
                    Some(
                        Failure::new(
                            Cause::EmptyKey,
                            format!("secret {ns}/{secret}: key {} is empty", empty.join(", ")),
                        )
                        .hint(reseal),
                    )
                } else {
                    None
                };
                match failure {
                    Some(mut f) => {
                        let present = found
                            .data
                            .as_ref()
                            .map(|d| d.keys().cloned().collect::<Vec<_>>().join(", "))
                            .unwrap_or_default();
                        f = f.details(format!("keys present: {present}"));
                        if let Some(s) = sealed {
                            f.details = Some(format!("{}\n{s}", f.details.unwrap_or_default()));
                        }
                        Err(f)
                    }
                    None => {
                        let mut p = Passed {
                            summary: format!("has {}", keys.join(", ")),
                            ..Passed::default()
                        };
                        if let Some(s) = sealed {
                            // The Secret works today; the next re-seal will not reach it.
                            p = p.warn(Warning::new(s, format!(
                                "the controller cannot update Secret {ns}/{secret} from its SealedSecret: re-seal it with the controller's current certificate (kubeseal --fetch-cert) and let Argo CD sync; until then a rotated value never arrives"
                            )));
                        }
                        Ok(p.into())
                    }
                }
            }
        }),
        namespace,
    )
}

/// The SealedSecret's `Synced` condition, worded for a report; `None` when there is no
/// SealedSecret (or the CRD is not installed), or it is synced.
async fn sealed_status(cx: &Context, ns: &str, name: &str) -> Option<String> {
    if cx.cluster.serves(SEALED_GROUP_VERSION) == Some(false) {
        return None;
    }
    let gvk = GroupVersionKind::gvk("bitnami.com", "v1alpha1", "SealedSecret");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "sealedsecrets");
    let api: Api<DynamicObject> = Api::namespaced_with(cx.cluster.client.clone(), ns, &ar);
    let obj = api.get_opt(name).await.ok().flatten()?;
    let conditions = obj.data.get("status")?.get("conditions")?.as_array()?;
    let synced = conditions
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Synced"))?;
    if synced.get("status").and_then(|s| s.as_str()) == Some("True") {
        return None;
    }
    let message = synced
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or("no message");
    Some(format!(
        "SealedSecret {ns}/{name} reports Synced=False: {message} (the Secret above is what pods read)"
    ))
}

/// Reads one key for the coupling check: the value, or why it cannot be compared.
async fn read_key(
    cx: &Context,
    suite: &Suite,
    ns: &str,
    secret: &str,
    key: &str,
) -> Result<SecretValue, String> {
    let which = secrets_name(&qualified(suite, ns, secret));
    match cx.cluster.get::<Secret>(ns, secret).await {
        Ok(Some(s)) => match secret_value(&s, key) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(format!(
                "{ns}/{secret} has no usable key {key} (see {which})"
            )),
        },
        Ok(None) => Err(format!("secret {ns}/{secret} not found (see {which})")),
        Err(f) => Err(format!(
            "{} (the vllm layer proves the key coupling by calling vLLM with LiteLLM's key)",
            f.summary
        )),
    }
}

async fn coupling(cx: &Context, suite: &Suite, vllm: usize) -> ProbeResult {
    let l = &suite.litellm.secret;
    let v = &suite.vllm[vllm];
    let Some(vs) = &v.secret else {
        return Ok(Verdict::skip("the suite names no vLLM secret"));
    };
    let ours = read_key(cx, suite, &suite.namespace, &l.name, &l.vllm_api_key).await;
    let theirs = read_key(cx, suite, &v.namespace, &vs.name, &vs.api_key).await;
    let (ours, theirs) = match (ours, theirs) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(why), _) | (_, Err(why)) => {
            return Ok(Verdict::skip(format!("cannot compare: {why}")));
        }
    };
    let what = format!(
        "{}/{} {} and {}/{} {}",
        suite.namespace, l.name, l.vllm_api_key, v.namespace, vs.name, vs.api_key
    );
    if ours.same_as(&theirs) {
        Ok(Verdict::pass(format!(
            "{what} are equal (compared by SHA-256 digest)"
        )))
    } else {
        let f: Failure = Failure::new(Cause::KeyMismatch, format!("{what} differ"))
            .details("values compared by SHA-256 digest; neither is shown")
            .hint(format!(
                "vLLM's key was rotated without LiteLLM's copy: re-seal {} with the new {} (kubeseal), let Argo CD sync, then restart LiteLLM so it reads it (kubectl -n {} rollout restart deploy -l {}). Until then every chat request gets 401 from vLLM",
                l.name, l.vllm_api_key, suite.namespace, suite.litellm.pods.selector
            ));
        Err(f)
    }
}
