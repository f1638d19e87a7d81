//! A "proxy" without authentication: answers 200 with an empty model list to every request,
//! with or without a key, as a LiteLLM started without a master key would. `litellm::auth` must
//! fail on it as critical. Plain blocking sockets on one thread: it needs nothing more.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

pub struct OpenProxy {
    addr: SocketAddr,
}

impl OpenProxy {
    /// Starts on 127.0.0.1 at a free port; the thread lives as long as the test process.
    pub fn start() -> OpenProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the open proxy");
        let addr = listener.local_addr().expect("open proxy address");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"object":"list","data":[]}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        OpenProxy { addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
