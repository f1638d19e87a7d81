//! How smokecheck reaches LiteLLM, vLLM and the API server: never through an `HTTP(S)_PROXY` for
//! loopback, port-forward or in-cluster addresses (the proxy would see the master key and the
//! chats), through it for other hosts unless `NO_PROXY` names them; port-forward streams that end
//! with the connection or the run that needed them; and an `https://` `api_base` that stays
//! https through a port-forward, verified against the Service's name.

use crate::harness::{Run, passed, run_in_env};
use crate::support::fake_kube::FakeKube;
use crate::support::fake_vllm::FakeVllm;
use crate::support::litellm::{MAX_MODEL_LEN, SERVED_MODEL, VLLM_KEY};
use crate::support::recording_proxy::RecordingProxy;

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
