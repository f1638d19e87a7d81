//! One read-only session with LiteLLM's database, opened the way LiteLLM would reach it, and
//! every way that can fail, classified once for all database checks.
//!
//! Credentials come only from the Secret the suite names; the password goes to the driver and
//! the run's redactor, nowhere else (no connection string is ever formatted). Name resolution,
//! TCP and the login are done in separate steps so that "does not resolve", "refused",
//! "no answer", a TLS verification failure and each SQLSTATE of a refused login get their own
//! cause and runbook hint. The session reads the server's own `default_transaction_read_only`
//! first, then makes itself read-only: the harness never writes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use tokio::net::TcpStream;
use tokio_postgres::Client;
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::check::{Cause, Ctx, Failure, Metrics, Outcome};
use crate::cluster::error_chain;
use crate::connect::Via;
use crate::env::{Env, secret_value};
use crate::secret::SecretValue;
use crate::suite::{Database, SslMode};

use super::tls::{self, Protection, Recording, TlsProblem};

/// How long TCP connect, TLS and login may take together. The runner's per-check timeout still
/// bounds the whole probe; this one names the step that hung when it is the shorter.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom a session goes, for the session itself and for every message about it.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub cluster: String,
    pub service: String,
    pub secret: String,
    pub ca_secret: String,
    pub ca_key: String,
    pub database: String,
    pub sslmode: SslMode,
    pub host: String,
    pub port: u16,
    /// The name the certificate must carry in `verify-full`: the Service's.
    pub tls_name: String,
    pub via: Via,
}

