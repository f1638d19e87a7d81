//! The command line, in two stages: clap structs hold what the user typed; [`Plan`] holds the
//! validated values the run is built from, before any network call. Every bad value becomes a
//! one-line error that names the flag (or the suite file, line and field).

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cluster::KubeSelection;
use crate::runner::Selection;
use crate::suite::{self, Suite, SuiteError};

/// Proves a LiteLLM deployment on Kubernetes really works: from pods and secrets to the
/// database, vLLM and the trimming guardrail.
#[derive(Debug, Parser)]
#[command(name = "smokecheck", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the deployment described by a suite. Exit 0: all passed; 1: a check failed; 2: usage,
    /// suite or kubeconfig error, or a filter that matches no check.
    Verify(Box<VerifyArgs>),
    /// Print the least-privilege RBAC manifests (ServiceAccount, Roles, ClusterRole, bindings)
    /// that `verify` needs for a suite.
    Rbac(RbacArgs),
    /// Print the JSON Schema of the suite file format (for editors and CI linting).
    Schema,
}

#[derive(Debug, Args)]
pub struct RbacArgs {
    /// The suite file [default: the built-in suites/litellm.yaml].
    #[arg(long, value_name = "FILE", env = "SMOKECHECK_SUITE")]
    pub suite: Option<PathBuf>,
    /// Override the suite's namespace.
    #[arg(short = 'n', long, value_name = "NS", env = "SMOKECHECK_NAMESPACE")]
    pub namespace: Option<String>,
}

impl RbacArgs {
    pub fn suite(&self) -> Result<Suite, PlanError> {
        load_suite(self.suite.as_deref(), self.namespace.as_deref())
    }
}

/// The suite from `--suite` (or the built-in one), with `--namespace` applied.
fn load_suite(path: Option<&std::path::Path>, namespace: Option<&str>) -> Result<Suite, PlanError> {
    let mut suite = match path {
        Some(path) => suite::read(path)?,
        None => suite::parse(BUILTIN_SUITE, "<built-in suites/litellm.yaml>")?,
    };
    if let Some(ns) = namespace {
        if ns.is_empty()
            || !ns
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(flag(
                "--namespace",
                format!("{ns:?} is not a valid namespace name"),
            ));
        }
        suite.namespace = ns.to_string();
    }
    Ok(suite)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Colours and a live progress bar on a terminal.
    Pretty,
    /// The same lines without colours or progress bar (logs, CI).
    Plain,
    /// One JSON document on stdout.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConnectMode {
    /// Direct where cluster DNS resolves, else through port-forwards.
    Auto,
    Direct,
    PortForward,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Run only checks whose name contains one of these (as `cargo test`).
    #[arg(value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Filters must equal the whole check name.
    #[arg(long)]
    pub exact: bool,
    /// Leave out checks whose name contains PATTERN (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub skip: Vec<String>,
    /// Print the names of the selected checks and exit, without touching the network.
    #[arg(long)]
    pub list: bool,
    /// The suite file [default: the built-in suites/litellm.yaml].
    #[arg(long, value_name = "FILE", env = "SMOKECHECK_SUITE")]
    pub suite: Option<PathBuf>,
    /// Override the suite's namespace.
    #[arg(short = 'n', long, value_name = "NS", env = "SMOKECHECK_NAMESPACE")]
    pub namespace: Option<String>,
    /// Path to the kubeconfig file (as kubectl; KUBECONFIG is honoured too).
    #[arg(long, value_name = "PATH", env = "SMOKECHECK_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME", env = "SMOKECHECK_CONTEXT")]
    pub context: Option<String>,
    /// Reach suite endpoint NAME (litellm, database, vllm or vllm:<ns>/<service>) at URL.
    #[arg(
        long = "endpoint",
        value_name = "NAME=URL",
        env = "SMOKECHECK_ENDPOINT",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Write a JUnit XML report to PATH.
    #[arg(long, value_name = "PATH", env = "SMOKECHECK_JUNIT")]
    pub junit: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Pretty, env = "SMOKECHECK_FORMAT")]
    pub format: Format,
    /// When to use colours (NO_COLOR is honoured by auto).
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, env = "SMOKECHECK_COLOR")]
    pub color: ColorChoice,
    /// Time limit of one check attempt.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30s",
        env = "SMOKECHECK_TIMEOUT"
    )]
    pub timeout: String,
    /// Time limit of the whole run; checks still running then fail, and reports are written.
    #[arg(long, value_name = "DURATION", env = "SMOKECHECK_DEADLINE")]
    pub deadline: Option<String>,
    /// Retry failing checks with backoff until they pass or DURATION has elapsed.
    #[arg(long, value_name = "DURATION", env = "SMOKECHECK_WAIT")]
    pub wait: Option<String>,
    /// How many checks run at once.
    #[arg(long, value_name = "N", env = "SMOKECHECK_TEST_THREADS")]
    pub test_threads: Option<NonZeroUsize>,
    /// How endpoints inside the cluster are reached.
    #[arg(long, value_enum, default_value_t = ConnectMode::Auto, env = "SMOKECHECK_CONNECT")]
    pub connect: ConnectMode,
    /// Run as the PostSync hook of this Argo CD Application (NAMESPACE/NAME): plain logs, a
    /// termination message, and never waiting on that Application's own sync.
    #[arg(long, value_name = "NS/NAME", env = "SMOKECHECK_ARGOCD_APP")]
    pub argocd_app: Option<String>,
    /// Where the one-line outcome goes for `kubectl get pod` and Argo CD [default in hook mode:
    /// /dev/termination-log].
    #[arg(long, value_name = "PATH", env = "SMOKECHECK_TERMINATION_LOG")]
    pub termination_log: Option<PathBuf>,
    /// The hook Job's activeDeadlineSeconds: the run's deadline is set below it, so reports and
    /// the termination message are written before Kubernetes kills the pod.
    #[arg(long, value_name = "DURATION", env = "SMOKECHECK_JOB_ACTIVE_DEADLINE")]
    pub job_active_deadline: Option<String>,
}

