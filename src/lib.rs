//! smokecheck: proves a LiteLLM deployment on Kubernetes really works.
//!
//! Data flows one way: arguments ([`cli`]) → [`plan`] → [`checks`] → [`runner`] → results
//! ([`outcome`]) → [`report`]ers, through the pipeline [`verify::run`] and its [`events`]; a
//! [`fleet`] run is that pipeline once per cluster, at once ([`fanout`]), in one report.
//! Checks never print; reporters never do I/O beyond writing their output; only [`run`], the
//! edge, prints errors, listens for signals and decides the exit code. ARCHITECTURE.md has the
//! map.

// A check's failure is a rich value (summary, details, hint, metrics), returned on the cold
// path; boxing it everywhere would only add noise.
#![allow(clippy::result_large_err)]

#[cfg(test)]
mod architecture;
pub mod certificate;
pub mod check;
pub mod checks;
pub mod cli;
pub mod cluster;
pub mod context;
pub mod destinations;
pub mod endpoints;
pub mod events;
pub mod fanout;
pub mod fleet;
pub mod http;
pub mod kube_auth;
pub mod once;
pub mod outcome;
pub mod plan;
pub mod portforward;
pub mod proxy_config;
pub mod push;
pub mod rbac;
pub mod report;
pub mod runner;
pub mod secret;
pub mod serve;
pub mod suite;
pub mod text;
pub mod verify;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Command, SchemaOf, ServeArgs, VerifyArgs};
use crate::fleet::{FleetPlan, FleetReport, Verdict};
use crate::outcome::{Cause, RunReport};
use crate::plan::TERMINATION_LOG;
use crate::report::Reporter;
use crate::report::fleet::FleetReporter;
use crate::report::terminal::print_stdout;
use crate::runner::{Stopper, stop};
use crate::verify::SetupFailure;

/// The exit codes, in one place (the CLI contract).
pub mod exit {
    /// Every selected check passed.
    pub const PASSED: u8 = 0;
    /// A check failed.
    pub const FAILED: u8 = 1;
    /// Usage, suite or kubeconfig error, an unreachable API server, or a filter that matches no
    /// check: nothing could be checked.
    pub const USAGE: u8 = 2;
    /// smokecheck itself panicked (a bug); the reports and the termination message say so.
    pub const PANICKED: u8 = 101;
    /// A second SIGTERM or SIGINT: stop now, without the reports.
    pub const INTERRUPTED: i32 = 130;
}

/// Runs the command line `args` and returns the process's exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    install_panic_hook();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    match cli.command {
        Command::Verify(args) if args.is_fleet() => verify_fleet(*args),
        Command::Verify(args) => verify(*args),
        Command::Serve(args) => serve(*args),
        Command::Schema(args) => {
            let schema = match args.of {
                SchemaOf::Suite => suite::schema(),
                SchemaOf::Fleet => fleet::file::schema(),
            };
            print_stdout(&format!("{schema}\n"));
            ExitCode::from(exit::PASSED)
        }
        Command::Rbac(args) => match args.suite.load() {
            Ok(suite) => {
                print_stdout(&rbac::manifests(&suite));
                ExitCode::from(exit::PASSED)
            }
            Err(e) => {
                print_error(&text::error_chain(&e));
                ExitCode::from(exit::USAGE)
            }
        },
    }
}

/// Writes to stderr; a reader that went away is not an error of the run.
fn print_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// The one error printer: a message on one line, redacted and with control characters made
/// visible.
fn print_error(message: &str) {
    let message = secret::Redactor::default().redact(message);
    print_stderr(&format!("error: {}\n", report::visible(&message)));
}

/// A command line clap refused (or `--help`/`--version`, exit 0). A hook configured through
/// `SMOKECHECK_*` env vars still gets its termination message: a bad `SMOKECHECK_FORMAT` would
/// otherwise fail the sync with no word in `kubectl get pod` or Argo CD.
fn usage_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if !e.use_stderr() {
        return ExitCode::from(exit::PASSED);
    }
    let hook_log = match std::env::var_os("SMOKECHECK_TERMINATION_LOG") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => std::env::var_os("SMOKECHECK_ARGOCD_APP")
            .filter(|app| !app.is_empty())
            .map(|_| PathBuf::from(TERMINATION_LOG)),
    };
    if let Some(path) = hook_log {
        let text = e.to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        let report = SetupFailure::new("", Cause::Setup, first).report();
        if let Err(e) =
            report::write_termination_message(&path, &report::termination_message(&report))
        {
            print_error(&text::error_chain(&e));
        }
    }
    ExitCode::from(exit::USAGE)
}

