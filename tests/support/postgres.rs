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

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

use super::process::Supervised;

const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The `litellm-proxy-extras` whose migrations the template replays (LiteLLM 1.106.12 pulls it).
pub const EXTRAS_VERSION: &str = "0.4.108";
/// Names the folder holding the migration folders (`<name>/migration.sql`); set by `ci/test`.
pub const MIGRATIONS_ENV: &str = "SMOKECHECK_LITELLM_MIGRATIONS";
/// The DNS names on the server certificate: CNPG's certificate names the rw Service. The
/// certificate also carries the IP address 127.0.0.1.
pub const SERVER_DNS_NAMES: [&str; 4] = [
    "cloudnative-pg-cluster-rw",
    "cloudnative-pg-cluster-rw.litellm.svc",
    "cloudnative-pg-cluster-rw.litellm.svc.cluster.local",
    "localhost",
];
/// Owns LiteLLM's tables in every template; each scenario's login role is a member of it, as
/// the application user that ran the migrations would own them in a real cluster.
const OWNER_ROLE: &str = "litellm_owner";
/// Members of these groups are asked for an MD5 hash or a cleartext password by pg_hba.conf.
const MD5_GROUP: &str = "login_md5";
const CLEARTEXT_GROUP: &str = "login_cleartext";
const SERVER_START: Duration = Duration::from_secs(60);
const REPLAY: Duration = Duration::from_secs(300);
const STATEMENT: Duration = Duration::from_secs(30);

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
    fn template(self) -> String {
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

/// One PostgreSQL server process of the bed.
struct Server {
    process: Mutex<Option<Supervised>>,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn log_tail(&self) -> String {
        match self.process.lock().ok().as_deref() {
            Some(Some(p)) => p.log_tail(40),
            _ => std::fs::read_to_string(&self.log).unwrap_or_default(),
        }
    }
}

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

static BED: OnceLock<Result<Postgres, String>> = OnceLock::new();

/// The bed's PostgreSQL, started (and LiteLLM's schema replayed) on first use. Panics, naming
/// what to install, if `postgresql-15` or the migration SQL is missing; a failed start panics
/// with the same message in every test that asks for it.
pub fn postgres() -> &'static Postgres {
    let started = BED.get_or_init(|| {
        let started = std::panic::catch_unwind(Postgres::start).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string())
        });
        if started.is_ok() {
            // SAFETY: registers a plain `extern "C" fn` with the C runtime.
            unsafe { libc::atexit(tear_down) };
        }
        started
    });
    match started {
        Ok(bed) => bed,
        Err(why) => panic!("the PostgreSQL test bed could not start: {why}"),
    }
}

