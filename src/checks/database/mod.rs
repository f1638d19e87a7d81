//! The database layer: can LiteLLM's credentials log in to the CloudNativePG rw endpoint, is it
//! a writable primary, did Prisma's migrations finish, and are LiteLLM's core tables there?
//!
//! Each check opens its own read-only session (a few milliseconds). The other checks require
//! `database::connect`: the runner runs them after it (after its `--wait` retries too), and
//! skips them with its cause when it did not pass, so a connection failure is reported once.
//! When `database::connect` is filtered out of the run, they connect on their own and fail
//! with the same classified cause, so a filtered run cannot pass on an unreachable database.
//! A session is closed when its check ends, and aborted when the check is cut short.

mod problem;
mod session;
mod target;
mod tls;
mod wire;

use std::time::{Duration, Instant};

use crate::check::Check;
use crate::checks::kubernetes;
use crate::context::Context;
use crate::endpoints::Via;
use crate::outcome::{Cause, Failure, Layer, Metrics, Passed, Prerequisite, ProbeResult, Verdict};
use crate::suite::{Database, Suite};

use session::Session;
use target::Target;

/// The check the others run after.
pub const CONNECT: &str = "database::connect";
pub const PRIMARY: &str = "database::primary";
pub const MIGRATIONS: &str = "database::migrations";
pub const SCHEMA: &str = "database::schema";

/// How long TCP connect, TLS and login may take together. The runner's per-check timeout still
/// bounds the whole probe; this one names the step that hung when it is the shorter.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Prisma's migration ledger.
const LEDGER: &str = "_prisma_migrations";
/// Lines of a failed migration's `logs` shown in the details.
const LOG_LINES: usize = 12;
/// Characters of those logs read from the server: far more than the lines shown.
const LOG_BYTES: usize = 16 * 1024;
/// Unfinished migrations read: the first is reported, the others named.
const PENDING_ROWS: usize = 100;

/// What a database check proves, once its session is open.
#[derive(Debug, Clone, Copy)]
enum Probe {
    Connect,
    Primary,
    Migrations,
    Schema,
}

impl Probe {
    async fn run(self, cx: &Context, s: &Session, t: &Target, db: &Database) -> ProbeResult {
        match self {
            Probe::Connect => connect(cx, s, t).await,
            Probe::Primary => primary(s, t),
            Probe::Migrations => migrations(cx, s, t).await,
            Probe::Schema => schema(cx, s, t, db).await,
        }
    }
}

pub fn checks(suite: &Suite) -> Vec<Check> {
    let Some(db) = &suite.database else {
        return Vec::new();
    };
    let ns = suite.namespace.clone();
    let build = |name: &str, probe: Probe| {
        let db = db.clone();
        let check = Check::new(name, Layer::Database, move |cx, attempt| {
            let db = db.clone();
            async move {
                let Some(target) = Target::of(&cx, &db) else {
                    return Ok(Verdict::skip("the suite has no database endpoint"));
                };
                let session = session::open(&cx, &target, &attempt).await?;
                attempt.observe(format!("querying {}", target.reached()));
                let outcome = probe.run(&cx, &session, &target, &db).await;
                session.close(&attempt).await;
                outcome
            }
        })
        .requires(Prerequisite::Namespace(ns.clone()));
        if name == CONNECT {
            check
        } else {
            check.requires(Prerequisite::Check(CONNECT.into()))
        }
    };
    vec![
        build(CONNECT, Probe::Connect),
        build(PRIMARY, Probe::Primary),
        build(MIGRATIONS, Probe::Migrations),
        build(SCHEMA, Probe::Schema),
    ]
}

fn base_metrics(s: &Session) -> Metrics {
    let mut m = Metrics::default();
    s.facts.protection_metrics(&mut m);
    m
}

/// TCP, TLS and login worked; a `SELECT 1` measures the round trip.
async fn connect(cx: &Context, s: &Session, t: &Target) -> ProbeResult {
    let started = Instant::now();
    if let Err(e) = s.client.simple_query("SELECT 1").await {
        return Err(s.failure(cx, t, "SELECT 1", &e));
    }
    let round_trip = started.elapsed();
    let f = &s.facts;
    let mut metrics = base_metrics(s);
    metrics
        .millis("connect_ms", f.connect_time)
        .millis("select1_ms", round_trip)
        .count("server_version_num", f.server_version_num);
    let mut passed = Passed {
        summary: format!(
            "logged in to {} as {} at {}: PostgreSQL {}, {}, {}",
            t.database,
            f.user,
            t.reached(),
            f.server_version,
            f.tls(t),
            f.login()
        ),
        metrics,
        ..Passed::default()
    };
    if !f.protection.verified() {
        passed = passed.note(format!(
            "the server's identity was not verified (sslmode {}): set database.sslmode: verify-full to check its certificate against the CA in {} (or in a ConfigMap: database.ca_configmap)",
            t.sslmode.as_str(),
            t.ca_origin()));
    }
    Ok(passed.into())
}

