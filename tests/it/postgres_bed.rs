//! Proves the PostgreSQL test bed is what the database checks will be tested against: a real
//! server that logs in over verified TLS with scram-sha-256, LiteLLM's real schema and ledger,
//! each scenario's shape, and a replica that refuses writes.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::support::postgres::{Database, Scenario, migrations_dir, postgres};

/// A rustls client trusting only `ca_pem` (ring provider, as the product uses).
fn tls(ca_pem: &str) -> MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("adding the CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    MakeRustlsConnect::new(config)
}

/// Connects to `db` at 127.0.0.1 while verifying the certificate for the rw Service's name
/// (libpq's host/hostaddr split, as through a port-forward).
async fn connect_as(
    db: &Database,
    ca_pem: &str,
    ssl: SslMode,
) -> Result<Client, tokio_postgres::Error> {
    connect_named(db, "cloudnative-pg-cluster-rw", ca_pem, ssl).await
}

/// Connects to `db` at 127.0.0.1, verifying the server certificate for `name`.
async fn connect_named(
    db: &Database,
    name: &str,
    ca_pem: &str,
    ssl: SslMode,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = Config::new();
    config
        .host(name)
        .hostaddr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .port(db.port)
        .user(&db.user)
        .password(&db.password)
        .dbname(&db.name)
        .ssl_mode(ssl)
        .connect_timeout(Duration::from_secs(10));
    let (client, connection) = config.connect(tls(ca_pem)).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn connect(db: &Database) -> Client {
    connect_as(db, postgres().ca_pem(), SslMode::Require)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connecting to {} as {}: {e:?}\n--- server log ---\n{}",
                db.name,
                db.user,
                postgres().log_tail()
            )
        })
}

