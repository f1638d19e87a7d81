//! Hostile LiteLLM and vLLM (issue 9, "Hostile servers"): a server that never answers,
//! trickles, sends without end or announces a gigabyte, streams events without end or a line
//! without a newline, or answers invalid JSON or the wrong content type stands in for the proxy
//! or for a vLLM backend. Every such run ends in a clean failure with a stable cause, within
//! `--timeout` + 1 s (plus slack for this loaded machine) and in under 64 MiB. Beside the
//! property: the regressions of sizes and numbers a server supplies (a `max_model_len` of
//! 4294967295, a token count near `u64::MAX`) and of a stream read on after `[DONE]`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Run, metric, passed, run_in, text};
use crate::support::fake_kube::FakeKube;
use crate::support::hostile::{
    Behaviour, Hostile, chunk, chunked_head, garbage, gigabyte_head, http_head, http_response,
};
use crate::support::litellm::{SERVED_MODEL, alias};
use crate::verify_e2e::{NO_DB, scenario, service_of, suite};

/// The runs' `--timeout`: short, so a hanging read shows at once.
const TIMEOUT: Duration = Duration::from_secs(2);
/// What the property allows: `--timeout` and one second.
const ALLOWED: Duration = Duration::from_secs(TIMEOUT.as_secs() + 1);
/// What this loaded 2-core machine may add on top (process start, reading the suite's objects
/// from the fake API server, a busy scheduler); the measured numbers are printed.
const SLACK: Duration = Duration::from_secs(3);
/// The hook runs under a 128Mi limit; half of it is the bound.
const MAX_RSS_KIB: u64 = 64 * 1024;

/// What a check must come to.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Fails(&'static str),
    /// Fails with this cause, its summary saying this.
    FailsSaying(&'static str, &'static str),
    Passes,
    /// Skipped because the named check failed.
    SkippedAfter(&'static str),
}

use Expect::{Fails, FailsSaying, Passes, SkippedAfter};

struct Case {
    what: &'static str,
    behaviour: Behaviour,
    /// One per check of the table, in its order.
    expect: Vec<Expect>,
}

fn case(what: &'static str, behaviour: Behaviour, expect: Vec<Expect>) -> Case {
    Case {
        what,
        behaviour,
        expect,
    }
}

/// A URL where nothing listens (connection refused at once).
fn closed_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", l.local_addr().expect("addr"))
}

