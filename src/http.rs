//! The harness's HTTP client for LiteLLM and vLLM: one per run, held by [`crate::context::Context`],
//! with a connect timeout and a backstop request timeout. The runner's `--timeout` is the real
//! limit of a check; the backstop only guarantees that no request outlives a stuck run.
//!
//! Keys go into the `Authorization` header and nowhere else; answers come back as text for the
//! checks to parse and, redacted and cut short, to quote in details. Every answer is read up
//! to [`MAX_ANSWER`] and no further: a larger one is an error of its own ([`TooLarge`]), never
//! a truncated success, so a server sending without end cannot grow the run's memory.
//!
//! Each request holds a slot of its destination ([`crate::destinations`]) until its answer is
//! read, so LiteLLM and each vLLM see at most their cap of this run's requests at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::destinations::{DEFAULT_CAPS, HttpSlots, Slot};
use crate::plan::Proxies;
use crate::secret::{Redactor, SecretValue};
use crate::text::{error_chain, size};

/// Long enough for the slowest honest answer; the runner's `--timeout` cuts checks far earlier.
const BACKSTOP: Duration = Duration::from_secs(600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an answer a report quotes.
const EXCERPT_CHARS: usize = 600;
/// The most of one answer (or one stream) a check reads. The largest honest answers are far
/// smaller: a big vLLM's `/v1/models` (a model and its LoRA adapters, under 1 KiB each), the
/// proxy's `/v1/models` with hundreds of aliases (~100 bytes each), a 5-token chat (~1 KiB),
/// an error with a stack trace (some KiB). What is larger is no answer to these requests (an
/// error page sent without end, a misrouted port) and must not push the hook toward its 128Mi
/// memory limit.
pub const MAX_ANSWER: usize = 1 << 20;

/// One client for every check of a run (connection pool, TLS config).
#[derive(Clone)]
pub struct Http {
    client: Result<reqwest::Client, String>,
    slots: Arc<HttpSlots>,
}

/// An HTTP answer, body read in full.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.text).ok()
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.headers, name)
    }
}

pub fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// No HTTP answer: one line saying why (refused, timed out, DNS, TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport(pub String);

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An answer over a cap: read up to it, then dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is over {cap} ({how})")]
pub struct TooLarge {
    /// What was cut, and where: "the answer to GET http://…/v1/models".
    pub what: String,
    /// The cap, in words: "1 MiB", "1024 events".
    pub cap: String,
    /// How far the read got: "read 1 MiB, then stopped".
    pub how: String,
}

/// Why a request gave no answer to judge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    NoAnswer(Transport),
    #[error(transparent)]
    TooLarge(TooLarge),
}

/// Hosts never sent through a proxy, whatever the environment says: loopback (port-forwards,
/// `--endpoint` on this machine) and in-cluster names. A corporate `HTTP_PROXY` would otherwise
/// receive the proxy master key and every chat.
const ALWAYS_DIRECT: &str = "localhost,127.0.0.0/8,::1,svc,cluster.local";

/// The environment's proxies ([`Proxies`], read once into the plan), each skipping the hosts
/// of `NO_PROXY` and [`ALWAYS_DIRECT`]. An unusable proxy URL is ignored, as reqwest's own
/// environment handling does.
fn with_proxies(builder: reqwest::ClientBuilder, proxies: &Proxies) -> reqwest::ClientBuilder {
    let skip = match &proxies.no_proxy {
        Some(listed) => format!("{listed},{ALWAYS_DIRECT}"),
        None => ALWAYS_DIRECT.to_string(),
    };
    type Make = fn(String) -> reqwest::Result<reqwest::Proxy>;
    let proxies: [(Option<String>, Make); 3] = [
        (proxies.https.clone(), reqwest::Proxy::https::<String>),
        (proxies.http.clone(), reqwest::Proxy::http::<String>),
        (proxies.all.clone(), reqwest::Proxy::all::<String>),
    ];
    // `no_proxy()` drops reqwest's own reading of the environment, which knows no exceptions.
    let mut builder = builder.no_proxy();
    for (url, make) in proxies {
        if let Some(proxy) = url.and_then(|u| make(u).ok()) {
            builder = builder.proxy(proxy.no_proxy(reqwest::NoProxy::from_string(&skip)));
        }
    }
    builder
}

impl Http {
    /// A client that goes through `proxies` (but for [`ALWAYS_DIRECT`] hosts).
    pub fn new(proxies: &Proxies) -> Http {
        Http::resolving(proxies, &[])
    }

