//! The result model: what a probe finds ([`ProbeResult`]), what a check ends with
//! ([`CheckResult`]) and what a run ends with ([`RunReport`]), with the stable codes scripts
//! match on ([`Cause`], [`Layer`]). Checks produce it, the runner collects it, reporters read it.
//!
//! A leaf: it imports nothing of the crate, so every other module can depend on it and it on
//! none of them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// The part of the chain a check belongs to; one JUnit testsuite each.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[strum(serialize_all = "lowercase")]
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

    /// The layer's name in reports (`kubernetes`, `e2e`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl Serialize for Layer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

/// Why a check failed, as a stable machine code (JSON `cause`, JUnit failure `type`): the
/// variant's name in snake_case. Scripts match on these: add codes, never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
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
    // The way users come in: the Ingress route and its certificate.
    /// The route's host does not resolve (the `--endpoint ingress:<host>=URL` address).
    Dns,
    /// The route's certificate (served, or in its TLS Secret) has expired.
    TlsExpired,
    /// The route's certificate expires within the suite's failure threshold.
    TlsExpiring,
    /// The route's certificate does not name the host users ask for.
    TlsNameMismatch,
    /// The served certificate does not chain to a trusted root (self-signed, Traefik's
    /// default, a private CA the client does not know).
    TlsUntrusted,
    /// The route answers, but not as LiteLLM (Traefik's 404, another Service), or routes to a
    /// Service that is not the proxy.
    WrongBackend,
    /// The route's ingress class does not exist: no controller serves it.
    IngressClassMissing,
    /// Traefik's TLS annotations and the route's TLS section disagree.
    IngressTlsMismatch,
    /// A TLS Secret that is not `kubernetes.io/tls` or holds no readable certificate.
    TlsSecretInvalid,
}

impl Cause {
    /// The stable code (`crash_loop`, `key_mismatch`).
    pub fn code(self) -> &'static str {
        self.into()
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

/// What one attempt of a probe found: a [`Verdict`], or the [`Failure`] it saw. Probes build
/// it with `?`: every step that can fail returns its failure early.
pub type ProbeResult = Result<Verdict, Failure>;

/// A probe that did not fail: it passed, or found nothing to judge.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Passed(Passed),
    /// Nothing to judge, with the reason (a prerequisite another check reports on failed).
    Skipped(String),
}

impl Verdict {
    pub fn pass(summary: impl Into<String>) -> Verdict {
        Verdict::Passed(Passed::new(summary))
    }

    pub fn skip(reason: impl Into<String>) -> Verdict {
        Verdict::Skipped(reason.into())
    }
}

impl From<Passed> for Verdict {
    fn from(p: Passed) -> Verdict {
        Verdict::Passed(p)
    }
}

/// A state that is not a failure yet but will become one (a certificate expiring in ten days,
/// a SealedSecret the controller can no longer decrypt): the check still passes, and every
/// report shows it. Server-influenced text: the runner redacts and bounds it like a summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// One line: what is about to go wrong.
    pub reason: String,
    /// The fix, naming the object and the field.
    pub hint: String,
}

