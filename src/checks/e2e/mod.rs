//! End to end, per alias: a real chat request through the proxy to vLLM, plain and streaming,
//! and the proof that the trimming guardrail trims. Every request is cheap (a handful of
//! `max_tokens`, a short fixed prompt except the deliberately oversized one), sent with
//! `"num_retries": 0` so a dead backend fails at once instead of after the router's retries,
//! and each check sends at most one model request per attempt.
//!
//! Errors are attributed by [`crate::checks::litellm::classify`]: same status, different cause.

pub mod ingress;
pub mod sse;
mod trimming;

use std::time::Instant;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::check::{ALIAS, Attempt, Check, Family};
use crate::checks::keys::{self, Key, Loaded};
use crate::checks::litellm::classify::{self, ProxyError};
use crate::checks::litellm::{self, any_guardrail, no_answer};
use crate::checks::vllm;
use crate::context::Context;
use crate::http::{Answer, HttpError, MAX_ANSWER, TooLarge, excerpt, header};
use crate::outcome::{Cause, Failure, Layer, Metrics, Passed, Prerequisite, ProbeResult};
use crate::text::size;

/// Short and deterministic: what the proxy answers does not matter, that it answers does.
const PROMPT: &str = "Reply with the single word: ok";
/// A handful of tokens: enough to see content, cheap on any model.
const MAX_TOKENS: u32 = 5;
/// Caps of one stream (with [`sse::MAX_LINE`] and [`sse::MAX_EVENT`]): a 5-token answer
/// streams about ten events (the role, a delta per token, the finish reason, usage) in a few
/// KiB, and a few dozen bytes of content. The byte cap is [`crate::http::MAX_ANSWER`].
const MAX_EVENTS: u64 = 1024;
const MAX_CONTENT: usize = 64 << 10;
/// The header LiteLLM names the guardrails a request went through in.
pub(crate) const APPLIED_GUARDRAILS: &str = "x-litellm-applied-guardrails";

/// `e2e::chat::<alias>`.
pub fn chat_name(alias: &str) -> String {
    format!("e2e::chat::{alias}")
}

/// `e2e::chat::<alias>::stream`.
pub fn stream_name(alias: &str) -> String {
    format!("e2e::chat::{alias}::stream")
}

/// `e2e::trimming::<alias>`.
pub fn trimming_name(alias: &str) -> String {
    format!("e2e::trimming::{alias}")
}

/// `e2e::trimming::<alias>::control`.
pub fn control_name(alias: &str) -> String {
    format!("e2e::trimming::{alias}::control")
}

pub fn families() -> Vec<Family> {
    vec![
        Family::new(chat_name(ALIAS), |cx, alias| {
            let name = chat_name(alias);
            let alias = alias.to_string();
            let check = Check::new(name, Layer::E2e, move |cx, attempt| {
                let alias = alias.clone();
                async move { chat(&cx, &attempt, &alias).await }
            });
            Some(after(check, cx, "", false))
        })
        .per_deployment(),
        Family::new(stream_name(ALIAS), |cx, alias| {
            let name = stream_name(alias);
            let alias = alias.to_string();
            let check = Check::new(name, Layer::E2e, move |cx, attempt| {
                let alias = alias.clone();
                async move { stream(&cx, &attempt, &alias).await }
            });
            Some(after(check, cx, "", false))
        })
        .per_deployment(),
        trimming::family(),
        trimming::control_family(),
    ]
}

