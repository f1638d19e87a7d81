//! The pipeline as a library call, the way `smokecheck serve` and fleet runs will use it:
//! [`smokecheck::verify::run`] called more than once in one process (one after another on the
//! same runtime and stopper, and two at once), each with a recording [`Events`] sink. Every
//! report must be its own cluster's, and every run must tell its sink the same story in the
//! same order: started (with the check count), one finished per check, finished (with the
//! report it returns).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use smokecheck::events::{Event, Events, RunStart};
use smokecheck::outcome::{Cause, RunReport, Status};
use smokecheck::plan::{
    self, ConnectMode, Format, KubeSelection, Output, Plan, Proxies, Selection,
};
use smokecheck::runner::Stopper;
use smokecheck::verify;

use crate::harness::{CLUSTER_LAYERS, assert_no_leaks_in, secret_values, secret_values_read};
use crate::support::fake_kube::{FakeKube, load_scenario};
use crate::support::litellm::alias;
use crate::support::stack;

/// An [`Events`] consumer that keeps everything it is told, in order.
#[derive(Default)]
struct Recorder {
    events: Vec<Event>,
}

impl Events for Recorder {
    fn event(&mut self, event: &Event) {
        self.events.push(event.clone());
    }
}

/// A plan built directly, as a library caller would (no command line, nothing read from this
/// process's environment): the suite at `suite` (or the built-in one), the cluster of
/// `kubeconfig`, the checks `filters` select.
fn plan_for(kubeconfig: &Path, suite: Option<&Path>, filters: &[&str]) -> Plan {
    Plan {
        suite: plan::load_suite(suite, None).expect("the suite loads"),
        selection: Selection {
            filters: filters.iter().map(|f| f.to_string()).collect(),
            ..Selection::default()
        },
        list: false,
        kube: KubeSelection {
            kubeconfig: Some(kubeconfig.to_path_buf()),
            context: None,
        },
        endpoints: BTreeMap::new(),
        // Nothing in the pipeline renders: reporters are the caller's.
        output: Output {
            format: Format::Json,
            color: false,
            progress_bar: false,
            junit: None,
            termination_log: None,
        },
        timeout: Duration::from_secs(30),
        deadline: None,
        wait: None,
        threads: None,
        every_alias: false,
        connect: ConnectMode::Auto,
        hook: None,
        in_cluster: false,
        proxies: Proxies::default(),
    }
}

/// The runtime the pipeline needs (multi-thread: the runner blocks one of its threads).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Asserts `events` are the run's story for `report`, and returns how the run started: first
/// RunStarted with the check count, then exactly one CheckFinished per check of the report
/// (same status and cause; in the order they finished, so compared by name), last RunFinished
/// carrying the very report `verify::run` returned.
#[track_caller]
fn assert_story(report: &RunReport, events: &[Event]) -> RunStart {
    let Some((Event::RunStarted(start), rest)) = events.split_first() else {
        panic!("the first event is not RunStarted: {events:#?}");
    };
    let Some((Event::RunFinished(finished), middle)) = rest.split_last() else {
        panic!("the last event is not RunFinished: {events:#?}");
    };
    assert_eq!(finished, report, "RunFinished carries the returned report");
    assert_eq!(
        start.checks,
        report.checks.len(),
        "RunStarted's check count"
    );
    assert_eq!(Some(&start.context), report.context.as_ref());
    assert_eq!(start.namespace, report.namespace);
    assert_eq!(
        middle.len(),
        report.checks.len(),
        "one CheckFinished per check: {middle:#?}"
    );
    let mut seen = BTreeSet::new();
    for event in middle {
        let Event::CheckFinished(result) = event else {
            panic!("between start and finish, only CheckFinished: {event:#?}");
        };
        assert!(seen.insert(result.name.clone()), "{} twice", result.name);
        let entry = report
            .checks
            .iter()
            .find(|c| c.name == result.name)
            .unwrap_or_else(|| panic!("{} finished but is not in the report", result.name));
        assert_eq!(
            (result.status, result.cause),
            (entry.status, entry.cause),
            "{}",
            result.name
        );
    }
    start.clone()
}

/// The report's check, by name; panics listing the names when absent.
#[track_caller]
fn check<'a>(report: &'a RunReport, name: &str) -> &'a smokecheck::outcome::CheckResult {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| {
            let names: Vec<_> = report.checks.iter().map(|c| &c.name).collect();
            panic!("no check {name} in {names:?}")
        })
}

