//! The database layer end to end: the real binary, credentials and CA from the fake API
//! server's Secrets, against the real PostgreSQL of the bed. One test per failure our users meet,
//! each asserting which check fails, its cause, summary, hint and the exit code, and that the
//! database password appears in no output.

use base64::Engine;
use serde_json::Value;

use crate::harness::{Run, command, failed, metric, passed, run_in, text};
use crate::support::fake_kube::{FakeKube, load_scenario};
use std::time::Duration;

use crate::support::impostor::{Ask, Impostor, Script};
use crate::support::postgres::{Database, Login, Scenario, postgres};

const SECRET: &str = "cloudnative-pg-cluster-litellm";
const CA_SECRET: &str = "cloudnative-pg-cluster-ca";
const SERVICE_NAME: &str = "cloudnative-pg-cluster-rw.litellm.svc";
const CHECKS: [&str; 4] = [
    "database::connect",
    "database::primary",
    "database::migrations",
    "database::schema",
];

/// How a run reaches the bed's database.
pub(crate) struct Setup<'a> {
    pub db: &'a Database,
    /// The suite's `database.sslmode`; `None` leaves the default.
    pub sslmode: Option<&'a str>,
    /// The password the Secret holds (the role's when `None`).
    pub password: Option<&'a str>,
    /// The database the suite names (the scenario's when `None`).
    pub name: Option<&'a str>,
    pub wrong_ca: bool,
    /// The CA in a ConfigMap (`database.ca_configmap`) instead of CloudNativePG's CA Secret,
    /// which is then absent from the cluster.
    pub ca_configmap: bool,
    /// `--endpoint database=postgresql://HOST:PORT`; `None` runs with the in-cluster address.
    pub port: Option<u16>,
    /// The endpoint's host as written in the URL.
    pub host: &'a str,
    pub filter: &'a str,
    pub extra: &'a [&'a str],
    /// Port-forwards to the primary pod reach the bed (for `--connect port-forward`).
    pub forward: bool,
    /// The fake API server enforces `smokecheck rbac --suite` for this suite.
    pub rbac: bool,
}

/// The ConfigMap holding the CA when [`Setup::ca_configmap`] is set.
const CA_CONFIGMAP: &str = "cloudnative-pg-cluster-ca-cert";

impl<'a> Setup<'a> {
    pub fn new(db: &'a Database) -> Setup<'a> {
        Setup {
            db,
            sslmode: Some("verify-full"),
            password: None,
            name: None,
            wrong_ca: false,
            ca_configmap: false,
            port: Some(db.port),
            host: "127.0.0.1",
            filter: "database::",
            extra: &[],
            forward: false,
            rbac: false,
        }
    }

    pub fn run(&self) -> Run {
        let bed = postgres();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let password = self.password.unwrap_or(&self.db.password);
        let ca = if self.wrong_ca {
            bed.wrong_ca_pem()
        } else {
            bed.ca_pem()
        };
        let mut scenario = load_scenario("healthy");
        for o in scenario.objects.iter_mut() {
            if o["kind"] != "Secret" {
                continue;
            }
            if o["metadata"]["name"] == SECRET {
                o["data"]["username"] = Value::from(b64(&self.db.user));
                o["data"]["password"] = Value::from(b64(password));
            } else if o["metadata"]["name"] == CA_SECRET {
                o["data"]["ca.crt"] = Value::from(b64(ca));
            }
        }
        let mut database = format!("  name: {}\n", self.name.unwrap_or(&self.db.name));
        if let Some(mode) = self.sslmode {
            database.push_str(&format!("  sslmode: {mode}\n"));
        }
        if self.ca_configmap {
            // Only the public certificate, as trust-manager or GitOps would publish it; the
            // CA Secret (which also holds the CA's private key) is gone.
            scenario
                .objects
                .retain(|o| !(o["kind"] == "Secret" && o["metadata"]["name"] == CA_SECRET));
            scenario.objects.push(serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": CA_CONFIGMAP, "namespace": "litellm"},
                "data": {"ca.crt": ca},
            }));
            database.push_str(&format!("  ca_configmap:\n    name: {CA_CONFIGMAP}\n"));
        }
        let fake = FakeKube::start_with(scenario);
        if self.forward {
            let addr = format!("{}:{}", bed.host(), self.db.port)
                .parse()
                .expect("bed address");
            fake.forward("litellm", "cloudnative-pg-cluster-1", 5432, addr);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let suite = dir.path().join("suite.yaml");
        std::fs::write(&suite, format!("version: 1\ndatabase:\n{database}"))
            .expect("writing the suite");
        if self.rbac {
            let out = command()
                .args(["rbac", "--suite"])
                .arg(&suite)
                .output()
                .expect("smokecheck rbac");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            fake.enforce_rbac(&String::from_utf8_lossy(&out.stdout));
        }
        let kubeconfig = fake.write_kubeconfig(dir.path());
        let endpoint = self
            .port
            .map(|p| format!("database=postgresql://{}:{p}", self.host));
        let mut args = vec!["--suite", suite.to_str().expect("utf-8 path")];
        if let Some(e) = &endpoint {
            args.extend(["--endpoint", e.as_str()]);
        }
        args.extend(self.extra);
        args.push(self.filter);
        let run = run_in(dir, &kubeconfig, &["--format", "json"], &args);
        for secret in [self.db.password.as_str(), password] {
            assert!(
                !run.all_output().contains(secret),
                "the database password leaked into the output:\n{}",
                run.all_output()
            );
        }
        run
    }
}