/// What an alias's end-to-end checks require (and are skipped by, when it fails): a live
/// proxy, beside which they start (a proxy that is not live refuses them at once, at no
/// model's cost), and, where the context window is read from vLLM, `vllm::models` of its
/// backend, after which they start. Without this, a dead proxy or a rejected key would fail
/// every alias's checks in cascade.
pub(crate) fn after(mut check: Check, cx: &Context, alias: &str, needs_window: bool) -> Check {
    check = check.beside(litellm::LIVE);
    if !needs_window {
        return check;
    }
    let backend = cx
        .proxy_config
        .as_ref()
        .ok()
        .and_then(|c| c.alias(alias))
        .and_then(|a| a.api_base.as_deref())
        .and_then(|base| cx.endpoints.vllm(base).ok())
        .and_then(|t| {
            cx.suite
                .vllm
                .iter()
                .position(|v| v.namespace == t.namespace && v.service.name == t.service)
        });
    match backend {
        Some(i) if cx.suite.vllm[i].max_model_len.is_none() => {
            check.requires(Prerequisite::Check(vllm::models_name(&cx.suite, i)))
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
async fn prepare(cx: &Context, attempt: &Attempt) -> Result<(Loaded, String), Failure> {
    attempt.observe("reading the chat key");
    let key = keys::load(cx, Key::Chat).await?;
    Ok((key, cx.endpoints.litellm.url("/v1/chat/completions")))
}

/// How long a check that met an alias's cooldown waits for the failure that caused it (the
/// answer carrying it may still be on its way to a sibling check).
const COOLDOWN_CAUSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// An error answer of the proxy for `alias`, attributed. A failure of the alias's deployment
/// is kept as the alias's root cause; a cooldown it caused is reported as that root cause
/// (the cooldown is only its consequence), when a check of this run met it.
pub(crate) async fn proxy_failure(
    cx: &Context,
    attempt: &Attempt,
    alias: &str,
    key: &Loaded,
    a: &Answer,
) -> Failure {
    let f = classified(cx, alias, key, a);
    match f.cause {
        Cause::UpstreamAuth | Cause::UpstreamUnreachable | Cause::UpstreamError => {
            cx.alias_failures.record(alias, &f);
            f
        }
        Cause::Cooldown => {
            let within = attempt
                .remaining()
                .unwrap_or(COOLDOWN_CAUSE_WAIT)
                .min(COOLDOWN_CAUSE_WAIT);
            match cx.alias_failures.wait_for(alias, within).await {
                Some(root) => Failure {
                    details: Some(format!(
                        "this check's own request met the cooldown that failure put the alias in: {}",
                        f.details.as_deref().unwrap_or_default()
                    )),
                    metrics: f.metrics,
                    ..root
                },
                None => f,
            }
        }
        _ => f,
    }
}

/// An error answer of the proxy for `alias`, classified.
fn classified(cx: &Context, alias: &str, key: &Loaded, a: &Answer) -> Failure {
    let e = ProxyError::parse(a.status, &a.text, &cx.redactor);
    let guardrail = any_guardrail(cx, alias);
    let coupling = crate::checks::keys::coupling_hint(&cx.suite);
    let logs = crate::checks::keys::proxy_logs(&cx.suite);
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
        excerpt(&cx.redactor, &a.text)
    ));
    f.metrics.millis("latency_ms", a.elapsed);
    f
}

/// `usage.<field>` of an answer or a stream chunk: `Ok(None)` when absent, an error naming
/// it when it is not a token count (more than `u32::MAX` is more than any context window).
pub(crate) fn usage_tokens(body: &Value, field: &str) -> Result<Option<u32>, String> {
    match body.get("usage").and_then(|u| u.get(field)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|t| u32::try_from(t).ok())
            .map(Some)
            .ok_or_else(|| format!("usage.{field} {n} is not a token count")),
        Some(_) => Err(format!("usage.{field} is not a number")),
    }
}

/// The HTTP status an error event in a stream stands for: its `error.code` when that is an
/// error status (LiteLLM sends the string "500"), else 500.
fn event_status(chunk: &Value) -> u16 {
    chunk
        .pointer("/error/code")
        .and_then(|c| c.as_u64().or_else(|| c.as_str()?.trim().parse().ok()))
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..=599).contains(c))
        .unwrap_or(500)
}

fn guardrail_note(headers: &reqwest::header::HeaderMap) -> Option<String> {
    header(headers, APPLIED_GUARDRAILS).map(|g| format!("guardrails applied: {g}"))
}

async fn chat(cx: &Context, attempt: &Attempt, alias: &str) -> ProbeResult {
    let (key, url) = prepare(cx, attempt).await?;
    attempt.observe(format!("waiting for POST {url} (alias {alias})"));
    let a = cx
        .http
        .post(
            &url,
            Some(&key.value),
            &chat_body(alias, PROMPT, MAX_TOKENS),
        )
        .await
        .map_err(|t| no_answer(cx, &url, &t))?;
    if !a.ok() {
        return Err(proxy_failure(cx, attempt, alias, &key, &a).await);
    }
    let bad = |what: &str| -> Failure {
        let mut f = Failure::new(Cause::BadResponse, format!("alias {alias}: 200 {what}"))
            .details(excerpt(&cx.redactor, &a.text));
        f.metrics.millis("latency_ms", a.elapsed);
        f
    };
    let Some(body) = a.json() else {
        return Err(bad("but the body is not JSON"));
    };
    let content = body
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_string();
    if content.is_empty() {
        return Err(bad("without content in choices[0].message.content"));
    }
    let (prompt, completion) = match (
        usage_tokens(&body, "prompt_tokens"),
        usage_tokens(&body, "completion_tokens"),
    ) {
        (Ok(Some(p)), Ok(Some(c))) => (p, c),
        (Err(why), _) | (_, Err(why)) => return Err(bad(&format!("but {why}"))),
        _ => return Err(bad("without usage (prompt_tokens, completion_tokens)")),
    };
    let mut metrics = Metrics::default();
    metrics
        .millis("latency_ms", a.elapsed)
        .count("prompt_tokens", u64::from(prompt))
        .count("completion_tokens", u64::from(completion));
    let said = cx.redactor.cut(&content, 60);
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
    Ok(p.into())
}

