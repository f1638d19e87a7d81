//! The bed's latency knobs do what they say (support/latency.rs): the API server waits its
//! latency on every request, a port-forward stream on its setup and on each round trip without
//! turning a paced answer into one round trip per chunk, and the fake vLLM answers `/health` and
//! `/v1/models` at once while a completion takes the model's time, its first token first.
//!
//! Bounds are generous (the machine is shared): each knob is proven by a lower bound it alone
//! explains, and by an order or a gap with hundreds of milliseconds to spare, never by a tight
//! upper bound.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::fake_kube::{FakeKube, ForwardLatency};
use crate::support::fake_vllm::FakeVllm;
use crate::support::latency::{Latency, ModelLatency};
use crate::support::litellm::{MAX_MODEL_LEN, SERVED_MODEL, VLLM_KEY};

/// The vLLM pod of the scenarios and its container port.
const VLLM_POD: &str = "vllm-5b6f7d8c9f-q8r2n";
const VLLM_PORT: u16 = 8000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn latency_draws_stay_in_their_range_and_repeat_with_their_seed() {
    let mut a = Latency::parse("5ms..20ms", 7).expect("a range");
    let mut b = Latency::parse("5ms..20ms", 7).expect("a range");
    let mut c = Latency::parse("5ms..20ms", 8).expect("a range");
    let draws: Vec<Duration> = (0..1000).map(|_| a.sample()).collect();
    assert!(
        draws.iter().all(|d| (ms(5)..=ms(20)).contains(d)),
        "{draws:?}"
    );
    let (min, max) = (draws.iter().min(), draws.iter().max());
    assert!(
        min < Some(&ms(7)) && max > Some(&ms(18)),
        "1000 draws should span the range: {min:?}..{max:?}"
    );
    assert_eq!(draws, (0..1000).map(|_| b.sample()).collect::<Vec<_>>());
    assert_ne!(draws, (0..1000).map(|_| c.sample()).collect::<Vec<_>>());

    let mut fixed = Latency::parse("300ms", 1).expect("a fixed latency");
    assert_eq!((fixed.sample(), fixed.sample()), (ms(300), ms(300)));
    assert_eq!(fixed.to_string(), "300ms");
    assert_eq!(a.to_string(), "5ms..20ms");
    assert!(Latency::default().is_zero());

    for (bad, says) in [
        ("20ms..5ms", "ends before it starts"),
        ("fast", "\"fast\" is no duration"),
        ("5ms..", "\"\" is no duration"),
    ] {
        let err = Latency::parse(bad, 1).expect_err(bad);
        assert!(err.contains(says), "{bad}: {err}");
    }
}

/// A reqwest client that trusts the fake's CA and sends its token.
fn kube_http(fake: &FakeKube) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(fake.ca_pem().as_bytes()).expect("the fake's CA");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", fake.token())
            .parse()
            .expect("a header"),
    );
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .default_headers(headers)
        .no_proxy()
        .build()
        .expect("a client")
}

#[test]
fn the_api_server_waits_its_latency_before_every_answer() {
    let fake = FakeKube::start("healthy");
    let latency = Latency::range(ms(400), ms(900), 42);
    // The draws the server will make, in order: the requests below go one at a time.
    let mut expected = latency.clone();
    fake.set_latency(latency);
    let client = kube_http(&fake);
    let paths = [
        "/version",
        "/api/v1",
        "/api/v1/namespaces/litellm/pods?labelSelector=app.kubernetes.io%2Fname%3Dlitellm",
        "/api/v1/namespaces/litellm/secrets/litellm-secrets",
        "/apis/postgresql.cnpg.io/v1/namespaces/litellm/clusters/cloudnative-pg-cluster",
        "/api/v1/namespaces/litellm/pods/no-such-pod",
    ];
    runtime().block_on(async {
        for path in paths {
            let due = expected.sample();
            let started = Instant::now();
            let answer = client
                .get(format!("{}{path}", fake.url()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {path}: {e}"));
            let took = started.elapsed();
            assert!(
                took >= due,
                "GET {path} ({}) answered after {took:?}, before its latency draw {due:?}",
                answer.status()
            );
        }
    });
    assert_eq!(fake.requests().len(), paths.len());
}

/// A pod port that echoes what it reads.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the echo server");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A pod port that writes `chunks` one-byte chunks `pace` apart, then closes.
async fn paced_server(chunks: u8, pace: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the paced server");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                for i in 0..chunks {
                    if conn.write_all(&[b'a' + i]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(pace).await;
                }
            });
        }
    });
    addr
}