/// Every check but connect skipped, pointing at it with the cause.
#[track_caller]
fn others_skipped(run: &Run, cause: &str) {
    for name in &CHECKS[1..] {
        let c = run.check(name);
        assert_eq!(c["status"], "skipped", "{name}: {c:#}");
        let reason = text(&c, "skip_reason");
        assert!(
            reason.starts_with("skipped: database::connect failed: "),
            "{c:#}"
        );
        assert_eq!(run.check("database::connect")["cause"], cause);
    }
}

#[test]
fn healthy_database_passes_encrypted_and_verified_through_a_port_forward() {
    let bed = postgres();
    let db = bed.scenario(Scenario::Migrated);
    let run = Setup::new(&db).run();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let names: Vec<String> = run.statuses().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names, CHECKS,
        "the filter selects exactly the database checks"
    );

    let c = passed(&run, "database::connect");
    let summary = text(&c, "summary");
    // The role comes from the Secret, and every value of a Secret is scrubbed (README,
    // "Security and guarantees").
    assert!(!run.all_output().contains(&db.user), "{summary}");
    for part in [
        format!("logged in to {} as <redacted>", db.name),
        format!("at 127.0.0.1:{} (--endpoint)", db.port),
        "PostgreSQL 15".to_string(),
        format!(
            "TLS encrypted and verified (sslmode verify-full: certificate names {SERVICE_NAME}, CA from secret litellm/{CA_SECRET}), SCRAM-SHA-256 with channel binding"
        ),
    ] {
        assert!(summary.contains(&part), "{summary:?} lacks {part:?}");
    }
    assert_eq!(metric(&c, "encrypted"), 1.0);
    assert_eq!(metric(&c, "verified"), 1.0);
    assert_eq!(metric(&c, "channel_binding"), 1.0);
    assert!(metric(&c, "server_version_num") >= 150000.0, "{c:#}");
    assert!(metric(&c, "select1_ms") < 1000.0, "{c:#}");
    assert!(metric(&c, "connect_ms") < 5000.0, "{c:#}");
    assert!(c["details"].is_null(), "no note when verified: {c:#}");

    let p = passed(&run, "database::primary");
    assert!(
        text(&p, "summary").contains("is a writable primary"),
        "{p:#}"
    );

    let m = passed(&run, "database::migrations");
    let latest = bed.migrations().last().expect("migrations");
    let expected = format!(
        "{} migrations applied, none unfinished; latest {latest}",
        bed.migrations().len()
    );
    assert!(text(&m, "summary").starts_with(&expected), "{m:#}");
    assert_eq!(
        metric(&m, "migrations_applied"),
        bed.migrations().len() as f64
    );
    assert!(metric(&m, "litellm_tables") > 50.0, "{m:#}");

    let s = passed(&run, "database::schema");
    assert_eq!(
        text(&s, "summary"),
        "all 4 core tables present: LiteLLM_VerificationToken, LiteLLM_UserTable, LiteLLM_TeamTable, LiteLLM_SpendLogs"
    );
    for check in CHECKS {
        assert_eq!(metric(&run.check(check), "verified"), 1.0, "{check}");
    }
}

