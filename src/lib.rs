//! smokecheck: proves a LiteLLM deployment on Kubernetes really works.
//!
//! Data flows one way: arguments → [`cli::Plan`] → [`check::Check`]s → [`runner`] → results →
//! [`report`]ers. Checks never print; reporters never do I/O beyond writing their output.

// A check's failure is a rich value (summary, details, hint, metrics), returned on the cold
// path; boxing it everywhere would only add noise.
#![allow(clippy::result_large_err)]

pub mod check;
pub mod checks;
pub mod cli;
pub mod cluster;
pub mod connect;
pub mod env;
pub mod http;
pub mod proxy_config;
pub mod rbac;
pub mod report;
pub mod runner;
pub mod secret;
pub mod suite;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::check::Cause;
use crate::cli::{Cli, Command, Format, Output, VerifyArgs};
use crate::report::terminal::{self, Styles, Terminal};
use crate::report::{Progress, RunReport, Silent};
use crate::runner::{RunOptions, Stop, Stopper};
use crate::secret::Redactor;

/// The exit codes, in one place (the CLI contract).
pub mod exit {
    /// Every selected check passed.
    pub const PASSED: u8 = 0;
    /// A check failed.
    pub const FAILED: u8 = 1;
    /// Usage, suite or kubeconfig error, an unreachable API server, or a filter that matches no
    /// check: nothing could be checked.
    pub const USAGE: u8 = 2;
}

/// Runs the command line `args` and returns the process's exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::PASSED
            });
        }
    };
    match cli.command {
        Command::Verify(args) => verify(*args),
        Command::Schema => {
            println!("{}", suite::schema());
            ExitCode::from(exit::PASSED)
        }
        Command::Rbac(args) => match args.suite() {
            Ok(suite) => {
                print!("{}", rbac::manifests(&suite));
                ExitCode::from(exit::PASSED)
            }
            Err(e) => {
                print_error(&e);
                ExitCode::from(exit::USAGE)
            }
        },
    }
}

/// Prints an error and its sources on one line.
fn print_error(err: &dyn std::error::Error) {
    let message = secret::Redactor::default().redact(&cluster::error_chain(err));
    eprintln!("error: {}", report::visible(&message));
}