    /// A client that connects each name of `local` to its address (a port-forward's local
    /// port) while keeping the name for TLS: SNI and certificate verification.
    pub fn resolving(proxies: &Proxies, local: &[(String, std::net::SocketAddr)]) -> Http {
        let builder = local
            .iter()
            .fold(reqwest::Client::builder(), |b, (name, addr)| {
                b.resolve(name, *addr)
            });
        let client = with_proxies(builder, proxies)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(BACKSTOP)
            .user_agent(concat!("smokecheck/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the HTTP client: {}", error_chain(&e)));
        Http {
            client,
            slots: Arc::new(HttpSlots::new(DEFAULT_CAPS)),
        }
    }

    /// This client, taking its slots from `slots` (the run's, shared by every client it
    /// builds).
    pub fn with_slots(mut self, slots: Arc<HttpSlots>) -> Http {
        self.slots = slots;
        self
    }

    /// A slot of `url`'s destination, held by the caller until the answer is read.
    async fn slot(&self, url: &str) -> Option<Slot> {
        self.slots.slots(url).acquire().await
    }

    fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        key: Option<&SecretValue>,
    ) -> Result<reqwest::RequestBuilder, HttpError> {
        let no_answer = |why: String| HttpError::NoAnswer(Transport(why));
        let client = self.client.as_ref().map_err(|e| no_answer(e.clone()))?;
        let mut req = client.request(method, url);
        if let Some(key) = key {
            let value = key
                .expose()
                .ok_or_else(|| no_answer("the key is not valid UTF-8".into()))?;
            req = req.bearer_auth(value.trim());
        }
        Ok(req)
    }

    /// GET with an optional bearer key, body read in full (up to [`MAX_ANSWER`]).
    pub async fn get(&self, url: &str, key: Option<&SecretValue>) -> Result<Answer, HttpError> {
        let req = self.request(reqwest::Method::GET, url, key)?;
        let _slot = self.slot(url).await;
        read(req, "GET").await
    }

    /// POST a JSON body with an optional bearer key, body read in full (up to [`MAX_ANSWER`]).
    pub async fn post(
        &self,
        url: &str,
        key: Option<&SecretValue>,
        body: &Value,
    ) -> Result<Answer, HttpError> {
        let req = self.request(reqwest::Method::POST, url, key)?.json(body);
        let _slot = self.slot(url).await;
        read(req, "POST").await
    }

    /// POST a JSON body and hand back the response once its headers arrived, for streaming,
    /// with the destination's slot: the caller holds it until it has read the body (within
    /// caps of its own, or with [`text`]).
    pub async fn post_streaming(
        &self,
        url: &str,
        key: Option<&SecretValue>,
        body: &Value,
    ) -> Result<(reqwest::Response, Option<Slot>), HttpError> {
        let req = self.request(reqwest::Method::POST, url, key)?.json(body);
        let slot = self.slot(url).await;
        let resp = req
            .send()
            .await
            .map_err(|e| HttpError::NoAnswer(transport(e)))?;
        Ok((resp, slot))
    }
}

async fn read(req: reqwest::RequestBuilder, method: &str) -> Result<Answer, HttpError> {
    let started = Instant::now();
    let resp = req
        .send()
        .await
        .map_err(|e| HttpError::NoAnswer(transport(e)))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = text(resp, method).await?;
    Ok(Answer {
        status,
        headers,
        text,
        elapsed: started.elapsed(),
    })
}

