//! Certificates the bed generates for the way users come in (the Ingress route): one test CA
//! per process, standing in for the public or corporate CA an Ingress certificate chains to
//! (and for Let's Encrypt behind a Traefik ACME resolver), and server certificates for given
//! hosts that are valid, expiring, expired or self-signed. Validity is relative to when the
//! tests run, so no fixture can hold such a certificate: a scenario names the one it needs
//! (`certificates:` in `_scenario.yaml`) and the loader fills its Secret from here.
//!
//! Each distinct [`CertSpec`] is generated once per process: every load of a scenario holds the
//! same certificate and key, so what a TLS front presents is what the Secret holds.

use std::sync::{Arc, Mutex, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

pub const DAY: i64 = 86_400;

/// How long the bed's certificates live, end to end: Let's Encrypt's 90 days.
pub const LIFETIME_DAYS: i64 = 90;

/// The common name of the certificate Traefik generates for itself and serves when no
/// certificate of its store matches the name a client asked for (its `DefaultDomain`).
pub const TRAEFIK_DEFAULT_CN: &str = "TRAEFIK DEFAULT CERT";

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertSpec {
    /// DNS names (subject alternative names; the first is also the common name).
    pub hosts: Vec<String>,
    /// Seconds from now to the end of validity; negative: expired that long ago. Validity
    /// starts [`LIFETIME_DAYS`] before it ends, or now when that is earlier (a longer-lived
    /// certificate, like Traefik's default, issued now).
    pub expires_in: i64,
    /// Signed by its own key instead of the test CA (`openssl req -x509` style).
    pub self_signed: bool,
}

impl CertSpec {
    fn new(hosts: &[&str], expires_in: i64, self_signed: bool) -> CertSpec {
        CertSpec {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            expires_in,
            self_signed,
        }
    }

    /// Signed by the test CA, 60 days left.
    pub fn valid(hosts: &[&str]) -> CertSpec {
        CertSpec::new(hosts, 60 * DAY, false)
    }

    /// Signed by the test CA, `days` left.
    pub fn expiring_in_days(hosts: &[&str], days: i64) -> CertSpec {
        CertSpec::new(hosts, days * DAY, false)
    }

    /// Signed by the test CA, expired 5 days ago.
    pub fn expired(hosts: &[&str]) -> CertSpec {
        CertSpec::new(hosts, -5 * DAY, false)
    }

    /// Signed by nobody but itself, 60 days left.
    pub fn self_signed(hosts: &[&str]) -> CertSpec {
        CertSpec::new(hosts, 60 * DAY, true)
    }
}

/// A generated certificate and its key.
#[derive(Debug)]
pub struct Generated {
    pub spec: CertSpec,
    /// The certificate's common name.
    pub common_name: String,
    /// PEM, as a `kubernetes.io/tls` Secret's `tls.crt` holds it.
    pub cert_pem: String,
    /// PKCS#8 PEM, as `tls.key` holds it.
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
    /// Validity, in Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl Generated {
    /// The certificate and key as a rustls server presents them.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)
            .expect("rustls signs with a key rcgen generated");
        Arc::new(CertifiedKey::new(vec![self.cert_der.clone()], signing))
    }

    /// Whether the certificate names `host`, as a client's verification (and Traefik's choice
    /// of certificate by SNI) matches names: exactly, or one label under a `*.` wildcard.
    pub fn covers(&self, host: &str) -> bool {
        self.spec.hosts.iter().any(|name| {
            name.eq_ignore_ascii_case(host)
                || name.strip_prefix("*.").is_some_and(|parent| {
                    host.split_once('.').is_some_and(|(label, rest)| {
                        !label.is_empty() && rest.eq_ignore_ascii_case(parent)
                    })
                })
        })
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let key = KeyPair::generate().expect("generating the test CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "smokecheck bed test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let start = now() - 365 * DAY;
        set_validity(&mut params, start, start + 10 * 365 * DAY);
        let cert = params.self_signed(&key).expect("self-signing the test CA");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    })
}

/// The PEM of the test CA every certificate but the self-signed ones chains to: what a client
/// trusts (`SSL_CERT_FILE`, the suite's CA) to stand for the system's roots.
pub fn test_ca_pem() -> &'static str {
    &ca().pem
}

/// The certificate for `spec`, generated on first use.
pub fn generate(spec: &CertSpec) -> Arc<Generated> {
    let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = cache.iter().find(|g| &g.spec == spec) {
        return found.clone();
    }
    let common_name = spec.hosts.first().cloned().unwrap_or_default();
    let made = Arc::new(build(spec, &common_name));
    cache.push(made.clone());
    made
}

/// The certificate Traefik generates at start and serves when no certificate of its store
/// names what the client asked for: self-signed, for a random `*.traefik.default` name.
pub fn traefik_default() -> Arc<Generated> {
    static DEFAULT: OnceLock<Arc<Generated>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            let spec = CertSpec::new(&["5c3e9a1f.7b2d4e6a.traefik.default"], 365 * DAY, true);
            let made = Arc::new(build(&spec, TRAEFIK_DEFAULT_CN));
            cache()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(made.clone());
            made
        })
        .clone()
}

/// The bed certificate whose PEM this is (as a Secret's `tls.crt` holds it), if the bed made it.
pub fn find_by_pem(pem: &str) -> Option<Arc<Generated>> {
    cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|g| g.cert_pem.trim() == pem.trim())
        .cloned()
}

fn cache() -> &'static Mutex<Vec<Arc<Generated>>> {
    static CACHE: OnceLock<Mutex<Vec<Arc<Generated>>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// Sets a certificate's validity from Unix seconds (rcgen's dates are the `time` crate's,
/// reached through rcgen's own helper rather than a dependency of ours).
fn set_validity(params: &mut CertificateParams, not_before: i64, not_after: i64) {
    let at = |unix: i64| {
        let since_epoch = u64::try_from(unix).expect("bed certificates start after 1970");
        rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(since_epoch)
    };
    params.not_before = at(not_before);
    params.not_after = at(not_after);
}

fn build(spec: &CertSpec, common_name: &str) -> Generated {
    let key = KeyPair::generate().expect("generating a server key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = spec
        .hosts
        .iter()
        .map(|h| SanType::DnsName(h.as_str().try_into().expect("a valid DNS name")))
        .collect();
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = now();
    let not_after = now + spec.expires_in;
    let not_before = (not_after - LIFETIME_DAYS * DAY).min(now);
    set_validity(&mut params, not_before, not_after);
    let cert = if spec.self_signed {
        params.self_signed(&key)
    } else {
        params.signed_by(&key, &ca().issuer)
    }
    .expect("signing a server certificate");
    Generated {
        spec: spec.clone(),
        common_name: common_name.to_string(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
        not_before,
        not_after,
    }
}
