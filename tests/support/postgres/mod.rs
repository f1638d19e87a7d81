//! A real PostgreSQL 15 for the database checks: one throwaway cluster per test binary.
//!
//! It owns everything a database test needs from the server side: the cluster (temp dir, free
//! loopback port, scram-sha-256, TLS with a CA generated here), LiteLLM's real schema replayed
//! once from `litellm-proxy-extras`' migration SQL into a template database with Prisma's
//! `"_prisma_migrations"` ledger, one fresh database and login role per scenario (cloned from a
//! template in a fraction of a second), a hot standby standing in for "the rw Service
//! points at a replica", login roles that pg_hba.conf asks for an MD5 hash or a cleartext
//! password (the downgrades an impostor would attempt), and a session that holds a table lock.
//! It listens on `::1` too where the machine has IPv6 loopback.
//!
//! The server refuses to run as root (sessions and CI are root), so when root it runs as the
//! `postgres` OS user. Nothing here skips: a missing `postgresql-15` or migration SQL panics with
//! the `ci/test` step that installs it.
//!
//! This file holds the bed as tests see it ([`Postgres`] and what it tells them); the server
//! processes' lifecycle is in `server.rs`, the TLS material in `tls.rs`, LiteLLM's migrations
//! and the scenario templates in `schema.rs`, and the per-test databases and sessions in
//! `scenarios.rs`.

mod scenarios;
mod schema;
mod server;
mod tls;

pub use scenarios::{Database, Login, Scenario, TableLock, sql_literal};
pub use schema::{EXTRAS_VERSION, MIGRATIONS_ENV, migrations_dir};
pub use server::postgres;
pub use tls::SERVER_DNS_NAMES;

use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use server::{STATEMENT, Server, free_port};

/// The bed's PostgreSQL: a primary with LiteLLM's templates, and a hot standby on demand.
pub struct Postgres {
    dir: Mutex<Option<tempfile::TempDir>>,
    root: PathBuf,
    socket_dir: PathBuf,
    uid: Option<(u32, u32)>,
    primary: Server,
    replica: OnceLock<Server>,
    ca_pem: String,
    wrong_ca_pem: String,
    migrations: Vec<String>,
    template_build: Duration,
    next: AtomicU32,
    ipv6: bool,
}

impl Postgres {
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.primary.port
    }

    /// The CA (PEM) that the server certificate chains to.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A CA that did not sign the server certificate: "TLS required but CA wrong".
    pub fn wrong_ca_pem(&self) -> &str {
        &self.wrong_ca_pem
    }

    /// The server certificate's DNS names (it also names the IP address 127.0.0.1).
    pub fn server_cert_names(&self) -> &'static [&'static str] {
        &SERVER_DNS_NAMES
    }

    /// The migration folder names replayed into the template, in the order applied.
    pub fn migrations(&self) -> &[String] {
        &self.migrations
    }

    /// How long the migration replay and the templates took (measured once, at start).
    pub fn template_build_time(&self) -> Duration {
        self.template_build
    }

    /// The server's log so far (last lines), for assertion messages.
    pub fn log_tail(&self) -> String {
        self.primary.log_tail()
    }

    /// Waits until the primary's log has a line containing `needle` (an event the server
    /// logged, such as a refused login), up to `patience`; returns whether it came.
    pub fn wait_for_log(&self, needle: &str, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        loop {
            let log = std::fs::read_to_string(&self.primary.log).unwrap_or_default();
            if log.lines().any(|l| l.contains(needle)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The CA certificate as a file (PEM), for clients that take a path (`sslrootcert`).
    pub fn ca_path(&self) -> PathBuf {
        self.root.join("ca.crt")
    }

    /// A loopback port with nothing listening: "server down".
    pub fn closed_port(&self) -> u16 {
        free_port()
    }

    /// Whether the server also listens on `::1` (the machine has IPv6 loopback).
    pub fn ipv6(&self) -> bool {
        self.ipv6
    }

    /// The port of the hot standby (started on first use), streaming from the primary.
    pub fn replica_port(&self) -> u16 {
        self.replica().port
    }

    /// Runs `sql` as the superuser over the unix socket; returns unaligned, tuples-only output.
    pub fn superuser_sql(&self, db: &str, sql: &str) -> String {
        self.psql(&self.primary, db, sql, STATEMENT)
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
