//! The LiteLLM layer: is the proxy alive, ready (with its database), closed to strangers, and
//! serving every alias it should? No model is called here; the end-to-end layer does that.

pub mod classify;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::check::Check;
use crate::checks::keys::{self, Key};
use crate::checks::kubernetes;
use crate::context::Context;
use crate::http::{Answer, HttpError, excerpt, listed};
use crate::outcome::{Cause, Failure, Layer, Metrics, Passed, Prerequisite, ProbeResult, Warning};
use crate::suite::Suite;

/// The check the others run after: a proxy that is not alive fails once, here.
pub const LIVE: &str = "litellm::live";
pub const READY: &str = "litellm::ready";
pub const AUTH: &str = "litellm::auth";
pub const MODELS: &str = "litellm::models";

pub fn checks(suite: &Suite) -> Vec<Check> {
    let ns = suite.namespace.clone();
    let prerequisite = || Prerequisite::Namespace(ns.clone());
    vec![
        Check::new(LIVE, Layer::Litellm, |cx, attempt| async move {
            let url = cx.endpoints.litellm.url("/health/liveliness");
            attempt.observe(format!("waiting for GET {url}"));
            live(&cx, &url).await
        })
        .requires(prerequisite()),
        Check::new(READY, Layer::Litellm, |cx, attempt| async move {
            let url = cx.endpoints.litellm.url("/health/readiness");
            attempt.observe(format!("waiting for GET {url}"));
            ready(&cx, &url).await
        })
        .requires(prerequisite())
        .beside(LIVE),
        Check::new(AUTH, Layer::Litellm, |cx, attempt| async move {
            auth(&cx, &attempt).await
        })
        .requires(prerequisite())
        .beside(LIVE),
        Check::new(MODELS, Layer::Litellm, |cx, attempt| async move {
            attempt.observe("reading the master key");
            models(&cx, &attempt).await
        })
        .requires(prerequisite())
        .beside(LIVE),
    ]
}

/// No answer from the proxy to judge: none at all, or one over its cap.
pub(crate) fn no_answer(cx: &Context, url: &str, e: &HttpError) -> Failure {
    let t = match e {
        HttpError::TooLarge(t) => return crate::checks::too_large(t),
        HttpError::NoAnswer(t) => t,
    };
    Failure::new(
        Cause::Unreachable,
        format!("cannot reach LiteLLM at {url}: {t}"),
    )
    .details(format!("address from the {}", cx.endpoints.litellm.via))
    .hint(format!(
        "is the proxy running? {} says why not (a crash loop's log names the error, e.g. ModuleNotFoundError when the guardrail script is not mounted where LiteLLM looks) and {} whether the Service has ready endpoints",
        kubernetes::pods_name("litellm"),
        kubernetes::services_name(&cx.suite.litellm.service.name),
    ))
}

/// "the proxy answered 503" with the redacted body as details.
pub(crate) fn unexpected(cx: &Context, cause: Cause, summary: String, a: &Answer) -> Failure {
    Failure::new(cause, summary).details(format!(
        "the proxy answered {} after {} ms: {}",
        a.status,
        a.elapsed.as_millis(),
        excerpt(&cx.redactor, &a.text)
    ))
}

pub(crate) fn latency(a: &Answer) -> Metrics {
    let mut m = Metrics::default();
    m.millis("latency_ms", a.elapsed);
    m
}

async fn live(cx: &Context, url: &str) -> ProbeResult {
    match cx.http.get(url, None).await {
        Err(t) => Err(no_answer(cx, url, &t)),
        Ok(a) if a.status == 200 => Ok(Passed {
            summary: format!("alive ({url})"),
            metrics: latency(&a),
            ..Passed::default()
        }
        .into()),
        Ok(a) => Err(unexpected(
            cx,
            Cause::HttpStatus,
            format!("liveliness answered {} instead of 200", a.status),
            &a,
        )),
    }
}

