//! End to end, per alias: a real chat request through the proxy to vLLM, plain and streaming,
//! and the proof that the trimming guardrail trims. Every request is cheap (a handful of
//! `max_tokens`, a short fixed prompt except the deliberately oversized one), sent with
//! `"num_retries": 0` so a dead backend fails at once instead of after the router's retries,
//! and each check sends at most one model request per attempt.
//!
//! Errors are attributed by [`crate::checks::litellm::classify`]: same status, different cause.

pub mod sse;
mod trimming;

use std::time::Instant;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::check::{
    Cause, Check, Ctx, Failure, Family, Layer, Metrics, Outcome, Passed, Prerequisite,
};
use crate::checks::keys::{self, Key, Loaded};
use crate::checks::litellm::classify::{self, ProxyError};
use crate::checks::litellm::{any_guardrail, proxy_unreachable};
use crate::env::Env;
use crate::http::{Answer, excerpt, header};

/// Short and deterministic: what the proxy answers does not matter, that it answers does.
const PROMPT: &str = "Reply with the single word: ok";
/// A handful of tokens: enough to see content, cheap on any model.
const MAX_TOKENS: u32 = 5;
/// The header LiteLLM names the guardrails a request went through in.
pub(crate) const APPLIED_GUARDRAILS: &str = "x-litellm-applied-guardrails";

pub fn families() -> Vec<Family> {
    vec![
        Family::new("e2e::chat::<alias>", |env, alias| {
            let name = format!("e2e::chat::{alias}");
            let alias = alias.to_string();
            let check = Check::new(name, Layer::E2e, move |env, ctx| {
                let alias = alias.clone();
                async move { chat(&env, &ctx, &alias).await }
            });
            Some(after(check, env, "", false))
        }),
        Family::new("e2e::chat::<alias>::stream", |env, alias| {
            let name = format!("e2e::chat::{alias}::stream");
            let alias = alias.to_string();
            let check = Check::new(name, Layer::E2e, move |env, ctx| {
                let alias = alias.clone();
                async move { stream(&env, &ctx, &alias).await }
            });
            Some(after(check, env, "", false))
        }),
        trimming::family(),
        trimming::control_family(),
    ]
}

/// What an alias's end-to-end checks run after (and are skipped by, when it fails): a live
/// proxy, and, where the context window is read from vLLM, `vllm::models` of its backend.
/// Without this, a dead proxy or a rejected key would fail every alias's checks in cascade.
pub(crate) fn after(mut check: Check, env: &Env, alias: &str, needs_window: bool) -> Check {
    check = check.requires(Prerequisite::Check(crate::checks::litellm::LIVE.into()));
    if !needs_window {
        return check;
    }
    let backend = env
        .proxy
        .as_ref()
        .ok()
        .and_then(|c| c.alias(alias))
        .and_then(|a| a.api_base.as_deref())
        .and_then(|base| env.endpoints.vllm(base).ok())
        .and_then(|t| {
            env.suite
                .vllm
                .iter()
                .position(|v| v.namespace == t.namespace && v.service.name == t.service)
        });
    match backend {
        Some(i) if env.suite.vllm[i].max_model_len.is_none() => {
            check.requires(Prerequisite::Check(format!(
                "vllm::models{}",
                crate::checks::vllm::suffix(&env.suite, i)
            )))
        }
        _ => check,
    }
}

/// The chat request body for `alias`.
fn chat_body(alias: &str, content: &str, max_tokens: u32) -> Value {
    json!({
        "model": alias,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "num_retries": 0,
    })
}

/// Chat key and URL, or the failure to report.
async fn prepare(env: &Env, ctx: &Ctx) -> Result<(Loaded, String), Outcome> {
    ctx.observe("reading the chat key");
    let key = keys::load(env, Key::Chat).await.map_err(Outcome::from)?;
    Ok((key, env.endpoints.litellm.url("/v1/chat/completions")))
}

