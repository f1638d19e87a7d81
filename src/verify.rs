//! The pipeline as a library call: a [`Plan`] in, a [`RunReport`] out, with [`Event`]s on the
//! way (the run started, each check finished, the run finished). In between: the catalog of
//! checks the suite describes, the cluster connection, what every check relies on (the proxy
//! config, the Secrets registered with the redactor), the endpoints made final (resolved,
//! cluster DNS probed, port-forwards set up) before the checks are handed their context, and
//! the runner.
//!
//! Architecture invariant: no printing, no `std::process::exit`, no signal handlers and no
//! process environment read here: the CLI, `serve` and fleet runs call [`run`] repeatedly and
//! concurrently, each with its own plan, and decide themselves what an outcome means.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use tokio_util::task::AbortOnDropHandle;

use crate::check::{ALIAS, Check, Family};
use crate::checks;
use crate::cluster::{self, Cluster};
use crate::context::Context;
use crate::destinations::{DEFAULT_CAPS, HttpSlots};
use crate::endpoints::Endpoints;
use crate::events::{Event, Events, RunStart};
use crate::http::Http;
use crate::outcome::{Cause, RunReport};
use crate::plan::{ConnectMode, Plan};
use crate::runner::{self, RunOptions, Stop, Stopper, stop};
use crate::secret::Redactor;
use crate::text::error_chain;

/// Why nothing could be checked: the one `smokecheck::setup` entry of the run's report (exit
/// code 2 on the command line).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SetupFailure {
    /// The kube context, once known.
    pub context: Option<String>,
    pub namespace: String,
    pub cause: Cause,
    /// One line: what went wrong, with its sources.
    pub message: String,
}

impl SetupFailure {
    pub fn new(namespace: impl Into<String>, cause: Cause, message: impl Into<String>) -> Self {
        SetupFailure {
            context: None,
            namespace: namespace.into(),
            cause,
            message: message.into(),
        }
    }

    /// The report of the run that could not start, its message redacted: no secret has been
    /// read yet, but an argument or a plugin's output may hold one.
    pub fn report(&self) -> RunReport {
        let message = Redactor::default().redact(&self.message);
        RunReport::setup_failure(
            self.context.clone(),
            self.namespace.clone(),
            self.cause,
            message,
        )
    }
}

/// The names of the checks `plan` selects, without touching the network (`--list`). Per-alias
/// checks are named from the suite's aliases, or listed as their pattern when the aliases come
/// from the cluster.
pub fn list(plan: &Plan) -> Result<Vec<String>, SetupFailure> {
    let catalog = checks::catalog(&plan.suite);
    let selection = &plan.selection;
    let mut names: Vec<String> = catalog
        .checks
        .iter()
        .map(|c| c.name.clone())
        .filter(|n| selection.selects(n))
        .collect();
    if names.is_empty() && catalog.families.is_empty() {
        return Err(no_match(plan));
    }
    for family in &catalog.families {
        match &plan.suite.litellm.aliases {
            Some(aliases) => names.extend(
                aliases
                    .iter()
                    .map(|a| family.name_for(a))
                    .filter(|n| selection.selects(n)),
            ),
            // Aliases come from the cluster: a filter naming one (`e2e::chat::small`) lists
            // the pattern it would match.
            None if may_select_pattern(plan, family) => names.push(family.pattern.clone()),
            None => {}
        }
    }
    if names.is_empty() {
        return Err(no_match(plan));
    }
    Ok(names)
}

/// The per-alias checks the selection picks, now that the proxy config names the aliases
/// (none already in `selected`). A per-deployment family's check is built for the first
/// selected alias of each deployment and stands for the others; a filter naming one alias's
/// check still selects that alias's own.
fn alias_checks(cx: &Context, families: &[Family], plan: &Plan, selected: &[Check]) -> Vec<Check> {
    let mut built: Vec<(Check, Vec<String>)> = Vec::new();
    let mut first_of: HashMap<(usize, Vec<[u8; 32]>), usize> = HashMap::new();
    for alias in cx.aliases() {
        for (f, family) in families.iter().enumerate() {
            let Some(check) = (family.build)(cx, &alias) else {
                continue;
            };
            if !plan.selection.selects(&check.name) || selected.iter().any(|c| c.name == check.name)
            {
                continue;
            }
            let deployment = (family.per_deployment && !plan.every_alias)
                .then(|| cx.proxy_config.as_ref().ok()?.deployment(&alias))
                .flatten();
            if let Some(deployment) = deployment {
                match first_of.entry((f, deployment)) {
                    Entry::Occupied(first) => {
                        built[*first.get()].1.push(alias.clone());
                        continue;
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(built.len());
                    }
                }
            }
            built.push((check, Vec::new()));
        }
    }
    built
        .into_iter()
        .map(|(check, others)| check.stands_for(others))
        .collect()
}