async fn stream(cx: &Context, attempt: &Attempt, alias: &str) -> ProbeResult {
    let (key, url) = prepare(cx, attempt).await?;
    let mut body = chat_body(alias, PROMPT, MAX_TOKENS);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    attempt.observe(format!(
        "waiting for the stream's headers from POST {url} (alias {alias})"
    ));
    let started = Instant::now();
    // The slot is held until the stream has been read (dropped when this probe returns).
    let (resp, _slot) = cx
        .http
        .post_streaming(&url, Some(&key.value), &body)
        .await
        .map_err(|e| no_answer(cx, &url, &e))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    if !(200..300).contains(&status) {
        // Errors come back as plain JSON, not SSE. Their status alone still says something
        // when the body breaks off.
        let text = match crate::http::text(resp, "POST").await {
            Ok(t) => t,
            Err(HttpError::TooLarge(t)) => return Err(crate::checks::too_large(&t)),
            Err(HttpError::NoAnswer(_)) => String::new(),
        };
        let a = Answer {
            status,
            headers,
            text,
            elapsed: started.elapsed(),
        };
        return Err(proxy_failure(cx, attempt, alias, &key, &a).await);
    }
    let content_type = header(&headers, "content-type").unwrap_or_default();
    if !content_type.starts_with("text/event-stream") {
        let text = match crate::http::text(resp, "POST").await {
            Ok(t) => t,
            Err(HttpError::TooLarge(t)) => return Err(crate::checks::too_large(&t)),
            Err(HttpError::NoAnswer(_)) => String::new(),
        };
        return Err(Failure::new(
            Cause::BadResponse,
            format!("alias {alias}: a streaming request got {status} {content_type:?}, not text/event-stream"),
        )
        .details(excerpt(&cx.redactor, &text)));
    }

    let mut parser = sse::Parser::default();
    let mut read = 0usize;
    let mut events = 0u64;
    let mut chunks = 0u64;
    let mut deltas = 0u64;
    let mut first_token = None;
    let mut done = false;
    let mut usage: Option<Value> = None;
    let mut content = String::new();
    let mut bytes = resp.bytes_stream();
    let stream_of = format!("the stream from POST {url}");
    let over = |what: &str, cap: String, how: String| -> Failure {
        crate::checks::too_large(&TooLarge {
            what: what.to_string(),
            cap,
            how,
        })
    };
    attempt.observe(format!(
        "alias {alias}: stream open, waiting for the first token"
    ));
    // Read until [DONE], and not a byte further: a server may hold the stream open after it.
    'stream: while let Some(piece) = bytes.next().await {
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                let t = crate::http::transport(e);
                return Err(incomplete(
                    alias,
                    format!("the stream broke off after {chunks} chunks: {t}"),
                    started,
                    first_token,
                ));
            }
        };
        read += piece.len();
        if read > MAX_ANSWER {
            return Err(over(
                &stream_of,
                size(MAX_ANSWER as u64),
                format!(
                    "read {} in {events} events, then stopped",
                    size(MAX_ANSWER as u64)
                ),
            ));
        }
        let parsed = match parser.feed(&piece) {
            Ok(p) => p,
            Err(o) => {
                let (what, cap) = o.what();
                return Err(over(
                    &format!("{what} of {stream_of}"),
                    size(cap as u64),
                    format!("after {events} events; stopped there"),
                ));
            }
        };
        for event in parsed {
            if event.trim() == "[DONE]" {
                done = true;
                break 'stream;
            }
            events += 1;
            if events > MAX_EVENTS {
                return Err(over(
                    &stream_of,
                    format!("{MAX_EVENTS} events"),
                    "without [DONE]; stopped there".into(),
                ));
            }
            let Ok(chunk) = serde_json::from_str::<Value>(&event) else {
                return Err(Failure::new(
                    Cause::BadResponse,
                    format!("alias {alias}: a stream event is not JSON"),
                )
                .details(excerpt(&cx.redactor, &event)));
            };
            if chunk.get("error").is_some() {
                // A failure after the stream opened arrives as an error event.
                let a = Answer {
                    status: event_status(&chunk),
                    headers: headers.clone(),
                    text: event.clone(),
                    elapsed: started.elapsed(),
                };
                let mut f = proxy_failure(cx, attempt, alias, &key, &a).await;
                f.summary = format!("{} (an error event in the stream)", f.summary);
                return Err(f);
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
                    if content.len() + text.len() > MAX_CONTENT {
                        return Err(over(
                            &format!("the content streamed from POST {url}"),
                            size(MAX_CONTENT as u64),
                            format!(
                                "after {deltas} deltas, asked for {MAX_TOKENS} tokens; stopped there"
                            ),
                        ));
                    }
                    deltas += 1;
                    content.push_str(text);
                    first_token.get_or_insert_with(|| started.elapsed());
                }
            }
            if chunk.get("usage").is_some_and(|u| !u.is_null()) {
                if let Err(why) = usage_tokens(&chunk, "completion_tokens") {
                    return Err(Failure::new(
                        Cause::BadResponse,
                        format!("alias {alias}: the stream's usage chunk says {why}"),
                    )
                    .details(excerpt(&cx.redactor, &event)));
                }
                usage = chunk.get("usage").cloned();
            }
            attempt.observe(format!(
                "alias {alias}: {chunks} chunks, {deltas} with content, waiting for [DONE]"
            ));
        }
    }
    if !done {
        let tail = if parser.finish() {
            " (its last event was not terminated)"
        } else {
            ""
        };
        return Err(incomplete(
            alias,
            format!("the stream ended after {chunks} chunks without data: [DONE]{tail}"),
            started,
            first_token,
        ));
    }
    let Some(ttft) = first_token else {
        return Err(incomplete(
            alias,
            format!("the stream carried no content ({chunks} chunks, then [DONE])"),
            started,
            None,
        ));
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
    let said = cx.redactor.cut(content.trim(), 60);
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
    Ok(p.into())
}

