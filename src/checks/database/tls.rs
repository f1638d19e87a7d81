//! TLS to PostgreSQL with libpq's `sslmode` meanings, on rustls with the ring provider only.
//!
//! `prefer` and `require` encrypt without verifying: rustls verifies by default and would reject
//! CloudNativePG's self-signed chain, so those modes need an explicit verifier that accepts any
//! certificate (signatures over the handshake are still checked), and the output says
//! "encrypted, not verified". `verify-ca` checks the chain against the CA Secret only;
//! `verify-full` also checks that the certificate names the read-write Service, which is the name
//! handed to rustls even when the TCP connection goes to `127.0.0.1` (libpq's host/hostaddr
//! split).

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::suite::SslMode;

/// The one crypto provider of the build (DESIGN.md: ring only).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA certificates of a PEM bundle, or why there are none.
pub fn parse_ca(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates ({e})"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// The rustls client config for `mode`; `ca` is required for the verifying modes.
pub fn client_config(
    mode: SslMode,
    ca: &[CertificateDer<'static>],
) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(NoVerification {
            algorithms: provider.signature_verification_algorithms,
        }),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let mut roots = RootCertStore::empty();
            for cert in ca {
                roots
                    .add(cert.clone())
                    .map_err(|e| format!("the CA certificate is unusable ({e})"))?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("the CA certificate is unusable ({e})"))?;
            if mode == SslMode::VerifyCa {
                Arc::new(ChainOnly { inner: webpki })
            } else {
                webpki
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `require`/`prefer`: accepts any certificate. The handshake signatures are still verified, so
/// the session is encrypted to whoever holds the certificate's key, just not proven to be ours.
#[derive(Debug)]
struct NoVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the CA; the name on the certificate is not checked.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether a name is one rustls can verify (a DNS name or an IP address).
pub fn valid_server_name(name: &str) -> bool {
    ServerName::try_from(name).is_ok()
}

/// Checks a certificate's names the way `verify-full` does, for unit tests of the name rule.
#[cfg(test)]
fn names_match(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(cert) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &server_name).is_ok()
}

/// What a session's TLS amounted to, for every summary and metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// No TLS (`disable`, or `prefer` and the server refused TLS).
    Plain,
    /// TLS, certificate not verified (`prefer`, `require`).
    Encrypted,
    /// TLS, chain verified against the CA (`verify-ca`).
    VerifiedChain,
    /// TLS, chain and the Service name verified (`verify-full`).
    VerifiedName,
}

impl Protection {
    pub fn of(mode: SslMode, tls_used: bool) -> Protection {
        match (tls_used, mode) {
            (false, _) | (_, SslMode::Disable) => Protection::Plain,
            (true, SslMode::Prefer | SslMode::Require) => Protection::Encrypted,
            (true, SslMode::VerifyCa) => Protection::VerifiedChain,
            (true, SslMode::VerifyFull) => Protection::VerifiedName,
        }
    }

    pub fn encrypted(self) -> bool {
        self != Protection::Plain
    }

    pub fn verified(self) -> bool {
        matches!(self, Protection::VerifiedChain | Protection::VerifiedName)
    }
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protection::Plain => "not encrypted",
            Protection::Encrypted => "encrypted, not verified",
            Protection::VerifiedChain => "encrypted, CA verified (any name)",
            Protection::VerifiedName => "encrypted and verified",
        })
    }
}

/// A TLS problem found in an error's source chain, classified for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsProblem {
    /// The certificate does not chain to the CA (unknown issuer, bad signature).
    UntrustedChain(String),
    /// The certificate chains to the CA but does not name the Service.
    WrongName(String),
    /// Expired, not yet valid, revoked or otherwise rejected certificate.
    BadCertificate(String),
    /// Any other handshake failure (protocol, alert from the server).
    Handshake(String),
}

/// Classifies a rustls error.
pub fn classify(err: &rustls::Error) -> TlsProblem {
    let text = err.to_string();
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::UnknownRevocationStatus => TlsProblem::UntrustedChain(text),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsProblem::WrongName(text)
            }
            _ => TlsProblem::BadCertificate(text),
        },
        _ => TlsProblem::Handshake(text),
    }
}

/// The first rustls error in an error's source chain (tokio-rustls wraps it in an `io::Error`,
/// whose `source()` skips the wrapped error, so each `io::Error` is unwrapped too).
pub fn find_rustls<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = find_rustls(inner)
        {
            return Some(r);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate naming `names` (rcgen, the bed's generator).
    fn cert(names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn protection_follows_libpq_meanings() {
        assert_eq!(Protection::of(SslMode::Disable, false), Protection::Plain);
        assert_eq!(Protection::of(SslMode::Prefer, false), Protection::Plain);
        assert_eq!(Protection::of(SslMode::Prefer, true), Protection::Encrypted);
        assert_eq!(
            Protection::of(SslMode::Require, true),
            Protection::Encrypted
        );
        assert_eq!(
            Protection::of(SslMode::VerifyCa, true),
            Protection::VerifiedChain
        );
        assert_eq!(
            Protection::of(SslMode::VerifyFull, true),
            Protection::VerifiedName
        );
        assert_eq!(Protection::Encrypted.to_string(), "encrypted, not verified");
        assert!(!Protection::Encrypted.verified());
        assert!(Protection::VerifiedChain.verified() && Protection::VerifiedName.encrypted());
    }

    #[test]
    fn ca_pem_is_parsed_and_garbage_refused() {
        let der = cert(&["x.example"]);
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64_lines(der.as_ref())
        );
        assert_eq!(parse_ca(pem.as_bytes()).expect("parses").len(), 1);
        assert!(
            parse_ca(b"not a certificate")
                .unwrap_err()
                .contains("no PEM")
        );
        assert!(client_config(SslMode::VerifyFull, &[der]).is_ok());
        assert!(client_config(SslMode::Require, &[]).is_ok());
    }

    #[test]
    fn verify_full_checks_the_service_name() {
        let der = cert(&["cloudnative-pg-cluster-rw.litellm.svc"]);
        assert!(names_match(&der, "cloudnative-pg-cluster-rw.litellm.svc"));
        assert!(!names_match(&der, "other-rw.litellm.svc"));
        assert!(valid_server_name("cloudnative-pg-cluster-rw.litellm.svc"));
        assert!(!valid_server_name("bad name"));
    }

    #[test]
    fn rustls_errors_are_classified() {
        use rustls::Error::InvalidCertificate;
        assert!(matches!(
            classify(&InvalidCertificate(CertificateError::UnknownIssuer)),
            TlsProblem::UntrustedChain(_)
        ));
        assert!(matches!(
            classify(&InvalidCertificate(CertificateError::NotValidForName)),
            TlsProblem::WrongName(_)
        ));
        assert!(matches!(
            classify(&InvalidCertificate(CertificateError::Expired)),
            TlsProblem::BadCertificate(_)
        ));
        assert!(matches!(
            classify(&rustls::Error::HandshakeNotComplete),
            TlsProblem::Handshake(_)
        ));
    }

    #[test]
    fn rustls_error_is_found_inside_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(
            find_rustls(&io),
            Some(&rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        );
        let plain = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(find_rustls(&plain).is_none());
    }

    fn base64_lines(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}
