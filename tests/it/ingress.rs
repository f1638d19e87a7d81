//! Issue 14's checks against the bed: `kubernetes::ingress::<name>` for every `ingress-*`
//! scenario with the verdict tests/fixtures/scenarios/README.md expects, and
//! `e2e::ingress::<host>` through the stack's TLS fronts (as Traefik would serve each
//! scenario) with `--endpoint ingress:<host>=URL`, proving SNI and name verification.

use std::net::SocketAddr;

use crate::harness::{Run, failed, metric, passed, run_in, text, verify_json};
use crate::support::certs::{self, CertSpec};
use crate::support::fake_kube::FakeKube;
use crate::support::ingress::{HOST, OLD_HOST};
use crate::support::litellm::litellm_proxy;
use crate::support::stack::{self, Stack};
use crate::support::tls_front::{Backend as FrontBackend, TlsFront};

const STATIC: &str = "kubernetes::ingress::litellm";

fn e2e_name() -> String {
    format!("e2e::ingress::{HOST}")
}

/// A suite file in `dir` with `ingress` as its `litellm.ingress` section (YAML, indented 4).
fn suite_with(dir: &std::path::Path, ingress: &str) -> String {
    let path = dir.join("suite.yaml");
    std::fs::write(
        &path,
        format!("version: 1\nlitellm:\n  ingress:\n{ingress}"),
    )
    .expect("suite");
    path.display().to_string()
}

fn static_run(scenario: &str, args: &[&str]) -> Run {
    let fake = FakeKube::start(scenario);
    let mut all = vec![STATIC];
    all.extend(args);
    verify_json(&fake, &all)
}

#[test]
fn each_ingress_scenario_gets_the_static_verdict_its_readme_expects() {
    for (scenario, cause, summary) in [
        (
            "ingress-cert-expired",
            "tls_expired",
            "the certificate in Secret litellm/litellm-tls expired 5 days ago",
        ),
        (
            "ingress-cert-wrong-host",
            "tls_name_mismatch",
            "the certificate in Secret litellm/litellm-tls does not cover litellm.example.test",
        ),
        (
            "ingress-wrong-port",
            "service_port",
            "spec.rules[0].http.paths[0].backend.service.port 80 names no port of Service litellm/litellm",
        ),
        (
            "ingress-tls-secret-missing",
            "not_found",
            "the Secret litellm/litellm-tls that spec.tls[0].secretName names does not exist",
        ),
        (
            "ingress-tls-secret-wrong-type",
            "tls_secret_invalid",
            "is of type Opaque, not kubernetes.io/tls",
        ),
        (
            "ingress-class-missing",
            "ingress_class_missing",
            "IngressClass nginx (spec.ingressClassName) does not exist",
        ),
        (
            "ingress-tls-section-missing",
            "ingress_tls_mismatch",
            "asks for TLS, but spec.tls names no certificate",
        ),
    ] {
        let run = static_run(scenario, &[]);
        let c = failed(&run, STATIC, cause, summary);
        assert!(
            text(&c, "hint").contains("Ingress litellm/litellm")
                || text(&c, "hint").contains("litellm-tls"),
            "{scenario}: the hint names the object: {c:#}"
        );
    }
}

#[test]
fn healthy_routes_pass_with_the_certificates_days_left() {
    let run = static_run("ingress-healthy", &[]);
    let c = passed(&run, STATIC);
    assert!(
        (58.0..=60.0).contains(&metric(&c, "cert_days_left")),
        "{c:#}"
    );
    assert!(c.get("warnings").is_none(), "{c:#}");
    assert_eq!(run.code, 0);

    let run = static_run("ingress-cert-self-signed", &[]);
    let c = passed(&run, STATIC);
    assert!(text(&c, "details").contains("self-signed"), "{c:#}");

    // Traefik v2's group is read too.
    let run = static_run("ingressroute-containo-us", &[]);
    let c = passed(&run, STATIC);
    assert!(
        text(&c, "summary").contains("IngressRoute litellm/litellm"),
        "{c:#}"
    );
    assert!(text(&c, "summary").contains("Secret litellm-tls"), "{c:#}");
}

