//! A real Prometheus (Debian's `prometheus` 2.42, installed by `ci/test`) and its `promtool`,
//! for the continuous-checks bed (issue 12: `smokecheck serve` scraped, its alerts proven).
//!
//! `Prometheus::start` runs the server as a supervised child (process.rs) on a free loopback
//! port, with its own temporary storage and a generated config that scrapes the given jobs every
//! [`SCRAPE_INTERVAL`] and evaluates the given rule files as often. Tests read it only through
//! its HTTP API (instant queries, targets, alerts) and wait on it with bounded polls that report
//! the last state they saw, never a bare timeout. `--web.enable-lifecycle` lets a test change the
//! scraped jobs without a restart (`reconfigure`).
//!
//! [`FixedMetrics`] serves a text exposition the test chooses, so the helpers are proven before
//! anything of smokecheck exports metrics, and alert rules can be driven from chosen values.
//!
//! The HTTP calls are blocking (tests here are sync, like the rest of the bed) and run on a
//! runtime of this module's own, so they work from async tests too; every answer is read up to
//! [`MAX_ANSWER`] within [`HTTP_TIMEOUT`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

use super::process::{Supervised, run_bounded};

/// How often the bed's Prometheus scrapes and evaluates rules: short, so a change is seen
/// within a second or two.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// Prometheus answers `/-/ready` within a second or two when idle; the shared 2-core machine
/// may be building.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Per HTTP call to Prometheus, the Pushgateway or a fixed endpoint.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// The most of one answer a helper reads.
pub const MAX_ANSWER: usize = 8 << 20;
/// Per `promtool` run.
pub const PROMTOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Between two looks of a bounded wait.
const POLL: Duration = Duration::from_millis(200);

/// The runtime the helpers' HTTP calls and the fixed endpoints run on; never dropped, so it can
/// be shared by sync and async tests alike.
pub(crate) fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("prometheus-bed")
            .enable_all()
            .build()
            .expect("starting the Prometheus bed's runtime")
    })
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("building the Prometheus bed's HTTP client")
    })
}