/// The rw endpoint must reach a writable primary: not in recovery, and not read-only by the
/// server's own default (read before the session made itself read-only).
fn primary(s: &Session, t: &Target) -> ProbeResult {
    let f = &s.facts;
    let metrics = base_metrics(s);
    let service_hint = match t.via {
        Via::Suite | Via::PortForward => format!(
            "the rw Service {}/{} routes to a replica: see {} and {} (a failover not finished, or a selector changed by hand); every LiteLLM write fails until it routes to the primary",
            t.namespace,
            t.service,
            kubernetes::cnpg_name(&t.cluster),
            kubernetes::services_name(&t.service)
        ),
        Via::Flag => format!(
            "the rw Service routes to a replica, or --endpoint points at one (a port-forward to a replica pod instead of svc/{}): see {} and {}; every LiteLLM write fails against a replica",
            t.service,
            kubernetes::cnpg_name(&t.cluster),
            kubernetes::services_name(&t.service)
        ),
    };
    if f.in_recovery {
        return Err(Failure::new(
            Cause::DbReplica,
            format!(
                "{} reaches a replica, not the primary: pg_is_in_recovery() is true",
                t.reached()
            ),
        )
        .hint(service_hint)
        .metrics(metrics));
    }
    if f.read_only_default {
        return Err(Failure::new(
                Cause::DbReadOnly,
                format!(
                    "the primary at {} starts every transaction read-only: default_transaction_read_only is on (set by {})",
                    t.reached(),
                    source_words(&f.read_only_source)),
            )
            .hint(format!(
                "LiteLLM cannot write (spend logs, keys): reset it where it is set, e.g. ALTER DATABASE {} RESET default_transaction_read_only (or ALTER ROLE {} RESET ..., or spec.postgresql.parameters of {}/{}); a stand-in for a replica behind the rw Service",
                t.database, f.user, t.namespace, t.cluster
            ))
            .metrics(metrics));
    }
    Ok(Passed {
        summary: format!(
            "{} is a writable primary: pg_is_in_recovery() false, default_transaction_read_only off",
            t.reached()),
        metrics,
        ..Passed::default()
    }
    .into())
}

/// `pg_settings.source` in words.
fn source_words(source: &str) -> String {
    match source {
        "database" => "ALTER DATABASE ... SET".into(),
        "user" => "ALTER ROLE ... SET".into(),
        "database user" => "ALTER ROLE ... IN DATABASE ... SET".into(),
        "configuration file" => "postgresql.conf".into(),
        "" => "an unknown source".into(),
        other => other.into(),
    }
}

