//! One read-only session with LiteLLM's database, opened the way LiteLLM would reach it
//! ([`super::target`]); every way that can fail is classified in [`super::problem`].
//!
//! Credentials come only from the Secret the suite names; the password goes to the driver and
//! the run's redactor, nowhere else (no connection string is ever formatted). Name resolution,
//! TCP and the login are done in separate steps so that "does not resolve", "refused",
//! "no answer", a TLS verification failure and each SQLSTATE of a refused login get their own
//! cause and runbook hint. The session reads the server's own `default_transaction_read_only`
//! first, then makes itself read-only: the harness never writes.
//!
//! The password goes only to a server that proves itself: with TLS required (the default,
//! `require`, and `verify-ca`/`verify-full`) the login must be SCRAM-SHA-256-PLUS, bound to the
//! TLS session (channel binding), and in every mode a request for the password in cleartext
//! or as an MD5 hash is refused before it is answered ([`super::wire`]). A session lives no
//! longer than its check: the server cancels its statements and lock waits before the check's
//! timeout, and the connection closes with the check, also when the check is cut short.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use tokio::net::TcpStream;
use tokio_postgres::config::{ChannelBinding, SslMode as PgSslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, Row};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::task::AbortOnDropHandle;

use crate::check::Attempt;
use crate::checks::kubernetes;
use crate::context::{Context, secret_value};
use crate::outcome::{Cause, Failure, Metrics};
use crate::secret::SecretValue;
use crate::suite::{CaSource, SslMode};
use crate::text::error_chain;

use super::CONNECT_TIMEOUT;
use super::problem::{Problem, malformed};
use super::target::Target;
use super::tls::{self, Protection};
use super::wire::{AuthRequest, Watch};

/// How long a finished session may take to say goodbye (a Terminate message, TLS
/// close_notify): a write each, so only a dead peer makes it wait.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The most characters of a server-reported setting shown in a summary.
const SERVER_TEXT: usize = 100;
/// The check's time left when the runner gives none (outside a run): the default `--timeout`.
const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

/// What a session learnt while opening, before it made itself read-only.
#[derive(Debug, Clone)]
pub struct Facts {
    pub user: String,
    pub protection: Protection,
    /// What the server asked for to authenticate the login.
    pub auth: Option<AuthRequest>,
    /// The login was bound to the TLS session (SCRAM-SHA-256-PLUS).
    pub channel_binding: bool,
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
                "TLS encrypted, certificate chain verified against {} (sslmode {mode}: name not checked)",
                t.ca_origin()
            ),
            Protection::VerifiedName => format!(
                "TLS encrypted and verified (sslmode {mode}: certificate names {}, CA from {})",
                t.tls_name,
                t.ca_origin()
            ),
        }
    }

    /// "SCRAM-SHA-256 with channel binding", worded for summaries.
    pub fn login(&self) -> String {
        match self.auth {
            Some(AuthRequest::Sasl { .. }) if self.channel_binding => {
                "SCRAM-SHA-256 with channel binding".into()
            }
            Some(AuthRequest::Sasl { .. }) => "SCRAM-SHA-256 without channel binding".into(),
            Some(AuthRequest::Trust) => "no password asked (trust)".into(),
            Some(other) => format!("password asked {}", other.words()),
            None => "authentication not seen".into(),
        }
    }

    /// `encrypted`, `verified` and `channel_binding` (0 or 1), on every database check's
    /// result.
    pub fn protection_metrics(&self, m: &mut Metrics) {
        m.count("encrypted", self.protection.encrypted().into())
            .count("verified", self.protection.verified().into())
            .count("channel_binding", self.channel_binding.into());
    }
}

/// What a session knows about its server, for every failure it reports.
#[derive(Debug, Clone)]
struct Peer {
    watch: Watch,
    user: String,
    /// The server-side limits set on the session (below the check's time left).
    statement_timeout: Duration,
    lock_timeout: Duration,
}

