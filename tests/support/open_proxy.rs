//! Tiny misbehaving "proxies" for the faults the real LiteLLM will not produce on demand:
//! one without authentication (200 with an empty model list to every request, with or without
//! a key, as a LiteLLM started without a master key), and one whose streams end without
//! `data: [DONE]` (as behind an ingress that cuts them). Plain blocking sockets on one thread.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

pub struct OpenProxy {
    addr: SocketAddr,
}

/// What every request gets: status line is always 200.
#[derive(Clone, Copy)]
enum Answer {
    Json,
    CutStream,
}

impl OpenProxy {
    /// Answers 200 `{"object":"list","data":[]}` to everything.
    pub fn start() -> OpenProxy {
        Self::serve(Answer::Json)
    }

    /// Answers 200 `text/event-stream` with one content delta, then closes without `[DONE]`.
    pub fn cutting_streams() -> OpenProxy {
        Self::serve(Answer::CutStream)
    }

    fn serve(answer: Answer) -> OpenProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake proxy");
        let addr = listener.local_addr().expect("fake proxy address");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                std::thread::spawn(move || handle(stream, answer));
            }
        });
        OpenProxy { addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads the whole request (headers and a `content-length` body), so closing afterwards never
/// resets a connection with unread data, then answers.
fn handle(mut stream: TcpStream, answer: Answer) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    let header_end = loop {
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&request[..header_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < header_end + length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let _ = match answer {
        Answer::Json => {
            let body = r#"{"object":"list","data":[]}"#;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        Answer::CutStream => write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
             data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"Hel\"}}}}]}}\n\n"
        ),
    };
}
