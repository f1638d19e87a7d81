//! The validated plan a run is built from: which suite, which checks, which cluster, how
//! endpoints are reached and how the output is rendered, checked before any network call.
//! Every bad value becomes a one-line error that names the flag (or the suite file, line and
//! field). [`crate::cli`] builds a plan from what the user typed; anything else (a test, a
//! fleet of clusters) can build one directly.
//!
//! Architecture invariant: a plan is data. This module never imports the command line, nor
//! anything that runs (checks, clients, runner, reporters). What a run reads from the process
//! environment is read into the plan once, except kubectl's own variables (`KUBECONFIG`,
//! `KUBERNETES_SERVICE_HOST`), which the cluster client reads when it connects without an
//! explicit kubeconfig, as kubectl does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libtest_mimic::{Arguments, Trial};

use crate::suite::{self, Suite, SuiteError};

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub suite: Suite,
    pub selection: Selection,
    /// `--list`: name the selected checks, run none.
    pub list: bool,
    pub kube: KubeSelection,
    pub endpoints: BTreeMap<EndpointName, http::Uri>,
    pub output: Output,
    pub timeout: Duration,
    pub deadline: Option<Duration>,
    pub wait: Option<Duration>,
    pub threads: Option<usize>,
    /// `--every-alias`: every alias's end-to-end checks, not one alias's per deployment.
    pub every_alias: bool,
    pub connect: ConnectMode,
    pub hook: Option<Hook>,
    /// Running in a pod (`KUBERNETES_SERVICE_HOST` is set): in-cluster names resolve, so
    /// `--connect auto` never port-forwards.
    pub in_cluster: bool,
    /// The environment's HTTP proxies, for the LiteLLM and vLLM clients.
    pub proxies: Proxies,
}

/// Which cluster to talk to, as the user said it (kubectl's flags).
#[derive(Debug, Clone, Default)]
pub struct KubeSelection {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// Which checks the user selected, with cargo test's semantics: a check runs when any filter
/// is a substring of its name (equal to it with `exact`) and no skip pattern matches.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub filters: Vec<String>,
    pub exact: bool,
    pub skip: Vec<String>,
}

impl Selection {
    fn arguments(&self, filter: Option<&String>) -> Arguments {
        Arguments {
            filter: filter.cloned(),
            exact: self.exact,
            skip: self.skip.clone(),
            ..Arguments::default()
        }
    }

    pub fn selects(&self, name: &str) -> bool {
        // libtest-mimic's own matcher, so `--exact`/`--skip` mean exactly what they mean there.
        let probe = Trial::test(name, || Ok(()));
        if self.filters.is_empty() {
            return !self.arguments(None).is_filtered_out(&probe);
        }
        self.filters
            .iter()
            .any(|f| !self.arguments(Some(f)).is_filtered_out(&probe))
    }

    /// The selection in words: `the filter "pods" (--exact) with --skip secrets`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.filters.iter().map(|f| format!("{f:?}")).collect();
        if parts.is_empty() {
            parts.push("the suite".into());
        }
        let mut out = format!("the filter {}", parts.join(" or "));
        if self.exact {
            out.push_str(" (--exact)");
        }
        if !self.skip.is_empty() {
            out.push_str(&format!(" with --skip {}", self.skip.join(", ")));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Colours and a live progress bar on a terminal.
    Pretty,
    /// The same lines without colours or progress bar (logs, CI).
    Plain,
    /// One JSON document on stdout.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConnectMode {
    /// Direct where cluster DNS resolves, else through port-forwards.
    Auto,
    Direct,
    PortForward,
}

/// How the output is rendered.
#[derive(Debug, Clone)]
pub struct Output {
    pub format: Format,
    pub color: bool,
    pub progress_bar: bool,
    pub junit: Option<PathBuf>,
    /// Where the one-line outcome is written (the container's termination message).
    pub termination_log: Option<PathBuf>,
}

/// The default termination message path of a container.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// Running as an Argo CD PostSync hook, as the Job's manifest says (never inferred).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub app_namespace: String,
    pub app_name: String,
}

/// A suite endpoint the user can point elsewhere with `--endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum EndpointName {
    Litellm,
    Database,
    /// The one vLLM backend, or one of several by namespace and service.
    Vllm(Option<(String, String)>),
    /// The external route's host (`ingress:<host>`): reached at the URL's address, with the
    /// host kept for SNI and certificate verification.
    Ingress(String),
}