/// Whether the selection may pick an instance of `family` whose alias is not known yet: it
/// selects the pattern, selects everything, or a filter names the family's prefix.
fn may_select_pattern(plan: &Plan, family: &Family) -> bool {
    let selection = &plan.selection;
    selection.selects(&family.pattern)
        || selection.filters.is_empty()
        || selection
            .filters
            .iter()
            .any(|f| f.starts_with(family.pattern.split(ALIAS).next().unwrap_or_default()))
}

/// Whether the selection may pick an instance of `family` once the aliases are known.
fn may_select(plan: &Plan, family: &Family) -> bool {
    match &plan.suite.litellm.aliases {
        Some(aliases) => aliases
            .iter()
            .any(|a| plan.selection.selects(&family.name_for(a))),
        None => may_select_pattern(plan, family),
    }
}

/// The filters select nothing (a typo in a hook's filter must not pass a sync).
fn no_match(plan: &Plan) -> SetupFailure {
    SetupFailure::new(
        plan.suite.namespace.clone(),
        Cause::Setup,
        format!(
            "no check matches {}: `smokecheck verify --list` shows the names",
            plan.selection.describe()
        ),
    )
}

/// Runs the checks `plan` selects against its cluster, emitting each step to `events`, and
/// returns the run's report; or says why nothing could be checked. `stop` ends the run early
/// (its checks report where they were); the plan's deadline ends it too, without stopping
/// `stop` itself, and so does dropping the returned future.
///
/// Needs a multi-thread tokio runtime: the runner blocks a thread of its blocking pool while
/// its checks run on the others.
pub async fn run(
    plan: &Plan,
    events: &mut dyn Events,
    stop: &Stopper,
) -> Result<RunReport, SetupFailure> {
    run_redacting(plan, Redactor::default(), events, stop).await
}