async fn ready(cx: &Context, url: &str) -> ProbeResult {
    let a = cx
        .http
        .get(url, None)
        .await
        .map_err(|t| no_answer(cx, url, &t))?;
    if a.status != 200 {
        return Err(unexpected(
            cx,
            Cause::HttpStatus,
            format!("readiness answered {} instead of 200", a.status),
            &a,
        ));
    }
    let Some(body) = a.json() else {
        return Err(unexpected(
            cx,
            Cause::BadResponse,
            "readiness answered 200 but not JSON".into(),
            &a,
        ));
    };
    let db = body
        .get("db")
        .and_then(|d| d.as_str())
        .unwrap_or("(no db field)")
        .to_string();
    let version = body
        .get("litellm_version")
        .and_then(|v| v.as_str())
        .map(|v| format!(", LiteLLM {v}"))
        .unwrap_or_default();
    if cx.suite.litellm.expect_db && db != "connected" {
        return Err(unexpected(
            cx,
            Cause::DbDisconnected,
            format!("readiness answers 200 but its db field is {db:?}, not \"connected\""),
            &a,
        )
        .hint(
            "the proxy runs without its database (readiness says healthy anyway): see the database checks and kubernetes::cnpg, and DATABASE_URL in the pod's env. A proxy meant to run without one: set litellm.expect_db: false in the suite",
        )
        );
    }
    let mut p = Passed {
        summary: format!("ready, db {db}{version}"),
        metrics: latency(&a),
        ..Passed::default()
    };
    if !cx.suite.litellm.expect_db {
        p = p.note("the database is not required (litellm.expect_db: false)");
    }
    Ok(p.into())
}

/// A key nobody issued, different on every run.
fn bogus_key() -> crate::secret::SecretValue {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    crate::secret::SecretValue::new(format!("sk-smokecheck-bogus-{nanos:x}").into_bytes())
}

fn said(cx: &Context, a: &Answer) -> String {
    let e = classify::ProxyError::parse(a.status, &a.text, &cx.redactor);
    if e.kind.is_empty() || e.kind == "None" {
        format!("{}", a.status)
    } else {
        format!("{} {}", a.status, e.kind)
    }
}

async fn auth(cx: &Context, attempt: &crate::check::Attempt) -> ProbeResult {
    let url = cx.endpoints.litellm.url("/v1/models");
    attempt.observe(format!("waiting for GET {url} without a key"));
    let none = cx
        .http
        .get(&url, None)
        .await
        .map_err(|t| no_answer(cx, &url, &t))?;
    let open_hint = "set general_settings.master_key: os.environ/PROXY_MASTER_KEY in the proxy config and PROXY_MASTER_KEY in the pod's env (from the proxy Secret), then restart the proxy; until then anyone who reaches it can spend its models";
    if none.ok() {
        return Err(unexpected(
            cx,
            Cause::ProxyOpen,
            format!(
                "CRITICAL: the proxy answered {} to a request without a key: it is open to anyone who can reach it",
                none.status
            ),
            &none,
        )
        .hint(open_hint));
    }
    attempt.observe(format!("waiting for GET {url} with a bogus key"));
    let bogus = cx
        .http
        .get(&url, Some(&bogus_key()))
        .await
        .map_err(|t| no_answer(cx, &url, &t))?;
    if bogus.ok() {
        return Err(unexpected(
            cx,
            Cause::ProxyOpen,
            format!(
                "CRITICAL: the proxy answered {} to a request with a bogus key: it accepts any key",
                bogus.status
            ),
            &bogus,
        )
        .hint(open_hint));
    }
    if none.status != 401 {
        return Err(unexpected(
            cx,
            Cause::HttpStatus,
            format!(
                "the proxy refused a request without a key with {} instead of 401",
                none.status
            ),
            &none,
        )
        .hint("LiteLLM answers 401 auth_error; a plain 500 here usually means the prisma package is missing from the image (its auth-failure path imports it)"));
    }
    Ok(Passed::new(format!(
        "refuses a request without a key ({}) and with a bogus key ({})",
        said(cx, &none),
        said(cx, &bogus)
    ))
    .into())
}

