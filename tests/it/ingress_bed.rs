//! The bed for the way users come in (issue 14), proven before any check uses it: the
//! certificates it generates are what their names say, every scenario loads them fresh and
//! alike, a client verifying with the bed's test CA meets the right failure at a TLS front for
//! each kind (name mismatch, expired, untrusted) and reaches the real LiteLLM through a good
//! one, SNI included; the model of Traefik says what each `ingress-*` scenario serves; and the
//! sandbox faults `cert-expiring` and `ingress-wrong-port` serve their external route so.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::CertificateError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::Value;

use crate::harness::{Run, run_in};
use crate::support::certs::{self, CertSpec, DAY, Generated, TRAEFIK_DEFAULT_CN};
use crate::support::fake_kube::{Scenario, load_scenario, str_at};
use crate::support::ingress::{
    self, Backend, HOST, IngressSpec, OLD_HOST, RouteSpec, RouteTls, TLS_SECRET,
    TRAEFIK_CONTAINO_US,
};
use crate::support::litellm::litellm_proxy;
use crate::support::stack::{self, Stack};
use crate::support::tls_front::{Backend as FrontBackend, TRAEFIK_NOT_FOUND, TlsFront};

/// `cert` as a client verifies it for `host` at Unix time `at`, trusting the test CA only.
fn verify_at(cert: &Generated, host: &str, at: i64) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(certs::test_ca_pem().as_bytes()).expect("CA PEM"))
        .expect("adding the test CA");
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("a verifier");
    let name = ServerName::try_from(host.to_string()).expect("a DNS name");
    let at = UnixTime::since_unix_epoch(Duration::from_secs(at as u64));
    verifier
        .verify_server_cert(&cert.cert_der, &[], &name, &[], at)
        .map(|_| ())
}

fn is_name_mismatch(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )
    )
}

fn is_expired(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        )
    )
}

fn is_untrusted(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    )
}

#[test]
fn each_generated_certificate_verifies_as_its_name_says() {
    let now = certs::now();
    let valid = certs::generate(&CertSpec::valid(&[HOST]));
    assert_eq!(verify_at(&valid, HOST, now), Ok(()));
    assert!(valid.not_after - now > 59 * DAY, "{valid:?}");

    // Valid now and in 9 days, expired in 11: it expires in 10.
    let expiring = certs::generate(&CertSpec::expiring_in_days(&[HOST], 10));
    assert_eq!(verify_at(&expiring, HOST, now), Ok(()));
    assert_eq!(verify_at(&expiring, HOST, now + 9 * DAY), Ok(()));
    let later = verify_at(&expiring, HOST, now + 11 * DAY).expect_err("expired by then");
    assert!(is_expired(&later), "{later:?}");

    let expired = certs::generate(&CertSpec::expired(&[HOST]));
    let e = verify_at(&expired, HOST, now).expect_err("expired");
    assert!(is_expired(&e), "{e:?}");
    assert_eq!(
        verify_at(&expired, HOST, now - 6 * DAY),
        Ok(()),
        "it was valid"
    );

    let wrong_host = certs::generate(&CertSpec::valid(&[OLD_HOST]));
    let e = verify_at(&wrong_host, HOST, now).expect_err("not for this host");
    assert!(is_name_mismatch(&e), "{e:?}");

    let self_signed = certs::generate(&CertSpec::self_signed(&[HOST]));
    let e = verify_at(&self_signed, HOST, now).expect_err("nobody signed it");
    assert!(is_untrusted(&e), "{e:?}");
    let traefik = certs::traefik_default();
    assert_eq!(traefik.common_name, TRAEFIK_DEFAULT_CN);
    let e = verify_at(&traefik, HOST, now).expect_err("Traefik's own");
    assert!(is_untrusted(&e), "{e:?}");

    // One certificate per spec per process: a second ask is the same certificate.
    assert!(Arc::ptr_eq(
        &valid,
        &certs::generate(&CertSpec::valid(&[HOST]))
    ));
    let wildcard = certs::generate(&CertSpec::valid(&["*.example.test"]));
    assert!(wildcard.covers(HOST) && !wildcard.covers("a.b.example.test"));
}

