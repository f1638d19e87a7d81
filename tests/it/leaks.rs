//! The leak sweep. Every value of every Secret of every scenario of the bed is planted in every
//! text a server echoes: container logs (current and previous), container, condition, CNPG and
//! Argo CD messages; on the full stack also vLLM error bodies that the real LiteLLM proxy
//! relays, a failed migration's logs in the real PostgreSQL, and PostgreSQL's own login error
//! quoting the user. In raw, base64, URL-encoded and JSON-escaped form, none may reach stdout,
//! stderr, JUnit, the JSON document or the termination message, not even 12 characters of it
//! (harness::forbidden), and the terminal attack planted with it arrives neutralised.
//!
//! Each planted text starts with a marker, and the sweep asserts the markers do reach the
//! reports: the secrets' absence then means they were scrubbed, not that nobody looked.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::harness::{
    Run, assert_no_leaks, plant, planted_text, raw_controls, secret_values_of, secret_values_read,
    suite_secret_values, text, verify_reporting,
};
use crate::support::fake_kube::{FakeKube, load_scenario, scenario_names};
use crate::support::fake_vllm::Fault as VllmFault;
use crate::support::litellm::{alias, litellm_proxy};
use crate::support::postgres::{Scenario as DbScenario, postgres, sql_literal};
use crate::support::stack::{self, Fault};

const LOG_MARKER: &str = "planted-in-a-log";
const MESSAGE_MARKER: &str = "planted-in-a-message";
const VLLM_MARKER: &str = "planted-in-a-vllm-body";
const MIGRATION_MARKER: &str = "planted-in-migration-logs";

/// Scenarios whose reports must show a planted text, by marker: each surface the sweep plants
/// in is seen by at least one check.
const SHOWN: &[(&str, &str)] = &[
    ("crash-loop", LOG_MARKER),
    ("no-endpoints", LOG_MARKER),
    ("migration-failed", LOG_MARKER),
    ("config-error", MESSAGE_MARKER),
    ("unschedulable", MESSAGE_MARKER),
    ("cnpg-unhealthy", MESSAGE_MARKER),
    ("argocd-syncing", MESSAGE_MARKER),
    ("sealedsecret-stale", MESSAGE_MARKER),
    ("namespace-terminating", MESSAGE_MARKER),
    ("migration-failed", MESSAGE_MARKER),
];

/// The checks every report of a run must pass: no secret fragment anywhere, no raw control
/// character where people or CI read it.
#[track_caller]
fn assert_clean(what: &str, values: &[String], run: &Run, terminal: bool) {
    assert_no_leaks(what, values, run);
    let mut read = vec![
        ("junit", run.junit.clone().unwrap_or_default()),
        (
            "termination message",
            run.termination.clone().unwrap_or_default(),
        ),
        ("stderr", run.stderr.clone()),
    ];
    if terminal {
        read.push(("stdout", run.stdout.clone()));
    }
    for (name, output) in read {
        let raw = raw_controls(&output);
        assert!(
            raw.is_empty(),
            "{what}: {raw:?} raw in its {name}:\n{output}"
        );
    }
}

/// Which markers a scenario's reports show, after planting and two runs (json, plain). The
/// values of the Secrets the suite reads are planted; none of the Secrets the run read may come
/// out. (The default suite does not read CNPG's CA Secret: a value never read cannot be
/// scrubbed, README "Security and guarantees".)
fn sweep(name: &str) -> BTreeSet<&'static str> {
    let mut scenario = load_scenario(name);
    let values = suite_secret_values(&scenario, smokecheck::suite::BUILTIN_SUITE);
    plant(
        &mut scenario,
        &planted_text(LOG_MARKER, &values),
        &planted_text(MESSAGE_MARKER, &values),
    );
    let fake = FakeKube::start_with(scenario.clone());
    let json = verify_reporting(&fake, &["--format", "json"], &[]);
    let plain = verify_reporting(&fake, &["--format", "plain"], &[]);
    let read = secret_values_read(&scenario, &fake);
    assert_clean(&format!("{name} (json)"), &read, &json, false);
    assert_clean(&format!("{name} (plain)"), &read, &plain, true);
    [LOG_MARKER, MESSAGE_MARKER]
        .into_iter()
        .filter(|m| json.stdout.contains(m))
        .collect()
}