async fn models(cx: &Context, attempt: &crate::check::Attempt) -> ProbeResult {
    let key = keys::load(cx, Key::Master).await?;
    let expected = cx.aliases();
    if expected.is_empty() {
        let why = match &cx.proxy_config {
            Err(e) => {
                format!("the proxy config cannot be read ({e}) and the suite names no aliases")
            }
            Ok(_) => "the proxy config's model_list is empty and the suite names no aliases".into(),
        };
        return Err(Failure::new(Cause::ConfigInvalid, format!("no aliases to expect: {why}"))
            .hint("fix the proxy config ConfigMap, or list the aliases in the suite (litellm.aliases)"));
    }
    let url = cx.endpoints.litellm.url("/v1/models");
    attempt.observe(format!("waiting for GET {url}"));
    let a = cx
        .http
        .get(&url, Some(&key.value))
        .await
        .map_err(|t| no_answer(cx, &url, &t))?;
    if !a.ok() {
        let cause = match a.status {
            401 | 403 => Cause::ProxyAuth,
            400 if a.text.contains("no_db_connection") => Cause::ProxyAuth,
            _ => Cause::HttpStatus,
        };
        let mut f = unexpected(
            cx,
            cause,
            format!(
                "GET /v1/models with the {} answered {}",
                key.label, a.status
            ),
            &a,
        );
        if cause == Cause::ProxyAuth {
            f = f.hint("the proxy's master key is general_settings.master_key (PROXY_MASTER_KEY in the pod's env): the Secret and the running pod disagree; restart the proxy after the Secret changed");
        }
        return Err(f);
    }
    let body = a.json();
    let Some(list) = body
        .as_ref()
        .and_then(|j| j.get("data"))
        .and_then(|d| d.as_array())
    else {
        return Err(unexpected(
            cx,
            Cause::BadResponse,
            "GET /v1/models answered 200 without a model list (JSON with a data array)".into(),
            &a,
        ));
    };
    let served: Vec<String> = list
        .iter()
        .filter_map(|m| m.get("id").and_then(|i| i.as_str()).map(str::to_string))
        .collect();
    let missing: Vec<&str> = expected
        .iter()
        .filter(|e| !served.contains(e))
        .map(String::as_str)
        .collect();
    let extra: Vec<&str> = served
        .iter()
        .filter(|s| !expected.contains(s))
        .map(String::as_str)
        .collect();
    let source = if cx.suite.litellm.aliases.is_some() {
        "the suite's litellm.aliases"
    } else {
        "the proxy config's model_list"
    };
    if !missing.is_empty() {
        let mut f = Failure::new(
            Cause::AliasMissing,
            format!(
                "the proxy does not serve {} (expected from {source})",
                missing.join(", ")),
        )
        .details(format!("served: {}", listed(&cx.redactor, &served)))
        .hint(
            "the running proxy's model_list lacks them: is the ConfigMap synced, and was the proxy restarted after it changed? A typo in the suite's litellm.aliases shows here too",
        );
        f.metrics.count("aliases_served", served.len() as u64);
        return Err(f);
    }
    let mut p = Passed {
        summary: format!(
            "serves all {} expected aliases ({})",
            expected.len(),
            expected.join(", ")
        ),
        metrics: latency(&a),
        ..Passed::default()
    };
    p.metrics.count("aliases_served", served.len() as u64);
    if !extra.is_empty() {
        p = p.warn(Warning::new(
            format!(
                "served but not expected from {source}: {}",
                listed(&cx.redactor, &extra)
            ),
            format!(
                "the running proxy serves aliases its config lacks: it still runs an older config.yaml (restart it after the ConfigMap {} syncs: kubectl -n {} rollout restart deploy -l {}), or add them to the config's model_list",
                cx.suite.litellm.config.configmap, cx.suite.namespace, cx.suite.litellm.pods.selector
            ),
        ));
    }
    Ok(p.into())
}

/// The trimming guardrail (the suite's `litellm.guardrail.name`) if requests to `alias` go
/// through it.
pub(crate) fn trimming_guardrail(cx: &Context, alias: &str) -> Option<String> {
    let g = cx.suite.litellm.guardrail.as_ref()?;
    match &cx.proxy_config {
        Ok(c) if c.guarded(alias, &g.name) => Some(g.name.clone()),
        _ => None,
    }
}

/// Any guardrail requests to `alias` go through (a 500 from the proxy's own code is then the
/// guardrail raising): the trimming one first, else the first the config enables on it.
pub(crate) fn any_guardrail(cx: &Context, alias: &str) -> Option<String> {
    trimming_guardrail(cx, alias).or_else(|| {
        let c = cx.proxy_config.as_ref().ok()?;
        let on_alias = c.alias(alias).and_then(|a| a.guardrails.first().cloned());
        on_alias.or_else(|| {
            c.guardrails
                .iter()
                .find(|g| g.default_on)
                .map(|g| g.name.clone())
        })
    })
}