/// An open session. Dropping it (a check cut short by its timeout) aborts the task that drives
/// the connection, which closes the socket: tokio-postgres would keep it open for as long as
/// a query is in flight.
pub struct Session {
    pub client: Client,
    pub facts: Facts,
    peer: Peer,
    driver: AbortOnDropHandle<()>,
}

impl Session {
    /// A query that failed on this session, classified.
    pub fn failure(
        &self,
        cx: &Context,
        t: &Target,
        what: &str,
        e: &tokio_postgres::Error,
    ) -> Failure {
        query_failure(cx, t, &self.peer, what, e)
    }

    /// Column `i` of `row`, or the failure naming the column and what it held instead.
    pub fn column<'a, T: FromSql<'a>>(
        &self,
        t: &Target,
        what: &str,
        row: &'a Row,
        i: usize,
        (of, expected): (&str, &str),
    ) -> Result<T, Failure> {
        column(t, what, row, i, of, expected)
    }

    /// Ends the session the polite way (Terminate, TLS close_notify), so the server logs no
    /// broken connection; bounded, and the drop aborts whatever is left.
    pub async fn close(self, attempt: &Attempt) {
        let Session { client, driver, .. } = self;
        drop(client);
        let bound = attempt
            .remaining()
            .map_or(CLOSE_TIMEOUT, |left| left.min(CLOSE_TIMEOUT));
        let _ = tokio::time::timeout(bound, driver).await;
    }
}

/// The server's limits for a session with `left` until the check gives up: statements end at
/// three quarters of it and lock waits at half, so the server stops before the check does
/// (and a lock wait reports as one, not as a statement timeout). Never 0, which would mean
/// "no limit".
pub fn server_timeouts(left: Duration) -> (Duration, Duration) {
    let at_least = Duration::from_millis(1);
    ((left * 3 / 4).max(at_least), (left / 2).max(at_least))
}

