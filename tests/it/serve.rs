//! `smokecheck serve` and `verify --pushgateway` (issue 12) against real parts: serve runs the
//! bed's whole stack on a short interval (debug builds honour SMOKECHECK_TEST_MIN_INTERVAL) and
//! a real Prometheus scrapes it: every check is 1 after a healthy run, the check a rotated vLLM
//! key breaks goes to 0 by the next run and back once the key is restored; promtool accepts
//! `/metrics`; `/report.json` is the `verify --format json` document; no secret is in either;
//! SIGTERM ends serve with exit 0. A real Pushgateway receives `verify --pushgateway`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{command, forbidden, secret_values_of, verify_json};
use crate::support::fake_kube::FakeKube;
use crate::support::litellm::{OTHER_VLLM_KEY, VLLM_KEY, alias, http_get, litellm_proxy};
use crate::support::postgres::Scenario as DbScenario;
use crate::support::prometheus::{Prometheus, ScrapeJob, check_metrics, wait_for};
use crate::support::pushgateway::Pushgateway;
use crate::support::stack::{self, Fault};

/// Generous: the shared 2-core machine may be building while serve runs the whole stack.
const PATIENCE: Duration = Duration::from_secs(120);
/// serve's interval in these tests (allowed by SMOKECHECK_TEST_MIN_INTERVAL).
const INTERVAL: &str = "6s";

