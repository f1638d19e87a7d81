//! The command line, the first of two stages: clap structs hold what the user typed, and
//! [`VerifyArgs::plan`] turns them into the validated [`Plan`] the run is built from.
//!
//! Architecture invariant: the command line imports the plan and the suite, nothing that runs
//! (no checks, clients, runner, reporters or pipeline), so what the user typed is understood
//! before anything happens.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::fleet::{self, ClusterPlan, FleetPlan, FleetPlanError};
use crate::plan::{
    self, ConnectMode, Format, KubeSelection, MAX_TIMEOUT, Output, Plan, PlanError, Proxies,
    Selection, TERMINATION_LOG,
};
use crate::suite::Suite;

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
    /// Run the checks every --interval and serve the results on --listen: /metrics
    /// (Prometheus), /healthz, /readyz and /report.json. SIGTERM ends it with exit 0.
    Serve(Box<ServeArgs>),
    /// Print the JSON Schema of the suite file format, or of the fleet file format (for
    /// editors and CI linting).
    Schema(SchemaArgs),
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Which file format.
    #[arg(value_enum, default_value_t = SchemaOf::Suite)]
    pub of: SchemaOf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaOf {
    /// A suite file (suites/schema.json).
    Suite,
    /// A fleet file (suites/fleet.schema.json).
    Fleet,
}

/// Which suite: `--suite` and `--namespace`, as every command that reads one takes them.
#[derive(Debug, Args)]
pub struct SuiteArgs {
    /// The suite file [default: the built-in suites/litellm.yaml].
    #[arg(long, value_name = "FILE", env = "SMOKECHECK_SUITE")]
    pub suite: Option<PathBuf>,
    /// Override the suite's namespace.
    #[arg(short = 'n', long, value_name = "NS", env = "SMOKECHECK_NAMESPACE")]
    pub namespace: Option<String>,
}

impl SuiteArgs {
    pub fn load(&self) -> Result<Suite, PlanError> {
        plan::load_suite(self.suite.as_deref(), self.namespace.as_deref())
    }

    /// The namespace a report names when the suite could not be read: `-n`, else the
    /// built-in suite's.
    pub fn namespace_hint(&self) -> String {
        self.namespace.clone().unwrap_or_else(|| "litellm".into())
    }
}

#[derive(Debug, Args)]
pub struct RbacArgs {
    #[command(flatten)]
    pub suite: SuiteArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// What a run checks, where and how: the flags `verify` and `serve` share.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run only checks whose name contains one of these (as `cargo test`).
    #[arg(value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Filters must equal the whole check name.
    #[arg(long)]
    pub exact: bool,
    /// Leave out checks whose name contains PATTERN (repeatable), e.g. e2e::trimming.
    #[arg(long, value_name = "PATTERN")]
    pub skip: Vec<String>,
    #[command(flatten)]
    pub suite: SuiteArgs,
    /// Path to the kubeconfig file (as kubectl; KUBECONFIG is honoured too; in a pod, the
    /// ServiceAccount's in-cluster config).
    #[arg(long, value_name = "PATH", env = "SMOKECHECK_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Reach suite endpoint NAME (litellm, database, vllm or vllm:<ns>/<service>) at URL.
    #[arg(
        long = "endpoint",
        value_name = "NAME=URL",
        env = "SMOKECHECK_ENDPOINT",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Time limit of one check attempt.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30s",
        env = "SMOKECHECK_TIMEOUT"
    )]
    pub timeout: String,
    /// How many checks run at once.
    #[arg(long, value_name = "N", env = "SMOKECHECK_TEST_THREADS")]
    pub test_threads: Option<NonZeroUsize>,
    /// Chat through every alias; by default aliases that differ only in their name (the same
    /// litellm_params and model_info) are chatted through once, by the first of them.
    #[arg(long, env = "SMOKECHECK_EVERY_ALIAS")]
    pub every_alias: bool,
    /// How endpoints inside the cluster are reached.
    #[arg(long, value_enum, default_value_t = ConnectMode::Auto, env = "SMOKECHECK_CONNECT")]
    pub connect: ConnectMode,
}

