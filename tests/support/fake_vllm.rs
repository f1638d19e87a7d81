//! A faithful fake vLLM (OpenAI-compatible server) for the end-to-end bed.
//!
//! It reproduces what smokecheck and the LiteLLM proxy see from a real vLLM 0.6-style server
//! (`reference/litellm-behaviour.md`, "vLLM (for the fake)"): `/health` open with an empty body,
//! `/version`, `/metrics`, key-protected `/v1/*` answering 401 `{"error":"Unauthorized"}`,
//! `/v1/models` with `max_model_len`, and `/v1/chat/completions` (plain and SSE streaming with
//! `stream_options.include_usage`) with vLLM's exact error bodies for an unknown model and for a
//! prompt over the context window.
//!
//! Token counting: a prompt's tokens are its whitespace-separated words (over every message's
//! text). The trimming guardrail fixture counts with LiteLLM's `token_counter` (tiktoken cl100k
//! plus per-message overhead), and every whitespace-separated word is at least one cl100k token,
//! so a prompt the guardrail trimmed to B tokens is at most B words here. A prompt made of a
//! one-token word repeated (`"word word ..."`) counts about the same both ways (600 words are
//! 608 tokens for LiteLLM), which keeps "oversized" meaning the same on both sides.
//!
//! It runs on its own tokio runtime (its own threads), so sync and async tests can use it alike,
//! and stops when dropped. Fault knobs are flipped at run time from any thread.
//!
//! Latency ([`FakeVllm::set_latency`]) models a real model server's timing per endpoint, for
//! benchmarks: `/health` and `/v1/models` quick, a completion slow, a stream's headers at once,
//! its first token after the time to first token and `[DONE]` when the completion's time is up.
//! Only answered completions take the model's time; refusals (401, context length) are quick,
//! as vLLM's are.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::task::{AbortHandle, JoinHandle};

use super::in_flight::InFlight;
use super::latency::ModelLatency;

/// The words a completion is made of; a completion is the first `max_tokens` of them.
const REPLY: &str = "Hello from the fake vLLM: this answer is deterministic.";
/// How many requests `requests()` remembers.
const SEEN_CAPACITY: usize = 256;
/// What `/version` reports: the error bodies below are that generation's (`{"object":"error"}`).
const VLLM_VERSION: &str = "0.6.3.post1";

/// A fault the fake reproduces until it is cleared with `Fault::None`.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Healthy: clears the delay and the status override, and accepts connections again.
    None,
    /// Every request (except `/metrics` and `/version`) waits this long before being answered.
    Delay(Duration),
    /// `/health` and `/v1/*` answer this status (with a vLLM-like error body on `/v1/*`).
    Status(u16),
    /// The listening socket is closed and open connections are cut: clients get
    /// "connection refused", as from a pod that is gone. `Fault::None` binds the same port again.
    Down,
}

/// One request the fake received, so tests can prove what the proxy actually sent.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub path: String,
    /// `model` from a chat request's body.
    pub model: Option<String>,
    /// The prompt's size as this fake counts it (whitespace-separated words of all messages).
    pub prompt_tokens: Option<u32>,
    pub message_count: Option<usize>,
    pub max_tokens: Option<u32>,
    pub stream: bool,
    /// Whether the request carried the expected `Authorization: Bearer <key>`.
    pub authorized: bool,
    /// The status the fake answered.
    pub status: u16,
}

struct Knobs {
    api_key: String,
    delay: Duration,
    status: Option<u16>,
    /// Appended to the message of every status-override error body: a server that echoes
    /// what it should not (its key, the proxy's salt), for the leak sweep.
    echo: Option<String>,
    /// The model server's own timing, per endpoint (not a fault: `Fault::None` keeps it).
    latency: ModelLatency,
}

struct Shared {
    /// smokecheck's own requests being answered (a chat through LiteLLM is LiteLLM's, not
    /// counted): smokecheck's per-backend cap.
    smokecheck_in_flight: InFlight,
    models: Vec<(String, u32)>,
    knobs: Mutex<Knobs>,
    seen: Mutex<VecDeque<SeenRequest>>,
    counter: Mutex<u64>,
}

