//! The continuous-checks bed proves itself before anything of smokecheck exports metrics: a
//! real Prometheus scrapes a fixed endpoint and answers queries, targets and reloads through the
//! helpers; promtool's metrics lint is reachable and strict; a real Pushgateway keeps what is
//! pushed under its grouping key, as PUT and POST define, and Prometheus scrapes it back.

use std::time::Duration;

use crate::support::prometheus::{FixedMetrics, Prometheus, ScrapeJob, check_metrics, free_port};
use crate::support::pushgateway::{Push, Pushgateway};

/// Scrapes happen every second; a loaded 2-core machine may take many times that.
const PATIENCE: Duration = Duration::from_secs(60);

fn exposition(chat: u8) -> String {
    format!(
        "# HELP smokecheck_check_success 1 if the check passed in the last run, 0 if it failed.\n\
         # TYPE smokecheck_check_success gauge\n\
         smokecheck_check_success{{check=\"e2e::chat::gpt\",layer=\"e2e\"}} {chat}\n\
         smokecheck_check_success{{check=\"kubernetes::services::vllm/vllm\",layer=\"kubernetes\"}} 1\n"
    )
}

#[test]
fn prometheus_scrapes_a_fixed_endpoint_and_sees_its_values_change() {
    let endpoint = FixedMetrics::serve(&exposition(1));
    let prom = Prometheus::start(&[ScrapeJob::new("fixed", &[endpoint.addr()])]);
    let target = prom.wait_target_up("fixed", PATIENCE);
    assert_eq!(
        target.scrape_url,
        format!("http://{}/metrics", endpoint.addr())
    );
    let chat = prom.wait_value(
        r#"smokecheck_check_success{check="e2e::chat::gpt"}"#,
        1.0,
        PATIENCE,
    );
    assert_eq!(chat.label("layer"), Some("e2e"));
    assert_eq!(chat.label("job"), Some("fixed"));
    assert_eq!(
        chat.label("instance"),
        Some(endpoint.addr().to_string().as_str())
    );
    // Check names with `::` and `/` are label values like any other.
    prom.wait_value(
        r#"smokecheck_check_success{check="kubernetes::services::vllm/vllm",layer="kubernetes"}"#,
        1.0,
        PATIENCE,
    );

    endpoint.set(&exposition(0));
    prom.wait_value(
        r#"smokecheck_check_success{check="e2e::chat::gpt"}"#,
        0.0,
        PATIENCE,
    );
    assert!(endpoint.scrapes() >= 2, "{} scrapes", endpoint.scrapes());
    let both = prom.query("sum(smokecheck_check_success)");
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].value, 1.0);
}

