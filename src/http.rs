//! The harness's HTTP client for LiteLLM and vLLM: one per run, held by [`crate::env::Env`],
//! with a connect timeout and a backstop request timeout. The runner's `--timeout` is the real
//! limit of a check; the backstop only guarantees that no request outlives a stuck run.
//!
//! Keys go into the `Authorization` header and nowhere else; answers come back as text for the
//! checks to parse and, redacted and cut short, to quote in details.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::secret::{Redactor, SecretValue};

/// Long enough for the slowest honest answer; the runner's `--timeout` cuts checks far earlier.
const BACKSTOP: Duration = Duration::from_secs(600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an answer a report quotes.
const EXCERPT_CHARS: usize = 600;

/// One client for every check of a run (connection pool, TLS config).
#[derive(Clone)]
pub struct Http {
    client: Result<reqwest::Client, String>,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
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

impl Http {
    pub fn new() -> Http {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(BACKSTOP)
            .user_agent(concat!("smokecheck/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                format!(
                    "building the HTTP client: {}",
                    crate::cluster::error_chain(&e)
                )
            });
        Http { client }
    }

    fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        key: Option<&SecretValue>,
    ) -> Result<reqwest::RequestBuilder, Transport> {
        let client = self.client.as_ref().map_err(|e| Transport(e.clone()))?;
        let mut req = client.request(method, url);
        if let Some(key) = key {
            let value = key
                .expose()
                .ok_or_else(|| Transport("the key is not valid UTF-8".into()))?;
            req = req.bearer_auth(value.trim());
        }
        Ok(req)
    }

    /// GET with an optional bearer key, body read in full.
    pub async fn get(&self, url: &str, key: Option<&SecretValue>) -> Result<Answer, Transport> {
        let req = self.request(reqwest::Method::GET, url, key)?;
        read(req).await
    }

    /// POST a JSON body with an optional bearer key, body read in full.
    pub async fn post(
        &self,
        url: &str,
        key: Option<&SecretValue>,
        body: &Value,
    ) -> Result<Answer, Transport> {
        let req = self.request(reqwest::Method::POST, url, key)?.json(body);
        read(req).await
    }

    /// POST a JSON body and hand back the response once its headers arrived, for streaming.
    pub async fn post_streaming(
        &self,
        url: &str,
        key: Option<&SecretValue>,
        body: &Value,
    ) -> Result<reqwest::Response, Transport> {
        let req = self.request(reqwest::Method::POST, url, key)?.json(body);
        req.send().await.map_err(transport)
    }
}

async fn read(req: reqwest::RequestBuilder) -> Result<Answer, Transport> {
    let started = Instant::now();
    let resp = req.send().await.map_err(transport)?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.map_err(transport)?;
    Ok(Answer {
        status,
        headers,
        text,
        elapsed: started.elapsed(),
    })
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
        let err = Http::new()
            .get(&format!("http://127.0.0.1:{port}/health"), None)
            .await
            .expect_err("nothing listens");
        assert!(err.0.starts_with("cannot connect: "), "{err}");
        assert!(err.0.to_lowercase().contains("refused"), "{err}");
        assert!(!err.0.contains('\n'));
    }
}
