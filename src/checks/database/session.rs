//! One read-only session with LiteLLM's database, opened the way LiteLLM would reach it, and
//! every way that can fail, classified once for all database checks.
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
use crate::connect::Via;
use crate::context::{Context, secret_value};
use crate::outcome::{Cause, Failure, Metrics};
use crate::secret::SecretValue;
use crate::suite::{CaSource, Database, SslMode};
use crate::text::{error_chain, size};

use super::tls::{self, Protection, TlsProblem};
use super::wire::{AuthRequest, MAX_MESSAGE, MAX_SESSION, Violation, Watch};

/// How long TCP connect, TLS and login may take together. The runner's per-check timeout still
/// bounds the whole probe; this one names the step that hung when it is the shorter.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a finished session may take to say goodbye (a Terminate message, TLS
/// close_notify): a write each, so only a dead peer makes it wait.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The most characters of a server-reported setting shown in a summary.
const SERVER_TEXT: usize = 100;
/// The check's time left when the runner gives none (outside a run): the default `--timeout`.
const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

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

    fn port_forward(&self) -> String {
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

/// A server that broke the protocol in a way tokio-postgres itself noticed (a message it cannot
/// parse, or one it did not expect), in tokio-postgres' own words.
fn malformed(e: &tokio_postgres::Error) -> Option<Violation> {
    let text = e.to_string();
    (text.starts_with("error parsing response from server")
        || text.starts_with("unexpected message from server"))
    .then(|| Violation::Malformed {
        why: error_chain(e),
    })
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
    fn from_io(e: std::io::Error) -> Problem {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::ConnectionRefused => Problem::Refused,
            ErrorKind::TimedOut => Problem::Timeout("TCP connect"),
            _ => Problem::Unreachable(e.to_string()),
        }
    }

    /// From a refused login: what the watch cut, the SQLSTATE when the server sent one, else a
    /// TLS problem in the error's sources, else its text.
    fn from_postgres(e: &tokio_postgres::Error, watch: &Watch) -> Problem {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target(via: Via) -> Target {
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
