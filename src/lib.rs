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
pub mod kube_auth;
pub mod outcome;
pub mod plan;
pub mod proxy_config;
pub mod rbac;
pub mod report;
pub mod runner;
pub mod secret;
pub mod suite;
pub mod text;

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::cli::{Cli, Command, VerifyArgs};
use crate::outcome::{Cause, RunReport};
use crate::plan::{ConnectMode, Format, Output, Plan, TERMINATION_LOG};
use crate::report::terminal::{self, Styles, Terminal};
use crate::report::{Progress, Silent};
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
    /// smokecheck itself panicked (a bug); the reports and the termination message say so.
    pub const PANICKED: u8 = 101;
}

/// Runs the command line `args` and returns the process's exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    install_panic_hook();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    match cli.command {
        Command::Verify(args) => verify(*args),
        Command::Schema => {
            print_stdout(&format!("{}\n", suite::schema()));
            ExitCode::from(exit::PASSED)
        }
        Command::Rbac(args) => match args.suite() {
            Ok(suite) => {
                print_stdout(&rbac::manifests(&suite));
                ExitCode::from(exit::PASSED)
            }
            Err(e) => {
                print_error(&e);
                ExitCode::from(exit::USAGE)
            }
        },
    }
}

/// Writes to stdout. A reader that went away (`| head -1`) ends the output, never the run: the
/// exit code stays the run's (`print!` would panic on the broken pipe, exit 101).
fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Writes to stderr, as [`print_stdout`] does to stdout.
fn print_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Prints an error and its sources on one line.
fn print_error(err: &dyn std::error::Error) {
    let message = secret::Redactor::default().redact(&text::error_chain(err));
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
        Some(path) if !path.is_empty() => Some(std::path::PathBuf::from(path)),
        _ => std::env::var_os("SMOKECHECK_ARGOCD_APP")
            .filter(|app| !app.is_empty())
            .map(|_| std::path::PathBuf::from(TERMINATION_LOG)),
    };
    if let Some(path) = hook_log {
        let text = e.to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        let report = setup_failure(None, String::new(), Cause::Setup, first.into());
        write_termination_message(&path, &report::termination_message(&report));
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

fn verify(args: VerifyArgs) -> ExitCode {
    let output = args.output();
    let namespace_hint = args.namespace.clone().unwrap_or_else(|| "litellm".into());
    let mut runtime = None;
    // Nothing here should panic; if something does, the run still ends with its reports, a
    // termination message and one line on stderr (the hook), never with an earlier run's.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        plan_and_run(args, &output, namespace_hint.clone(), &mut runtime)
    }));
    // Never wait on a task that cannot finish (a stuck forward, a DNS lookup).
    if let Some(runtime) = runtime.take() {
        runtime.shutdown_timeout(Duration::from_millis(200));
    }
    outcome.unwrap_or_else(|_| {
        let what = LAST_PANIC
            .lock()
            .ok()
            .and_then(|mut last| last.take())
            .unwrap_or_else(|| "smokecheck panicked (a bug: please report it)".into());
        let report = setup_failure(None, namespace_hint, Cause::Panicked, what);
        let _ = write_reports(&output, &report, &Terminal::new(Styles::default(), false));
        ExitCode::from(exit::PANICKED)
    })
}

fn plan_and_run(
    args: VerifyArgs,
    output: &Output,
    namespace_hint: String,
    runtime_slot: &mut Option<tokio::runtime::Runtime>,
) -> ExitCode {
    let plan = match args.plan() {
        Ok(p) => p,
        Err(e) => {
            print_error(&e);
            let report = setup_failure(None, namespace_hint, Cause::Setup, text::error_chain(&e));
            return finish_setup_failure(output, &report);
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
            print_stdout(&format!(
                "{}\n",
                serde_json::to_string_pretty(&names).unwrap_or_default()
            ));
        } else {
            print_stdout(&names.iter().map(|n| format!("{n}\n")).collect::<String>());
        }
        return ExitCode::from(exit::PASSED);
    }

    // From here on the run's own reports are coming: an earlier run's must not outlive it.
    if let Err(message) = start_reports(&plan.output) {
        print_stderr(&format!("error: {message}\n"));
        let report = setup_failure(None, namespace, Cause::Setup, message);
        return finish_setup_failure(&plan.output, &report);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => runtime_slot.insert(rt),
        Err(e) => {
            let message = format!("starting the async runtime: {e}");
            print_stderr(&format!("error: {message}\n"));
            let report = setup_failure(None, namespace, Cause::Setup, message);
            return finish_setup_failure(&plan.output, &report);
        }
    };
    run_checks(runtime, &plan, selected, families, namespace)
}

