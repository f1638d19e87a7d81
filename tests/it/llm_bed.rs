//! Proves the end-to-end bed reproduces what the real deployment answers
//! (reference/litellm-behaviour.md, "What a client sees"): the fake vLLM on its own, then the
//! real LiteLLM proxy in front of it, one scenario alias per test so faults never cross.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::fake_vllm::{FakeVllm, Fault, SeenRequest};
use crate::support::litellm::{
    self, FailedStart, MASTER_KEY, MAX_MODEL_LEN, OTHER_VLLM_KEY, SERVED_MODEL, SLOW_DELAY,
    VLLM_KEY, alias, litellm_proxy,
};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building the test HTTP client")
}

/// `n` copies of a word that is one cl100k token (see fake_vllm.rs on token counting).
fn words(n: usize) -> String {
    vec!["word"; n].join(" ")
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
    elapsed: Duration,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    fn error_message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let started = Instant::now();
    let resp = req.send().await.unwrap_or_else(|e| {
        panic!(
            "request failed: {e}\n--- proxy log ---\n{}",
            litellm_proxy().log_tail(40)
        )
    });
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("reading the response body");
    Answer {
        status,
        headers,
        text,
        elapsed: started.elapsed(),
    }
}

/// A chat request through the shared proxy, with the master key.
async fn proxy_chat(body: Value) -> Answer {
    let proxy = litellm_proxy();
    send(
        client()
            .post(format!("{}/v1/chat/completions", proxy.url()))
            .bearer_auth(MASTER_KEY)
            .json(&body),
    )
    .await
}

fn short_chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 5})
}

fn context(answer: &Answer) -> String {
    format!(
        "status {} after {:?}, body: {}\n--- proxy log ---\n{}",
        answer.status,
        answer.elapsed,
        answer.text,
        litellm_proxy().log_tail(40)
    )
}

// ---- the fake vLLM on its own ----

fn fake() -> FakeVllm {
    FakeVllm::start(&[(SERVED_MODEL, MAX_MODEL_LEN)], VLLM_KEY)
}

#[tokio::test]
async fn fake_vllm_health_is_open_and_v1_needs_the_key() {
    let fake = fake();
    let health = send(client().get(format!("{}/health", fake.url()))).await;
    assert_eq!((health.status, health.text.as_str()), (200, ""));

    for req in [
        client().get(format!("{}/v1/models", fake.url())),
        client()
            .get(format!("{}/v1/models", fake.url()))
            .bearer_auth("wrong"),
        client()
            .post(format!("{}/v1/chat/completions", fake.url()))
            .json(&short_chat(SERVED_MODEL)),
    ] {
        let a = send(req).await;
        assert_eq!(a.status, 401, "{}", a.text);
        assert_eq!(a.json(), json!({"error": "Unauthorized"}));
    }
    let seen = fake.requests();
    assert_eq!(seen.iter().filter(|r| !r.authorized).count(), 3, "{seen:?}");
}

#[tokio::test]
async fn fake_vllm_models_lists_max_model_len() {
    let fake = FakeVllm::start(
        &[(SERVED_MODEL, MAX_MODEL_LEN), ("acme/big", 131072)],
        VLLM_KEY,
    );
    let a = send(
        client()
            .get(format!("{}/v1/models", fake.url()))
            .bearer_auth(VLLM_KEY),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let body = a.json();
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().expect("data is a list");
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["id"], SERVED_MODEL);
    assert_eq!(data[0]["object"], "model");
    assert_eq!(data[0]["owned_by"], "vllm");
    assert_eq!(data[0]["root"], SERVED_MODEL);
    assert_eq!(data[0]["parent"], Value::Null);
    assert_eq!(data[0]["max_model_len"], MAX_MODEL_LEN);
    assert_eq!(data[1]["max_model_len"], 131072);
    assert!(data[0]["created"].is_u64());
}

