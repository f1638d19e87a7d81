//! How smokecheck reaches LiteLLM, vLLM and the API server: never through an `HTTP(S)_PROXY` for
//! loopback, port-forward or in-cluster addresses (the proxy would see the master key and the
//! chats), through it for other hosts unless `NO_PROXY` names them; port-forward streams that end
//! with the connection or the run that needed them; and an `https://` `api_base` that stays
//! https through a port-forward, verified against the Service's name.

use std::time::{Duration, Instant};

use crate::harness::{Run, passed, run_in_env, text};
use crate::support::fake_kube::{FakeKube, StreamEnd, load_scenario};
use crate::support::fake_vllm::FakeVllm;
use crate::support::litellm::{MAX_MODEL_LEN, SERVED_MODEL, VLLM_KEY};
use crate::support::postgres::postgres;
use crate::support::recording_proxy::RecordingProxy;
use crate::support::stack;
use crate::support::tls_front::TlsFront;

/// The vLLM pod of the scenarios and its container port.
const VLLM_POD: &str = "vllm-5b6f7d8c9f-q8r2n";
const VLLM_PORT: u16 = 8000;

/// Proxy settings that, if followed blindly, send everything to `proxy`.
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];
const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

fn verify(fake: &FakeKube, args: &[&str], env: &[(&str, &str)], unset: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    run_in_env(dir, &kubeconfig, args, env, unset)
}

fn vllm() -> FakeVllm {
    FakeVllm::start(&[(SERVED_MODEL, MAX_MODEL_LEN)], VLLM_KEY)
}

#[test]
fn loopback_port_forward_and_in_cluster_traffic_never_goes_through_the_proxy() {
    let proxy = RecordingProxy::start();
    let url = proxy.url();
    let env: Vec<(&str, &str)> = PROXY_VARS.iter().map(|v| (*v, url.as_str())).collect();
    let fake = FakeKube::start("healthy");
    let vllm = vllm();
    fake.forward("vllm", VLLM_POD, VLLM_PORT, vllm.addr());

    // `--endpoint` at a loopback address; the API server on 127.0.0.1 too.
    let endpoint = format!("vllm={}", vllm.url());
    let run = verify(
        &fake,
        &["--endpoint", &endpoint, "--exact", "vllm::health"],
        &env,
        &NO_PROXY_VARS,
    );
    passed(&run, "vllm::health");
    assert_eq!(
        proxy.seen(),
        Vec::<String>::new(),
        "loopback went through the proxy"
    );
    // Through a port-forward.
    let run = verify(
        &fake,
        &["--connect", "port-forward", "--exact", "vllm::health"],
        &env,
        &NO_PROXY_VARS,
    );
    passed(&run, "vllm::health");
    assert_eq!(
        proxy.seen(),
        Vec::<String>::new(),
        "a port-forward went through the proxy"
    );
    // The in-cluster name, directly: it does not resolve here, and the proxy must not be asked
    // to resolve it either.
    let run = verify(
        &fake,
        &[
            "--connect",
            "direct",
            "--exact",
            "vllm::health",
            "--timeout",
            "10s",
        ],
        &env,
        &NO_PROXY_VARS,
    );
    assert_eq!(
        run.check("vllm::health")["status"],
        "failed",
        "{}",
        run.stdout
    );
    assert_eq!(
        proxy.seen(),
        Vec::<String>::new(),
        "an in-cluster name went to the proxy"
    );
}

#[test]
fn other_hosts_go_through_the_proxy_unless_no_proxy_names_them() {
    let proxy = RecordingProxy::start();
    let url = proxy.url();
    let fake = FakeKube::start("healthy");
    let args = [
        "--endpoint",
        "vllm=http://vllm.proxied.test:8000",
        "--exact",
        "vllm::health",
        "--timeout",
        "10s",
    ];
    let run = verify(&fake, &args, &[("HTTP_PROXY", &url)], &NO_PROXY_VARS);
    // The recording proxy answers 200 itself.
    passed(&run, "vllm::health");
    assert_eq!(
        proxy.seen(),
        vec!["GET http://vllm.proxied.test:8000/health HTTP/1.1".to_string()]
    );

    let run = verify(
        &fake,
        &args,
        &[
            ("HTTP_PROXY", &url),
            ("NO_PROXY", "example.org,.proxied.test"),
        ],
        &[],
    );
    assert_eq!(
        run.check("vllm::health")["status"],
        "failed",
        "{}",
        run.stdout
    );
    assert_eq!(
        proxy.seen().len(),
        1,
        "NO_PROXY was ignored: {:?}",
        proxy.seen()
    );
}