/// The last panic, described in one line (where, and its message when that is a literal of
/// our code, so no runtime value, a secret say, ever reaches it).
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Panics print one line instead of Rust's multi-line report (with `RUST_BACKTRACE` set, the
/// full report too, for whoever debugs it). A panic inside a check is caught by the runner and
/// reported as that check's failure; one outside is caught in [`verify`], which still writes
/// the reports and the termination message.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let mut line = "smokecheck panicked".to_string();
        if let Some(at) = info.location() {
            line.push_str(&format!(" at {}:{}:{}", at.file(), at.line(), at.column()));
        }
        if let Some(message) = info.payload().downcast_ref::<&'static str>() {
            line.push_str(&format!(": {message}"));
        }
        line.push_str(" (a bug: please report it)");
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(line.clone());
        }
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            default(info);
        } else {
            print_stderr(&format!("error: {line}\n"));
        }
    }));
}

/// How `verify` ended before its reports are written.
enum Verified {
    /// `--list`: the names were printed; no report.
    Listed,
    /// A run, or why none could be made.
    Ran(Result<RunReport, SetupFailure>),
}

/// `smokecheck verify`: plan, run, and the one finish path that writes every report.
fn verify(args: VerifyArgs) -> ExitCode {
    let mut reporter = Reporter::new(args.output());
    let namespace_hint = args.run.suite.namespace_hint();
    let mut runtime = None;
    // Nothing here should panic; if something does, the run still ends with its reports, a
    // termination message and one line on stderr (the hook), never with an earlier run's.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        plan_and_run(args, &mut reporter, &mut runtime)
    }));
    // Never wait on a task that cannot finish (a stuck forward, a DNS lookup).
    if let Some(runtime) = runtime.take() {
        runtime.shutdown_timeout(Duration::from_millis(200));
    }
    let outcome = outcome.unwrap_or_else(|_| {
        let what = LAST_PANIC
            .lock()
            .ok()
            .and_then(|mut last| last.take())
            .unwrap_or_else(|| "smokecheck panicked (a bug: please report it)".into());
        Verified::Ran(Err(SetupFailure::new(
            namespace_hint,
            Cause::Panicked,
            what,
        )))
    });
    match outcome {
        Verified::Listed => ExitCode::from(exit::PASSED),
        Verified::Ran(result) => finish(&mut reporter, result),
    }
}

fn plan_and_run(
    args: VerifyArgs,
    reporter: &mut Reporter,
    runtime_slot: &mut Option<tokio::runtime::Runtime>,
) -> Verified {
    let namespace_hint = args.run.suite.namespace_hint();
    let pushgateway = args.pushgateway.clone();
    let plan = match args.plan() {
        Ok(plan) => plan,
        Err(e) => {
            let failure = SetupFailure::new(namespace_hint, Cause::Setup, text::error_chain(&e));
            return Verified::Ran(Err(failure));
        }
    };
    if plan.list {
        return match verify::list(&plan) {
            Ok(names) => {
                print_stdout(&report::list(&names, plan.output.format));
                Verified::Listed
            }
            Err(failure) => Verified::Ran(Err(failure)),
        };
    }
    let namespace = plan.suite.namespace.clone();
    let pushgateway = match pushgateway.as_deref().map(plan::pushgateway).transpose() {
        Ok(url) => url,
        Err(e) => {
            let failure = SetupFailure::new(namespace, Cause::Setup, text::error_chain(&e));
            return Verified::Ran(Err(failure));
        }
    };
    // From here on the run's own reports are coming: an earlier run's must not outlive it.
    for problem in reporter.start() {
        if problem.fails_the_run() {
            let failure = SetupFailure::new(namespace, Cause::Setup, text::error_chain(&problem));
            return Verified::Ran(Err(failure));
        }
        print_error(&text::error_chain(&problem));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => runtime_slot.insert(rt),
        Err(e) => {
            let message = format!("starting the async runtime: {e}");
            return Verified::Ran(Err(SetupFailure::new(namespace, Cause::Setup, message)));
        }
    };
    let stopper = Stopper::default();
    runtime.spawn(stop_on_signals(stopper.clone()));
    Verified::Ran(runtime.block_on(async {
        // The test suite's way to prove that a panic outside the checks still ends with the
        // reports and the termination message; compiled out of release builds.
        #[cfg(debug_assertions)]
        if std::env::var_os("SMOKECHECK_TEST_PANIC").is_some() {
            panic!("SMOKECHECK_TEST_PANIC is set");
        }
        let outcome = verify::run(&plan, reporter, &stopper).await;
        if let Some(url) = &pushgateway {
            push_metrics(url, &plan, &outcome).await;
        }
        outcome
    }))
}

