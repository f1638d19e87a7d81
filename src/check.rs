//! What a check is and what it returns.
//!
//! A check is a named, async probe. It never prints: it returns a typed [`Outcome`], and the
//! runner turns outcomes into [`crate::report::CheckResult`]s that every reporter renders. Later
//! layers (database, LiteLLM, vLLM, end to end) add checks; nothing here changes for them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::env::Env;

/// The part of the chain a check belongs to; one JUnit testsuite each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// What the deployment stands on (namespaces, CRDs, operators, Argo CD); runs first.
    Platform,
    Kubernetes,
    Database,
    Litellm,
    Vllm,
    E2e,
    /// Not a layer of the chain: the harness itself (kubeconfig, API server), for the one entry
    /// a run reports when nothing could be checked.
    Setup,
}

impl Layer {
    /// Whether checks of this layer talk to endpoints (LiteLLM, vLLM, the database), which may
    /// need port-forwards.
    pub fn reaches_endpoints(self) -> bool {
        matches!(
            self,
            Layer::Database | Layer::Litellm | Layer::Vllm | Layer::E2e
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Platform => "platform",
            Layer::Kubernetes => "kubernetes",
            Layer::Database => "database",
            Layer::Litellm => "litellm",
            Layer::Vllm => "vllm",
            Layer::E2e => "e2e",
            Layer::Setup => "setup",
        }
    }
}

/// What must hold before a check can say anything useful. The platform checks run first and
/// say which prerequisites do not hold ([`Failure::unmet`]); a check that requires one of those
/// is reported skipped with the reason, never as a cascade of failures.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Prerequisite {
    /// The namespace exists and is not Terminating.
    Namespace(String),
    /// The API server serves this resource (`clusters.postgresql.cnpg.io`).
    Crd(String),
    /// The named check passed (after its retries). When that check is part of the run, this
    /// one runs after it, and is skipped with its cause if it did not pass.
    Check(String),
}

pub type Probe = Arc<dyn Fn(Arc<Env>, Ctx) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// A named check, built from the suite alone (no network), so `--list` and filters need no
/// cluster.
pub struct Check {
    pub name: String,
    pub layer: Layer,
    pub requires: Vec<Prerequisite>,
    pub probe: Probe,
}

impl Check {
    pub fn new<F, Fut>(name: impl Into<String>, layer: Layer, probe: F) -> Check
    where
        F: Fn(Arc<Env>, Ctx) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Outcome> + Send + 'static,
    {
        Check {
            name: name.into(),
            layer,
            requires: Vec::new(),
            probe: Arc::new(move |env, ctx| Box::pin(probe(env, ctx))),
        }
    }

    pub fn requires(mut self, prerequisite: Prerequisite) -> Check {
        self.requires.push(prerequisite);
        self
    }
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

/// Checks with one instance per model alias (`e2e::chat::<alias>`). Aliases come from the
/// cluster (the proxy config), so these are built after the run has read it; `--list` shows
/// the pattern unless the suite names the aliases.
pub struct Family {
    /// The check name with `<alias>` where the alias goes.
    pub pattern: String,
    /// Builds the check for one alias, or `None` where it does not apply (no guardrail on it).
    pub build: FamilyBuild,
}

/// Builds a family's check for one alias (see [`Family::build`]).
pub type FamilyBuild = Arc<dyn Fn(&Env, &str) -> Option<Check> + Send + Sync>;

impl Family {
    pub fn new<F>(pattern: impl Into<String>, build: F) -> Family
    where
        F: Fn(&Env, &str) -> Option<Check> + Send + Sync + 'static,
    {
        Family {
            pattern: pattern.into(),
            build: Arc::new(build),
        }
    }