/// An error answer of the proxy for `alias`, attributed.
pub(crate) fn proxy_failure(env: &Env, alias: &str, key: &Loaded, a: &Answer) -> Failure {
    let e = ProxyError::parse(a.status, &a.text);
    let guardrail = any_guardrail(env, alias);
    let coupling = crate::checks::keys::coupling_hint(&env.suite);
    let logs = crate::checks::keys::proxy_logs(&env.suite);
    let mut f = classify::classify(
        &e,
        &classify::Request {
            alias,
            key_label: &key.label,
            guardrail: guardrail.as_deref(),
            coupling: &coupling,
            logs: &logs,
        },
    )
    .details(format!(
        "the proxy answered {} after {} ms: {}",
        a.status,
        a.elapsed.as_millis(),
        excerpt(&env.redactor, &a.text)
    ));
    f.metrics.millis("latency_ms", a.elapsed);
    f
}

fn guardrail_note(headers: &reqwest::header::HeaderMap) -> Option<String> {
    header(headers, APPLIED_GUARDRAILS).map(|g| format!("guardrails applied: {g}"))
}

async fn chat(env: &Env, ctx: &Ctx, alias: &str) -> Outcome {
    let (key, url) = match prepare(env, ctx).await {
        Ok(p) => p,
        Err(o) => return o,
    };
    ctx.observe(format!("waiting for POST {url} (alias {alias})"));
    let a = match env
        .http
        .post(
            &url,
            Some(&key.value),
            &chat_body(alias, PROMPT, MAX_TOKENS),
        )
        .await
    {
        Err(t) => return proxy_unreachable(env, &url, &t),
        Ok(a) => a,
    };
    if !a.ok() {
        return proxy_failure(env, alias, &key, &a).into();
    }
    let bad = |what: &str| -> Outcome {
        let mut f = Outcome::fail(Cause::BadResponse, format!("alias {alias}: 200 {what}"))
            .details(excerpt(&env.redactor, &a.text));
        f.metrics.millis("latency_ms", a.elapsed);
        f.into()
    };
    let Some(body) = a.json() else {
        return bad("but the body is not JSON");
    };
    let content = body
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_string();
    if content.is_empty() {
        return bad("without content in choices[0].message.content");
    }
    let usage = body.get("usage");
    let tokens = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64);
    let (Some(prompt), Some(completion)) = (tokens("prompt_tokens"), tokens("completion_tokens"))
    else {
        return bad("without usage (prompt_tokens, completion_tokens)");
    };
    let mut metrics = Metrics::default();
    metrics
        .millis("latency_ms", a.elapsed)
        .count("prompt_tokens", prompt)
        .count("completion_tokens", completion);
    let said: String = env.redactor.redact(&content).chars().take(60).collect();
    let mut p = Passed {
        summary: format!(
            "alias {alias} answered in {} ms: {said:?} ({prompt}+{completion} tokens)",
            a.elapsed.as_millis()
        ),
        metrics,
        ..Passed::default()
    };
    if let Some(n) = guardrail_note(&a.headers) {
        p = p.note(n);
    }
    p.into()
}