fn millis(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// Opens a read-only session to the suite's database, or the classified reason it cannot.
pub async fn open(cx: &Context, t: &Target, attempt: &Attempt) -> Result<Session, Failure> {
    let (user, password) = credentials(cx, t, attempt).await?;
    let ca = if t.sslmode.verifies() {
        read_ca(cx, t, attempt).await?
    } else {
        Vec::new()
    };
    let tls_config = tls::client_config(t.sslmode, &ca).map_err(|why| {
        Failure::new(
            Cause::DbCaInvalid,
            format!(
                "the CA in {} key {} cannot verify anything: {why}",
                t.ca_origin(),
                t.ca.key()
            ),
        )
    })?;
    if !tls::valid_server_name(&t.tls_name) {
        return Err(Failure::new(
            Cause::DbTls,
            format!("{:?} is not a name TLS can verify", t.tls_name),
        ));
    }

    let started = Instant::now();
    let addr = resolve(t, attempt).await.map_err(|p| p.failure(t, &user))?;

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
        })
        // tokio-postgres refuses, before answering the server's authentication request, a
        // login that would not be SCRAM-SHA-256-PLUS bound to this TLS session's certificate:
        // cleartext, MD5, trust, or SCRAM without the binding (an impostor relaying it).
        .channel_binding(if t.binding_required() {
            ChannelBinding::Require
        } else if t.sslmode == SslMode::Disable {
            ChannelBinding::Disable
        } else {
            ChannelBinding::Prefer
        });
    let mut make = MakeRustlsConnect::new(tls_config);
    let connector =
        <MakeRustlsConnect as MakeTlsConnect<TcpStream>>::make_tls_connect(&mut make, &t.tls_name)
            .map_err(|e| Failure::new(Cause::DbTls, format!("TLS setup: {e}")))?;
    let watch = Watch::new(t.sslmode != SslMode::Disable);

    let login = async {
        attempt.observe(format!("connecting to {} (TCP)", t.reached()));
        let stream = TcpStream::connect(addr).await.map_err(Problem::from_io)?;
        let _ = stream.set_nodelay(true);
        attempt.observe(format!(
            "TLS (sslmode {}) and login as {user} to database {} at {}",
            t.sslmode.as_str(),
            t.database,
            t.reached()
        ));
        config
            .connect_raw(watch.wire(stream), watch.tls(connector))
            .await
            .map_err(|e| Problem::from_postgres(&e, &watch))
    };
    let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, login).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(problem)) => return Err(problem.failure(t, &user)),
        Err(_) => {
            let step = if attempt
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
    // The connection drives the socket. Held by the session, it is aborted (the socket
    // closed) whenever the session is dropped, also with a query in flight. A protocol error
    // ends it and leaves the queries with "connection closed": the watch keeps the reason.
    let ended = watch.clone();
    let driver = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut connection = connection;
        // Polled by hand, not awaited: the reason is recorded while the connection, and with
        // it every pending query's channel, still exists, so no query sees "closed" first.
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let Err(e) = message {
                if let Some(v) = malformed(&e) {
                    ended.cut(v);
                }
                break;
            }
        }
    }));
    let connect_time = started.elapsed();
    let tls_used = watch.tls_used();
    let protection = Protection::of(t.sslmode, tls_used);
    let auth = watch.auth();
    // Required: the login only completed bound. Preferred: tokio-postgres binds whenever the
    // server offers it over TLS.
    let channel_binding =
        tls_used && (t.binding_required() || auth == Some(AuthRequest::Sasl { plus: true }));

    let (statement_timeout, lock_timeout) =
        server_timeouts(attempt.remaining().unwrap_or(DEFAULT_BUDGET));
    let peer = Peer {
        watch,
        user,
        statement_timeout,
        lock_timeout,
    };
    // First, so that no statement of this session outlives the check on the server.
    attempt.observe(format!(
        "setting the session's time limits at {}",
        t.reached()
    ));
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}; SET lock_timeout = {}",
            millis(statement_timeout),
            millis(lock_timeout)
        ))
        .await
        .map_err(|e| query_failure(cx, t, &peer, "setting the session's time limits", &e))?;

    attempt.observe(format!("reading server settings at {}", t.reached()));
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), \
                    current_setting('server_version_num')::int8, \
                    pg_is_in_recovery(), s.setting, s.source \
             FROM pg_settings s WHERE s.name = 'default_transaction_read_only'",
            &[],
        )
        .await
        .map_err(|e| query_failure(cx, t, &peer, "reading the server's settings", &e))?;
    let facts = Facts {
        user: peer.user.clone(),
        protection,
        auth,
        channel_binding,
        server_version: row
            .try_get::<_, String>(0)
            .unwrap_or_default()
            .chars()
            .take(SERVER_TEXT)
            .collect(),
        server_version_num: row.try_get::<_, i64>(1).unwrap_or_default().max(0) as u64,
        in_recovery: row.try_get(2).unwrap_or_default(),
        read_only_default: row.try_get::<_, String>(3).is_ok_and(|v| v == "on"),
        read_only_source: row
            .try_get::<_, String>(4)
            .unwrap_or_default()
            .chars()
            .take(SERVER_TEXT)
            .collect(),
        connect_time,
    };
    // From here on the session cannot write, whatever a later query says.
    client
        .batch_execute("SET default_transaction_read_only = on")
        .await
        .map_err(|e| query_failure(cx, t, &peer, "making the session read-only", &e))?;
    Ok(Session {
        client,
        facts,
        peer,
        driver,
    })
}