/// The certificate a scenario's Secret holds, found among those the bed made.
fn secret_certificate(scenario: &Scenario, secret: &str) -> Arc<Generated> {
    let pem = scenario
        .secret_value("litellm", secret, "tls.crt")
        .unwrap_or_else(|| panic!("{}: no tls.crt in {secret}", scenario.name));
    let key = scenario
        .secret_value("litellm", secret, "tls.key")
        .unwrap_or_else(|| panic!("{}: no tls.key in {secret}", scenario.name));
    let cert = certs::find_by_pem(&pem).expect("a certificate the bed made");
    assert_eq!(
        key, cert.key_pem,
        "{}: the key is the certificate's",
        scenario.name
    );
    cert
}

#[test]
fn scenario_certificates_are_made_at_load_and_alike_on_every_load() {
    for (name, secret_type, hosts, days_left, self_signed) in [
        ("ingress-healthy", "kubernetes.io/tls", HOST, 60, false),
        (
            "ingress-cert-expiring",
            "kubernetes.io/tls",
            HOST,
            10,
            false,
        ),
        ("ingress-cert-expired", "kubernetes.io/tls", HOST, -5, false),
        (
            "ingress-cert-wrong-host",
            "kubernetes.io/tls",
            OLD_HOST,
            60,
            false,
        ),
        (
            "ingress-cert-self-signed",
            "kubernetes.io/tls",
            HOST,
            60,
            true,
        ),
        ("ingress-tls-secret-wrong-type", "Opaque", HOST, 60, false),
        (
            "ingressroute-containo-us",
            "kubernetes.io/tls",
            HOST,
            60,
            false,
        ),
    ] {
        let first = load_scenario(name);
        let second = load_scenario(name);
        let secret = first.object("Secret", Some("litellm"), TLS_SECRET);
        assert_eq!(str_at(secret, "/type"), Some(secret_type), "{name}");
        assert_eq!(
            first.secret_value("litellm", TLS_SECRET, "tls.crt"),
            second.secret_value("litellm", TLS_SECRET, "tls.crt"),
            "{name}: every load holds the same certificate"
        );
        let cert = secret_certificate(&first, TLS_SECRET);
        assert_eq!(cert.spec.hosts, [hosts], "{name}");
        assert_eq!(cert.spec.self_signed, self_signed, "{name}");
        // Generated at this process's first load: at most the test run's age ago. The clock is
        // read after the load, so the first load's second is never counted against it.
        let left = cert.not_after - certs::now();
        assert!(
            (days_left * DAY - 3600..=days_left * DAY).contains(&left),
            "{name}: {left} s left, want {days_left} days"
        );
    }
    let missing = load_scenario("ingress-tls-secret-missing");
    assert!(missing.get("Secret", Some("litellm"), TLS_SECRET).is_none());
}

/// A client as a later `e2e::ingress` check is one: TLS verified against the test CA only,
/// `host` resolved to the front (as `--endpoint ingress:<host>=URL` does), SNI and
/// verification for `host`. Returns the status, body and the presented certificate (DER).
async fn get_through(
    front: SocketAddr,
    host: &str,
    path: &str,
) -> Result<(u16, String, Vec<u8>), reqwest::Error> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(
            certs::test_ca_pem().as_bytes(),
        )?)
        .resolve(host, front)
        .tls_info(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("https://{host}:{}{path}", front.port());
    let answer = client.get(url).send().await?;
    let presented = answer
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    Ok((answer.status().as_u16(), answer.text().await?, presented))
}

