//! A fake Kubernetes API server serving a scenario folder, faithful enough that kube-rs and real
//! kubectl cannot tell it from a v1.33 kube-apiserver for the reads smokecheck makes.
//!
//! It speaks HTTPS only, with a CA generated per server, and accepts one bearer token: kubectl
//! refuses to send a token over plain http, so an http fake would silently test nothing. Each
//! server runs on its own thread and tokio runtime so plain synchronous `#[test]`s can use it;
//! dropping the [`FakeKube`] stops it.
//!
//! For the trust-envelope tests it can also misbehave on chosen paths
//! ([`FakeKube::misbehave`]): discovery and every other path answer normally while, say, the
//! pod LIST hangs, trickles or floods, as a broken or hostile API server would mid-run.
//!
//! For benchmarks it can be as slow as a real one ([`FakeKube::set_latency`]: every request;
//! [`FakeKube::set_forward_latency`]: each port-forward stream's setup and round trips).

mod api;
mod handler;
mod portforward;
mod rbac;
mod scenario;
mod select;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;

use super::hostile::{self, Behaviour};
use super::latency::Latency;

#[allow(unused_imports)]
pub use api::{OPT_IN_GROUPS, RESOURCES, ResourceType, installed};
pub use handler::{ForwardLatency, ForwardStream, RecordedRequest, StreamEnd};
#[allow(unused_imports)]
pub use scenario::{
    Certificate, DEFAULT_USER, Forbid, Scenario, identity, load_scenario, relative_time, rfc3339,
    scenario_names, scenarios_dir, str_at,
};

/// A running fake API server; stops when dropped.
pub struct FakeKube {
    scenario: String,
    addr: SocketAddr,
    ca_pem: String,
    token: String,
    shared: Arc<handler::Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKube {
    /// Serves `tests/fixtures/scenarios/<scenario>` over HTTPS on 127.0.0.1 at a free port.
    pub fn start(scenario: &str) -> FakeKube {
        Self::start_with(load_scenario(scenario))
    }

    /// Serves an already loaded (possibly modified in the test) scenario.
    pub fn start_with(scenario: Scenario) -> FakeKube {
        let name = scenario.name.clone();
        let tls = Tls::generate();
        let token = format!("fake-kube-token-{}", random_hex());
        let shared = Arc::new(handler::Shared {
            resources: api::installed(&scenario.crds_not_installed, &scenario.crds_installed),
            scenario,
            token: token.clone(),
            requests: Default::default(),
            delay: Default::default(),
            fail: Default::default(),
            rbac: Default::default(),
            forwards: Default::default(),
            misbehave: Default::default(),
            streams: Default::default(),
            latency: Default::default(),
            forward_latency: Default::default(),
            in_flight: Default::default(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("fake kube {name}: binding 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .expect("local address of a bound listener");
        listener
            .set_nonblocking(true)
            .expect("setting the listener non-blocking");
        let (shutdown, stop) = oneshot::channel();
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{namespace}/pods/{pod}/portforward",
                axum::routing::get(portforward::portforward),
            )
            .fallback(handler::handle)
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                handler::latency,
            ))
            .with_state(shared.clone());
        let acceptor = tls.acceptor();
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-kube-{name}"))
            .spawn(move || serve(listener, acceptor, app, serving, stop))
            .expect("spawning the fake kube thread");
        FakeKube {
            scenario: name,
            addr,
            ca_pem: tls.ca_pem,
            token,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The PEM of the CA that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token the server accepts.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The scenario being served.
    pub fn scenario(&self) -> &Scenario {
        &self.shared.scenario
    }

    /// The context name written into kubeconfigs: `fake-<scenario>`.
    pub fn context(&self) -> String {
        format!("fake-{}", self.scenario)
    }

    /// Writes `dir/kubeconfig` with a static bearer token; returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let user = format!("    token: {}\n", self.token);
        self.write_config(dir, "kubeconfig", &user)
    }

    /// Writes `dir/kubeconfig-exec`, whose user gets the token from an exec credential plugin
    /// (`tests/fixtures/exec-credential-plugin.sh`), as GKE and EKS kubeconfigs do.
    pub fn write_kubeconfig_exec(&self, dir: &Path) -> PathBuf {
        let plugin =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/exec-credential-plugin.sh");
        let user = format!(
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: {}\n      \
             env:\n      - name: FAKE_KUBE_TOKEN\n        value: {}\n      interactiveMode: Never\n      \
             provideClusterInfo: false\n",
            plugin.display(),
            self.token
        );
        self.write_config(dir, "kubeconfig-exec", &user)
    }

    fn write_config(&self, dir: &Path, file: &str, user: &str) -> PathBuf {
        write_kubeconfig_file(
            &dir.join(file),
            &self.context(),
            &self.url(),
            &self.ca_pem,
            user,
        )
    }

    /// From now on, answers with 403 every request these RBAC manifests (multi-document YAML)
    /// do not allow the scenario's user, as a real API server would.
    pub fn enforce_rbac(&self, manifests: &str) {
        *self
            .shared
            .rbac
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some(rbac::Rbac::from_yaml(manifests));
    }

    /// Port-forwards to `port` of pod `namespace/pod` reach `addr` (where the test runs the
    /// real or fake server standing in for that pod).
    pub fn forward(&self, namespace: &str, pod: &str, port: u16, addr: std::net::SocketAddr) {
        self.shared
            .forwards
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert((namespace.to_string(), pod.to_string(), port), addr);
    }

    /// Every port-forward stream served so far (open ones have `ended: None`).
    pub fn forward_streams(&self) -> Vec<ForwardStream> {
        self.shared
            .streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// From now on, every request (discovery, reads, logs, port-forward upgrades) waits this
    /// long before it is answered: a real API server's round trip, for benchmarks. Distinct
    /// from [`FakeKube::delay_requests`], which makes one path slow for timeout tests.
    pub fn set_latency(&self, latency: Latency) {
        *self
            .shared
            .latency
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = latency;
    }

    /// From now on, each port-forward stream takes `setup` to open (on top of the API request
    /// that asks for it) and every round trip through it `round_trip`.
    pub fn set_forward_latency(&self, latency: ForwardLatency) {
        *self
            .shared
            .forward_latency
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = latency;
    }

    /// Answers requests whose path contains `path_part` only after `pause`.
    pub fn delay_requests(&self, path_part: &str, pause: std::time::Duration) {
        *self
            .shared
            .delay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some((path_part.to_string(), pause, None));
    }

    /// Like [`FakeKube::delay_requests`], for the next `times` matching requests only (a check
    /// that times out, then passes on retry).
    pub fn delay_next_requests(&self, path_part: &str, pause: std::time::Duration, times: u32) {
        *self
            .shared
            .delay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some((path_part.to_string(), pause, Some(times)));
    }

    /// From now on, answers requests to exactly `path` (query aside) with `behaviour` on the raw
    /// TLS stream, right after reading the request head: every other path is still answered
    /// normally. While any path misbehaves, each connection carries one request, so a client's
    /// kept-alive connection cannot carry a request past the switch.
    pub fn misbehave(&self, path: &str, behaviour: Behaviour) {
        self.shared
            .misbehave
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((path.to_string(), behaviour));
    }

    /// Answers the next `times` requests whose path contains `path_part` with `code`, then
    /// serves them again (a read that fails early and succeeds later).
    pub fn fail_next_requests(&self, path_part: &str, code: u16, times: u32) {
        let code = axum::http::StatusCode::from_u16(code).expect("an HTTP status");
        *self
            .shared
            .fail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some((path_part.to_string(), code, times));
    }

    /// Requests in flight: the peak so far and each request's span.
    pub fn in_flight(&self) -> &super::in_flight::InFlight {
        &self.shared.in_flight
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes a kubeconfig whose one context reaches `url` over HTTPS trusting `ca_pem`, with
/// `user` (indented YAML) as its credentials; returns `path`.
pub fn write_kubeconfig_file(
    path: &Path,
    context: &str,
    url: &str,
    ca_pem: &str,
    user: &str,
) -> PathBuf {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {context}\n  cluster:\n    server: {url}\n    \
         certificate-authority-data: {ca}\ncontexts:\n- name: {context}\n  context:\n    cluster: {context}\n    \
         user: {context}\n    namespace: litellm\ncurrent-context: {context}\npreferences: {{}}\nusers:\n- name: {context}\n  user:\n{user}",
    );
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path.to_path_buf()
}

fn serve(
    listener: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    shared: Arc<handler::Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the fake kube runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("adopting the listener");
        loop {
            let accepted = tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((tcp, _)) = accepted else { continue };
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(app.clone());
            let shared = shared.clone();
            tokio::spawn(async move {
                // A client that gives up during the handshake (kubectl with a wrong CA) is fine.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let hostile = !shared
                    .misbehave
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .is_empty();
                if !hostile {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tls), service)
                        .await;
                    return;
                }
                // Judge the request by its path before hyper sees it, then either misbehave
                // on the raw stream or replay the head to hyper for a normal answer.
                let Some(head) = read_head(&mut tls).await else {
                    return;
                };
                let (method, path, query) = request_target(&head);
                if let Some(behaviour) = shared.behaviour_for(&path) {
                    shared.record(&method, &path, &query);
                    hostile::serve(tls, behaviour).await;
                    return;
                }
                let (read, write) = tokio::io::split(tls);
                let replayed = tokio::io::join(std::io::Cursor::new(head).chain(read), write);
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http1().keep_alive(false);
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(replayed), service)
                    .await;
            });
        }
    });
    // Dropping the runtime cancels the connection tasks.
}

