//! The vLLM layer, per backend the suite names: `/health`, and `/v1/models` called with the key
//! LiteLLM itself sends (`CA_VLLM_LOCAL_API_KEY` from the proxy Secret). That call proves the key
//! coupling behaviourally, also where vLLM's own Secret cannot be read, and yields each served
//! model's `max_model_len`. Per alias, `vllm::api_base::<alias>` proves the config's `api_base`
//! names one of the suite's vLLM Services and that it exists.

use k8s_openapi::api::core::v1::Service;

use crate::check::{ALIAS, Check, Family};
use crate::checks::keys::{self, Key, Loaded};
use crate::context::Context;
use crate::endpoints::VllmTarget;
use crate::http::{Answer, HttpError, TooLarge, excerpt, listed};
use crate::outcome::{Cause, Failure, Layer, Metrics, Passed, Prerequisite, ProbeResult};
use crate::proxy_config::Alias;
use crate::suite::Suite;

/// `""` with one vLLM backend, else `::<ns>/<svc>`: how its checks are named.
fn suffix(suite: &Suite, i: usize) -> String {
    let v = &suite.vllm[i];
    if suite.vllm.len() > 1 {
        format!("::{}/{}", v.namespace, v.service.name)
    } else {
        String::new()
    }
}

/// `vllm::health` of the suite's `vllm[i]` (`vllm::health::<ns>/<svc>` with several).
pub fn health_name(suite: &Suite, i: usize) -> String {
    format!("vllm::health{}", suffix(suite, i))
}

/// `vllm::models` of the suite's `vllm[i]` (`vllm::models::<ns>/<svc>` with several).
pub fn models_name(suite: &Suite, i: usize) -> String {
    format!("vllm::models{}", suffix(suite, i))
}

/// `vllm::api_base::<alias>`.
pub fn api_base_name(alias: &str) -> String {
    format!("vllm::api_base::{alias}")
}

pub fn checks(suite: &Suite) -> Vec<Check> {
    let mut out = Vec::new();
    for (i, v) in suite.vllm.iter().enumerate() {
        let ns = Prerequisite::Namespace(v.namespace.clone());
        out.push(
            Check::new(
                health_name(suite, i),
                Layer::Vllm,
                move |cx, attempt| async move {
                    let b = Backend::of(&cx, i)?;
                    let url = format!("{}/health", b.root());
                    attempt.observe(format!("waiting for GET {url}"));
                    health(&cx, &b, &url).await
                },
            )
            .requires(ns.clone()),
        );
        out.push(
            Check::new(
                models_name(suite, i),
                Layer::Vllm,
                move |cx, attempt| async move {
                    let b = Backend::of(&cx, i)?;
                    attempt.observe("reading the key LiteLLM sends to vLLM");
                    let key = keys::load(&cx, Key::Vllm).await?;
                    attempt.observe(format!("waiting for GET {}/models", b.target.endpoint.base));
                    models(&cx, &b, &key).await
                },
            )
            .requires(ns),
        );
    }
    out
}

pub fn families() -> Vec<Family> {
    vec![Family::new(api_base_name(ALIAS), |cx, alias| {
        let config = cx.proxy_config.as_ref().ok()?;
        let a = config.alias(alias)?;
        let api_base = a.api_base.clone()?;
        let alias = alias.to_string();
        Some(Check::new(
            api_base_name(&alias),
            Layer::Vllm,
            move |cx, attempt| {
                let (alias, api_base) = (alias.clone(), api_base.clone());
                async move {
                    attempt.observe(format!("resolving api_base {api_base}"));
                    api_base_check(&cx, &alias, &api_base).await
                }
            },
        ))
    })]
}

/// A suite backend, resolved: the URL to call and the aliases of the config routed to it.
pub(crate) struct Backend {
    pub target: VllmTarget,
    pub aliases: Vec<Alias>,
}

