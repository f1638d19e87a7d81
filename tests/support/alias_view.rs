//! The bed's LiteLLM proxy as one deployment's proxy. The bed runs one real proxy for every test,
//! with an alias per scenario (litellm.rs); a deployment's proxy serves only the aliases of its
//! own config. The stack puts this view where port-forwards to the LiteLLM pods (and its TLS
//! fronts) arrive: every request is relayed to the shared proxy unchanged, answers streamed
//! back as they come, but `GET /v1/models` lists only the view's aliases. So `litellm::models`
//! compares the proxy config with what that deployment serves, and an alias served but absent
//! from the config is a state a stack chooses (`Fault::also_served`), not an accident of the
//! shared proxy. Its own thread and runtime; stops when dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::oneshot;

use super::in_flight::InFlight;

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

struct View {
    /// Requests being relayed, until the proxy's answer head is back (LiteLLM's side of
    /// smokecheck's per-destination caps).
    in_flight: Arc<InFlight>,
    upstream: String,
    aliases: Vec<String>,
    client: reqwest::Client,
}

pub struct AliasView {
    in_flight: Arc<InFlight>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AliasView {
    /// Relays to `upstream` (`http://127.0.0.1:PORT`), listing only `aliases` as models.
    pub fn start(upstream: &str, aliases: &[&str]) -> AliasView {
        let in_flight = Arc::new(InFlight::default());
        let view = Arc::new(View {
            in_flight: Arc::clone(&in_flight),
            upstream: upstream.trim_end_matches('/').to_string(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(10))
                .build()
                .expect("the alias view's HTTP client"),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the alias view");
        let addr = listener.local_addr().expect("alias view address");
        listener
            .set_nonblocking(true)
            .expect("alias view listener non-blocking");
        let app = Router::new().fallback(relay).with_state(view);
        let (shutdown, stop) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building the alias view's runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("adopting the listener");
                tokio::select! {
                    _ = stop => {}
                    _ = axum::serve(listener, app) => {}
                }
            });
        });
        AliasView {
            in_flight,
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests relayed to the proxy: the peak so far and each one's span.
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for AliasView {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for name in HOP_BY_HOP {
        out.remove(HeaderName::from_static(name));
    }
    out
}

async fn relay(State(view): State<Arc<View>>, request: Request) -> Response {
    let _counted = view.in_flight.enter(request.uri().path());
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    // The bed's largest request is the trimming prompt, a few kilobytes.
    let Ok(body) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body over 16 MiB").into_response();
    };
    let upstream = view
        .client
        .request(parts.method.clone(), format!("{}{path}", view.upstream))
        .headers(end_to_end(&parts.headers))
        .body(body)
        .send()
        .await;
    let answer = match upstream {
        Ok(answer) => answer,
        Err(e) => {
            return (StatusCode::BAD_GATEWAY, format!("alias view: {e}")).into_response();
        }
    };
    let status = answer.status();
    let mut headers = end_to_end(answer.headers());
    let lists_models = parts.method == axum::http::Method::GET
        && matches!(parts.uri.path(), "/v1/models" | "/models")
        && status.is_success();
    if lists_models {
        let Ok(bytes) = answer.bytes().await else {
            return (
                StatusCode::BAD_GATEWAY,
                "alias view: the model list broke off",
            )
                .into_response();
        };
        let body = match serde_json::from_slice::<Value>(&bytes) {
            Ok(mut doc) => {
                if let Some(data) = doc.get_mut("data").and_then(Value::as_array_mut) {
                    data.retain(|m| {
                        m.get("id")
                            .and_then(Value::as_str)
                            .is_some_and(|id| view.aliases.iter().any(|a| a == id))
                    });
                }
                doc.to_string().into_bytes()
            }
            // Not a model list: pass it on as it came.
            Err(_) => bytes.to_vec(),
        };
        headers.remove(header::CONTENT_LENGTH);
        return (status, headers, body).into_response();
    }
    // Streamed as it comes: SSE chunks reach the client when the proxy sends them.
    (status, headers, Body::from_stream(answer.bytes_stream())).into_response()
}