fn verify(args: VerifyArgs) -> ExitCode {
    let output = args.output();
    let namespace_hint = args.namespace.clone().unwrap_or_else(|| "litellm".into());
    let plan = match args.plan() {
        Ok(p) => p,
        Err(e) => {
            print_error(&e);
            let report = RunReport::setup_failure(
                None,
                namespace_hint,
                Cause::Setup,
                cluster::error_chain(&e),
            );
            return finish_setup_failure(&output, &report);
        }
    };

    let catalog = checks::catalog(&plan.suite);
    let namespace = plan.suite.namespace.clone();
    let selected: Vec<_> = catalog
        .checks
        .into_iter()
        .filter(|c| plan.selection.selects(&c.name))
        .collect();
    let families = catalog.families;
    // Per-alias checks are only known once the proxy config is read; a filter may still
    // match them, so "matches nothing" is final here only without families.
    if selected.is_empty() && families.is_empty() {
        return no_match(&plan, namespace);
    }
    if plan.list {
        let mut names: Vec<String> = selected.iter().map(|c| c.name.clone()).collect();
        for family in &families {
            match &plan.suite.litellm.aliases {
                Some(aliases) => names.extend(
                    aliases
                        .iter()
                        .map(|a| family.name_for(a))
                        .filter(|n| plan.selection.selects(n)),
                ),
                // Aliases come from the cluster: a filter naming one (`e2e::chat::small`) lists
                // the pattern it would match.
                None if plan.selection.selects(&family.pattern)
                    || plan.selection.filters.is_empty()
                    || plan.selection.filters.iter().any(|f| {
                        f.starts_with(family.pattern.split("<alias>").next().unwrap_or_default())
                    }) =>
                {
                    names.push(family.pattern.clone())
                }
                None => {}
            }
        }
        if names.is_empty() {
            return no_match(&plan, namespace);
        }
        if plan.output.format == Format::Json {
            println!(
                "{}",
                serde_json::to_string_pretty(&names).unwrap_or_default()
            );
        } else {
            for name in names {
                println!("{name}");
            }
        }
        return ExitCode::from(exit::PASSED);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let code = run_checks(&runtime, &plan, selected, families, namespace);
    // Never wait on a task that cannot finish (a credential plugin that hangs, a stuck forward).
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// Connects, prepares the run, and runs the selected checks; every way out writes the reports.
fn run_checks(
    runtime: &tokio::runtime::Runtime,
    plan: &cli::Plan,
    mut selected: Vec<check::Check>,
    families: Vec<check::Family>,
    namespace: String,
) -> ExitCode {
    let started = Instant::now();
    let stopper = Stopper::default();
    runtime.spawn(watch_for_stop(stopper.clone(), plan.deadline));

    let cluster = runtime.block_on(async {
        tokio::select! {
            c = cluster::connect(&plan.kube, plan.timeout) => Some(c),
            _ = stopper.token_cancelled() => None,
        }
    });
    let cluster = match cluster {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            print_error(&e);
            let cause = match e {
                cluster::ClusterError::Unauthorized { .. }
                | cluster::ClusterError::Credentials { .. } => Cause::Unauthorized,
                cluster::ClusterError::Unreachable { .. } => Cause::ApiUnreachable,
                _ => Cause::Setup,
            };
            let report = RunReport::setup_failure(None, namespace, cause, cluster::error_chain(&e));
            return finish_setup_failure(&plan.output, &report);
        }
        None => {
            let message = "stopped before the API server answered".to_string();
            eprintln!("error: {message}");
            let report = RunReport::setup_failure(None, namespace, Cause::Interrupted, message);
            return finish_setup_failure(&plan.output, &report);
        }
    };
    let context = cluster.context.clone();

    let suite = Arc::new(plan.suite.clone());
    let endpoints = connect::Endpoints::resolve(&plan.suite, &plan.endpoints);
    // Reading the proxy config and the Secrets takes a few API calls: a deadline or a signal
    // during them still ends the run with its reports.
    let prepared = runtime.block_on(async {
        tokio::select! {
            env = env::Env::prepare(suite, cluster, Redactor::default(), endpoints, plan.hook.clone()) => Some(env),
            _ = stopper.token_cancelled() => None,
        }
    });
    let Some(mut env) = prepared else {
        let stop = stopper.reason().unwrap_or(Stop::Signal("a signal"));
        let results = runner::not_run(&selected, stop);
        let report = RunReport {
            context: Some(context),
            namespace,
            duration: started.elapsed(),
            checks: results,
            error: None,
        };
        return finish_run(
            &plan.output,
            &report,
            &Terminal::new(Styles::default(), false),
        );
    };
    for alias in env.aliases() {
        for family in &families {
            if let Some(check) = (family.build)(&env, &alias)
                && plan.selection.selects(&check.name)
                && !selected.iter().any(|c| c.name == check.name)
            {
                selected.push(check);
            }
        }
    }
    if selected.is_empty() {
        return no_match(plan, namespace);
    }
    // Only runs that talk to LiteLLM, vLLM or the database need their addresses reachable.
    if selected.iter().any(|c| c.layer.reaches_endpoints()) {
        runtime.block_on(async {
            tokio::select! {
                _ = reach_endpoints(&mut env.endpoints, plan, &env.cluster) => {},
                // The runner reports every check as not run.
                _ = stopper.token_cancelled() => {},
            }
        });
    }

    let styles = if plan.output.color {
        Styles::colored()
    } else {
        Styles::default()
    };
    let terminal = Arc::new(Terminal::new(styles, plan.output.progress_bar));
    let progress: Arc<dyn Progress> = match plan.output.format {
        Format::Json => Arc::new(Silent),
        Format::Pretty | Format::Plain => {
            terminal.print(&terminal::render_header(
                Some(&context),
                &namespace,
                selected.len(),
                &styles,
            ));
            let lines: Vec<String> = env
                .endpoints
                .forwards()
                .map(|f| f.to_string())
                .chain(env.endpoints.forward_errors.iter().cloned())
                .collect();
            terminal.print(&terminal::render_notes(&lines, &styles));
            terminal.clone()
        }
    };

    let options = RunOptions {
        timeout: plan.timeout,
        wait: plan.wait,
        threads: plan.threads,
    };
    let results = runner::run(
        runtime,
        Arc::new(env),
        selected,
        &options,
        &stopper,
        progress,
    );
    terminal.finish();
    let report = RunReport {
        context: Some(context),
        namespace,
        duration: started.elapsed(),
        checks: results,
        error: None,
    };
    finish_run(&plan.output, &report, &terminal)
}

/// Writes the reports of a run that ran (or was stopped) and returns its exit code.
fn finish_run(output: &Output, report: &RunReport, terminal: &Terminal) -> ExitCode {
    let code = if report.counts().failed > 0 {
        exit::FAILED
    } else {
        exit::PASSED
    };
    match write_reports(output, report, terminal) {
        Ok(()) => ExitCode::from(code),
        Err(()) => ExitCode::from(exit::USAGE),
    }
}

/// Sets up port-forwards where the endpoints are not reachable directly: `--connect
/// port-forward`, or `auto` outside the cluster when its DNS names do not resolve here.
async fn reach_endpoints(
    endpoints: &mut connect::Endpoints,
    plan: &cli::Plan,
    cluster: &cluster::Cluster,
) {
    let forward = match plan.connect {
        cli::ConnectMode::Direct => false,
        cli::ConnectMode::PortForward => true,
        cli::ConnectMode::Auto => {
            std::env::var_os("KUBERNETES_SERVICE_HOST").is_none()
                && !endpoints
                    .cluster_dns_resolves(&plan.suite, Duration::from_secs(2))
                    .await
        }
    };
    if forward {
        endpoints.port_forward(cluster, &plan.suite).await;
    }
}

/// Exit 2: the filters select nothing (a typo in a hook's filter must not pass a sync).
fn no_match(plan: &cli::Plan, namespace: String) -> ExitCode {
    let message = format!(
        "no check matches {}: `smokecheck verify --list` shows the names",
        describe_selection(&plan.selection)
    );
    eprintln!("error: {message}");
    let report = RunReport::setup_failure(None, namespace, Cause::Setup, message);
    finish_setup_failure(&plan.output, &report)
}

fn describe_selection(sel: &runner::Selection) -> String {
    let mut parts: Vec<String> = sel.filters.iter().map(|f| format!("{f:?}")).collect();
    if parts.is_empty() {
        parts.push("the suite".into());
    }
    let mut out = format!("the filter {}", parts.join(" or "));
    if sel.exact {
        out.push_str(" (--exact)");
    }
    if !sel.skip.is_empty() {
        out.push_str(&format!(" with --skip {}", sel.skip.join(", ")));
    }
    out
}

/// Waits for the run's deadline or a termination signal, then stops the run.
async fn watch_for_stop(stopper: Stopper, deadline: Option<Duration>) {
    let deadline = async {
        match deadline {
            Some(d) => {
                tokio::time::sleep(d).await;
                Stop::Deadline(d)
            }
            None => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    let sigterm = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
                Stop::Signal("SIGTERM")
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let sigterm = std::future::pending::<Stop>();
    let interrupt = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => Stop::Signal("SIGINT"),
            Err(_) => std::future::pending().await,
        }
    };
    let why = tokio::select! {
        w = deadline => w,
        w = sigterm => w,
        w = interrupt => w,
    };
    stopper.stop(why);
    // The first signal lets the reports be written; a second one means "now".
    if matches!(why, Stop::Signal(_)) {
        let again = async {
            #[cfg(unix)]
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                tokio::select! {
                    _ = s.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
                return;
            }
            let _ = tokio::signal::ctrl_c().await;
        };
        again.await;
        std::process::exit(130);
    }
}

/// Exit 2, with the JUnit/JSON reports still saying why nothing could be checked.
fn finish_setup_failure(output: &Output, report: &RunReport) -> ExitCode {
    let terminal = Terminal::new(Styles::default(), false);
    let _ = write_reports(output, report, &terminal);
    ExitCode::from(exit::USAGE)
}

/// Writes the JUnit file and the stdout report. A JUnit file that cannot be written is an
/// error of its own (CI would otherwise read a stale one).
fn write_reports(output: &Output, report: &RunReport, terminal: &Terminal) -> Result<(), ()> {
    let mut ok = Ok(());
    if let Some(path) = &output.junit
        && let Err(e) = std::fs::write(path, report::junit::render(report))
    {
        eprintln!("error: writing JUnit report {}: {e}", path.display());
        ok = Err(());
    }
    if let Some(path) = &output.termination_log
        && let Err(e) = std::fs::write(path, report::termination_message(report))
    {
        eprintln!(
            "error: writing the termination message to {}: {e}",
            path.display()
        );
    }
    match output.format {
        Format::Json => print!("{}", report::json::render(report)),
        Format::Pretty | Format::Plain => {
            if report.error.is_none() {
                terminal.print(&terminal::render_summary(report, terminal.styles()));
            }
        }
    }
    ok
}