/// [`run`], with the run's secrets registered in `redactor` (a fresh one): a fleet run keeps
/// each cluster's, so that every cluster's report is redacted by all of them.
pub async fn run_redacting(
    plan: &Plan,
    redactor: Redactor,
    events: &mut dyn Events,
    stop: &Stopper,
) -> Result<RunReport, SetupFailure> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let namespace = plan.suite.namespace.clone();
    let catalog = checks::catalog(&plan.suite);
    let mut selected: Vec<_> = catalog
        .checks
        .into_iter()
        .filter(|c| plan.selection.selects(&c.name))
        .collect();
    let families = catalog.families;
    // Per-alias checks are only known once the proxy config is read; a filter may still
    // match them, so "matches nothing" is final here only without families.
    if selected.is_empty() && families.is_empty() {
        return Err(no_match(plan));
    }

    let stopper = stop.child();
    let _stop_on_drop = stopper.stop_on_drop();
    let _deadline = plan
        .deadline
        .map(|d| AbortOnDropHandle::new(tokio::spawn(stop::at_deadline(stopper.clone(), d))));

    let cluster = tokio::select! {
        c = cluster::connect(&plan.kube, plan.timeout) => c.map_err(|e| {
            SetupFailure::new(namespace.clone(), e.cause(), error_chain(&e))
        })?,
        _ = stopper.cancelled() => {
            return Err(SetupFailure::new(
                namespace,
                Cause::Interrupted,
                "stopped before the API server answered",
            ));
        }
    };
    let context = cluster.context.clone();
    let url = cluster.url.clone();

    let suite = Arc::new(plan.suite.clone());
    let cluster = cluster.with_redactor(redactor.clone());
    let mut endpoints = Endpoints::resolve(&plan.suite, &plan.endpoints);
    // Only runs that talk to LiteLLM, vLLM or the database need their addresses reachable:
    // known before the proxy config is read (its aliases' checks all do), so the port-forwards
    // are set up while it is.
    let reaches = selected.iter().any(|c| c.layer.reaches_endpoints())
        || families.iter().any(|f| may_select(plan, f));
    // The setup reads go out together: the proxy config, the Secrets and the CA (what every
    // check relies on), the routes users come in by, and the port-forwards. A deadline or a
    // signal during them still ends the run with its reports, and so does --timeout (kube's
    // read timeout is an idle one: a server trickling a byte a second would hold them forever).
    let setup = async {
        tokio::join!(
            tokio::time::timeout(plan.timeout, Context::read_shared(&suite, &cluster)),
            discover_routes(plan, &suite, &cluster),
            async {
                if reaches {
                    reach_endpoints(&mut endpoints, plan, &cluster).await;
                }
            },
        )
    };
    let (proxy_config, discovered) = match tokio::select! {
        done = setup => Some(done),
        _ = stopper.cancelled() => None,
    } {
        Some((Ok(proxy_config), discovered, ())) => (proxy_config, discovered),
        // Every check needs these reads (the redactor's secrets above all, before any server
        // text is shown): an API server too slow for them is one that cannot be checked, as at
        // connect.
        Some((Err(_), _, ())) => {
            return Err(SetupFailure {
                context: Some(context),
                ..SetupFailure::new(
                    namespace,
                    Cause::Timeout,
                    format!(
                        "reading the suite's proxy config and Secrets from the API server at {url} did not finish within {}",
                        humantime::format_duration(plan.timeout)
                    ),
                )
            });
        }
        None => {
            let stop = stopper.reason().unwrap_or(Stop::Signal("a signal"));
            let report = RunReport {
                context: Some(context),
                namespace,
                started_at,
                duration: started.elapsed(),
                checks: runner::not_run(&selected, stop),
                error: None,
            };
            events.event(&Event::RunFinished(report.clone()));
            return Ok(report);
        }
    };
    // The run's caps on LiteLLM and each vLLM, shared by every HTTP client it builds.
    let slots = Arc::new(HttpSlots::new(DEFAULT_CAPS));
    let mut cx = Context {
        suite,
        cluster,
        redactor,
        endpoints,
        proxy_config,
        hook: plan.hook.clone(),
        http: Http::new(&plan.proxies).with_slots(Arc::clone(&slots)),
        answers: Default::default(),
        alias_failures: Default::default(),
    };
    let per_alias = alias_checks(&cx, &families, plan, &selected);
    selected.extend(per_alias);
    // The routes users come in by are only known once listed (a filter may name one by its
    // host). A listing the selection does not need fails only a check it does not select.
    if let Some(discovered) = discovered {
        for check in checks::ingress_checks(&plan.suite, &discovered, &cx.endpoints.ingress_hosts())
        {
            if plan.selection.selects(&check.name) && !selected.iter().any(|c| c.name == check.name)
            {
                selected.push(check);
            }
        }
    }
    if selected.is_empty() {
        return Err(no_match(plan));
    }
    // An https:// URL through a port-forward keeps the Service's name; the client connects it
    // to the local port.
    let local_names = cx.endpoints.local_names();
    if !local_names.is_empty() {
        cx.http = Http::resolving(&plan.proxies, &local_names).with_slots(Arc::clone(&slots));
    }
    slots.set_litellm(&cx.endpoints.litellm.url("/"));
    let forwards = cx.endpoints.lifetime();

    events.event(&Event::RunStarted(RunStart {
        context: context.clone(),
        namespace: namespace.clone(),
        checks: selected.len(),
        notes: cx
            .endpoints
            .forwards()
            .map(|f| f.to_string())
            .chain(cx.endpoints.forward_errors.iter().cloned())
            .collect(),
    }));
    let options = RunOptions {
        timeout: plan.timeout,
        wait: plan.wait,
        threads: plan.threads,
        started,
    };
    let results = runner::run(Arc::new(cx), selected, &options, &stopper, events).await;
    // Connections a timed-out check left behind (a session waiting on a lock) end with the run,
    // closed properly, before the report says it is over.
    forwards.close().await;
    let report = RunReport {
        context: Some(context),
        namespace,
        started_at,
        duration: started.elapsed(),
        checks: results,
        error: None,
    };
    events.event(&Event::RunFinished(report.clone()));
    Ok(report)
}

/// The Ingresses and IngressRoutes in front of LiteLLM, when the suite has routes to check;
/// a listing slower than --timeout is the problem the route checks report.
async fn discover_routes(
    plan: &Plan,
    suite: &crate::suite::Suite,
    cluster: &Cluster,
) -> Option<checks::kubernetes::ingress::Discovered> {
    let ingress = plan.suite.litellm.ingress.as_ref()?;
    let listed = tokio::time::timeout(
        plan.timeout,
        checks::kubernetes::ingress::discover(cluster, suite, ingress),
    )
    .await;
    Some(
        listed.unwrap_or_else(|_| checks::kubernetes::ingress::Discovered {
            routes: Vec::new(),
            problem: Some(crate::outcome::Failure::new(
                Cause::Timeout,
                format!(
                    "listing the Ingresses and IngressRoutes did not finish within {}",
                    humantime::format_duration(plan.timeout)
                ),
            )),
        }),
    )
}

/// Sets up port-forwards where the endpoints are not reachable directly: `--connect
/// port-forward`, or `auto` outside the cluster when its DNS names do not resolve here.
async fn reach_endpoints(endpoints: &mut Endpoints, plan: &Plan, cluster: &Cluster) {
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