/// One HTTP call, blocking: the status and the body (lossily decoded), or why there is none.
pub(crate) fn http(
    method: reqwest::Method,
    url: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, String), String> {
    let client = client().clone();
    let target = format!("{method} {url}");
    let url = url.to_string();
    let call = runtime().spawn(async move {
        let mut req = client.request(method, &url);
        if let Some(body) = body {
            req = req.body(body);
        }
        let mut resp = req.send().await.map_err(|e| error_chain(&e))?;
        let status = resp.status().as_u16();
        let mut raw = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
            if raw.len() + chunk.len() > MAX_ANSWER {
                return Err(format!("answer over {MAX_ANSWER} bytes"));
            }
            raw.extend_from_slice(&chunk);
        }
        Ok((status, String::from_utf8_lossy(&raw).into_owned()))
    });
    futures::executor::block_on(call)
        .map_err(|e| format!("{target}: {e}"))?
        .map_err(|e| format!("{target}: {e}"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Polls `probe` until it gives a value or `patience` has passed; then panics with `what`, the
/// last state `probe` described and `context` (e.g. a server's log tail).
pub(crate) fn wait_for<T>(
    what: &str,
    patience: Duration,
    context: impl Fn() -> String,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + patience;
    loop {
        let last = match probe() {
            Ok(value) => return value,
            Err(state) => state,
        };
        if Instant::now() >= deadline {
            panic!(
                "{what}: not within {patience:?}; last seen: {last}\n{}",
                context()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until the server `process` started is ready at `url` (`/-/ready` 200), or panics with
/// its log: when it exited, or after [`START_TIMEOUT`]. Only its own log's [`LISTENING`] line
/// proves the port is its own: another test's server may answer on a port this one failed to
/// bind.
pub(crate) fn wait_ready(what: &str, process: &Mutex<Supervised>, url: &str) {
    let log = || {
        let tail = process
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log_tail(30);
        format!("--- {what} log ---\n{tail}")
    };
    wait_for(
        &format!("{what} ready (/-/ready 200)"),
        START_TIMEOUT,
        log,
        || {
            // The guard is gone before the log is read (same lock).
            let exited = process.lock().unwrap_or_else(|e| e.into_inner()).exited();
            if let Some(status) = exited {
                panic!("{what} exited at start ({status})\n{}", log());
            }
            if !log().contains(LISTENING) {
                return Err("not listening yet".into());
            }
            match http(reqwest::Method::GET, &format!("{url}/-/ready"), None) {
                Ok((200, _)) => Ok(()),
                Ok((status, body)) => Err(format!("{status} {}", body.trim())),
                Err(e) => Err(e),
            }
        },
    )
}

/// A scrape job of the generated config.
#[derive(Clone, Debug)]
pub struct ScrapeJob {
    name: String,
    targets: Vec<String>,
    metrics_path: String,
    honor_labels: bool,
}

impl ScrapeJob {
    /// Scrapes `/metrics` of each target over plain HTTP.
    pub fn new(name: &str, targets: &[SocketAddr]) -> ScrapeJob {
        ScrapeJob {
            name: name.to_string(),
            targets: targets.iter().map(SocketAddr::to_string).collect(),
            metrics_path: "/metrics".into(),
            honor_labels: false,
        }
    }

    pub fn metrics_path(mut self, path: &str) -> ScrapeJob {
        self.metrics_path = path.to_string();
        self
    }

    /// Keeps the scraped `job` and `instance` labels (how a Pushgateway is scraped, so the
    /// pushers' grouping key survives).
    pub fn honor_labels(mut self) -> ScrapeJob {
        self.honor_labels = true;
        self
    }

    fn to_config(&self) -> Value {
        json!({
            "job_name": self.name,
            "honor_labels": self.honor_labels,
            "metrics_path": self.metrics_path,
            "static_configs": [{"targets": self.targets}],
        })
    }
}

/// One element of an instant query's vector: its labels (`__name__` included when the
/// expression keeps it) and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// One active target, as `/api/v1/targets` describes it.
#[derive(Clone, Debug)]
pub struct Target {
    pub job: String,
    pub scrape_url: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    pub last_error: String,
    pub labels: BTreeMap<String, String>,
}

/// One alert, as `/api/v1/alerts` describes it.
#[derive(Clone, Debug)]
pub struct Alert {
    pub name: String,
    /// `pending` or `firing`.
    pub state: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub value: f64,
}

/// A running Prometheus, killed (with its storage removed) when dropped.
pub struct Prometheus {
    // Dropped first: the server is killed before its storage is removed.
    process: Mutex<Supervised>,
    addr: SocketAddr,
    rule_files: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts a Prometheus scraping `jobs`; panics with its log when it does not become ready.
    pub fn start(jobs: &[ScrapeJob]) -> Prometheus {
        Prometheus::start_with_rules(jobs, &[])
    }

    /// As [`Prometheus::start`], evaluating the alerting and recording rules of `rule_files`
    /// (plain Prometheus rule files, as `promtool check rules` takes).
    pub fn start_with_rules(jobs: &[ScrapeJob], rule_files: &[PathBuf]) -> Prometheus {
        let dir = bed_dir("prometheus");
        let rule_files: Vec<PathBuf> = rule_files
            .iter()
            .map(|p| {
                std::fs::canonicalize(p)
                    .unwrap_or_else(|e| panic!("rule file {}: {e}", p.display()))
            })
            .collect();
        let config = dir.path().join("prometheus.yml");
        write_config(&config, jobs, &rule_files);
        let addr = free_port();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-lifecycle")
            .arg("--log.level=info")
            .current_dir(dir.path());
        let process = Supervised::spawn(cmd, &dir.path().join("prometheus.log"))
            .unwrap_or_else(|e| panic!("spawning prometheus: {e} ({})", installed_by_ci_test()));
        let prometheus = Prometheus {
            process: Mutex::new(process),
            addr,
            rule_files,
            dir,
        };
        prometheus.wait_ready();
        prometheus
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The last `lines` lines of the server's log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log_tail(lines)
    }

    fn context(&self) -> String {
        format!("--- prometheus log ---\n{}", self.log_tail(30))
    }

    fn wait_ready(&self) {
        wait_ready("prometheus", &self.process, &self.url());
    }

    /// Replaces the scraped jobs (same rule files) and has the server reload its config.
    pub fn reconfigure(&self, jobs: &[ScrapeJob]) {
        write_config(
            &self.dir.path().join("prometheus.yml"),
            jobs,
            &self.rule_files,
        );
        match http(
            reqwest::Method::POST,
            &format!("{}/-/reload", self.url()),
            None,
        ) {
            Ok((200, _)) => {}
            other => panic!("reloading prometheus: {other:?}\n{}", self.context()),
        }
    }

    /// Calls `/api/v1/<path>` and returns `data`, or the API's error (`errorType: error`).
    fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let url = format!("{}/api/v1/{path_and_query}", self.url());
        let (status, body) = http(reqwest::Method::GET, &url, None)?;
        let doc: Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET {url}: {status}, not JSON ({e}): {body}"))?;
        if doc["status"] != "success" {
            return Err(format!(
                "GET {url}: {status} {}: {}",
                doc["errorType"].as_str().unwrap_or("?"),
                doc["error"].as_str().unwrap_or(&body)
            ));
        }
        Ok(doc["data"].clone())
    }

    /// An instant query (`/api/v1/query`) of a vector expression, or the server's error.
    pub fn try_query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let q = percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC);
        let data = self.api(&format!("query?query={q}"))?;
        if data["resultType"] != "vector" {
            return Err(format!(
                "{promql}: a {} is not a vector",
                data["resultType"]
            ));
        }
        data["result"]
            .as_array()
            .ok_or_else(|| format!("{promql}: no result in {data}"))?
            .iter()
            .map(|s| {
                Ok(Sample {
                    labels: string_map(&s["metric"]),
                    value: sample_value(&s["value"][1])
                        .ok_or_else(|| format!("{promql}: no value in {s}"))?,
                })
            })
            .collect()
    }

    /// [`Prometheus::try_query`], panicking on an error.
    pub fn query(&self, promql: &str) -> Vec<Sample> {
        self.try_query(promql)
            .unwrap_or_else(|e| panic!("query {promql}: {e}\n{}", self.context()))
    }

    /// The active targets.
    pub fn targets(&self) -> Vec<Target> {
        let data = self
            .api("targets?state=active")
            .unwrap_or_else(|e| panic!("{e}\n{}", self.context()));
        data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| Target {
                job: t["labels"]["job"].as_str().unwrap_or_default().to_string(),
                scrape_url: t["scrapeUrl"].as_str().unwrap_or_default().to_string(),
                health: t["health"].as_str().unwrap_or_default().to_string(),
                last_error: t["lastError"].as_str().unwrap_or_default().to_string(),
                labels: string_map(&t["labels"]),
            })
            .collect()
    }

    /// The alerts that are pending or firing.
    pub fn alerts(&self) -> Vec<Alert> {
        let data = self
            .api("alerts")
            .unwrap_or_else(|e| panic!("{e}\n{}", self.context()));
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| Alert {
                name: a["labels"]["alertname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                state: a["state"].as_str().unwrap_or_default().to_string(),
                labels: string_map(&a["labels"]),
                annotations: string_map(&a["annotations"]),
                value: sample_value(&a["value"]).unwrap_or(f64::NAN),
            })
            .collect()
    }

    /// Waits until every target of `job` has been scraped successfully; returns the first.
    pub fn wait_target_up(&self, job: &str, patience: Duration) -> Target {
        self.wait_target_health(job, "up", patience)
    }

    /// Waits until every target of `job` has `health` (`up`, `down`).
    pub fn wait_target_health(&self, job: &str, health: &str, patience: Duration) -> Target {
        wait_for(
            &format!("the targets of job {job} {health}"),
            patience,
            || self.context(),
            || {
                let targets: Vec<Target> = self
                    .targets()
                    .into_iter()
                    .filter(|t| t.job == job)
                    .collect();
                match targets.first() {
                    Some(first) if targets.iter().all(|t| t.health == health) => Ok(first.clone()),
                    _ => Err(format!("{targets:?}")),
                }
            },
        )
    }

    /// Waits until the vector of `promql` satisfies `done`; returns it.
    pub fn wait_query(
        &self,
        promql: &str,
        patience: Duration,
        done: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        wait_for(
            &format!("query {promql}"),
            patience,
            || self.context(),
            || {
                let samples = self.try_query(promql)?;
                if done(&samples) {
                    Ok(samples)
                } else {
                    Err(format!("{samples:?}"))
                }
            },
        )
    }

    /// Waits until `promql` gives exactly one sample, equal to `value`; returns it.
    pub fn wait_value(&self, promql: &str, value: f64, patience: Duration) -> Sample {
        self.wait_query(promql, patience, |s| s.len() == 1 && s[0].value == value)
            .remove(0)
    }

    /// Waits until an alert `name` is in `state` (`pending`, `firing`); returns it.
    pub fn wait_alert(&self, name: &str, state: &str, patience: Duration) -> Alert {
        wait_for(
            &format!("alert {name} {state}"),
            patience,
            || self.context(),
            || {
                let alerts = self.alerts();
                alerts
                    .iter()
                    .find(|a| a.name == name && a.state == state)
                    .cloned()
                    .ok_or_else(|| format!("{alerts:?}"))
            },
        )
    }

    /// Waits until no alert `name` is pending or firing (it resolved).
    pub fn wait_alert_gone(&self, name: &str, patience: Duration) {
        wait_for(
            &format!("alert {name} resolved"),
            patience,
            || self.context(),
            || {
                let alerts = self.alerts();
                if alerts.iter().any(|a| a.name == name) {
                    Err(format!("{alerts:?}"))
                } else {
                    Ok(())
                }
            },
        )
    }
}

fn write_config(path: &Path, jobs: &[ScrapeJob], rule_files: &[PathBuf]) {
    let interval = format!("{}s", SCRAPE_INTERVAL.as_secs());
    // JSON is YAML: the config is built as a value, never by pasting strings.
    let config = json!({
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": rule_files,
        "scrape_configs": jobs.iter().map(ScrapeJob::to_config).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&config).expect("a JSON value serializes");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// Prometheus sends sample values as strings (`"1"`, `"NaN"`, `"+Inf"`).
fn sample_value(v: &Value) -> Option<f64> {
    v.as_str()?.parse().ok()
}

pub(crate) fn installed_by_ci_test() -> &'static str {
    "Debian's prometheus and prometheus-pushgateway packages; `ci/test` installs them"
}

/// A fresh folder for one server under the target dir's tmp, removed when dropped.
pub(crate) fn bed_dir(what: &str) -> tempfile::TempDir {
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp"))
        .join("monitoring-bed");
    std::fs::create_dir_all(&base).unwrap_or_else(|e| panic!("creating {}: {e}", base.display()));
    tempfile::Builder::new()
        .prefix(&format!("{what}-"))
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("creating a folder in {}: {e}", base.display()))
}

/// What Prometheus and the Pushgateway log once their listener is bound.
pub(crate) const LISTENING: &str = "msg=\"Listening on\"";

/// A port free a moment ago; the server started on it must prove it bound it ([`LISTENING`]),
/// as another test may have taken it in between.
pub(crate) fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 for a free port")
}

/// What `promtool` said: its exit code (`None` when killed by a signal), stdout and stderr.
#[derive(Debug)]
pub struct Promtool {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Promtool {
    /// Both streams, for assertion messages.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `promtool ARGS` (bounded by [`PROMTOOL_TIMEOUT`]) with `input` on stdin.
pub fn promtool(args: &[&str], input: Option<&str>, cwd: Option<&Path>) -> Promtool {
    let mut cmd = Command::new("promtool");
    cmd.args(args);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = run_bounded(cmd, input.map(|s| s.as_bytes().to_vec()), PROMTOOL_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e} ({})", installed_by_ci_test()));
    Promtool {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `promtool check metrics < text`: `Ok` when the exposition parses and passes promtool's lint,
/// otherwise what promtool said (exit 1: not parseable; 3: lint problems, one per line).
pub fn check_metrics(text: &str) -> Result<(), Promtool> {
    let verdict = promtool(&["check", "metrics"], Some(text), None);
    if verdict.code == Some(0) {
        Ok(())
    } else {
        Err(verdict)
    }
}

/// An HTTP endpoint serving a text exposition the test chooses at `/metrics`, counting its
/// scrapes; stops when dropped.
pub struct FixedMetrics {
    addr: SocketAddr,
    text: Arc<Mutex<String>>,
    scrapes: Arc<AtomicUsize>,
    task: AbortHandle,
}

impl FixedMetrics {
    pub fn serve(text: &str) -> FixedMetrics {
        use axum::http::header;
        let text = Arc::new(Mutex::new(text.to_string()));
        let scrapes = Arc::new(AtomicUsize::new(0));
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .expect("binding a fixed metrics endpoint");
        let addr = listener.local_addr().expect("its address");
        let (served, counted) = (Arc::clone(&text), Arc::clone(&scrapes));
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let body = served.lock().unwrap_or_else(|e| e.into_inner()).clone();
                counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        );
        let task = runtime().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)
                .expect("a tokio listener from a non-blocking std one");
            let _ = axum::serve(listener, app).await;
        });
        FixedMetrics {
            addr,
            text,
            scrapes,
            task: task.abort_handle(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the next scrape gets.
    pub fn set(&self, text: &str) {
        *self.text.lock().unwrap_or_else(|e| e.into_inner()) = text.to_string();
    }

    /// How many times `/metrics` was served.
    pub fn scrapes(&self) -> usize {
        self.scrapes.load(Ordering::SeqCst)
    }
}

impl Drop for FixedMetrics {
    fn drop(&mut self) {
        self.task.abort();
    }
}
