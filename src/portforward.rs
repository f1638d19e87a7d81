//! Port-forwards through the API server: a local port per Service, each accepted connection
//! relayed through its own port-forward stream to a ready pod behind the Service.
//!
//! A forwarded connection lives as long as the client's connection and the run: it ends when
//! either side closes, and [`Lifetime::close`] ends every one still open when the run ends
//! (a check that timed out may leave a connection behind, a database session waiting on a
//! lock, say), each with a WebSocket Close so the API server and the pod let go at once.

use std::fmt;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;

/// The run's hold on its port-forwards: cancelled at the end of the run, and every forward
/// task tracked so the end can wait for them to close.
#[derive(Debug, Clone, Default)]
pub struct Lifetime {
    token: CancellationToken,
    tasks: TaskTracker,
}

/// How long a forwarded connection that ended waits for the API server to close its stream,
/// and how long the end of a run waits for all of them.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

impl Lifetime {
    /// Ends every forward (listeners and open connections), each stream with a WebSocket Close,
    /// and waits for them a little; a stream the API server never closes is cut after that.
    pub async fn close(&self) {
        self.token.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(CLOSE_GRACE + Duration::from_secs(1), self.tasks.wait()).await;
    }
}

/// A local port forwarded to a pod behind a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub namespace: String,
    pub service: String,
    pub pod: String,
    pub pod_port: u16,
    pub local: std::net::SocketAddr,
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} via port-forward to pod {}:{} at {}",
            self.namespace, self.service, self.pod, self.pod_port, self.local
        )
    }
}

/// Finds a ready pod behind `namespace/service`, the pod port behind service port `port`, and
/// forwards a local port to it: each accepted connection opens its own port-forward stream.
pub async fn open(
    cluster: &Cluster,
    namespace: &str,
    service: &str,
    port: u16,
    lifetime: &Lifetime,
) -> Result<Forward, String> {
    use k8s_openapi::api::core::v1::{Pod, Service};

    let svc = cluster
        .get::<Service>(namespace, service)
        .await
        .map_err(|f| f.summary)?
        .ok_or_else(|| format!("service {namespace}/{service} not found"))?;
    let ports = svc.spec.and_then(|s| s.ports).unwrap_or_default();
    let svc_port = ports
        .iter()
        .find(|p| p.port == i32::from(port))
        .or_else(|| (ports.len() == 1).then(|| &ports[0]))
        .ok_or_else(|| format!("service {namespace}/{service} has no port {port}"))?;
    let slices = cluster
        .endpoint_slices(namespace, service)
        .await
        .map_err(|f| f.summary)?;
    // The EndpointSlice carries the pod port already resolved from a named targetPort.
    let mut target = None;
    for slice in &slices {
        let Some(pod_port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name == svc_port.name || slice.ports.as_ref().is_some_and(|ps| ps.len() == 1)
            })
            .and_then(|p| p.port)
        else {
            continue;
        };
        let ready = slice.endpoints.iter().find(|e| {
            e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
                && e.target_ref
                    .as_ref()
                    .is_some_and(|t| t.kind.as_deref() == Some("Pod"))
        });
        if let Some(pod) = ready
            .and_then(|e| e.target_ref.as_ref())
            .and_then(|t| t.name.clone())
        {
            target = Some((pod, pod_port));
            break;
        }
    }
    let (pod, pod_port) =
        target.ok_or_else(|| format!("no ready pod behind service {namespace}/{service}"))?;
    let pod_port =
        u16::try_from(pod_port).map_err(|_| format!("pod port {pod_port} is out of range"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("binding a local port: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let api: kube::Api<Pod> = kube::Api::namespaced(cluster.client.clone(), namespace);
    let pod_name = pod.clone();
    let run = lifetime.clone();
    // Lives as long as the run; each connection is its own port-forward stream.
    lifetime.tasks.spawn(async move {
        loop {
            let conn = tokio::select! {
                _ = run.token.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((conn, _)) => conn,
                    // Out of descriptors, say: back off instead of spinning.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let relay = relay(
                conn,
                api.clone(),
                pod_name.clone(),
                pod_port,
                run.token.clone(),
            );
            run.tasks.spawn(relay);
        }
    });
    Ok(Forward {
        namespace: namespace.to_string(),
        service: service.to_string(),
        pod,
        pod_port,
        local,
    })
}

/// Relays one client connection through its own port-forward stream until the client or the
/// pod side closes, the API server ends the stream, or the run ends. Either side closing ends
/// both: the clients here (reqwest, tokio-postgres) never half-close, and a stream left open
/// for a client that is gone would hold the pod's connection (a request, a database session).
async fn relay(
    mut conn: tokio::net::TcpStream,
    api: kube::Api<k8s_openapi::api::core::v1::Pod>,
    pod: String,
    port: u16,
    run_ends: CancellationToken,
) {
    use tokio::io::AsyncWriteExt;
    let ports = [port];
    let opened = tokio::select! {
        _ = run_ends.cancelled() => return,
        pf = api.portforward(&pod, &ports) => pf,
    };
    let Ok(mut pf) = opened else { return };
    let (Some(upstream), Some(ended)) = (pf.take_stream(port), pf.take_error(port)) else {
        pf.abort();
        return;
    };
    // Resolves with the API server's error for the port, or when the stream's task is over.
    let mut ended = std::pin::pin!(ended);
    {
        let (mut from_pod, mut to_pod) = tokio::io::split(upstream);
        let (mut from_client, mut to_client) = conn.split();
        tokio::select! {
            _ = tokio::io::copy(&mut from_client, &mut to_pod) => {}
            _ = tokio::io::copy(&mut from_pod, &mut to_client) => {
                let _ = to_client.shutdown().await;
            }
            _ = &mut ended => {}
            _ = run_ends.cancelled() => {}
        }
        // Dropping the stream makes kube send the WebSocket Close.
    }
    drop(conn);
    let _ = tokio::time::timeout(CLOSE_GRACE, ended).await;
    pf.abort();
}