/// Every text a report and its events carry (names, summaries, details, hints, skip reasons,
/// earlier attempts, the run's notes): what a consumer could show, and so what the leak sweep
/// reads.
fn shown(report: &RunReport, events: &[Event]) -> String {
    let mut results: Vec<&smokecheck::outcome::CheckResult> = report.checks.iter().collect();
    let mut out = format!("{report:?}\n");
    for event in events {
        match event {
            Event::RunStarted(start) => out.push_str(&start.notes.join("\n")),
            Event::CheckFinished(result) => results.push(result),
            Event::RunFinished(finished) => results.extend(&finished.checks),
        }
    }
    for r in results {
        for text in [&r.name, &r.summary]
            .into_iter()
            .chain(r.details.as_ref())
            .chain(r.hint.as_ref())
            .chain(r.skip_reason.as_ref())
            .chain(&r.failed_attempts)
        {
            out.push_str(text);
            out.push('\n');
        }
    }
    out
}

/// The checks that did not pass, for a failure message.
fn not_passed(report: &RunReport) -> Vec<String> {
    report
        .checks
        .iter()
        .filter(|c| c.status != Status::Passed)
        .map(|c| format!("{} {:?} {:?}: {}", c.name, c.status, c.cause, c.summary))
        .collect()
}

#[test]
fn verify_run_twice_in_one_process_healthy_then_a_rotated_vllm_key() {
    // Every layer, through port-forwards (the laptop's stack), twice on one runtime with one
    // stopper, as `serve` would run it on an interval.
    let rt = runtime();
    let stopper = Stopper::default();

    let healthy = stack::start(stack::fault("healthy").expect("fault"));
    let plan = plan_for(&healthy.kubeconfig, Some(&healthy.suite), &[]);
    let mut first = Recorder::default();
    let report = rt
        .block_on(verify::run(&plan, &mut first, &stopper))
        .expect("the healthy stack can be checked");
    assert!(
        not_passed(&report).is_empty(),
        "not passed: {:#?}",
        not_passed(&report)
    );
    assert_eq!(report.context.as_deref(), Some("fake-healthy"));
    assert_eq!(report.namespace, "litellm");
    assert_eq!(report.error, None);
    let layers: BTreeSet<&str> = report.checks.iter().map(|c| c.layer.as_str()).collect();
    for layer in [
        "platform",
        "kubernetes",
        "database",
        "litellm",
        "vllm",
        "e2e",
    ] {
        assert!(layers.contains(layer), "no {layer} check ran: {layers:?}");
    }
    let start = assert_story(&report, &first.events);
    // No cluster DNS here: the run says how it reached each endpoint.
    for service in [
        "litellm/litellm",
        "vllm/vllm",
        "litellm/cloudnative-pg-cluster-rw",
    ] {
        assert!(
            start
                .notes
                .iter()
                .any(|n| n.starts_with(&format!("{service} via port-forward to pod"))),
            "{service}: {:?}",
            start.notes
        );
    }
    assert!(
        !stopper.is_stopped(),
        "a finished run leaves the caller's stopper alone"
    );

    // An alias of its own: the laptop tests leave stack-key-mismatch in LiteLLM's cooldown.
    let rotated = stack::start(stack::Fault {
        alias: alias::PIPELINE_KEY_MISMATCH,
        ..stack::fault("key-mismatch").expect("fault")
    });
    let plan = plan_for(&rotated.kubeconfig, Some(&rotated.suite), &[]);
    let mut second = Recorder::default();
    let faulty = rt
        .block_on(verify::run(&plan, &mut second, &stopper))
        .expect("the faulty stack can be checked");
    assert_eq!(faulty.context.as_deref(), Some("fake-key-mismatch"));
    assert_story(&faulty, &second.events);
    let cause = |name: &str| {
        let c = check(&faulty, name);
        assert_eq!(c.status, Status::Failed, "{c:#?}");
        c.cause
    };
    assert_eq!(
        cause("kubernetes::secrets::vllm-api-key"),
        Some(Cause::KeyMismatch)
    );
    assert_eq!(cause("vllm::models"), Some(Cause::UpstreamAuth));
    // Both chats name vLLM's 401: the one that met it and the one whose request then met the
    // cooldown it put the alias in (they run side by side; either may be first). The trimming
    // checks are skipped after vllm::models.
    for suffix in ["", "::stream"] {
        let name = format!("e2e::chat::{}{suffix}", alias::PIPELINE_KEY_MISMATCH);
        assert_eq!(cause(&name), Some(Cause::UpstreamAuth), "{name}");
    }
    assert_eq!(check(&faulty, "database::connect").status, Status::Passed);
    // Per-alias checks come from each run's own cluster (its proxy config): none of the first
    // run's carried over.
    let healthy_chat = format!("e2e::chat::{}", alias::HEALTHY);
    check(&report, &healthy_chat);
    assert!(
        faulty.checks.iter().all(|c| c.name != healthy_chat),
        "{healthy_chat} in the second run"
    );
    for (bed, report, events) in [
        (&healthy, &report, &first.events),
        (&rotated, &faulty, &second.events),
    ] {
        let read = secret_values_read(bed.fake.scenario(), &bed.fake);
        assert!(!read.is_empty(), "{}: no Secret was read", bed.fault.name);
        assert_no_leaks_in(bed.fault.name, &read, &shown(report, events));
    }
}