/// Connects, prepares the run, and runs the selected checks; every way out writes the reports.
fn run_checks(
    runtime: &tokio::runtime::Runtime,
    plan: &Plan,
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
            let report = setup_failure(None, namespace, e.cause(), text::error_chain(&e));
            return finish_setup_failure(&plan.output, &report);
        }
        None => {
            let message = "stopped before the API server answered".to_string();
            print_stderr(&format!("error: {message}\n"));
            let report = setup_failure(None, namespace, Cause::Interrupted, message);
            return finish_setup_failure(&plan.output, &report);
        }
    };
    let context = cluster.context.clone();
    let url = cluster.url.clone();
    // The test suite's way to prove that a panic outside the checks still ends with the reports
    // and the termination message; compiled out of release builds.
    #[cfg(debug_assertions)]
    if std::env::var_os("SMOKECHECK_TEST_PANIC").is_some() {
        panic!("SMOKECHECK_TEST_PANIC is set");
    }

    let suite = Arc::new(plan.suite.clone());
    let endpoints = connect::Endpoints::resolve(&plan.suite, &plan.endpoints);
    // Reading the proxy config and the Secrets takes a few API calls: a deadline or a signal
    // during them still ends the run with its reports, and so does --timeout (kube's read
    // timeout is an idle one: a server trickling a byte a second would hold them forever).
    let prepared = runtime.block_on(async {
        tokio::select! {
            env = tokio::time::timeout(plan.timeout, env::Env::prepare(suite, cluster, Redactor::default(), endpoints, plan.hook.clone(), http::Http::new(&plan.proxies))) => Some(env),
            _ = stopper.token_cancelled() => None,
        }
    });
    // Every check needs these reads (the redactor's secrets above all, before any server text
    // is shown): an API server too slow for them is one that cannot be checked, as at connect.
    let prepared = match prepared {
        Some(Ok(env)) => Some(env),
        Some(Err(_)) => {
            let message = format!(
                "reading the suite's proxy config and Secrets from the API server at {url} did not finish within {}",
                humantime::format_duration(plan.timeout)
            );
            eprintln!("error: {message}");
            let report = setup_failure(Some(context), namespace, Cause::Timeout, message);
            return finish_setup_failure(&plan.output, &report);
        }
        None => None,
    };
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
    // An https:// URL through a port-forward keeps the Service's name; the client connects it
    // to the local port.
    let local_names = env.endpoints.local_names();
    if !local_names.is_empty() {
        env.http = http::Http::resolving(&plan.proxies, &local_names);
    }
    let forwards = env.endpoints.lifetime();

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
    // Connections a timed-out check left behind (a session waiting on a lock) end with the run,
    // closed properly, before the reports say it is over.
    runtime.block_on(forwards.close());
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
    plan: &Plan,
    cluster: &cluster::Cluster,
) {
    let forward = match plan.connect {
        ConnectMode::Direct => false,
        ConnectMode::PortForward => true,
        ConnectMode::Auto => {
            !plan.in_cluster
                && !endpoints
                    .cluster_dns_resolves(&plan.suite, plan.timeout.min(Duration::from_secs(2)))
                    .await
        }
    };
    if forward {
        endpoints
            .port_forward(cluster, &plan.suite, plan.timeout)
            .await;
    }
}