/// Prisma's ledger: present, not empty, nothing unfinished or failed. Every value is read
/// with its column checked: a NULL or another type in a hand-edited ledger is a failure that
/// names the column, never a panic.
async fn migrations(cx: &Context, s: &Session, t: &Target) -> ProbeResult {
    let c = &s.client;
    let mut metrics = base_metrics(s);
    let fail = |e: &tokio_postgres::Error, what: &str| -> Failure { s.failure(cx, t, what, e) };
    let ledger = format!("\"{LEDGER}\"");
    let row = c
        .query_one(
            "SELECT to_regclass(quote_ident($1)) IS NOT NULL AS has_ledger, \
                    (SELECT count(*) FROM pg_catalog.pg_tables \
                      WHERE tablename LIKE 'LiteLLM\\_%' \
                        AND schemaname NOT IN ('pg_catalog', 'information_schema')) AS litellm_tables",
            &[&LEDGER],
        )
        .await
        .map_err(|e| fail(&e, "looking for the migration ledger"))?;
    let what = "looking for the migration ledger";
    let has_ledger: bool = s.column(t, what, &row, 0, ("the catalog", "boolean"))?;
    let litellm_tables: i64 = s.column(t, what, &row, 1, ("the catalog", "bigint"))?;
    metrics.count("litellm_tables", litellm_tables.max(0) as u64);
    if !has_ledger {
        let (summary, hint) = if litellm_tables == 0 {
            (
                format!(
                    "no \"{LEDGER}\" table and no LiteLLM tables in database {}: migrations never ran",
                    t.database
                ),
                format!(
                    "the migration Job (Argo CD PreSync hook, see kubernetes::jobs) never ran against {}/{}, or LiteLLM's DATABASE_URL names another database: sync the Application again and read the Job's log",
                    t.namespace, t.database
                ),
            )
        } else {
            (
                format!(
                    "no \"{LEDGER}\" table in database {}, but {litellm_tables} LiteLLM tables: the schema was not made by prisma migrate",
                    t.database
                ),
                "a schema made by `prisma db push` (or restored without the ledger) has no migration history: LiteLLM's next migration will fail; baseline it with `prisma migrate resolve --applied` per migration, or restore the ledger".to_string(),
            )
        };
        return Err(Failure::new(Cause::MigrationsMissing, summary)
            .hint(hint)
            .metrics(metrics));
    }

    let q = format!(
        "SELECT count(*) FILTER (WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL) AS applied, \
                count(*) FILTER (WHERE rolled_back_at IS NOT NULL) AS rolled_back, \
                count(*) AS total \
         FROM {ledger}"
    );
    let what = "counting migrations";
    let row = c
        .query_one(q.as_str(), &[])
        .await
        .map_err(|e| fail(&e, what))?;
    let count = |i| s.column::<i64>(t, what, &row, i, (&ledger, "bigint"));
    let (applied, rolled_back, total) = (count(0)?, count(1)?, count(2)?);
    metrics
        .count("migrations_applied", applied.max(0) as u64)
        .count("migrations_rolled_back", rolled_back.max(0) as u64);
    if total == 0 {
        return Err(Failure::new(
                Cause::MigrationsMissing,
                format!(
                    "\"{LEDGER}\" in database {} is empty: no migration was ever applied",
                    t.database
                ),
            )
            .hint(format!(
                "the migration Job created the ledger and stopped before the first migration: read its log (kubectl logs -n {} job/{}) and sync again",
                t.namespace,
                cx.suite.litellm.migration_job.as_deref().unwrap_or("litellm-migrations")))
            .metrics(metrics));
    }

    // Logs are cut on the server: only their first lines are shown, and a session reads at
    // most a MiB per message.
    let q = format!(
        "SELECT migration_name, \
                coalesce(to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') AS started, \
                coalesce(left(logs, {LOG_BYTES}), '') AS logs \
         FROM {ledger} \
         WHERE finished_at IS NULL AND rolled_back_at IS NULL \
         ORDER BY started_at, migration_name \
         LIMIT {PENDING_ROWS}"
    );
    let what = "reading unfinished migrations";
    let pending = c.query(q.as_str(), &[]).await.map_err(|e| fail(&e, what))?;
    let mut unfinished: Vec<(String, String, String)> = Vec::new();
    for r in &pending {
        let text = |i| s.column::<String>(t, what, r, i, (&ledger, "text"));
        unfinished.push((text(0)?, text(1)?, text(2)?));
    }
    metrics.count("migrations_unfinished", unfinished.len() as u64);
    if let Some((name, started, logs)) = unfinished.iter().find(|(_, _, l)| !l.trim().is_empty()) {
        let mut details = format!("migration {name} (started {started}) failed; its logs:\n");
        details.push_str(&head(&cx.redactor.redact(logs), LOG_LINES));
        if unfinished.len() > 1 {
            details.push_str(&format!(
                "\n({} unfinished migrations in all)",
                unfinished.len()
            ));
        }
        return Err(Failure::new(
                Cause::MigrationFailed,
                format!("migration {name} failed in database {}", t.database),
            )
            .details(details)
            .hint(format!(
                "Prisma refuses every later migration until this one is resolved: fix the cause shown in its logs, then `prisma migrate resolve --rolled-back {name}` (or --applied if it was completed by hand) and sync again so the migration Job reruns"
            ))
            .metrics(metrics));
    }
    if let Some((name, started, _)) = unfinished.first() {
        let others = unfinished
            .iter()
            .skip(1)
            .map(|(n, _, _)| n.as_str())
            .collect::<Vec<_>>();
        let mut f = Failure::new(
            Cause::MigrationUnfinished,
            format!(
                "migration {name} started {started} and never finished in database {}",
                t.database
            ),
        )
        .hint(format!(
            "a migration Job still running, or killed mid-way (its ttlSecondsAfterFinished may have removed it: see kubernetes::jobs). If none is running, resolve it: `prisma migrate resolve --rolled-back {name}` and sync again so the Job reruns it"
        ));
        if !others.is_empty() {
            f = f.details(format!("also unfinished: {}", others.join(", ")));
        }
        return Err(f.metrics(metrics));
    }

    let q = format!(
        "SELECT migration_name, \
                coalesce(to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') AS finished \
         FROM {ledger} \
         WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL \
         ORDER BY finished_at DESC, migration_name DESC LIMIT 1"
    );
    let what = "reading the latest migration";
    let (latest, finished) = match c.query_opt(q.as_str(), &[]).await {
        Ok(Some(r)) => {
            let text = |i| s.column::<String>(t, what, &r, i, (&ledger, "text"));
            (text(0)?, text(1)?)
        }
        Ok(None) => Default::default(),
        Err(e) => return Err(fail(&e, what)),
    };
    let mut passed = Passed {
        summary: format!(
            "{applied} migrations applied, none unfinished; latest {latest} (finished {finished})"
        ),
        metrics,
        ..Passed::default()
    };
    if rolled_back > 0 {
        passed = passed.note(format!(
            "{rolled_back} migration(s) marked rolled back (resolved by hand; harmless once reapplied)"
        ));
    }
    Ok(passed.into())
}

