//! What a test asks the bed for: a fresh database per scenario (cloned from its template),
//! owned by a fresh login role that pg_hba.conf asks for its password SCRAM's, MD5's or
//! cleartext's way; the same through the hot standby; connection limits, backend counts, and a
//! session that holds a table lock.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::schema::OWNER_ROLE;
use super::server::{SERVER_START, STATEMENT};
use super::{Postgres, hex, random_bytes};

/// Members of these groups are asked for an MD5 hash or a cleartext password by pg_hba.conf.
pub(super) const MD5_GROUP: &str = "login_md5";
pub(super) const CLEARTEXT_GROUP: &str = "login_cleartext";

/// What a scenario database holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Every migration applied: LiteLLM's full schema and one finished ledger row per migration.
    Migrated,
    /// The latest migration started and never finished (`finished_at` and `rolled_back_at`
    /// NULL, no logs): a migration Job killed mid-way.
    StuckMigration,
    /// The latest migration failed: like `StuckMigration`, with Prisma's error text in `logs`.
    FailedMigration,
    /// A plain empty database: migrations never ran (no tables, no ledger).
    Empty,
    /// LiteLLM's tables without `"_prisma_migrations"`, as `prisma db push` leaves a database.
    NoLedger,
    /// Fully migrated, then `"LiteLLM_SpendLogs"` dropped: a core table is missing.
    MissingCoreTable,
    /// Fully migrated on the primary, but sessions start with `default_transaction_read_only`
    /// on (set on the database): the read-only stand-in that needs no second server.
    ReadOnlyDefault,
}

impl Scenario {
    fn label(self) -> &'static str {
        match self {
            Scenario::Migrated => "migrated",
            Scenario::StuckMigration => "stuck",
            Scenario::FailedMigration => "failed",
            Scenario::Empty => "empty",
            Scenario::NoLedger => "noledger",
            Scenario::MissingCoreTable => "missingcore",
            Scenario::ReadOnlyDefault => "readonly",
        }
    }

    /// The database this scenario is cloned from.
    pub(super) fn template(self) -> String {
        match self {
            Scenario::Empty => "template0".to_string(),
            Scenario::ReadOnlyDefault => Scenario::Migrated.template(),
            other => format!("tpl_{}", other.label()),
        }
    }
}

/// How pg_hba.conf asks a scenario's role for its password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    /// SCRAM-SHA-256 (with channel binding over TLS), as CloudNativePG does.
    Scram,
    /// `md5`, the role's password stored as an MD5 hash (so the server does ask for MD5).
    Md5,
    /// `password`: the server asks for the password in cleartext.
    Cleartext,
}

/// A scenario's database and the login role that owns it.
#[derive(Clone, Debug)]
pub struct Database {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
    pub password: String,
}

impl Database {
    /// `postgresql://user:password@host:port/name` (names and passwords here are URL-safe).
    pub fn url(&self) -> String {
        format!(
            "postgresql://{}:{}@{}:{}/{}",
            self.user, self.password, self.host, self.port, self.name
        )
    }

    /// `postgresql://host:port`, the form `--endpoint database=URL` takes (no credentials:
    /// smokecheck reads those from the Secret).
    pub fn endpoint(&self) -> String {
        format!("postgresql://{}:{}", self.host, self.port)
    }
}

/// A transaction of another session holding a table lock; rolled back when dropped.
pub struct TableLock {
    child: Option<std::process::Child>,
    stdin: Option<std::process::ChildStdin>,
}

