//! The trimming guardrail, proven by behaviour: a prompt just clearly over the alias's context
//! window must come back 200 with `usage.prompt_tokens + max_tokens <= max_model_len`. Its
//! control sends the same prompt straight to vLLM, which must refuse it as too long: otherwise
//! the prompt was not oversized and the 200 proves nothing.
//!
//! The window is vLLM's `max_model_len` from `/v1/models` (not a model request), or the suite's
//! `vllm[].max_model_len` where vLLM cannot be read from here. The prompt is the window plus 10%
//! or at least 256 tokens. A window over `litellm.guardrail.max_window` skips both checks with
//! the reason: a server's number decides how much we send and how long vLLM computes, and a
//! `max_model_len` of 4294967295 would otherwise ask for a 21 GB prompt.

use serde_json::Value;

use crate::check::{ALIAS, Attempt, Check, Family};
use crate::checks::keys::{self, Key};
use crate::checks::litellm::{no_answer, trimming_guardrail};
use crate::checks::vllm::{self, coupling_failure, served_models};
use crate::context::Context;
use crate::endpoints::VllmTarget;
use crate::http::{HttpError, excerpt};
use crate::outcome::{Cause, Failure, Layer, Metrics, Passed, ProbeResult, Verdict};
use crate::suite::Guardrail;

use super::{APPLIED_GUARDRAILS, chat_body, prepare, proxy_failure, usage_tokens};

/// The completion budget of the oversized request (a handful, as every request here).
const MAX_TOKENS: u32 = 5;
/// The least a prompt goes over the window by, in tokens.
const MIN_OVERSHOOT: u32 = 256;
/// One token in the common tokenizers (and one word for the test bed's fake vLLM).
const WORD: &str = "word";

pub fn family() -> Family {
    Family::new(super::trimming_name(ALIAS), |cx, alias| {
        let guardrail = trimming_guardrail(cx, alias)?;
        let name = super::trimming_name(alias);
        let owned = alias.to_string();
        let check = Check::new(name, Layer::E2e, move |cx, attempt| {
            let (alias, guardrail) = (owned.clone(), guardrail.clone());
            async move { trimming(&cx, &attempt, &alias, &guardrail).await }
        });
        Some(super::after(check, cx, alias, true))
    })
    .per_deployment()
}

pub fn control_family() -> Family {
    Family::new(super::control_name(ALIAS), |cx, alias| {
        trimming_guardrail(cx, alias)?;
        let name = super::control_name(alias);
        let owned = alias.to_string();
        let check = Check::new(name, Layer::E2e, move |cx, attempt| {
            let alias = owned.clone();
            async move { control(&cx, &attempt, &alias).await }
        });
        Some(super::after(check, cx, alias, true))
    })
    .per_deployment()
}

/// The context window of an alias and where the number came from.
struct Window {
    max_model_len: u32,
    source: String,
    /// The backend, when the config's api_base resolves.
    target: Option<VllmTarget>,
    /// The model vLLM serves for the alias.
    served_model: String,
    /// Why vLLM's `/v1/models` could not be read, when it could not.
    unreadable: Option<String>,
}

impl Window {
    /// Words of the oversized prompt (at most `max_window` and 10%, see [`over_limit`]).
    fn prompt_words(&self) -> u32 {
        let n = self.max_model_len;
        n.saturating_add((n / 10).max(MIN_OVERSHOOT))
    }

    fn prompt(&self) -> String {
        let words = usize::try_from(self.prompt_words()).unwrap_or(usize::MAX);
        let mut s = String::with_capacity(words * (WORD.len() + 1));
        for i in 0..words {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(WORD);
        }
        s
    }
}

