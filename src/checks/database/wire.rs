//! What a database session reads, watched before tokio-postgres sees it.
//!
//! tokio-postgres answers a password request the moment it reads one (0.7 has no hook to
//! refuse it), buffers every message whole whatever size its length field announces, and reads
//! on for as long as the server sends. So the session's streams are wrapped: the server's
//! first answer must be PostgreSQL's, a request for the password in cleartext or as an MD5
//! hash is refused while it is still in flight (tokio-postgres never sees it, so nothing is
//! sent), and no message or session may grow past a cap. Each refusal is a [`Violation`],
//! kept in the [`Watch`] so the check reports it rather than the I/O error it caused.
//!
//! The watch sits on the TCP stream, where it reads the one-byte answer to the SSLRequest and
//! counts every byte of the session, and, once TLS is up, on the decrypted stream inside it.
//! PostgreSQL's messages are followed on the wire when the session is plain, inside TLS
//! otherwise.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

use crate::text::size;

/// The largest message read. PostgreSQL's answers to these checks are a few KiB at most (a
/// failed migration's logs are cut to 16 KiB by the query that reads them); a message
/// announced larger is not one of theirs, and tokio-postgres would buffer it whole.
pub const MAX_MESSAGE: u32 = 1 << 20;
/// The most bytes one session reads, TLS records included. An honest session of these checks
/// reads well under 100 KiB; this bounds a server that sends small messages without end.
pub const MAX_SESSION: u64 = 8 << 20;
/// How much of an authentication request is kept: its code and the start of a SASL mechanism
/// list, enough to see whether SCRAM-SHA-256-PLUS is offered.
const AUTH_KEEP: usize = 4 + 256;
/// How many bytes of a non-PostgreSQL answer the report quotes.
const QUOTE: usize = 32;
/// Message types a PostgreSQL server sends (protocol 3.0).
const BACKEND_TAGS: &[u8] = b"RKZTDCEN123sntIAGHWdcVvS";
/// Types the first message after the startup packet may have: an authentication request, an
/// error (a refused login), a protocol version negotiation, a notice.
const FIRST_TAGS: &[u8] = b"REvN";

/// What the server asked for to authenticate the login (its first authentication request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRequest {
    /// AuthenticationOk without asking anything (`trust` in pg_hba.conf).
    Trust,
    /// The password itself (`password` in pg_hba.conf).
    Cleartext,
    /// An MD5 hash of the password with a salt the server chose (`md5`).
    Md5,
    /// SASL; `plus`: SCRAM-SHA-256-PLUS (channel binding) is among the mechanisms.
    Sasl { plus: bool },
    /// Kerberos, GSS, SSPI, or a code PostgreSQL does not define.
    Other(u32),
}

impl AuthRequest {
    /// How the server asked, worded after "the server asked for the password".
    pub fn words(self) -> &'static str {
        match self {
            AuthRequest::Trust => "not at all (trust)",
            AuthRequest::Cleartext => "in cleartext",
            AuthRequest::Md5 => "as an MD5 hash",
            AuthRequest::Sasl { plus: true } => "by SCRAM, offering channel binding",
            AuthRequest::Sasl { plus: false } => "by SCRAM without channel binding",
            AuthRequest::Other(_) => "by a method smokecheck does not support",
        }
    }
}

/// Why a session's stream was cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The server asked for the password in cleartext or as an MD5 hash.
    #[error("the server asked for the password {}", .0.words())]
    InsecureAuth(AuthRequest),
    /// The server's answer is not PostgreSQL's protocol.
    #[error("not a PostgreSQL answer to {when}: {answered}")]
    NotPostgres {
        /// The bytes it sent, escaped for a terminal.
        answered: String,
        /// What it answered: the TLS request, the login, a query.
        when: &'static str,
    },
    /// A message whose length field is over [`MAX_MESSAGE`].
    #[error("a message announced as {} (type {tag})", size(u64::from(*len)))]
    MessageTooLarge { tag: String, len: u32 },
    /// A message tokio-postgres could not parse or did not expect.
    #[error("a malformed message ({why})")]
    Malformed { why: String },
    /// The session read over [`MAX_SESSION`].
    #[error("over {} in one session", size(MAX_SESSION))]
    SessionTooLarge,
}

impl From<Violation> for io::Error {
    fn from(v: Violation) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, v)
    }
}

/// Bytes quoted for a report: printable ASCII as is, everything else escaped.
fn quote(bytes: &[u8]) -> String {
    bytes[..bytes.len().min(QUOTE)].escape_ascii().to_string()
}

/// Where the session's byte stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the one-byte answer to the SSLRequest.
    SslAnswer,
    /// Plain PostgreSQL messages on the wire.
    Frames,
    /// TLS on the wire; the messages are followed inside it.
    Tls,
}