impl Target {
    pub fn of(env: &Env, db: &Database) -> Option<Target> {
        let ep = env.endpoints.database.as_ref()?;
        Some(Target {
            namespace: env.suite.namespace.clone(),
            cluster: db.cluster.clone(),
            service: db.service.name.clone(),
            secret: db.secret.name.clone(),
            ca_secret: db.ca_secret_name(),
            ca_key: db.ca_secret.key.clone(),
            database: db.name.clone(),
            sslmode: db.sslmode,
            host: ep.host.clone(),
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

    fn port_forward(&self) -> String {
        format!(
            "kubectl port-forward -n {} svc/{} 5432:5432",
            self.namespace, self.service
        )
    }
}

/// What a session learnt while opening, before it made itself read-only.
#[derive(Debug, Clone)]
pub struct Facts {
    pub user: String,
    pub protection: Protection,
    pub server_version: String,
    pub server_version_num: u64,
    pub in_recovery: bool,
    /// The server's own `default_transaction_read_only` for this database and role.
    pub read_only_default: bool,
    /// Where that setting comes from (`pg_settings.source`: default, database, user, ...).
    pub read_only_source: String,
    pub connect_time: Duration,
}

impl Facts {
    /// "TLS encrypted and verified (verify-full: ...)", worded for summaries.
    pub fn tls(&self, t: &Target) -> String {
        let mode = t.sslmode.as_str();
        match self.protection {
            Protection::Plain if t.sslmode == SslMode::Prefer => {
                format!("not encrypted (sslmode {mode}: the server refused TLS)")
            }
            Protection::Plain => format!("not encrypted (sslmode {mode})"),
            Protection::Encrypted => format!("TLS encrypted, not verified (sslmode {mode})"),
            Protection::VerifiedChain => format!(
                "TLS encrypted, certificate chain verified against secret {}/{} (sslmode {mode}: name not checked)",
                t.namespace, t.ca_secret
            ),
            Protection::VerifiedName => format!(
                "TLS encrypted and verified (sslmode {mode}: certificate names {}, CA from secret {}/{})",
                t.tls_name, t.namespace, t.ca_secret
            ),
        }
    }

    /// `encrypted` and `verified` (0 or 1), on every database check's result.
    pub fn protection_metrics(&self, m: &mut Metrics) {
        m.count("encrypted", self.protection.encrypted().into())
            .count("verified", self.protection.verified().into());
    }
}

pub struct Session {
    pub client: Client,
    pub facts: Facts,
}

/// Opens a read-only session to the suite's database, or the classified reason it cannot.
pub async fn open(env: &Env, t: &Target, ctx: &Ctx) -> Result<Session, Failure> {
    let (user, password) = credentials(env, t, ctx).await?;
    let ca = if t.sslmode.verifies() {
        read_ca(env, t, ctx).await?
    } else {
        Vec::new()
    };
    let tls_config = tls::client_config(t.sslmode, &ca).map_err(|why| {
        Outcome::fail(
            Cause::DbCaInvalid,
            format!(
                "the CA in secret {}/{} key {} cannot verify anything: {why}",
                t.namespace, t.ca_secret, t.ca_key
            ),
        )
    })?;
    if !tls::valid_server_name(&t.tls_name) {
        return Err(Outcome::fail(
            Cause::DbTls,
            format!("{:?} is not a name TLS can verify", t.tls_name),
        ));
    }

    let started = Instant::now();
    let addr = resolve(t, ctx).await.map_err(|p| p.failure(t, &user))?;

    let mut config = tokio_postgres::Config::new();
    config
        .user(&user)
        .password(password.expose().unwrap_or_default())
        .dbname(&t.database)
        .application_name("smokecheck")
        .ssl_mode(match t.sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
    let mut make = MakeRustlsConnect::new(tls_config);
    let connector =
        <MakeRustlsConnect as MakeTlsConnect<TcpStream>>::make_tls_connect(&mut make, &t.tls_name)
            .map_err(|e| Outcome::fail(Cause::DbTls, format!("TLS setup: {e}")))?;
    let used = Arc::new(AtomicBool::new(false));
    let tls = Recording {
        inner: connector,
        used: Arc::clone(&used),
    };

    let login = async {
        ctx.observe(format!("connecting to {} (TCP)", t.reached()));
        let stream = TcpStream::connect(addr).await.map_err(Problem::from_io)?;
        let _ = stream.set_nodelay(true);
        ctx.observe(format!(
            "TLS (sslmode {}) and login as {user} to database {} at {}",
            t.sslmode.as_str(),
            t.database,
            t.reached()
        ));
        config
            .connect_raw(stream, tls)
            .await
            .map_err(|e| Problem::from_postgres(&e))
    };
    let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, login).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(problem)) => return Err(problem.failure(t, &user)),
        Err(_) => {
            let step = if ctx
                .last_observed()
                .is_some_and(|s| s.starts_with("connecting"))
            {
                "TCP connect"
            } else {
                "TLS handshake and login"
            };
            return Err(Problem::Timeout(step).failure(t, &user));
        }
    };
    // The connection drives the socket; it ends when the client is dropped.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let connect_time = started.elapsed();
    let protection = Protection::of(t.sslmode, used.load(Ordering::SeqCst));

    ctx.observe(format!("reading server settings at {}", t.reached()));
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), \
                    current_setting('server_version_num')::int8, \
                    pg_is_in_recovery(), s.setting, s.source \
             FROM pg_settings s WHERE s.name = 'default_transaction_read_only'",
            &[],
        )
        .await
        .map_err(|e| query_failure(env, t, "reading the server's settings", &e))?;
    let facts = Facts {
        user,
        protection,
        server_version: row.try_get(0).unwrap_or_default(),
        server_version_num: row.try_get::<_, i64>(1).unwrap_or_default().max(0) as u64,
        in_recovery: row.try_get(2).unwrap_or_default(),
        read_only_default: row.try_get::<_, String>(3).is_ok_and(|v| v == "on"),
        read_only_source: row.try_get(4).unwrap_or_default(),
        connect_time,
    };
    // From here on the session cannot write, whatever a later query says.
    client
        .batch_execute("SET default_transaction_read_only = on")
        .await
        .map_err(|e| query_failure(env, t, "making the session read-only", &e))?;
    Ok(Session { client, facts })
}