impl std::fmt::Display for EndpointName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointName::Litellm => f.write_str("litellm"),
            EndpointName::Database => f.write_str("database"),
            EndpointName::Vllm(None) => f.write_str("vllm"),
            EndpointName::Vllm(Some((ns, svc))) => write!(f, "vllm:{ns}/{svc}"),
            EndpointName::Ingress(host) => write!(f, "ingress:{host}"),
        }
    }
}

/// The environment's HTTP proxies (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`,
/// either case, as curl and reqwest read them); empty values are unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    pub https: Option<String>,
    pub http: Option<String>,
    pub all: Option<String>,
    pub no_proxy: Option<String>,
}

impl Proxies {
    /// The proxies this process's environment names.
    pub fn from_env() -> Proxies {
        let var = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        Proxies {
            https: var(["HTTPS_PROXY", "https_proxy"]),
            http: var(["HTTP_PROXY", "http_proxy"]),
            all: var(["ALL_PROXY", "all_proxy"]),
            no_proxy: var(["NO_PROXY", "no_proxy"]),
        }
    }
}

/// A usage or configuration error: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Suite(#[from] SuiteError),
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
}

/// The error of a bad value of `flag`.
pub fn flag(flag: &'static str, message: impl Into<String>) -> PlanError {
    PlanError::Flag {
        flag,
        message: message.into(),
    }
}

/// The suite at `path` (or the built-in one), with `namespace` (`--namespace`) applied.
pub fn load_suite(path: Option<&Path>, namespace: Option<&str>) -> Result<Suite, PlanError> {
    let mut suite = match path {
        Some(path) => suite::read(path)?,
        None => suite::parse(suite::BUILTIN_SUITE, "<built-in suites/litellm.yaml>")?,
    };
    if let Some(ns) = namespace {
        if !suite::valid_namespace(ns) {
            return Err(flag(
                "--namespace",
                format!("{ns:?} is not a valid namespace name"),
            ));
        }
        suite.namespace = ns.to_string();
    }
    Ok(suite)
}

