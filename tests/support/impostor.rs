//! A PostgreSQL impostor: a server on 127.0.0.1 that speaks PostgreSQL's protocol up to the
//! login, then asks for the password the way a hostile or misconfigured server would (in
//! cleartext, as an MD5 hash, by SCRAM without channel binding) or lets the client in without
//! asking, and records every message the client sends, so tests can prove the password never
//! left. After letting a client in it ignores its queries or misbehaves with any hostile
//! [`Behaviour`].
//!
//! It also counts connections open at once, so tests can prove a session that timed out is
//! closed before the next attempt opens another. Every loop is bounded by [`PATIENCE`] or a
//! byte cap, and dropping the impostor stops its runtime, which ends every connection.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::runtime::Runtime;

use super::hostile::{Behaviour, PATIENCE, serve};

/// PostgreSQL's SSLRequest code.
const SSL_REQUEST: u32 = 80_877_103;
/// The largest client message read (a startup packet or a password is tiny).
const MAX_MESSAGE: usize = 64 * 1024;
/// The most message types recorded per impostor.
const MAX_RECORDED: usize = 4096;

/// What the impostor asks for once the client sent its startup packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// AuthenticationCleartextPassword.
    Cleartext,
    /// AuthenticationMD5Password with a salt.
    Md5,
    /// AuthenticationSASL offering only SCRAM-SHA-256, also over TLS: no channel binding.
    ScramWithoutBinding,
    /// AuthenticationOk straight away (`trust`), then [`Impostor`]'s `after_login`.
    Trust,
}

/// What the impostor does after letting a client in (only with [`Ask::Trust`]).
#[derive(Clone, Debug)]
pub enum AfterLogin {
    /// Reads and records every message, never answers (a query that never returns).
    Ignore,
    /// Any hostile behaviour (an endless stream of messages, say).
    Hostile(Behaviour),
}

/// How the impostor answers.
#[derive(Clone, Debug)]
pub struct Script {
    /// Accept TLS (`S` to the SSLRequest, a self-signed certificate) or refuse it (`N`).
    pub tls: bool,
    pub ask: Ask,
    pub after_login: AfterLogin,
}

impl Script {
    pub fn asking(ask: Ask, tls: bool) -> Script {
        Script {
            tls,
            ask,
            after_login: AfterLogin::Ignore,
        }
    }
}

/// What the impostor saw, over all connections.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub connections: usize,
    pub open: usize,
    /// The most connections open at the same time.
    pub peak_open: usize,
    /// Connections that completed a TLS handshake.
    pub tls_sessions: usize,
    /// Startup packets received (a client that got as far as naming its user).
    pub startups: usize,
    /// The type of every message the client sent after its startup packet, in order.
    pub tags: Vec<char>,
}

impl Seen {
    /// Whether the client sent a password message (`p`: PasswordMessage, also the SASL
    /// responses, which share the type).
    pub fn password_sent(&self) -> bool {
        self.tags.contains(&'p')
    }
}

#[derive(Default)]
struct Record {
    seen: Mutex<Seen>,
    changed: Condvar,
}

impl Record {
    fn update(&self, f: impl FnOnce(&mut Seen)) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut seen);
        self.changed.notify_all();
    }
}

/// Closes a connection's books when its task ends, however it ends.
struct OpenGuard(Arc<Record>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.update(|s| s.open = s.open.saturating_sub(1));
    }
}

/// A running impostor; stops when dropped.
pub struct Impostor {
    addr: SocketAddr,
    record: Arc<Record>,
    runtime: Option<Runtime>,
}