/// `--pushgateway`: the run's metrics pushed, grouped under the cluster's kube context; a push
/// that fails is said on stderr and leaves the exit code alone.
async fn push_metrics(
    url: &::http::Uri,
    plan: &plan::Plan,
    outcome: &Result<RunReport, SetupFailure>,
) {
    let report = match outcome {
        Ok(report) => report.clone(),
        Err(failure) => failure.report(),
    };
    let instance = report
        .context
        .clone()
        .or_else(|| plan.kube.context.clone())
        .unwrap_or_else(|| "unknown".into());
    let timeout = plan.timeout.min(push::TIMEOUT);
    if let Err(e) = push::push(
        url,
        &instance,
        &report,
        std::time::SystemTime::now(),
        timeout,
    )
    .await
    {
        print_error(&text::error_chain(&e));
    }
}

/// `smokecheck serve`: the plan, then runs on an interval until SIGTERM or SIGINT (exit 0); a
/// bad argument or a listen address that cannot be bound is exit 2.
fn serve(args: ServeArgs) -> ExitCode {
    let plan = match args.plan() {
        Ok(plan) => plan,
        Err(e) => {
            print_error(&text::error_chain(&e));
            return ExitCode::from(exit::USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            print_error(&format!("starting the async runtime: {e}"));
            return ExitCode::from(exit::USAGE);
        }
    };
    let stopper = Stopper::default();
    runtime.spawn(stop_on_signals(stopper.clone()));
    let served = runtime.block_on(serve::serve(plan, serve::Limits::default(), &stopper));
    runtime.shutdown_timeout(Duration::from_millis(200));
    match served {
        Ok(()) => ExitCode::from(exit::PASSED),
        Err(e) => {
            print_error(&text::error_chain(&e));
            ExitCode::from(exit::USAGE)
        }
    }
}

/// How a fleet `verify` ended before its reports are written.
enum FleetVerified {
    /// `--list`: the names were printed; no report.
    Listed,
    /// The fleet ran: its reporter and report.
    Ran(Box<FleetReporter>, FleetReport),
    /// Nothing could be checked (a bad fleet file or flag): reported as a single run that
    /// could not start.
    NotStarted(SetupFailure),
}

/// `smokecheck verify --fleet FILE` (or several `--context`): every cluster at once, one
/// report. A plan that cannot be made, or a panic outside the clusters' runs, ends as a single
/// run that could not start does (exit 2 or 101, with its reports).
fn verify_fleet(args: VerifyArgs) -> ExitCode {
    let output = args.output();
    let mut runtime = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fleet_plan_and_run(args, &mut runtime)
    }));
    if let Some(runtime) = runtime.take() {
        runtime.shutdown_timeout(Duration::from_millis(200));
    }
    let outcome = outcome.unwrap_or_else(|_| {
        let what = LAST_PANIC
            .lock()
            .ok()
            .and_then(|mut last| last.take())
            .unwrap_or_else(|| "smokecheck panicked (a bug: please report it)".into());
        FleetVerified::NotStarted(SetupFailure::new("", Cause::Panicked, what))
    });
    match outcome {
        FleetVerified::Listed => ExitCode::from(exit::PASSED),
        FleetVerified::NotStarted(failure) => finish(&mut Reporter::new(output), Err(failure)),
        FleetVerified::Ran(mut reporter, report) => finish_fleet(&mut reporter, &report),
    }
}