/// The longest `--timeout`: one check attempt waiting a day is already a hang.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest `--wait`, `--deadline` and `--job-active-deadline`. Bounded so that every
/// `Instant + Duration` and timer built from them stays far from overflow (a panic, exit 101).
pub const MAX_RUN: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// A humantime duration given with flag `name`, longer than zero and at most `max`.
pub fn duration(name: &'static str, text: &str, max: Duration) -> Result<Duration, PlanError> {
    let d = humantime::parse_duration(text).map_err(|e| {
        flag(
            name,
            format!("{text:?} is not a duration ({e}); write e.g. 30s, 5m"),
        )
    })?;
    if d.is_zero() || d > max {
        return Err(flag(
            name,
            format!(
                "{text:?} is out of range: it must be longer than zero and at most {}",
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(d)
}

/// The shortest `serve --interval`: each run sends a few chats, and Prometheus scrapes every
/// 30 s at most as often.
pub const MIN_INTERVAL: Duration = Duration::from_secs(30);
/// The longest `serve --interval`: a day between checks is no longer monitoring.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// `serve --interval`, at least `min` ([`MIN_INTERVAL`] but in the test suite).
pub fn interval(text: &str, min: Duration) -> Result<Duration, PlanError> {
    let d = duration("--interval", text, MAX_INTERVAL)?;
    if d < min {
        return Err(flag(
            "--interval",
            format!(
                "{text:?} is too short: at least {} (each run sends chat requests)",
                humantime::format_duration(min)
            ),
        ));
    }
    Ok(d)
}

/// The deadline of each of serve's runs: `--deadline`, shorter than the interval, or 4/5 of
/// it, so a run always ends before the next is due.
pub fn run_deadline(deadline: Option<&str>, interval: Duration) -> Result<Duration, PlanError> {
    let Some(text) = deadline else {
        return Ok(interval * 4 / 5);
    };
    let d = duration("--deadline", text, MAX_RUN)?;
    if d >= interval {
        return Err(flag(
            "--deadline",
            format!(
                "{} is not shorter than --interval ({}): a run must end before the next is due",
                humantime::format_duration(d),
                humantime::format_duration(interval)
            ),
        ));
    }
    Ok(d)
}

/// `verify --pushgateway URL`: an http(s) URL with a host, without credentials, query or
/// fragment (the URL is printed when a push fails).
pub fn pushgateway(url: &str) -> Result<http::Uri, PlanError> {
    let bad = |why: &str| flag("--pushgateway", format!("{:?} {why}", shown(url)));
    let uri: http::Uri = url
        .parse()
        .map_err(|e| bad(&format!("is not a URL ({e})")))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(a)) if a.as_str().contains('@') => Err(flag(
            "--pushgateway",
            "the URL must not carry credentials (user:password@)",
        )),
        (Some("http" | "https"), Some(_)) if uri.query().is_some() || url.contains('#') => {
            Err(bad("must not have a query string or fragment"))
        }
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(bad("must be an http:// or https:// URL with a host")),
    }
}

/// How much earlier than the Job's activeDeadlineSeconds the run stops: enough to write the
/// reports and the termination message.
fn hook_margin(job: Duration) -> Duration {
    (job / 10).max(Duration::from_secs(10)).min(job / 2)
}

/// The run's deadline: `--deadline`, and in a hook Job (`--job-active-deadline`) a margin
/// before the Job's own, which a `--deadline` may not pass.
pub fn deadline(
    deadline: Option<&str>,
    job_active_deadline: Option<&str>,
) -> Result<Option<Duration>, PlanError> {
    let deadline = deadline
        .map(|d| duration("--deadline", d, MAX_RUN))
        .transpose()?;
    let Some(job) = job_active_deadline else {
        return Ok(deadline);
    };
    let job = duration("--job-active-deadline", job, MAX_RUN)?;
    let latest = job - hook_margin(job);
    match deadline {
        Some(d) if d > latest => Err(flag(
            "--deadline",
            format!(
                "{} leaves no time to write the reports before the Job's activeDeadlineSeconds ({}): use at most {}",
                humantime::format_duration(d),
                humantime::format_duration(job),
                humantime::format_duration(latest)
            ),
        )),
        Some(d) => Ok(Some(d)),
        None => Ok(Some(latest)),
    }
}

/// `--argocd-app NAMESPACE/NAME`.
pub fn hook(app: &str) -> Result<Hook, PlanError> {
    match app.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(Hook {
            app_namespace: ns.to_string(),
            app_name: name.to_string(),
        }),
        _ => Err(flag(
            "--argocd-app",
            format!("{app:?} is not NAMESPACE/NAME (e.g. argocd/litellm)"),
        )),
    }
}

/// Every `--endpoint NAME=URL` (blank ones ignored), each validated against the suite.
pub fn endpoints(
    specs: &[String],
    suite: &Suite,
) -> Result<BTreeMap<EndpointName, http::Uri>, PlanError> {
    let mut endpoints = BTreeMap::new();
    for spec in specs.iter().filter(|e| !e.trim().is_empty()) {
        let (name, uri) = endpoint(spec, suite)?;
        if endpoints.insert(name.clone(), uri).is_some() {
            return Err(flag("--endpoint", format!("{name} is given twice")));
        }
    }
    Ok(endpoints)
}

/// Parses `NAME=URL` against the suite's endpoints.
fn endpoint(spec: &str, suite: &Suite) -> Result<(EndpointName, http::Uri), PlanError> {
    let Some((name, url)) = spec.split_once('=') else {
        return Err(flag("--endpoint", format!("{spec:?} is not NAME=URL")));
    };
    let name = match name {
        "litellm" => EndpointName::Litellm,
        "database" if suite.database.is_some() => EndpointName::Database,
        "database" => {
            return Err(flag(
                "--endpoint",
                "the suite has no database (database: null)",
            ));
        }
        "vllm" => match suite.vllm.len() {
            1 => EndpointName::Vllm(None),
            0 => return Err(flag("--endpoint", "the suite names no vLLM backend")),
            _ => {
                return Err(flag(
                    "--endpoint",
                    "the suite names several vLLM backends: write vllm:<namespace>/<service>=URL",
                ));
            }
        },
        other if other.starts_with("ingress:") => {
            let host = &other["ingress:".len()..];
            if suite.litellm.ingress.is_none() {
                return Err(flag(
                    "--endpoint",
                    "the suite switches the ingress checks off (litellm.ingress: null)",
                ));
            }
            if host.is_empty()
                || !host.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
            {
                return Err(flag(
                    "--endpoint",
                    format!("{other:?}: ingress:<host> needs a DNS host name"),
                ));
            }
            EndpointName::Ingress(host.to_ascii_lowercase())
        }
        other => match other.strip_prefix("vllm:").and_then(|r| r.split_once('/')) {
            Some((ns, svc))
                if suite
                    .vllm
                    .iter()
                    .any(|v| v.namespace == ns && v.service.name == svc) =>
            {
                EndpointName::Vllm(Some((ns.to_string(), svc.to_string())))
            }
            Some((ns, svc)) => {
                return Err(flag(
                    "--endpoint",
                    format!("the suite names no vLLM service {ns}/{svc}"),
                ));
            }
            None => {
                return Err(flag(
                    "--endpoint",
                    format!(
                        "unknown endpoint {other:?} (expected litellm, database, vllm, vllm:<namespace>/<service> or ingress:<host>)"
                    ),
                ));
            }
        },
    };
    // Credentials come from the Secrets, never from the command line (where `ps` shows them),
    // and nothing of a refused URL is echoed: only its parts' names.
    refuse_credentials(&name, url)?;
    let uri: http::Uri = url.parse().map_err(|e| {
        flag(
            "--endpoint",
            format!("{name}: {:?} is not a URL ({e})", shown(url)),
        )
    })?;
    let allowed: &[&str] = match name {
        EndpointName::Database => &["postgresql", "postgres"],
        // The route is TLS: that is what it proves.
        EndpointName::Ingress(_) => &["https"],
        _ => &["http", "https"],
    };
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(_)) if allowed.contains(&scheme) => Ok((name, uri)),
        _ => Err(flag(
            "--endpoint",
            format!(
                "{name}: {:?} must be a {}:// URL with a host",
                shown(url),
                allowed[0]
            ),
        )),
    }
}