impl Backend {
    /// The suite's `vllm[i]`, reached where the first alias that names it says (or at its
    /// in-cluster address when no alias does).
    fn of(cx: &Context, i: usize) -> Result<Backend, Failure> {
        let v = &cx.suite.vllm[i];
        let aliases: Vec<Alias> = match &cx.proxy_config {
            Ok(c) => c
                .aliases
                .iter()
                .filter(|a| {
                    a.api_base.as_deref().is_some_and(|b| {
                        cx.endpoints.vllm(b).is_ok_and(|t| {
                            t.namespace == v.namespace && t.service == v.service.name
                        })
                    })
                })
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        };
        let api_base = aliases
            .first()
            .and_then(|a| a.api_base.clone())
            .unwrap_or_else(|| {
                let port = v
                    .service
                    .port
                    .filter(|p| *p != 80)
                    .map(|p| format!(":{p}"))
                    .unwrap_or_default();
                format!(
                    "http://{}.{}.svc.cluster.local{port}/v1",
                    v.service.name, v.namespace
                )
            });
        let target = cx
            .endpoints
            .vllm(&api_base)
            .map_err(|why| Failure::new(Cause::ConfigInvalid, why))?;
        Ok(Backend { target, aliases })
    }

    /// The server root (`/health` lives there, the OpenAI API under `/v1`).
    pub fn root(&self) -> String {
        root_of(&self.target.endpoint.base)
    }

    fn name(&self) -> String {
        format!("{}/{}", self.target.namespace, self.target.service)
    }

    fn unused_note(&self) -> Option<String> {
        self.aliases
            .is_empty()
            .then(|| "no alias of the proxy config routes to this backend".to_string())
    }
}

pub(crate) fn root_of(base: &str) -> String {
    let b = base.trim_end_matches('/');
    b.strip_suffix("/v1").unwrap_or(b).to_string()
}

/// vLLM gave no HTTP answer.
pub(crate) fn vllm_unreachable(target: &VllmTarget, url: &str, why: &str) -> Failure {
    Failure::new(
        Cause::Unreachable,
        format!(
            "cannot reach vLLM {}/{} at {url}: {why}",
            target.namespace, target.service
        ),
    )
    .details(format!("address from the {}", target.endpoint.via))
    .hint(
        "are vLLM's pods ready and does its Service select them (kubernetes::services)? From outside the cluster smokecheck port-forwards by default (--connect auto); --endpoint vllm:<ns>/<svc>=URL names an address yourself",
    )
}

async fn health(cx: &Context, b: &Backend, url: &str) -> ProbeResult {
    let a = match cx.http.get(url, None).await {
        Err(HttpError::NoAnswer(t)) => return Err(vllm_unreachable(&b.target, url, &t.0)),
        Err(HttpError::TooLarge(t)) => return Err(crate::checks::too_large(&t)),
        Ok(a) => a,
    };
    if a.status != 200 {
        return Err(Failure::new(
            Cause::HttpStatus,
            format!("vLLM {} /health answered {}", b.name(), a.status),
        )
        .details(excerpt(&cx.redactor, &a.text))
        .hint(
            "vLLM's engine is not serving (loading, out of memory, crashed): read its pod's log",
        ));
    }
    let mut p = Passed {
        summary: format!("vLLM {} is healthy ({url})", b.name()),
        ..Passed::default()
    };
    p.metrics.millis("latency_ms", a.elapsed);
    if let Some(n) = b.unused_note() {
        p = p.note(n);
    }
    Ok(p.into())
}

/// A served model and its context window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Served {
    pub id: String,
    pub max_model_len: Option<u32>,
}

/// Why `/v1/models` gave no list.
pub(crate) enum ModelsError {
    /// No HTTP answer.
    Unreachable(String),
    /// An answer over its cap.
    TooLarge(TooLarge),
    /// 401: vLLM rejects LiteLLM's key.
    Unauthorized(Answer),
    /// Another status, or a body without a model list.
    Other(Answer),
    /// A model's `max_model_len` that is no context window: why.
    BadWindow(String),
}

impl ModelsError {
    /// Why vLLM's context window could not be read, in one line.
    pub(crate) fn why(&self) -> String {
        match self {
            ModelsError::Unreachable(why) | ModelsError::BadWindow(why) => why.clone(),
            ModelsError::TooLarge(t) => t.to_string(),
            ModelsError::Unauthorized(_) => "vLLM rejects LiteLLM's key (see vllm::models)".into(),
            ModelsError::Other(a) => format!("vLLM's /v1/models answered {}", a.status),
        }
    }
}

/// A model's `max_model_len`: absent, or a context window of 1 to `u32::MAX` tokens. Anything
/// else cannot size a prompt (and 4294967295 is only cheap to check, never to send: see
/// `litellm.guardrail.max_window`).
fn context_window(model: &serde_json::Value) -> Result<Option<u32>, String> {
    match model.get("max_model_len") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|l| u32::try_from(l).ok())
            .filter(|l| *l > 0)
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "max_model_len {n} is not a context window (1 to {} tokens)",
                    u32::MAX
                )
            }),
        Some(_) => Err("max_model_len is not a number".into()),
    }
}