/// Runs at process exit (statics are never dropped): kills the servers, removes the temp dir.
extern "C" fn tear_down() {
    if let Some(Ok(bed)) = BED.get() {
        let servers = std::iter::once(&bed.primary).chain(bed.replica.get());
        for server in servers {
            if let Ok(mut process) = server.process.lock() {
                drop(process.take());
            }
        }
        if let Ok(mut dir) = bed.dir.lock() {
            drop(dir.take());
        }
    }
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

    /// Caps `db`'s role at `limit` concurrent sessions (`0`: every login gets SQLSTATE 53300,
    /// "too many connections").
    pub fn limit_connections(&self, db: &Database, limit: i32) {
        self.superuser_sql(
            "postgres",
            &format!("ALTER ROLE {} CONNECTION LIMIT {limit};", db.user),
        );
    }

    /// The CA certificate as a file (PEM), for clients that take a path (`sslrootcert`).
    pub fn ca_path(&self) -> PathBuf {
        self.root.join("ca.crt")
    }

    /// A loopback port with nothing listening: "server down".
    pub fn closed_port(&self) -> u16 {
        free_port()
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

    /// Whether the server also listens on `::1` (the machine has IPv6 loopback).
    pub fn ipv6(&self) -> bool {
        self.ipv6
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

    /// The port of the hot standby (started on first use), streaming from the primary.
    pub fn replica_port(&self) -> u16 {
        self.replica().port
    }

    fn replica(&self) -> &Server {
        self.replica.get_or_init(|| self.start_replica())
    }

    fn start() -> Postgres {
        let started = Instant::now();
        let postgres_bin = Path::new(BIN).join("postgres");
        if !postgres_bin.exists() {
            panic!(
                "PostgreSQL 15 is not installed ({} is missing): run `ci/test` (its \
                 ensure_postgres step) or `apt-get install postgresql-15`",
                postgres_bin.display()
            );
        }
        let migrations_dir = migrations_dir();
        let migrations = migration_names(&migrations_dir);

        let uid = server_user();
        // In /tmp, not $TMPDIR: the postgres user must be able to reach it, and a TMPDIR
        // under /root would not let it.
        let tmp = if uid.is_some() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        remove_orphaned_dirs(&tmp);
        let dir = tempfile::Builder::new()
            .prefix(&format!("smokecheck-pg-{}-", std::process::id()))
            .tempdir_in(&tmp)
            .expect("creating the PostgreSQL temp dir");
        let root = dir.path().to_path_buf();
        give_to_server_user(&root, uid, 0o755);
        let socket_dir = root.join("sock");
        std::fs::create_dir(&socket_dir).expect("creating the socket dir");
        give_to_server_user(&socket_dir, uid, 0o755);

        let (ca_pem, wrong_ca_pem) = write_tls_files(&root, uid);
        init_cluster(&root, uid);

        let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
        let primary = start_server(&root, "primary", &socket_dir, uid, ipv6);
        let mut bed = Postgres {
            dir: Mutex::new(Some(dir)),
            root,
            socket_dir,
            uid,
            primary,
            replica: OnceLock::new(),
            ca_pem,
            wrong_ca_pem,
            migrations,
            template_build: Duration::ZERO,
            next: AtomicU32::new(1),
            ipv6,
        };
        let build = Instant::now();
        bed.build_templates(&migrations_dir);
        bed.template_build = build.elapsed();
        eprintln!(
            "postgres test bed: ready on 127.0.0.1:{} in {:.1?} (templates {:.1?}, {} migrations)",
            bed.primary.port,
            started.elapsed(),
            bed.template_build,
            bed.migrations.len()
        );
        bed
    }

    /// Replays every migration once into `tpl_migrated`, writing Prisma's ledger as Prisma
    /// does (a row when a migration starts, `finished_at` when it ends), then derives the other
    /// scenarios' templates from it.
    fn build_templates(&self, migrations_dir: &Path) {
        let migrated = Scenario::Migrated.template();
        self.psql(
            &self.primary,
            "postgres",
            &format!(
                "CREATE ROLE {OWNER_ROLE} NOLOGIN;\n\
                 CREATE ROLE {MD5_GROUP} NOLOGIN;\n\
                 CREATE ROLE {CLEARTEXT_GROUP} NOLOGIN;\n\
                 CREATE DATABASE {migrated} OWNER {OWNER_ROLE} TEMPLATE template0;\n"
            ),
            STATEMENT,
        );
        let mut script = format!(
            "\\set ON_ERROR_STOP 1\n\
             SET ROLE {OWNER_ROLE};\n\
             CREATE TABLE \"_prisma_migrations\" (\n\
             \"id\" VARCHAR(36) PRIMARY KEY NOT NULL,\n\
             \"checksum\" VARCHAR(64) NOT NULL,\n\
             \"finished_at\" TIMESTAMPTZ,\n\
             \"migration_name\" VARCHAR(255) NOT NULL,\n\
             \"logs\" TEXT,\n\
             \"rolled_back_at\" TIMESTAMPTZ,\n\
             \"started_at\" TIMESTAMPTZ NOT NULL DEFAULT now(),\n\
             \"applied_steps_count\" INTEGER NOT NULL DEFAULT 0\n\
             );\n"
        );
        for name in &self.migrations {
            let file = migrations_dir.join(name).join("migration.sql");
            let sql =
                std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
            let checksum = hex(&Sha256::digest(&sql));
            let id = uuid_v4();
            let name = name.replace('\'', "''");
            script.push_str(&format!(
                "INSERT INTO \"_prisma_migrations\" (id, checksum, migration_name, started_at) \
                 VALUES ('{id}', '{checksum}', '{name}', clock_timestamp());\n\
                 \\i {}\n\
                 UPDATE \"_prisma_migrations\" SET finished_at = clock_timestamp(), \
                 applied_steps_count = 1 WHERE id = '{id}';\n",
                psql_quote(&file)
            ));
        }
        let script_file = self.root.join("replay.sql");
        std::fs::write(&script_file, script).expect("writing the replay script");
        self.psql_file(&self.primary, &migrated, &script_file, REPLAY);

        // The other templates are copies of the migrated one with a defect, made once.
        let latest = "(SELECT migration_name FROM \"_prisma_migrations\" \
                      ORDER BY migration_name DESC LIMIT 1)";
        let defects = [
            (
                Scenario::StuckMigration,
                format!(
                    "UPDATE \"_prisma_migrations\" SET finished_at = NULL, rolled_back_at = NULL, \
                     applied_steps_count = 0, logs = NULL WHERE migration_name = {latest};"
                ),
            ),
            (
                Scenario::FailedMigration,
                format!(
                    "UPDATE \"_prisma_migrations\" SET finished_at = NULL, rolled_back_at = NULL, \
                     applied_steps_count = 0, logs = {} WHERE migration_name = {latest};",
                    sql_literal(&prisma_failure_logs(
                        self.migrations
                            .last()
                            .map(String::as_str)
                            .unwrap_or_default()
                    ))
                ),
            ),
            (
                Scenario::NoLedger,
                "DROP TABLE \"_prisma_migrations\";".to_string(),
            ),
            (
                Scenario::MissingCoreTable,
                "DROP TABLE \"LiteLLM_SpendLogs\" CASCADE;".to_string(),
            ),
        ];
        for (scenario, defect) in defects {
            let template = scenario.template();
            self.psql(
                &self.primary,
                "postgres",
                &format!("CREATE DATABASE {template} OWNER {OWNER_ROLE} TEMPLATE {migrated};\n"),
                STATEMENT,
            );
            self.psql(&self.primary, &template, &defect, STATEMENT);
        }
        // Nobody may connect to a template: CREATE DATABASE refuses a source in use.
        let mut lock = String::new();
        for scenario in [
            Scenario::Migrated,
            Scenario::StuckMigration,
            Scenario::FailedMigration,
            Scenario::NoLedger,
            Scenario::MissingCoreTable,
        ] {
            lock.push_str(&format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false;\n",
                scenario.template()
            ));
        }
        self.psql(&self.primary, "postgres", &lock, STATEMENT);
    }

    /// A hot standby: `pg_basebackup -R` of the primary, streaming from it over the socket.
    fn start_replica(&self) -> Server {
        let data = self.root.join("replica");
        let mut backup = Command::new(Path::new(BIN).join("pg_basebackup"));
        backup
            .arg("-D")
            .arg(&data)
            .arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.primary.port.to_string())
            .args(["-U", "postgres", "-R", "-c", "fast", "-X", "stream", "-N"]);
        as_server_user(&mut backup, self.uid, &self.root);
        run(
            backup,
            None,
            SERVER_START,
            "pg_basebackup for the hot standby",
        )
        .unwrap_or_else(|e| panic!("{e}\n--- primary log ---\n{}", self.log_tail()));
        let replica = start_server(&self.root, "replica", &self.socket_dir, self.uid, false);
        let in_recovery = self.psql(
            &replica,
            "postgres",
            "SELECT pg_is_in_recovery();",
            STATEMENT,
        );
        assert_eq!(
            in_recovery.trim(),
            "t",
            "the hot standby is not in recovery\n--- standby log ---\n{}",
            replica.log_tail()
        );
        replica
    }

    /// Runs `sql` as the superuser over the unix socket; returns unaligned, tuples-only output.
    pub fn superuser_sql(&self, db: &str, sql: &str) -> String {
        self.psql(&self.primary, db, sql, STATEMENT)
    }

    fn psql(&self, server: &Server, db: &str, sql: &str, timeout: Duration) -> String {
        let mut cmd = self.psql_command(server, db);
        cmd.args(["-f", "-"]);
        run(
            cmd,
            Some(sql.to_string()),
            timeout,
            &format!("psql on {db}"),
        )
        .unwrap_or_else(|e| panic!("{e}\n--- server log ---\n{}", server.log_tail()))
    }

    fn psql_file(&self, server: &Server, db: &str, file: &Path, timeout: Duration) -> String {
        let mut cmd = self.psql_command(server, db);
        cmd.arg("-f").arg(file);
        run(
            cmd,
            None,
            timeout,
            &format!("psql -f {} on {db}", file.display()),
        )
        .unwrap_or_else(|e| panic!("{e}\n--- server log ---\n{}", server.log_tail()))
    }

    fn psql_command(&self, server: &Server, db: &str) -> Command {
        let mut cmd = Command::new(psql_binary());
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
        ])
        .arg("-h")
        .arg(&self.socket_dir)
        .arg("-p")
        .arg(server.port.to_string())
        .arg("-d")
        .arg(db)
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }
}

