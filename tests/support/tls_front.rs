//! TLS in front of a plain test server: a vLLM Service that serves `https://`, or the external
//! route users reach LiteLLM by (an Ingress served by Traefik). It terminates TLS with
//! certificates the bed generates (certs.rs, chained to its test CA: hand [`TlsFront::ca_pem`]
//! to the client as `SSL_CERT_FILE` or the suite's CA), records the server name each client
//! asked for (SNI) and the certificate it got, and then either relays the decrypted bytes to
//! the plain server behind it or answers every request itself, as a route that reaches no
//! LiteLLM does ([`Backend::Answer`]). Its own thread and runtime; stops when dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::certs::{self, CertSpec, Generated};

/// What Traefik answers for a host it has no router for (Go's `http.NotFound`).
pub const TRAEFIK_NOT_FOUND: &str = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: 19\r\nConnection: close\r\n\r\n404 page not found\n";

/// What Traefik answers when the Service behind a router refuses the connection.
pub const TRAEFIK_BAD_GATEWAY: &str = "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 11\r\nConnection: close\r\n\r\nBad Gateway";

/// Where decrypted requests go.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Relayed, byte for byte, to a plain server.
    Relay(SocketAddr),
    /// Answered with this raw HTTP/1.1 response, whatever was asked, and the connection closed.
    Answer(&'static str),
}

/// One handshake the front answered (whether or not the client then accepted the certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The server name the client asked for (SNI); `None` when it sent none (an IP address).
    pub server_name: Option<String>,
    /// The common name of the certificate presented.
    pub presented: String,
}

pub struct TlsFront {
    addr: SocketAddr,
    resolver: Arc<BySni>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Picks the certificate for a handshake: the first of `store` that covers the server name,
/// else `default` (Traefik's choice by SNI; a one-certificate front has no store).
#[derive(Debug)]
struct BySni {
    store: Vec<(Arc<Generated>, Arc<CertifiedKey>)>,
    default: (Arc<Generated>, Arc<CertifiedKey>),
    /// Every ClientHello answered, in arrival order.
    handshakes: Mutex<Vec<Handshake>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let server_name = hello.server_name().map(str::to_string);
        let (cert, key) = server_name
            .as_deref()
            .and_then(|n| self.store.iter().find(|(c, _)| c.covers(n)))
            .unwrap_or(&self.default);
        self.handshakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Handshake {
                server_name,
                presented: cert.common_name.clone(),
            });
        Some(key.clone())
    }
}

impl TlsFront {
    /// Serves TLS for `names` (a certificate from the bed's test CA) on 127.0.0.1 at a free
    /// port, relaying to `backend`.
    pub fn start(names: &[&str], backend: SocketAddr) -> TlsFront {
        TlsFront::presenting(
            certs::generate(&CertSpec::valid(names)),
            Backend::Relay(backend),
        )
    }

    /// Presents `cert` to every client, whatever name it asks for (so a client asking for
    /// another name meets a name mismatch, not a different certificate).
    pub fn presenting(cert: Arc<Generated>, backend: Backend) -> TlsFront {
        TlsFront::serve(Vec::new(), cert, backend)
    }

    /// As Traefik's `websecure` entrypoint: presents the first certificate of `store` that
    /// covers the name the client asks for, else Traefik's self-signed default certificate.
    pub fn traefik(store: Vec<Arc<Generated>>, backend: Backend) -> TlsFront {
        TlsFront::serve(store, certs::traefik_default(), backend)
    }

    fn serve(store: Vec<Arc<Generated>>, default: Arc<Generated>, backend: Backend) -> TlsFront {
        let keyed = |c: Arc<Generated>| {
            let key = c.certified_key();
            (c, key)
        };
        let resolver = Arc::new(BySni {
            store: store.into_iter().map(keyed).collect(),
            default: keyed(default),
            handshakes: Mutex::default(),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // HTTP/1.1 only: the relay and the canned answers are byte streams of HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the TLS front");
        let addr = listener.local_addr().expect("TLS front address");
        listener
            .set_nonblocking(true)
            .expect("TLS front listener non-blocking");
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building the TLS front's runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("adopting the listener");
                loop {
                    let accepted = tokio::select! {
                        _ = &mut stop => break,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((tcp, _)) = accepted else { continue };
                    let (acceptor, backend) = (acceptor.clone(), backend.clone());
                    tokio::spawn(async move {
                        // A client that rejects the certificate ends here, after the resolver
                        // recorded what it asked for.
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        match backend {
                            Backend::Relay(to) => {
                                let Ok(mut plain) = tokio::net::TcpStream::connect(to).await else {
                                    return;
                                };
                                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                            }
                            Backend::Answer(response) => {
                                // Read the request head (bounded in size and time), answer, close.
                                let mut head = Vec::new();
                                let mut buf = [0u8; 4096];
                                let read = async {
                                    while head.len() < 64 * 1024
                                        && !head.windows(4).any(|w| w == b"\r\n\r\n")
                                    {
                                        match tls.read(&mut buf).await {
                                            Ok(0) | Err(_) => break,
                                            Ok(n) => head.extend_from_slice(&buf[..n]),
                                        }
                                    }
                                };
                                let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
                                let _ = tls.write_all(response.as_bytes()).await;
                                let _ = tls.shutdown().await;
                            }
                        }
                    });
                }
            });
        });
        TlsFront {
            addr,
            resolver,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`: where a client reaches the front (with the host name kept
    /// for SNI and verification, as `--endpoint ingress:<host>=URL` does).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA the front's certificates chain to (but the self-signed ones and Traefik's
    /// default): the bed's test CA.
    pub fn ca_pem(&self) -> &'static str {
        certs::test_ca_pem()
    }

    /// The server name (SNI) each handshake asked for.
    pub fn server_names(&self) -> Vec<Option<String>> {
        self.handshakes()
            .into_iter()
            .map(|h| h.server_name)
            .collect()
    }

    /// Every handshake: the name asked for and the certificate presented.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.resolver
            .handshakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