/// A `smokecheck serve` child, killed when dropped (unless it already exited).
struct Serve {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Serve {
    /// Starts `serve --kubeconfig K ARGS` listening on a free loopback port; waits for it to
    /// say where it listens.
    fn start(dir: &Path, kubeconfig: &Path, args: &[&str]) -> Serve {
        let log = dir.join("serve.log");
        let file = std::fs::File::create(&log).expect("serve log");
        let mut cmd: Command = command();
        cmd.arg("serve")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .env("SMOKECHECK_TEST_MIN_INTERVAL", "1s")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        let child = cmd.spawn().expect("spawning smokecheck serve");
        let mut serve = Serve {
            child,
            addr: "127.0.0.1:1".parse().expect("addr"),
            log,
        };
        serve.addr = wait_for(
            "serve to say where it listens",
            Duration::from_secs(30),
            || serve.log_text(),
            || {
                let text = std::fs::read_to_string(&serve.log).unwrap_or_default();
                text.lines()
                    .find_map(|l| l.split("listening on http://").nth(1))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| text.clone())
            },
        );
        serve
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// SIGTERM, then the exit code (bounded wait).
    fn terminate(&mut self, patience: Duration) -> Option<i32> {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < patience {
            if let Some(status) = self.child.try_wait().expect("waiting on serve") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "serve did not exit within {patience:?} of SIGTERM:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET with an `Accept` header: status, headers and body.
fn get_accepting(addr: SocketAddr, path: &str, accept: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, head.to_string(), body.to_string())
}

/// The value of the series `name{labels}` (labels as written in the exposition), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(k, _)| *k == series)
        .and_then(|(_, v)| v.parse().ok())
}

/// Runs ended so far, by serve's own counter.
fn runs(text: &str) -> f64 {
    ["passed", "failed", "error"]
        .iter()
        .filter_map(|r| sample(text, &format!("smokecheck_runs_total{{result=\"{r}\"}}")))
        .sum()
}

const MODELS_SUCCESS: &str = "smokecheck_check_success{check=\"vllm::models\",layer=\"vllm\"}";

#[test]
fn serve_refuses_an_interval_below_its_minimum_and_a_deadline_past_it() {
    for (args, flag) in [
        (&["--interval", "10s"][..], "--interval"),
        (&["--interval", "5m", "--deadline", "5m"][..], "--deadline"),
        (&["--listen", "nowhere"][..], "--listen"),
    ] {
        // No SMOKECHECK_TEST_MIN_INTERVAL here: the documented minimum of 30 s holds.
        let out = command()
            .arg("serve")
            .args(args)
            .output()
            .expect("running serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with(&format!("error: {flag}: ")), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn prometheus_sees_every_check_pass_then_the_rotated_key_fail_within_a_run_and_heal() {
    let stack = stack::start(Fault {
        name: "serve-live",
        scenario: "healthy",
        alias: alias::SERVE_LIVE,
        database: DbScenario::Migrated,
        what: "a healthy stack whose vLLM key the test rotates",
        also_served: &[],
    });
    let fake = litellm_proxy().fake(alias::SERVE_LIVE);
    let suite = stack.suite.display().to_string();
    let mut serve = Serve::start(
        stack.dir(),
        &stack.kubeconfig,
        &["--suite", &suite, "--interval", INTERVAL],
    );
    assert_eq!(serve.get("/healthz").0, 200);
    let prom = Prometheus::start(&[ScrapeJob::new("smokecheck-serve", &[serve.addr])]);
    prom.wait_target_up("smokecheck-serve", PATIENCE);

    // A healthy run: every check 1, seen by Prometheus.
    let checks = wait_for(
        "every check of a passing run at 1 in Prometheus",
        PATIENCE,
        || serve.log_text(),
        || {
            let all = prom.try_query("count(smokecheck_check_success)")?;
            let up = prom.try_query("count(smokecheck_check_success == 1)")?;
            match (all.first(), up.first()) {
                (Some(a), Some(u)) if a.value >= 30.0 && a.value == u.value => Ok(a.value),
                _ => Err(format!("all {all:?}, passing {up:?}")),
            }
        },
    );
    assert_eq!(serve.get("/readyz").0, 200);

    // What serve exports passes promtool's lint, in both formats.
    let (status, metrics) = serve.get("/metrics");
    assert_eq!(status, 200);
    check_metrics(&metrics).unwrap_or_else(|p| panic!("promtool: {p:?}\n{metrics}"));
    let (status, head, open) = get_accepting(
        serve.addr,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    assert_eq!(status, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(open.trim_end().ends_with("# EOF"), "{open}");
    // At most 6 series per check, 5 per alias and 10 per run (METRICS.md).
    let series = metrics.lines().filter(|l| !l.starts_with('#')).count();
    assert!(
        series as f64 <= 6.0 * checks + 5.0 + 10.0,
        "{series} series:\n{metrics}"
    );

    // /report.json: the verify --format json document of the last run.
    let (status, report) = serve.get("/report.json");
    assert_eq!(status, 200);
    let report: Value = serde_json::from_str(&report).expect("/report.json is JSON");
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["summary"]["failed"], 0, "{report:#}");
    assert_eq!(
        report["checks"].as_array().map(Vec::len),
        Some(checks as usize),
        "{report:#}"
    );

    // The fault: vLLM's key rotated without LiteLLM's copy. The run that starts after it fails
    // vllm::models (counted in runs, not seconds: the run in progress may still pass).
    let before = runs(&serve.get("/metrics").1);
    fake.set_api_key(OTHER_VLLM_KEY);
    let after = wait_for(
        "vllm::models at 0 on /metrics",
        PATIENCE,
        || serve.log_text(),
        || {
            let text = serve.get("/metrics").1;
            match sample(&text, MODELS_SUCCESS) {
                Some(0.0) => Ok(text),
                other => Err(format!("{MODELS_SUCCESS} = {other:?}")),
            }
        },
    );
    assert!(
        runs(&after) <= before + 2.0,
        "the check failed only {} runs after the fault",
        runs(&after) - before
    );
    assert!(
        after.contains(
            "smokecheck_check_failure_info{check=\"vllm::models\",layer=\"vllm\",cause=\"upstream_auth\"}"
        ),
        "{after}"
    );
    prom.wait_value(
        "smokecheck_check_success{check=\"vllm::models\"}",
        0.0,
        PATIENCE,
    );
    let (_, failing) = serve.get("/report.json");
    let failing: Value = serde_json::from_str(&failing).expect("JSON");
    let models = failing["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "vllm::models"))
        .expect("vllm::models in the report");
    assert_eq!(models["cause"], "upstream_auth", "{models:#}");

    // No secret of the stack in anything serve served, the failing run's included.
    let values = secret_values_of(stack.fake.scenario());
    let served = format!(
        "{}\n{}\n{}\n{}",
        serve.get("/metrics").1,
        open,
        serve.get("/report.json").1,
        serve.log_text()
    );
    let leaks: Vec<String> = forbidden(&values)
        .into_iter()
        .filter(|f| served.contains(f.as_str()))
        .collect();
    assert!(leaks.is_empty(), "secret fragments served: {leaks:?}");

    // Healed: back to 1 once the key matches again.
    fake.set_api_key(VLLM_KEY);
    prom.wait_value(
        "smokecheck_check_success{check=\"vllm::models\"}",
        1.0,
        PATIENCE,
    );

    // SIGTERM: the run in progress ends or is abandoned, and serve exits 0.
    assert_eq!(
        serve.terminate(Duration::from_secs(60)),
        Some(0),
        "{}",
        serve.log_text()
    );
    assert!(
        serve.log_text().contains("serve: stopped"),
        "{}",
        serve.log_text()
    );
}

#[test]
fn serve_is_alive_but_not_ready_until_a_first_run_has_ended() {
    // An API server that takes long to answer keeps the first run going.
    let fake = FakeKube::start("healthy");
    fake.delay_requests("/api", Duration::from_secs(20));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let mut serve = Serve::start(
        dir.path(),
        &kubeconfig,
        &["kubernetes::pods", "--interval", "60s"],
    );
    assert_eq!(serve.get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(serve.get("/readyz").0, 503);
    assert_eq!(serve.get("/report.json").0, 503);
    assert_eq!(serve.get("/nothing").0, 404);
    // SIGTERM during that first run: exit 0, without waiting for the API server.
    let started = Instant::now();
    assert_eq!(
        serve.terminate(Duration::from_secs(60)),
        Some(0),
        "{}",
        serve.log_text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn verify_pushes_its_run_to_a_real_pushgateway_grouped_by_job_and_instance() {
    let gateway = Pushgateway::start();
    let healthy = FakeKube::start("healthy");
    let url = gateway.url();
    let passed = verify_json(&healthy, &["kubernetes::pods", "--pushgateway", &url]);
    assert_eq!(passed.code, 0, "{}", passed.all_output());
    let key = [("job", "smokecheck"), ("instance", "fake-healthy")];
    let group = gateway
        .group(&key)
        .unwrap_or_else(|| panic!("no group {key:?} in {:?}", gateway.groups()));
    assert_eq!(
        group.value("smokecheck_run_success", &[]),
        Some(1.0),
        "{}\n{:?}",
        passed.stderr,
        group.families.keys()
    );
    let success = group
        .value("smokecheck_last_success_timestamp_seconds", &[])
        .expect("a successful run pushes its time");
    let checks = &group.families["smokecheck_check_success"].series;
    assert_eq!(
        checks.len(),
        passed.json()["checks"].as_array().map_or(0, Vec::len),
        "{checks:?}"
    );
    for s in checks {
        assert_eq!(s.value, Some(1.0), "{s:?}");
        assert_eq!(s.labels["job"], "smokecheck");
        assert_eq!(s.labels["instance"], "fake-healthy");
    }
    // Serve's own families are never pushed.
    assert!(!group.families.contains_key("smokecheck_runs_total"));
    assert!(
        !group
            .families
            .contains_key("smokecheck_check_consecutive_failures")
    );

    // A failing run under the same instance: its results replace the first's, and the last
    // success stays the first run's (POST, no success time pushed).
    let crash = FakeKube::start("crash-loop");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = crash.write_kubeconfig(dir.path());
    let failed = crate::harness::run_in(
        dir,
        &kubeconfig,
        &["--format", "json"],
        &["kubernetes::pods", "--pushgateway", &url],
    );
    assert_eq!(failed.code, 1, "{}", failed.all_output());
    let group = gateway
        .group(&[("job", "smokecheck"), ("instance", "fake-crash-loop")])
        .expect("the failing run's group");
    assert_eq!(group.value("smokecheck_run_success", &[]), Some(0.0));
    assert_eq!(
        group.value("smokecheck_last_success_timestamp_seconds", &[]),
        None,
        "a failed run pushes no success time"
    );
    assert!(
        group.families["smokecheck_check_failure_info"]
            .series
            .iter()
            .any(|s| s.labels["cause"] == "crash_loop"),
        "{:?}",
        group.families["smokecheck_check_failure_info"]
    );
    // The first group still has its success.
    let first = gateway.group(&key).expect("the first group");
    assert_eq!(
        first.value("smokecheck_last_success_timestamp_seconds", &[]),
        Some(success)
    );
}

#[test]
fn a_push_that_fails_is_reported_and_leaves_the_exit_code_alone() {
    // Nothing listens there: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let healthy = FakeKube::start("healthy");
    let url = format!("http://127.0.0.1:{port}");
    let run = verify_json(&healthy, &["kubernetes::pods", "--pushgateway", &url]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert!(
        run.stderr.contains(&format!(
            "error: pushing the metrics to {url}/ failed: cannot connect"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["summary"]["failed"], 0);

    // A bad URL is a usage error, named.
    let run = verify_json(
        &healthy,
        &["kubernetes::pods", "--pushgateway", "http://u:p@gw:9091"],
    );
    assert_eq!(run.code, 2, "{}", run.all_output());
    assert!(
        run.stderr
            .contains("--pushgateway: the URL must not carry credentials"),
        "{}",
        run.stderr
    );
    assert!(!run.all_output().contains("u:p@"), "{}", run.all_output());
}

#[test]
fn a_fresh_pushgateway_holds_no_group_of_an_earlier_one() {
    // Debian's pushgateway persists to /var/lib/prometheus/pushgateway.data unless told not to:
    // every gateway of the bed (and of every engineer on the machine) then shared one store,
    // and a push consistent with this test's metrics was refused for another test's.
    let first = Pushgateway::start();
    let (status, _) = first.push(
        crate::support::pushgateway::Push::Replace,
        &[("job", "smokecheck"), ("instance", "left-behind")],
        "# TYPE smokecheck_left_behind gauge\nsmokecheck_left_behind 1\n",
    );
    assert_eq!(status, 200);
    drop(first);
    let second = Pushgateway::start();
    assert!(
        second.groups().is_empty(),
        "a new gateway starts with {:?}",
        second.groups()
    );
}