impl RunArgs {
    /// The plan of a run of `suite` on the cluster `kube` selects, from these flags; what
    /// only one command has (a deadline, reports, a hook) is left for it to set.
    fn plan(&self, suite: Suite, kube: KubeSelection) -> Result<Plan, PlanError> {
        Ok(Plan {
            selection: Selection {
                filters: self.filters.clone(),
                exact: self.exact,
                skip: self.skip.clone(),
            },
            list: false,
            kube,
            endpoints: plan::endpoints(&self.endpoints, &suite)?,
            suite,
            output: Output {
                format: Format::Plain,
                color: false,
                progress_bar: false,
                junit: None,
                termination_log: None,
            },
            timeout: plan::duration("--timeout", &self.timeout, MAX_TIMEOUT)?,
            deadline: None,
            wait: None,
            threads: self.test_threads.map(NonZeroUsize::get),
            every_alias: self.every_alias,
            connect: self.connect,
            hook: None,
            in_cluster: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
            proxies: Proxies::from_env(),
        })
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Print the names of the selected checks and exit, without touching the network.
    #[arg(long)]
    pub list: bool,
    /// The kubeconfig context to use; given more than once, each context is checked at once
    /// with the same suite, in one report (a fleet run).
    #[arg(long, value_name = "NAME", env = "SMOKECHECK_CONTEXT")]
    pub context: Vec<String>,
    /// Check every cluster of this fleet file at once, in one report (README "Fleet runs").
    #[arg(long, value_name = "FILE", env = "SMOKECHECK_FLEET")]
    pub fleet: Option<PathBuf>,
    /// Check only this cluster of the fleet file (repeatable).
    #[arg(long = "cluster", value_name = "NAME")]
    pub cluster: Vec<String>,
    /// How many clusters of a fleet run are checked at once.
    #[arg(
        long = "clusters",
        value_name = "N",
        default_value = "8",
        env = "SMOKECHECK_CLUSTERS"
    )]
    pub clusters: NonZeroUsize,
    /// Write a JUnit XML report to PATH.
    #[arg(long, value_name = "PATH", env = "SMOKECHECK_JUNIT")]
    pub junit: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Pretty, env = "SMOKECHECK_FORMAT")]
    pub format: Format,
    /// When to use colours (NO_COLOR is honoured by auto).
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, env = "SMOKECHECK_COLOR")]
    pub color: ColorChoice,
    /// Time limit of the whole run; checks still running then fail, and reports are written.
    #[arg(long, value_name = "DURATION", env = "SMOKECHECK_DEADLINE")]
    pub deadline: Option<String>,
    /// Retry failing checks with backoff until they pass or DURATION has elapsed.
    #[arg(long, value_name = "DURATION", env = "SMOKECHECK_WAIT")]
    pub wait: Option<String>,
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
    /// Also push the run's metrics to the Prometheus Pushgateway at URL, grouped by job and
    /// instance (the kube context); a failed push is reported and leaves the exit code alone.
    #[arg(long, value_name = "URL", env = "SMOKECHECK_PUSHGATEWAY")]
    pub pushgateway: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME", env = "SMOKECHECK_CONTEXT")]
    pub context: Option<String>,
    /// Time between the starts of two runs (at least 30s), each start jittered by up to 10%.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5m",
        env = "SMOKECHECK_INTERVAL"
    )]
    pub interval: String,
    /// Time limit of one run, below the interval [default: 4/5 of it].
    #[arg(long, value_name = "DURATION", env = "SMOKECHECK_DEADLINE")]
    pub deadline: Option<String>,
    /// Where the HTTP endpoint listens.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:9090",
        env = "SMOKECHECK_LISTEN"
    )]
    pub listen: String,
}

/// What `serve` runs: the plan of every run, how often, and where it serves the results.
#[derive(Debug, Clone)]
pub struct ServePlan {
    pub plan: Plan,
    pub interval: Duration,
    pub listen: SocketAddr,
}

impl ServeArgs {
    /// The validated serve plan, or the first bad value, named.
    pub fn plan(self) -> Result<ServePlan, PlanError> {
        let suite = self.run.suite.load()?;
        let interval = plan::interval(&self.interval, min_interval())?;
        let deadline = plan::run_deadline(self.deadline.as_deref(), interval)?;
        let listen = self.listen.parse().map_err(|e| PlanError::Flag {
            flag: "--listen",
            message: format!(
                "{:?} is not ADDRESS:PORT ({e}); write e.g. 0.0.0.0:9090",
                self.listen
            ),
        })?;
        let kube = KubeSelection {
            kubeconfig: self.run.kubeconfig.clone(),
            context: self.context,
        };
        // serve's runs render nothing (the base plan's output): their results become metrics
        // and /report.json.
        let plan = Plan {
            deadline: Some(deadline),
            ..self.run.plan(suite, kube)?
        };
        Ok(ServePlan {
            plan,
            interval,
            listen,
        })
    }
}