#[derive(Default)]
struct Server {
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

/// A running fake vLLM on `127.0.0.1:<random port>`.
pub struct FakeVllm {
    rt: Option<Runtime>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Server>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding a knob must not poison every other test.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeVllm {
    /// smokecheck's own requests (not LiteLLM's): the peak so far and each one's span.
    pub fn smokecheck_in_flight(&self) -> &InFlight {
        &self.shared.smokecheck_in_flight
    }

    /// Serves `models` (served name, `max_model_len`) behind `api_key`.
    pub fn start(models: &[(&str, u32)], api_key: &str) -> FakeVllm {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-vllm")
            .enable_all()
            .build()
            .expect("building the fake vLLM's tokio runtime");
        let listener =
            StdListener::bind("127.0.0.1:0").expect("binding the fake vLLM to 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake vLLM local address");
        let shared = Arc::new(Shared {
            smokecheck_in_flight: InFlight::default(),
            models: models.iter().map(|(n, l)| (n.to_string(), *l)).collect(),
            knobs: Mutex::new(Knobs {
                api_key: api_key.to_string(),
                delay: Duration::ZERO,
                status: None,
                echo: None,
                latency: ModelLatency::default(),
            }),
            seen: Mutex::new(VecDeque::new()),
            counter: Mutex::new(0),
        });
        let fake = FakeVllm {
            rt: Some(rt),
            addr,
            shared,
            server: Mutex::new(Server::default()),
        };
        fake.serve(listener);
        fake
    }

    /// `http://127.0.0.1:PORT` (LiteLLM's `api_base` is this plus `/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets one fault; `Fault::None` clears them all. Faults other than `Down` combine (a
    /// delay and a status override can both be on).
    pub fn set_fault(&self, fault: Fault) {
        match fault {
            Fault::None => {
                {
                    let mut k = lock(&self.shared.knobs);
                    k.delay = Duration::ZERO;
                    k.status = None;
                }
                self.set_down(false);
            }
            Fault::Delay(d) => self.set_delay(d),
            Fault::Status(s) => self.set_status(Some(s)),
            Fault::Down => self.set_down(true),
        }
    }

    pub fn set_delay(&self, delay: Duration) {
        lock(&self.shared.knobs).delay = delay;
    }

    /// From now on, answers take this long per endpoint (see the module header).
    pub fn set_latency(&self, latency: ModelLatency) {
        lock(&self.shared.knobs).latency = latency;
    }

    /// `Some(503)`: answer 503 to `/health` and `/v1/*`; `None`: answer normally.
    pub fn set_status(&self, status: Option<u16>) {
        if let Some(s) = status {
            assert!(
                StatusCode::from_u16(s).is_ok(),
                "fake vLLM: {s} is not an HTTP status"
            );
        }
        lock(&self.shared.knobs).status = status;
    }

    /// Text every status-override error body carries in its message from now on (`None`: the
    /// plain message again). LiteLLM relays the message in its own error.
    pub fn set_error_echo(&self, echo: Option<&str>) {
        lock(&self.shared.knobs).echo = echo.map(str::to_string);
    }

    /// The key `/v1/*` requires from now on (a different key than the proxy's: the coupling fault).
    pub fn set_api_key(&self, key: &str) {
        lock(&self.shared.knobs).api_key = key.to_string();
    }

    /// Down: close the listener and cut open connections (keep-alive ones too, or a client's
    /// pooled connection would still reach a "dead" server). Up: bind the same port again.
    pub fn set_down(&self, down: bool) {
        let mut server = lock(&self.server);
        if down {
            if let Some(accept) = server.accept.take() {
                accept.abort();
                wait_finished(|| accept.is_finished(), "closing its listener");
            }
            let conns = std::mem::take(&mut *lock(&server.conns));
            for c in &conns {
                c.abort();
            }
            wait_finished(
                || conns.iter().all(|c| c.is_finished()),
                "cutting its connections",
            );
        } else if server.accept.is_none() {
            let deadline = Instant::now() + Duration::from_secs(5);
            let listener = loop {
                match StdListener::bind(self.addr) {
                    Ok(l) => break l,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!("fake vLLM: rebinding {} after Down: {e}", self.addr),
                }
            };
            drop(server);
            self.serve(listener);
        }
    }

    pub fn is_down(&self) -> bool {
        lock(&self.server).accept.is_none()
    }

    /// The requests received so far (oldest first; the last 256).
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.shared.seen).iter().cloned().collect()
    }