impl Warning {
    pub fn new(reason: impl Into<String>, hint: impl Into<String>) -> Warning {
        Warning {
            reason: reason.into(),
            hint: hint.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Passed {
    /// One line: what was seen ("2/2 pods ready").
    pub summary: String,
    /// Things worth knowing that are not failures (a stale SealedSecret, an absent Job).
    pub notes: Vec<String>,
    /// States that will become failures if nobody acts.
    pub warnings: Vec<Warning>,
    pub metrics: Metrics,
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

    pub fn warn(mut self, warning: Warning) -> Passed {
        self.warnings.push(warning);
        self
    }
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

impl Failure {
    pub fn new(cause: Cause, summary: impl Into<String>) -> Failure {
        Failure {
            cause,
            summary: summary.into(),
            details: None,
            hint: None,
            metrics: Metrics::default(),
            unmet: Vec::new(),
        }
    }

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

    /// The failure with `metrics` (what the probe measured before it failed).
    pub fn metrics(mut self, metrics: Metrics) -> Failure {
        self.metrics = metrics;
        self
    }

    /// Records that `prerequisite` does not hold, so checks needing it are skipped with `why`.
    pub fn unmet(mut self, prerequisite: Prerequisite, why: impl Into<String>) -> Failure {
        self.unmet.push((prerequisite, why.into()));
        self
    }
}

/// One check's result, as every reporter sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub name: String,
    pub layer: Layer,
    pub status: Status,
    /// When it started (or was found skipped), from the run's start: the run's timeline.
    pub started: Duration,
    pub duration: Duration,
    pub attempts: u32,
    pub cause: Option<Cause>,
    pub summary: String,
    pub details: Option<String>,
    pub hint: Option<String>,
    pub skip_reason: Option<String>,
    pub metrics: Metrics,
    /// Summaries of attempts that failed before the last one (a passed check with some is
    /// flaky).
    pub failed_attempts: Vec<String>,
    /// What a passed check found that will become a failure (empty otherwise).
    pub warnings: Vec<Warning>,
}

impl CheckResult {
    pub fn skipped(name: &str, layer: Layer, reason: String) -> CheckResult {
        CheckResult {
            name: name.to_string(),
            layer,
            status: Status::Skipped,
            started: Duration::ZERO,
            duration: Duration::ZERO,
            attempts: 0,
            cause: None,
            summary: String::new(),
            details: None,
            hint: None,
            skip_reason: Some(reason),
            metrics: Metrics::default(),
            failed_attempts: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Passed, but with something that will become a failure.
    pub fn is_warned(&self) -> bool {
        self.status == Status::Passed && !self.warnings.is_empty()
    }

    pub fn is_flaky(&self) -> bool {
        self.status == Status::Passed && !self.failed_attempts.is_empty()
    }
}

/// The name of the one entry a run that could not start reports.
pub const SETUP_CHECK: &str = "smokecheck::setup";

/// A whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub context: Option<String>,
    pub namespace: String,
    /// The wall-clock time the run started, which each check's `started` is counted from.
    pub started_at: SystemTime,
    pub duration: Duration,
    pub checks: Vec<CheckResult>,
    /// Why nothing could be checked (exit code 2), if so.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Of the passed checks, those with warnings.
    pub warned: usize,
}

impl RunReport {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in &self.checks {
            match r.status {
                Status::Passed => {
                    c.passed += 1;
                    if r.is_warned() {
                        c.warned += 1;
                    }
                }
                Status::Failed => c.failed += 1,
                Status::Skipped => c.skipped += 1,
            }
        }
        c
    }

    /// The report of a run that could not start: one failed [`SETUP_CHECK`] entry saying why.
    /// `message` is shown as it is: the caller redacts it first (an argument or a plugin's
    /// output may hold a secret).
    pub fn setup_failure(
        context: Option<String>,
        namespace: String,
        cause: Cause,
        message: String,
    ) -> RunReport {
        let entry = CheckResult {
            name: SETUP_CHECK.into(),
            layer: Layer::Setup,
            status: Status::Failed,
            started: Duration::ZERO,
            duration: Duration::ZERO,
            attempts: 1,
            cause: Some(cause),
            summary: message.clone(),
            details: None,
            hint: None,
            skip_reason: None,
            metrics: Metrics::default(),
            failed_attempts: Vec::new(),
            warnings: Vec::new(),
        };
        RunReport {
            context,
            namespace,
            started_at: SystemTime::now(),
            duration: Duration::ZERO,
            checks: vec![entry],
            error: Some(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    /// Every cause code as scripts know it, in declaration order: the contract. A new cause is
    /// added here; none is ever renamed or removed.
    const CODES: [&str; 87] = [
        "timeout",
        "deadline",
        "interrupted",
        "panicked",
        "forbidden",
        "unauthorized",
        "api_unreachable",
        "api_error",
        "setup",
        "namespace_terminating",
        "operator_unavailable",
        "app_out_of_sync",
        "app_unhealthy",
        "app_syncing",
        "namespace_missing",
        "not_found",
        "no_pods",
        "crash_loop",
        "image_pull",
        "container_config",
        "unschedulable",
        "not_ready",
        "service_port",
        "no_endpoints",
        "missing_key",
        "empty_key",
        "key_mismatch",
        "job_failed",
        "job_running",
        "config_invalid",
        "guardrail_not_declared",
        "guardrail_not_enabled",
        "guardrail_not_mounted",
        "guardrail_wrong_path",
        "crd_missing",
        "cnpg_unhealthy",
        "rw_not_primary",
        "db_dns",
        "db_refused",
        "db_unreachable",
        "db_connect_timeout",
        "db_tls",
        "db_tls_verify",
        "db_ca_invalid",
        "db_auth",
        "db_access_rejected",
        "db_not_found",
        "db_too_many_connections",
        "db_starting_up",
        "db_error",
        "db_replica",
        "db_read_only",
        "migrations_missing",
        "migration_unfinished",
        "migration_failed",
        "schema_table_missing",
        "insecure_auth",
        "db_protocol",
        "unreachable",
        "http_status",
        "proxy_auth",
        "proxy_open",
        "upstream_auth",
        "cooldown",
        "upstream_unreachable",
        "upstream_error",
        "context_window",
        "guardrail_crashed",
        "unknown_alias",
        "db_disconnected",
        "alias_missing",
        "model_not_served",
        "bad_response",
        "stream_incomplete",
        "not_oversized",
        "context_unknown",
        "api_base_outside_suite",
        "body_too_large",
        "dns",
        "tls_expired",
        "tls_expiring",
        "tls_name_mismatch",
        "tls_untrusted",
        "wrong_backend",
        "ingress_class_missing",
        "ingress_tls_mismatch",
        "tls_secret_invalid",
    ];

    #[test]
    fn every_cause_keeps_its_code() {
        let codes: Vec<&str> = Cause::VARIANTS.iter().map(|c| c.code()).collect();
        assert_eq!(codes, CODES);
        for cause in Cause::VARIANTS {
            assert_eq!(
                serde_json::to_string(cause).expect("a code"),
                format!("\"{}\"", cause.code())
            );
            assert_eq!(cause.to_string(), cause.code());
        }
    }

    #[test]
    fn every_layer_keeps_its_name() {
        let names: Vec<&str> = Layer::VARIANTS.iter().map(|l| l.as_str()).collect();
        assert_eq!(
            names,
            [
                "platform",
                "kubernetes",
                "database",
                "litellm",
                "vllm",
                "e2e",
                "setup"
            ]
        );
        for layer in Layer::VARIANTS {
            assert_eq!(
                serde_json::to_string(layer).expect("a name"),
                format!("\"{}\"", layer.as_str())
            );
        }
    }
}