/// The user name and password from the suite's Secret; the password is registered with the
/// redactor before anything else happens with it.
async fn credentials(env: &Env, t: &Target, ctx: &Ctx) -> Result<(String, SecretValue), Failure> {
    let Some(db) = env.suite.database.as_ref() else {
        return Err(Outcome::fail(Cause::Setup, "the suite has no database"));
    };
    ctx.observe(format!("getting secret {}/{}", t.namespace, t.secret));
    let secret = env
        .cluster
        .get::<Secret>(&t.namespace, &t.secret)
        .await?
        .ok_or_else(|| {
            Outcome::fail(
                Cause::NotFound,
                format!(
                    "secret {}/{} (the database credentials) not found",
                    t.namespace, t.secret
                ),
            )
            .hint(format!(
                "see kubernetes::secrets::{}: CloudNativePG creates it for the application user (spec.bootstrap.initdb.secret)",
                t.secret
            ))
        })?;
    let key = |key: &str| -> Result<SecretValue, Failure> {
        match secret_value(&secret, key) {
            None => Err(Outcome::fail(
                Cause::MissingKey,
                format!("secret {}/{} has no key {key}", t.namespace, t.secret),
            )
            .hint(format!("see kubernetes::secrets::{}", t.secret))),
            Some(v) if v.is_empty() => Err(Outcome::fail(
                Cause::EmptyKey,
                format!("secret {}/{}: key {key} is empty", t.namespace, t.secret),
            )
            .hint(format!("see kubernetes::secrets::{}", t.secret))),
            Some(v) => Ok(v),
        }
    };
    let password = key(&db.secret.password)?;
    env.redactor.register(&password);
    let user = key(&db.secret.username)?;
    let user = user.expose().map(|u| u.trim().to_string()).ok_or_else(|| {
        Outcome::fail(
            Cause::EmptyKey,
            format!(
                "secret {}/{}: key {} is not UTF-8 text",
                t.namespace, t.secret, db.secret.username
            ),
        )
    })?;
    if password.expose().is_none() {
        return Err(Outcome::fail(
            Cause::EmptyKey,
            format!(
                "secret {}/{}: key {} is not UTF-8 text",
                t.namespace, t.secret, db.secret.password
            ),
        ));
    }
    Ok((user, password))
}

/// The CA certificates for `verify-ca`/`verify-full`, from CloudNativePG's CA Secret.
async fn read_ca(
    env: &Env,
    t: &Target,
    ctx: &Ctx,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Failure> {
    ctx.observe(format!("getting CA secret {}/{}", t.namespace, t.ca_secret));
    let mode = t.sslmode.as_str();
    let secret = env
        .cluster
        .get::<Secret>(&t.namespace, &t.ca_secret)
        .await?
        .ok_or_else(|| {
            Outcome::fail(
                Cause::NotFound,
                format!(
                    "CA secret {}/{} not found (sslmode {mode} verifies the server with it)",
                    t.namespace, t.ca_secret
                ),
            )
            .hint(format!(
                "CloudNativePG keeps its CA in <cluster>-ca ({}-ca); with a CA of your own set database.ca_secret, or use sslmode: require to encrypt without verifying",
                t.cluster
            ))
        })?;
    let pem = secret_value(&secret, &t.ca_key).ok_or_else(|| {
        Outcome::fail(
            Cause::MissingKey,
            format!(
                "CA secret {}/{} has no key {}",
                t.namespace, t.ca_secret, t.ca_key
            ),
        )
        .hint("set database.ca_secret.key to the key holding the CA certificate (PEM)")
    })?;
    tls::parse_ca(pem.expose().unwrap_or_default().as_bytes()).map_err(|why| {
        Outcome::fail(
            Cause::DbCaInvalid,
            format!(
                "CA secret {}/{} key {} {why}",
                t.namespace, t.ca_secret, t.ca_key
            ),
        )
    })
}

async fn resolve(t: &Target, ctx: &Ctx) -> Result<SocketAddr, Problem> {
    if let Ok(ip) = t.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, t.port));
    }
    ctx.observe(format!("resolving {}", t.host));
    let mut addrs = tokio::net::lookup_host((t.host.as_str(), t.port))
        .await
        .map_err(|e| Problem::Dns(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| Problem::Dns("no address".into()))
}