async fn window(cx: &Context, attempt: &Attempt, alias: &str) -> Result<Window, Failure> {
    let config = cx
        .proxy_config
        .as_ref()
        .map_err(|e| Failure::new(Cause::ConfigInvalid, e.to_string()))?;
    let a = config.alias(alias).ok_or_else(|| {
        Failure::new(
            Cause::AliasMissing,
            format!("alias {alias} is not in the proxy config"),
        )
    })?;
    let served_model = a.served_model().to_string();
    let target = a
        .api_base
        .as_deref()
        .map(|b| cx.endpoints.vllm(b))
        .transpose()
        .map_err(|why| {
            Failure::new(
                Cause::ContextUnknown,
                format!("cannot size the oversized prompt for alias {alias}: {why}"),
            )
            .hint(format!("see {}", vllm::api_base_name(alias)))
        })?;
    let suite_value = target.as_ref().and_then(|t| {
        cx.suite
            .vllm
            .iter()
            .find(|v| v.namespace == t.namespace && v.service.name == t.service)
            .and_then(|v| v.max_model_len)
    });
    let mut unreadable = None;
    if let Some(t) = &target {
        attempt.observe(format!(
            "reading max_model_len from {}/models",
            t.endpoint.base
        ));
        let key = keys::load(cx, Key::Vllm).await?;
        match served_models(cx, t, &key).await {
            Ok((served, _)) => {
                if let Some(n) = served
                    .iter()
                    .find(|s| s.id == served_model)
                    .and_then(|s| s.max_model_len)
                {
                    return Ok(Window {
                        max_model_len: n,
                        source: format!("vLLM {}/{} /v1/models", t.namespace, t.service),
                        target,
                        served_model,
                        unreadable: None,
                    });
                }
                unreadable = Some(format!(
                    "vLLM {}/{} lists no max_model_len for {served_model}",
                    t.namespace, t.service
                ));
            }
            Err(e) => unreadable = Some(e.why()),
        }
    }
    match suite_value {
        Some(n) => Ok(Window {
            max_model_len: n,
            source: "the suite's vllm[].max_model_len".into(),
            target,
            served_model,
            unreadable,
        }),
        None => Err(Failure::new(
            Cause::ContextUnknown,
            format!(
                "cannot size the oversized prompt for alias {alias}: {}",
                unreadable.unwrap_or_else(|| "it has no api_base".into())),
        )
        .hint("make vLLM's /v1/models reachable (from outside the cluster: --connect port-forward, or --endpoint vllm:<ns>/<svc>=URL), or set vllm[].max_model_len in the suite")),
    }
}

/// Both trimming checks are skipped for a window over the suite's `max_window`: the proof
/// would cost a prompt over it and a prefill of all of it, on every run.
fn over_limit(cx: &Context, alias: &str, w: &Window) -> Option<Verdict> {
    let limit = cx
        .suite
        .litellm
        .guardrail
        .as_ref()
        .map_or(Guardrail::DEFAULT_MAX_WINDOW, |g| g.max_window);
    (w.max_model_len > limit).then(|| {
        Verdict::skip(format!(
            "alias {alias}: its context window of {} tokens (from {}) is over litellm.guardrail.max_window ({limit}): proving the trimming would send a {}-word prompt and have vLLM prefill the whole window on every run; raise max_window (and --timeout) in the suite to test it",
            w.max_model_len,
            w.source,
            w.prompt_words()))
    })
}

async fn trimming(cx: &Context, attempt: &Attempt, alias: &str, guardrail: &str) -> ProbeResult {
    let w = window(cx, attempt, alias).await?;
    if let Some(skip) = over_limit(cx, alias, &w) {
        return Ok(skip);
    }
    let (key, url) = prepare(cx, attempt).await?;
    let words = w.prompt_words();
    attempt.observe(format!(
        "waiting for POST {url} with a {words}-word prompt (alias {alias}, max_model_len {})",
        w.max_model_len
    ));
    let a = cx
        .http
        .post(
            &url,
            Some(&key.value),
            &chat_body(alias, &w.prompt(), MAX_TOKENS),
        )
        .await
        .map_err(|t| no_answer(cx, &url, &t))?;
    let mut metrics = Metrics::default();
    metrics
        .millis("latency_ms", a.elapsed)
        .count("max_model_len", u64::from(w.max_model_len))
        .count("prompt_words", u64::from(words));
    if !a.ok() {
        let mut f = proxy_failure(cx, attempt, alias, &key, &a).await;
        if f.cause == Cause::ContextWindow {
            f.summary = format!(
                "guardrail {guardrail} did not trim: vLLM refused the {words}-word prompt as over its {}-token window (400 ContextWindowExceededError)",
                w.max_model_len
            );
            f.hint = Some(format!(
                "the proxy config enables {guardrail} on alias {alias}, yet the prompt reached vLLM untrimmed: is the running proxy on the current config (restart it after the ConfigMap changed)? Does the script pass max_tokens to trim_messages (without it, it trims nothing for vLLM models)? kubernetes::guardrail checks the wiring"
            ));
        }
        f.metrics = metrics;
        return Err(f);
    }
    let applied = crate::http::header(&a.headers, APPLIED_GUARDRAILS);
    let bad = |why: String| -> Failure {
        Failure::new(
            Cause::BadResponse,
            format!("alias {alias}: 200, but {why}: cannot tell whether the prompt was trimmed"),
        )
        .details(excerpt(&cx.redactor, &a.text))
    };
    let prompt_tokens = match a.json().map(|b| usage_tokens(&b, "prompt_tokens")) {
        Some(Ok(Some(n))) => n,
        Some(Err(why)) => return Err(bad(why)),
        None | Some(Ok(None)) => return Err(bad("without usage.prompt_tokens".into())),
    };
    metrics.count("prompt_tokens", u64::from(prompt_tokens));
    let budget = u64::from(w.max_model_len);
    if u64::from(prompt_tokens) + u64::from(MAX_TOKENS) > budget {
        let mut f = Failure::new(
            Cause::ContextWindow,
            format!(
                "alias {alias}: 200, but usage says {prompt_tokens} prompt tokens + {MAX_TOKENS} > max_model_len {}: the prompt was not trimmed to the window",
                w.max_model_len
            ),
        )
        .details(format!("max_model_len from {}", w.source))
        .hint("is max_model_len right? Compare vLLM's --max-model-len with the suite and the guardrail's own setting");
        f.metrics = metrics;
        return Err(f);
    }
    let mut p = Passed {
        summary: format!(
            "guardrail {guardrail} trimmed a {words}-word prompt to {prompt_tokens} tokens (max_model_len {}, {MAX_TOKENS} for the answer)",
            w.max_model_len
        ),
        metrics,
        ..Passed::default()
    };
    p = p.note(format!("max_model_len from {}", w.source));
    if let Some(why) = &w.unreadable {
        p = p.note(format!("vLLM's own value could not be read: {why}"));
    }
    p = p.note(match applied {
        Some(g) => format!("{APPLIED_GUARDRAILS}: {g}"),
        None => format!("the proxy sent no {APPLIED_GUARDRAILS} header"),
    });
    Ok(p.into())
}