impl Drop for TableLock {
    fn drop(&mut self) {
        use std::io::Write;
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"ROLLBACK;\n");
        }
        // psql exits at the end of its input (stdin closed above); bounded in case it does not.
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        if rx.recv_timeout(STATEMENT).is_err() {
            // SAFETY: plain syscall on our own child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

impl Postgres {
    /// Caps `db`'s role at `limit` concurrent sessions (`0`: every login gets SQLSTATE 53300,
    /// "too many connections").
    pub fn limit_connections(&self, db: &Database, limit: i32) {
        self.superuser_sql(
            "postgres",
            &format!("ALTER ROLE {} CONNECTION LIMIT {limit};", db.user),
        );
    }

    /// A fresh database for one scenario, cloned from its template (`CREATE DATABASE ..
    /// TEMPLATE`), owned by a fresh login role with a scram-sha-256 password.
    pub fn scenario(&self, scenario: Scenario) -> Database {
        self.scenario_login(scenario, Login::Scram)
    }

    /// Like [`Postgres::scenario`], with a role that pg_hba.conf asks for its password `login`'s
    /// way.
    pub fn scenario_login(&self, scenario: Scenario, login: Login) -> Database {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("litellm_{}_{n}", scenario.label());
        let user = format!("app_{}_{n}", scenario.label());
        let password = random_hex(16);
        // Members of the owner role get its privileges on LiteLLM's tables (INHERIT); the login
        // groups only select a pg_hba.conf line.
        let mut groups = Vec::new();
        if scenario != Scenario::Empty {
            groups.push(OWNER_ROLE);
        }
        match login {
            Login::Scram => {}
            Login::Md5 => groups.push(MD5_GROUP),
            Login::Cleartext => groups.push(CLEARTEXT_GROUP),
        }
        let membership = if groups.is_empty() {
            String::new()
        } else {
            format!(" IN ROLE {}", groups.join(", "))
        };
        // `md5` in pg_hba.conf falls back to SCRAM for a SCRAM-stored password: store MD5.
        let encryption = match login {
            Login::Md5 => "md5",
            Login::Scram | Login::Cleartext => "scram-sha-256",
        };
        let mut sql = format!(
            "SET password_encryption = '{encryption}';\n\
             CREATE ROLE {user} LOGIN PASSWORD '{password}'{membership};\n\
             CREATE DATABASE {name} OWNER {user} TEMPLATE {};\n",
            scenario.template()
        );
        // Per-database settings are not copied from a template, so this one is set per clone.
        if scenario == Scenario::ReadOnlyDefault {
            sql.push_str(&format!(
                "ALTER DATABASE {name} SET default_transaction_read_only = on;\n"
            ));
        }
        self.psql(&self.primary, "postgres", &sql, STATEMENT);
        Database {
            host: self.host().to_string(),
            port: self.port(),
            name,
            user,
            password,
        }
    }

    /// A scenario database reached through the hot standby: the same roles and data, but the
    /// server is in recovery (`pg_is_in_recovery()` is true) and refuses writes. Returns once
    /// the standby has replayed the database's creation.
    pub fn replica_scenario(&self, scenario: Scenario) -> Database {
        let replica = self.replica();
        let mut db = self.scenario(scenario);
        let lsn = self.psql(
            &self.primary,
            "postgres",
            "SELECT pg_current_wal_lsn();",
            STATEMENT,
        );
        let lsn = lsn.trim();
        let deadline = Instant::now() + SERVER_START;
        loop {
            let caught_up = self.psql(
                replica,
                "postgres",
                &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn;"),
                STATEMENT,
            );
            if caught_up.trim() == "t" {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "the hot standby did not replay up to {lsn} within {SERVER_START:?}\n\
                     --- standby log ---\n{}",
                    replica.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        db.port = replica.port;
        db
    }

    /// How many server processes serve `db`'s role right now (`pg_stat_activity`).
    pub fn backends(&self, db: &Database) -> u32 {
        let out = self.superuser_sql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = {};",
                sql_literal(&db.user)
            ),
        );
        out.trim()
            .parse()
            .unwrap_or_else(|e| panic!("counting backends ({out:?}): {e}"))
    }

    /// Holds `ACCESS EXCLUSIVE` on `table` of `db` in an open transaction of another session
    /// (a migration in progress, a stuck transaction) until the returned guard is dropped.
    /// Returns once the lock is held.
    pub fn lock_table(&self, db: &Database, table: &str) -> TableLock {
        use std::io::{BufRead, Write};
        let mut cmd = self.psql_command(&self.primary, &db.name);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawning psql to hold a lock");
        let mut stdin = child.stdin.take().expect("psql stdin");
        let stdout = child.stdout.take().expect("psql stdout");
        writeln!(
            stdin,
            "BEGIN;\nLOCK TABLE \"{}\" IN ACCESS EXCLUSIVE MODE;\nSELECT 'locked';",
            table.replace('"', "\"\"")
        )
        .expect("asking psql for the lock");
        stdin.flush().expect("flushing psql's stdin");
        // psql prints `locked` once the lock is granted: that line is the signal.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let granted = lines.any(|l| l.is_ok_and(|l| l.trim() == "locked"));
            let _ = tx.send(granted);
        });
        match rx.recv_timeout(STATEMENT) {
            Ok(true) => TableLock {
                child: Some(child),
                stdin: Some(stdin),
            },
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "psql did not lock {table} in {} ({other:?})\n--- server log ---\n{}",
                    db.name,
                    self.log_tail()
                );
            }
        }
    }
}

pub fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn random_hex(n: usize) -> String {
    hex(&random_bytes::<32>()[..n.min(32)])
}