#[test]
fn require_encrypts_without_verifying_even_with_a_wrong_ca() {
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        sslmode: Some("require"),
        wrong_ca: true,
        ..Setup::new(&db)
    }
    .run();
    assert_eq!(run.code, 0, "{}", run.stdout);
    let c = passed(&run, "database::connect");
    assert!(
        text(&c, "summary").contains("TLS encrypted, not verified (sslmode require)"),
        "{c:#}"
    );
    assert_eq!(metric(&c, "encrypted"), 1.0);
    assert_eq!(metric(&c, "verified"), 0.0);
    assert!(
        text(&c, "details").contains("was not verified (sslmode require)"),
        "{c:#}"
    );
}

#[test]
fn require_with_channel_binding_is_the_default() {
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        sslmode: None,
        wrong_ca: true,
        ..Setup::new(&db)
    }
    .run();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let c = passed(&run, "database::connect");
    assert!(
        text(&c, "summary").ends_with(
            "TLS encrypted, not verified (sslmode require), SCRAM-SHA-256 with channel binding"
        ),
        "{c:#}"
    );
    assert_eq!(metric(&c, "channel_binding"), 1.0);
}

#[test]
fn prefer_encrypts_when_the_server_offers_tls() {
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        sslmode: Some("prefer"),
        ..Setup::new(&db)
    }
    .run();
    let c = passed(&run, "database::connect");
    assert!(
        text(&c, "summary").contains("TLS encrypted, not verified (sslmode prefer)"),
        "{c:#}"
    );
}

#[test]
fn verify_ca_checks_the_chain_only() {
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        sslmode: Some("verify-ca"),
        ..Setup::new(&db)
    }
    .run();
    let c = passed(&run, "database::connect");
    assert!(
        text(&c, "summary").contains(
            "certificate chain verified against secret litellm/cloudnative-pg-cluster-ca"
        ),
        "{c:#}"
    );
    assert_eq!(metric(&c, "verified"), 1.0);
}

#[test]
fn disable_connects_in_plain_text_and_says_so() {
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        sslmode: Some("disable"),
        ..Setup::new(&db)
    }
    .run();
    assert_eq!(run.code, 0, "{}", run.stdout);
    let c = passed(&run, "database::connect");
    assert!(
        text(&c, "summary").contains("not encrypted (sslmode disable)"),
        "{c:#}"
    );
    assert_eq!(metric(&c, "encrypted"), 0.0);
}

#[test]
fn stuck_migration_is_named() {
    let bed = postgres();
    let db = bed.scenario(Scenario::StuckMigration);
    let run = Setup::new(&db).run();
    let latest = bed.migrations().last().expect("migrations");
    let c = failed(
        &run,
        "database::migrations",
        "migration_unfinished",
        &format!("migration {latest} started "),
    );
    assert!(text(&c, "summary").ends_with(&format!("and never finished in database {}", db.name)));
    assert!(
        text(&c, "hint").contains("prisma migrate resolve --rolled-back"),
        "{c:#}"
    );
    assert_eq!(metric(&c, "migrations_unfinished"), 1.0);
    for ok in ["database::connect", "database::primary", "database::schema"] {
        passed(&run, ok);
    }
}

#[test]
fn failed_migration_shows_its_name_and_the_first_lines_of_its_logs() {
    let bed = postgres();
    let db = bed.scenario(Scenario::FailedMigration);
    let run = Setup::new(&db).run();
    let latest = bed.migrations().last().expect("migrations");
    let c = failed(
        &run,
        "database::migrations",
        "migration_failed",
        &format!("migration {latest} failed in database {}", db.name),
    );
    let details = text(&c, "details");
    assert!(
        details.starts_with(&format!("migration {latest} (started ")),
        "{details}"
    );
    assert!(
        details.contains("A migration failed to apply."),
        "{details}"
    );
    assert!(details.contains("Database error code: 42501"), "{details}");
    assert!(details.contains("more lines)"), "logs are cut: {details}");
    assert!(
        !details.contains("schema_core::state::ApplyMigrations"),
        "{details}"
    );
    assert!(
        text(&c, "hint").contains(&format!("--rolled-back {latest}")),
        "{c:#}"
    );
}