    pub fn last_request(&self) -> Option<SeenRequest> {
        lock(&self.shared.seen).back().cloned()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.seen).clear();
    }

    fn serve(&self, listener: StdListener) {
        let rt = self.rt.as_ref().expect("fake vLLM runtime");
        listener
            .set_nonblocking(true)
            .expect("fake vLLM listener non-blocking");
        let _guard = rt.enter();
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("fake vLLM tokio listener");
        let mut server = lock(&self.server);
        let conns = server.conns.clone();
        let app = router(self.shared.clone());
        server.accept = Some(rt.spawn(accept_loop(listener, app, conns)));
    }
}

impl Drop for FakeVllm {
    fn drop(&mut self) {
        // shutdown_background: dropping a runtime inside an async test would panic.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn wait_finished(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "fake vLLM: {what} took over 5 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // EMFILE and friends: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let task = tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let mut conns = lock(&conns);
        conns.retain(|c| !c.is_finished());
        conns.push(task.abort_handle());
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            count_smokecheck,
        ))
        .with_state(shared)
}

/// Counts smokecheck's requests (by their user agent) while they are answered.
async fn count_smokecheck(
    State(s): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let ours = request
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("smokecheck/"));
    let _counted = ours.then(|| s.smokecheck_in_flight.enter(request.uri().path()));
    next.run(request).await
}

/// vLLM 0.6's error body: `{"object":"error","message":..,"type":..,"param":null,"code":N}`.
fn vllm_error(status: u16, kind: &str, message: &str) -> Response {
    let body =
        json!({"object": "error", "message": message, "type": kind, "param": null, "code": status});
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": "Unauthorized"})),
    )
        .into_response()
}

fn override_response(status: u16, echo: Option<&str>) -> Response {
    let kind = match status {
        400 => "BadRequestError",
        404 => "NotFoundError",
        429 => "RateLimitError",
        503 => "ServiceUnavailableError",
        s if s >= 500 => "InternalServerError",
        _ => "Error",
    };
    let mut message = format!("fake vLLM fault: status {status}");
    if let Some(echo) = echo {
        message.push_str(": ");
        message.push_str(echo);
    }
    vllm_error(status, kind, &message)
}

impl Shared {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let expected = format!("Bearer {}", lock(&self.knobs).api_key);
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            == Some(expected.as_str())
    }

    fn record(&self, seen: SeenRequest) {
        let mut q = lock(&self.seen);
        if q.len() == SEEN_CAPACITY {
            q.pop_front();
        }
        q.push_back(seen);
    }

    /// Delay then status override, the faults every served route shares.
    async fn faults(&self) -> Option<u16> {
        let (delay, status) = {
            let k = lock(&self.knobs);
            (k.delay, k.status)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        status
    }

    fn next_id(&self) -> u64 {
        let mut c = lock(&self.counter);
        *c += 1;
        *c
    }
}