/// A usage or configuration error: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Suite(#[from] SuiteError),
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
}

fn flag(flag: &'static str, message: impl Into<String>) -> PlanError {
    PlanError::Flag {
        flag,
        message: message.into(),
    }
}

/// A suite endpoint the user can point elsewhere with `--endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum EndpointName {
    Litellm,
    Database,
    /// The one vLLM backend, or one of several by namespace and service.
    Vllm(Option<(String, String)>),
}

impl std::fmt::Display for EndpointName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointName::Litellm => f.write_str("litellm"),
            EndpointName::Database => f.write_str("database"),
            EndpointName::Vllm(None) => f.write_str("vllm"),
            EndpointName::Vllm(Some((ns, svc))) => write!(f, "vllm:{ns}/{svc}"),
        }
    }
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

/// Running as an Argo CD PostSync hook, as the Job's manifest says (never inferred).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub app_namespace: String,
    pub app_name: String,
}

/// The default termination message path of a container.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// How much earlier than the Job's activeDeadlineSeconds the run stops: enough to write the
/// reports and the termination message.
fn hook_margin(job: Duration) -> Duration {
    (job / 10).max(Duration::from_secs(10)).min(job / 2)
}

/// Everything a run needs, validated.
#[derive(Debug)]
pub struct Plan {
    pub suite: Suite,
    pub selection: Selection,
    pub list: bool,
    pub kube: KubeSelection,
    pub endpoints: BTreeMap<EndpointName, http::Uri>,
    pub output: Output,
    pub timeout: Duration,
    pub deadline: Option<Duration>,
    pub wait: Option<Duration>,
    pub threads: Option<usize>,
    pub connect: ConnectMode,
    pub hook: Option<Hook>,
}

