//! Why a database session could not be opened or a query on it failed, classified once for all
//! database checks: each refusal (name resolution, TCP, TLS verification, each SQLSTATE of a
//! refused login, a server that would not prove itself, one that broke PostgreSQL's protocol)
//! gets its own cause, summary and runbook hint.

use tokio_postgres::error::SqlState;

use crate::checks::kubernetes;
use crate::endpoints::Via;
use crate::outcome::{Cause, Failure};
use crate::text::{error_chain, size};

use super::CONNECT_TIMEOUT;
use super::target::Target;
use super::tls::{self, TlsProblem};
use super::wire::{AuthRequest, MAX_MESSAGE, MAX_SESSION, Violation, Watch};

/// Why a session could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Dns(String),
    Refused,
    Unreachable(String),
    /// The step that got no answer.
    Timeout(&'static str),
    Tls(TlsProblem),
    ServerRefusedTls,
    /// 28P01 and the server's message.
    Auth(String),
    /// 28000 (pg_hba.conf has no entry for this login).
    AccessRejected(String),
    /// 3D000.
    NoDatabase(String),
    /// 53300.
    TooManyConnections(String),
    /// 57P03.
    StartingUp(String),
    /// Any other SQLSTATE: (code, message).
    Server(String, String),
    /// The server asked for the password in cleartext or as an MD5 hash, or did not complete
    /// the login bound to the TLS session where that is required; what it asked, if seen.
    InsecureAuth(Option<AuthRequest>),
    /// The server broke PostgreSQL's protocol or a cap ([`Violation`]).
    Protocol(Violation),
    Other(String),
}

impl From<Violation> for Problem {
    fn from(v: Violation) -> Problem {
        match v {
            Violation::InsecureAuth(request) => Problem::InsecureAuth(Some(request)),
            other => Problem::Protocol(other),
        }
    }
}