#[test]
fn the_api_server_is_reached_through_https_proxy_when_it_is_not_local() {
    let proxy = RecordingProxy::start();
    let url = proxy.url();
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    // A made-up name for the API server: only the proxy can reach it (it tunnels to 127.0.0.1);
    // the certificate is checked against `localhost`, a name it carries.
    let port = fake
        .url()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let text = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    let server =
        format!("    server: https://kube.proxied.test:{port}\n    tls-server-name: localhost\n");
    let text = text.replace(&format!("    server: {}\n", fake.url()), &server);
    std::fs::write(&kubeconfig, text).expect("rewrite");
    let run = run_in_env(
        dir,
        &kubeconfig,
        &["--exact", "platform::namespace"],
        &[("HTTPS_PROXY", &url)],
        &NO_PROXY_VARS,
    );
    passed(&run, "platform::namespace");
    assert!(
        proxy
            .seen()
            .iter()
            .all(|l| l == &format!("CONNECT kube.proxied.test:{port} HTTP/1.1")),
        "{:?}",
        proxy.seen()
    );
    assert!(!proxy.seen().is_empty());
}

/// Waits (bounded) until every port-forward stream the fake served has ended.
fn all_streams_ended(fake: &FakeKube) -> Vec<crate::support::fake_kube::ForwardStream> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let streams = fake.forward_streams();
        if streams.iter().all(|s| s.ended.is_some()) || Instant::now() > until {
            return streams;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn port_forward_streams_of_timed_out_checks_close_with_the_check() {
    let fake = FakeKube::start("healthy");
    let vllm = vllm();
    // vLLM holds every request far longer than the check waits.
    vllm.set_delay(Duration::from_secs(60));
    fake.forward("vllm", VLLM_POD, VLLM_PORT, vllm.addr());
    let run = verify(
        &fake,
        &[
            "--connect",
            "port-forward",
            "--exact",
            "vllm::health",
            "--timeout",
            "2s",
            "--wait",
            "10s",
        ],
        &[],
        &[],
    );
    let c = run.check("vllm::health");
    assert_eq!(c["cause"], "timeout", "{c:#}");
    let attempts = c["attempts"].as_u64().unwrap_or(0);
    assert!(attempts >= 3, "{c:#}");
    let streams = all_streams_ended(&fake);
    assert_eq!(
        streams.len() as u64,
        attempts,
        "one stream per attempt: {streams:#?}"
    );
    for s in &streams {
        let (ended, how) = s.ended.expect("every stream ended");
        // The run lasts over 10 s; a stream left open until the end would live that long.
        assert!(
            ended - s.opened < Duration::from_secs(7),
            "a timed-out attempt's stream stayed open {:?}: {streams:#?}",
            ended - s.opened
        );
        assert_eq!(how, StreamEnd::ClientClosed, "{streams:#?}");
    }
}

#[test]
fn an_idle_forwarded_connection_is_closed_by_the_end_of_the_run() {
    let fake = FakeKube::start("healthy");
    let vllm = vllm();
    fake.forward("vllm", VLLM_POD, VLLM_PORT, vllm.addr());
    let run = verify(
        &fake,
        &["--connect", "port-forward", "--exact", "vllm::health"],
        &[],
        &[],
    );
    passed(&run, "vllm::health");
    let streams = all_streams_ended(&fake);
    assert!(!streams.is_empty());
    for s in &streams {
        // Closed by smokecheck with a WebSocket Close, not dropped when its process died.
        assert_eq!(
            s.ended.map(|e| e.1),
            Some(StreamEnd::ClientClosed),
            "{streams:#?}"
        );
    }
}

#[test]
fn an_https_api_base_through_a_port_forward_stays_https_and_verified_by_name() {
    let vllm = vllm();
    let front = TlsFront::start(
        &["vllm.vllm.svc.cluster.local", "vllm.vllm.svc"],
        vllm.addr(),
    );
    let mut scenario = load_scenario("healthy");
    for o in scenario.objects.iter_mut() {
        if o["kind"] == "ConfigMap" && o["metadata"]["name"] == "litellm-config" {
            let config = o["data"]["config.yaml"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(config.contains("api_base: http://vllm.vllm.svc.cluster.local/v1"));
            o["data"]["config.yaml"] = serde_json::Value::from(
                config.replace("api_base: http://vllm.", "api_base: https://vllm."),
            );
        }
    }
    let fake = FakeKube::start_with(scenario);
    fake.forward("vllm", VLLM_POD, VLLM_PORT, front.addr());
    let ca = tempfile::NamedTempFile::new().expect("ca file");
    std::fs::write(ca.path(), front.ca_pem()).expect("write ca");
    let ca_path = ca.path().display().to_string();
    let args = ["--connect", "port-forward", "--exact", "vllm::health"];

    let run = verify(&fake, &args, &[("SSL_CERT_FILE", &ca_path)], &[]);
    let c = passed(&run, "vllm::health");
    assert!(
        text(&c, "summary").contains("https://vllm.vllm.svc.cluster.local:"),
        "{c:#}"
    );
    let names = front.server_names();
    assert!(!names.is_empty());
    assert!(
        names
            .iter()
            .all(|n| n.as_deref() == Some("vllm.vllm.svc.cluster.local")),
        "{names:?}"
    );

    // The certificate is verified: without its CA, the check fails on it.
    let run = verify(&fake, &args, &[], &["SSL_CERT_FILE", "SSL_CERT_DIR"]);
    let c = run.check("vllm::health");
    assert_eq!(c["status"], "failed", "{c:#}");
    assert!(
        format!("{}{}", text(&c, "summary"), text(&c, "details"))
            .to_lowercase()
            .contains("certificate"),
        "{c:#}"
    );
}

#[test]
fn a_database_session_stuck_behind_a_lock_is_cut_when_the_run_ends() {
    let stack = stack::start(stack::fault("healthy").expect("fault"));
    let db = &stack.db;
    // Another session holds the migration ledger: the check's query waits behind it, and its
    // connection (a task of its own) outlives the check's timeout.
    let mut holder = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
        .arg(format!("{}?sslmode=require", db.url()))
        .args([
            "-X",
            "-q",
            "-c",
            "BEGIN; LOCK TABLE \"_prisma_migrations\" IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    let locked = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                  WHERE c.relname = '_prisma_migrations' AND l.mode = 'AccessExclusiveLock' AND l.granted";
    let until = Instant::now() + Duration::from_secs(20);
    while postgres().superuser_sql(&db.name, locked).trim() != "1" {
        assert!(Instant::now() < until, "the lock was never taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = stack.suite.display().to_string();
    let run = run_in_env(
        dir,
        &stack.kubeconfig,
        &[
            "--suite",
            &suite,
            "--exact",
            "database::migrations",
            "--timeout",
            "3s",
        ],
        &[],
        &[],
    );
    let _ = holder.kill();
    let _ = holder.wait();
    // The session's lock_timeout (below --timeout) ends the wait on the server's side.
    let c = run.check("database::migrations");
    assert_eq!(c["cause"], "db_error", "{}", run.stdout);
    assert!(text(&c, "summary").contains("SQLSTATE 55P03"), "{c:#}");
    let streams = all_streams_ended(&stack.fake);
    let to_db: Vec<_> = streams
        .iter()
        .filter(|s| s.pod.starts_with("cloudnative-pg-cluster"))
        .collect();
    assert!(!to_db.is_empty(), "{streams:#?}");
    for s in to_db {
        // Closed by smokecheck at the end of its run, not dropped when its process died. Its
        // client sends Terminate on close and PostgreSQL hangs up on reading it, so either end
        // may be seen first: the pod's close or smokecheck's Close frame. Only a vanished
        // client means the connection outlived the run.
        let how = s.ended.map(|e| e.1);
        assert!(
            matches!(how, Some(StreamEnd::ClientClosed | StreamEnd::PodClosed)),
            "{how:?}: {streams:#?}"
        );
    }
}