/// Query parameter names that carry a credential (compared lowercased, without `-` and `_`).
const CREDENTIAL_PARAMS: &[&str] = &[
    "token",
    "key",
    "apikey",
    "secret",
    "password",
    "passwd",
    "pwd",
    "pass",
    "auth",
    "credential",
    "signature",
    "sig",
    "session",
    "jwt",
    "bearer",
];

/// Refuses a URL that carries credentials (`user:pass@`, a credential-named query parameter,
/// a fragment, where OAuth puts tokens) or any other query string: smokecheck uses only the
/// scheme, host, port and path, and a base URL with a query would be glued to every API path.
fn refuse_credentials(name: &EndpointName, url: &str) -> Result<(), PlanError> {
    let carries = |what: &str| {
        flag(
            "--endpoint",
            format!(
                "{name}: the URL must not carry credentials ({what}): smokecheck reads them from the suite's Secrets"
            ),
        )
    };
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    if base
        .split_once("://")
        .map_or(base, |(_, rest)| rest)
        .split('/')
        .next()
        .is_some_and(|authority| authority.contains('@'))
    {
        return Err(carries("user:password@"));
    }
    if fragment.is_some() {
        return Err(carries("a #fragment"));
    }
    let Some(query) = query else { return Ok(()) };
    for param in query.split(['&', ';']) {
        let key: String = param
            .split('=')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | '.'))
            .collect::<String>()
            .to_ascii_lowercase();
        if CREDENTIAL_PARAMS.iter().any(|c| key.contains(c)) {
            return Err(carries("a query parameter that names one"));
        }
    }
    Err(flag(
        "--endpoint",
        format!(
            "{name}: the URL must not have a query string or fragment: smokecheck uses only its scheme, host, port and path"
        ),
    ))
}