#[test]
fn empty_database_means_migrations_never_ran() {
    let db = postgres().scenario(Scenario::Empty);
    let run = Setup::new(&db).run();
    let c = failed(
        &run,
        "database::migrations",
        "migrations_missing",
        "no \"_prisma_migrations\" table and no LiteLLM tables in database",
    );
    assert!(
        text(&c, "summary").ends_with("migrations never ran"),
        "{c:#}"
    );
    failed(
        &run,
        "database::schema",
        "schema_table_missing",
        "lacks 4 of 4 core tables",
    );
    passed(&run, "database::connect");
}

#[test]
fn schema_without_ledger_was_not_made_by_prisma_migrate() {
    let db = postgres().scenario(Scenario::NoLedger);
    let run = Setup::new(&db).run();
    let c = failed(
        &run,
        "database::migrations",
        "migrations_missing",
        "the schema was not made by prisma migrate",
    );
    assert!(text(&c, "hint").contains("prisma db push"), "{c:#}");
    passed(&run, "database::schema");
}

#[test]
fn missing_core_table_is_named() {
    let db = postgres().scenario(Scenario::MissingCoreTable);
    let run = Setup::new(&db).run();
    let c = failed(
        &run,
        "database::schema",
        "schema_table_missing",
        "lacks 1 of 4 core tables: LiteLLM_SpendLogs",
    );
    assert_eq!(metric(&c, "tables_present"), 3.0);
    passed(&run, "database::migrations");
}

#[test]
fn rw_endpoint_on_a_hot_standby_is_not_a_primary() {
    let db = postgres().replica_scenario(Scenario::Migrated);
    let run = Setup::new(&db).run();
    let c = failed(
        &run,
        "database::primary",
        "db_replica",
        "reaches a replica, not the primary: pg_is_in_recovery() is true",
    );
    let hint = text(&c, "hint");
    assert!(
        hint.starts_with("the rw Service routes to a replica"),
        "{hint}"
    );
    assert!(
        hint.contains("kubernetes::cnpg::cloudnative-pg-cluster"),
        "{hint}"
    );
    // Reads work on a standby: the other checks still prove what they can.
    for ok in [
        "database::connect",
        "database::migrations",
        "database::schema",
    ] {
        passed(&run, ok);
    }
}

#[test]
fn read_only_default_on_the_primary_is_a_failure() {
    let db = postgres().scenario(Scenario::ReadOnlyDefault);
    let run = Setup::new(&db).run();
    let c = failed(
        &run,
        "database::primary",
        "db_read_only",
        "starts every transaction read-only: default_transaction_read_only is on (set by ALTER DATABASE ... SET)",
    );
    assert!(
        text(&c, "hint").contains(&format!(
            "ALTER DATABASE {} RESET default_transaction_read_only",
            db.name
        )),
        "{c:#}"
    );
}

#[test]
fn wrong_password_is_28p01_and_the_other_checks_point_at_connect() {
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        password: Some("not-the-role-password-4242"),
        ..Setup::new(&db)
    }
    .run();
    let c = failed(
        &run,
        "database::connect",
        "db_auth",
        "password authentication failed for user <redacted> at 127.0.0.1:",
    );
    assert!(text(&c, "summary").ends_with("(28P01)"), "{c:#}");
    assert!(
        text(&c, "hint").starts_with(
            "the secret cloudnative-pg-cluster-litellm and the database role disagree"
        ),
        "{c:#}"
    );
    others_skipped(&run, "db_auth");
    let doc = run.json();
    assert_eq!(doc["summary"]["failed"], 1, "reported once: {doc:#}");
}

#[test]
fn a_filter_without_connect_still_fails_on_a_refused_login() {
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        password: Some("not-the-role-password-4242"),
        filter: "database::migrations",
        ..Setup::new(&db)
    }
    .run();
    failed(&run, "database::migrations", "db_auth", "(28P01)");
}

#[test]
fn wrong_database_name_is_3d000() {
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        name: Some("litellm_nonexistent"),
        ..Setup::new(&db)
    }
    .run();
    let c = failed(
        &run,
        "database::connect",
        "db_not_found",
        "database litellm_nonexistent does not exist at 127.0.0.1:",
    );
    assert!(
        text(&c, "hint").contains("spec.bootstrap.initdb.database"),
        "{c:#}"
    );
    others_skipped(&run, "db_not_found");
}

#[test]
fn too_many_connections_is_53300() {
    let bed = postgres();
    let db = bed.scenario(Scenario::Migrated);
    bed.limit_connections(&db, 0);
    let run = Setup::new(&db).run();
    let c = failed(
        &run,
        "database::connect",
        "db_too_many_connections",
        "too many connections",
    );
    assert!(text(&c, "summary").ends_with("(53300)"), "{c:#}");
    assert!(text(&c, "hint").contains("pg_stat_activity"), "{c:#}");
}

