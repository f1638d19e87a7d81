//! The database layer end to end: the real binary, credentials and CA from the fake API
//! server's Secrets, against the real PostgreSQL of the bed. One test per failure our users meet,
//! each asserting which check fails, its cause, summary, hint and the exit code, and that the
//! database password appears in no output.

use base64::Engine;
use serde_json::Value;

use crate::harness::{Run, failed, metric, passed, run_in, text};
use crate::support::fake_kube::{FakeKube, load_scenario};
use crate::support::postgres::{Database, Scenario, postgres};

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
struct Setup<'a> {
    db: &'a Database,
    sslmode: &'a str,
    /// The password the Secret holds (the role's when `None`).
    password: Option<&'a str>,
    /// The database the suite names (the scenario's when `None`).
    name: Option<&'a str>,
    wrong_ca: bool,
    /// `--endpoint database=...`; `None` runs with the in-cluster address.
    port: Option<u16>,
    filter: &'a str,
    extra: &'a [&'a str],
    /// Port-forwards to the primary pod reach the bed (for `--connect port-forward`).
    forward: bool,
}

impl<'a> Setup<'a> {
    fn new(db: &'a Database) -> Setup<'a> {
        Setup {
            db,
            sslmode: "verify-full",
            password: None,
            name: None,
            wrong_ca: false,
            port: Some(db.port),
            filter: "database::",
            extra: &[],
            forward: false,
        }
    }

    fn run(&self) -> Run {
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
        let fake = FakeKube::start_with(scenario);
        if self.forward {
            let addr = format!("{}:{}", bed.host(), self.db.port)
                .parse()
                .expect("bed address");
            fake.forward("litellm", "cloudnative-pg-cluster-1", 5432, addr);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let suite = dir.path().join("suite.yaml");
        std::fs::write(
            &suite,
            format!(
                "version: 1\ndatabase:\n  name: {}\n  sslmode: {}\n",
                self.name.unwrap_or(&self.db.name),
                self.sslmode
            ),
        )
        .expect("writing the suite");
        let kubeconfig = fake.write_kubeconfig(dir.path());
        let endpoint = self
            .port
            .map(|p| format!("database=postgresql://127.0.0.1:{p}"));
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
            "TLS encrypted and verified (sslmode verify-full: certificate names {SERVICE_NAME}, CA from secret litellm/{CA_SECRET})"
        ),
    ] {
        assert!(summary.contains(&part), "{summary:?} lacks {part:?}");
    }
    assert_eq!(metric(&c, "encrypted"), 1.0);
    assert_eq!(metric(&c, "verified"), 1.0);
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
        sslmode: "require",
        wrong_ca: true,
        ..Setup::new(&db)
    }
    .run();
    assert_eq!(run.code, 0, "{}", run.stdout);
    let c = passed(&run, "database::connect");
    assert!(
        text(&c, "summary").ends_with("TLS encrypted, not verified (sslmode require)"),
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
fn prefer_is_the_default_and_encrypts_when_the_server_offers_tls() {
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        sslmode: "prefer",
        ..Setup::new(&db)
    }
    .run();
    let c = passed(&run, "database::connect");
    assert!(
        text(&c, "summary").ends_with("TLS encrypted, not verified (sslmode prefer)"),
        "{c:#}"
    );
}

#[test]
fn verify_ca_checks_the_chain_only() {
    let db = postgres().scenario(Scenario::Migrated);
    let run = Setup {
        sslmode: "verify-ca",
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
        sslmode: "disable",
        ..Setup::new(&db)
    }
    .run();
    assert_eq!(run.code, 0, "{}", run.stdout);
    let c = passed(&run, "database::connect");
    assert!(
        text(&c, "summary").ends_with("not encrypted (sslmode disable)"),
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
    let opener = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        postgres().superuser_sql(
            "postgres",
            &format!("ALTER ROLE {user} CONNECTION LIMIT -1;"),
        );
    });
    let run = Setup {
        extra: &["--wait", "30s"],
        ..Setup::new(&db)
    }
    .run();
    opener.join().expect("reopening logins");
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
