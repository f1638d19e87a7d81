//! `e2e::ingress::<host>`: the way users come in, walked as a client walks it. An HTTPS
//! request to `https://<host>/health/liveliness` through the external route, with SNI for the
//! host and the certificate verified for it against the system's roots (or the suite's
//! `litellm.ingress.ca_file`); LiteLLM's own answer, 200 `"I'm alive!"`, and the served
//! certificate's days left. `--endpoint ingress:<host>=URL` connects to the URL's address but
//! keeps the host for SNI and verification; without it, a host that does not resolve from
//! here is skipped with that reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::CertificateError;

use crate::certificate;
use crate::check::Check;
use crate::checks::kubernetes::ingress::expiry;
use crate::context::Context;
use crate::http::{HttpError, excerpt, text};
use crate::outcome::{Cause, Failure, Layer, Passed, ProbeResult, Verdict};
use crate::suite::Ingress as IngressSuite;

const PATH: &str = "/health/liveliness";
/// How long a name may take to resolve before the host counts as not resolving from here.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of a CA file read.
const MAX_CA_FILE: u64 = 1 << 20;

/// `e2e::ingress::<host>`.
pub fn ingress_name(host: &str) -> String {
    format!("e2e::ingress::{host}")
}

pub fn check(host: &str, suite: &IngressSuite) -> Check {
    let host = host.to_ascii_lowercase();
    let suite = Arc::new(suite.clone());
    Check::new(ingress_name(&host), Layer::E2e, move |cx, attempt| {
        let (host, suite) = (host.clone(), Arc::clone(&suite));
        async move {
            attempt.observe(format!("requesting https://{host}{PATH} through the route"));
            probe(&cx, &suite, &host, attempt.remaining()).await
        }
    })
}

/// Where to connect for `host`: the `--endpoint` address (its port too), or the host itself.
async fn target(cx: &Context, host: &str) -> Result<Result<(SocketAddr, u16), String>, Failure> {
    let (name, port, flagged) = match cx.endpoints.ingress(host) {
        Some(uri) => (
            uri.host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_string(),
            uri.port_u16().unwrap_or(443),
            true,
        ),
        None => (host.to_string(), 443, false),
    };
    let looked = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::net::lookup_host((name.as_str(), port)),
    )
    .await
    .map_err(|_| {
        format!(
            "no answer within {}",
            humantime::format_duration(RESOLVE_TIMEOUT)
        )
    })
    .and_then(|r| r.map_err(|e| e.to_string()))
    .map(|mut addrs| addrs.next());
    match looked {
        Ok(Some(addr)) => Ok(Ok((addr, port))),
        Ok(None) | Err(_) if !flagged => Ok(Err(format!(
            "{host} does not resolve from here: the route is for clients that can resolve it; --endpoint ingress:{host}=https://ADDRESS:PORT reaches it another way"
        ))),
        Ok(None) => Err(dns_failure(host, &name, "no address")),
        Err(why) => Err(dns_failure(host, &name, &why)),
    }
}

fn dns_failure(host: &str, name: &str, why: &str) -> Failure {
    Failure::new(
        Cause::Dns,
        format!("--endpoint ingress:{host}: {name} does not resolve: {why}"),
    )
    .hint(format!(
        "give --endpoint ingress:{host}= a URL whose host resolves from here"
    ))
}

/// The client for one host: TLS verified for `host` against the suite's CA or the system's
/// roots, connected to `addr`, no proxy (the route is what is tested), no redirects followed.
fn client(
    suite: &IngressSuite,
    host: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<reqwest::Client, Failure> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(host, addr)
        .tls_info(true)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .user_agent(concat!("smokecheck/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &suite.ca_file {
        let setup = |why: String| {
            Failure::new(Cause::Setup, format!("litellm.ingress.ca_file {}: {why}", path.display()))
                .hint("name a readable PEM file with the CA certificate the route's certificate chains to")
        };
        let pem = read_capped(path).map_err(setup)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| setup(format!("not a PEM certificate ({e})")))?;
        if certs.is_empty() {
            return Err(setup("holds no certificate".into()));
        }
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| Failure::new(Cause::Setup, format!("building the HTTPS client: {e}")))
}

fn read_capped(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut pem = Vec::new();
    file.take(MAX_CA_FILE + 1)
        .read_to_end(&mut pem)
        .map_err(|e| e.to_string())?;
    if pem.len() as u64 > MAX_CA_FILE {
        return Err(format!("over {} MiB", MAX_CA_FILE >> 20));
    }
    Ok(pem)
}