/// The longest request head the misbehaving mode reads before giving up on a connection.
const MAX_HEAD: usize = 64 * 1024;

/// Reads an HTTP/1.1 request head (through the blank line); `None` when the client closes or
/// sends more than [`MAX_HEAD`] without one.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(head);
        }
    }
    None
}

/// The method, path and query of a request head's request line
/// (`GET /api/v1/pods?limit=1 HTTP/1.1`).
fn request_target(head: &[u8]) -> (String, String, String) {
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default();
    match target.split_once('?') {
        Some((path, query)) => (method, path.to_string(), query.to_string()),
        None => (method, target.to_string(), String::new()),
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost that it signed; public so a hostile
/// server can present the same identity a kubeconfig trusts.
pub struct Tls {
    /// The PEM of the CA, for a kubeconfig's `certificate-authority-data`.
    pub ca_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Tls {
    pub fn generate() -> Tls {
        let ca_key = KeyPair::generate().expect("generating the CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "fake-kube-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signing the CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().expect("generating the server key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.subject_alt_names = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::DnsName("localhost".try_into().expect("a valid DNS name")),
            SanType::DnsName(
                "kubernetes.default.svc"
                    .try_into()
                    .expect("a valid DNS name"),
            ),
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &issuer)
            .expect("signing the server certificate");
        Tls {
            ca_pem: ca_cert.pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], key)
            .expect("the server certificate and key");
        // HTTP/1.1 only: kube-rs speaks it, kubectl falls back to it, and the upgrades a later
        // port-forward needs are HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// 128 random bits from the kernel, as hex (a fresh token per server).
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    assert_eq!(n, 16, "getrandom failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
