//! Port-forwards held open for scripts, as `kubectl port-forward` holds them: a local port per
//! target, and each connection accepted on it relayed through its own port-forward stream of the
//! API server (`pods/<pod>/portforward`), so it pays what smokecheck's own forwards pay: the
//! API server's latency on the upgrade, the stream's setup, its round trips.
//!
//! kubectl itself cannot forward through the fake API server: it speaks SPDY (tunnelled over a
//! WebSocket since 1.31), the fake only the WebSocket `v4.channel.k8s.io` protocol kube-rs uses.
//! So the relay is kube-rs's port-forward, the one smokecheck uses. One difference remains and
//! is stated where it is used (ci/baseline/verify.sh): kubectl opens a stream per connection on
//! one long-lived connection, this relay (like smokecheck) one upgrade per connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// One forwarded pod port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    pub port: u16,
}

/// Running relays, one local address per target (same order); they stop when dropped.
pub struct Relays {
    pub addrs: Vec<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relays {
    /// Listens on 127.0.0.1 for each target and relays through the API server `kubeconfig`
    /// names. Panics with the cause when the kubeconfig cannot be used or a port not bound.
    pub fn start(kubeconfig: &Path, targets: &[Target]) -> Relays {
        let listeners: Vec<std::net::TcpListener> = targets
            .iter()
            .map(|t| {
                let l = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap_or_else(|e| panic!("relay to {}/{}: binding: {e}", t.namespace, t.pod));
                l.set_nonblocking(true).expect("a non-blocking listener");
                l
            })
            .collect();
        let addrs = listeners
            .iter()
            .map(|l| l.local_addr().expect("a bound listener's address"))
            .collect();
        let (shutdown, stop) = oneshot::channel();
        let kubeconfig: PathBuf = kubeconfig.to_path_buf();
        let targets = targets.to_vec();
        let (ready, started) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("bed-relays".into())
            .spawn(move || serve(kubeconfig, targets, listeners, stop, ready))
            .expect("spawning the relay thread");
        match started.recv() {
            Ok(Ok(())) => {}
            Ok(Err(why)) => panic!("relays: {why}"),
            Err(_) => panic!("relays: the relay thread ended before it started"),
        }
        Relays {
            addrs,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    kubeconfig: PathBuf,
    targets: Vec<Target>,
    listeners: Vec<std::net::TcpListener>,
    stop: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("building a runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let client = match client(&kubeconfig).await {
            Ok(c) => c,
            Err(why) => {
                let _ = ready.send(Err(why));
                return;
            }
        };
        let mut accepting = Vec::new();
        for (listener, target) in listeners.into_iter().zip(targets) {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready.send(Err(format!("adopting a listener: {e}")));
                    return;
                }
            };
            let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &target.namespace);
            accepting.push(tokio::spawn(accept(listener, api, target)));
        }
        let _ = ready.send(Ok(()));
        let _ = stop.await;
        for a in accepting {
            a.abort();
        }
    });
    // Dropping the runtime cancels the relays still open.
}

async fn client(kubeconfig: &Path) -> Result<kube::Client, String> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| format!("reading {}: {e}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| format!("using {}: {e}", kubeconfig.display()))?;
    kube::Client::try_from(config).map_err(|e| format!("a kube client: {e}"))
}

async fn accept(listener: tokio::net::TcpListener, api: kube::Api<Pod>, target: Target) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            // Out of descriptors, say: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(relay(conn, api.clone(), target.pod.clone(), target.port));
    }
}

/// One connection through its own port-forward stream, until either side closes.
async fn relay(mut conn: tokio::net::TcpStream, api: kube::Api<Pod>, pod: String, port: u16) {
    let Ok(mut pf) = api.portforward(&pod, &[port]).await else {
        return;
    };
    let (Some(upstream), Some(ended)) = (pf.take_stream(port), pf.take_error(port)) else {
        pf.abort();
        return;
    };
    {
        let (mut from_pod, mut to_pod) = tokio::io::split(upstream);
        let (mut from_client, mut to_client) = conn.split();
        tokio::select! {
            _ = tokio::io::copy(&mut from_client, &mut to_pod) => {}
            _ = tokio::io::copy(&mut from_pod, &mut to_client) => {
                let _ = to_client.shutdown().await;
            }
        }
        // Dropping the stream makes kube send the WebSocket Close.
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ended).await;
    pf.abort();
}