impl Problem {
    pub fn from_io(e: std::io::Error) -> Problem {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::ConnectionRefused => Problem::Refused,
            ErrorKind::TimedOut => Problem::Timeout("TCP connect"),
            _ => Problem::Unreachable(e.to_string()),
        }
    }

    /// From a refused login: what the watch cut, the SQLSTATE when the server sent one, else a
    /// TLS problem in the error's sources, else its text.
    pub fn from_postgres(e: &tokio_postgres::Error, watch: &Watch) -> Problem {
        if let Some(v) = watch.violation().or_else(|| malformed(e)) {
            return Problem::from(v);
        }
        if let Some(db) = e.as_db_error() {
            return Problem::from_sqlstate(db.code(), db.message());
        }
        if let Some(r) = tls::find_rustls(e) {
            return Problem::Tls(tls::classify(r));
        }
        let text = error_chain(e);
        if text.contains("server does not support TLS") {
            return Problem::ServerRefusedTls;
        }
        // tokio-postgres' words for a login that could not be bound to the TLS session.
        if text.contains("did not use channel binding") {
            return Problem::InsecureAuth(watch.auth());
        }
        Problem::Other(text)
    }

    pub fn from_sqlstate(code: &SqlState, message: &str) -> Problem {
        let message = message.to_string();
        match code {
            c if *c == SqlState::INVALID_PASSWORD => Problem::Auth(message),
            c if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
                Problem::AccessRejected(message)
            }
            c if *c == SqlState::INVALID_CATALOG_NAME => Problem::NoDatabase(message),
            c if *c == SqlState::TOO_MANY_CONNECTIONS => Problem::TooManyConnections(message),
            c if *c == SqlState::CANNOT_CONNECT_NOW => Problem::StartingUp(message),
            c => Problem::Server(c.code().to_string(), message),
        }
    }

    /// The failure to report, with its summary and runbook hint.
    pub fn failure(&self, t: &Target, user: &str) -> Failure {
        let at = t.reached();
        let ns = &t.namespace;
        let mode = t.sslmode.as_str();
        let status_hint = format!(
            "see {} and {}",
            kubernetes::services_name(&t.service),
            kubernetes::cnpg_name(&t.cluster)
        );
        match self {
            Problem::Dns(why) => {
                let f = Failure::new(
                    Cause::DbDns,
                    format!("{} does not resolve here ({})", t.host, t.via),
                )
                .details(why.clone());
                match t.via {
                    Via::Suite => f.hint(format!(
                        "{} does not resolve here: outside the cluster let smokecheck port-forward (--connect auto, the default, or port-forward), or pass --endpoint database=postgresql://127.0.0.1:5432 with a port-forward ({}); inside it, does the Service exist ({status_hint})?",
                        t.host,
                        t.port_forward())),
                    Via::Flag | Via::PortForward => f.hint(format!(
                        "the host of --endpoint database=... does not resolve: use an address that does, e.g. postgresql://127.0.0.1:5432 with {}",
                        t.port_forward())),
                }
            }
            Problem::Refused => {
                let f = Failure::new(Cause::DbRefused, format!("connection refused at {at}"));
                match t.via {
                    Via::Flag => f.hint(format!(
                        "nothing listens at {}: is the port-forward running ({})?",
                        t.address(),
                        t.port_forward())),
                    Via::Suite | Via::PortForward => f.hint(format!(
                        "no PostgreSQL accepts connections behind the Service {ns}/{}: {status_hint}",
                        t.service
                    )),
                }
            }
            Problem::Unreachable(why) => {
                Failure::new(Cause::DbUnreachable, format!("cannot reach {at}"))
                    .details(why.clone())
                    .hint(format!(
                        "no route from here to the database: a NetworkPolicy, or the wrong address; {status_hint}"
                    ))
            }
            Problem::Timeout(step) => Failure::new(
                Cause::DbConnectTimeout,
                format!(
                    "no answer from {at} within {} ({step})",
                    humantime::format_duration(CONNECT_TIMEOUT)),
            )
            .hint(format!(
                "packets are dropped on the way (a NetworkPolicy in {ns} not admitting this pod, a firewall) or the instance is overloaded; {status_hint}"
            )),
            Problem::Tls(TlsProblem::UntrustedChain(why)) => Failure::new(
                Cause::DbTlsVerify,
                format!(
                    "TLS verification failed (sslmode {mode}): the certificate at {at} does not chain to the CA in {}",
                    t.ca_origin()),
            )
            .details(why.clone())
            .hint(format!(
                "expected a certificate for {} signed by the CA in {} key {}: that CA did not sign it. Is the {} another cluster's CA, or stale after a CA rotation ({})? Is {} really the rw Service? sslmode: require encrypts without verifying",
                t.tls_name,
                t.ca_origin(),
                t.ca.key(),
                t.ca.kind(),
                t.ca.field(),
                t.address())),
            Problem::Tls(TlsProblem::WrongName(why)) => Failure::new(
                Cause::DbTlsVerify,
                format!(
                    "TLS verification failed (sslmode {mode}): the certificate at {at} does not name {}",
                    t.tls_name
                ),
            )
            .details(why.clone())
            .hint(format!(
                "verify-full checks the rw Service's name, {}, also through a port-forward; CloudNativePG's certificates carry it. With a custom server certificate add that name to it, or use sslmode: verify-ca",
                t.tls_name
            )),
            Problem::Tls(TlsProblem::BadCertificate(why)) => Failure::new(
                Cause::DbTlsVerify,
                format!("TLS verification failed (sslmode {mode}): the certificate at {at} is not valid"),
            )
            .details(why.clone())
            .hint(format!(
                "CloudNativePG renews its certificates itself: an expired one means the operator is not running (kubectl get pods -A -l app.kubernetes.io/name=cloudnative-pg); see {}",
                kubernetes::cnpg_name(&t.cluster)
            )),
            Problem::Tls(TlsProblem::Handshake(why)) => Failure::new(
                Cause::DbTls,
                format!("TLS handshake with {at} failed (sslmode {mode})"),
            )
            .details(why.clone())
            .hint(format!(
                "is {} a PostgreSQL server? A proxy in between that does not speak PostgreSQL's TLS (SSLRequest) breaks it",
                t.address())),
            Problem::ServerRefusedTls => Failure::new(
                Cause::DbTls,
                format!("the server at {at} does not accept TLS (sslmode {mode} requires it): nothing was sent, not even the user name"),
            )
            .hint(format!(
                "CloudNativePG always enables TLS, so {} is probably not its rw Service (a port-forward to something else, or an impostor on the path?); sslmode: prefer would accept a plain session, where nothing proves who answers",
                t.address())),
            Problem::InsecureAuth(request) => insecure_auth(t, user, *request),
            Problem::Protocol(v) => protocol(t, v),
            Problem::Auth(message) => Failure::new(
                Cause::DbAuth,
                format!("password authentication failed for user {user} at {at} (28P01)"),
            )
            .details(message.clone())
            .hint(format!(
                "the secret {} and the database role disagree: the password in {ns}/{} key password is not role {user}'s. CloudNativePG sets the role's password from that Secret: after re-sealing it, check the operator reconciled it (kubectl cnpg status -n {ns} {}); LiteLLM reads the same Secret, so it cannot log in either",
                t.secret, t.secret, t.cluster
            )),
            Problem::AccessRejected(message) => Failure::new(
                Cause::DbAccessRejected,
                format!("the server at {at} refused the login of {user} (28000)"),
            )
            .details(message.clone())
            .hint(format!(
                "pg_hba.conf has no rule for this login (sslmode {mode}): CloudNativePG admits application users over TLS (hostssl); use sslmode prefer or stricter, or add a rule in the Cluster's spec.postgresql.pg_hba"
            )),
            Problem::NoDatabase(message) => Failure::new(
                Cause::DbNotFound,
                format!("database {} does not exist at {at} (3D000)", t.database),
            )
            .details(message.clone())
            .hint(format!(
                "the suite's database.name ({}) is not the database CloudNativePG bootstrapped (spec.bootstrap.initdb.database of {ns}/{}); LiteLLM's DATABASE_URL must name the same one",
                t.database, t.cluster
            )),
            Problem::TooManyConnections(message) => Failure::new(
                Cause::DbTooManyConnections,
                format!("too many connections: the server at {at} refused {user} (53300)"),
            )
            .details(message.clone())
            .hint(format!(
                "max_connections or role {user}'s CONNECTION LIMIT is reached: LiteLLM's pool (database_connection_pool_limit × replicas) plus other clients exceed it. See SELECT usename, count(*) FROM pg_stat_activity GROUP BY 1, and raise spec.postgresql.parameters.max_connections of {ns}/{} or shrink the pool",
                t.cluster
            )),
            Problem::StartingUp(message) => Failure::new(
                Cause::DbStartingUp,
                format!("the server at {at} is starting up or shutting down (57P03)"),
            )
            .details(message.clone())
            .hint(format!(
                "a restart or failover is in progress: see {}, and rerun with --wait",
                kubernetes::cnpg_name(&t.cluster)
            )),
            Problem::Server(code, message) => Failure::new(
                Cause::DbError,
                format!("the server at {at} refused the login of {user} (SQLSTATE {code})"),
            )
            .details(message.clone()),
            Problem::Other(text) => Failure::new(
                Cause::DbError,
                format!("cannot open a session at {at} (sslmode {mode})"),
            )
            .details(text.clone()),
        }
    }
}