#[test]
fn server_down_is_connection_refused_at_the_port_forward() {
    let bed = postgres();
    let db = bed.scenario(Scenario::Migrated);
    let port = bed.closed_port();
    let run = Setup {
        port: Some(port),
        ..Setup::new(&db)
    }
    .run();
    let c = failed(
        &run,
        "database::connect",
        "db_refused",
        &format!("connection refused at 127.0.0.1:{port} (--endpoint)"),
    );
    assert!(
        text(&c, "hint").contains("is the port-forward running"),
        "{c:#}"
    );
    others_skipped(&run, "db_refused");
}

#[test]
fn wrong_ca_fails_verification_naming_the_service_and_the_ca_secret() {
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        wrong_ca: true,
        ..Setup::new(&db)
    }
    .run();
    let c = failed(
        &run,
        "database::connect",
        "db_tls_verify",
        "TLS verification failed (sslmode verify-full): the certificate at 127.0.0.1:",
    );
    assert!(
        text(&c, "summary")
            .ends_with("does not chain to the CA in secret litellm/cloudnative-pg-cluster-ca"),
        "{c:#}"
    );
    assert!(text(&c, "hint").contains(SERVICE_NAME), "{c:#}");
    assert!(text(&c, "details").contains("UnknownIssuer"), "{c:#}");
    others_skipped(&run, "db_tls_verify");
}

#[test]
fn in_cluster_name_outside_the_cluster_is_a_dns_failure_with_the_port_forward_hint() {
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        port: None,
        extra: &["--connect", "direct"],
        ..Setup::new(&db)
    }
    .run();
    let c = failed(
        &run,
        "database::connect",
        "db_dns",
        &format!("{SERVICE_NAME} does not resolve here (in-cluster service address)"),
    );
    assert!(
        text(&c, "hint").starts_with(&format!(
            "{SERVICE_NAME} does not resolve here: outside the cluster let smokecheck port-forward (--connect auto, the default, or port-forward), or pass --endpoint database=postgresql://127.0.0.1:5432 with a port-forward"
        )),
        "{c:#}"
    );
    others_skipped(&run, "db_dns");
}

#[test]
fn port_forward_reaches_the_primary_pod_and_verifies_the_service_name() {
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        port: None,
        forward: true,
        extra: &["--connect", "port-forward"],
        ..Setup::new(&db)
    }
    .run();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let c = passed(&run, "database::connect");
    let summary = text(&c, "summary");
    assert!(
        summary.contains("(port-forward)") && summary.contains("TLS encrypted and verified"),
        "{c:#}"
    );
    for check in [
        "database::primary",
        "database::migrations",
        "database::schema",
    ] {
        passed(&run, check);
    }
}

#[test]
fn auto_connect_port_forwards_where_cluster_dns_does_not_resolve() {
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        port: None,
        forward: true,
        ..Setup::new(&db)
    }
    .run();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(text(&passed(&run, "database::connect"), "summary").contains("(port-forward)"));
}

#[test]
fn a_database_that_comes_up_during_wait_is_proven_whole() {
    // Logins are refused (53300) for the first attempts; the other checks must wait for
    // database::connect's retries instead of being skipped by its first failure.
    let bed = postgres();
    let db = bed.scenario(Scenario::Migrated);
    bed.limit_connections(&db, 0);
    let user = db.user.clone();
    // Reopened once the server has refused a login of this role: an attempt failed.
    let opener = std::thread::spawn(move || {
        let refused = postgres().wait_for_log(
            &format!("too many connections for role \"{user}\""),
            Duration::from_secs(30),
        );
        postgres().superuser_sql(
            "postgres",
            &format!("ALTER ROLE {user} CONNECTION LIMIT -1;"),
        );
        refused
    });
    let run = Setup {
        extra: &["--wait", "30s"],
        ..Setup::new(&db)
    }
    .run();
    assert!(
        opener.join().expect("reopening logins"),
        "the server never refused a login of {}",
        db.user
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    let connect = run.check("database::connect");
    assert!(
        connect["attempts"].as_u64().unwrap_or(0) >= 2,
        "{connect:#}"
    );
    for name in &CHECKS[1..] {
        passed(&run, name);
    }
}

#[test]
fn silent_server_times_out_naming_the_step_it_waited_for() {
    // Accepts TCP (the kernel's backlog) and never answers the SSLRequest.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        port: Some(port),
        extra: &["--timeout", "1s"],
        filter: "database::connect",
        ..Setup::new(&db)
    }
    .run();
    let c = failed(&run, "database::connect", "timeout", "no answer within 1s");
    assert_eq!(
        text(&c, "details"),
        format!(
            "last observed: TLS (sslmode verify-full) and login as <redacted> to database {} at 127.0.0.1:{port} (--endpoint)",
            db.name
        )
    );
}