fn incomplete(
    alias: &str,
    why: String,
    started: Instant,
    first_token: Option<std::time::Duration>,
) -> Failure {
    let mut f = Failure::new(Cause::StreamIncomplete, format!("alias {alias}: {why}")).hint(
        "something between the client and vLLM cut or buffered the stream (an ingress timeout, a proxy without SSE support), or vLLM stopped: the proxy's log shows which",
    );
    f.metrics.millis("latency_ms", started.elapsed());
    if let Some(t) = first_token {
        f.metrics.millis("ttft_ms", t);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_are_checked_not_trusted() {
        let body = |n: Value| json!({"usage": {"prompt_tokens": n}});
        assert_eq!(
            usage_tokens(&body(json!(12)), "prompt_tokens"),
            Ok(Some(12))
        );
        assert_eq!(usage_tokens(&json!({}), "prompt_tokens"), Ok(None));
        assert_eq!(usage_tokens(&body(Value::Null), "prompt_tokens"), Ok(None));
        assert_eq!(
            usage_tokens(&body(json!(u64::MAX)), "prompt_tokens"),
            Err("usage.prompt_tokens 18446744073709551615 is not a token count".into())
        );
        assert_eq!(
            usage_tokens(&body(json!(-3)), "prompt_tokens"),
            Err("usage.prompt_tokens -3 is not a token count".into())
        );
        assert_eq!(
            usage_tokens(&body(json!("12")), "prompt_tokens"),
            Err("usage.prompt_tokens is not a number".into())
        );
    }

    #[test]
    fn an_error_event_stands_for_its_code_only_when_that_is_an_error_status() {
        let event = |code: Value| json!({"error": {"message": "x", "code": code}});
        assert_eq!(event_status(&event(json!("401"))), 401);
        assert_eq!(event_status(&event(json!(429))), 429);
        for odd in [json!(200), json!(0), json!(99999), json!("abc"), json!(-1)] {
            assert_eq!(event_status(&event(odd.clone())), 500, "{odd}");
        }
        assert_eq!(event_status(&json!({"error": "boom"})), 500);
    }
}
