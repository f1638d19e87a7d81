//! `pods/{name}/portforward` over WebSocket, as kube-rs speaks it (the `v4.channel.k8s.io`
//! subprotocol): for each requested port the server first sends a 3-byte frame on its data
//! channel (2i) and its error channel (2i+1): the channel number and the port, little-endian.
//! Then data frames are the channel byte followed by payload, both ways; an error is text on
//! the error channel. Here the "pod" is whatever local address the test mapped it to, so the
//! port-forward path reaches the same fake vLLM, real Postgres and real LiteLLM as direct tests.
//!
//! A stream can be made as slow as one through a real cluster (`FakeKube::set_forward_latency`):
//! its setup waits before the first byte moves, and every byte is delayed by half a round trip
//! each way through a delay line that keeps bytes sent back to back together, as a network
//! link does (a per-write sleep would turn one streamed answer into many round trips).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::handler::{ForwardStream, Shared, StreamEnd, status};
use super::scenario::str_at;

#[derive(serde::Deserialize)]
pub struct Params {
    ports: String,
}

pub async fn portforward(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod)): Path<(String, String)>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    shared.record(
        "GET",
        &format!("/api/v1/namespaces/{namespace}/pods/{pod}/portforward"),
        &format!("ports={}", params.ports),
    );
    let expected = format!("Bearer {}", shared.token);
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            None,
        );
    }
    let user = shared.scenario.user.clone();
    let allowed = shared
        .rbac
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_none_or(|rbac| {
            rbac.allows(
                &user,
                "create",
                "",
                "pods/portforward",
                Some(&namespace),
                Some(&pod),
            )
        });
    if !allowed {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "pods \"{pod}\" is forbidden: User \"{user}\" cannot create resource \"pods/portforward\" in API group \"\" in the namespace \"{namespace}\""
            ),
            Some(serde_json::json!({"name": pod, "kind": "pods"})),
        );
    }
    let exists = shared.scenario.objects.iter().any(|o| {
        str_at(o, "/kind") == Some("Pod")
            && str_at(o, "/metadata/namespace") == Some(namespace.as_str())
            && str_at(o, "/metadata/name") == Some(pod.as_str())
    });
    if !exists {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{pod}\" not found"),
            Some(serde_json::json!({"name": pod, "kind": "pods"})),
        );
    }
    let Ok(port) = params.ports.parse::<u16>() else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "only one port per request is supported by this fake",
            None,
        );
    };
    let target = shared
        .forwards
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(namespace.clone(), pod.clone(), port))
        .copied();
    let (setup, half_trip) = {
        let mut latency = shared
            .forward_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        (latency.setup.sample(), latency.round_trip.sample() / 2)
    };
    ws.protocols(["v4.channel.k8s.io"])
        .on_upgrade(move |socket| async move {
            let index = {
                let mut streams = shared.streams.lock().unwrap_or_else(|p| p.into_inner());
                streams.push(ForwardStream {
                    pod: pod.clone(),
                    port,
                    opened: std::time::Instant::now(),
                    ended: None,
                });
                streams.len() - 1
            };
            if !setup.is_zero() {
                tokio::time::sleep(setup).await;
            }
            let end = forward(socket, target, port, pod, half_trip).await;
            shared.streams.lock().unwrap_or_else(|p| p.into_inner())[index].ended =
                Some((std::time::Instant::now(), end));
        })
        .into_response()
}

/// How many chunks a delay line holds before the sender waits (backpressure, as a socket's
/// buffers give).
const LINE_CHUNKS: usize = 16;

/// Relays one stream, each byte `delay` late in each direction; returns who ended it.
async fn forward(
    socket: WebSocket,
    target: Option<SocketAddr>,
    port: u16,
    pod: String,
    delay: Duration,
) -> StreamEnd {
    let (mut to_client, mut from_client) = socket.split();
    let p = port.to_le_bytes();
    for channel in [0u8, 1u8] {
        if to_client
            .send(Message::Binary(vec![channel, p[0], p[1]].into()))
            .await
            .is_err()
        {
            return StreamEnd::ClientVanished;
        }
    }
    let connected = match target {
        Some(addr) => tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string()),
        None => Err("connection refused".to_string()),
    };
    let tcp = match connected {
        Ok(tcp) => tcp,
        Err(why) => {
            // What the kubelet reports when nothing listens on the pod's port.
            let text = format!(
                "error forwarding port {port} to pod {pod}, uid : failed to connect to localhost:{port} inside namespace: {why}"
            );
            let mut frame = vec![1u8];
            frame.extend(text.into_bytes());
            let _ = to_client.send(Message::Binary(frame.into())).await;
            let _ = to_client.send(Message::Close(None)).await;
            return StreamEnd::PodClosed;
        }
    };
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    // Each direction: a reader stamps each chunk with when it is due and a writer delivers it
    // then; the reader ending lets the writer drain the line, a writer failing ends at once.
    let upstream = async {
        let (line, mut arrivals) = mpsc::channel::<(Instant, bytes::Bytes)>(LINE_CHUNKS);
        let read = async move {
            loop {
                match from_client.next().await {
                    Some(Ok(Message::Binary(bytes))) if bytes.len() > 1 && bytes[0] == 0 => {
                        if line
                            .send((Instant::now() + delay, bytes.slice(1..)))
                            .await
                            .is_err()
                        {
                            break StreamEnd::PodClosed;
                        }
                    }
                    Some(Ok(Message::Close(_))) => break StreamEnd::ClientClosed,
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break StreamEnd::ClientVanished,
                }
            }
        };
        let write = async {
            while let Some((due, bytes)) = arrivals.recv().await {
                tokio::time::sleep_until(due).await;
                if tcp_write.write_all(&bytes).await.is_err() {
                    return Err(StreamEnd::PodClosed);
                }
            }
            Ok(())
        };
        let end = relay(read, write).await;
        let _ = tcp_write.shutdown().await;
        end
    };
    let downstream = async {
        let (line, mut arrivals) = mpsc::channel::<(Instant, Vec<u8>)>(LINE_CHUNKS);
        let read = async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match tcp_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break StreamEnd::PodClosed,
                    Ok(n) => {
                        let mut frame = Vec::with_capacity(n + 1);
                        frame.push(0u8);
                        frame.extend_from_slice(&buf[..n]);
                        if line.send((Instant::now() + delay, frame)).await.is_err() {
                            break StreamEnd::ClientVanished;
                        }
                    }
                }
            }
        };
        let write = async {
            while let Some((due, frame)) = arrivals.recv().await {
                tokio::time::sleep_until(due).await;
                if to_client.send(Message::Binary(frame.into())).await.is_err() {
                    return Err(StreamEnd::ClientVanished);
                }
            }
            Ok(())
        };
        let end = relay(read, write).await;
        let _ = to_client.send(Message::Close(None)).await;
        end
    };
    // The pod side closing ends the stream; the client closing ends it too.
    tokio::select! {
        end = upstream => end,
        end = downstream => end,
    }
}

/// Runs one direction's reader and writer: when the reader ends, the writer delivers what is
/// still in the line and the reader's end stands; when the writer fails, its end does.
async fn relay(
    read: impl std::future::Future<Output = StreamEnd>,
    write: impl std::future::Future<Output = Result<(), StreamEnd>>,
) -> StreamEnd {
    tokio::pin!(read, write);
    tokio::select! {
        end = &mut read => {
            let _ = write.await;
            end
        }
        written = &mut write => match written {
            Err(end) => end,
            // The line closes only once the reader is done.
            Ok(()) => read.await,
        },
    }
}