/// The rustls error under a reqwest error. An io::Error's `source()` skips the error it wraps
/// (hyper wraps rustls's in two), so the walk steps into each one it meets.
fn tls_error(e: &reqwest::Error) -> Option<rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.clone());
        }
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn a_tls_front_before_litellm_proves_sni_and_name_verification() {
    let proxy = litellm_proxy();
    let litellm: SocketAddr = proxy
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("proxy address");
    let rt = runtime();

    // The right name: verified, SNI asked for the host, and the real LiteLLM answered.
    let valid = certs::generate(&CertSpec::valid(&[HOST]));
    let front = TlsFront::presenting(valid.clone(), FrontBackend::Relay(litellm));
    let (status, body, presented) = rt
        .block_on(get_through(front.addr(), HOST, "/health/liveliness"))
        .expect("a verified request through the front");
    assert_eq!((status, body.as_str()), (200, "\"I'm alive!\""));
    assert_eq!(presented, valid.cert_der.to_vec());
    let handshakes = front.handshakes();
    assert!(!handshakes.is_empty());
    assert!(
        handshakes
            .iter()
            .all(|h| h.server_name.as_deref() == Some(HOST) && h.presented == HOST),
        "{handshakes:?}"
    );

    // Each broken certificate fails verification with its own error, before any request.
    for (spec, want, what) in [
        (
            CertSpec::valid(&[OLD_HOST]),
            is_name_mismatch as fn(&rustls::Error) -> bool,
            "a certificate for another host",
        ),
        (
            CertSpec::expired(&[HOST]),
            is_expired,
            "an expired certificate",
        ),
        (
            CertSpec::self_signed(&[HOST]),
            is_untrusted,
            "a self-signed certificate",
        ),
    ] {
        let front = TlsFront::presenting(certs::generate(&spec), FrontBackend::Relay(litellm));
        let err = rt
            .block_on(get_through(front.addr(), HOST, "/health/liveliness"))
            .expect_err(what);
        let tls = tls_error(&err).unwrap_or_else(|| panic!("{what}: no TLS error in {err:?}"));
        assert!(want(&tls), "{what}: {tls:?}");
        assert_eq!(
            front.server_names(),
            [Some(HOST.to_string())],
            "{what}: the client asked for the host by SNI"
        );
    }
}

#[test]
fn a_route_that_reaches_no_litellm_answers_as_traefik_or_the_wrong_service() {
    let rt = runtime();
    let valid = certs::generate(&CertSpec::valid(&[HOST]));
    let front = TlsFront::presenting(valid.clone(), FrontBackend::Answer(TRAEFIK_NOT_FOUND));
    let (status, body, _) = rt
        .block_on(get_through(front.addr(), HOST, "/health/liveliness"))
        .expect("Traefik's 404 over verified TLS");
    assert_eq!((status, body.as_str()), (404, "404 page not found\n"));

    // vLLM behind the route: its own 404 for LiteLLM's path.
    let vllm = litellm_proxy().fake(crate::support::litellm::alias::HEALTHY);
    let front = TlsFront::presenting(valid, FrontBackend::Relay(vllm.addr()));
    let (status, body, _) = rt
        .block_on(get_through(front.addr(), HOST, "/health/liveliness"))
        .expect("vLLM's 404 over verified TLS");
    assert_eq!(status, 404);
    let body: Value = serde_json::from_str(&body).expect("vLLM's JSON");
    assert_eq!(body["detail"], "Not Found");

    // As Traefik: the certificate covering the name asked for, else its own default.
    let store = vec![certs::generate(&CertSpec::valid(&[OLD_HOST]))];
    let front = TlsFront::traefik(store, FrontBackend::Answer(TRAEFIK_NOT_FOUND));
    let err = rt
        .block_on(get_through(front.addr(), HOST, "/"))
        .expect_err("Traefik's default certificate is trusted by nobody");
    assert!(tls_error(&err).is_some_and(|e| is_untrusted(&e)), "{err:?}");
    let (status, _, _) = rt
        .block_on(get_through(front.addr(), OLD_HOST, "/"))
        .expect("the old host's certificate is in the store");
    assert_eq!(status, 404);
    let presented: Vec<String> = front
        .handshakes()
        .into_iter()
        .map(|h| h.presented)
        .collect();
    assert_eq!(presented, [TRAEFIK_DEFAULT_CN, OLD_HOST]);
}