async fn stream(env: &Env, ctx: &Ctx, alias: &str) -> Outcome {
    let (key, url) = match prepare(env, ctx).await {
        Ok(p) => p,
        Err(o) => return o,
    };
    let mut body = chat_body(alias, PROMPT, MAX_TOKENS);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    ctx.observe(format!(
        "waiting for the stream's headers from POST {url} (alias {alias})"
    ));
    let started = Instant::now();
    let resp = match env.http.post_streaming(&url, Some(&key.value), &body).await {
        Err(t) => return proxy_unreachable(env, &url, &t),
        Ok(r) => r,
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    if !(200..300).contains(&status) {
        // Errors come back as plain JSON, not SSE.
        let text = resp.text().await.unwrap_or_default();
        let a = Answer {
            status,
            headers,
            text,
            elapsed: started.elapsed(),
        };
        return proxy_failure(env, alias, &key, &a).into();
    }
    let content_type = header(&headers, "content-type").unwrap_or_default();
    if !content_type.starts_with("text/event-stream") {
        let text = resp.text().await.unwrap_or_default();
        return Outcome::fail(
            Cause::BadResponse,
            format!("alias {alias}: a streaming request got {status} {content_type:?}, not text/event-stream"),
        )
        .details(excerpt(&env.redactor, &text))
        .into();
    }

    let mut parser = sse::Parser::default();
    let mut chunks = 0u64;
    let mut deltas = 0u64;
    let mut first_token = None;
    let mut done = false;
    let mut usage: Option<Value> = None;
    let mut content = String::new();
    let mut bytes = resp.bytes_stream();
    ctx.observe(format!(
        "alias {alias}: stream open, waiting for the first token"
    ));
    while let Some(piece) = bytes.next().await {
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                let t = crate::http::transport(e);
                return incomplete(
                    alias,
                    format!("the stream broke off after {chunks} chunks: {t}"),
                    started,
                    first_token,
                );
            }
        };
        for event in parser.feed(&piece) {
            if done {
                continue;
            }
            if event.trim() == "[DONE]" {
                done = true;
                continue;
            }
            let Ok(chunk) = serde_json::from_str::<Value>(&event) else {
                return Outcome::fail(
                    Cause::BadResponse,
                    format!("alias {alias}: a stream event is not JSON"),
                )
                .details(excerpt(&env.redactor, &event))
                .into();
            };
            if chunk.get("error").is_some() {
                // A failure after the stream opened arrives as an error event.
                let code = chunk
                    .pointer("/error/code")
                    .and_then(|c| c.as_str().and_then(|s| s.parse().ok()).or(c.as_u64()))
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(500);
                let a = Answer {
                    status: code,
                    headers: headers.clone(),
                    text: event.clone(),
                    elapsed: started.elapsed(),
                };
                let mut f = proxy_failure(env, alias, &key, &a);
                f.summary = format!("{} (an error event in the stream)", f.summary);
                return f.into();
            }
            chunks += 1;
            for choice in chunk
                .get("choices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str)
                    && !text.is_empty()
                {
                    deltas += 1;
                    content.push_str(text);
                    first_token.get_or_insert_with(|| started.elapsed());
                }
            }
            if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
                usage = Some(u.clone());
            }
            ctx.observe(format!(
                "alias {alias}: {chunks} chunks, {deltas} with content, waiting for [DONE]"
            ));
        }
    }
    let leftover = parser.finish();
    if !done {
        let tail = if leftover {
            " (its last event was not terminated)"
        } else {
            ""
        };
        return incomplete(
            alias,
            format!("the stream ended after {chunks} chunks without data: [DONE]{tail}"),
            started,
            first_token,
        );
    }
    let Some(ttft) = first_token else {
        return incomplete(
            alias,
            format!("the stream carried no content ({chunks} chunks, then [DONE])"),
            started,
            None,
        );
    };
    let total = started.elapsed();
    let mut metrics = Metrics::default();
    metrics
        .millis("ttft_ms", ttft)
        .millis("latency_ms", total)
        .count("chunks", chunks);
    if let Some(n) = usage
        .as_ref()
        .and_then(|u| u.get("completion_tokens"))
        .and_then(Value::as_u64)
    {
        metrics.count("completion_tokens", n);
    }
    let said: String = env
        .redactor
        .redact(content.trim())
        .chars()
        .take(60)
        .collect();
    let mut p = Passed {
        summary: format!(
            "alias {alias} streamed {deltas} content deltas, first token after {} ms, [DONE] after {} ms: {said:?}",
            ttft.as_millis(),
            total.as_millis()
        ),
        metrics,
        ..Passed::default()
    };
    if usage.is_none() {
        p = p.note("no usage chunk, although stream_options.include_usage was set");
    }
    if let Some(n) = guardrail_note(&headers) {
        p = p.note(n);
    }
    p.into()
}

fn incomplete(
    alias: &str,
    why: String,
    started: Instant,
    first_token: Option<std::time::Duration>,
) -> Outcome {
    let mut f = Outcome::fail(Cause::StreamIncomplete, format!("alias {alias}: {why}")).hint(
        "something between the client and vLLM cut or buffered the stream (an ingress timeout, a proxy without SSE support), or vLLM stopped: the proxy's log shows which",
    );
    f.metrics.millis("latency_ms", started.elapsed());
    if let Some(t) = first_token {
        f.metrics.millis("ttft_ms", t);
    }
    f.into()
}
