//! serve's HTTP endpoint: four GET paths (`/metrics`, `/healthz`, `/readyz`, `/report.json`)
//! on hyper's HTTP/1 server. serve runs in a cluster where anything may connect, so the accept
//! loop caps what a client can hold: connections at once (more are closed at accept), the
//! request head's size and the time to send it, and each connection's lifetime. No request
//! body is ever read, and every answer is rendered from what the last run left.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Shared;
use crate::report::metrics::Exposition;
use crate::runner::Stopper;

/// What one client may hold of serve.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub connections: usize,
    /// The most bytes of a request head (request line and headers) read (hyper's minimum is
    /// 8 KiB).
    pub head_bytes: usize,
    /// Time to send a request head.
    pub head_timeout: Duration,
    /// A connection's whole life, keep-alive included.
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            // Prometheus (a few replicas), the kubelet's probes, someone's curl.
            connections: 32,
            head_bytes: 16 * 1024,
            head_timeout: Duration::from_secs(5),
            lifetime: Duration::from_secs(120),
        }
    }
}

/// Serves `shared` on `listener` until `stop` is stopped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, limits: Limits, stop: Stopper) {
    let slots = Arc::new(Semaphore::new(limits.connections));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of file descriptors, or a connection reset before it was taken: a pause
            // keeps a persistent error from spinning the loop.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&req, &shared)) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.head_timeout)
                .max_buf_size(limits.head_bytes.max(8192))
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.lifetime, connection).await;
            drop(slot);
        });
    }
}

fn answer(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if shared.ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "no run has finished yet\n"),
        "/metrics" => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|a| a.to_str().ok());
            let format = Exposition::negotiate(accept);
            body(
                StatusCode::OK,
                format.content_type(),
                shared.metrics.render(format).into(),
            )
        }
        "/report.json" => match shared.report.read().ok().and_then(|r| r.clone()) {
            Some(document) => body(
                StatusCode::OK,
                "application/json",
                Bytes::from(document.as_bytes().to_vec()),
            ),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "no run has finished yet\n"),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: serve answers /metrics, /healthz, /readyz and /report.json\n",
        ),
    }
}

fn text(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    body(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(text.as_bytes()),
    )
}

fn body(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}