/// The first `max` lines of a text, each cut to a readable width.
fn head(text: &str, max: usize) -> String {
    const WIDTH: usize = 300;
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = lines
        .iter()
        .take(max)
        .map(|l| {
            if l.chars().count() > WIDTH {
                format!("{}…", l.chars().take(WIDTH).collect::<String>())
            } else {
                l.to_string()
            }
        })
        .collect();
    if lines.len() > max {
        out.push(format!("… ({} more lines)", lines.len() - max));
    }
    out.join("\n")
}

/// LiteLLM's core tables (the suite's list) exist.
async fn schema(cx: &Context, s: &Session, t: &Target, db: &Database) -> ProbeResult {
    let mut metrics = base_metrics(s);
    let rows = s
        .client
        .query(
            "SELECT name FROM unnest($1::text[]) WITH ORDINALITY AS t(name, n) \
             WHERE to_regclass(quote_ident(name)) IS NULL ORDER BY n",
            &[&db.tables],
        )
        .await
        .map_err(|e| s.failure(cx, t, "looking up LiteLLM's tables", &e))?;
    let mut missing: Vec<String> = Vec::new();
    for r in &rows {
        missing.push(s.column(
            t,
            "looking up LiteLLM's tables",
            r,
            0,
            ("the catalog", "text"),
        )?);
    }
    let present = db.tables.len().saturating_sub(missing.len());
    metrics
        .count("tables_required", db.tables.len() as u64)
        .count("tables_present", present as u64);
    if !missing.is_empty() {
        return Err(Failure::new(
                Cause::SchemaTableMissing,
                format!(
                    "database {} lacks {} of {} core tables: {}",
                    t.database,
                    missing.len(),
                    db.tables.len(),
                    missing.join(", ")),
            )
            .hint(format!(
                "LiteLLM's migrations did not create them (see {MIGRATIONS}), someone dropped them, or the suite's database.name ({}) is not LiteLLM's database; LiteLLM fails requests that read them",
                t.database
            ))
            .metrics(metrics));
    }
    Ok(Passed {
        summary: format!(
            "all {} core tables present: {}",
            db.tables.len(),
            db.tables.join(", ")
        ),
        metrics,
        ..Passed::default()
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_migration_logs_are_cut_to_their_first_lines() {
        let logs = (1..=20)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let h = head(&logs, 3);
        assert_eq!(h, "line 1\nline 2\nline 3\n… (17 more lines)");
        let long = "x".repeat(400);
        assert_eq!(head(&long, 3).chars().count(), 301);
    }

    #[test]
    fn settings_sources_are_worded() {
        assert_eq!(source_words("database"), "ALTER DATABASE ... SET");
        assert_eq!(source_words("configuration file"), "postgresql.conf");
    }

    #[test]
    fn four_checks_in_report_order_and_none_without_a_database() {
        let suite = crate::suite::parse("version: 1\n", "t.yaml").expect("suite");
        let names: Vec<_> = checks(&suite).into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "database::connect",
                "database::primary",
                "database::migrations",
                "database::schema"
            ]
        );
        let none = crate::suite::parse("version: 1\ndatabase: null\n", "t.yaml").expect("suite");
        assert!(checks(&none).is_empty());
    }
}
