//! Bounded answers from the API server. kube-rs reads every answer whole into memory, so a
//! broken or hostile API server (or a proxy in front of one) sending an endless or 1 GiB body
//! would get the hook OOM-killed with no report at all. Every response of the run's kube client
//! passes through [`CapLayer`]: its body is cut at a cap chosen per request, and a 2xx answer
//! that is not JSON (a login page where the API should be) is refused before it is read. Either
//! is a typed [`Unreadable`] error naming the request, which checks report with their own
//! cause (`body_too_large`, `bad_response`), never as a misread answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response, header};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use kube::client::DynBody;
use tower::{BoxError, Layer, Service};

use crate::outcome::Cause;
use crate::text::size;

/// The most one answer may hold. The largest honest answers are a Secret or ConfigMap near
/// etcd's 1.5 MiB object limit (base64 and JSON escaping make its JSON larger still), one page of
/// a LIST ([`LIST_PAGE`] objects of a few KiB, a pod with managedFields ~10-20 KiB) and a
/// discovery document (well under 1 MiB even with hundreds of CRDs): twice the largest.
pub const MAX_ANSWER: u64 = 4 << 20;

/// How many objects one LIST answer carries (`limit`): a page of the heaviest objects we list
/// (pods) stays far under [`MAX_ANSWER`], and a namespace of 2,000 pods is a few pages.
pub const LIST_PAGE: u32 = 100;

/// The most all pages of one LIST may hold together, kept as objects: hundreds of pods, where a
/// LiteLLM deployment's selector matches a handful even in a namespace of thousands, and small
/// enough that a server paging without end cannot fill the hook's memory.
pub const MAX_LIST: u64 = 4 << 20;

/// The most pages one LIST may take (a server sending tiny pages with a `continue` forever).
pub const MAX_LIST_PAGES: usize = 100;

/// How much of a log tail to ask the kubelet for (`limitBytes`): far more than the excerpt a
/// report quotes, and small beside the hook's memory.
pub const LOG_LIMIT: u64 = 256 << 10;

/// The most a log answer may hold: the API documents `limitBytes` as approximate ("may return
/// slightly more"), so twice what was asked; beyond that the server ignored it.
pub const MAX_LOG_ANSWER: u64 = 2 * LOG_LIMIT;

/// The longest content type quoted in a report (it is the server's text).
const CONTENT_TYPE_CHARS: usize = 80;

/// An answer the client refused to read as the API's: which request, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("the answer to {request} is over {} (read that much, then stopped)", size(*.cap))]
    TooLarge { request: String, cap: u64 },
    #[error(
        "the answer to {request} is {content_type}, not the API's JSON (a proxy or login page in front of the API server?)"
    )]
    NotJson {
        request: String,
        content_type: String,
    },
}

impl Unreadable {
    pub fn cause(&self) -> Cause {
        match self {
            Unreadable::TooLarge { .. } => Cause::BodyTooLarge,
            Unreadable::NotJson { .. } => Cause::BadResponse,
        }
    }
}

/// The [`Unreadable`] error somewhere in `err`'s chain, if reading an answer stopped on one.
pub fn unreadable<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Unreadable> {
    // A chain is a handful of wrappers (kube, hyper, io); the bound only guards against a
    // `source` that cycles.
    let mut current = Some(err);
    for _ in 0..16 {
        let e = current?;
        if let Some(u) = e.downcast_ref::<Unreadable>() {
            return Some(u);
        }
        // `io::Error::source` skips the error it wraps and returns that error's source.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<Unreadable>())
        {
            return Some(inner);
        }
        current = e.source();
    }
    None
}

/// Wraps the kube client's stack so every answer is bounded (see the module header).
#[derive(Debug, Clone, Copy, Default)]
pub struct CapLayer;

impl<S> Layer<S> for CapLayer {
    type Service = Capped<S>;

    fn layer(&self, inner: S) -> Capped<S> {
        Capped { inner }
    }
}

/// The service [`CapLayer`] builds.
#[derive(Debug, Clone)]
pub struct Capped<S> {
    inner: S,
}

type Answer = Response<Box<DynBody>>;

impl<S, B> Service<Request<B>> for Capped<S>
where
    S: Service<Request<B>, Response = Answer>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        // Logs are text, and asked for with limitBytes; everything else is the API's JSON.
        let log = path.ends_with("/log");
        let cap = if log { MAX_LOG_ANSWER } else { MAX_ANSWER };
        let request = format!("{} {path}", req.method());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let answer = answer.await.map_err(Into::into)?;
            if !log && answer.status().is_success() {
                check_json(&answer, &request)?;
            }
            Ok(answer.map(|body| capped(body, request, cap)))
        })
    }
}

/// Refuses a successful answer whose content type says it is not JSON. Only 2xx answers come
/// here: error answers keep theirs (a `404 page not found` is text, and kube reads it as a
/// Status), an upgrade (101) has no body; a missing content type is left to the JSON parser.
fn check_json(answer: &Answer, request: &str) -> Result<(), Unreadable> {
    let Some(value) = answer.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let media = text.split(';').next().unwrap_or_default().trim();
    if media.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(Unreadable::NotJson {
        request: request.to_string(),
        content_type: text
            .chars()
            .take(CONTENT_TYPE_CHARS)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
    })
}