/// `GET <base>/models` with `key`: the served models (not a model request).
/// vLLM's `/v1/models` of a backend, read once per run (see [`crate::once::ReadOnce`]).
pub(crate) async fn served_models(
    cx: &Context,
    target: &VllmTarget,
    key: &Loaded,
) -> Result<(Vec<Served>, Answer), ModelsError> {
    let url = format!("{}/models", target.endpoint.base);
    cx.answers
        .get_or_read(&url, || read_served_models(cx, &url, key))
        .await
}

async fn read_served_models(
    cx: &Context,
    url: &str,
    key: &Loaded,
) -> Result<(Vec<Served>, Answer), ModelsError> {
    let url = url.to_string();
    let a = cx
        .http
        .get(&url, Some(&key.value))
        .await
        .map_err(|e| match e {
            HttpError::NoAnswer(t) => ModelsError::Unreachable(t.0),
            HttpError::TooLarge(t) => ModelsError::TooLarge(t),
        })?;
    if a.status == 401 {
        return Err(ModelsError::Unauthorized(a));
    }
    if a.status != 200 {
        return Err(ModelsError::Other(a));
    }
    let Some(list) = a
        .json()
        .and_then(|j| j.get("data").and_then(|d| d.as_array()).cloned())
    else {
        return Err(ModelsError::Other(a));
    };
    let mut served = Vec::new();
    for m in &list {
        let Some(id) = m.get("id").and_then(|i| i.as_str()) else {
            continue;
        };
        let max_model_len = context_window(m).map_err(|why| {
            ModelsError::BadWindow(format!("model {}: {why}", cx.redactor.cut(id.trim(), 100)))
        })?;
        served.push(Served {
            id: id.to_string(),
            max_model_len,
        });
    }
    Ok((served, a))
}

/// The failure for vLLM rejecting LiteLLM's key on a direct call.
pub(crate) fn coupling_failure(
    cx: &Context,
    target: &VllmTarget,
    key: &Loaded,
    a: &Answer,
) -> Failure {
    Failure::new(
        Cause::UpstreamAuth,
        format!(
            "vLLM {}/{} rejects the key LiteLLM sends (401): {}",
            target.namespace, target.service, key.source
        ),
    )
    .details(format!("vLLM answered: {}", excerpt(&cx.redactor, &a.text)))
    .hint(crate::checks::keys::coupling_hint(&cx.suite))
}

async fn models(cx: &Context, b: &Backend, key: &Loaded) -> ProbeResult {
    let url = format!("{}/models", b.target.endpoint.base);
    let (served, a) = match served_models(cx, &b.target, key).await {
        Ok(r) => r,
        Err(ModelsError::Unreachable(why)) => return Err(vllm_unreachable(&b.target, &url, &why)),
        Err(ModelsError::TooLarge(t)) => return Err(crate::checks::too_large(&t)),
        Err(ModelsError::BadWindow(why)) => {
            return Err(Failure::new(
                Cause::BadResponse,
                format!("vLLM {} GET /v1/models: {why}", b.name()),
            )
            .hint("vLLM reports the --max-model-len it serves with: an answer without a sane one is not vLLM's (something else answers at this address?)"));
        }
        Err(ModelsError::Unauthorized(a)) => return Err(coupling_failure(cx, &b.target, key, &a)),
        Err(ModelsError::Other(a)) => {
            let cause = if a.status == 200 {
                Cause::BadResponse
            } else {
                Cause::HttpStatus
            };
            return Err(Failure::new(
                cause,
                format!("vLLM {} GET /v1/models answered {}", b.name(), a.status),
            )
            .details(excerpt(&cx.redactor, &a.text)));
        }
    };
    let ids: Vec<&str> = served.iter().map(|s| s.id.as_str()).collect();
    let missing: Vec<String> = b
        .aliases
        .iter()
        .filter(|a| !ids.contains(&a.served_model()))
        .map(|a| format!("{} (alias {})", a.served_model(), a.name))
        .collect();
    if !missing.is_empty() {
        return Err(Failure::new(
            Cause::ModelNotServed,
            format!(
                "vLLM {} does not serve {}",
                b.name(),
                missing.join(", ")),
        )
        .details(format!("it serves: {}", listed(&cx.redactor, &ids)))
        .hint("the alias's litellm_params.model must be openai/<the model vLLM serves> (its --served-model-name); vLLM loads one model per server"));
    }
    let described: Vec<String> = served
        .iter()
        .map(|s| match s.max_model_len {
            Some(n) => format!("{} (max_model_len {n})", s.id),
            None => s.id.clone(),
        })
        .collect();
    let mut metrics = Metrics::default();
    metrics.millis("latency_ms", a.elapsed);
    let lens: Vec<(&str, u32)> = served
        .iter()
        .filter_map(|s| Some((s.id.as_str(), s.max_model_len?)))
        .collect();
    if let [(_, n)] = lens.as_slice() {
        metrics.count("max_model_len", u64::from(*n));
    } else {
        // One metric per model an alias routes to: metric names come from the config, never
        // from however many names the server lists.
        for (id, n) in &lens {
            if b.aliases.iter().any(|a| a.served_model() == *id) {
                metrics.count(&format!("max_model_len:{id}"), u64::from(*n));
            }
        }
    }
    let mut p = Passed {
        summary: format!(
            "vLLM {} serves {} and accepts LiteLLM's key",
            b.name(),
            listed(&cx.redactor, &described)
        ),
        metrics,
        ..Passed::default()
    };
    if let Some(n) = b.unused_note() {
        p = p.note(n);
    }
    Ok(p.into())
}