/// Exit 2: the filters select nothing (a typo in a hook's filter must not pass a sync).
fn no_match(plan: &Plan, namespace: String) -> ExitCode {
    let message = format!(
        "no check matches {}: `smokecheck verify --list` shows the names",
        plan.selection.describe()
    );
    print_stderr(&format!("error: {message}\n"));
    let report = setup_failure(None, namespace, Cause::Setup, message);
    finish_setup_failure(&plan.output, &report)
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

/// The report of a run that could not start, its message redacted: no secret has been read
/// yet, but an argument or a plugin's output may hold one.
fn setup_failure(
    context: Option<String>,
    namespace: String,
    cause: Cause,
    message: String,
) -> RunReport {
    let message = secret::Redactor::default().redact(&message);
    RunReport::setup_failure(context, namespace, cause, message)
}

/// Exit 2, with the JUnit/JSON reports still saying why nothing could be checked.
fn finish_setup_failure(output: &Output, report: &RunReport) -> ExitCode {
    let terminal = Terminal::new(Styles::default(), false);
    let _ = write_reports(output, report, &terminal);
    ExitCode::from(exit::USAGE)
}

/// What the termination message says while the run is on: if the process is killed (the Job's
/// deadline, OOM) before it writes its outcome, this is what `kubectl get pod` shows.
const NO_OUTCOME: &str =
    "smokecheck: no outcome: the run ended before it finished (killed, or out of memory?)";

/// Clears what an earlier run left where this run's reports go: its JUnit file is removed (a
/// killed run must never leave an earlier pass for CI to read) and the termination message
/// says there is no outcome yet.
fn start_reports(output: &Output) -> Result<(), String> {
    if let Some(path) = &output.termination_log {
        write_termination_message(path, NO_OUTCOME);
    }
    if let Some(path) = &output.junit
        && is_plain_file(path)
    {
        std::fs::remove_file(path).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(format!(
                "--junit: removing the previous report {}: {e}",
                path.display()
            )),
        })?;
    }
    Ok(())
}

/// A regular file, or nothing yet: a report path that is replaced by renaming. Anything else
/// (`/dev/stdout`, a FIFO, a symlink) is written in place, as the user pointed it there.
fn is_plain_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).map_or(true, |m| m.file_type().is_file())
}

/// Writes a report whole or not at all: into a temporary file beside `path`, then renamed over
/// it, so CI sees the earlier state or this report, never part of one.
fn write_report_file(path: &Path, contents: &str) -> std::io::Result<()> {
    if !is_plain_file(path) {
        return std::fs::write(path, contents);
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    let permissions = {
        use std::os::unix::fs::PermissionsExt;
        // What `fs::write` would give (the umask still applies), not tempfile's private 0600.
        std::fs::Permissions::from_mode(0o644)
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".smokecheck-").suffix(".tmp");
    #[cfg(unix)]
    builder.permissions(permissions);
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(contents.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The termination message is written in place: Kubernetes mounts it as a single file, which
/// cannot be replaced by renaming.
fn write_termination_message(path: &Path, message: &str) {
    if let Err(e) = std::fs::write(path, message) {
        print_stderr(&format!(
            "error: writing the termination message to {}: {e}\n",
            path.display()
        ));
    }
}

/// Writes the JUnit file, the termination message and the stdout report. A JUnit file that
/// cannot be written is an error of its own (CI would otherwise find none, or a stale one).
fn write_reports(output: &Output, report: &RunReport, terminal: &Terminal) -> Result<(), ()> {
    let mut ok = Ok(());
    if let Some(path) = &output.junit
        && let Err(e) = write_report_file(path, &report::junit::render(report))
    {
        print_stderr(&format!(
            "error: writing JUnit report {}: {e}\n",
            path.display()
        ));
        ok = Err(());
    }
    if let Some(path) = &output.termination_log {
        write_termination_message(path, &report::termination_message(report));
    }
    match output.format {
        Format::Json => print_stdout(&report::json::render(report)),
        Format::Pretty | Format::Plain => {
            if report.error.is_none() {
                terminal.print(&terminal::render_summary(report, terminal.styles()));
            }
        }
    }
    ok
}