#[test]
fn an_acme_route_has_no_secret_and_says_so() {
    let run = static_run("ingressroute-acme", &[]);
    let c = passed(&run, STATIC);
    assert!(
        text(&c, "summary").contains("TLS from ACME resolver letsencrypt"),
        "{c:#}"
    );
    assert!(text(&c, "details").contains("no Secret to read"), "{c:#}");
}

#[test]
fn a_named_route_to_another_service_fails_as_the_wrong_backend() {
    // Unnamed, a route to vLLM is none of LiteLLM's: no check at all.
    let fake = FakeKube::start("ingressroute-wrong-service");
    let run = verify_json(&fake, &["kubernetes::"]);
    assert!(
        !run.statuses()
            .iter()
            .any(|(n, _)| n.starts_with("kubernetes::ingress")),
        "{}",
        run.stdout
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = suite_with(dir.path(), "    name: litellm\n");
    let run = verify_json(&fake, &["--suite", &suite, STATIC]);
    let c = failed(
        &run,
        STATIC,
        "wrong_backend",
        "routes to Service vllm/vllm, not to the LiteLLM Service litellm/litellm",
    );
    assert!(
        text(&c, "hint").contains("spec.routes[0].services[0]"),
        "{c:#}"
    );
}

#[test]
fn a_certificate_expiring_within_the_threshold_warns_and_the_run_passes() {
    let run = static_run("ingress-cert-expiring", &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let c = passed(&run, STATIC);
    let warnings = c["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{c:#}");
    let reason = warnings[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the certificate in Secret litellm/litellm-tls expires in 9 days")
            || reason.contains("the certificate in Secret litellm/litellm-tls expires in 10 days"),
        "{reason}"
    );
    assert!(reason.contains("warn_days, 21"), "{reason}");
    assert_eq!(run.json()["summary"]["warned"], 1);

    // Under the failure threshold, the same certificate fails.
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = suite_with(dir.path(), "    warn_days: 30\n    fail_days: 12\n");
    let fake = FakeKube::start("ingress-cert-expiring");
    let run = verify_json(&fake, &["--suite", &suite, STATIC]);
    failed(
        &run,
        STATIC,
        "tls_expiring",
        "under litellm.ingress.fail_days, 12",
    );
}

/// Starts the stack for an `ingress-*` scenario (as the `cert-expiring` fault, another folder).
fn stack_for(scenario: &'static str) -> Stack {
    let base = stack::fault("cert-expiring").expect("fault");
    stack::start(stack::Fault {
        name: scenario,
        scenario,
        ..base
    })
}

/// `smokecheck verify e2e::ingress --endpoint ingress:<host>=<front>` against a stack.
fn e2e_run(stack: &Stack, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = stack.suite.display().to_string();
    let endpoints: Vec<String> = stack
        .ingress_endpoints()
        .iter()
        .map(|(h, u)| format!("--endpoint=ingress:{h}={u}"))
        .collect();
    let mut args: Vec<&str> = vec!["--suite", &suite, "e2e::ingress::"];
    args.extend(endpoints.iter().map(String::as_str));
    args.extend(extra);
    run_in(dir, &stack.kubeconfig, &["--format", "json"], &args)
}

#[test]
fn each_ingress_scenario_gets_the_end_to_end_verdict_its_readme_expects() {
    let name = e2e_name();
    for (scenario, cause) in [
        ("ingress-healthy", None),
        ("ingress-cert-expired", Some("tls_expired")),
        ("ingress-cert-wrong-host", Some("tls_untrusted")),
        ("ingress-cert-self-signed", Some("tls_untrusted")),
        ("ingress-wrong-port", Some("wrong_backend")),
        ("ingress-tls-secret-missing", Some("tls_untrusted")),
        ("ingress-tls-secret-wrong-type", None),
        ("ingress-class-missing", Some("tls_untrusted")),
        ("ingress-tls-section-missing", Some("tls_untrusted")),
        ("ingressroute-acme", None),
        ("ingressroute-wrong-service", Some("wrong_backend")),
        ("ingressroute-containo-us", None),
    ] {
        let stack = stack_for(scenario);
        let run = e2e_run(&stack, &[]);
        let c = run.check(&name);
        match cause {
            None => {
                assert_eq!(c["status"], "passed", "{scenario}: {c:#}\n{}", run.stderr);
                assert!(
                    (58.0..=60.0).contains(&metric(&c, "cert_days_left")),
                    "{c:#}"
                );
                assert_eq!(run.code, 0, "{scenario}");
            }
            Some(cause) => {
                assert_eq!(c["status"], "failed", "{scenario}: {c:#}");
                assert_eq!(c["cause"], cause, "{scenario}: {c:#}");
                assert_eq!(run.code, 1, "{scenario}");
            }
        }
        // Every request asked for the host by SNI, whatever address it went to.
        let front = stack.front(HOST).expect("a front");
        assert!(
            front
                .server_names()
                .iter()
                .all(|n| n.as_deref() == Some(HOST)),
            "{scenario}: {:?}",
            front.server_names()
        );
    }
}

#[test]
fn the_end_to_end_route_verifies_the_host_name_and_warns_of_expiry() {
    // The stack's route with a certificate 10 days from expiry: a warning, exit 0.
    let stack = stack::start(stack::fault("cert-expiring").expect("fault"));
    let run = e2e_run(&stack, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let c = passed(&run, &e2e_name());
    assert!(
        text(&c, "summary").contains("answered 200 from LiteLLM"),
        "{c:#}"
    );
    let reason = c["warnings"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.starts_with(&format!("the certificate {HOST} serves expires in")),
        "{reason}"
    );

    // A front that presents a certificate for another name: the name is verified, not only
    // the chain.
    let litellm: SocketAddr = litellm_proxy()
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("proxy address");
    let wrong = TlsFront::presenting(
        certs::generate(&CertSpec::valid(&[OLD_HOST])),
        FrontBackend::Relay(litellm),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = stack.suite.display().to_string();
    let endpoint = format!("--endpoint=ingress:{HOST}={}", wrong.url());
    let run = run_in(
        dir,
        &stack.kubeconfig,
        &["--format", "json"],
        &["--suite", &suite, "e2e::ingress::", &endpoint],
    );
    failed(
        &run,
        &e2e_name(),
        "tls_name_mismatch",
        "does not name litellm.example.test",
    );
    assert_eq!(wrong.server_names(), [Some(HOST.to_string())]);
}

#[test]
fn a_host_that_does_not_resolve_is_skipped_with_that_reason() {
    let fake = FakeKube::start("ingress-healthy");
    let run = verify_json(&fake, &["e2e::ingress::"]);
    let c = run.check(&e2e_name());
    assert_eq!(c["status"], "skipped", "{c:#}");
    assert!(
        text(&c, "skip_reason").contains("does not resolve from here"),
        "{c:#}"
    );
    assert_eq!(run.code, 0);
}

#[test]
fn an_ingress_endpoint_must_be_an_https_url_for_a_host() {
    let fake = FakeKube::start("ingress-healthy");
    for (spec, says) in [
        (
            "ingress:litellm.example.test=http://127.0.0.1:1",
            "https://",
        ),
        (
            "ingress:=https://127.0.0.1:1",
            "ingress:<host> needs a DNS host name",
        ),
    ] {
        let run = verify_json(&fake, &["--endpoint", spec]);
        assert_eq!(run.code, 2, "{spec}: {}", run.stderr);
        assert!(run.stderr.contains("--endpoint"), "{}", run.stderr);
        assert!(run.stderr.contains(says), "{spec}: {}", run.stderr);
    }
}
