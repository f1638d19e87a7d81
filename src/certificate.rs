//! What the ingress checks need to know of an X.509 certificate, whoever holds it (a TLS
//! Secret's `tls.crt`, the certificate a route presents): the names it covers, when it
//! expires, whether it signed itself. Parsed with x509-parser; nothing here verifies a chain
//! (rustls does that for the request through the route).

use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The most bytes of PEM read from a Secret's `tls.crt` (a chain of a few certificates is a
/// few KiB; the API server allows a Secret 1 MiB).
pub const MAX_PEM: usize = 64 * 1024;

/// The facts of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// DNS names of the subject alternative names, else the subject's common name.
    pub names: Vec<String>,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
    /// Issuer equals subject: nobody but itself vouches for it.
    pub self_signed: bool,
}

impl CertFacts {
    /// Whether the certificate names `host` (a `*.` name covers one label, as RFC 6125 says).
    pub fn covers(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.names.iter().any(|n| {
            let n = n.to_ascii_lowercase();
            match n.strip_prefix("*.") {
                Some(suffix) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => n == host,
            }
        })
    }

    /// Whole days until it expires from `now` (Unix seconds); negative once expired.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

/// Reads the first certificate (the leaf) of a PEM chain, or says in a few words why not.
pub fn from_pem(pem: &[u8]) -> Result<CertFacts, String> {
    if pem.len() > MAX_PEM {
        return Err(format!("over {} KiB of PEM", MAX_PEM / 1024));
    }
    let first = Pem::iter_from_buffer(pem)
        .next()
        .ok_or_else(|| "no PEM block".to_string())?
        .map_err(|e| format!("not PEM ({e})"))?;
    if first.label != "CERTIFICATE" {
        return Err(format!(
            "its first PEM block is {:?}, not a CERTIFICATE",
            first.label
        ));
    }
    from_der(&first.contents)
}

/// Reads a DER certificate (as a TLS handshake presents it).
pub fn from_der(der: &[u8]) -> Result<CertFacts, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate ({e})"))?;
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_string)),
        );
    }
    Ok(CertFacts {
        names,
        not_after: cert.validity().not_after.timestamp(),
        self_signed: cert.issuer() == cert.subject(),
    })
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(names: &[&str]) -> CertFacts {
        CertFacts {
            names: names.iter().map(|n| n.to_string()).collect(),
            not_after: 0,
            self_signed: false,
        }
    }

    #[test]
    fn a_wildcard_covers_one_label_only() {
        let c = facts(&["*.example.test"]);
        assert!(c.covers("litellm.example.test"));
        assert!(c.covers("LiteLLM.Example.Test"));
        assert!(!c.covers("a.b.example.test"));
        assert!(!c.covers("example.test"));
        assert!(facts(&["litellm.example.test"]).covers("litellm.example.test"));
        assert!(!facts(&["llm.example.test"]).covers("litellm.example.test"));
    }

    #[test]
    fn days_left_counts_whole_days_and_goes_negative() {
        let c = CertFacts {
            not_after: 10 * 86_400 + 5,
            ..facts(&[])
        };
        assert_eq!(c.days_left(0), 10);
        assert_eq!(c.days_left(11 * 86_400), -1);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(from_pem(b"hello").is_err());
        assert!(
            from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err()
        );
        assert!(from_pem(&vec![b'a'; MAX_PEM + 1]).is_err());
        assert!(from_der(b"\x30\x03\x02\x01\x01").is_err());
    }
}