#[test]
fn no_scenario_leaks_a_secret_planted_in_any_server_text() {
    let names = scenario_names();
    let next = Mutex::new(names.iter());
    let shown: Mutex<Vec<(String, BTreeSet<&str>)>> = Mutex::default();
    // Runs are network-bound: a few at a time keep the sweep short on a busy machine.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let name = match next.lock().map(|mut it| it.next().cloned()) {
                        Ok(Some(name)) => name,
                        _ => break,
                    };
                    let markers = sweep(&name);
                    if let Ok(mut all) = shown.lock() {
                        all.push((name, markers));
                    }
                }
            });
        }
    });
    let shown = shown.into_inner().unwrap_or_default();
    assert_eq!(shown.len(), names.len(), "every scenario was swept");
    for (scenario, marker) in SHOWN {
        assert!(
            shown
                .iter()
                .any(|(name, markers)| name == scenario && markers.contains(marker)),
            "{scenario}: its report shows no {marker}, so the sweep proves nothing there: {shown:?}"
        );
    }
}

/// The stack's own fault for the sweep: crash-loop (a previous log to quote), a failed
/// migration in the real PostgreSQL, and an alias whose fake vLLM answers 503.
const LEAK: Fault = Fault {
    name: "leak",
    scenario: "crash-loop",
    alias: alias::STACK_LEAK,
    database: DbScenario::FailedMigration,
    also_served: &[],
    what: "servers that echo secrets",
};

fn verify_stack(stack: &stack::Stack, format: &str, filter: &[&str]) -> Run {
    let suite = stack.suite.display().to_string();
    let mut args = vec!["--suite", suite.as_str()];
    args.extend(filter);
    verify_reporting(&stack.fake, &["--format", format], &args)
}

#[test]
fn the_full_stack_leaks_no_secret_its_servers_echo() {
    let mut values = Vec::new();
    let stack = stack::start_with(LEAK, |scenario| {
        // The stack's suite uses verify-full: it reads the CA Secret too.
        values = suite_secret_values(scenario, &stack::suite_text("any"));
        plant(
            scenario,
            &planted_text(LOG_MARKER, &values),
            &planted_text(MESSAGE_MARKER, &values),
        );
    });
    // vLLM echoes every secret (its own key, the proxy's salt, ...) in its 503 bodies; the
    // proxy relays them to the chat, stream and trimming checks; vllm::models reads them
    // directly.
    let vllm = litellm_proxy().fake(alias::STACK_LEAK);
    vllm.set_error_echo(Some(&planted_text(VLLM_MARKER, &values)));
    vllm.set_fault(VllmFault::Status(503));
    // The failed migration's logs quote them first thing, where the check's excerpt of its
    // first lines reads (PostgreSQL text holds no NUL).
    let logs = planted_text(MIGRATION_MARKER, &values).replace('\0', "");
    postgres().superuser_sql(
        &stack.db.name,
        &format!(
            "UPDATE \"_prisma_migrations\" SET logs = {} || chr(10) || logs WHERE finished_at IS NULL AND rolled_back_at IS NULL;",
            sql_literal(&logs)
        ),
    );
    let json = verify_stack(&stack, "json", &[]);
    let plain = verify_stack(&stack, "plain", &[]);
    let read = secret_values_read(stack.fake.scenario(), &stack.fake);
    assert!(
        read.len() >= 6,
        "the stack's run read its Secrets: {read:?}"
    );
    assert_clean("stack (json)", &read, &json, false);
    assert_clean("stack (plain)", &read, &plain, true);
    vllm.set_fault(VllmFault::None);
    vllm.set_error_echo(None);

    for (check, marker) in [
        ("kubernetes::pods::litellm", LOG_MARKER),
        ("database::migrations", MIGRATION_MARKER),
        ("vllm::models", VLLM_MARKER),
        ("e2e::chat::stack-leak", VLLM_MARKER),
    ] {
        let c = json.check(check);
        assert_eq!(c["status"], "failed", "{check}: {c:#}");
        assert!(
            text(&c, "summary").contains(marker) || text(&c, "details").contains(marker),
            "{check} shows no {marker}: {c:#}"
        );
    }
    assert_eq!(
        json.check("e2e::chat::stack-leak")["cause"],
        "upstream_error",
        "the proxy relayed vLLM's 503"
    );
}

#[test]
fn postgres_quoting_the_secrets_user_leaks_nothing() {
    // The Secret's user (a Secret value, not a name the report prints) is one PostgreSQL does
    // not know: its login error quotes it.
    let role = "leaky_role_5c0e7b19";
    let mut values = Vec::new();
    let stack = stack::start_with(stack::fault("healthy").expect("fault"), |scenario| {
        scenario.set_secret_value(
            "litellm",
            "cloudnative-pg-cluster-litellm",
            "username",
            role,
        );
        values = secret_values_of(scenario);
    });
    assert!(values.iter().any(|v| v == role), "{values:?}");
    for format in ["json", "plain"] {
        let run = verify_stack(&stack, format, &["database::connect"]);
        assert_clean(
            &format!("login ({format})"),
            &values,
            &run,
            format == "plain",
        );
        assert!(
            run.stdout
                .contains("password authentication failed for user <redacted>"),
            "{}",
            run.stdout
        );
    }
}