/// The shortest `--interval`: [`plan::MIN_INTERVAL`]. Debug builds (the test suite's) honour
/// `SMOKECHECK_TEST_MIN_INTERVAL`, so a test sees a fault come and go in seconds; a release
/// build, the image's, never goes below 30 s.
fn min_interval() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(d) = std::env::var("SMOKECHECK_TEST_MIN_INTERVAL")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
    {
        return d;
    }
    plan::MIN_INTERVAL
}

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

    /// Whether this is a fleet run: `--fleet FILE`, or `--context` given more than once.
    pub fn is_fleet(&self) -> bool {
        self.fleet.is_some() || self.context.len() > 1
    }

    /// The validated plan, or the first bad value, named.
    pub fn plan(self) -> Result<Plan, PlanError> {
        let suite = self.run.suite.load()?;
        let kube = KubeSelection {
            kubeconfig: self.run.kubeconfig.clone(),
            context: self.context.first().cloned(),
        };
        if !self.cluster.is_empty() {
            return Err(plan::flag(
                "--cluster",
                "selects clusters of a --fleet file",
            ));
        }
        self.plan_for(suite, kube)
    }

    /// The validated plan of a fleet run: one plan per cluster of the `--fleet` file (those
    /// `--cluster` selects), or per `--context` with the suite of `--suite`/`--namespace`.
    pub fn fleet_plan(self) -> Result<FleetPlan, FleetPlanError> {
        // A hook gates one Application's sync on its own cluster, with one termination
        // message; a fleet is the view across clusters, each of which runs its own hook.
        for (given, name) in [
            (self.argocd_app.is_some(), "--argocd-app"),
            (self.termination_log.is_some(), "--termination-log"),
            (self.job_active_deadline.is_some(), "--job-active-deadline"),
        ] {
            if given {
                return Err(plan::flag(
                    name,
                    "is for the PostSync hook of one cluster, not a fleet run (each cluster runs its own hook)",
                )
                .into());
            }
        }
        // A URL reaches one cluster's Service, never every cluster's.
        if self.run.endpoints.iter().any(|e| !e.trim().is_empty()) {
            return Err(plan::flag(
                "--endpoint",
                "reaches one cluster's Service: a fleet run reaches each cluster's own",
            )
            .into());
        }
        let targets = match &self.fleet {
            Some(path) => {
                for (given, name) in [
                    (!self.context.is_empty(), "--context"),
                    (self.run.suite.suite.is_some(), "--suite"),
                    (self.run.suite.namespace.is_some(), "--namespace"),
                ] {
                    if given {
                        return Err(plan::flag(
                            name,
                            "is set per cluster in the --fleet file, not on the command line",
                        )
                        .into());
                    }
                }
                fleet::targets(path, &self.cluster, self.run.kubeconfig.as_deref())?
            }
            None => {
                if !self.cluster.is_empty() {
                    return Err(
                        plan::flag("--cluster", "selects clusters of a --fleet file").into(),
                    );
                }
                let suite = self.run.suite.load()?;
                let mut targets: Vec<fleet::Target> = Vec::new();
                for context in &self.context {
                    if targets.iter().any(|t| &t.name == context) {
                        return Err(
                            plan::flag("--context", format!("{context:?} is given twice")).into(),
                        );
                    }
                    targets.push(fleet::Target {
                        name: context.clone(),
                        suite: suite.clone(),
                        kube: KubeSelection {
                            kubeconfig: self.run.kubeconfig.clone(),
                            context: Some(context.clone()),
                        },
                    });
                }
                targets
            }
        };
        let concurrency = self.clusters.get();
        let clusters = targets
            .into_iter()
            .map(|t| {
                Ok(ClusterPlan {
                    name: t.name,
                    plan: self.plan_for(t.suite, t.kube)?,
                })
            })
            .collect::<Result<_, PlanError>>()?;
        Ok(FleetPlan {
            clusters,
            concurrency,
        })
    }

    /// The plan of one run of `suite` on the cluster `kube` selects, with every other flag.
    fn plan_for(&self, suite: Suite, kube: KubeSelection) -> Result<Plan, PlanError> {
        let base = self.run.plan(suite, kube)?;
        let deadline = plan::deadline(
            self.deadline.as_deref(),
            self.job_active_deadline.as_deref(),
        )?;
        let hook = self.argocd_app.as_deref().map(plan::hook).transpose()?;
        let wait = self
            .wait
            .as_deref()
            .map(|d| plan::duration("--wait", d, plan::MAX_RUN))
            .transpose()?;
        Ok(Plan {
            list: self.list,
            output: self.output(),
            deadline,
            wait,
            hook,
            ..base
        })
    }
}