/// What Traefik serves for HOST in each scenario: the certificate a client asking for it gets
/// (by common name and days left, or Traefik's default) and where the request goes.
#[test]
fn traefik_serves_each_ingress_scenario_as_its_readme_says() {
    let litellm = Backend::Service {
        namespace: "litellm".into(),
        name: "litellm".into(),
        port: 4000,
    };
    let vllm = Backend::Service {
        namespace: "vllm".into(),
        name: "vllm".into(),
        port: 80,
    };
    let default = (TRAEFIK_DEFAULT_CN, None);
    for (name, (cn, days), backend) in [
        ("ingress-healthy", (HOST, Some(60)), &litellm),
        ("ingress-cert-expiring", (HOST, Some(10)), &litellm),
        ("ingress-cert-expired", (HOST, Some(-5)), &litellm),
        // No certificate of the store covers the host: Traefik presents its own.
        ("ingress-cert-wrong-host", default, &litellm),
        ("ingress-cert-self-signed", (HOST, Some(60)), &litellm),
        ("ingress-wrong-port", (HOST, Some(60)), &Backend::NotFound),
        ("ingress-tls-secret-missing", default, &litellm),
        // Traefik reads tls.crt and tls.key whatever the type.
        ("ingress-tls-secret-wrong-type", (HOST, Some(60)), &litellm),
        ("ingress-class-missing", default, &Backend::NotFound),
        ("ingress-tls-section-missing", default, &litellm),
        // The ACME resolver's certificate (the test CA standing in for Let's Encrypt).
        ("ingressroute-acme", (HOST, Some(60)), &litellm),
        ("ingressroute-wrong-service", (HOST, Some(60)), &vllm),
        ("ingressroute-containo-us", (HOST, Some(60)), &litellm),
    ] {
        let traefik = ingress::traefik(&load_scenario(name));
        let route = traefik
            .route(HOST)
            .unwrap_or_else(|| panic!("{name}: nothing names {HOST}: {traefik:?}"));
        assert_eq!(&route.backend, backend, "{name}");
        let cert = traefik.certificate_for(HOST);
        assert_eq!(cert.common_name, cn, "{name}");
        if let Some(days) = days {
            // Read after the load that made the certificate: never a second before it.
            let left = cert.not_after - certs::now();
            assert!(
                (days * DAY - 3600..=days * DAY).contains(&left),
                "{name}: {left} s left, want {days} days"
            );
        }
        assert_eq!(traefik.routes.len(), 1, "{name}: {traefik:?}");
    }
    let none = ingress::traefik(&load_scenario("healthy"));
    assert!(none.routes.is_empty(), "{none:?}");
}

/// The builders make what the folders hold (but for the uid and resourceVersion), so a test
/// that builds a variation builds it on the same shape.
#[test]
fn the_builders_make_what_the_scenario_folders_hold() {
    let same = |built: Value, folder: &Value| {
        let strip = |mut v: Value| {
            if let Some(meta) = v["metadata"].as_object_mut() {
                meta.remove("uid");
                meta.remove("resourceVersion");
            }
            v
        };
        assert_eq!(strip(built), strip(folder.clone()));
    };
    let healthy = load_scenario("ingress-healthy");
    same(
        ingress::ingress(&IngressSpec::litellm()),
        healthy.object("Ingress", Some("litellm"), "litellm"),
    );
    same(
        ingress::ingress_class_traefik(),
        healthy.object("IngressClass", None, "traefik"),
    );
    same(
        ingress::tls_secret(
            "litellm",
            TLS_SECRET,
            "kubernetes.io/tls",
            &secret_certificate(&healthy, TLS_SECRET),
        ),
        healthy.object("Secret", Some("litellm"), TLS_SECRET),
    );
    same(
        ingress::ingress_route(&RouteSpec::litellm()),
        load_scenario("ingressroute-acme").object("IngressRoute", Some("litellm"), "litellm"),
    );
    let containo = RouteSpec {
        group: TRAEFIK_CONTAINO_US.into(),
        tls: RouteTls::Secret(TLS_SECRET.into()),
        ..RouteSpec::litellm()
    };
    same(
        ingress::ingress_route(&containo),
        load_scenario("ingressroute-containo-us").object(
            "IngressRoute",
            Some("litellm"),
            "litellm",
        ),
    );

    // A variation on a loaded scenario: a second host whose certificate expires in 2 days.
    let mut s = load_scenario("ingress-healthy");
    let other = IngressSpec {
        name: "litellm-internal".into(),
        host: "litellm.internal.example.test".into(),
        tls_secret: Some("litellm-internal-tls".into()),
        ..IngressSpec::litellm()
    };
    let cert = certs::generate(&CertSpec::expiring_in_days(&[other.host.as_str()], 2));
    ingress::put(
        &mut s,
        ingress::tls_secret(
            "litellm",
            "litellm-internal-tls",
            "kubernetes.io/tls",
            &cert,
        ),
    );
    ingress::put(&mut s, ingress::ingress(&other));
    let traefik = ingress::traefik(&s);
    assert_eq!(traefik.routes.len(), 2);
    assert!(Arc::ptr_eq(&traefik.certificate_for(&other.host), &cert));
    assert!(traefik.certificate_for(HOST).covers(HOST));
}