fn plain(path: &str, status: u16, authorized: bool) -> SeenRequest {
    SeenRequest {
        path: path.to_string(),
        model: None,
        prompt_tokens: None,
        message_count: None,
        max_tokens: None,
        stream: false,
        authorized,
        status,
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    let status = s.faults().await.unwrap_or(200);
    let pause = lock(&s.knobs).latency.health.sample();
    sleep_unless_zero(pause).await;
    s.record(plain("/health", status, true));
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (code, Body::empty()).into_response()
}

async fn version() -> Response {
    axum::Json(json!({"version": VLLM_VERSION})).into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let mut text = String::from(
        "# HELP vllm:num_requests_running Number of requests currently running on GPU.\n\
         # TYPE vllm:num_requests_running gauge\n",
    );
    for (name, _) in &s.models {
        text.push_str(&format!(
            "vllm:num_requests_running{{model_name=\"{name}\"}} 0.0\n"
        ));
    }
    text.push_str(
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
         # TYPE vllm:num_requests_waiting gauge\n",
    );
    for (name, _) in &s.models {
        text.push_str(&format!(
            "vllm:num_requests_waiting{{model_name=\"{name}\"}} 0.0\n"
        ));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn models(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let fault = s.faults().await;
    let pause = lock(&s.knobs).latency.models.sample();
    sleep_unless_zero(pause).await;
    let authorized = s.authorized(&headers);
    let response = if let Some(status) = fault {
        override_response(status, lock(&s.knobs).echo.as_deref())
    } else if !authorized {
        unauthorized()
    } else {
        let created = now_secs();
        let data: Vec<Value> = s
            .models
            .iter()
            .map(|(name, max_model_len)| {
                json!({
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "vllm",
                    "root": name,
                    "parent": null,
                    "max_model_len": max_model_len,
                    "permission": [{
                        "id": format!("modelperm-fake{}", s.next_id()),
                        "object": "model_permission",
                        "created": created,
                        "allow_create_engine": false,
                        "allow_sampling": true,
                        "allow_logprobs": true,
                        "allow_search_indices": false,
                        "allow_view": true,
                        "allow_fine_tuning": false,
                        "organization": "*",
                        "group": null,
                        "is_blocking": false
                    }]
                })
            })
            .collect();
        axum::Json(json!({"object": "list", "data": data})).into_response()
    };
    s.record(plain("/v1/models", response.status().as_u16(), authorized));
    response
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"detail": "Not Found", "path": uri.path()})),
    )
        .into_response()
}

/// Words of every message's text: a string `content` or the `text` of its parts.
fn count_words(messages: &[Value]) -> u32 {
    let mut n = 0usize;
    for m in messages {
        match m.get("content") {
            Some(Value::String(t)) => n += t.split_whitespace().count(),
            Some(Value::Array(parts)) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        n += t.split_whitespace().count();
                    }
                }
            }
            _ => {}
        }
    }
    u32::try_from(n).unwrap_or(u32::MAX)
}

