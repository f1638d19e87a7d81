//! The bed's server processes, start to finish: `initdb` and pg_hba.conf, the primary (and a
//! hot standby on demand) on free loopback ports, run as the `postgres` OS user when we are
//! root, psql as the superuser over the unix socket, and the tear-down at process exit (with
//! the temp dirs of earlier processes that died without one).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU32;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::Postgres;
use super::scenarios::{CLEARTEXT_GROUP, MD5_GROUP};
use super::schema::{migration_names, migrations_dir};
use super::tls::write_tls_files;
use crate::support::process::Supervised;

pub(super) const BIN: &str = "/usr/lib/postgresql/15/bin";
pub(super) const SERVER_START: Duration = Duration::from_secs(60);
pub(super) const STATEMENT: Duration = Duration::from_secs(30);

/// One PostgreSQL server process of the bed.
pub(super) struct Server {
    pub(super) process: Mutex<Option<Supervised>>,
    pub(super) port: u16,
    pub(super) log: PathBuf,
}

impl Server {
    pub(super) fn log_tail(&self) -> String {
        match self.process.lock().ok().as_deref() {
            Some(Some(p)) => p.log_tail(40),
            _ => std::fs::read_to_string(&self.log).unwrap_or_default(),
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
    pub(super) fn replica(&self) -> &Server {
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

    pub(super) fn psql(&self, server: &Server, db: &str, sql: &str, timeout: Duration) -> String {
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

    pub(super) fn psql_file(
        &self,
        server: &Server,
        db: &str,
        file: &Path,
        timeout: Duration,
    ) -> String {
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

    pub(super) fn psql_command(&self, server: &Server, db: &str) -> Command {
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

pub(super) fn give_to_server_user(path: &Path, uid: Option<(u32, u32)>, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Some((u, g)) = uid {
        std::os::unix::fs::chown(path, Some(u), Some(g))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub(super) fn as_server_user(cmd: &mut Command, uid: Option<(u32, u32)>, cwd: &Path) {
    if let Some((u, g)) = uid {
        cmd.uid(u).gid(g); // std drops root's supplementary groups when it sets the uid
    }
    cmd.current_dir(cwd).env("LC_ALL", "C").env_remove("PGDATA");
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
pub(super) fn run(
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

pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free loopback port")
}