#[test]
fn prometheus_reports_a_refused_target_down_with_its_error() {
    // Bound, then released: nothing listens there any more.
    let gone = free_port();
    let prom = Prometheus::start(&[ScrapeJob::new("gone", &[gone])]);
    let target = prom.wait_target_health("gone", "down", PATIENCE);
    assert!(
        target.last_error.contains("connection refused"),
        "{target:?}"
    );
    prom.wait_value(r#"up{job="gone"}"#, 0.0, PATIENCE);
    let bad = prom.try_query("sum(").expect_err("a parse error");
    assert!(
        bad.contains("bad_data") && bad.contains("parse error"),
        "{bad}"
    );
}

#[test]
fn prometheus_takes_new_targets_on_reload_without_a_restart() {
    let prom = Prometheus::start(&[]);
    assert!(prom.targets().is_empty());
    let endpoint = FixedMetrics::serve(&exposition(1));
    prom.reconfigure(&[ScrapeJob::new("late", &[endpoint.addr()])]);
    prom.wait_target_up("late", PATIENCE);
    prom.wait_value(
        r#"smokecheck_check_success{job="late",check="e2e::chat::gpt"}"#,
        1.0,
        PATIENCE,
    );
}

#[test]
fn promtool_accepts_a_clean_exposition_and_names_each_problem() {
    check_metrics(&exposition(1)).unwrap_or_else(|p| panic!("{p:?}"));

    // A counter without `_total` parses but fails the lint (exit 3), named.
    let lint = check_metrics(
        "# HELP smokecheck_runs runs\n# TYPE smokecheck_runs counter\nsmokecheck_runs 3\n",
    )
    .expect_err("a lint problem");
    assert_eq!(lint.code, Some(3), "{lint:?}");
    assert!(
        lint.output()
            .contains("smokecheck_runs counter metrics should have \"_total\" suffix"),
        "{lint:?}"
    );

    // A family without HELP: a lint problem too.
    let lint = check_metrics("# TYPE smokecheck_run_success gauge\nsmokecheck_run_success 1\n")
        .expect_err("a lint problem");
    assert!(
        lint.output()
            .contains("smokecheck_run_success no help text"),
        "{lint:?}"
    );

    // Not the text format at all: a parse error (exit 1) naming the line.
    let broken = check_metrics("smokecheck_check_success{check=\"a\" 1\n").expect_err("broken");
    assert_eq!(broken.code, Some(1), "{broken:?}");
    assert!(
        broken
            .output()
            .contains("text format parsing error in line 1"),
        "{broken:?}"
    );
}

const RUN: &str = "# TYPE smokecheck_run_success gauge\nsmokecheck_run_success 1\n";

#[test]
fn pushgateway_keeps_each_push_under_its_grouping_key() {
    let gateway = Pushgateway::start();
    let a = [("job", "smokecheck"), ("instance", "cluster-a")];
    // A slash in a value: one path segment thanks to the base64 form.
    let b = [("job", "smokecheck"), ("instance", "team/cluster-b")];
    let (status, body) = gateway.push(Push::Replace, &a, RUN);
    assert_eq!(status, 200, "{body}");
    let (status, body) = gateway.push(
        Push::Replace,
        &b,
        "# TYPE smokecheck_run_success gauge\nsmokecheck_run_success 0\n",
    );
    assert_eq!(status, 200, "{body}");

    assert_eq!(gateway.groups().len(), 2);
    let group_a = gateway.group(&a).expect("cluster-a's group");
    assert!(group_a.last_push_successful);
    assert_eq!(group_a.value("smokecheck_run_success", &[]), Some(1.0));
    assert_eq!(group_a.families["smokecheck_run_success"].kind, "GAUGE");
    assert!(group_a.push_time().is_some_and(|t| t > 0.0), "{group_a:?}");
    // The grouping key is on every series of the group.
    assert_eq!(
        group_a.families["smokecheck_run_success"].series[0].labels["instance"],
        "cluster-a"
    );
    let group_b = gateway.group(&b).expect("team/cluster-b's group");
    assert_eq!(group_b.value("smokecheck_run_success", &[]), Some(0.0));

    let text = gateway.metrics_text();
    assert!(
        text.contains(r#"smokecheck_run_success{instance="team/cluster-b",job="smokecheck"} 0"#),
        "{text}"
    );

    assert_eq!(gateway.delete(&b), 202);
    assert!(gateway.group(&b).is_none());
    assert!(gateway.group(&a).is_some());
}

#[test]
fn pushgateway_post_keeps_the_families_not_pushed_and_put_replaces_the_group() {
    // What `verify --pushgateway` relies on (ci/monitor/METRICS.md): a failed run pushed with
    // POST leaves the last success in place; PUT would drop it.
    let gateway = Pushgateway::start();
    let key = [("job", "smokecheck"), ("instance", "cluster-a")];
    let success = "# TYPE smokecheck_run_success gauge\nsmokecheck_run_success 1\n\
                   # TYPE smokecheck_last_success_timestamp_seconds gauge\n\
                   smokecheck_last_success_timestamp_seconds 1764806400\n";
    let failure = "# TYPE smokecheck_run_success gauge\nsmokecheck_run_success 0\n";
    assert_eq!(gateway.push(Push::Add, &key, success).0, 200);
    assert_eq!(gateway.push(Push::Add, &key, failure).0, 200);
    let group = gateway.group(&key).expect("the group");
    assert_eq!(group.value("smokecheck_run_success", &[]), Some(0.0));
    assert_eq!(
        group.value("smokecheck_last_success_timestamp_seconds", &[]),
        Some(1_764_806_400.0)
    );

    assert_eq!(gateway.push(Push::Replace, &key, failure).0, 200);
    let group = gateway.group(&key).expect("the group");
    assert_eq!(group.value("smokecheck_run_success", &[]), Some(0.0));
    assert!(
        !group
            .families
            .contains_key("smokecheck_last_success_timestamp_seconds"),
        "{group:?}"
    );
}

#[test]
fn prometheus_scrapes_the_pushgateway_keeping_the_pushers_grouping_key() {
    let gateway = Pushgateway::start();
    let key = [("job", "smokecheck"), ("instance", "cluster-a")];
    assert_eq!(gateway.push(Push::Replace, &key, RUN).0, 200);
    let prom =
        Prometheus::start(&[ScrapeJob::new("pushgateway", &[gateway.addr()]).honor_labels()]);
    prom.wait_target_up("pushgateway", PATIENCE);
    prom.wait_value(
        r#"smokecheck_run_success{job="smokecheck",instance="cluster-a"}"#,
        1.0,
        PATIENCE,
    );
}