    pub fn name_for(&self, alias: &str) -> String {
        self.pattern.replace("<alias>", alias)
    }
}

/// Everything the suite describes: checks known up front, and per-alias families.
#[derive(Default)]
pub struct Catalog {
    pub checks: Vec<Check>,
    pub families: Vec<Family>,
}

/// Handed to a probe: lets it leave a trace of what it last saw, which the runner reports if
/// the probe runs out of time ("waiting for logs of pod x"), instead of a bare "timed out",
/// and tells it when the runner will give up on it, so limits it sets on servers (a
/// database session's statement timeout) end before it does.
#[derive(Clone, Default)]
pub struct Ctx {
    observed: Arc<Mutex<Option<String>>>,
    deadline: Option<tokio::time::Instant>,
}

impl Ctx {
    /// The context of an attempt the runner cuts at `deadline`.
    pub fn until(deadline: tokio::time::Instant) -> Ctx {
        Ctx {
            deadline: Some(deadline),
            ..Ctx::default()
        }
    }

    /// Time left before the runner gives up on this attempt; `None` outside a run.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }

    pub fn observe(&self, state: impl Into<String>) {
        if let Ok(mut slot) = self.observed.lock() {
            *slot = Some(state.into());
        }
    }

    pub fn last_observed(&self) -> Option<String> {
        self.observed.lock().ok().and_then(|s| s.clone())
    }
}

/// Numbers a check measured (counts, latencies), shown in every report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Metrics(BTreeMap<String, serde_json::Number>);

impl Metrics {
    pub fn count(&mut self, name: &str, value: u64) -> &mut Self {
        self.0.insert(name.to_string(), value.into());
        self
    }