async fn control(cx: &Context, attempt: &Attempt, alias: &str) -> ProbeResult {
    let w = window(cx, attempt, alias).await?;
    if let Some(skip) = over_limit(cx, alias, &w) {
        return Ok(skip);
    }
    let Some(target) = &w.target else {
        return Ok(Verdict::skip(format!(
            "alias {alias} has no api_base to call vLLM at"
        )));
    };
    if let Some(why) = &w.unreadable {
        return Ok(Verdict::skip(format!(
            "vLLM {}/{} is not usable from here: {why}",
            target.namespace, target.service
        )));
    }
    let key = keys::load(cx, Key::Vllm).await?;
    let url = format!("{}/chat/completions", target.endpoint.base);
    let words = w.prompt_words();
    attempt.observe(format!("waiting for POST {url} with a {words}-word prompt"));
    let mut body = chat_body(&w.served_model, &w.prompt(), MAX_TOKENS);
    if let Some(o) = body.as_object_mut() {
        o.remove("num_retries");
    }
    let a = match cx.http.post(&url, Some(&key.value), &body).await {
        Err(HttpError::NoAnswer(t)) => {
            return Ok(Verdict::skip(format!(
                "vLLM {}/{} is not reachable from here: {t}",
                target.namespace, target.service
            )));
        }
        Err(HttpError::TooLarge(t)) => return Err(crate::checks::too_large(&t)),
        Ok(a) => a,
    };
    let mut metrics = Metrics::default();
    metrics
        .millis("latency_ms", a.elapsed)
        .count("prompt_words", u64::from(words));
    if a.status == 400 && a.text.contains("maximum context length") {
        let message = a
            .json()
            .and_then(|j| {
                j.get("message")
                    .or_else(|| j.pointer("/error/message"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| a.text.clone());
        let first = message.split(". ").next().unwrap_or_default();
        let first = cx.redactor.cut(first.trim(), 300);
        return Ok(Passed {
            summary: format!("vLLM refuses the {words}-word prompt on its own: {first}"),
            metrics,
            ..Passed::default()
        }
        .into());
    }
    if a.status == 401 {
        return Err(coupling_failure(cx, target, &key, &a));
    }
    if a.ok() {
        let used = a
            .json()
            .and_then(|j| usage_tokens(&j, "prompt_tokens").ok().flatten())
            .map(|n| format!(" ({n} prompt tokens)"))
            .unwrap_or_default();
        let mut f = Failure::new(
            Cause::NotOversized,
            format!(
                "vLLM accepted the {words}-word prompt{used}: it is not over the window, so {} proves nothing",
                super::trimming_name(alias)
            ),
        )
        .details(format!("max_model_len {} from {}", w.max_model_len, w.source))
        .hint("the window smokecheck used is larger than vLLM's real one? Check vLLM's --max-model-len and the suite's vllm[].max_model_len");
        f.metrics = metrics;
        return Err(f);
    }
    let mut f = Failure::new(
        Cause::HttpStatus,
        format!(
            "vLLM answered {} to the oversized prompt instead of its context-length 400",
            a.status
        ),
    )
    .details(excerpt(&cx.redactor, &a.text));
    f.metrics = metrics;
    Err(f)
}