impl Impostor {
    pub fn start(script: Script) -> Impostor {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("impostor")
            .enable_all()
            .build()
            .expect("building the impostor's runtime");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
        let addr = std_listener.local_addr().expect("impostor address");
        std_listener
            .set_nonblocking(true)
            .expect("setting the listener non-blocking");
        let acceptor = acceptor();
        let record = Arc::new(Record::default());
        let books = Arc::clone(&record);
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            while let Ok((tcp, _)) = listener.accept().await {
                books.update(|s| {
                    s.connections += 1;
                    s.open += 1;
                    s.peak_open = s.peak_open.max(s.open);
                });
                let guard = OpenGuard(Arc::clone(&books));
                let (script, acceptor, books) =
                    (script.clone(), acceptor.clone(), Arc::clone(&books));
                tokio::spawn(async move {
                    let _guard = guard;
                    let _ = tokio::time::timeout(PATIENCE, negotiate(tcp, script, acceptor, books))
                        .await;
                });
            }
        });
        Impostor {
            addr,
            record,
            runtime: Some(runtime),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// What the impostor saw so far.
    pub fn seen(&self) -> Seen {
        self.record
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What it saw, once every connection it accepted is closed (so nothing the client sent is
    /// still in flight), or after `patience`; panics if a connection is still open then.
    pub fn seen_when_closed(&self, patience: Duration) -> Seen {
        let deadline = Instant::now() + patience;
        let mut seen = self.record.seen.lock().unwrap_or_else(|p| p.into_inner());
        while seen.open > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} connection(s) still open after {patience:?}: {seen:?}",
                seen.open
            );
            seen = self
                .record
                .changed
                .wait_timeout(seen, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        seen.clone()
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A TLS acceptor with a fresh self-signed certificate (ECDSA P-256, as CloudNativePG's).
fn acceptor() -> tokio_rustls::TlsAcceptor {
    let key = rcgen::KeyPair::generate().expect("impostor key");
    let cert = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "cloudnative-pg-cluster-rw.litellm.svc".to_string(),
    ])
    .expect("impostor certificate params")
    .self_signed(&key)
    .expect("impostor certificate");
    let der =
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("impostor key DER");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der)
    .expect("impostor TLS config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The SSLRequest (answered `S` or `N`), then the rest over TLS or in plain.
async fn negotiate(
    mut tcp: tokio::net::TcpStream,
    script: Script,
    acceptor: tokio_rustls::TlsAcceptor,
    books: Arc<Record>,
) {
    let mut first = [0u8; 8];
    if tcp.read_exact(&mut first).await.is_err() {
        return;
    }
    let len = u32::from_be_bytes([first[0], first[1], first[2], first[3]]) as usize;
    let code = u32::from_be_bytes([first[4], first[5], first[6], first[7]]);
    if code != SSL_REQUEST {
        // A plain startup packet straight away (sslmode disable).
        let Some(rest) = read_exact(&mut tcp, len.saturating_sub(8)).await else {
            return;
        };
        drop(rest);
        books.update(|s| s.startups += 1);
        return login(tcp, script, books).await;
    }
    if !script.tls {
        if tcp.write_all(b"N").await.is_err() {
            return;
        }
        if read_startup(&mut tcp).await.is_some() {
            books.update(|s| s.startups += 1);
            login(tcp, script, books).await;
        }
        return;
    }
    if tcp.write_all(b"S").await.is_err() {
        return;
    }
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        return;
    };
    books.update(|s| s.tls_sessions += 1);
    if read_startup(&mut tls).await.is_some() {
        books.update(|s| s.startups += 1);
        login(tls, script, books).await;
    }
}

/// Asks for the password as scripted, then records what the client sends until it closes.
async fn login<S>(mut stream: S, script: Script, books: Arc<Record>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request = match script.ask {
        Ask::Cleartext => auth(3, &[]),
        Ask::Md5 => auth(5, &[0x5a, 0x17, 0x42, 0x99]),
        Ask::ScramWithoutBinding => auth(10, b"SCRAM-SHA-256\0\0"),
        Ask::Trust => {
            let mut out = auth(0, &[]);
            out.extend(message(b'S', b"server_version\x0015.99\x00"));
            out.extend(message(b'K', &[0, 0, 0, 42, 0, 0, 0, 7]));
            out.extend(message(b'Z', b"I"));
            out
        }
    };
    if stream.write_all(&request).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    if let (Ask::Trust, AfterLogin::Hostile(behaviour)) = (&script.ask, &script.after_login) {
        serve(stream, behaviour.clone()).await;
        return;
    }
    // Record every message until the client closes; never answer.
    loop {
        let mut head = [0u8; 5];
        if stream.read_exact(&mut head).await.is_err() {
            return;
        }
        books.update(|s| {
            if s.tags.len() < MAX_RECORDED {
                s.tags.push(head[0] as char);
            }
        });
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if read_exact(&mut stream, len.saturating_sub(4))
            .await
            .is_none()
        {
            return;
        }
    }
}

/// A startup packet after the SSLRequest: length, then the rest.
async fn read_startup<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.ok()?;
    read_exact(stream, (u32::from_be_bytes(len) as usize).saturating_sub(4)).await
}

async fn read_exact<S: AsyncRead + Unpin>(stream: &mut S, n: usize) -> Option<Vec<u8>> {
    if n > MAX_MESSAGE {
        return None;
    }
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

/// A backend message: type, length (itself included), body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An Authentication* message with its code and data.
fn auth(code: u32, data: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    message(b'R', &body)
}