/// The failure for a login refused because the server would not prove itself.
fn insecure_auth(t: &Target, user: &str, request: Option<AuthRequest>) -> Failure {
    let at = t.reached();
    let mode = t.sslmode.as_str();
    let ns = &t.namespace;
    let pg_hba = format!(
        "spec.postgresql.pg_hba of {ns}/{}, or the role's password stored as MD5: reset it with password_encryption = scram-sha-256",
        t.cluster
    );
    let (summary, hint) = match request {
        Some(AuthRequest::Cleartext) => (
            format!(
                "the server at {at} asked for {user}'s password in cleartext: refused, the password was not sent"
            ),
            format!(
                "CloudNativePG authenticates application users with SCRAM-SHA-256 and never asks for the password itself: something else answers at {} (an impostor, a proxy, the wrong --endpoint), or pg_hba.conf says `password` for this login ({pg_hba})",
                t.address()),
        ),
        Some(AuthRequest::Md5) => (
            format!(
                "the server at {at} asked for {user}'s password as an MD5 hash: refused, nothing was sent"
            ),
            format!(
                "CloudNativePG authenticates application users with SCRAM-SHA-256; an MD5 hash of the password can be replayed and cracked, so it is never sent. Something else answers at {} (an impostor, a proxy), or pg_hba.conf says `md5` for this login ({pg_hba})",
                t.address()),
        ),
        Some(AuthRequest::Sasl { plus: false }) => (
            format!(
                "the server at {at} offered SCRAM-SHA-256 without channel binding over TLS (sslmode {mode} requires it): refused, nothing was sent"
            ),
            format!(
                "PostgreSQL 11 and later offer SCRAM-SHA-256-PLUS on every TLS session, so something else ended the TLS session: a proxy or connection pooler (PgBouncer) in between, or an impostor relaying the login. Point the suite (or --endpoint) at the rw Service {ns}/{}; sslmode: prefer accepts a login without channel binding, at the cost of that proof",
                t.service
            ),
        ),
        Some(AuthRequest::Sasl { plus: true }) => (
            format!(
                "the server at {at} offered channel binding, but its certificate gives none to bind to (sslmode {mode} requires it): refused, nothing was sent"
            ),
            "tls-server-end-point binds the login to a hash of the server certificate chosen by its signature algorithm; Ed25519 and Ed448 certificates have none. Use an RSA or ECDSA server certificate (CloudNativePG's are ECDSA), or sslmode: prefer".to_string(),
        ),
        Some(AuthRequest::Trust) => (
            format!(
                "the server at {at} let the login in without a password (trust): it proved nothing, so smokecheck refused the session (sslmode {mode})"
            ),
            format!(
                "CloudNativePG never trusts application logins over TCP: an impostor answers at {}, or pg_hba.conf trusts this login (remove that rule from spec.postgresql.pg_hba of {ns}/{})",
                t.address(),
                t.cluster
            ),
        ),
        Some(AuthRequest::Other(code)) => (
            format!(
                "the server at {at} asked for authentication method {code}, not SCRAM with channel binding (sslmode {mode} requires it): refused"
            ),
            format!(
                "CloudNativePG authenticates application users with SCRAM-SHA-256: check pg_hba.conf ({pg_hba})"
            ),
        ),
        None => (
            format!(
                "the server at {at} did not complete a login bound to the TLS session (sslmode {mode} requires channel binding): refused"
            ),
            format!(
                "is {} CloudNativePG's rw Service? sslmode: prefer accepts a login without channel binding",
                t.address()),
        ),
    };
    Failure::new(Cause::InsecureAuth, summary).hint(hint)
}