/// A URL as an error may show it: without query, fragment or user info.
fn shown(url: &str) -> String {
    let base = url.split(['?', '#']).next().unwrap_or_default();
    match base.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            format!("{scheme}://{host}")
        }
        None => base.rsplit_once('@').map_or(base, |(_, h)| h).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite() -> Suite {
        suite::parse(suite::BUILTIN_SUITE, "builtin").expect("built-in suite parses")
    }

    fn sel(filters: &[&str], exact: bool, skip: &[&str]) -> Selection {
        Selection {
            filters: filters.iter().map(|s| s.to_string()).collect(),
            exact,
            skip: skip.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn filters_match_substrings_like_cargo_test() {
        let s = sel(&["pods"], false, &[]);
        assert!(s.selects("kubernetes::pods::litellm"));
        assert!(!s.selects("kubernetes::services::litellm"));
    }

    #[test]
    fn any_of_several_filters_selects() {
        let s = sel(&["pods", "jobs"], false, &[]);
        assert!(s.selects("kubernetes::jobs::litellm-migrations"));
        assert!(s.selects("kubernetes::pods::database"));
        assert!(!s.selects("kubernetes::secrets::litellm-secrets"));
    }

    #[test]
    fn exact_needs_the_whole_name() {
        let s = sel(&["kubernetes::pods::litellm"], true, &[]);
        assert!(s.selects("kubernetes::pods::litellm"));
        assert!(!s.selects("kubernetes::pods::litellm-extra"));
    }

    #[test]
    fn skip_removes_matches() {
        let s = sel(&[], false, &["secrets"]);
        assert!(s.selects("kubernetes::pods::litellm"));
        assert!(!s.selects("kubernetes::secrets::litellm-secrets"));
    }

    #[test]
    fn endpoints_are_validated_against_the_suite() {
        let s = suite();
        assert_eq!(
            endpoint("litellm=http://127.0.0.1:4000", &s).unwrap().0,
            EndpointName::Litellm
        );
        assert_eq!(
            endpoint("vllm=http://127.0.0.1:8000", &s).unwrap().0,
            EndpointName::Vllm(None)
        );
        assert!(endpoint("database=postgresql://127.0.0.1:5432", &s).is_ok());
        let err = endpoint("lite=http://x", &s).unwrap_err().to_string();
        assert!(
            err.starts_with("--endpoint: unknown endpoint \"lite\""),
            "{err}"
        );
        let err = endpoint("database=http://x:1", &s).unwrap_err().to_string();
        assert!(err.contains("postgresql://"), "{err}");
        let err = endpoint("litellm", &s).unwrap_err().to_string();
        assert!(err.contains("NAME=URL"), "{err}");
    }

    #[test]
    fn hook_deadline_stays_below_the_jobs() {
        assert_eq!(
            hook_margin(Duration::from_secs(600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            hook_margin(Duration::from_secs(60)),
            Duration::from_secs(10)
        );
        assert_eq!(hook_margin(Duration::from_secs(8)), Duration::from_secs(4));
    }

    #[test]
    fn durations_name_the_flag() {
        let err = duration("--timeout", "5 parsecs", MAX_TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--timeout: \"5 parsecs\" is not a duration"),
            "{err}"
        );
        assert!(duration("--wait", "0s", MAX_RUN).is_err());
        assert_eq!(
            duration("--wait", "90s", MAX_RUN).unwrap(),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn durations_past_their_range_are_refused_with_the_range() {
        let err = duration("--timeout", "18446744073709551615s", MAX_TIMEOUT)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--timeout: \"18446744073709551615s\" is out of range: it must be longer than zero and at most 1day"
        );
        assert!(duration("--timeout", "24h", MAX_TIMEOUT).is_ok());
        assert!(duration("--deadline", "7days", MAX_RUN).is_ok());
        let err = duration("--wait", "7days 1s", MAX_RUN)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("at most 7days"), "{err}");
    }

    #[test]
    fn endpoint_credentials_are_refused_by_name_never_echoed() {
        let s = suite();
        for url in [
            "http://u:hunter2@127.0.0.1:4000",
            "http://127.0.0.1:4000/?token=hunter2",
            "http://127.0.0.1:4000/v1?X-Api-Key=hunter2",
            "http://127.0.0.1:4000/v1?a=1&access_token=hunter2",
            "http://127.0.0.1:4000/#id_token=hunter2",
            "http://127.0.0.1:4000/?sig=hunter2",
        ] {
            let err = endpoint(&format!("litellm={url}"), &s)
                .unwrap_err()
                .to_string();
            assert!(err.contains("must not carry credentials"), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
        let err = endpoint("litellm=http://127.0.0.1:4000/?region=eu", &s)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must not have a query string"), "{err}");
        let err = endpoint("litellm=ht tp://u:p@x/?q#f", &s)
            .unwrap_err()
            .to_string();
        assert!(!err.contains(":p@"), "{err}");
        assert_eq!(shown("http://u:p@host:1/x?token=t#f"), "http://host:1/x");
    }
}