/// A query that failed on an open session.
pub fn query_failure(env: &Env, t: &Target, what: &str, e: &tokio_postgres::Error) -> Failure {
    let detail = match e.as_db_error() {
        Some(db) => format!("SQLSTATE {}: {}", db.code().code(), db.message()),
        None => error_chain(e),
    };
    Outcome::fail(
        Cause::DbError,
        format!(
            "{what} failed at {}: {}",
            t.reached(),
            env.redactor.redact(&detail)
        ),
    )
}

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
    Other(String),
}

impl Problem {
    fn from_io(e: std::io::Error) -> Problem {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::ConnectionRefused => Problem::Refused,
            ErrorKind::TimedOut => Problem::Timeout("TCP connect"),
            _ => Problem::Unreachable(e.to_string()),
        }
    }

    /// From a refused login: the SQLSTATE when the server sent one, else a TLS problem in the
    /// error's sources, else its text.
    fn from_postgres(e: &tokio_postgres::Error) -> Problem {
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
            "see kubernetes::services::{} and kubernetes::cnpg::{}",
            t.service, t.cluster
        );
        match self {
            Problem::Dns(why) => {
                let f = Outcome::fail(
                    Cause::DbDns,
                    format!("{} does not resolve here ({})", t.host, t.via),
                )
                .details(why.clone());
                match t.via {
                    Via::Suite => f.hint(format!(
                        "{} does not resolve here: outside the cluster let smokecheck port-forward (--connect auto, the default, or port-forward), or pass --endpoint database=postgresql://127.0.0.1:5432 with a port-forward ({}); inside it, does the Service exist ({status_hint})?",
                        t.host,
                        t.port_forward()
                    )),
                    Via::Flag | Via::PortForward => f.hint(format!(
                        "the host of --endpoint database=... does not resolve: use an address that does, e.g. postgresql://127.0.0.1:5432 with {}",
                        t.port_forward()
                    )),
                }
            }
            Problem::Refused => {
                let f = Outcome::fail(Cause::DbRefused, format!("connection refused at {at}"));
                match t.via {
                    Via::Flag => f.hint(format!(
                        "nothing listens at {}: is the port-forward running ({})?",
                        t.address(),
                        t.port_forward()
                    )),
                    Via::Suite | Via::PortForward => f.hint(format!(
                        "no PostgreSQL accepts connections behind the Service {ns}/{}: {status_hint}",
                        t.service
                    )),
                }
            }
            Problem::Unreachable(why) => {
                Outcome::fail(Cause::DbUnreachable, format!("cannot reach {at}"))
                    .details(why.clone())
                    .hint(format!(
                        "no route from here to the database: a NetworkPolicy, or the wrong address; {status_hint}"
                    ))
            }
            Problem::Timeout(step) => Outcome::fail(
                Cause::DbConnectTimeout,
                format!(
                    "no answer from {at} within {} ({step})",
                    humantime::format_duration(CONNECT_TIMEOUT)
                ),
            )
            .hint(format!(
                "packets are dropped on the way (a NetworkPolicy in {ns} not admitting this pod, a firewall) or the instance is overloaded; {status_hint}"
            )),
            Problem::Tls(TlsProblem::UntrustedChain(why)) => Outcome::fail(
                Cause::DbTlsVerify,
                format!(
                    "TLS verification failed (sslmode {mode}): the certificate at {at} does not chain to the CA in secret {ns}/{}",
                    t.ca_secret
                ),
            )
            .details(why.clone())
            .hint(format!(
                "expected a certificate for {} signed by the CA in {ns}/{} key {}: that CA did not sign it. Is the secret another cluster's CA, or stale after a CA rotation (database.ca_secret)? Is {} really the rw Service? sslmode: require encrypts without verifying",
                t.tls_name,
                t.ca_secret,
                t.ca_key,
                t.address()
            )),
            Problem::Tls(TlsProblem::WrongName(why)) => Outcome::fail(
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
            Problem::Tls(TlsProblem::BadCertificate(why)) => Outcome::fail(
                Cause::DbTlsVerify,
                format!("TLS verification failed (sslmode {mode}): the certificate at {at} is not valid"),
            )
            .details(why.clone())
            .hint(format!(
                "CloudNativePG renews its certificates itself: an expired one means the operator is not running (kubectl get pods -A -l app.kubernetes.io/name=cloudnative-pg); see kubernetes::cnpg::{}",
                t.cluster
            )),
            Problem::Tls(TlsProblem::Handshake(why)) => Outcome::fail(
                Cause::DbTls,
                format!("TLS handshake with {at} failed (sslmode {mode})"),
            )
            .details(why.clone())
            .hint(format!(
                "is {} a PostgreSQL server? A proxy in between that does not speak PostgreSQL's TLS (SSLRequest) breaks it",
                t.address()
            )),
            Problem::ServerRefusedTls => Outcome::fail(
                Cause::DbTls,
                format!("the server at {at} does not accept TLS (sslmode {mode} requires it)"),
            )
            .hint(format!(
                "CloudNativePG always enables TLS, so {} is probably not its rw Service (a port-forward to something else?); sslmode: prefer also accepts a plain session",
                t.address()
            )),
            Problem::Auth(message) => Outcome::fail(
                Cause::DbAuth,
                format!("password authentication failed for user {user} at {at} (28P01)"),
            )
            .details(message.clone())
            .hint(format!(
                "the secret {} and the database role disagree: the password in {ns}/{} key password is not role {user}'s. CloudNativePG sets the role's password from that Secret: after re-sealing it, check the operator reconciled it (kubectl cnpg status -n {ns} {}); LiteLLM reads the same Secret, so it cannot log in either",
                t.secret, t.secret, t.cluster
            )),
            Problem::AccessRejected(message) => Outcome::fail(
                Cause::DbAccessRejected,
                format!("the server at {at} refused the login of {user} (28000)"),
            )
            .details(message.clone())
            .hint(format!(
                "pg_hba.conf has no rule for this login (sslmode {mode}): CloudNativePG admits application users over TLS (hostssl); use sslmode prefer or stricter, or add a rule in the Cluster's spec.postgresql.pg_hba"
            )),
            Problem::NoDatabase(message) => Outcome::fail(
                Cause::DbNotFound,
                format!("database {} does not exist at {at} (3D000)", t.database),
            )
            .details(message.clone())
            .hint(format!(
                "the suite's database.name ({}) is not the database CloudNativePG bootstrapped (spec.bootstrap.initdb.database of {ns}/{}); LiteLLM's DATABASE_URL must name the same one",
                t.database, t.cluster
            )),
            Problem::TooManyConnections(message) => Outcome::fail(
                Cause::DbTooManyConnections,
                format!("too many connections: the server at {at} refused {user} (53300)"),
            )
            .details(message.clone())
            .hint(format!(
                "max_connections or role {user}'s CONNECTION LIMIT is reached: LiteLLM's pool (database_connection_pool_limit × replicas) plus other clients exceed it. See SELECT usename, count(*) FROM pg_stat_activity GROUP BY 1, and raise spec.postgresql.parameters.max_connections of {ns}/{} or shrink the pool",
                t.cluster
            )),
            Problem::StartingUp(message) => Outcome::fail(
                Cause::DbStartingUp,
                format!("the server at {at} is starting up or shutting down (57P03)"),
            )
            .details(message.clone())
            .hint(format!(
                "a restart or failover is in progress: see kubernetes::cnpg::{}, and rerun with --wait",
                t.cluster
            )),
            Problem::Server(code, message) => Outcome::fail(
                Cause::DbError,
                format!("the server at {at} refused the login of {user} (SQLSTATE {code})"),
            )
            .details(message.clone()),
            Problem::Other(text) => Outcome::fail(
                Cause::DbError,
                format!("cannot open a session at {at} (sslmode {mode})"),
            )
            .details(text.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(via: Via) -> Target {
        Target {
            namespace: "litellm".into(),
            cluster: "cloudnative-pg-cluster".into(),
            service: "cloudnative-pg-cluster-rw".into(),
            secret: "cloudnative-pg-cluster-litellm".into(),
            ca_secret: "cloudnative-pg-cluster-ca".into(),
            ca_key: "ca.crt".into(),
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
    fn ipv6_addresses_are_bracketed() {
        let mut t = target(Via::Flag);
        t.host = "::1".into();
        assert_eq!(t.address(), "[::1]:5432");
    }
}