async fn kube_pods(fake: &FakeKube, dir: &std::path::Path) -> kube::Api<Pod> {
    let path = fake.write_kubeconfig(dir);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("reading the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("a kube config");
    kube::Api::namespaced(kube::Client::try_from(config).expect("a client"), "vllm")
}

#[test]
fn a_port_forward_stream_waits_its_setup_then_a_round_trip_per_exchange() {
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    let (setup, round_trip) = (ms(500), ms(600));
    fake.set_forward_latency(ForwardLatency {
        setup: Latency::fixed(setup),
        round_trip: Latency::fixed(round_trip),
    });
    runtime().block_on(async {
        fake.forward("vllm", VLLM_POD, VLLM_PORT, echo_server().await);
        let pods = kube_pods(&fake, dir.path()).await;
        let mut pf = pods
            .portforward(VLLM_POD, &[VLLM_PORT])
            .await
            .expect("a port-forward");
        let mut stream = pf.take_stream(VLLM_PORT).expect("the port's stream");
        let started = Instant::now();
        let mut got = [0u8; 4];
        stream.write_all(b"ping").await.expect("writing");
        stream.read_exact(&mut got).await.expect("the echo");
        let first = started.elapsed();
        assert_eq!(&got, b"ping");
        assert!(
            first >= setup + round_trip,
            "the first exchange took {first:?}, less than setup {setup:?} + a round trip {round_trip:?}"
        );
        let again = Instant::now();
        stream.write_all(b"pong").await.expect("writing");
        stream.read_exact(&mut got).await.expect("the echo");
        let second = again.elapsed();
        assert_eq!(&got, b"pong");
        assert!(
            second >= round_trip,
            "a later exchange took {second:?}, less than a round trip {round_trip:?}"
        );
        drop(stream);
        pf.abort();
    });
}

#[test]
fn a_paced_answer_through_a_slow_port_forward_keeps_its_pace() {
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    // Six chunks 150 ms apart (750 ms from first to last) through a link 500 ms each way:
    // delayed as a whole, they still arrive ~750 ms apart; a delay per chunk instead would
    // space them by the 500 ms delay, 2.5 s from first to last.
    let (chunks, pace, round_trip) = (6u8, ms(150), ms(1000));
    fake.set_forward_latency(ForwardLatency {
        setup: Latency::default(),
        round_trip: Latency::fixed(round_trip),
    });
    runtime().block_on(async {
        fake.forward("vllm", VLLM_POD, VLLM_PORT, paced_server(chunks, pace).await);
        let pods = kube_pods(&fake, dir.path()).await;
        let mut pf = pods
            .portforward(VLLM_POD, &[VLLM_PORT])
            .await
            .expect("a port-forward");
        let mut stream = pf.take_stream(VLLM_PORT).expect("the port's stream");
        let started = Instant::now();
        let mut arrivals = Vec::new();
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        while got.len() < usize::from(chunks) {
            let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
                .await
                .expect("the chunks within 30 s")
                .expect("reading");
            assert!(n > 0, "the stream ended after {got:?}");
            got.extend_from_slice(&buf[..n]);
            arrivals.push(started.elapsed());
        }
        assert_eq!(got, b"abcdef");
        let (first, last) = (arrivals[0], arrivals[arrivals.len() - 1]);
        assert!(
            first >= round_trip / 2,
            "the first chunk arrived after {first:?}, sooner than half a round trip"
        );
        assert!(
            last - first >= pace * 4,
            "the chunks arrived bunched ({arrivals:?}): the pace was lost"
        );
        assert!(
            last - first < ms(1800),
            "the chunks arrived {:?} apart from first to last ({arrivals:?}): each was delayed on its own",
            last - first
        );
        drop(stream);
        pf.abort();
    });
}

/// What a streamed answer's lines told, and when, from the request being sent.
struct Streamed {
    first_token: Option<Duration>,
    done: Option<Duration>,
}

async fn stream_chat(client: &reqwest::Client, url: &str) -> Streamed {
    let body = json!({
        "model": SERVED_MODEL, "messages": [{"role": "user", "content": "Reply with ok"}],
        "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true},
    });
    let started = Instant::now();
    let mut answer = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(VLLM_KEY)
        .json(&body)
        .send()
        .await
        .expect("the stream's headers");
    assert_eq!(answer.status(), 200);
    let mut seen = Streamed {
        first_token: None,
        done: None,
    };
    let mut text = String::new();
    while let Some(chunk) = answer.chunk().await.expect("a chunk") {
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some((line, rest)) = text.split_once("\n\n") {
            let data = line.trim_start_matches("data: ").to_string();
            text = rest.to_string();
            if data == "[DONE]" {
                seen.done = Some(started.elapsed());
                continue;
            }
            let event: Value = serde_json::from_str(&data).expect("a JSON event");
            let content = event
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !content.is_empty() && seen.first_token.is_none() {
                seen.first_token = Some(started.elapsed());
            }
        }
    }
    seen
}

#[test]
fn the_fake_vllm_answers_health_at_once_and_completions_in_the_models_time() {
    let vllm = FakeVllm::start(&[(SERVED_MODEL, MAX_MODEL_LEN)], VLLM_KEY);
    let (total, first) = (ms(1500), ms(500));
    vllm.set_latency(ModelLatency {
        completion: Latency::fixed(total),
        first_token: Latency::fixed(first),
        ..ModelLatency::default()
    });
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    let url = vllm.url();
    runtime().block_on(async {
        // /health and a completion sent together: the health answer comes first.
        let chat = async {
            let started = Instant::now();
            let answer = client
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(VLLM_KEY)
                .json(&json!({"model": SERVED_MODEL, "max_tokens": 5,
                    "messages": [{"role": "user", "content": "Reply with ok"}]}))
                .send()
                .await
                .expect("a completion");
            let status = answer.status();
            answer.bytes().await.expect("its body");
            (status, started.elapsed(), Instant::now())
        };
        let health = async {
            let answer = client
                .get(format!("{url}/health"))
                .send()
                .await
                .expect("/health");
            (answer.status(), Instant::now())
        };
        let models = async {
            let answer = client
                .get(format!("{url}/v1/models"))
                .bearer_auth(VLLM_KEY)
                .send()
                .await
                .expect("/v1/models");
            (answer.status(), Instant::now())
        };
        let (
            (chat_status, chat_took, chat_done),
            (health_status, health_done),
            (models_status, models_done),
        ) = tokio::join!(chat, health, models);
        assert_eq!(
            [chat_status, health_status, models_status].map(|s| s.as_u16()),
            [200; 3]
        );
        assert!(
            chat_took >= total,
            "the completion took {chat_took:?}, less than {total:?}"
        );
        assert!(
            health_done < chat_done && models_done < chat_done,
            "/health and /v1/models answered after the completion"
        );

        let seen = stream_chat(&client, &url).await;
        let (Some(token), Some(done)) = (seen.first_token, seen.done) else {
            panic!("the stream had no content token or no [DONE]")
        };
        assert!(
            token >= first,
            "the first token came after {token:?}, before {first:?}"
        );
        assert!(
            done >= total,
            "[DONE] came after {done:?}, before {total:?}"
        );
        assert!(
            done - token >= ms(300),
            "the first token ({token:?}) came hardly before [DONE] ({done:?})"
        );
    });
    // A refusal is quick, as vLLM's are: no model time for a bad key.
    let refused = runtime().block_on(async {
        let started = Instant::now();
        let answer = client
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth("not-the-key")
            .json(&json!({"model": SERVED_MODEL, "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .expect("a refusal");
        (answer.status(), started.elapsed())
    });
    assert_eq!(refused.0, 401);
    assert!(
        refused.1 < total,
        "a 401 took {:?}, the model's time: refusals must not wait for the model",
        refused.1
    );
}