async fn api_base_check(cx: &Context, alias: &str, api_base: &str) -> ProbeResult {
    let target = match cx.endpoints.vllm(api_base) {
        Ok(t) => t,
        Err(why) => {
            return Err(Failure::new(
                Cause::ApiBaseOutsideSuite,
                format!("alias {alias}: {why}"),
            )
            .hint("fix api_base in the proxy config (ConfigMap), or add that vLLM service to the suite's vllm list"));
        }
    };
    let (ns, svc) = (&target.namespace, &target.service);
    let service = cx.cluster.get::<Service>(ns, svc).await?;
    let Some(service) = service else {
        return Err(Failure::new(
            Cause::NotFound,
            format!("alias {alias}: api_base {api_base} points at service {ns}/{svc}, which does not exist"),
        )
        .hint("a typo in the proxy config's api_base, or vLLM is not deployed there: every request to the alias fails with a connection error"));
    };
    let port = api_base
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| {
            u.port_u16().or(if u.scheme_str() == Some("https") {
                Some(443)
            } else {
                Some(80)
            })
        })
        .unwrap_or(80);
    let ports: Vec<i32> = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|p| p.iter().map(|p| p.port).collect())
        .unwrap_or_default();
    if !ports.is_empty() && !ports.contains(&i32::from(port)) {
        return Err(Failure::new(
            Cause::ServicePort,
            format!(
                "alias {alias}: api_base {api_base} uses port {port}, but service {ns}/{svc} exposes {}",
                ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")),
        )
        .hint("put the Service's port in api_base (the port, not the pod's targetPort)"));
    }
    Ok(Passed::new(format!(
        "api_base {api_base} is service {ns}/{svc} port {port} (reached at {} via {})",
        target.endpoint.base, target.endpoint.via
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_max_model_len_is_a_context_window_or_an_error() {
        let window = |v| context_window(&json!({"id": "m", "max_model_len": v}));
        assert_eq!(window(json!(512)), Ok(Some(512)));
        assert_eq!(window(json!(4_294_967_295u64)), Ok(Some(u32::MAX)));
        assert_eq!(window(json!(null)), Ok(None));
        assert_eq!(context_window(&json!({"id": "m"})), Ok(None));
        for bad in [json!(0), json!(-1), json!(4_294_967_296u64), json!(1.5)] {
            let why = window(bad.clone()).expect_err("no context window");
            assert!(
                why.starts_with(&format!("max_model_len {bad} is not a context window")),
                "{why}"
            );
        }
        assert_eq!(
            window(json!("512")),
            Err("max_model_len is not a number".into())
        );
    }

    #[test]
    fn the_root_drops_the_api_path() {
        assert_eq!(
            root_of("http://vllm.vllm.svc.cluster.local/v1"),
            "http://vllm.vllm.svc.cluster.local"
        );
        assert_eq!(
            root_of("http://127.0.0.1:8000/v1/"),
            "http://127.0.0.1:8000"
        );
        assert_eq!(root_of("http://127.0.0.1:8000"), "http://127.0.0.1:8000");
    }
}