/// Follows PostgreSQL's message framing: a type byte, a big-endian length that counts itself,
/// the body.
#[derive(Debug, Default)]
struct Frames {
    header: [u8; 5],
    /// Header bytes collected so far (5: in a body).
    have: usize,
    /// Body bytes still to come.
    left: usize,
    /// No message seen yet.
    started: bool,
    /// The start of an authentication request's body.
    auth: Vec<u8>,
}

impl Frames {
    /// Follows `bytes`; returns an authentication request once one is complete (or, for a
    /// refused one, as soon as its code is known).
    fn feed(
        &mut self,
        mut bytes: &[u8],
        when: &'static str,
    ) -> Result<Vec<AuthRequest>, Violation> {
        let mut seen = Vec::new();
        while !bytes.is_empty() {
            if self.have < 5 {
                let take = (5 - self.have).min(bytes.len());
                self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have < 5 {
                    break;
                }
                let tag = self.header[0];
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                let allowed = if self.started {
                    BACKEND_TAGS
                } else {
                    FIRST_TAGS
                };
                if !allowed.contains(&tag) || !(4..=i32::MAX as u32).contains(&len) {
                    let mut answered = self.header.to_vec();
                    answered.extend_from_slice(&bytes[..bytes.len().min(QUOTE)]);
                    return Err(Violation::NotPostgres {
                        answered: quote(&answered),
                        when: if self.started { "a query" } else { when },
                    });
                }
                if len > MAX_MESSAGE {
                    return Err(Violation::MessageTooLarge {
                        tag: quote(&[tag]),
                        len,
                    });
                }
                self.started = true;
                self.left = len as usize - 4;
                self.auth.clear();
            } else {
                let take = self.left.min(bytes.len());
                if self.header[0] == b'R' && self.auth.len() < AUTH_KEEP {
                    let keep = take.min(AUTH_KEEP - self.auth.len());
                    self.auth.extend_from_slice(&bytes[..keep]);
                    // Refused while the request is still incomplete: tokio-postgres acts on
                    // whole messages only, so it never sees this one.
                    if let Some(r @ (AuthRequest::Cleartext | AuthRequest::Md5)) = self.code() {
                        return Err(Violation::InsecureAuth(r));
                    }
                }
                self.left -= take;
                bytes = &bytes[take..];
            }
            if self.have == 5 && self.left == 0 {
                if self.header[0] == b'R'
                    && let Some(request) = self.code()
                {
                    seen.push(request);
                }
                self.have = 0;
            }
        }
        Ok(seen)
    }

    /// The authentication request in `auth`, once its code is there. SASL's continue and
    /// final steps (11, 12) are not requests.
    fn code(&self) -> Option<AuthRequest> {
        let code = u32::from_be_bytes(self.auth.get(..4)?.try_into().ok()?);
        Some(match code {
            0 => AuthRequest::Trust,
            3 => AuthRequest::Cleartext,
            5 => AuthRequest::Md5,
            10 => AuthRequest::Sasl {
                plus: self.auth[4..]
                    .split(|b| *b == 0)
                    .any(|m| m == b"SCRAM-SHA-256-PLUS"),
            },
            11 | 12 => return None,
            other => AuthRequest::Other(other),
        })
    }
}

#[derive(Debug)]
struct Scan {
    phase: Phase,
    read: u64,
    frames: Frames,
    auth: Option<AuthRequest>,
    violation: Option<Violation>,
}

impl Scan {
    fn feed(&mut self, layer: Layer, bytes: &[u8]) -> Result<(), Violation> {
        let frames = match (layer, self.phase) {
            (Layer::Wire, _) => {
                self.read += bytes.len() as u64;
                if self.read > MAX_SESSION {
                    return Err(Violation::SessionTooLarge);
                }
                match self.phase {
                    Phase::Tls => return Ok(()),
                    Phase::Frames => bytes,
                    Phase::SslAnswer => match bytes.first() {
                        None => return Ok(()),
                        Some(b'S') => {
                            self.phase = Phase::Tls;
                            return Ok(());
                        }
                        Some(b'N') => {
                            self.phase = Phase::Frames;
                            &bytes[1..]
                        }
                        Some(_) => {
                            return Err(Violation::NotPostgres {
                                answered: quote(bytes),
                                when: "the TLS request",
                            });
                        }
                    },
                }
            }
            (Layer::Tls, _) => bytes,
        };
        for request in self.frames.feed(frames, "the login")? {
            self.auth.get_or_insert(request);
        }
        Ok(())
    }
}

/// Which stream a [`Watched`] wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    /// The TCP stream.
    Wire,
    /// The decrypted stream inside TLS.
    Tls,
}