/// The failure for a server that broke PostgreSQL's protocol or a cap.
fn protocol(t: &Target, v: &Violation) -> Failure {
    let at = t.reached();
    let addr = t.address();
    match v {
        Violation::NotPostgres { answered, when } => {
            let f = Failure::new(
                Cause::DbProtocol,
                format!(
                    "the server at {at} does not speak PostgreSQL: it answered \"{answered}\" to {when}"
                ),
            );
            if answered.starts_with('H') {
                f.hint(format!(
                    "an HTTP server answers at {addr} (its answers start with HTTP/): does --endpoint database=... or the port-forward point at LiteLLM (4000) or another HTTP Service instead of PostgreSQL's port 5432 of {}?",
                    t.service
                ))
            } else {
                f.hint(format!(
                    "is {addr} PostgreSQL? A port-forward or --endpoint to the wrong pod or port, or a proxy in between that does not pass PostgreSQL's protocol through"
                ))
            }
        }
        Violation::MessageTooLarge { tag, len } => Failure::new(
            Cause::DbProtocol,
            format!(
                "the server at {at} announced a {} message (type {tag}): smokecheck reads at most {} per message and stopped",
                size(u64::from(*len)),
                size(u64::from(MAX_MESSAGE))),
        )
        .hint(format!(
            "no answer of PostgreSQL to these checks comes near that size: {addr} is not PostgreSQL, or something in between corrupts the stream"
        )),
        Violation::Malformed { why } => Failure::new(
            Cause::DbProtocol,
            format!("the server at {at} broke PostgreSQL's protocol ({why})"),
        )
        .hint(format!(
            "is {addr} PostgreSQL? A port-forward or --endpoint to the wrong pod or port, or a proxy in between that does not pass PostgreSQL's protocol through"
        )),
        Violation::SessionTooLarge => Failure::new(
            Cause::DbProtocol,
            format!(
                "the server at {at} sent over {} in one session: smokecheck stopped reading",
                size(MAX_SESSION)),
        )
        .hint(format!(
            "these checks' sessions read a few KiB: {addr} sends without end, so it is not PostgreSQL answering them, or it is broken"
        )),
        Violation::InsecureAuth(request) => insecure_auth(t, "the user", Some(*request)),
    }
}