/// `body`, ending in [`Unreadable::TooLarge`] once more than `cap` bytes arrived.
fn capped(body: Box<DynBody>, request: String, cap: u64) -> Box<DynBody> {
    let limit = usize::try_from(cap).unwrap_or(usize::MAX);
    Box::new(Limited::new(body, limit).map_err(move |e| {
        if e.is::<LengthLimitError>() {
            Box::new(Unreadable::TooLarge {
                request: request.clone(),
                cap,
            }) as BoxError
        } else {
            e
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{Full, StreamBody};

    /// Answers every request with `make()`.
    struct Fixed<F>(F);

    impl<F: FnMut() -> Answer, B> Service<Request<B>> for Fixed<F> {
        type Response = Answer;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Answer, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<B>) -> Self::Future {
            std::future::ready(Ok((self.0)()))
        }
    }

    fn answer(content_type: &str, body: Box<DynBody>) -> Answer {
        Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .expect("a response")
    }

    fn full(bytes: Vec<u8>) -> Box<DynBody> {
        Box::new(Full::new(Bytes::from(bytes)).map_err(|never| match never {}))
    }

    /// A body of `chunks` chunks of 64 KiB.
    fn chunks(chunks: usize) -> Box<DynBody> {
        let stream =
            futures::stream::iter((0..chunks).map(|_| {
                Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(vec![b' '; 64 << 10])))
            }));
        Box::new(StreamBody::new(stream))
    }

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).expect("a request")
    }

    async fn read(
        mut svc: impl Service<Request<()>, Response = Answer, Error = BoxError>,
        path: &str,
    ) -> Result<Bytes, BoxError> {
        let answer = svc.call(get(path)).await?;
        Ok(answer.into_body().collect().await?.to_bytes())
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    #[test]
    fn an_answer_within_the_cap_is_read_whole() {
        let svc = CapLayer.layer(Fixed(|| answer("application/json", chunks(64))));
        let body = block_on(read(svc, "/api/v1/namespaces/litellm/pods")).expect("read");
        assert_eq!(body.len() as u64, MAX_ANSWER);
    }

    #[test]
    fn an_answer_over_the_cap_names_the_request_and_the_cap() {
        let svc = CapLayer.layer(Fixed(|| answer("application/json", chunks(65))));
        let err = block_on(read(svc, "/api/v1/namespaces/litellm/pods")).expect_err("capped");
        let cut = unreadable(err.as_ref()).expect("an Unreadable error");
        assert_eq!(cut.cause(), Cause::BodyTooLarge);
        assert_eq!(
            cut.to_string(),
            "the answer to GET /api/v1/namespaces/litellm/pods is over 4 MiB (read that much, then stopped)"
        );
    }

    #[test]
    fn a_log_answer_has_its_own_cap() {
        let svc = CapLayer.layer(Fixed(|| answer("text/plain", chunks(9))));
        let err = block_on(read(svc, "/api/v1/namespaces/litellm/pods/p/log")).expect_err("capped");
        assert!(err.to_string().contains("is over 512 KiB"), "{err}");
    }

    #[test]
    fn a_successful_answer_that_is_not_json_is_refused_unread() {
        let svc = CapLayer.layer(Fixed(|| {
            answer("text/html; charset=utf-8", full(b"<html>".to_vec()))
        }));
        let err = block_on(read(svc, "/version")).expect_err("refused");
        let refused = unreadable(err.as_ref()).expect("an Unreadable error");
        assert_eq!(refused.cause(), Cause::BadResponse);
        assert!(
            refused.to_string().starts_with(
                "the answer to GET /version is text/html; charset=utf-8, not the API's JSON"
            ),
            "{refused}"
        );
    }

    #[test]
    fn error_answers_and_json_variants_pass() {
        let status = || {
            let mut a = answer(
                "text/plain; charset=utf-8",
                full(b"404 page not found\n".to_vec()),
            );
            *a.status_mut() = http::StatusCode::NOT_FOUND;
            a
        };
        let body = block_on(read(CapLayer.layer(Fixed(status)), "/apis/x")).expect("read");
        assert_eq!(&body[..], b"404 page not found\n");
        let discovery = || {
            answer(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                full(b"{}".to_vec()),
            )
        };
        assert!(block_on(read(CapLayer.layer(Fixed(discovery)), "/apis")).is_ok());
    }

    #[test]
    fn the_cap_is_found_behind_kube_and_io_wrappers() {
        let cut = Unreadable::TooLarge {
            request: "GET /version".into(),
            cap: 1,
        };
        let kube = kube::Error::Service(Box::new(cut.clone()));
        assert_eq!(unreadable(&kube), Some(&cut));
        let io = std::io::Error::other(kube::Error::Service(Box::new(cut.clone())));
        assert_eq!(unreadable(&io), Some(&cut));
        let io_direct = std::io::Error::other(cut.clone());
        assert_eq!(unreadable(&io_direct), Some(&cut));
        assert_eq!(unreadable(&std::io::Error::other("other")), None);
    }
}