/// Credentials for a run whose database port is not the bed's (an impostor, a hostile peer):
/// the Secret needs some, and no server holds them, so no scenario database is made.
pub(crate) fn credentials_only() -> Database {
    Database {
        host: "127.0.0.1".into(),
        port: 0,
        name: "litellm".into(),
        user: "app_impostor".into(),
        password: "impostor-never-gets-this-4242".into(),
    }
}

/// The impostor's answers seen once the run is over and every connection closed.
fn after(impostor: &Impostor) -> crate::support::impostor::Seen {
    impostor.seen_when_closed(Duration::from_secs(30))
}

#[test]
fn an_impostor_asking_for_a_cleartext_password_over_tls_never_gets_it() {
    let db = credentials_only();
    let impostor = Impostor::start(Script::asking(Ask::Cleartext, true));
    let run = Setup {
        sslmode: Some("require"),
        port: Some(impostor.port()),
        ..Setup::new(&db)
    }
    .run();
    let c = failed(
        &run,
        "database::connect",
        "insecure_auth",
        &format!(
            // The user name is a value of the Secret, so it is scrubbed too.
            "the server at 127.0.0.1:{} (--endpoint) asked for <redacted>'s password in cleartext: refused, the password was not sent",
            impostor.port(),
        ),
    );
    assert!(text(&c, "hint").contains("SCRAM-SHA-256"), "{c:#}");
    others_skipped(&run, "insecure_auth");
    let seen = after(&impostor);
    assert_eq!((seen.tls_sessions, seen.startups), (1, 1), "{seen:?}");
    assert!(!seen.password_sent(), "the password was sent: {seen:?}");
}

#[test]
fn an_impostor_asking_for_a_cleartext_password_in_plain_text_never_gets_it() {
    // Neither `prefer` (the server declines TLS) nor `disable` has channel binding to refuse
    // with: the check of the server's request itself must hold.
    let db = credentials_only();
    for mode in ["prefer", "disable"] {
        let impostor = Impostor::start(Script::asking(Ask::Cleartext, false));
        let run = Setup {
            sslmode: Some(mode),
            port: Some(impostor.port()),
            filter: "database::connect",
            ..Setup::new(&db)
        }
        .run();
        failed(
            &run,
            "database::connect",
            "insecure_auth",
            "password in cleartext: refused, the password was not sent",
        );
        let seen = after(&impostor);
        assert_eq!(seen.startups, 1, "{mode}: {seen:?}");
        assert!(
            !seen.password_sent(),
            "{mode}: the password was sent: {seen:?}"
        );
    }
}

#[test]
fn an_impostor_asking_for_an_md5_hash_never_gets_it() {
    let db = credentials_only();
    let impostor = Impostor::start(Script::asking(Ask::Md5, false));
    let run = Setup {
        sslmode: Some("prefer"),
        port: Some(impostor.port()),
        filter: "database::connect",
        ..Setup::new(&db)
    }
    .run();
    failed(
        &run,
        "database::connect",
        "insecure_auth",
        "password as an MD5 hash: refused, nothing was sent",
    );
    let seen = after(&impostor);
    assert_eq!(seen.startups, 1, "{seen:?}");
    assert!(!seen.password_sent(), "the MD5 hash was sent: {seen:?}");
}

#[test]
fn an_impostor_offering_scram_without_channel_binding_over_tls_gets_no_login_attempt() {
    let db = credentials_only();
    let impostor = Impostor::start(Script::asking(Ask::ScramWithoutBinding, true));
    let run = Setup {
        sslmode: Some("require"),
        port: Some(impostor.port()),
        filter: "database::connect",
        ..Setup::new(&db)
    }
    .run();
    let c = failed(
        &run,
        "database::connect",
        "insecure_auth",
        "offered SCRAM-SHA-256 without channel binding over TLS",
    );
    assert!(text(&c, "hint").contains("SCRAM-SHA-256-PLUS"), "{c:#}");
    let seen = after(&impostor);
    assert_eq!(seen.tls_sessions, 1, "{seen:?}");
    assert!(
        !seen.password_sent(),
        "a SCRAM exchange was started with the impostor: {seen:?}"
    );
}