/// Today's smokecheck against a stack: every check but those issue 14 adds (which do not exist
/// yet) must pass, so the fault is the external route alone.
fn assert_only_the_route_is_broken(stack: &Stack) {
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = stack.suite.display().to_string();
    let run: Run = run_in(
        dir,
        &stack.kubeconfig,
        &["--format", "json"],
        &["--suite", &suite],
    );
    let doc = run.json();
    let others: Vec<&Value> = doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| {
            let name = c["name"].as_str().unwrap_or_default();
            !name.starts_with("kubernetes::ingress::") && !name.starts_with("e2e::ingress::")
        })
        .collect();
    assert!(others.len() >= 30, "{}", run.stdout);
    let not_passed: Vec<&&Value> = others.iter().filter(|c| c["status"] != "passed").collect();
    assert!(
        not_passed.is_empty(),
        "{}: {not_passed:#?}\nstderr: {}",
        stack.fault.name,
        run.stderr
    );
}

#[test]
fn the_cert_expiring_fault_serves_litellm_with_a_certificate_ten_days_from_expiry() {
    let stack = stack::start(stack::fault("cert-expiring").expect("fault"));
    let endpoints = stack.ingress_endpoints();
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    assert_eq!(endpoints[0].0, HOST);
    assert!(
        endpoints[0].1.starts_with("https://127.0.0.1:"),
        "{endpoints:?}"
    );
    assert_eq!(
        std::fs::read_to_string(stack.ingress_ca()).expect("the CA file"),
        certs::test_ca_pem()
    );
    let front = stack.front(HOST).expect("a front for the host");
    let (status, body, presented) = runtime()
        .block_on(get_through(front.addr(), HOST, "/health/liveliness"))
        .expect("a verified request through the route");
    assert_eq!((status, body.as_str()), (200, "\"I'm alive!\""));
    // What the front presented is the Secret's certificate, with 10 days left.
    let secret = secret_certificate(stack.fake.scenario(), TLS_SECRET);
    assert_eq!(presented, secret.cert_der.to_vec());
    let left = secret.not_after - certs::now();
    assert!((9 * DAY..=10 * DAY).contains(&left), "{left} s left");
    assert_eq!(front.server_names(), [Some(HOST.to_string())]);
    assert_only_the_route_is_broken(&stack);
}

#[test]
fn the_ingress_wrong_port_fault_answers_traefiks_404_for_the_host() {
    let stack = stack::start(stack::fault("ingress-wrong-port").expect("fault"));
    let front = stack.front(HOST).expect("a front for the host");
    let (status, body, _) = runtime()
        .block_on(get_through(front.addr(), HOST, "/health/liveliness"))
        .expect("the certificate is fine; the route is not");
    assert_eq!((status, body.as_str()), (404, "404 page not found\n"));
    assert_only_the_route_is_broken(&stack);
}