/// A server that broke the protocol in a way tokio-postgres itself noticed (a message it cannot
/// parse, or one it did not expect), in tokio-postgres' own words.
pub fn malformed(e: &tokio_postgres::Error) -> Option<Violation> {
    let text = e.to_string();
    (text.starts_with("error parsing response from server")
        || text.starts_with("unexpected message from server"))
    .then(|| Violation::Malformed {
        why: error_chain(e),
    })
}

#[cfg(test)]
mod tests {
    use super::super::target::tests::target;
    use super::*;
    use crate::suite::SslMode;

    #[test]
    fn sqlstates_of_a_refused_login_are_classified() {
        let cases = [
            (SqlState::INVALID_PASSWORD, Cause::DbAuth),
            (
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                Cause::DbAccessRejected,
            ),
            (SqlState::INVALID_CATALOG_NAME, Cause::DbNotFound),
            (SqlState::TOO_MANY_CONNECTIONS, Cause::DbTooManyConnections),
            (SqlState::CANNOT_CONNECT_NOW, Cause::DbStartingUp),
            (SqlState::ADMIN_SHUTDOWN, Cause::DbError),
        ];
        for (code, cause) in cases {
            let f = Problem::from_sqlstate(&code, "msg").failure(&target(Via::Flag), "app");
            assert_eq!(f.cause, cause, "{}", code.code());
        }
    }

    #[test]
    fn wrong_password_hint_names_the_secret_and_the_role() {
        let f = Problem::Auth("password authentication failed for user \"app\"".into())
            .failure(&target(Via::Flag), "app");
        assert_eq!(f.cause.code(), "db_auth");
        assert!(f.summary.contains("(28P01)"), "{}", f.summary);
        let hint = f.hint.unwrap_or_default();
        assert!(
            hint.starts_with(
                "the secret cloudnative-pg-cluster-litellm and the database role disagree"
            ),
            "{hint}"
        );
    }

    #[test]
    fn dns_failure_in_cluster_suggests_a_port_forward() {
        let f = Problem::Dns("failed to lookup address information".into())
            .failure(&target(Via::Suite), "app");
        assert_eq!(f.cause.code(), "db_dns");
        let hint = f.hint.unwrap_or_default();
        assert!(
            hint.starts_with(
                "cloudnative-pg-cluster-rw.litellm.svc does not resolve here: outside the cluster let smokecheck port-forward (--connect auto, the default, or port-forward), or pass --endpoint database=postgresql://127.0.0.1:5432 with a port-forward"
            ),
            "{hint}"
        );
    }