/// The user name and password from the suite's Secret; the password is registered with the
/// redactor before anything else happens with it.
async fn credentials(
    cx: &Context,
    t: &Target,
    attempt: &Attempt,
) -> Result<(String, SecretValue), Failure> {
    let Some(db) = cx.suite.database.as_ref() else {
        return Err(Failure::new(Cause::Setup, "the suite has no database"));
    };
    attempt.observe(format!("getting secret {}/{}", t.namespace, t.secret));
    let secret = cx
        .cluster
        .get::<Secret>(&t.namespace, &t.secret)
        .await?
        .ok_or_else(|| {
            Failure::new(
                Cause::NotFound,
                format!(
                    "secret {}/{} (the database credentials) not found",
                    t.namespace, t.secret
                ),
            )
            .hint(format!(
                "see {}: CloudNativePG creates it for the application user (spec.bootstrap.initdb.secret)",
                kubernetes::secrets_name(&t.secret)
            ))
        })?;
    let key = |key: &str| -> Result<SecretValue, Failure> {
        match secret_value(&secret, key) {
            None => Err(Failure::new(
                Cause::MissingKey,
                format!("secret {}/{} has no key {key}", t.namespace, t.secret),
            )
            .hint(format!("see {}", kubernetes::secrets_name(&t.secret)))),
            Some(v) if v.is_empty() => Err(Failure::new(
                Cause::EmptyKey,
                format!("secret {}/{}: key {key} is empty", t.namespace, t.secret),
            )
            .hint(format!("see {}", kubernetes::secrets_name(&t.secret)))),
            Some(v) => Ok(v),
        }
    };
    let password = key(&db.secret.password)?;
    cx.redactor.register(&password);
    let user = key(&db.secret.username)?;
    let user = user.expose().map(|u| u.trim().to_string()).ok_or_else(|| {
        Failure::new(
            Cause::EmptyKey,
            format!(
                "secret {}/{}: key {} is not UTF-8 text",
                t.namespace, t.secret, db.secret.username
            ),
        )
    })?;
    if password.expose().is_none() {
        return Err(Failure::new(
            Cause::EmptyKey,
            format!(
                "secret {}/{}: key {} is not UTF-8 text",
                t.namespace, t.secret, db.secret.password
            ),
        ));
    }
    Ok((user, password))
}

/// The CA certificates for `verify-ca`/`verify-full`: from CloudNativePG's CA Secret, or from
/// a ConfigMap holding only the certificate (so the hook need not read the CA's private key,
/// which that Secret holds too).
async fn read_ca(
    cx: &Context,
    t: &Target,
    attempt: &Attempt,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Failure> {
    let origin = t.ca_origin();
    let key = t.ca.key();
    attempt.observe(format!("getting CA {origin}"));
    let mode = t.sslmode.as_str();
    let not_found = || {
        let f = Failure::new(
            Cause::NotFound,
            format!("CA {origin} not found (sslmode {mode} verifies the server with it)"),
        );
        match &t.ca {
            CaSource::Secret { .. } => f.hint(format!(
                "CloudNativePG keeps its CA in <cluster>-ca ({}-ca); with a CA of your own set database.ca_secret, publish the certificate in a ConfigMap (database.ca_configmap), or use sslmode: require to encrypt without verifying",
                t.cluster
            )),
            CaSource::ConfigMap { .. } => f.hint(format!(
                "database.ca_configmap names it: publish CloudNativePG's CA certificate there (key {key}, the ca.crt of secret {}-ca, e.g. with trust-manager or in GitOps), or remove database.ca_configmap to read the Secret",
                t.cluster
            )),
        }
    };
    let pem: Option<String> = match &t.ca {
        CaSource::Secret { name, .. } => cx
            .cluster
            .get::<Secret>(&t.namespace, name)
            .await?
            .ok_or_else(not_found)
            .map(|secret| {
                secret_value(&secret, key).map(|v| v.expose().unwrap_or_default().to_string())
            })?,
        CaSource::ConfigMap { name, .. } => {
            let map = cx
                .cluster
                .get::<ConfigMap>(&t.namespace, name)
                .await?
                .ok_or_else(not_found)?;
            map.data
                .as_ref()
                .and_then(|d| d.get(key).cloned())
                .or_else(|| {
                    map.binary_data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                })
        }
    };
    let pem = pem.ok_or_else(|| {
        Failure::new(Cause::MissingKey, format!("CA {origin} has no key {key}")).hint(format!(
            "set {}.key to the key holding the CA certificate (PEM)",
            t.ca.field()
        ))
    })?;
    tls::parse_ca(pem.as_bytes())
        .map_err(|why| Failure::new(Cause::DbCaInvalid, format!("CA {origin} key {key} {why}")))
}

async fn resolve(t: &Target, attempt: &Attempt) -> Result<SocketAddr, Problem> {
    if let Ok(ip) = t.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, t.port));
    }
    attempt.observe(format!("resolving {}", t.host));
    let mut addrs = tokio::net::lookup_host((t.host.as_str(), t.port))
        .await
        .map_err(|e| Problem::Dns(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| Problem::Dns("no address".into()))
}

