//! A forward proxy that records every request reaching it, standing in for a corporate
//! `HTTP_PROXY`/`HTTPS_PROXY`: smokecheck must never hand it loopback, port-forward or in-cluster
//! traffic (the proxy would see the master key and the chats), and must still use it for other
//! hosts. Plain requests get a 200 with `{}` from the proxy itself; `CONNECT host:port` is
//! tunnelled to 127.0.0.1 at that port, so a kubeconfig naming a made-up host still reaches the
//! fake API server through it. Plain blocking sockets, a thread per connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct RecordingProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl RecordingProxy {
    pub fn start() -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the recording proxy");
        let addr = listener.local_addr().expect("recording proxy address");
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let record = record.clone();
                std::thread::spawn(move || handle(stream, &record));
            }
        });
        RecordingProxy { addr, seen }
    }

    /// `http://127.0.0.1:PORT`, for `HTTP_PROXY`/`HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request lines that reached the proxy (`GET http://host/path HTTP/1.1`,
    /// `CONNECT host:443 HTTP/1.1`), in arrival order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn handle(mut client: TcpStream, seen: &Mutex<Vec<String>>) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte up to the blank line, so nothing after the head (a tunnel's TLS hello) is
    // consumed here.
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) if head.len() < 64 * 1024 => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or_default().to_string();
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(line.clone());
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("CONNECT"), Some(target)) => {
            let port = target
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok());
            let Some(Ok(upstream)) = port.map(|p| TcpStream::connect(("127.0.0.1", p))) else {
                let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
                return;
            };
            if client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .is_err()
            {
                return;
            }
            let _ = client.set_read_timeout(None);
            tunnel(client, upstream);
        }
        _ => {
            let body = "{}";
            let _ = write!(
                client,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    }
}

/// Copies both ways until either side closes.
fn tunnel(client: TcpStream, upstream: TcpStream) {
    let (Ok(mut client_read), Ok(mut upstream_read)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let (mut client_write, mut upstream_write) = (client, upstream);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(std::net::Shutdown::Both);
    });
    let _ = std::io::copy(&mut upstream_read, &mut client_write);
    let _ = client_write.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
}
