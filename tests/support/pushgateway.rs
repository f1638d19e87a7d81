//! A real Prometheus Pushgateway (Debian's `prometheus-pushgateway` 1.5, installed by `ci/test`)
//! for `verify --pushgateway` (issue 12): batch runs push their metrics under a grouping key,
//! and tests read back exactly what the gateway kept, through `/api/v1/metrics` (per group:
//! its grouping labels and its metric families) or the `/metrics` text Prometheus scrapes.
//!
//! A supervised child (process.rs) on a free loopback port, without persistence: nothing
//! outlives the test that started it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use serde_json::Value;

use super::process::Supervised;
use super::prometheus::{
    START_TIMEOUT, bed_dir, free_port, http, installed_by_ci_test, wait_for, wait_ready,
};

/// A metric family of a group, as `/api/v1/metrics` describes it.
#[derive(Clone, Debug)]
pub struct Family {
    /// `GAUGE`, `COUNTER`, `UNTYPED`, ...
    pub kind: String,
    pub help: String,
    pub series: Vec<Series>,
}

/// One series of a family: its labels (the grouping labels included) and, for gauges, counters
/// and untyped metrics, its value.
#[derive(Clone, Debug)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: Option<f64>,
}

/// What the gateway keeps under one grouping key.
#[derive(Clone, Debug)]
pub struct Group {
    /// The grouping key: `job` and every further label of the push URL.
    pub labels: BTreeMap<String, String>,
    pub last_push_successful: bool,
    /// By metric name, the gateway's own `push_time_seconds` and `push_failure_time_seconds`
    /// included.
    pub families: BTreeMap<String, Family>,
}

impl Group {
    /// The value of the series of `name` whose labels include `labels`, if exactly one has them.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<&Series> = self
            .families
            .get(name)?
            .series
            .iter()
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        match matching.as_slice() {
            [one] => one.value,
            _ => None,
        }
    }

    /// When the gateway last accepted a push to this group (Unix seconds).
    pub fn push_time(&self) -> Option<f64> {
        self.value("push_time_seconds", &[])
    }
}

/// How a push replaces what the group had (the gateway's PUT and POST).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Push {
    /// PUT: the whole group is replaced.
    Replace,
    /// POST: only the families the push contains are replaced.
    Add,
}

/// A running Pushgateway, killed when dropped.
pub struct Pushgateway {
    process: Mutex<Supervised>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Pushgateway {
    /// Starts one; panics with its log when it does not become ready.
    pub fn start() -> Pushgateway {
        let dir = bed_dir("pushgateway");
        let addr = free_port();
        let mut cmd = Command::new("prometheus-pushgateway");
        cmd.arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=info")
            // Debian's build persists to /var/lib/prometheus/pushgateway.data by default: every
            // gateway started on the machine would share one store. Empty: memory only.
            .arg("--persistence.file=")
            .current_dir(dir.path());
        let process =
            Supervised::spawn(cmd, &dir.path().join("pushgateway.log")).unwrap_or_else(|e| {
                panic!(
                    "spawning prometheus-pushgateway: {e} ({})",
                    installed_by_ci_test()
                )
            });
        let gateway = Pushgateway {
            process: Mutex::new(process),
            addr,
            _dir: dir,
        };
        wait_ready("pushgateway", &gateway.process, &gateway.url());
        gateway
    }

    /// `http://127.0.0.1:PORT`, what `verify --pushgateway` is given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where a Prometheus scrapes it (with `honor_labels`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log_tail(lines)
    }

    fn context(&self) -> String {
        format!("--- pushgateway log ---\n{}", self.log_tail(30))
    }

    /// The push URL of a grouping key (`job` first), every value base64url-encoded (the
    /// `@base64` form), so a value with a `/` or nothing at all still makes one path segment.
    pub fn group_url(&self, key: &[(&str, &str)]) -> String {
        assert_eq!(
            key.first().map(|(k, _)| *k),
            Some("job"),
            "a grouping key starts with job"
        );
        let mut url = format!("{}/metrics", self.url());
        for (label, value) in key {
            let encoded = if value.is_empty() {
                "=".to_string()
            } else {
                URL_SAFE.encode(value)
            };
            url.push_str(&format!("/{label}@base64/{encoded}"));
        }
        url
    }

    /// Pushes a text exposition under `key`; the gateway's status and answer, as a pusher
    /// sees them.
    pub fn push(&self, how: Push, key: &[(&str, &str)], text: &str) -> (u16, String) {
        let method = match how {
            Push::Replace => reqwest::Method::PUT,
            Push::Add => reqwest::Method::POST,
        };
        http(method, &self.group_url(key), Some(text.as_bytes().to_vec()))
            .unwrap_or_else(|e| panic!("{e}\n{}", self.context()))
    }

    /// Deletes the group of `key`.
    pub fn delete(&self, key: &[(&str, &str)]) -> u16 {
        http(reqwest::Method::DELETE, &self.group_url(key), None)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.context()))
            .0
    }

    /// Every group the gateway keeps (`/api/v1/metrics`).
    pub fn groups(&self) -> Vec<Group> {
        let url = format!("{}/api/v1/metrics", self.url());
        let (status, body) = http(reqwest::Method::GET, &url, None)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.context()));
        let doc: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {url}: {status}, not JSON ({e}): {body}"));
        assert_eq!(doc["status"], "success", "GET {url}: {body}");
        doc["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(parse_group)
            .collect()
    }

    /// The group whose grouping key is exactly `key`.
    pub fn group(&self, key: &[(&str, &str)]) -> Option<Group> {
        let want: BTreeMap<String, String> = key
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.groups().into_iter().find(|g| g.labels == want)
    }

    /// The text exposition Prometheus scrapes from the gateway.
    pub fn metrics_text(&self) -> String {
        let url = format!("{}/metrics", self.url());
        match http(reqwest::Method::GET, &url, None) {
            Ok((200, body)) => body,
            other => panic!("GET {url}: {other:?}\n{}", self.context()),
        }
    }
}

fn parse_group(g: &Value) -> Group {
    let labels = string_map(&g["labels"]);
    let families = g
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| *name != "labels" && *name != "last_push_successful")
        .map(|(name, f)| {
            let series = f["metrics"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| Series {
                    labels: string_map(&m["labels"]),
                    value: m["value"].as_str().and_then(|v| v.parse().ok()),
                })
                .collect();
            let family = Family {
                kind: f["type"].as_str().unwrap_or_default().to_string(),
                help: f["help"].as_str().unwrap_or_default().to_string(),
                series,
            };
            (name.clone(), family)
        })
        .collect();
    Group {
        labels,
        last_push_successful: g["last_push_successful"].as_bool().unwrap_or(false),
        families,
    }
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}
