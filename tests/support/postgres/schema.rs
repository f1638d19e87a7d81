//! LiteLLM's real schema: the migration SQL `litellm-proxy-extras` ships (found where `ci/test`
//! put it), replayed once into a template database with Prisma's `"_prisma_migrations"` ledger
//! written as Prisma writes it, and the templates of the defective scenarios derived from it
//! (a stuck or failed migration, no ledger, a core table missing).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::scenarios::{CLEARTEXT_GROUP, MD5_GROUP, Scenario, sql_literal};
use super::server::STATEMENT;
use super::{Postgres, hex, random_bytes};

/// The `litellm-proxy-extras` whose migrations the template replays (LiteLLM 1.106.12 pulls it).
pub const EXTRAS_VERSION: &str = "0.4.108";
/// Names the folder holding the migration folders (`<name>/migration.sql`); set by `ci/test`.
pub const MIGRATIONS_ENV: &str = "SMOKECHECK_LITELLM_MIGRATIONS";
/// Owns LiteLLM's tables in every template; each scenario's login role is a member of it, as
/// the application user that ran the migrations would own them in a real cluster.
pub(super) const OWNER_ROLE: &str = "litellm_owner";
const REPLAY: Duration = Duration::from_secs(300);

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
pub(super) fn migration_names(dir: &Path) -> Vec<String> {
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

impl Postgres {
    /// Replays every migration once into `tpl_migrated`, writing Prisma's ledger as Prisma
    /// does (a row when a migration starts, `finished_at` when it ends), then derives the other
    /// scenarios' templates from it.
    pub(super) fn build_templates(&self, migrations_dir: &Path) {
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

/// A path quoted for psql's `\i` (single quotes; backslash escapes).
fn psql_quote(path: &Path) -> String {
    let raw = path.display().to_string();
    format!("'{}'", raw.replace('\\', "\\\\").replace('\'', "\\'"))
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
