//! Hostile database ports (issue 9, "Hostile servers"): whatever answers where PostgreSQL
//! should be (nothing, a trickle, an HTTP server, garbage, a message announced as 1 GiB, an
//! endless stream of messages after the login), `database::connect` ends in a clean failure
//! with a stable cause within `--timeout` + 1 s, and smokecheck's peak memory stays under
//! 64 MiB. Each run selects `database::connect` alone, so it is one wave of checks.

use std::time::Duration;

use crate::harness::Run;
use crate::support::hostile::{Behaviour, Hostile, garbage, http_response};
use crate::support::impostor::{AfterLogin, Ask, Impostor, Script, message};
use crate::verify_database::{Setup, credentials_only};

/// The per-check timeout of these runs.
const TIMEOUT: Duration = Duration::from_secs(2);
/// An idle machine ends these runs within the timeout and a second; this one has two cores
/// shared by several builds, so the assertion allows three seconds more (the measured times
/// are printed).
const SLACK: Duration = Duration::from_secs(3);
/// The hook's memory budget is 128 MiB; smokecheck must stay well under it.
const PEAK_RSS_KIB: u64 = 64 * 1024;

/// Runs `database::connect` against `port` with `sslmode` (the default when `None`).
fn against(port: u16, sslmode: Option<&str>) -> Run {
    let db = credentials_only();
    Setup {
        sslmode,
        port: Some(port),
        filter: "database::connect",
        extra: &["--timeout", "2s"],
        ..Setup::new(&db)
    }
    .run()
}

/// Asserts the clean failure, the time and the memory bound; returns the check's entry.
#[track_caller]
fn clean_failure(run: &Run, what: &str, cause: &str) -> serde_json::Value {
    eprintln!(
        "hostile database port, {what}: {} in {:.2?}, peak RSS {} KiB",
        run.check("database::connect")["cause"],
        run.elapsed,
        run.peak_rss_kib
    );
    assert_eq!(run.code, 1, "{what}: {}\n{}", run.stdout, run.stderr);
    let c = run.check("database::connect");
    assert_eq!(c["cause"], cause, "{what}: {c:#}\nstderr: {}", run.stderr);
    assert!(
        run.elapsed < TIMEOUT + Duration::from_secs(1) + SLACK,
        "{what}: the run took {:.2?}",
        run.elapsed
    );
    assert!(
        run.peak_rss_kib < PEAK_RSS_KIB,
        "{what}: peak RSS {} KiB",
        run.peak_rss_kib
    );
    c
}

#[test]
fn a_database_port_that_accepts_and_never_answers_times_out() {
    let h = Hostile::start(Behaviour::Silent);
    let run = against(h.addr().port(), None);
    let c = clean_failure(&run, "silent", "timeout");
    assert!(
        c["details"]
            .as_str()
            .unwrap_or_default()
            .starts_with("last observed: TLS (sslmode require) and login"),
        "{c:#}"
    );
}

#[test]
fn a_database_port_trickling_a_byte_a_second_times_out() {
    // Declines TLS, then an ErrorResponse that would take a minute to arrive.
    let mut answer = b"N".to_vec();
    answer.extend(message(b'E', &[b'S'; 60]));
    let h = Hostile::start(Behaviour::Trickle {
        bytes: answer,
        every: Duration::from_secs(1),
    });
    let run = against(h.addr().port(), Some("prefer"));
    clean_failure(&run, "trickle", "timeout");
}

#[test]
fn an_http_server_where_postgres_should_be_is_not_postgres() {
    let body = http_response(
        400,
        "text/plain",
        b"Client sent an HTTP request to an HTTPS server.\n",
    );
    for mode in [None, Some("disable")] {
        let h = Hostile::start(Behaviour::Hang(body.clone()));
        let run = against(h.addr().port(), mode);
        let c = clean_failure(&run, &format!("HTTP, sslmode {mode:?}"), "db_protocol");
        let summary = c["summary"].as_str().unwrap_or_default();
        assert!(summary.contains("does not speak PostgreSQL"), "{c:#}");
        assert!(
            c["hint"].as_str().unwrap_or_default().contains("HTTP"),
            "{c:#}"
        );
    }
}

#[test]
fn garbage_on_the_database_port_is_not_postgres() {
    for mode in [None, Some("disable")] {
        let h = Hostile::start(Behaviour::Hang(garbage()));
        let run = against(h.addr().port(), mode);
        clean_failure(&run, &format!("garbage, sslmode {mode:?}"), "db_protocol");
    }
}

#[test]
fn a_message_announced_as_a_gigabyte_is_refused_before_it_is_read() {
    // An ErrorResponse whose length field says 1 GiB, then bytes without end; declined TLS
    // (`prefer`) and no TLS at all (`disable`).
    for (mode, tls_answer) in [("prefer", &b"N"[..]), ("disable", &b""[..])] {
        let mut head = tls_answer.to_vec();
        head.push(b'E');
        head.extend_from_slice(&(1u32 << 30).to_be_bytes());
        let h = Hostile::start(Behaviour::Endless {
            head,
            pattern: b"SERROR\0".to_vec(),
        });
        let run = against(h.addr().port(), Some(mode));
        let c = clean_failure(&run, &format!("1 GiB message, {mode}"), "db_protocol");
        assert!(
            c["summary"]
                .as_str()
                .unwrap_or_default()
                .contains("announced a 1 GiB message"),
            "{c:#}"
        );
    }
}

#[test]
fn an_endless_stream_of_messages_after_the_login_is_cut() {
    // Lets the login in, then sends notices without end: each is well formed and under the
    // message cap, so only the session's byte budget stops them. 64 KiB each, the hostile
    // server's chunk size, so its chunks hold whole messages (and a debug build parses the
    // 8 MiB well within the timeout; tiny notices take it longer than that, and end in a
    // timeout instead).
    let mut body = b"SNOTICE\0C00000\0M".to_vec();
    body.resize(64 * 1024 - 5 - 2, b'x');
    body.extend_from_slice(b"\0\0");
    let notice = message(b'N', &body);
    assert_eq!(notice.len(), 64 * 1024);
    let impostor = Impostor::start(Script {
        tls: false,
        ask: Ask::Trust,
        after_login: AfterLogin::Hostile(Behaviour::Endless {
            head: Vec::new(),
            pattern: notice,
        }),
    });
    let run = against(impostor.port(), Some("disable"));
    let c = clean_failure(&run, "endless notices", "db_protocol");
    assert!(
        c["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("sent over 8 MiB in one session"),
        "{c:#}"
    );
}

#[test]
fn a_malformed_message_after_the_login_is_a_protocol_failure() {
    // A notice without its SQLSTATE field: tokio-postgres cannot parse it and drops the
    // connection; the check says why instead of "connection closed".
    let impostor = Impostor::start(Script {
        tls: false,
        ask: Ask::Trust,
        after_login: AfterLogin::Hostile(Behaviour::Hang(message(b'N', b"SNOTICE\0Mhi\0\0"))),
    });
    let run = against(impostor.port(), Some("disable"));
    let c = clean_failure(&run, "malformed notice", "db_protocol");
    assert!(
        c["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("broke PostgreSQL's protocol (error parsing response from server"),
        "{c:#}"
    );
}