/// Removes the temp dirs of earlier test processes that died without running `tear_down`
/// (SIGKILL, abort): each dir is named after the pid that made it.
fn remove_orphaned_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("smokecheck-pg-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn psql_binary() -> PathBuf {
    let ours = Path::new(BIN).join("psql");
    if ours.exists() {
        ours
    } else {
        PathBuf::from("/usr/bin/psql")
    }
}

/// The folder holding the migration folders: `$SMOKECHECK_LITELLM_MIGRATIONS`, else where
/// `ci/test` caches them. Panics, naming the `ci/test` step, when it is missing.
pub fn migrations_dir() -> PathBuf {
    let dir = match std::env::var_os(MIGRATIONS_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from("/root/.cache"));
            cache
                .join("smokecheck")
                .join(format!("litellm-proxy-extras-{EXTRAS_VERSION}"))
                .join("litellm_proxy_extras")
                .join("migrations")
        }
    };
    if !dir.is_dir() {
        panic!(
            "LiteLLM's migration SQL is missing ({} is not a folder): run `ci/test` (its \
             ensure_litellm_schema step installs litellm-proxy-extras=={EXTRAS_VERSION} and \
             exports {MIGRATIONS_ENV})",
            dir.display()
        );
    }
    dir
}

/// Migration folder names in the order Prisma applies them (by name).
fn migration_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("migration.sql").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    if names.is_empty() {
        panic!(
            "no <name>/migration.sql under {}: run `ci/test` (ensure_litellm_schema)",
            dir.display()
        );
    }
    names
}