    #[test]
    fn refused_through_a_flag_asks_for_the_port_forward() {
        let f = Problem::from_io(std::io::ErrorKind::ConnectionRefused.into())
            .failure(&target(Via::Flag), "app");
        assert_eq!(f.cause.code(), "db_refused");
        assert_eq!(
            f.summary,
            "connection refused at 127.0.0.1:5432 (--endpoint)"
        );
        assert!(f.hint.unwrap_or_default().contains("port-forward running"));
        assert_eq!(
            Problem::from_io(std::io::ErrorKind::TimedOut.into()),
            Problem::Timeout("TCP connect")
        );
    }

    #[test]
    fn tls_verification_failures_name_the_expected_name_and_the_ca_secret() {
        let f = Problem::Tls(TlsProblem::UntrustedChain(
            "invalid peer certificate".into(),
        ))
        .failure(&target(Via::Flag), "app");
        assert_eq!(f.cause.code(), "db_tls_verify");
        assert!(
            f.summary
                .contains("secret litellm/cloudnative-pg-cluster-ca"),
            "{}",
            f.summary
        );
        assert!(
            f.hint
                .unwrap_or_default()
                .contains("cloudnative-pg-cluster-rw.litellm.svc")
        );
        let f = Problem::Tls(TlsProblem::WrongName("not valid for name".into()))
            .failure(&target(Via::Flag), "app");
        assert!(
            f.summary
                .ends_with("does not name cloudnative-pg-cluster-rw.litellm.svc"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn insecure_logins_are_refused_naming_what_the_server_asked() {
        let t = Target {
            sslmode: SslMode::Require,
            ..target(Via::Flag)
        };
        let cases = [
            (
                Some(AuthRequest::Cleartext),
                "password in cleartext: refused, the password was not sent",
            ),
            (
                Some(AuthRequest::Md5),
                "password as an MD5 hash: refused, nothing was sent",
            ),
            (
                Some(AuthRequest::Sasl { plus: false }),
                "offered SCRAM-SHA-256 without channel binding over TLS (sslmode require requires it)",
            ),
            (
                Some(AuthRequest::Sasl { plus: true }),
                "its certificate gives none to bind to",
            ),
            (Some(AuthRequest::Trust), "without a password (trust)"),
            (Some(AuthRequest::Other(7)), "authentication method 7"),
            (None, "did not complete a login bound to the TLS session"),
        ];
        for (request, words) in cases {
            let f = Problem::InsecureAuth(request).failure(&t, "app");
            assert_eq!(f.cause, Cause::InsecureAuth, "{request:?}");
            assert!(f.summary.contains(words), "{request:?}: {}", f.summary);
            assert!(f.hint.is_some(), "{request:?}");
        }
        assert_eq!(
            Problem::from(Violation::InsecureAuth(AuthRequest::Md5)),
            Problem::InsecureAuth(Some(AuthRequest::Md5))
        );
    }

    #[test]
    fn protocol_violations_are_db_protocol_with_a_hint_for_http() {
        let t = target(Via::Flag);
        let http = Problem::from(Violation::NotPostgres {
            answered: "H".into(),
            when: "the TLS request",
        })
        .failure(&t, "app");
        assert_eq!(http.cause, Cause::DbProtocol);
        assert_eq!(
            http.summary,
            "the server at 127.0.0.1:5432 (--endpoint) does not speak PostgreSQL: it answered \"H\" to the TLS request"
        );
        assert!(
            http.hint
                .unwrap_or_default()
                .starts_with("an HTTP server answers")
        );
        let big = Problem::from(Violation::MessageTooLarge {
            tag: "E".into(),
            len: 1 << 30,
        })
        .failure(&t, "app");
        assert!(
            big.summary
                .contains("announced a 1 GiB message (type E): smokecheck reads at most 1 MiB"),
            "{}",
            big.summary
        );
        let endless = Problem::from(Violation::SessionTooLarge).failure(&t, "app");
        assert!(endless.summary.contains("sent over 8 MiB in one session"));
    }
}
