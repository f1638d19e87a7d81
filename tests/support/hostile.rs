//! Hostile peers: servers that accept a connection and then misbehave the ways a broken, huge
//! or malicious endpoint does (never answer, trickle, send without end, send garbage), so tests
//! can prove smokecheck ends every such exchange in a clean failure, on time and in bounded
//! memory. Plain TCP, or TLS with a caller's acceptor (the API server speaks HTTPS only).
//!
//! Every loop here is bounded twice: by a byte or step budget of its own, and by the server's
//! lifetime (dropping a [`Hostile`] stops its runtime, which cancels every connection task).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::runtime::Runtime;

/// The most bytes an endless answer sends before giving up (1 GiB and a little).
pub const ENDLESS_LIMIT: u64 = (1 << 30) + (1 << 20);
/// The longest a trickle or a silence lasts.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// What the server does with each connection.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Accepts, reads and discards what it is sent, never answers.
    Silent,
    /// Sends `bytes` one byte every `every` (an answer that is always almost there).
    Trickle { bytes: Vec<u8>, every: Duration },
    /// Sends `head`, then `pattern` over and over without end (up to [`ENDLESS_LIMIT`]).
    Endless { head: Vec<u8>, pattern: Vec<u8> },
    /// Sends `bytes` once and keeps the connection open without another byte.
    Hang(Vec<u8>),
    /// Sends `bytes` and closes.
    Close(Vec<u8>),
}

/// A running hostile server on 127.0.0.1; stops when dropped.
pub struct Hostile {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    runtime: Option<Runtime>,
}

impl Hostile {
    pub fn start(behaviour: Behaviour) -> Hostile {
        Self::start_with(behaviour, None)
    }

    /// Speaks TLS with `acceptor` first (an HTTPS endpoint that misbehaves after the handshake).
    pub fn start_tls(behaviour: Behaviour, acceptor: tokio_rustls::TlsAcceptor) -> Hostile {
        Self::start_with(behaviour, Some(acceptor))
    }

    fn start_with(behaviour: Behaviour, tls: Option<tokio_rustls::TlsAcceptor>) -> Hostile {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hostile")
            .enable_all()
            .build()
            .expect("building the hostile server's runtime");
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("binding a hostile server");
        let addr = std_listener.local_addr().expect("hostile server address");
        std_listener
            .set_nonblocking(true)
            .expect("setting the listener non-blocking");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        runtime.spawn(async move {
            let listener =
                tokio::net::TcpListener::from_std(std_listener).expect("adopting the listener");
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (behaviour, tls) = (behaviour.clone(), tls.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve(stream, behaviour).await;
                            }
                        }
                        None => serve(tcp, behaviour).await,
                    }
                });
            }
        });
        Hostile {
            addr,
            accepted,
            runtime: Some(runtime),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Misbehaves on an accepted stream (for servers that first speak a protocol properly, then
/// turn hostile).
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S, b: Behaviour) {
    let (mut read, mut write) = tokio::io::split(stream);
    // Whatever the peer sends is read and dropped, so it never blocks on a full socket buffer.
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    match b {
        Behaviour::Silent => {
            tokio::time::sleep(PATIENCE).await;
        }
        Behaviour::Trickle { bytes, every } => {
            let steps = (PATIENCE.as_millis() / every.as_millis().max(1)) as usize;
            for byte in bytes.iter().cycle().take(steps.max(1)) {
                if write.write_all(&[*byte]).await.is_err() || write.flush().await.is_err() {
                    break;
                }
                tokio::time::sleep(every).await;
            }
        }
        Behaviour::Endless { head, pattern } => {
            if write.write_all(&head).await.is_ok() {
                let chunk: Vec<u8> = pattern.iter().copied().cycle().take(64 * 1024).collect();
                let mut sent = head.len() as u64;
                while sent < ENDLESS_LIMIT {
                    if write.write_all(&chunk).await.is_err() {
                        break;
                    }
                    sent += chunk.len() as u64;
                }
            }
        }
        Behaviour::Hang(bytes) => {
            if write.write_all(&bytes).await.is_ok() && write.flush().await.is_ok() {
                tokio::time::sleep(PATIENCE).await;
            }
        }
        Behaviour::Close(bytes) => {
            let _ = write.write_all(&bytes).await;
            let _ = write.shutdown().await;
        }
    }
    drain.abort();
}

/// An HTTP/1.1 response head.
pub fn http_head(status: u16, content_type: &str, extra: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status} Hostile\r\ncontent-type: {content_type}\r\n{extra}\r\n").into_bytes()
}

/// A complete HTTP/1.1 response.
pub fn http_response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = http_head(
        status,
        content_type,
        &format!("content-length: {}\r\nconnection: close\r\n", body.len()),
    );
    out.extend_from_slice(body);
    out
}

/// 200 with a body announced as 1 GiB (`content-length`), which [`Behaviour::Endless`] then
/// sends.
pub fn gigabyte_head(content_type: &str) -> Vec<u8> {
    http_head(
        200,
        content_type,
        &format!("content-length: {}\r\n", 1u64 << 30),
    )
}

/// 200 with a chunked body; with [`chunk`] as the pattern, an endless one.
pub fn chunked_head(content_type: &str) -> Vec<u8> {
    http_head(200, content_type, "transfer-encoding: chunked\r\n")
}

/// One HTTP chunk carrying `data`.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Bytes no protocol expects (not valid UTF-8, no line structure).
pub fn garbage() -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}