/// The state one session's watched streams share.
#[derive(Debug, Clone)]
pub struct Watch(Arc<Mutex<Scan>>);

impl Watch {
    /// `ssl_request`: whether the client opens with an SSLRequest (every sslmode but
    /// `disable`), whose one-byte answer comes first.
    pub fn new(ssl_request: bool) -> Watch {
        Watch(Arc::new(Mutex::new(Scan {
            phase: if ssl_request {
                Phase::SslAnswer
            } else {
                Phase::Frames
            },
            read: 0,
            frames: Frames::default(),
            auth: None,
            violation: None,
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Scan) -> R) -> R {
        // A panic elsewhere while holding the lock leaves the scan as it was: still usable.
        let mut scan = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut scan)
    }

    /// The TCP stream, watched.
    pub fn wire<S>(&self, stream: S) -> Watched<S> {
        Watched {
            inner: stream,
            layer: Layer::Wire,
            watch: self.clone(),
        }
    }

    /// A TLS connector whose streams are watched inside TLS.
    pub fn tls<T>(&self, connector: T) -> WatchedTls<T> {
        WatchedTls {
            inner: connector,
            watch: self.clone(),
        }
    }

    /// Why the session's stream was cut, if it was.
    pub fn violation(&self) -> Option<Violation> {
        self.with(|s| s.violation.clone())
    }

    /// The server's first authentication request, if one arrived.
    pub fn auth(&self) -> Option<AuthRequest> {
        self.with(|s| s.auth)
    }

    /// Records why the session ended, unless a reason is already known.
    pub fn cut(&self, v: Violation) {
        self.with(|s| {
            s.violation.get_or_insert(v);
        });
    }

    /// Whether the server accepted TLS (answered `S` to the SSLRequest).
    pub fn tls_used(&self) -> bool {
        self.with(|s| s.phase == Phase::Tls)
    }

    fn feed(&self, layer: Layer, bytes: &[u8]) -> Result<(), Violation> {
        self.with(|s| {
            if let Some(v) = &s.violation {
                return Err(v.clone());
            }
            s.feed(layer, bytes)
                .inspect_err(|v| s.violation = Some(v.clone()))
        })
    }
}

/// A stream whose reads go through the [`Watch`]; writes pass untouched.
pub struct Watched<S> {
    inner: S,
    layer: Layer,
    watch: Watch,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(v) = self.watch.violation() {
            return Poll::Ready(Err(v.into()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        // On an error the caller drops what this read filled (tokio-util only advances its
        // buffer on success), so a refused request never reaches tokio-postgres.
        Poll::Ready(
            self.watch
                .feed(self.layer, &buf.filled()[before..])
                .map_err(io::Error::from),
        )
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The TLS stream keeps giving tokio-postgres its channel binding (the certificate's hash,
/// `tls-server-end-point`), which SCRAM-SHA-256-PLUS binds the login to.
impl<S: TlsStream + Unpin> TlsStream for Watched<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

/// A [`TlsConnect`] whose streams are [`Watched`] inside TLS.
pub struct WatchedTls<T> {
    inner: T,
    watch: Watch,
}

impl<S, T> TlsConnect<S> for WatchedTls<T>
where
    T: TlsConnect<S>,
    T::Future: Send + 'static,
{
    type Stream = Watched<T::Stream>;
    type Error = T::Error;
    type Future = BoxFuture<'static, Result<Watched<T::Stream>, T::Error>>;

    fn connect(self, stream: S) -> Self::Future {
        let watch = self.watch;
        let handshake = self.inner.connect(stream);
        Box::pin(async move {
            handshake.await.map(|inner| Watched {
                inner,
                layer: Layer::Tls,
                watch,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn auth(code: u32, data: &[u8]) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(data);
        message(b'R', &body)
    }

    /// Feeds `bytes` one read of `chunk` bytes at a time, as a trickling server would.
    fn feed_in(watch: &Watch, layer: Layer, bytes: &[u8], chunk: usize) -> Result<(), Violation> {
        bytes.chunks(chunk).try_for_each(|c| watch.feed(layer, c))
    }

    #[test]
    fn a_cleartext_request_is_refused_before_its_last_byte_whatever_the_reads() {
        for chunk in [1, 2, 5, 8, 64] {
            let w = Watch::new(true);
            let mut bytes = b"N".to_vec();
            bytes.extend(auth(3, &[]));
            let got = feed_in(&w, Layer::Wire, &bytes, chunk);
            assert_eq!(
                got,
                Err(Violation::InsecureAuth(AuthRequest::Cleartext)),
                "reads of {chunk}"
            );
            assert_eq!(w.violation(), got.err());
        }
    }

    #[test]
    fn md5_is_refused_inside_tls_too() {
        let w = Watch::new(true);
        assert_eq!(w.feed(Layer::Wire, b"S"), Ok(()));
        assert!(w.tls_used());
        // TLS records on the wire are only counted.
        assert_eq!(w.feed(Layer::Wire, &[0x16, 3, 3, 0, 0x40]), Ok(()));
        let got = w.feed(Layer::Tls, &auth(5, &[1, 2, 3, 4]));
        assert_eq!(got, Err(Violation::InsecureAuth(AuthRequest::Md5)));
        // Sticky: every later read fails the same way.
        assert_eq!(w.feed(Layer::Tls, b"Z"), got);
    }

    #[test]
    fn scram_requests_and_channel_binding_offers_are_recorded() {
        let w = Watch::new(false);
        let sasl = auth(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        feed_in(&w, Layer::Wire, &sasl, 3).expect("a SCRAM request is fine");
        assert_eq!(w.auth(), Some(AuthRequest::Sasl { plus: true }));
        // The continue and final steps and the Ok after them do not replace the request.
        let mut rest = auth(11, b"r=abc,s=salt,i=4096");
        rest.extend(auth(12, b"v=proof"));
        rest.extend(auth(0, &[]));
        rest.extend(message(b'Z', b"I"));
        feed_in(&w, Layer::Wire, &rest, 7).expect("the rest of a login");
        assert_eq!(w.auth(), Some(AuthRequest::Sasl { plus: true }));

        let w = Watch::new(false);
        w.feed(Layer::Wire, &auth(10, b"SCRAM-SHA-256\0\0"))
            .expect("plain SCRAM");
        assert_eq!(w.auth(), Some(AuthRequest::Sasl { plus: false }));

        let w = Watch::new(false);
        w.feed(Layer::Wire, &auth(0, &[])).expect("trust");
        assert_eq!(w.auth(), Some(AuthRequest::Trust));
    }

    #[test]
    fn http_and_garbage_are_not_postgres() {
        let w = Watch::new(true);
        let got = w.feed(Layer::Wire, b"H");
        assert_eq!(
            got,
            Err(Violation::NotPostgres {
                answered: "H".into(),
                when: "the TLS request"
            })
        );
        let w = Watch::new(false);
        let got = w.feed(Layer::Wire, b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert_eq!(
            got,
            Err(Violation::NotPostgres {
                answered: "HTTP/1.1 400 Bad Request\\r\\n\\r\\n".into(),
                when: "the login"
            })
        );
        let w = Watch::new(false);
        let got = w.feed(Layer::Wire, &[0xf3, 0, 0, 0, 9, 1, 2, 3, 4]);
        assert!(
            matches!(&got, Err(Violation::NotPostgres { answered, .. }) if answered.starts_with("\\xf3")),
            "{got:?}"
        );
        // A known type with a length under 4 (it counts itself).
        let w = Watch::new(false);
        assert!(matches!(
            w.feed(Layer::Wire, &[b'E', 0, 0, 0, 3]),
            Err(Violation::NotPostgres { .. })
        ));
    }

    #[test]
    fn an_oversized_message_is_refused_from_its_header() {
        let w = Watch::new(false);
        let mut head = vec![b'E'];
        head.extend_from_slice(&(1u32 << 30).to_be_bytes());
        let got = w.feed(Layer::Wire, &head);
        assert_eq!(
            got,
            Err(Violation::MessageTooLarge {
                tag: "E".into(),
                len: 1 << 30
            })
        );
        assert_eq!(
            got.unwrap_err().to_string(),
            "a message announced as 1 GiB (type E)"
        );
        // Exactly the cap is fine.
        let w = Watch::new(false);
        let mut head = vec![b'E'];
        head.extend_from_slice(&MAX_MESSAGE.to_be_bytes());
        assert_eq!(w.feed(Layer::Wire, &head), Ok(()));
    }

    #[test]
    fn a_session_is_cut_after_its_byte_budget() {
        let w = Watch::new(false);
        let mut stream = auth(0, &[]);
        stream.extend(message(b'Z', b"I"));
        w.feed(Layer::Wire, &stream).expect("login");
        let notice = message(b'N', &[b'x'; 27]);
        let mut sent = stream.len() as u64;
        let mut result = Ok(());
        // Bounded: the budget ends it well before twice its size.
        while sent < 2 * MAX_SESSION && result.is_ok() {
            result = w.feed(Layer::Wire, &notice);
            sent += notice.len() as u64;
        }
        assert_eq!(result, Err(Violation::SessionTooLarge));
        assert!(sent > MAX_SESSION && sent <= MAX_SESSION + notice.len() as u64);
    }
}