#[tokio::test]
async fn fake_vllm_rejects_a_prompt_over_the_context_window_with_vllms_text() {
    let fake = fake();
    let body = json!({"model": SERVED_MODEL, "messages": [{"role": "user", "content": words(606)}], "max_tokens": 50});
    let a = send(
        client()
            .post(format!("{}/v1/chat/completions", fake.url()))
            .bearer_auth(VLLM_KEY)
            .json(&body),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(
        a.json(),
        json!({
            "object": "error",
            "message": "This model's maximum context length is 512 tokens. However, you requested 656 tokens \
                        (606 in the messages, 50 in the completion). Please reduce the length of the messages \
                        or completion.",
            "type": "BadRequestError",
            "param": null,
            "code": 400
        })
    );
    // Exactly at the limit is accepted (vLLM's check is `>`).
    let fits = json!({"model": SERVED_MODEL, "messages": [{"role": "user", "content": words(502)}], "max_tokens": 10});
    let a = send(
        client()
            .post(format!("{}/v1/chat/completions", fake.url()))
            .bearer_auth(VLLM_KEY)
            .json(&fits),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["usage"]["prompt_tokens"], 502);
}

#[tokio::test]
async fn fake_vllm_unknown_model_is_vllms_404() {
    let fake = fake();
    let a = send(
        client()
            .post(format!("{}/v1/chat/completions", fake.url()))
            .bearer_auth(VLLM_KEY)
            .json(&short_chat("nope")),
    )
    .await;
    assert_eq!(a.status, 404, "{}", a.text);
    assert_eq!(a.json()["message"], "The model `nope` does not exist.");
    assert_eq!(a.json()["type"], "NotFoundError");
}

#[tokio::test]
async fn fake_vllm_streams_deltas_then_usage_then_done() {
    let fake = fake();
    let mut body = short_chat(SERVED_MODEL);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let a = send(
        client()
            .post(format!("{}/v1/chat/completions", fake.url()))
            .bearer_auth(VLLM_KEY)
            .json(&body),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(
        a.headers[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(&a.text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk is JSON"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello from the fake vLLM:");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert_eq!(usage["usage"]["prompt_tokens"], 2);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );
}

#[tokio::test]
async fn fake_vllm_faults_delay_status_down_and_key_rotation() {
    let fake = fake();
    let health = || client().get(format!("{}/health", fake.url()));

    fake.set_fault(Fault::Status(503));
    let a = send(
        client()
            .post(format!("{}/v1/chat/completions", fake.url()))
            .bearer_auth(VLLM_KEY)
            .json(&short_chat(SERVED_MODEL)),
    )
    .await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(a.json()["type"], "ServiceUnavailableError");
    assert_eq!(send(health()).await.status, 503);

    fake.set_fault(Fault::None);
    fake.set_fault(Fault::Delay(Duration::from_millis(300)));
    let a = send(health()).await;
    assert_eq!(a.status, 200);
    assert!(a.elapsed >= Duration::from_millis(300), "{:?}", a.elapsed);

    fake.set_fault(Fault::None);
    // A pooled keep-alive connection must be cut too, not just new connections refused.
    let pooled = client();
    assert_eq!(
        send(pooled.get(format!("{}/health", fake.url())))
            .await
            .status,
        200
    );
    fake.set_fault(Fault::Down);
    assert!(fake.is_down());
    let err = pooled
        .get(format!("{}/health", fake.url()))
        .send()
        .await
        .expect_err("a down fake must not answer");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    let refused = std::net::TcpStream::connect(fake.addr()).expect_err("connect to a down fake");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

    fake.set_fault(Fault::None);
    assert_eq!(
        send(health()).await.status,
        200,
        "the fake comes back on the same port"
    );

    fake.set_api_key(OTHER_VLLM_KEY);
    let a = send(
        client()
            .get(format!("{}/v1/models", fake.url()))
            .bearer_auth(VLLM_KEY),
    )
    .await;
    assert_eq!(a.status, 401);
    let a = send(
        client()
            .get(format!("{}/v1/models", fake.url()))
            .bearer_auth(OTHER_VLLM_KEY),
    )
    .await;
    assert_eq!(a.status, 200);
}

/// The chat calls a fake received (LiteLLM also calls `/v1/models` on every backend at start).
fn chat_calls(fake: &FakeVllm) -> Vec<SeenRequest> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .collect()
}

fn sse_events(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

// ---- the real LiteLLM proxy ----

#[tokio::test]
async fn proxy_is_live_and_ready_without_a_database() {
    let proxy = litellm_proxy();
    let live = send(client().get(format!("{}/health/liveliness", proxy.url()))).await;
    assert_eq!(live.status, 200, "{}", context(&live));
    assert_eq!(live.json(), json!("I'm alive!"));
    let ready = send(client().get(format!("{}/health/readiness", proxy.url()))).await;
    assert_eq!(ready.status, 200, "{}", context(&ready));
    assert_eq!(ready.json()["status"], "healthy");
    assert_eq!(ready.json()["db"], "Not connected", "{}", ready.text);
}

#[tokio::test]
async fn proxy_refuses_a_request_without_a_key_with_401_auth_error() {
    let proxy = litellm_proxy();
    let a = send(
        client()
            .post(format!("{}/v1/chat/completions", proxy.url()))
            .json(&short_chat(alias::HEALTHY)),
    )
    .await;
    assert_eq!(a.status, 401, "{}", context(&a));
    assert_eq!(a.json()["error"]["type"], "auth_error");
    assert!(
        a.error_message().starts_with("Authentication Error"),
        "{}",
        a.text
    );
    // A bogus key without a database: 400 no_db_connection (with one: 401). Never 2xx.
    let b = send(
        client()
            .get(format!("{}/v1/models", proxy.url()))
            .bearer_auth("sk-bogus"),
    )
    .await;
    assert_eq!(b.status, 400, "{}", context(&b));
    assert_eq!(b.json()["error"]["type"], "no_db_connection", "{}", b.text);
}

#[tokio::test]
async fn proxy_lists_every_alias() {
    let proxy = litellm_proxy();
    let a = send(
        client()
            .get(format!("{}/v1/models", proxy.url()))
            .bearer_auth(MASTER_KEY),
    )
    .await;
    assert_eq!(a.status, 200, "{}", context(&a));
    let mut ids: Vec<String> = a.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = alias::ALL.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn proxy_chat_with_the_master_key_returns_usage_and_names_the_guardrail() {
    let a = proxy_chat(short_chat(alias::HEALTHY)).await;
    assert_eq!(a.status, 200, "{}", context(&a));
    let body = a.json();
    assert_eq!(
        body["choices"][0]["message"]["content"], "Hello from the fake vLLM:",
        "{}",
        a.text
    );
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    let applied = a
        .headers
        .get("x-litellm-applied-guardrails")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    assert_eq!(
        applied.as_deref(),
        Some("message_trimming"),
        "{:?}",
        a.headers
    );
    eprintln!("bed: chat through the proxy took {:?}", a.elapsed);
}

#[tokio::test]
async fn proxy_streams_content_deltas_usage_and_done() {
    let mut body = short_chat(alias::HEALTHY);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let proxy = litellm_proxy();
    let started = Instant::now();
    let resp = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .bearer_auth(MASTER_KEY)
        .json(&body)
        .send()
        .await
        .expect("streaming request");
    assert_eq!(resp.status().as_u16(), 200);
    let mut first_chunk = None;
    let mut raw = Vec::new();
    let mut stream = resp.bytes_stream();
    use futures::StreamExt;
    while let Some(chunk) = stream.next().await {
        first_chunk.get_or_insert_with(|| started.elapsed());
        raw.extend_from_slice(&chunk.expect("reading the SSE stream"));
    }
    let text = String::from_utf8(raw).expect("SSE is UTF-8");
    let events = sse_events(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk is JSON"))
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello from the fake vLLM:", "{text}");
    let usage: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["usage"]["completion_tokens"].is_u64())
        .collect();
    assert!(!usage.is_empty(), "no usage chunk in {text}");
    assert_eq!(
        usage.last().unwrap()["usage"]["completion_tokens"],
        5,
        "{text}"
    );
    eprintln!(
        "bed: stream first chunk after {:?}, done after {:?}",
        first_chunk.unwrap(),
        started.elapsed()
    );
}

#[tokio::test]
async fn proxy_trims_an_oversized_prompt_on_the_guardrailed_alias() {
    // max_tokens 7 is this test's marker among the requests `healthy`'s fake sees.
    let body = json!({"model": alias::HEALTHY, "messages": [{"role": "user", "content": words(600)}], "max_tokens": 7});
    let a = proxy_chat(body).await;
    assert_eq!(a.status, 200, "{}", context(&a));
    let prompt_tokens = a.json()["usage"]["prompt_tokens"]
        .as_u64()
        .expect("usage.prompt_tokens");
    assert!(
        prompt_tokens + 7 <= u64::from(MAX_MODEL_LEN),
        "usage says {prompt_tokens} prompt tokens"
    );
    assert!(
        prompt_tokens > 400,
        "trimmed far more than needed: {prompt_tokens}"
    );
    let seen = litellm_proxy().fake(alias::HEALTHY).requests();
    let sent = seen
        .iter()
        .rev()
        .find(|r| r.max_tokens == Some(7))
        .expect("the fake saw the trimmed request");
    assert_eq!(sent.prompt_tokens, Some(prompt_tokens as u32));
    assert_eq!(
        a.headers
            .get("x-litellm-applied-guardrails")
            .map(|v| v.to_str().unwrap()),
        Some("message_trimming")
    );
}

#[tokio::test]
async fn proxy_passes_an_oversized_prompt_through_when_trimming_is_off() {
    let body = json!({"model": alias::TRIM_OFF, "messages": [{"role": "user", "content": words(600)}], "max_tokens": 50});
    let a = proxy_chat(body.clone()).await;
    assert_eq!(a.status, 400, "{}", context(&a));
    let msg = a.error_message();
    assert!(
        msg.starts_with("litellm.ContextWindowExceededError"),
        "{msg}"
    );
    assert!(
        msg.contains("maximum context length is 512 tokens"),
        "{msg}"
    );
    assert_eq!(a.json()["error"]["type"], "invalid_request_error");
    assert_eq!(a.json()["error"]["code"], "400");
    let fake = litellm_proxy().fake(alias::TRIM_OFF);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.prompt_tokens == Some(600) && r.status == 400)
    );

    // Streaming gets the same error as plain JSON, not SSE.
    let mut streaming = body;
    streaming["stream"] = json!(true);
    let s = proxy_chat(streaming).await;
    assert_eq!(s.status, 400, "{}", context(&s));
    assert!(
        s.error_message().contains("ContextWindowExceededError"),
        "{}",
        s.text
    );
}

#[tokio::test]
async fn proxy_reports_vllm_rejecting_its_key_as_401_then_cooldown_429() {
    let fake = litellm_proxy().fake(alias::KEY_MISMATCH);
    let a = proxy_chat(short_chat(alias::KEY_MISMATCH)).await;
    assert_eq!(a.status, 401, "{}", context(&a));
    let msg = a.error_message();
    assert!(msg.starts_with("litellm.AuthenticationError"), "{msg}");
    assert!(msg.contains("Unauthorized"), "{msg}");
    assert_eq!(a.json()["error"]["type"], "authentication_error");
    let calls = chat_calls(fake).len();
    assert_eq!(calls, 1, "401 is not retried: {:?}", fake.requests());

    let b = proxy_chat(short_chat(alias::KEY_MISMATCH)).await;
    assert_eq!(b.status, 429, "{}", context(&b));
    assert!(b.text.contains("cooldown"), "{}", b.text);
    assert_eq!(
        chat_calls(fake).len(),
        calls,
        "in cooldown the backend is not called"
    );
    eprintln!("bed: key-mismatch 401 body: {}", a.text);
    eprintln!("bed: key-mismatch retry 429 body: {}", b.text);
}

#[tokio::test]
async fn proxy_reports_vllm_down_as_500_connection_error_fast_without_retries() {
    let mut body = short_chat(alias::DOWN);
    body["num_retries"] = json!(0);
    let a = proxy_chat(body).await;
    assert_eq!(a.status, 500, "{}", context(&a));
    assert!(a.error_message().contains("Connection error"), "{}", a.text);
    assert!(
        a.elapsed < Duration::from_secs(2),
        "num_retries 0 should fail fast: {:?}",
        a.elapsed
    );
    eprintln!("bed: down alias answered in {:?}: {}", a.elapsed, a.text);
}

#[tokio::test]
async fn proxy_passes_a_vllm_503_through() {
    let fake = litellm_proxy().fake(alias::FAULTY);
    fake.set_fault(Fault::Status(503));
    let mut body = short_chat(alias::FAULTY);
    body["num_retries"] = json!(0);
    let a = proxy_chat(body).await;
    fake.set_fault(Fault::None);
    assert_eq!(a.status, 503, "{}", context(&a));
    eprintln!(
        "bed: vLLM 503 through the proxy in {:?}: {}",
        a.elapsed, a.text
    );
}

#[tokio::test]
async fn proxy_waits_for_a_slow_vllm() {
    let a = proxy_chat(short_chat(alias::SLOW)).await;
    assert_eq!(a.status, 200, "{}", context(&a));
    assert!(a.elapsed >= SLOW_DELAY, "{:?}", a.elapsed);
}

#[tokio::test]
async fn proxy_rejects_an_unknown_alias_with_400_invalid_model_name() {
    let a = proxy_chat(short_chat("no-such-alias")).await;
    assert_eq!(a.status, 400, "{}", context(&a));
    assert!(
        a.error_message()
            .contains("Invalid model name passed in model=no-such-alias"),
        "{}",
        a.text
    );
}

#[tokio::test]
async fn proxy_reports_a_crashing_guardrail_as_500() {
    let a = proxy_chat(short_chat(alias::GUARDRAIL_CRASH)).await;
    assert_eq!(a.status, 500, "{}", context(&a));
    assert!(a.text.contains("guardrail crashed"), "{}", a.text);
    let fake = litellm_proxy().fake(alias::GUARDRAIL_CRASH);
    assert!(
        chat_calls(fake).is_empty(),
        "a pre_call guardrail that raised must stop the call: {:?}",
        fake.requests()
    );
    eprintln!("bed: crashing guardrail: {}", a.text);
}

#[test]
fn proxy_with_its_guardrail_module_missing_fails_to_start_with_the_import_error() {
    let FailedStart {
        status,
        became_ready,
        log,
        elapsed,
    } = litellm::start_with_missing_guardrail(litellm::START_TIMEOUT);
    let tail: String = log
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !became_ready,
        "the proxy became ready without its guardrail module\n{tail}"
    );
    let status = status.unwrap_or_else(|| {
        panic!("the proxy neither exited nor became ready in {elapsed:?}\n{tail}")
    });
    assert!(!status.success(), "exit status {status}\n{tail}");
    assert!(
        log.contains("ModuleNotFoundError") || log.contains("ImportError"),
        "no import error in the log:\n{tail}"
    );
    assert!(log.contains("custom_guardrails"), "{tail}");
    let cause = log
        .lines()
        .find(|l| l.contains("ModuleNotFoundError") || l.contains("ImportError"))
        .unwrap_or_default();
    eprintln!("bed: missing guardrail: {status} after {elapsed:?}: {cause}");
}

#[test]
fn proxy_footprint_is_measured() {
    let proxy = litellm_proxy();
    let rss = proxy.rss_kib().expect("reading the proxy's VmRSS");
    eprintln!(
        "bed: proxy ready {:?} after spawn, RSS {} MiB, pid {}",
        proxy.started_in(),
        rss / 1024,
        proxy.pid()
    );
    assert!(rss < 1024 * 1024, "proxy RSS {rss} KiB is over 1 GiB");
    assert!(proxy.config_path().exists());
}
