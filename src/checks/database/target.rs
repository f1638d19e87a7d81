//! Where and as whom a database session goes: the one description of the connection that the
//! session uses to connect and every message about it uses to name what it reached.

use std::net::IpAddr;

use crate::context::Context;
use crate::endpoints::Via;
use crate::suite::{CaSource, Database, SslMode};

/// Where and as whom a session goes, for the session itself and for every message about it.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub cluster: String,
    pub service: String,
    pub secret: String,
    /// Where `verify-ca`/`verify-full` read the CA.
    pub ca: CaSource,
    pub database: String,
    pub sslmode: SslMode,
    pub host: String,
    pub port: u16,
    /// The name the certificate must carry in `verify-full`: the Service's.
    pub tls_name: String,
    pub via: Via,
}

impl Target {
    pub fn of(cx: &Context, db: &Database) -> Option<Target> {
        let ep = cx.endpoints.database.as_ref()?;
        Some(Target {
            namespace: cx.suite.namespace.clone(),
            cluster: db.cluster.clone(),
            service: db.service.name.clone(),
            secret: db.secret.name.clone(),
            ca: db.ca_source(),
            database: db.name.clone(),
            sslmode: db.sslmode,
            host: bare_host(&ep.host).to_string(),
            port: ep.port,
            tls_name: ep.tls_name.clone(),
            via: ep.via,
        })
    }

    pub fn address(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// "127.0.0.1:5432 (--endpoint)".
    pub fn reached(&self) -> String {
        format!("{} ({})", self.address(), self.via)
    }

    /// "secret litellm/cloudnative-pg-cluster-ca": where the CA comes from.
    pub fn ca_origin(&self) -> String {
        format!("{} {}/{}", self.ca.kind(), self.namespace, self.ca.name())
    }

    /// Whether the login must be SCRAM bound to the TLS session: whenever TLS is required.
    pub fn binding_required(&self) -> bool {
        !matches!(self.sslmode, SslMode::Disable | SslMode::Prefer)
    }

    pub fn port_forward(&self) -> String {
        format!(
            "kubectl port-forward -n {} svc/{} 5432:5432",
            self.namespace, self.service
        )
    }
}

/// A host as a URL writes it, without the brackets of an IPv6 literal (`[::1]` is `::1`).
fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A session's target as the default suite describes it, reached `via`.
    pub fn target(via: Via) -> Target {
        Target {
            namespace: "litellm".into(),
            cluster: "cloudnative-pg-cluster".into(),
            service: "cloudnative-pg-cluster-rw".into(),
            secret: "cloudnative-pg-cluster-litellm".into(),
            ca: CaSource::Secret {
                name: "cloudnative-pg-cluster-ca".into(),
                key: "ca.crt".into(),
            },
            database: "litellm".into(),
            sslmode: SslMode::VerifyFull,
            host: match via {
                Via::Suite => "cloudnative-pg-cluster-rw.litellm.svc".into(),
                Via::Flag | Via::PortForward => "127.0.0.1".into(),
            },
            port: 5432,
            tls_name: "cloudnative-pg-cluster-rw.litellm.svc".into(),
            via,
        }
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let mut t = target(Via::Flag);
        t.host = "::1".into();
        assert_eq!(t.address(), "[::1]:5432");
    }

    #[test]
    fn an_ipv6_endpoint_host_loses_its_url_brackets() {
        // `--endpoint database=postgresql://[::1]:5432`: http::Uri keeps the brackets, which
        // neither parse as an address nor resolve.
        assert_eq!(bare_host("[::1]"), "::1");
        assert_eq!(bare_host("[fd00::5]"), "fd00::5");
        assert_eq!(bare_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(bare_host("db.litellm.svc"), "db.litellm.svc");
        let mut t = target(Via::Flag);
        t.host = bare_host("[::1]").into();
        assert!(t.host.parse::<IpAddr>().is_ok());
        assert_eq!(t.reached(), "[::1]:5432 (--endpoint)");
    }
}