/// `smokecheck verify --exact CHECKS` on the healthy scenario with its one guarded alias, the
/// proxy at `litellm` and that alias's vLLM backend at `vllm`; `window` sets the suite's
/// `max_model_len` for it.
fn run(litellm: &str, vllm: &str, window: Option<u32>, checks: &[&str]) -> Run {
    let h = alias::HEALTHY;
    let mut suite_text = suite(&[h], &[&service_of(h)], NO_DB);
    if let Some(n) = window {
        suite_text = suite_text.replace(
            "secret: null\n",
            &format!("secret: null\n    max_model_len: {n}\n"),
        );
    }
    let fake = FakeKube::start_with(scenario("healthy", &[]));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let suite_path = dir.path().join("suite.yaml");
    std::fs::write(&suite_path, suite_text).expect("writing the suite");
    let mut args: Vec<String> = vec![
        "--suite".into(),
        suite_path.display().to_string(),
        "--endpoint".into(),
        format!("litellm={litellm}"),
        "--endpoint".into(),
        format!("vllm:vllm/{}={vllm}", service_of(h)),
        "--timeout".into(),
        format!("{}s", TIMEOUT.as_secs()),
        // One wave: every check facing the server at once, whatever the CPU count.
        "--test-threads".into(),
        checks.len().to_string(),
        "--exact".into(),
    ];
    args.extend(checks.iter().map(|c| c.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_in(dir, &kubeconfig, &["--format", "json"], &refs)
}

/// Runs every case against `checks`, with the hostile server where `place` puts it, and
/// returns what went wrong (empty when the property holds), after printing what was measured.
fn judge(
    server: &str,
    checks: &[&str],
    cases: Vec<Case>,
    place: impl Fn(&str) -> (String, String),
) -> Vec<String> {
    let mut problems = Vec::new();
    for c in cases {
        assert_eq!(
            c.expect.len(),
            checks.len(),
            "{}: one expectation per check",
            c.what
        );
        let hostile = Hostile::start(c.behaviour.clone());
        let (litellm, vllm) = place(&hostile.url());
        let r = run(&litellm, &vllm, None, checks);
        drop(hostile);
        eprintln!(
            "hostile {server}, {}: exit {} after {} ms, peak RSS {} KiB",
            c.what,
            r.code,
            r.elapsed.as_millis(),
            r.peak_rss_kib
        );
        let mut problem = |p: String| problems.push(format!("{server}, {}: {p}", c.what));
        if r.elapsed > ALLOWED + SLACK {
            problem(format!("took {:?}", r.elapsed));
        }
        if r.peak_rss_kib >= MAX_RSS_KIB {
            problem(format!("peak RSS {} KiB", r.peak_rss_kib));
        }
        if r.stderr.contains("panicked") {
            problem(format!("a panic: {}", r.stderr));
        }
        let doc: Value = match serde_json::from_str(&r.stdout) {
            Ok(d) => d,
            Err(_) => {
                problem(format!("no JSON report (exit {}): {}", r.code, r.stderr));
                continue;
            }
        };
        let failing = c
            .expect
            .iter()
            .any(|e| matches!(e, Fails(_) | FailsSaying(..)));
        if r.code != if failing { 1 } else { 0 } {
            problem(format!("exit code {}", r.code));
        }
        for (name, expect) in checks.iter().zip(&c.expect) {
            let entry = doc["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == *name);
            let Some(e) = entry else {
                problem(format!("{name} was not run"));
                continue;
            };
            let ok = match expect {
                Fails(cause) => e["status"] == "failed" && e["cause"] == *cause,
                FailsSaying(cause, says) => {
                    e["status"] == "failed"
                        && e["cause"] == *cause
                        && text(e, "summary").contains(says)
                }
                Passes => e["status"] == "passed",
                SkippedAfter(check) => {
                    e["status"] == "skipped" && text(e, "skip_reason").contains(check)
                }
            };
            if !ok {
                problem(format!("{name}: expected {expect:?}, got {e}"));
            }
        }
    }
    problems
}

/// A 200 whose body stops half way: the per-check `--timeout` must cut a slow body too.
fn stalled_body() -> Vec<u8> {
    let mut answer = http_head(200, "application/json", "content-length: 64\r\n");
    answer.extend_from_slice(br#"{"object": "list", "da"#);
    answer
}

/// An OpenAI chunk carrying `content`, as one SSE event.
fn content_event(content: &str) -> Vec<u8> {
    let event = json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]});
    format!("data: {event}\n\n").into_bytes()
}

const LITELLM_CHECKS: [&str; 5] = [
    "litellm::ready",
    "litellm::auth",
    "litellm::models",
    "e2e::chat::healthy",
    "e2e::chat::healthy::stream",
];

#[test]
fn a_hostile_litellm_fails_every_check_facing_it_cleanly_on_time_in_bounded_memory() {
    let all = |cause| vec![Fails(cause); LITELLM_CHECKS.len()];
    // Every check reads the stream as an answer over 1 MiB; the stream check says which of
    // its own caps cut it.
    let stream_cut = |says| {
        let mut expect = all("body_too_large");
        expect[4] = FailsSaying("body_too_large", says);
        expect
    };
    // A 200 without a key is the proxy open to anyone, whatever its body says.
    let answered_200 = vec![
        Fails("bad_response"),
        Fails("proxy_open"),
        Fails("bad_response"),
        Fails("bad_response"),
        Fails("bad_response"),
    ];
    let cases = vec![
        case(
            "accepts and never answers",
            Behaviour::Silent,
            all("timeout"),
        ),
        case(
            "trickles a byte a second",
            Behaviour::Trickle {
                bytes: http_response(200, "application/json", b"{}"),
                every: Duration::from_secs(1),
            },
            all("timeout"),
        ),
        case(
            "answers its head, then stalls in the body",
            Behaviour::Hang(stalled_body()),
            all("timeout"),
        ),
        case(
            "an endless body",
            Behaviour::Endless {
                head: chunked_head("application/json"),
                pattern: chunk(&[b'x'; 1024]),
            },
            all("body_too_large"),
        ),
        case(
            "a 1 GiB body (content-length)",
            Behaviour::Endless {
                head: gigabyte_head("application/json"),
                pattern: vec![b'x'; 1024],
            },
            all("body_too_large"),
        ),
        case(
            "an SSE stream that never ends",
            Behaviour::Endless {
                head: chunked_head("text/event-stream"),
                pattern: chunk(&content_event("ok")),
            },
            stream_cut("is over 1024 events (without [DONE]"),
        ),
        case(
            "an SSE stream of content that never ends",
            Behaviour::Endless {
                head: chunked_head("text/event-stream"),
                pattern: chunk(&content_event(&"many words ".repeat(100))),
            },
            stream_cut("the content streamed from POST"),
        ),
        case(
            "an SSE stream of keep-alive comments that never ends",
            Behaviour::Endless {
                head: chunked_head("text/event-stream"),
                pattern: chunk(": keep-alive\n\n".repeat(64).as_bytes()),
            },
            stream_cut("is over 1 MiB (read 1 MiB in 0 events"),
        ),
        case(
            "an SSE stream that never sends a newline",
            Behaviour::Endless {
                head: [chunked_head("text/event-stream"), chunk(b"data: ")].concat(),
                pattern: chunk(&[b'x'; 1024]),
            },
            stream_cut("a line of the stream from POST"),
        ),
        case(
            "invalid JSON",
            Behaviour::Close(http_response(
                200,
                "application/json",
                br#"{"object": "list", "data": [{"id": "#,
            )),
            answered_200.clone(),
        ),
        case(
            "the wrong content type",
            Behaviour::Close(http_response(
                200,
                "text/html; charset=utf-8",
                b"<!doctype html><html><body><h1>Sign in</h1></body></html>",
            )),
            answered_200,
        ),
        case(
            "garbage instead of HTTP",
            Behaviour::Close(garbage()),
            all("unreachable"),
        ),
    ];
    let vllm = closed_url();
    let problems = judge("LiteLLM", &LITELLM_CHECKS, cases, |url| {
        (url.to_string(), vllm.clone())
    });
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn checks_beside_a_silent_proxys_liveness_start_at_once_and_are_skipped_with_its_cause() {
    // Issue 11: the LiteLLM and chat checks start beside litellm::live, not after it (a proxy
    // that is not live refuses them at once, at no model's cost). A proxy that accepts and
    // never answers shows it: every check's request reaches it while litellm::live still
    // waits, and when that fails, the others are reported skipped with its cause, not as six
    // timeouts, within one --timeout rather than two.
    let hostile = Hostile::start(Behaviour::Silent);
    let mut checks = vec!["litellm::live"];
    checks.extend(LITELLM_CHECKS);
    let r = run(&hostile.url(), &closed_url(), None, &checks);
    let accepted = hostile.accepted();
    drop(hostile);
    assert!(
        accepted >= checks.len(),
        "{accepted} connections for {} checks: some waited for litellm::live",
        checks.len()
    );
    assert!(r.elapsed < ALLOWED + SLACK, "took {:?}", r.elapsed);
    let doc: Value = serde_json::from_str(&r.stdout).expect("a JSON report");
    let by_name = |name: &str| -> Value {
        doc["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} was not run: {doc:#}"))
    };
    let live = by_name("litellm::live");
    assert_eq!(
        (live["status"].as_str(), live["cause"].as_str()),
        (Some("failed"), Some("timeout")),
        "{live:#}"
    );
    for name in LITELLM_CHECKS {
        let e = by_name(name);
        assert_eq!(e["status"], "skipped", "{e:#}");
        assert!(
            text(&e, "skip_reason").contains("litellm::live failed"),
            "{e:#}"
        );
    }
    assert_eq!(r.code, 1, "{}", r.stderr);
}

const VLLM_CHECKS: [&str; 4] = [
    "vllm::health",
    "vllm::models",
    "e2e::trimming::healthy",
    "e2e::trimming::healthy::control",
];

#[test]
fn a_hostile_vllm_fails_every_check_facing_it_cleanly_on_time_in_bounded_memory() {
    // The trimming checks size their prompt from vLLM's /v1/models: they run after
    // vllm::models and are skipped with its cause.
    let then_skipped = |health: Expect, models: &'static str| {
        vec![
            health,
            Fails(models),
            SkippedAfter("vllm::models"),
            SkippedAfter("vllm::models"),
        ]
    };
    let both = |cause| then_skipped(Fails(cause), cause);
    let cases = vec![
        case(
            "accepts and never answers",
            Behaviour::Silent,
            both("timeout"),
        ),
        case(
            "trickles a byte a second",
            Behaviour::Trickle {
                bytes: http_response(200, "application/json", b"{}"),
                every: Duration::from_secs(1),
            },
            both("timeout"),
        ),
        case(
            "answers its head, then stalls in the body",
            Behaviour::Hang(stalled_body()),
            both("timeout"),
        ),
        case(
            "an endless body",
            Behaviour::Endless {
                head: chunked_head("application/json"),
                pattern: chunk(&[b'x'; 1024]),
            },
            both("body_too_large"),
        ),
        case(
            "a 1 GiB body (content-length)",
            Behaviour::Endless {
                head: gigabyte_head("application/json"),
                pattern: vec![b'x'; 1024],
            },
            both("body_too_large"),
        ),
        // vLLM's /health is a 200 with an empty body: any 200 is healthy.
        case(
            "invalid JSON",
            Behaviour::Close(http_response(
                200,
                "application/json",
                br#"{"object": "list", "data": [{"id": "#,
            )),
            then_skipped(Passes, "bad_response"),
        ),
        case(
            "the wrong content type",
            Behaviour::Close(http_response(
                200,
                "text/html; charset=utf-8",
                b"<!doctype html><html><body><h1>Sign in</h1></body></html>",
            )),
            then_skipped(Passes, "bad_response"),
        ),
        case(
            "garbage instead of HTTP",
            Behaviour::Close(garbage()),
            both("unreachable"),
        ),
    ];
    let litellm = closed_url();
    let problems = judge("vLLM", &VLLM_CHECKS, cases, |url| {
        (litellm.clone(), url.to_string())
    });
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_stream_held_open_after_done_passes_at_done() {
    let events = [
        content_event("ok"),
        br#"data: {"object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":1,"total_tokens":9}}"#.to_vec(),
        b"\n\ndata: [DONE]\n\n".to_vec(),
    ]
    .concat();
    // No closing chunk, no close: the server keeps the stream open after [DONE].
    let held = Hostile::start(Behaviour::Hang(
        [chunked_head("text/event-stream"), chunk(&events)].concat(),
    ));
    let r = run(
        &held.url(),
        &closed_url(),
        None,
        &["e2e::chat::healthy::stream"],
    );
    let c = passed(&r, "e2e::chat::healthy::stream");
    assert!(
        metric(&c, "latency_ms") < TIMEOUT.as_millis() as f64 / 2.0,
        "read on after [DONE]: {c:#}"
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
}

/// vLLM's `/v1/models` for the bed's model with this `max_model_len`, answered to every request.
fn models_answer(max_model_len: Value) -> Behaviour {
    let body = json!({"object": "list", "data": [{"id": SERVED_MODEL, "object": "model", "owned_by": "vllm", "max_model_len": max_model_len}]});
    Behaviour::Close(http_response(
        200,
        "application/json",
        body.to_string().as_bytes(),
    ))
}

#[test]
fn a_context_window_of_4294967295_tokens_skips_trimming_instead_of_aborting() {
    let vllm = Hostile::start(models_answer(json!(4_294_967_295u64)));
    let r = run(
        &closed_url(),
        &vllm.url(),
        None,
        &[
            "vllm::models",
            "e2e::trimming::healthy",
            "e2e::trimming::healthy::control",
        ],
    );
    let m = passed(&r, "vllm::models");
    assert_eq!(metric(&m, "max_model_len"), 4_294_967_295.0, "{m:#}");
    for name in ["e2e::trimming::healthy", "e2e::trimming::healthy::control"] {
        let c = r.check(name);
        assert_eq!(c["status"], "skipped", "{c:#}");
        let why = text(&c, "skip_reason");
        assert!(
            why.contains("context window of 4294967295 tokens")
                && why.contains("litellm.guardrail.max_window (32768)"),
            "{c:#}"
        );
    }
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.peak_rss_kib < MAX_RSS_KIB, "{} KiB", r.peak_rss_kib);
}

#[test]
fn a_max_model_len_that_is_no_context_window_is_a_bad_response() {
    for bad in [
        json!(0),
        json!(-1),
        json!(u64::MAX),
        json!(512.5),
        json!("512"),
    ] {
        let vllm = Hostile::start(models_answer(bad.clone()));
        let r = run(&closed_url(), &vllm.url(), None, &["vllm::models"]);
        let c = r.check("vllm::models");
        assert_eq!(c["status"], "failed", "{bad}: {c:#}");
        assert_eq!(c["cause"], "bad_response", "{bad}: {c:#}");
        assert!(
            text(&c, "summary").contains("max_model_len"),
            "{bad}: {c:#}"
        );
    }
}

#[test]
fn a_token_count_near_u64_max_is_a_bad_response_not_an_overflow() {
    let answer = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": alias::HEALTHY,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": u64::MAX, "completion_tokens": 1, "total_tokens": u64::MAX},
    });
    let proxy = Hostile::start(Behaviour::Close(http_response(
        200,
        "application/json",
        answer.to_string().as_bytes(),
    )));
    // vLLM out of reach: the window is the suite's.
    let r = run(
        &proxy.url(),
        &closed_url(),
        Some(512),
        &["e2e::chat::healthy", "e2e::trimming::healthy"],
    );
    for name in ["e2e::chat::healthy", "e2e::trimming::healthy"] {
        let c = r.check(name);
        assert_eq!(c["status"], "failed", "{c:#}");
        assert_eq!(c["cause"], "bad_response", "{c:#}");
        assert!(
            text(&c, "summary").contains("usage.prompt_tokens 18446744073709551615"),
            "{c:#}"
        );
    }
    assert_eq!(r.code, 1);
}