#[test]
fn an_impostor_letting_anyone_in_over_tls_is_refused() {
    let db = credentials_only();
    let impostor = Impostor::start(Script::asking(Ask::Trust, true));
    let run = Setup {
        sslmode: Some("require"),
        port: Some(impostor.port()),
        filter: "database::connect",
        ..Setup::new(&db)
    }
    .run();
    failed(
        &run,
        "database::connect",
        "insecure_auth",
        "let the login in without a password (trust): it proved nothing",
    );
    let seen = after(&impostor);
    assert!(
        !seen.tags.contains(&'Q') && !seen.tags.contains(&'P'),
        "{seen:?}"
    );
}

#[test]
fn an_impostor_declining_tls_under_require_gets_not_even_the_user_name() {
    let db = credentials_only();
    let impostor = Impostor::start(Script::asking(Ask::Cleartext, false));
    let run = Setup {
        sslmode: None,
        port: Some(impostor.port()),
        filter: "database::connect",
        ..Setup::new(&db)
    }
    .run();
    failed(
        &run,
        "database::connect",
        "db_tls",
        "does not accept TLS (sslmode require requires it)",
    );
    assert_eq!(after(&impostor).startups, 0);
}

#[test]
fn a_real_server_asking_for_an_md5_hash_is_refused_as_insecure_auth() {
    let db = postgres().scenario_login(Scenario::Empty, Login::Md5);
    let run = Setup {
        sslmode: None,
        ..Setup::new(&db)
    }
    .run();
    let c = failed(
        &run,
        "database::connect",
        "insecure_auth",
        "password as an MD5 hash: refused, nothing was sent",
    );
    assert!(text(&c, "hint").contains("spec.postgresql.pg_hba"), "{c:#}");
    others_skipped(&run, "insecure_auth");
}

#[test]
fn a_real_server_asking_for_a_cleartext_password_is_refused_in_every_sslmode() {
    let db = postgres().scenario_login(Scenario::Migrated, Login::Cleartext);
    for mode in ["verify-full", "require", "prefer", "disable"] {
        let run = Setup {
            sslmode: Some(mode),
            filter: "database::connect",
            ..Setup::new(&db)
        }
        .run();
        let c = run.check("database::connect");
        assert_eq!(c["cause"], "insecure_auth", "{mode}: {c:#}");
    }
    // The same role logs in when it is asked properly: the refusal is about the request.
    let bed = postgres();
    bed.superuser_sql(
        "postgres",
        &format!("ALTER GROUP login_cleartext DROP USER {};", db.user),
    );
    let run = Setup::new(&db).run();
    assert_eq!(run.code, 0, "{}", run.stdout);
}

#[test]
fn verify_full_reads_the_ca_from_a_configmap_and_never_the_ca_secret() {
    // Under exactly the RBAC `smokecheck rbac` prints for this suite: the ConfigMap is
    // granted, the CA Secret (which also holds CloudNativePG's CA key) is not.
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        ca_configmap: true,
        rbac: true,
        ..Setup::new(&db)
    }
    .run();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let c = passed(&run, "database::connect");
    assert!(
        text(&c, "summary").contains(&format!(
            "TLS encrypted and verified (sslmode verify-full: certificate names {SERVICE_NAME}, CA from configmap litellm/{CA_CONFIGMAP})"
        )),
        "{c:#}"
    );
    let wrong = Setup {
        ca_configmap: true,
        wrong_ca: true,
        ..Setup::new(&db)
    }
    .run();
    let c = failed(
        &wrong,
        "database::connect",
        "db_tls_verify",
        &format!("does not chain to the CA in configmap litellm/{CA_CONFIGMAP}"),
    );
    assert!(text(&c, "hint").contains("database.ca_configmap"), "{c:#}");
}