/// The uid/gid the server runs as: the `postgres` OS user when we are root, else ourselves.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: plain libc calls; getpwnam's result is read before any other call.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        if pw.is_null() {
            panic!(
                "running as root and there is no `postgres` OS user to run PostgreSQL as (the \
                 postgresql-15 package creates it): run `ci/test` (ensure_postgres)"
            );
        }
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn give_to_server_user(path: &Path, uid: Option<(u32, u32)>, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Some((u, g)) = uid {
        std::os::unix::fs::chown(path, Some(u), Some(g))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn as_server_user(cmd: &mut Command, uid: Option<(u32, u32)>, cwd: &Path) {
    if let Some((u, g)) = uid {
        cmd.uid(u).gid(g); // std drops root's supplementary groups when it sets the uid
    }
    cmd.current_dir(cwd).env("LC_ALL", "C").env_remove("PGDATA");
}

/// A CA, a server certificate for the rw Service names signed by it, and an unrelated CA.
/// Returns (CA PEM, wrong CA PEM).
fn write_tls_files(root: &Path, uid: Option<(u32, u32)>) -> (String, String) {
    let ca_key = KeyPair::generate().expect("generating the CA key");
    let ca = ca_params("smokecheck test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("self-signing the CA");
    let issuer = Issuer::new(ca, ca_key);

    let mut params =
        CertificateParams::new(SERVER_DNS_NAMES.map(String::from).to_vec()).expect("server SANs");
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params
        .distinguished_name
        .push(DnType::CommonName, SERVER_DNS_NAMES[0]);
    let key = KeyPair::generate().expect("generating the server key");
    let cert = params
        .signed_by(&key, &issuer)
        .expect("signing the server certificate");

    let wrong_key = KeyPair::generate().expect("generating the wrong CA key");
    let wrong = ca_params("smokecheck unrelated CA")
        .self_signed(&wrong_key)
        .expect("self-signing the wrong CA");

    for (name, pem, mode) in [
        ("server.crt", cert.pem(), 0o644),
        ("server.key", key.serialize_pem(), 0o600),
        ("ca.crt", ca_cert.pem(), 0o644),
    ] {
        let path = root.join(name);
        std::fs::write(&path, pem).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        give_to_server_user(&path, uid, mode);
    }
    (ca_cert.pem(), wrong.pem())
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn init_cluster(root: &Path, uid: Option<(u32, u32)>) {
    let data = root.join("primary");
    let mut initdb = Command::new(Path::new(BIN).join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-E", "UTF8", "--no-locale", "-N"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"]);
    as_server_user(&mut initdb, uid, root);
    run(initdb, None, SERVER_START, "initdb").unwrap_or_else(|e| panic!("{e}"));
    // scram-sha-256 for every TCP login (TLS or not), but md5 and cleartext `password` for the
    // members of the login groups; trust only for the superuser on the socket, which is how
    // the bed administers the server and how the standby streams.
    let mut hba = String::from(
        "local   all          postgres                 trust\n\
         local   replication  postgres                 trust\n\
         local   all          all                      scram-sha-256\n",
    );
    for net in ["127.0.0.1/32", "::1/128"] {
        for kind in ["hostssl", "host"] {
            hba.push_str(&format!(
                "{kind} all +{MD5_GROUP} {net} md5\n\
                 {kind} all +{CLEARTEXT_GROUP} {net} password\n\
                 {kind} all all {net} scram-sha-256\n"
            ));
        }
    }
    let path = data.join("pg_hba.conf");
    std::fs::write(&path, hba).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Starts the server whose data dir is `root/name` on a free port and waits until it accepts
/// connections. Retries on a fresh port if the first one was taken in the meantime.
fn start_server(
    root: &Path,
    name: &str,
    socket_dir: &Path,
    uid: Option<(u32, u32)>,
    ipv6: bool,
) -> Server {
    let data = root.join(name);
    let log = root.join(format!("{name}.log"));
    let mut last_error = String::new();
    for _attempt in 0..3 {
        let port = free_port();
        let mut cmd = Command::new(Path::new(BIN).join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(socket_dir);
        let listen = if ipv6 { "127.0.0.1,::1" } else { "127.0.0.1" };
        for setting in [
            format!("listen_addresses={listen}"),
            "password_encryption=scram-sha-256".to_string(),
            "ssl=on".to_string(),
            format!("ssl_cert_file={}", root.join("server.crt").display()),
            format!("ssl_key_file={}", root.join("server.key").display()),
            format!("ssl_ca_file={}", root.join("ca.crt").display()),
            // A throwaway cluster: durability buys nothing and costs seconds.
            "fsync=off".to_string(),
            "synchronous_commit=off".to_string(),
            "full_page_writes=off".to_string(),
            "max_connections=200".to_string(),
        ] {
            cmd.arg("-c").arg(setting);
        }
        as_server_user(&mut cmd, uid, root);
        let process = Supervised::spawn(cmd, &log)
            .unwrap_or_else(|e| panic!("spawning postgres ({name}): {e}"));
        let server = Server {
            process: Mutex::new(Some(process)),
            port,
            log: log.clone(),
        };
        match wait_ready(&server, socket_dir) {
            Ok(()) => return server,
            Err(why) => last_error = why,
        }
    }
    panic!("PostgreSQL ({name}) did not start: {last_error}");
}

/// Polls `pg_isready` until the server accepts connections, it exits, or the deadline passes.
fn wait_ready(server: &Server, socket_dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + SERVER_START;
    loop {
        if let Some(status) = server
            .process
            .lock()
            .ok()
            .and_then(|mut p| p.as_mut().and_then(Supervised::exited))
        {
            return Err(format!(
                "the server exited ({status}) on port {}\n--- server log ---\n{}",
                server.port,
                server.log_tail()
            ));
        }
        let ready = Command::new(Path::new(BIN).join("pg_isready"))
            .arg("-h")
            .arg(socket_dir)
            .args([
                "-p",
                &server.port.to_string(),
                "-U",
                "postgres",
                "-t",
                "1",
                "-q",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not accepting connections on port {} after {SERVER_START:?}\n\
                 --- server log ---\n{}",
                server.port,
                server.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd` to completion within `timeout` (killed after it), feeding it `input`. Returns
/// stdout, or an error naming `what` with the exit status and stderr.
fn run(
    mut cmd: Command,
    input: Option<String>,
    timeout: Duration,
    what: &str,
) -> Result<String, String> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{what}: spawning: {e}"))?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let (Some(mut stdin), Some(input)) = (stdin, input) {
            use std::io::Write;
            let _ = stdin.write_all(input.as_bytes());
        }
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into()),
        Ok(Ok(out)) => Err(format!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => {
            // SAFETY: plain syscall on our own child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            Err(format!("{what} did not finish within {timeout:?}"))
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free loopback port")
}

/// What Prisma's migrate engine writes into `logs` when a migration fails (P3018): here, the
/// application role not owning a table that the migration alters.
fn prisma_failure_logs(migration: &str) -> String {
    format!(
        "A migration failed to apply. New migrations cannot be applied before the error is \
         recovered from. Read more about how to resolve migration issues in a production \
         database: https://pris.ly/d/migrate-resolve\n\n\
         Migration name: {migration}\n\n\
         Database error code: 42501\n\n\
         Database error:\n\
         ERROR: must be owner of table LiteLLM_CredentialsTable\n\n\
         DbError {{ severity: \"ERROR\", parsed_severity: Some(Error), code: SqlState(E42501), \
         message: \"must be owner of table LiteLLM_CredentialsTable\", detail: None, hint: None, \
         position: None, where_: None, schema: None, table: None, column: None, datatype: None, \
         constraint: None, file: Some(\"aclchk.c\"), line: Some(3650), \
         routine: Some(\"aclcheck_error\") }}\n\n\
         \x20  0: sql_schema_connector::apply_migration::apply_script\n\
         \x20          with migration_name=\"{migration}\"\n\
         \x20            at schema-engine/connectors/sql-schema-connector/src/apply_migration.rs:106\n\
         \x20  1: schema_core::commands::apply_migrations::Applying migration\n\
         \x20          with migration_name=\"{migration}\"\n\
         \x20            at schema-engine/core/src/commands/apply_migrations.rs:91\n\
         \x20  2: schema_core::state::ApplyMigrations\n\
         \x20            at schema-engine/core/src/state.rs:226"
    )
}

pub fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A path quoted for psql's `\i` (single quotes; backslash escapes).
fn psql_quote(path: &Path) -> String {
    let raw = path.display().to_string();
    format!("'{}'", raw.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes
}

fn random_hex(n: usize) -> String {
    hex(&random_bytes::<32>()[..n.min(32)])
}

fn uuid_v4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
