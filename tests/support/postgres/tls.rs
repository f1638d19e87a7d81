//! The bed's TLS material: a CA generated per process, the server certificate it signs (for
//! the names CloudNativePG's certificate carries, and 127.0.0.1), and an unrelated CA for "TLS
//! required, but the CA is wrong".

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::server::give_to_server_user;

/// The DNS names on the server certificate: CNPG's certificate names the rw Service. The
/// certificate also carries the IP address 127.0.0.1.
pub const SERVER_DNS_NAMES: [&str; 4] = [
    "cloudnative-pg-cluster-rw",
    "cloudnative-pg-cluster-rw.litellm.svc",
    "cloudnative-pg-cluster-rw.litellm.svc.cluster.local",
    "localhost",
];

/// A CA, a server certificate for the rw Service names signed by it, and an unrelated CA.
/// Returns (CA PEM, wrong CA PEM).
pub(super) fn write_tls_files(root: &Path, uid: Option<(u32, u32)>) -> (String, String) {
    let ca_key = KeyPair::generate().expect("generating the CA key");
    let ca = ca_params("smokecheck test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("self-signing the CA");
    let issuer = Issuer::new(ca, ca_key);

    let mut params =
        CertificateParams::new(SERVER_DNS_NAMES.map(String::from).to_vec()).expect("server SANs");
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params
        .distinguished_name
        .push(DnType::CommonName, SERVER_DNS_NAMES[0]);
    let key = KeyPair::generate().expect("generating the server key");
    let cert = params
        .signed_by(&key, &issuer)
        .expect("signing the server certificate");

    let wrong_key = KeyPair::generate().expect("generating the wrong CA key");
    let wrong = ca_params("smokecheck unrelated CA")
        .self_signed(&wrong_key)
        .expect("self-signing the wrong CA");

    for (name, pem, mode) in [
        ("server.crt", cert.pem(), 0o644),
        ("server.key", key.serialize_pem(), 0o600),
        ("ca.crt", ca_cert.pem(), 0o644),
    ] {
        let path = root.join(name);
        std::fs::write(&path, pem).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        give_to_server_user(&path, uid, mode);
    }
    (ca_cert.pem(), wrong.pem())
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}