/// A query that failed on an open session: the stream cut by the watch, a lock wait or a
/// statement the server ended at the session's limits, or the server's error as it is.
fn query_failure(
    cx: &Context,
    t: &Target,
    peer: &Peer,
    what: &str,
    e: &tokio_postgres::Error,
) -> Failure {
    if let Some(v) = peer.watch.violation() {
        return Problem::from(v).failure(t, &peer.user);
    }
    let at = t.reached();
    let Some(db) = e.as_db_error() else {
        return Failure::new(
            Cause::DbError,
            format!(
                "{what} failed at {at}: {}",
                cx.redactor.redact(&error_chain(e))
            ),
        );
    };
    let message = cx.redactor.redact(db.message());
    let limit = |d: Duration| humantime::format_duration(Duration::from_millis(millis(d) as u64));
    match db.code() {
        c if *c == SqlState::LOCK_NOT_AVAILABLE => Failure::new(
            Cause::DbError,
            format!(
                "{what} failed at {at}: waited for a lock held by another session (SQLSTATE 55P03), until the session's lock_timeout of {}",
                limit(peer.lock_timeout)),
        )
        .details(message)
        .hint(format!(
            "another session holds a conflicting lock: a migration Job still running (see kubernetes::jobs; rerun with --wait), or a transaction left open. Find it with SELECT pid, usename, application_name, state, xact_start, query FROM pg_stat_activity WHERE datname = '{}' AND state <> 'idle' ORDER BY xact_start",
            t.database
        )),
        c if *c == SqlState::QUERY_CANCELED => Failure::new(
            Cause::DbError,
            format!(
                "{what} failed at {at}: the server cancelled it at the session's statement_timeout of {} (SQLSTATE 57014)",
                limit(peer.statement_timeout)),
        )
        .details(message)
        .hint("the server is overloaded, or the query waits on something: raise --timeout (the session's limits are set below it)"),
        c => Failure::new(
            Cause::DbError,
            format!("{what} failed at {at}: SQLSTATE {}: {message}", c.code()),
        ),
    }
}

/// Column `i` of `row` as `T`, or a failure naming the column, the table `of`, and what it
/// held instead of `expected` (a NULL, another type): server data never panics a check.
fn column<'a, T: FromSql<'a>>(
    t: &Target,
    what: &str,
    row: &'a Row,
    i: usize,
    of: &str,
    expected: &str,
) -> Result<T, Failure> {
    let held = match row.try_get::<_, Option<T>>(i) {
        Ok(Some(value)) => return Ok(value),
        Ok(None) => "NULL".to_string(),
        Err(_) => {
            let ty = row.columns().get(i).map_or("missing", |c| c.type_().name());
            format!("{ty}, not {expected}")
        }
    };
    let name = row.columns().get(i).map_or("?", |c| c.name());
    Err(Failure::new(
        Cause::DbError,
        format!(
            "{what} at {}: column {name} of {of} is {held}",
            t.reached()),
    )
    .hint(format!(
        "smokecheck reads {of} as Prisma writes it; a column changed by hand (or a table of another tool under that name) cannot be judged"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_gives_up_before_the_check_does() {
        let (statement, lock) = server_timeouts(Duration::from_secs(30));
        assert_eq!(statement, Duration::from_millis(22_500));
        assert_eq!(lock, Duration::from_secs(15));
        let (statement, lock) = server_timeouts(Duration::from_secs(2));
        assert!(lock < statement && statement < Duration::from_secs(2));
        // 0 would switch the limits off: a check with no time left still sets some.
        assert_eq!(
            server_timeouts(Duration::ZERO),
            (Duration::from_millis(1), Duration::from_millis(1))
        );
    }
}
