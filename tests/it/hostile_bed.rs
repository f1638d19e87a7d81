//! The hostile peers of the bed (tests/support/hostile.rs) and the harness's memory measurement
//! do what the trust-envelope tests rely on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{command, measured};
use crate::support::hostile::{Behaviour, Hostile, garbage, http_response};

fn connect(h: &Hostile) -> TcpStream {
    let s = TcpStream::connect(h.addr()).expect("connecting to the hostile server");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeout");
    s
}

#[test]
fn a_silent_server_accepts_and_never_answers() {
    let h = Hostile::start(Behaviour::Silent);
    let mut s = connect(&h);
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("write");
    let mut buf = [0u8; 16];
    let err = s.read(&mut buf).expect_err("no answer");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    assert_eq!(h.accepted(), 1);
}

#[test]
fn an_endless_server_sends_more_than_any_cap() {
    let h = Hostile::start(Behaviour::Endless {
        head: b"HEAD".to_vec(),
        pattern: b"x".to_vec(),
    });
    let mut s = connect(&h);
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("write");
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while total < 8 << 20 {
        total += s.read(&mut buf).expect("reading the endless answer");
    }
    assert!(total >= 8 << 20);
}

#[test]
fn a_closing_server_sends_its_bytes_then_eof() {
    let body = http_response(200, "application/json", &garbage());
    let h = Hostile::start(Behaviour::Close(body.clone()));
    let mut s = connect(&h);
    // Nothing comes before the client speaks (an early answer tests a race, not a behaviour).
    let mut early = [0u8; 1];
    let quiet = s
        .read(&mut early)
        .expect_err("no answer before the request");
    assert!(
        matches!(
            quiet.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{quiet}"
    );
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read to end");
    assert_eq!(got, body);
}

#[test]
fn peak_memory_of_a_child_is_its_own() {
    // The test binary holds 128 MiB more while it spawns the child: `wait4`'s ru_maxrss
    // would report them (Linux starts a child's high-water mark at its parent's size).
    let mut ballast = vec![0u8; 128 << 20];
    for page in ballast.chunks_mut(4096) {
        page[0] = 1;
    }
    let mut cmd = command();
    cmd.args(["verify", "--list"]);
    let m = measured(cmd);
    assert_eq!(m.code, 0, "{}", m.stderr);
    assert!(
        m.stdout.contains("kubernetes::pods::litellm"),
        "{}",
        m.stdout
    );
    // A few MiB for a binary that reads a suite; never the test binary's nor LiteLLM's.
    assert!(
        (1024..64 * 1024).contains(&m.peak_rss_kib),
        "peak RSS {} KiB",
        m.peak_rss_kib
    );
    assert_eq!(std::hint::black_box(&ballast)[4096], 1);
}

/// A child's figure is its own even after the test binary grew: exec hands the old address
/// space's high-water mark to the new program, so `wait4` on a child spawned from a 400 MiB
/// test binary reported 400 MiB for a run that used a few.
#[test]
fn peak_memory_of_a_child_is_not_the_test_binarys() {
    let mut ballast = vec![0u8; 256 << 20];
    for page in ballast.chunks_mut(4096) {
        page[0] = 1;
    }
    let mut cmd = command();
    cmd.args(["verify", "--list"]);
    let m = measured(cmd);
    drop(std::hint::black_box(ballast));
    assert_eq!(m.code, 0, "{}", m.stderr);
    assert!(
        (1024..64 * 1024).contains(&m.peak_rss_kib),
        "peak RSS {} KiB",
        m.peak_rss_kib
    );
}