fn fleet_plan_and_run(
    args: VerifyArgs,
    runtime_slot: &mut Option<tokio::runtime::Runtime>,
) -> FleetVerified {
    let output = args.output();
    let fleet = match args.fleet_plan() {
        Ok(fleet) => fleet,
        Err(e) => {
            return FleetVerified::NotStarted(SetupFailure::new(
                "",
                Cause::Setup,
                text::error_chain(&e),
            ));
        }
    };
    if fleet.clusters.iter().any(|c| c.plan.list) {
        return list_fleet(&fleet, &output);
    }
    let mut reporter = FleetReporter::new(output);
    for problem in reporter.start() {
        if problem.fails_the_run() {
            return FleetVerified::NotStarted(SetupFailure::new(
                "",
                Cause::Setup,
                text::error_chain(&problem),
            ));
        }
        print_error(&text::error_chain(&problem));
    }
    // Each cluster's checks hold one thread of the blocking pool while they run: tokio's
    // default pool (512) has room for any sensible --clusters.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => runtime_slot.insert(rt),
        Err(e) => {
            let message = format!("starting the async runtime: {e}");
            return FleetVerified::NotStarted(SetupFailure::new("", Cause::Setup, message));
        }
    };
    let stopper = Stopper::default();
    runtime.spawn(stop_on_signals(stopper.clone()));
    let report = runtime.block_on(fanout::run(&fleet, &mut reporter, &stopper));
    FleetVerified::Ran(Box::new(reporter), report)
}

/// `--list` in a fleet run: each cluster's checks, named `<cluster>/<check>`.
fn list_fleet(fleet: &FleetPlan, output: &plan::Output) -> FleetVerified {
    let mut names = Vec::new();
    let mut first_failure = None;
    for cluster in &fleet.clusters {
        match verify::list(&cluster.plan) {
            Ok(listed) => names.extend(listed.iter().map(|n| format!("{}/{n}", cluster.name))),
            Err(failure) => {
                first_failure.get_or_insert(failure);
            }
        }
    }
    match first_failure {
        Some(failure) if names.is_empty() => FleetVerified::NotStarted(failure),
        _ => {
            print_stdout(&report::list(&names, output.format));
            FleetVerified::Listed
        }
    }
}

/// The one way a fleet `verify` ends: every report written, the exit code the worst over the
/// clusters (2 only when no cluster could be checked at all).
fn finish_fleet(reporter: &mut FleetReporter, report: &FleetReport) -> ExitCode {
    for cluster in &report.clusters {
        if cluster.verdict == Verdict::NotChecked
            && let Some(error) = &cluster.report.error
        {
            print_error(&format!("{}: {error}", cluster.name));
        }
    }
    let verdicts: Vec<Verdict> = report.clusters.iter().map(|c| c.verdict).collect();
    let mut code = if verdicts.contains(&Verdict::Panicked) {
        exit::PANICKED
    } else if verdicts.iter().all(|v| *v == Verdict::NotChecked) {
        exit::USAGE
    } else if verdicts.iter().all(|v| *v == Verdict::Passed) {
        exit::PASSED
    } else {
        exit::FAILED
    };
    for problem in reporter.finish(report) {
        print_error(&text::error_chain(&problem));
        if problem.fails_the_run() && code != exit::PANICKED {
            code = exit::USAGE;
        }
    }
    ExitCode::from(code)
}

/// The first SIGTERM or SIGINT stops the run, which still writes its reports; a second one
/// means "now".
async fn stop_on_signals(stopper: Stopper) {
    stopper.stop(stop::signal().await);
    stop::signal().await;
    std::process::exit(exit::INTERRUPTED);
}

/// The one way a `verify` ends: the error said once, every report written, the exit code.
fn finish(reporter: &mut Reporter, outcome: Result<RunReport, SetupFailure>) -> ExitCode {
    let (report, mut code) = match outcome {
        Ok(report) if report.counts().failed > 0 => (report, exit::FAILED),
        Ok(report) => (report, exit::PASSED),
        // The panic hook has said it already.
        Err(failure) if failure.cause == Cause::Panicked => (failure.report(), exit::PANICKED),
        Err(failure) => {
            print_error(&failure.message);
            (failure.report(), exit::USAGE)
        }
    };
    for problem in reporter.finish(&report) {
        print_error(&text::error_chain(&problem));
        // CI would find no report, or a stale one: not a run to pass.
        if problem.fails_the_run() && code != exit::PANICKED {
            code = exit::USAGE;
        }
    }
    ExitCode::from(code)
}