async fn chat(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let req = parsed.as_ref();
    let messages: Option<&Vec<Value>> = req
        .and_then(|r| r.get("messages"))
        .and_then(Value::as_array);
    let max_tokens = req
        .and_then(|r| {
            r.get("max_tokens")
                .or_else(|| r.get("max_completion_tokens"))
        })
        .and_then(Value::as_u64)
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX));
    let stream = req
        .and_then(|r| r.get("stream"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let include_usage = req
        .and_then(|r| r.pointer("/stream_options/include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let model = req
        .and_then(|r| r.get("model"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let prompt_tokens = messages.map(|m| count_words(m));

    let fault = s.faults().await;
    let authorized = s.authorized(&headers);
    let response = if let Some(status) = fault {
        override_response(status, lock(&s.knobs).echo.as_deref())
    } else if !authorized {
        unauthorized()
    } else if let (Some(model), Some(prompt)) = (&model, prompt_tokens) {
        match s.models.iter().find(|(n, _)| n == model) {
            None => vllm_error(
                404,
                "NotFoundError",
                &format!("The model `{model}` does not exist."),
            ),
            Some((_, max_model_len)) => match context_error(prompt, max_tokens, *max_model_len) {
                Some(message) => vllm_error(400, "BadRequestError", &message),
                None => {
                    let timing = Timing::draw(&s);
                    if !stream {
                        sleep_unless_zero(timing.total).await;
                    }
                    completion(
                        &s,
                        model,
                        prompt,
                        max_tokens,
                        stream.then_some(timing),
                        include_usage,
                    )
                }
            },
        }
    } else {
        vllm_error(
            400,
            "BadRequestError",
            "[{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required'}]",
        )
    };
    s.record(SeenRequest {
        path: "/v1/chat/completions".to_string(),
        model,
        prompt_tokens,
        message_count: messages.map(Vec::len),
        max_tokens,
        stream,
        authorized,
        status: response.status().as_u16(),
    });
    response
}

/// vLLM 0.6's check (`serving_engine._validate_input`), word for word.
fn context_error(prompt: u32, max_tokens: Option<u32>, max_model_len: u32) -> Option<String> {
    match max_tokens {
        None if prompt >= max_model_len => Some(format!(
            "This model's maximum context length is {max_model_len} tokens. However, you requested \
             {prompt} tokens in the messages, Please reduce the length of the messages."
        )),
        Some(completion)
            if u64::from(prompt) + u64::from(completion) > u64::from(max_model_len) =>
        {
            Some(format!(
                "This model's maximum context length is {max_model_len} tokens. However, you requested {} tokens \
             ({prompt} in the messages, {completion} in the completion). Please reduce the length of the \
             messages or completion.",
                u64::from(prompt) + u64::from(completion)
            ))
        }
        _ => None,
    }
}

async fn sleep_unless_zero(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// When a completion's parts are due, from the moment it was accepted.
#[derive(Clone, Copy, Debug)]
struct Timing {
    start: tokio::time::Instant,
    first_token: Duration,
    total: Duration,
}

impl Timing {
    fn draw(s: &Shared) -> Timing {
        let mut k = lock(&s.knobs);
        let total = k.latency.completion.sample();
        let first_token = k.latency.first_token.sample().min(total);
        Timing {
            start: tokio::time::Instant::now(),
            first_token,
            total,
        }
    }

    /// When each of a stream's `events` is due: the role chunk and the first content token at
    /// the time to first token, the other `tokens - 1` content tokens evenly after it, the
    /// closing chunks (finish, usage, `[DONE]`) at the total.
    fn schedule(&self, events: usize, tokens: usize) -> Vec<tokio::time::Instant> {
        let gen_time = self.total.saturating_sub(self.first_token);
        (0..events)
            .map(|i| {
                let offset = match i {
                    0 => self.first_token,
                    i if i <= tokens => {
                        let step = gen_time.mul_f64((i - 1) as f64 / tokens.max(1) as f64);
                        self.first_token + step
                    }
                    _ => self.total,
                };
                self.start + offset
            })
            .collect()
    }
}

/// A completion's answer; `stream` carries the timing of its events (a plain answer has
/// already waited for its whole time).
fn completion(
    s: &Shared,
    model: &str,
    prompt: u32,
    max_tokens: Option<u32>,
    stream: Option<Timing>,
    include_usage: bool,
) -> Response {
    let words: Vec<&str> = REPLY.split(' ').collect();
    let n = max_tokens.map_or(words.len(), |m| (m as usize).min(words.len()));
    let finish = if n < words.len() { "length" } else { "stop" };
    let completion_tokens = n as u32;
    let usage = json!({
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": null
    });
    let id = format!("chatcmpl-fake{:016x}", s.next_id());
    let created = now_secs();
    let Some(timing) = stream else {
        let content = words[..n].join(" ");
        let body = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "tool_calls": []},
                "logprobs": null,
                "finish_reason": finish,
                "stop_reason": null
            }],
            "usage": usage,
            "prompt_logprobs": null
        });
        return axum::Json(body).into_response();
    };
    let chunk = |choices: Value| {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices});
        format!("data: {c}\n\n")
    };
    let mut events = vec![chunk(json!([{
        "index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null
    }]))];
    for (i, w) in words[..n].iter().enumerate() {
        let piece = if i == 0 {
            w.to_string()
        } else {
            format!(" {w}")
        };
        events.push(chunk(json!([{
            "index": 0, "delta": {"content": piece}, "logprobs": null, "finish_reason": null
        }])));
    }
    events.push(chunk(json!([{
        "index": 0, "delta": {"content": ""}, "logprobs": null, "finish_reason": finish, "stop_reason": null
    }])));
    if include_usage {
        let c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": usage
        });
        events.push(format!("data: {c}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_string());
    let due = timing.schedule(events.len(), n);
    let stream = futures::StreamExt::then(
        futures::stream::iter(events.into_iter().zip(due)),
        |(event, due)| async move {
            tokio::time::sleep_until(due).await;
            Ok::<_, std::convert::Infallible>(event)
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