#[test]
fn two_runs_at_once_each_report_their_own_cluster() {
    // A fleet run: two clusters checked concurrently on one runtime, each run with its own
    // sink, redactor and report.
    let healthy = FakeKube::start("healthy");
    // The crashing container's last log line echoes its cluster's secrets: what only that
    // run's redactor knows to scrub.
    let mut crash_loop = load_scenario("crash-loop");
    let secrets = secret_values("crash-loop");
    for ((_, _, file), text) in crash_loop.logs.iter_mut() {
        if file == "litellm.previous.log" {
            text.push_str(&format!("DEBUG: connecting with {}\n", secrets.join(" ")));
        }
    }
    let crashing = FakeKube::start_with(crash_loop);
    let dirs = [tempfile::tempdir(), tempfile::tempdir()].map(|d| d.expect("temp dir"));
    let healthy_kc = healthy.write_kubeconfig(dirs[0].path());
    let crashing_kc = crashing.write_kubeconfig(dirs[1].path());
    let healthy_plan = plan_for(&healthy_kc, None, &CLUSTER_LAYERS);
    let crashing_plan = plan_for(&crashing_kc, None, &CLUSTER_LAYERS);
    let (mut a, mut b) = (Recorder::default(), Recorder::default());
    let stopper = Stopper::default();
    let (good, bad) = runtime().block_on(async {
        tokio::join!(
            verify::run(&healthy_plan, &mut a, &stopper),
            verify::run(&crashing_plan, &mut b, &stopper),
        )
    });
    let good = good.expect("the healthy cluster can be checked");
    let bad = bad.expect("the crash-looping cluster can be checked");

    assert_eq!(good.context.as_deref(), Some("fake-healthy"));
    assert!(good.checks.len() >= 14, "{:#?}", good.checks);
    assert!(
        not_passed(&good).is_empty(),
        "not passed: {:#?}",
        not_passed(&good)
    );
    assert_story(&good, &a.events);

    assert_eq!(bad.context.as_deref(), Some("fake-crash-loop"));
    assert_story(&bad, &b.events);
    let pods = check(&bad, "kubernetes::pods::litellm");
    assert_eq!(pods.status, Status::Failed, "{pods:#?}");
    assert_eq!(pods.cause, Some(Cause::CrashLoop));
    assert!(
        pods.summary
            .contains("CrashLoopBackOff (7 restarts, last exit: Error (exit code 1))"),
        "{}",
        pods.summary
    );
    let details = pods.details.as_deref().unwrap_or_default();
    assert!(
        details.contains("DEBUG: connecting with <redacted>"),
        "this run's redactor scrubbed its own cluster's secrets: {details}"
    );
    assert_eq!(
        check(&bad, "kubernetes::services::litellm").status,
        Status::Passed
    );
    // Each run's redactor knows its own cluster's Secrets: nothing of either leaks.
    assert_no_leaks_in(
        "healthy",
        &secret_values("healthy"),
        &shown(&good, &a.events),
    );
    assert_no_leaks_in("crash-loop", &secrets, &shown(&bad, &b.events));
}