async fn probe(
    cx: &Context,
    suite: &IngressSuite,
    host: &str,
    remaining: Option<Duration>,
) -> ProbeResult {
    let (addr, port) = match target(cx, host).await? {
        Ok(t) => t,
        Err(why) => return Ok(Verdict::skip(why)),
    };
    let timeout = remaining
        .unwrap_or(Duration::from_secs(30))
        .max(Duration::from_secs(1));
    let client = client(suite, host, addr, timeout)?;
    let url = format!("https://{host}:{port}{PATH}");
    let started = Instant::now();
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| refused(host, addr, e))?;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    let served = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(certificate::from_der);
    let body = match text(resp, "GET").await {
        Ok(b) => b,
        Err(HttpError::TooLarge(t)) => return Err(crate::checks::too_large(&t)),
        Err(HttpError::NoAnswer(t)) => {
            return Err(Failure::new(
                Cause::Unreachable,
                format!("https://{host}{PATH}: {t}"),
            ));
        }
    };
    if status != 200 || !body.contains("I'm alive") {
        return Err(Failure::new(
            Cause::WrongBackend,
            format!("https://{host}{PATH} answered {status}, not as LiteLLM"),
        )
        .details(excerpt(&cx.redactor, &body))
        .hint(format!(
            "the route for {host} does not reach the proxy: see kubernetes::ingress (its backend Service and port); Traefik answers \"404 page not found\" for a host or path no router serves"
        )));
    }
    let mut passed = Passed::new(format!(
        "https://{host}{PATH} answered 200 from LiteLLM through the route ({addr}), TLS verified for {host}"
    ));
    passed.metrics.millis("latency_ms", elapsed);
    match served {
        Some(Ok(cert)) => {
            let (days, warning) = expiry(
                suite,
                &cert,
                &format!("the certificate {host} serves"),
                host,
            )?;
            passed.metrics.count("cert_days_left", days.max(0) as u64);
            passed
                .summary
                .push_str(&format!("; certificate valid {days} more days"));
            passed.warnings.extend(warning);
        }
        Some(Err(why)) => passed
            .notes
            .push(format!("the served certificate could not be read: {why}")),
        None => {}
    }
    Ok(passed.into())
}

/// Why the request got no answer: the certificate (expired, another name, untrusted) or the
/// connection.
fn refused(host: &str, addr: SocketAddr, e: reqwest::Error) -> Failure {
    let trust = "the system's roots (or litellm.ingress.ca_file)";
    match tls_error(&e) {
        Some(rustls::Error::InvalidCertificate(c)) => {
            let (cause, what, hint) = match c {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                    Cause::TlsExpired,
                    "has expired".to_string(),
                    format!("renew the certificate the route for {host} serves (its TLS Secret, or the ACME resolver): kubernetes::ingress names it"),
                ),
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => (
                    Cause::TlsNameMismatch,
                    format!("does not name {host}"),
                    format!("issue the route's certificate for {host} (the TLS Secret of its spec.tls entry)"),
                ),
                other => (
                    Cause::TlsUntrusted,
                    format!("is not trusted ({other:?}) by {trust}"),
                    format!("a certificate that chains to no trusted root: Traefik's own default (no certificate for {host} in its store: the TLS Secret is missing, unnamed or for other hosts), a self-signed one, or a private CA: name its CA in litellm.ingress.ca_file"),
                ),
            };
            Failure::new(cause, format!("the certificate served for {host} at {addr} {what}")).hint(hint)
        }
        Some(other) => Failure::new(Cause::Unreachable, format!("TLS with {host} at {addr} failed: {other}"))
            .hint(format!("is the route's entry point TLS (websecure)? curl -v https://{host}/health/liveliness")),
        None => Failure::new(Cause::Unreachable, format!("https://{host}{PATH} at {addr}: {}", crate::http::transport(e)))
            .hint(format!("nothing answers at {addr}: is the ingress controller's Service (LoadBalancer) up, and a firewall open?")),
    }
}

/// The rustls error under a reqwest error. An io::Error's `source()` skips the error it wraps
/// (hyper wraps rustls's in two), so the walk steps into each one it meets.
fn tls_error(e: &reqwest::Error) -> Option<rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut steps = 0;
    while let Some(err) = cur {
        steps += 1;
        if steps > 32 {
            return None;
        }
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.clone());
        }
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}