/// The body of `resp` (the answer to a `method` request) as text, read chunk by chunk up to
/// [`MAX_ANSWER`]; an answer announcing more is not read at all.
pub async fn text(mut resp: reqwest::Response, method: &str) -> Result<String, HttpError> {
    let too_large = |resp: &reqwest::Response, how: String| {
        HttpError::TooLarge(TooLarge {
            what: format!("the answer to {method} {}", resp.url()),
            cap: size(MAX_ANSWER as u64),
            how,
        })
    };
    if let Some(n) = resp.content_length().filter(|n| *n > MAX_ANSWER as u64) {
        return Err(too_large(
            &resp,
            format!("its content-length says {n} bytes; not read"),
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| HttpError::NoAnswer(transport(e)))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(too_large(
                &resp,
                format!("read {}, then stopped", size(MAX_ANSWER as u64)),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A reqwest error in one line: what failed, then the deepest cause ("connection refused").
pub fn transport(e: reqwest::Error) -> Transport {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    let mut root = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        root = s.to_string();
        source = s.source();
    }
    Transport(format!("{what}: {root}"))
}

/// A server's answer for a report: redacted first (so a key cut in half is still caught),
/// then cut to a few lines.
pub fn excerpt(redactor: &Redactor, text: &str) -> String {
    let out = redactor.cut(text.trim(), EXCERPT_CHARS);
    if out.is_empty() {
        "(empty body)".to_string()
    } else {
        out
    }
}

/// How many names of a server's list a report shows.
const LISTED: usize = 20;
/// How much of one name a report shows.
const NAME_CHARS: usize = 100;

/// Names a server listed (model ids, aliases), for a report: the first [`LISTED`], each
/// redacted and cut, and how many more. The server decides how many there are and how long.
pub fn listed<S: AsRef<str>>(redactor: &Redactor, names: &[S]) -> String {
    let mut out: Vec<String> = names
        .iter()
        .take(LISTED)
        .map(|n| redactor.cut(n.as_ref().trim(), NAME_CHARS))
        .collect();
    if names.len() > LISTED {
        out.push(format!("and {} more", names.len() - LISTED));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_redacted_then_cut() {
        let r = Redactor::default();
        r.register(&SecretValue::new(b"vllm-bed-key-71c2".to_vec()));
        let long = format!(
            "key vllm-bed-key-71c2 and Bearer sk-abcdef123456 {}",
            "x".repeat(2000)
        );
        let e = excerpt(&r, &long);
        assert!(
            e.starts_with("key <redacted> and Bearer <redacted> "),
            "{e}"
        );
        assert!(e.ends_with('…'));
        assert!(e.chars().count() <= EXCERPT_CHARS + 1);
        assert_eq!(excerpt(&r, "  "), "(empty body)");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_one_line_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let err = Http::new(&Proxies::default())
            .get(&format!("http://127.0.0.1:{port}/health"), None)
            .await
            .expect_err("nothing listens");
        let HttpError::NoAnswer(Transport(why)) = &err else {
            panic!("{err:?}");
        };
        assert!(why.starts_with("cannot connect: "), "{err}");
        assert!(why.to_lowercase().contains("refused"), "{err}");
        assert!(!why.contains('\n'));
    }

    /// Answers one request with `head` and then `body_len` bytes of `x`, and closes.
    async fn serve_once(head: String, body_len: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/v1/models", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = tcp.read(&mut request).await;
            let _ = tcp.write_all(head.as_bytes()).await;
            let _ = tcp.write_all(&vec![b'x'; body_len]).await;
            let _ = tcp.shutdown().await;
        });
        url
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_too_large_not_truncated() {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
        let url = serve_once(head.into(), MAX_ANSWER + 1).await;
        let err = Http::new(&Proxies::default())
            .get(&url, None)
            .await
            .expect_err("over the cap");
        assert_eq!(
            err.to_string(),
            format!("the answer to GET {url} is over 1 MiB (read 1 MiB, then stopped)")
        );
        assert!(matches!(err, HttpError::TooLarge(_)));
    }

    #[tokio::test]
    async fn an_answer_of_exactly_the_cap_is_read_whole() {
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {MAX_ANSWER}\r\n\r\n");
        let url = serve_once(head, MAX_ANSWER).await;
        let a = Http::new(&Proxies::default())
            .get(&url, None)
            .await
            .expect("within the cap");
        assert_eq!(a.text.len(), MAX_ANSWER);
    }

    #[tokio::test]
    async fn an_answer_announcing_a_gigabyte_is_not_read() {
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", 1u64 << 30);
        let url = serve_once(head, 16).await;
        let err = Http::new(&Proxies::default())
            .post(&url, None, &serde_json::json!({}))
            .await
            .expect_err("announced over the cap");
        assert_eq!(
            err.to_string(),
            format!(
                "the answer to POST {url} is over 1 MiB (its content-length says 1073741824 bytes; not read)"
            )
        );
    }

    #[test]
    fn a_long_list_shows_its_first_names_and_how_many_more() {
        let r = Redactor::default();
        let names: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
        let shown = listed(&r, &names);
        assert!(shown.starts_with("m0, m1, "), "{shown}");
        assert!(shown.ends_with("m19, and 5 more"), "{shown}");
        let long = ["y".repeat(500)];
        assert_eq!(listed(&r, &long).chars().count(), NAME_CHARS + 1);
    }
}