#[test]
fn a_locked_ledger_leaves_no_backend_behind_after_a_wait_run() {
    // A migration Job (or a stuck transaction) holds the ledger; every --wait attempt of
    // database::migrations blocks on it. Each must give up on the server too, not only in
    // smokecheck: the backends are gone after the run while the lock is still held.
    let bed = postgres();
    let db = bed.scenario(Scenario::Migrated);
    let lock = bed.lock_table(&db, "_prisma_migrations");
    let baseline = bed.backends(&db);
    let run = Setup {
        filter: "database::migrations",
        extra: &["--timeout", "2s", "--wait", "5s"],
        ..Setup::new(&db)
    }
    .run();
    let c = failed(
        &run,
        "database::migrations",
        "db_error",
        "waited for a lock held by another session (SQLSTATE 55P03)",
    );
    assert!(c["attempts"].as_u64().unwrap_or(0) >= 2, "{c:#}");
    assert!(text(&c, "hint").contains("pg_stat_activity"), "{c:#}");
    // A backend ends a moment after its client; bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut left = bed.backends(&db);
    while left != baseline && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = bed.backends(&db);
    }
    assert_eq!(
        left, baseline,
        "backends of {} still on the server after the run",
        db.user
    );
    drop(lock);
}

#[test]
fn a_session_that_timed_out_is_closed_before_the_next_attempt() {
    // The impostor lets the login in, then never answers a query: each attempt times out
    // with a query in flight. Its connection must close with the attempt, not linger until
    // the process exits.
    let db = credentials_only();
    let impostor = Impostor::start(Script::asking(Ask::Trust, false));
    let run = Setup {
        sslmode: Some("disable"),
        port: Some(impostor.port()),
        filter: "database::connect",
        extra: &["--timeout", "1s", "--wait", "4s"],
        ..Setup::new(&db)
    }
    .run();
    failed(&run, "database::connect", "timeout", "no answer within 1s");
    let seen = after(&impostor);
    assert!(seen.connections >= 2, "{seen:?}");
    assert_eq!(
        seen.peak_open, 1,
        "sessions outlived their attempt: {seen:?}"
    );
}

/// Breaks the ledger of a fresh migrated database with `sql` (as the superuser).
fn damaged_ledger(sql: &str) -> Database {
    let bed = postgres();
    let db = bed.scenario(Scenario::Migrated);
    bed.superuser_sql(&db.name, sql);
    db
}

#[test]
fn a_null_migration_name_is_reported_naming_the_column_not_a_panic() {
    let db = damaged_ledger(
        "ALTER TABLE \"_prisma_migrations\" ALTER COLUMN migration_name DROP NOT NULL;\n\
         UPDATE \"_prisma_migrations\" SET migration_name = NULL, finished_at = NULL \
         WHERE migration_name = (SELECT max(migration_name) FROM \"_prisma_migrations\");",
    );
    let run = Setup {
        filter: "database::migrations",
        ..Setup::new(&db)
    }
    .run();
    let c = failed(
        &run,
        "database::migrations",
        "db_error",
        "column migration_name of \"_prisma_migrations\" is NULL",
    );
    assert!(
        text(&c, "summary").starts_with("reading unfinished migrations at 127.0.0.1:"),
        "{c:#}"
    );
}

#[test]
fn a_ledger_column_of_another_type_is_reported_naming_it() {
    let db = damaged_ledger(
        "ALTER TABLE \"_prisma_migrations\" ALTER COLUMN migration_name TYPE bytea \
         USING convert_to(migration_name, 'UTF8');",
    );
    let run = Setup {
        filter: "database::migrations",
        ..Setup::new(&db)
    }
    .run();
    let c = failed(
        &run,
        "database::migrations",
        "db_error",
        "column migration_name of \"_prisma_migrations\" is bytea, not text",
    );
    assert!(
        text(&c, "summary").starts_with("reading the latest migration at 127.0.0.1:"),
        "{c:#}"
    );
}

#[test]
fn an_ipv6_endpoint_is_reached_with_its_brackets() {
    let bed = postgres();
    assert!(
        bed.ipv6(),
        "this machine has IPv6 loopback but the bed does not listen on ::1"
    );
    let db = bed.scenario(Scenario::Empty);
    let run = Setup {
        host: "[::1]",
        filter: "database::connect",
        ..Setup::new(&db)
    }
    .run();
    let c = passed(&run, "database::connect");
    assert!(
        text(&c, "summary").contains(&format!("at [::1]:{} (--endpoint)", db.port)),
        "{c:#}"
    );
}