/// The built-in default suite, so the binary works from any directory (and in the image).
pub const BUILTIN_SUITE: &str = include_str!("../suites/litellm.yaml");

impl VerifyArgs {
    /// How output is rendered, decided before anything else can fail, so even a bad suite
    /// still gets its JUnit/JSON error entry.
    pub fn output(&self) -> Output {
        use std::io::IsTerminal;
        let tty = std::io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        // A hook logs plain text: no colours, no progress bars, whatever the pod's stdout is.
        let hook = self.argocd_app.is_some();
        let color = match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && !no_color && !hook && self.format == Format::Pretty,
        };
        let termination_log = self
            .termination_log
            .clone()
            .or_else(|| hook.then(|| PathBuf::from(TERMINATION_LOG)));
        Output {
            format: self.format,
            color,
            progress_bar: tty && !hook && self.format == Format::Pretty && !self.list,
            junit: self.junit.clone(),
            termination_log,
        }
    }

    pub fn plan(self) -> Result<Plan, PlanError> {
        let output = self.output();
        let suite = load_suite(self.suite.as_deref(), self.namespace.as_deref())?;
        let timeout = duration("--timeout", &self.timeout, MAX_TIMEOUT)?;
        let mut deadline = self
            .deadline
            .as_deref()
            .map(|d| duration("--deadline", d, MAX_RUN))
            .transpose()?;
        if let Some(job) = &self.job_active_deadline {
            let job = duration("--job-active-deadline", job, MAX_RUN)?;
            let latest = job - hook_margin(job);
            match deadline {
                Some(d) if d > latest => {
                    return Err(flag(
                        "--deadline",
                        format!(
                            "{} leaves no time to write the reports before the Job's activeDeadlineSeconds ({}): use at most {}",
                            humantime::format_duration(d),
                            humantime::format_duration(job),
                            humantime::format_duration(latest)
                        ),
                    ));
                }
                Some(_) => {}
                None => deadline = Some(latest),
            }
        }
        let hook = self
            .argocd_app
            .as_deref()
            .map(|app| match app.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                    Ok(Hook {
                        app_namespace: ns.to_string(),
                        app_name: name.to_string(),
                    })
                }
                _ => Err(flag(
                    "--argocd-app",
                    format!("{app:?} is not NAMESPACE/NAME (e.g. argocd/litellm)"),
                )),
            })
            .transpose()?;
        let wait = self
            .wait
            .as_deref()
            .map(|d| duration("--wait", d, MAX_RUN))
            .transpose()?;
        let mut endpoints = BTreeMap::new();
        for spec in self.endpoints.iter().filter(|e| !e.trim().is_empty()) {
            let (name, uri) = endpoint(spec, &suite)?;
            if endpoints.insert(name.clone(), uri).is_some() {
                return Err(flag("--endpoint", format!("{name} is given twice")));
            }
        }
        Ok(Plan {
            suite,
            selection: Selection {
                filters: self.filters,
                exact: self.exact,
                skip: self.skip,
            },
            list: self.list,
            kube: KubeSelection {
                kubeconfig: self.kubeconfig,
                context: self.context,
            },
            endpoints,
            output,
            timeout,
            deadline,
            wait,
            threads: self.test_threads.map(NonZeroUsize::get),
            connect: self.connect,
            hook,
        })
    }
}

/// The longest `--timeout`: one check attempt waiting a day is already a hang.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest `--wait`, `--deadline` and `--job-active-deadline`. Bounded so that every
/// `Instant + Duration` and timer built from them stays far from overflow (a panic, exit 101).
const MAX_RUN: Duration = Duration::from_secs(7 * 24 * 60 * 60);

fn duration(name: &'static str, text: &str, max: Duration) -> Result<Duration, PlanError> {
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
                        "unknown endpoint {other:?} (expected litellm, database, vllm or vllm:<namespace>/<service>)"
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
        suite::parse(BUILTIN_SUITE, "builtin").expect("built-in suite parses")
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