async fn scalar<T: for<'a> tokio_postgres::types::FromSql<'a>>(client: &Client, sql: &str) -> T {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

#[tokio::test]
async fn scenario_role_logs_in_over_tls_verified_for_the_service_name() {
    let bed = postgres();
    assert!(
        bed.server_cert_names()
            .contains(&"cloudnative-pg-cluster-rw")
    );
    let db = bed.scenario(Scenario::Migrated);
    let client = connect(&db).await;
    let encrypted: bool = scalar(
        &client,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    assert!(encrypted, "the session is not encrypted");
    let user: String = scalar(&client, "SELECT current_user::text").await;
    assert_eq!(user, db.user);
    let stored = bed.superuser_sql(
        "postgres",
        &format!(
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = '{}';",
            db.user
        ),
    );
    assert_eq!(
        stored.trim(),
        "t",
        "the role's password is not stored as scram-sha-256"
    );

    // TLS is on but optional for app users, as in CNPG: a plain session logs in too.
    let plain = connect_as(&db, bed.ca_pem(), SslMode::Disable)
        .await
        .expect("plain (non-TLS) login");
    let encrypted: bool = scalar(
        &plain,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    assert!(!encrypted);
}

#[tokio::test]
async fn server_cert_verifies_for_every_service_name_and_the_loopback_ip_only() {
    let bed = postgres();
    let db = bed.scenario(Scenario::Empty);
    for name in bed.server_cert_names().iter().copied().chain(["127.0.0.1"]) {
        connect_named(&db, name, bed.ca_pem(), SslMode::Require)
            .await
            .unwrap_or_else(|e| panic!("verifying the server certificate for {name}: {e:?}"));
    }
    let err = connect_named(
        &db,
        "cloudnative-pg-cluster-ro",
        bed.ca_pem(),
        SslMode::Require,
    )
    .await
    .expect_err("the certificate does not name the ro Service");
    assert!(format!("{err:?}").contains("NotValidForName"), "{err:?}");
}

/// libpq (psql) agrees: `verify-full` with the host/hostaddr split, CA from a file.
#[tokio::test]
async fn libpq_verify_full_accepts_the_service_name_through_loopback() {
    let bed = postgres();
    let db = bed.scenario(Scenario::Empty);
    let out = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
        .arg(format!(
            "host=cloudnative-pg-cluster-rw.litellm.svc hostaddr=127.0.0.1 port={} user={} \
             dbname={} sslmode=verify-full sslrootcert={}",
            db.port,
            db.user,
            db.name,
            bed.ca_path().display()
        ))
        .args(["-X", "-A", "-t", "-c"])
        .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .env("PGPASSWORD", &db.password)
        .output()
        .expect("running psql");
    assert!(
        out.status.success(),
        "psql verify-full: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
}

/// tokio-postgres-rustls hands tokio-postgres the certificate's `tls-server-end-point` hash, so
/// a login with channel binding required (SCRAM-SHA-256-PLUS) succeeds over TLS; without TLS
/// the server offers only SCRAM-SHA-256 and the same setting refuses to log in.
#[tokio::test]
async fn channel_binding_required_logs_in_over_rustls_and_refuses_without_tls() {
    use tokio_postgres::config::ChannelBinding;
    let bed = postgres();
    let db = bed.scenario(Scenario::Empty);
    let config = |ssl: SslMode| {
        let mut config = Config::new();
        config
            .host("cloudnative-pg-cluster-rw")
            .hostaddr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .port(db.port)
            .user(&db.user)
            .password(&db.password)
            .dbname(&db.name)
            .ssl_mode(ssl)
            .channel_binding(ChannelBinding::Require)
            .connect_timeout(Duration::from_secs(10));
        config
    };
    let (client, connection) = config(SslMode::Require)
        .connect(tls(bed.ca_pem()))
        .await
        .unwrap_or_else(|e| panic!("SCRAM-SHA-256-PLUS over rustls: {e:?}"));
    tokio::spawn(connection);
    let encrypted: bool = scalar(
        &client,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    assert!(encrypted);
    let err = config(SslMode::Disable)
        .connect(tls(bed.ca_pem()))
        .await
        .err()
        .expect("no channel binding without TLS");
    assert!(
        format!("{err:?}").contains("server did not use channel binding"),
        "{err:?}"
    );
}

#[tokio::test]
async fn role_over_its_connection_limit_is_sqlstate_53300() {
    let bed = postgres();
    let db = bed.scenario(Scenario::Empty);
    bed.limit_connections(&db, 0);
    let err = connect_as(&db, bed.ca_pem(), SslMode::Require)
        .await
        .expect_err("a role limited to 0 connections must not log in");
    assert_eq!(err.code(), Some(&SqlState::TOO_MANY_CONNECTIONS), "{err:?}");
}

#[tokio::test]
async fn tls_with_a_ca_that_did_not_sign_the_server_cert_is_rejected() {
    let bed = postgres();
    let db = bed.scenario(Scenario::Empty);
    let err = connect_as(&db, bed.wrong_ca_pem(), SslMode::Require)
        .await
        .expect_err("a CA that did not sign the server certificate must fail the handshake");
    assert!(err.code().is_none(), "expected a TLS error, got {err:?}");
    let text = format!("{err:?}");
    assert!(text.contains("UnknownIssuer"), "{text}");
}

#[tokio::test]
async fn wrong_password_is_sqlstate_28p01() {
    let bed = postgres();
    let mut db = bed.scenario(Scenario::Migrated);
    db.password.push_str("-wrong");
    let err = connect_as(&db, bed.ca_pem(), SslMode::Require)
        .await
        .expect_err("a wrong password must not log in");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err:?}");
}

#[tokio::test]
async fn nonexistent_database_is_sqlstate_3d000() {
    let bed = postgres();
    let mut db = bed.scenario(Scenario::Empty);
    db.name = "litellm_does_not_exist".to_string();
    let err = connect_as(&db, bed.ca_pem(), SslMode::Require)
        .await
        .expect_err("a missing database must not connect");
    assert_eq!(err.code(), Some(&SqlState::INVALID_CATALOG_NAME), "{err:?}");
}

#[tokio::test]
async fn nothing_listening_is_connection_refused() {
    let bed = postgres();
    let mut db = bed.scenario(Scenario::Empty);
    db.port = bed.closed_port();
    let err = connect_as(&db, bed.ca_pem(), SslMode::Prefer)
        .await
        .expect_err("nothing listens there");
    let io = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .unwrap_or_else(|| panic!("expected an io error, got {err:?}"));
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// The migration folders as shipped, counted independently of the bed's own listing.
fn shipped_migrations() -> Vec<String> {
    let dir = migrations_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e} (run ci/test)", dir.display()))
        .map(|e| e.expect("dir entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().into_string().expect("utf-8 name"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn migrated_scenario_has_the_full_schema_and_a_finished_ledger() {
    let bed = postgres();
    let shipped = shipped_migrations();
    assert_eq!(
        shipped.len(),
        213,
        "litellm-proxy-extras 0.4.108 ships 213 migrations"
    );
    assert_eq!(bed.migrations(), shipped.as_slice());
    let client = connect(&bed.scenario(Scenario::Migrated)).await;

    let rows: i64 = scalar(&client, "SELECT count(*) FROM \"_prisma_migrations\"").await;
    assert_eq!(rows, shipped.len() as i64);
    let unfinished: i64 = scalar(
        &client,
        "SELECT count(*) FROM \"_prisma_migrations\" \
         WHERE finished_at IS NULL OR rolled_back_at IS NOT NULL OR applied_steps_count <> 1",
    )
    .await;
    assert_eq!(unfinished, 0);
    let spaced: i64 = scalar(
        &client,
        "SELECT count(*) FROM \"_prisma_migrations\" \
         WHERE migration_name = '20251122125322_Add organization_id to spend logs'",
    )
    .await;
    assert_eq!(
        spaced, 1,
        "the migration whose folder name has spaces was not replayed"
    );

    // The checksum is Prisma's: sha256 of the file, hex.
    let latest = shipped.last().expect("a migration");
    let row = client
        .query_one(
            "SELECT checksum FROM \"_prisma_migrations\" ORDER BY migration_name DESC LIMIT 1",
            &[],
        )
        .await
        .expect("latest ledger row");
    let sql = std::fs::read(migrations_dir().join(latest).join("migration.sql")).expect("sql");
    let expected: String = Sha256::digest(&sql)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(row.get::<_, String>(0), expected);

    // A wrong or partial replay changes this count (the reference measured 97).
    let tables: i64 = scalar(
        &client,
        "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name LIKE 'LiteLLM\\_%'",
    )
    .await;
    assert_eq!(
        tables, 97,
        "LiteLLM_* tables after replaying every migration"
    );
    for core in [
        "LiteLLM_VerificationToken",
        "LiteLLM_UserTable",
        "LiteLLM_TeamTable",
        "LiteLLM_SpendLogs",
    ] {
        let rows: i64 = scalar(&client, &format!("SELECT count(*) FROM \"{core}\"")).await;
        assert_eq!(rows, 0, "{core} is readable by the scenario role and empty");
    }
}

#[tokio::test]
async fn stuck_migration_scenario_has_the_latest_row_unfinished_without_logs() {
    let bed = postgres();
    let client = connect(&bed.scenario(Scenario::StuckMigration)).await;
    let rows = client
        .query(
            "SELECT migration_name, logs FROM \"_prisma_migrations\" \
             WHERE finished_at IS NULL AND rolled_back_at IS NULL",
            &[],
        )
        .await
        .expect("ledger");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        &rows[0].get::<_, String>(0),
        bed.migrations().last().expect("a migration")
    );
    assert_eq!(rows[0].get::<_, Option<String>>(1), None);
}

#[tokio::test]
async fn failed_migration_scenario_has_prisma_error_logs_on_the_latest_row() {
    let bed = postgres();
    let client = connect(&bed.scenario(Scenario::FailedMigration)).await;
    let rows = client
        .query(
            "SELECT migration_name, logs FROM \"_prisma_migrations\" \
             WHERE finished_at IS NULL AND rolled_back_at IS NULL",
            &[],
        )
        .await
        .expect("ledger");
    assert_eq!(rows.len(), 1);
    let name: String = rows[0].get(0);
    assert_eq!(&name, bed.migrations().last().expect("a migration"));
    let logs: String = rows[0].get::<_, Option<String>>(1).expect("logs");
    assert!(logs.starts_with("A migration failed to apply."), "{logs}");
    assert!(logs.contains(&format!("Migration name: {name}")), "{logs}");
    assert!(logs.contains("Database error code: 42501"), "{logs}");
}

#[tokio::test]
async fn empty_scenario_has_no_tables_and_no_ledger() {
    let bed = postgres();
    let client = connect(&bed.scenario(Scenario::Empty)).await;
    let tables: i64 = scalar(
        &client,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .await;
    assert_eq!(tables, 0);
    let err = client
        .query("SELECT 1 FROM \"_prisma_migrations\"", &[])
        .await
        .expect_err("no ledger");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
}

#[tokio::test]
async fn no_ledger_and_missing_core_table_scenarios_have_their_defect() {
    let bed = postgres();
    let no_ledger = connect(&bed.scenario(Scenario::NoLedger)).await;
    let ledger: Option<String> = scalar(
        &no_ledger,
        "SELECT to_regclass('\"_prisma_migrations\"')::text",
    )
    .await;
    assert_eq!(ledger, None);
    let tables: i64 = scalar(
        &no_ledger,
        "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'LiteLLM\\_%'",
    )
    .await;
    assert_eq!(tables, 97);

    let missing = connect(&bed.scenario(Scenario::MissingCoreTable)).await;
    let spend: Option<String> = scalar(
        &missing,
        "SELECT to_regclass('\"LiteLLM_SpendLogs\"')::text",
    )
    .await;
    assert_eq!(spend, None);
    let tokens: Option<String> = scalar(
        &missing,
        "SELECT to_regclass('\"LiteLLM_VerificationToken\"')::text",
    )
    .await;
    assert!(tokens.is_some());
}

#[tokio::test]
async fn scenario_databases_are_cloned_in_well_under_a_second() {
    let bed = postgres();
    let mut slowest = Duration::ZERO;
    for scenario in [
        Scenario::Migrated,
        Scenario::StuckMigration,
        Scenario::FailedMigration,
        Scenario::Empty,
    ] {
        let started = Instant::now();
        bed.scenario(scenario);
        slowest = slowest.max(started.elapsed());
    }
    eprintln!(
        "postgres bed: template build {:.1?}, slowest scenario {slowest:.1?}",
        bed.template_build_time()
    );
    // A per-test replay takes ~30 s; a clone a fraction of a second on an idle machine, and
    // over 3 s on this shared 2-core one while other tests' clones and another worktree's
    // teardown contend for the disk. The bound tells the two apart with that margin.
    assert!(
        slowest < Duration::from_secs(10),
        "slowest scenario took {slowest:?}"
    );
}

#[tokio::test]
async fn replica_stand_in_is_a_hot_standby_that_refuses_writes() {
    let bed = postgres();
    let db = bed.replica_scenario(Scenario::Migrated);
    assert_ne!(db.port, bed.port());
    let client = connect(&db).await;
    let in_recovery: bool = scalar(&client, "SELECT pg_is_in_recovery()").await;
    assert!(in_recovery, "the replica stand-in is not in recovery");
    let rows: i64 = scalar(&client, "SELECT count(*) FROM \"_prisma_migrations\"").await;
    assert_eq!(
        rows,
        bed.migrations().len() as i64,
        "the standby has the data"
    );
    let err = client
        .execute("CREATE TABLE smokecheck_write_probe (x int)", &[])
        .await
        .expect_err("a standby refuses writes");
    assert_eq!(err.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION));
}

#[tokio::test]
async fn read_only_default_scenario_is_a_primary_whose_sessions_start_read_only() {
    let bed = postgres();
    let db = bed.scenario(Scenario::ReadOnlyDefault);
    assert_eq!(db.port, bed.port(), "served by the primary");
    let client = connect(&db).await;
    let in_recovery: bool = scalar(&client, "SELECT pg_is_in_recovery()").await;
    assert!(!in_recovery);
    let read_only: String = scalar(&client, "SHOW default_transaction_read_only").await;
    assert_eq!(read_only, "on");
    let err = client
        .execute("CREATE TABLE smokecheck_write_probe (x int)", &[])
        .await
        .expect_err("sessions start read-only");
    assert_eq!(err.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION));
}