    /// A duration in milliseconds, to a tenth; the name should end in `_ms`.
    pub fn millis(&mut self, name: &str, value: Duration) -> &mut Self {
        let ms = (value.as_secs_f64() * 10_000.0).round() / 10.0;
        if let Some(n) = serde_json::Number::from_f64(ms) {
            self.0.insert(name.to_string(), n);
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &serde_json::Number)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// The result of one attempt of a check.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed(Passed),
    Failed(Failure),
    /// Nothing to judge, with the reason (a prerequisite another check reports on failed).
    Skipped(String),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Passed {
    /// One line: what was seen ("2/2 pods ready").
    pub summary: String,
    /// Things worth knowing that are not failures (a stale SealedSecret, an absent Job).
    pub notes: Vec<String>,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub cause: Cause,
    /// One line: what is wrong.
    pub summary: String,
    /// The last observed state: container states, a redacted log tail, a server's answer.
    pub details: Option<String>,
    /// The fix, in the words of the runbook.
    pub hint: Option<String>,
    pub metrics: Metrics,
    /// Prerequisites this failure shows do not hold, each with the reason dependents report.
    pub unmet: Vec<(Prerequisite, String)>,
}

impl Outcome {
    pub fn pass(summary: impl Into<String>) -> Outcome {
        Outcome::Passed(Passed {
            summary: summary.into(),
            ..Passed::default()
        })
    }

    pub fn fail(cause: Cause, summary: impl Into<String>) -> Failure {
        Failure {
            cause,
            summary: summary.into(),
            details: None,
            hint: None,
            metrics: Metrics::default(),
            unmet: Vec::new(),
        }
    }
}

impl Passed {
    pub fn new(summary: impl Into<String>) -> Passed {
        Passed {
            summary: summary.into(),
            ..Passed::default()
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Passed {
        self.notes.push(note.into());
        self
    }
}

impl Failure {
    pub fn details(mut self, details: impl Into<String>) -> Failure {
        let d = details.into();
        if !d.trim().is_empty() {
            self.details = Some(d);
        }
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    /// Records that `prerequisite` does not hold, so checks needing it are skipped with `why`.
    pub fn unmet(mut self, prerequisite: Prerequisite, why: impl Into<String>) -> Failure {
        self.unmet.push((prerequisite, why.into()));
        self
    }
}

impl From<Failure> for Outcome {
    fn from(f: Failure) -> Outcome {
        Outcome::Failed(f)
    }
}

impl From<Passed> for Outcome {
    fn from(p: Passed) -> Outcome {
        Outcome::Passed(p)
    }
}

/// Why a check failed, as a stable machine code (JSON `cause`, JUnit failure `type`). Scripts
/// match on these: add codes, never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    // Harness and API-level causes.
    Timeout,
    Deadline,
    Interrupted,
    Panicked,
    Forbidden,
    Unauthorized,
    ApiUnreachable,
    ApiError,
    Setup,
    // Platform.
    NamespaceTerminating,
    OperatorUnavailable,
    AppOutOfSync,
    AppUnhealthy,
    AppSyncing,
    // Kubernetes objects.
    NamespaceMissing,
    NotFound,
    NoPods,
    CrashLoop,
    ImagePull,
    ContainerConfig,
    Unschedulable,
    NotReady,
    ServicePort,
    NoEndpoints,
    MissingKey,
    EmptyKey,
    KeyMismatch,
    JobFailed,
    JobRunning,
    ConfigInvalid,
    GuardrailNotDeclared,
    GuardrailNotEnabled,
    GuardrailNotMounted,
    GuardrailWrongPath,
    CrdMissing,
    CnpgUnhealthy,
    RwNotPrimary,
    // Database.
    DbDns,
    DbRefused,
    DbUnreachable,
    DbConnectTimeout,
    DbTls,
    DbTlsVerify,
    DbCaInvalid,
    DbAuth,
    DbAccessRejected,
    DbNotFound,
    DbTooManyConnections,
    DbStartingUp,
    DbError,
    DbReplica,
    DbReadOnly,
    MigrationsMissing,
    MigrationUnfinished,
    MigrationFailed,
    SchemaTableMissing,
    /// The server asked for the password in cleartext or as an MD5 hash, or did not bind the
    /// login to the TLS session where that is required: refused, nothing sent.
    InsecureAuth,
    /// What answers at the database port breaks PostgreSQL's protocol (HTTP, garbage) or its
    /// caps (a message over 1 MiB, a session over 8 MiB).
    DbProtocol,
    // LiteLLM, vLLM, end to end.
    /// No HTTP answer at all (connection refused, DNS, TLS).
    Unreachable,
    /// An HTTP status the check did not expect and no finer cause explains.
    HttpStatus,
    /// The proxy rejected the key we sent (master or chat key).
    ProxyAuth,
    /// Critical: the proxy answered 2xx to a request without a key or with a bogus one.
    ProxyOpen,
    /// vLLM rejected the key LiteLLM sends (`CA_VLLM_LOCAL_API_KEY`).
    UpstreamAuth,
    /// 429 all deployments in cooldown: a consequence of an earlier failure.
    Cooldown,
    /// LiteLLM could not connect to vLLM (500 Connection error).
    UpstreamUnreachable,
    /// vLLM (or LiteLLM's call to it) answered another error: 5xx, a timeout, a rate limit.
    UpstreamError,
    /// vLLM refused the prompt as too long: the trimming guardrail did not trim.
    ContextWindow,
    /// An exception inside the guardrail (500 from the proxy's own code).
    GuardrailCrashed,
    /// The proxy does not know the alias (400 Invalid model name).
    UnknownAlias,
    /// Readiness answered but its `db` field is not `connected`.
    DbDisconnected,
    /// An expected alias is not in the proxy's `/v1/models`.
    AliasMissing,
    /// vLLM does not serve the model an alias routes to.
    ModelNotServed,
    /// A 2xx whose body is not what the API promises (no content, no usage, not JSON).
    BadResponse,
    /// A stream that ended without content or without `[DONE]`.
    StreamIncomplete,
    /// The trimming control: vLLM accepted the prompt meant to be over its context window.
    NotOversized,
    /// The context window is unknown: vLLM's `/v1/models` unreadable and no suite value.
    ContextUnknown,
    /// A config `api_base` that is not one of the suite's vLLM services.
    ApiBaseOutsideSuite,
    /// An answer over its cap (bytes, a stream's line, event, content or event count): read
    /// up to the cap, then dropped, never judged half-read.
    BodyTooLarge,
}

impl Cause {
    pub fn code(self) -> &'static str {
        match self {
            Cause::Timeout => "timeout",
            Cause::Deadline => "deadline",
            Cause::Interrupted => "interrupted",
            Cause::Panicked => "panicked",
            Cause::Forbidden => "forbidden",
            Cause::Unauthorized => "unauthorized",
            Cause::ApiUnreachable => "api_unreachable",
            Cause::ApiError => "api_error",
            Cause::Setup => "setup",
            Cause::NamespaceTerminating => "namespace_terminating",
            Cause::OperatorUnavailable => "operator_unavailable",
            Cause::AppOutOfSync => "app_out_of_sync",
            Cause::AppUnhealthy => "app_unhealthy",
            Cause::AppSyncing => "app_syncing",
            Cause::NamespaceMissing => "namespace_missing",
            Cause::NotFound => "not_found",
            Cause::NoPods => "no_pods",
            Cause::CrashLoop => "crash_loop",
            Cause::ImagePull => "image_pull",
            Cause::ContainerConfig => "container_config",
            Cause::Unschedulable => "unschedulable",
            Cause::NotReady => "not_ready",
            Cause::ServicePort => "service_port",
            Cause::NoEndpoints => "no_endpoints",
            Cause::MissingKey => "missing_key",
            Cause::EmptyKey => "empty_key",
            Cause::KeyMismatch => "key_mismatch",
            Cause::JobFailed => "job_failed",
            Cause::JobRunning => "job_running",
            Cause::ConfigInvalid => "config_invalid",
            Cause::GuardrailNotDeclared => "guardrail_not_declared",
            Cause::GuardrailNotEnabled => "guardrail_not_enabled",
            Cause::GuardrailNotMounted => "guardrail_not_mounted",
            Cause::GuardrailWrongPath => "guardrail_wrong_path",
            Cause::CrdMissing => "crd_missing",
            Cause::CnpgUnhealthy => "cnpg_unhealthy",
            Cause::RwNotPrimary => "rw_not_primary",
            Cause::DbDns => "db_dns",
            Cause::DbRefused => "db_refused",
            Cause::DbUnreachable => "db_unreachable",
            Cause::DbConnectTimeout => "db_connect_timeout",
            Cause::DbTls => "db_tls",
            Cause::DbTlsVerify => "db_tls_verify",
            Cause::DbCaInvalid => "db_ca_invalid",
            Cause::DbAuth => "db_auth",
            Cause::DbAccessRejected => "db_access_rejected",
            Cause::DbNotFound => "db_not_found",
            Cause::DbTooManyConnections => "db_too_many_connections",
            Cause::DbStartingUp => "db_starting_up",
            Cause::DbError => "db_error",
            Cause::DbReplica => "db_replica",
            Cause::DbReadOnly => "db_read_only",
            Cause::MigrationsMissing => "migrations_missing",
            Cause::MigrationUnfinished => "migration_unfinished",
            Cause::MigrationFailed => "migration_failed",
            Cause::SchemaTableMissing => "schema_table_missing",
            Cause::InsecureAuth => "insecure_auth",
            Cause::DbProtocol => "db_protocol",
            Cause::Unreachable => "unreachable",
            Cause::HttpStatus => "http_status",
            Cause::ProxyAuth => "proxy_auth",
            Cause::ProxyOpen => "proxy_open",
            Cause::UpstreamAuth => "upstream_auth",
            Cause::Cooldown => "cooldown",
            Cause::UpstreamUnreachable => "upstream_unreachable",
            Cause::UpstreamError => "upstream_error",
            Cause::ContextWindow => "context_window",
            Cause::GuardrailCrashed => "guardrail_crashed",
            Cause::UnknownAlias => "unknown_alias",
            Cause::DbDisconnected => "db_disconnected",
            Cause::AliasMissing => "alias_missing",
            Cause::ModelNotServed => "model_not_served",
            Cause::BadResponse => "bad_response",
            Cause::StreamIncomplete => "stream_incomplete",
            Cause::NotOversized => "not_oversized",
            Cause::ContextUnknown => "context_unknown",
            Cause::ApiBaseOutsideSuite => "api_base_outside_suite",
            Cause::BodyTooLarge => "body_too_large",
        }
    }

    /// A cause that only follows from an earlier failure (a timeout while retrying, a cooldown
    /// after a 401): when retries end in one of these, the earlier, primary cause is reported.
    pub fn is_consequence(self) -> bool {
        matches!(
            self,
            Cause::Timeout | Cause::Deadline | Cause::Interrupted | Cause::Cooldown
        )
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Cause {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}
