//! Runs the real `smokecheck` binary against the test bed and gives tests what it wrote:
//! exit code, stdout, stderr, the JUnit file and the JSON document.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use crate::support::fake_kube::{FakeKube, Scenario, load_scenario};

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub junit: Option<String>,
    /// The child's own peak resident memory, in KiB (see [`measured`]).
    pub peak_rss_kib: u64,
    /// From spawn to exit.
    pub elapsed: Duration,
    /// The termination message, when the run was given `--termination-log` (see
    /// [`verify_reporting`]).
    pub termination: Option<String>,
    _dir: tempfile::TempDir,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The JSON entry of one check; panics listing the names when absent.
    pub fn check(&self, name: &str) -> Value {
        let doc = self.json();
        let checks = doc["checks"].as_array().cloned().unwrap_or_default();
        checks
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| {
                let names: Vec<_> = checks.iter().map(|c| c["name"].to_string()).collect();
                panic!("no check {name} in {names:?}")
            })
    }

    pub fn statuses(&self) -> Vec<(String, String)> {
        self.json()["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or("").to_string(),
                    c["status"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Everything the run wrote, for leak checks: stdout, stderr, the JUnit file and the
    /// termination message.
    pub fn all_output(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.stdout,
            self.stderr,
            self.junit.clone().unwrap_or_default(),
            self.termination.clone().unwrap_or_default()
        )
    }
}

/// Filters for the layers the fake cluster alone can serve (the database and LLM layers need
/// servers it lacks).
pub const CLUSTER_LAYERS: [&str; 2] = ["platform::", "kubernetes::"];

/// Asserts a check failed with `cause` and a summary containing `summary`, and exit code 1;
/// returns its JSON entry.
#[track_caller]
pub fn failed(run: &Run, check: &str, cause: &str, summary: &str) -> Value {
    let c = run.check(check);
    assert_eq!(c["status"], "failed", "{check}: {c:#}");
    assert_eq!(c["cause"], cause, "{check}: {c:#}");
    let s = text(&c, "summary");
    assert!(
        s.contains(summary),
        "{check}: summary {s:?} lacks {summary:?}"
    );
    assert_eq!(run.code, 1, "exit code; stderr: {}", run.stderr);
    c
}

/// Asserts a check passed; returns its JSON entry.
#[track_caller]
pub fn passed(run: &Run, check: &str) -> Value {
    let c = run.check(check);
    assert_eq!(
        c["status"], "passed",
        "{check}: {c:#}\nstderr: {}",
        run.stderr
    );
    c
}

/// A string field of a JSON entry ("" when absent).
pub fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_string()
}

/// A metric of a JSON entry; panics naming it when absent.
#[track_caller]
pub fn metric(v: &Value, name: &str) -> f64 {
    v["metrics"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("no metric {name} in {v:#}"))
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_smokecheck")
}

/// A command with a clean environment: no kubeconfig, colour or smokecheck settings leak in
/// from the machine running the tests.
pub fn command() -> Command {
    command_under(&[])
}

/// [`command`] run by `wrapper` (`["taskset", "-c", "0"]`): the binary is its last argument.
pub fn command_under(wrapper: &[&str]) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("SMOKECHECK_")
            || k == "KUBECONFIG"
            || k == "NO_COLOR"
            || k == "KUBERNETES_SERVICE_HOST"
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("HOME", std::env::temp_dir().join("smokecheck-test-home"));
    cmd
}

/// `smokecheck verify --kubeconfig <fake> --format json --junit <tmp> ARGS`.
pub fn verify_json(fake: &FakeKube, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    run_in(dir, &kubeconfig, &["--format", "json"], args)
}

/// `smokecheck verify --kubeconfig <fake> --junit <tmp> --termination-log <tmp> FORMAT ARGS`:
/// every report a run writes.
pub fn verify_reporting(fake: &FakeKube, format: &[&str], args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    run_reporting_in(dir, &kubeconfig, format, args)
}

/// [`run_in`] with `--termination-log <dir>/termination-log`: the run's
/// [`Run::termination`] holds the message.
pub fn run_reporting_in(
    dir: tempfile::TempDir,
    kubeconfig: &Path,
    format: &[&str],
    args: &[&str],
) -> Run {
    let termination = dir.path().join(TERMINATION_LOG);
    let mut all = vec![
        "--termination-log",
        termination.to_str().expect("utf-8 path"),
    ];
    all.extend(args);
    run_in(dir, kubeconfig, format, &all)
}

/// A loopback port nothing listens on (bound, then released).
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Writes `dir/kubeconfig`, whose one context names an API server at an [`unused_port`] (with
/// a token); returns its path and the port.
pub fn unreachable_kubeconfig(dir: &Path) -> (PathBuf, u16) {
    let port = unused_port();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: t}}\n"),
    )
    .expect("write kubeconfig");
    (kubeconfig, port)
}

/// Waits until `done` holds, polling (what it waits on has no signal to wait for: another
/// process's requests, say); fails naming `what` after `limit`.
#[track_caller]
pub fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < until, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where [`verify_reporting`] has the termination message written, in the run's directory.
const TERMINATION_LOG: &str = "termination-log";

pub fn run_in(dir: tempfile::TempDir, kubeconfig: &Path, format: &[&str], args: &[&str]) -> Run {
    run_with(dir, kubeconfig, format, args, command())
}

/// `smokecheck verify --kubeconfig K --junit <dir>/junit.xml FORMAT ARGS` run by `cmd` (a
/// [`command`], possibly with its environment changed) under [`measured`].
pub fn run_with(
    dir: tempfile::TempDir,
    kubeconfig: &Path,
    format: &[&str],
    args: &[&str],
    mut cmd: Command,
) -> Run {
    let junit = dir.path().join("junit.xml");
    cmd.arg("verify")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--junit")
        .arg(&junit)
        .args(format)
        .args(args)
        .current_dir(dir.path());
    let out = measured(cmd);
    Run {
        code: out.code,
        stdout: out.stdout,
        stderr: out.stderr,
        junit: std::fs::read_to_string(&junit).ok(),
        peak_rss_kib: out.peak_rss_kib,
        elapsed: out.elapsed,
        termination: std::fs::read_to_string(dir.path().join(TERMINATION_LOG)).ok(),
        _dir: dir,
    }
}

/// What a finished child left: its exit code (128 + the signal when one ended it, as GNU time
/// reports it), output, peak memory and wall time.
pub struct Measured {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub peak_rss_kib: u64,
    pub elapsed: Duration,
}

/// Runs `cmd` to its end under GNU time, collecting its output and its own peak memory.
///
/// Not `wait4` on a child of ours: exec records the old address space's high-water mark in the
/// new program's `ru_maxrss`, and a child spawned from this test binary starts in (a copy of)
/// the test binary's, which a backtrace's debug info alone takes past 400 MiB. GNU time forks
/// the child from its own small process, so the figure it reports is the child's.
pub fn measured(cmd: Command) -> Measured {
    use std::process::Stdio;
    let report = tempfile::NamedTempFile::new().expect("a file for GNU time's report");
    let mut timed = Command::new(GNU_TIME);
    timed
        .args(["--quiet", "--format", "%M", "--output"])
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => timed.env(key, value),
            None => timed.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let started = Instant::now();
    let out = timed
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| {
            panic!("running {GNU_TIME} (ci/test installs GNU time when missing): {e}")
        });
    let elapsed = started.elapsed();
    let text = std::fs::read_to_string(report.path()).unwrap_or_default();
    let peak_rss_kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("GNU time reported no peak memory: {text:?}"));
    Measured {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        peak_rss_kib,
        elapsed,
    }
}

/// GNU time (the `time` package), which reports a command's own peak memory.
const GNU_TIME: &str = "/usr/bin/time";

/// The redactor's floor: shorter values cannot be scrubbed (README, "Security and guarantees").
const MIN_SECRET_LEN: usize = 6;
/// The leak sweep's window: no 12 characters of a secret form longer than 16 may appear.
const WINDOW: usize = 12;
const WINDOWED_OVER: usize = 16;

/// The secret values a run of the default suite reads in a scenario (see
/// [`suite_secret_values`]): none may appear in any output.
pub fn secret_values(scenario: &str) -> Vec<String> {
    suite_secret_values(&load_scenario(scenario), smokecheck::suite::BUILTIN_SUITE)
}

/// The secret values of a scenario: every value of every Secret, decoded, except those shorter
/// than 6 bytes and those that are names the report itself prints (a namespace or an object
/// name: CNPG's `username` and `dbname` `litellm`, its `host`), which the redactor leaves
/// visible where they stand as names.
pub fn secret_values_of(scenario: &Scenario) -> Vec<String> {
    values_of_secrets(scenario, |_, _| true)
}

/// [`secret_values_of`] the Secrets `suite` (a suite file's text) reads and the scenario's RBAC
/// lets it read: what a run of it can scrub, and so what a sweep plants. (The default suite
/// does not read CNPG's CA Secret, which also holds the CA's key: a value never read cannot be
/// scrubbed, README "Security and guarantees".)
pub fn suite_secret_values(scenario: &Scenario, suite: &str) -> Vec<String> {
    let suite = smokecheck::suite::parse(suite, "suite").expect("a valid suite");
    let read: Vec<(String, String)> = suite
        .secrets()
        .into_iter()
        .map(|s| (s.namespace, s.name))
        .collect();
    values_of_secrets(scenario, |ns, name| {
        read.iter().any(|(n, m)| n == ns && m == name) && readable(scenario, ns)
    })
}

/// Whether the scenario's API server lets its user get Secrets in `namespace`.
fn readable(scenario: &Scenario, namespace: &str) -> bool {
    !scenario.forbid.iter().any(|f| {
        f.verb == "get"
            && f.resource == "secrets"
            && f.namespace.as_deref().is_none_or(|n| n == namespace)
    })
}

/// [`secret_values_of`] the Secrets a run read from `fake`, not refused by its RBAC (a value
/// never read cannot be scrubbed: README, "Security and guarantees"; the default suite never reads CNPG's CA
/// Secret, which also holds the CA's key).
pub fn secret_values_read(scenario: &Scenario, fake: &FakeKube) -> Vec<String> {
    let read: Vec<(String, String)> = fake
        .requests()
        .iter()
        .filter_map(|r| {
            let parts: Vec<&str> = r.path.trim_matches('/').split('/').collect();
            match parts.as_slice() {
                ["api", "v1", "namespaces", ns, "secrets", name] => {
                    Some((ns.to_string(), name.to_string()))
                }
                _ => None,
            }
        })
        .collect();
    values_of_secrets(scenario, |ns, name| {
        read.iter().any(|(n, m)| n == ns && m == name) && readable(scenario, ns)
    })
}

fn values_of_secrets(scenario: &Scenario, include: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let names: Vec<&str> = scenario
        .objects
        .iter()
        .flat_map(|o| {
            [
                o["metadata"]["name"].as_str(),
                o["metadata"]["namespace"].as_str(),
            ]
        })
        .flatten()
        .collect();
    let mut values: Vec<String> = scenario
        .objects
        .iter()
        .filter(|o| o["kind"] == "Secret")
        .filter(|o| {
            include(
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default(),
            )
        })
        .filter_map(|o| serde_json::from_value::<Secret>(o.clone()).ok())
        .flat_map(|s| s.data.unwrap_or_default())
        .map(|(_, v)| String::from_utf8_lossy(&v.0).into_owned())
        .filter(|v| v.trim().len() >= MIN_SECRET_LEN)
        .filter(|v| !names.iter().any(|n| n.contains(v.trim())))
        .collect();
    values.sort();
    values.dedup();
    values
}

/// RFC 3986's unreserved characters stay, the rest is `%XX` (`encodeURIComponent`).
const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A value's four forms: raw, base64, URL-encoded, JSON-escaped.
pub fn leak_forms(value: &str) -> [String; 4] {
    use base64::Engine as _;
    let json = serde_json::to_string(value).unwrap_or_default();
    [
        value.to_string(),
        base64::engine::general_purpose::STANDARD.encode(value),
        percent_encoding::utf8_percent_encode(value, URL_COMPONENT).to_string(),
        json[1..json.len() - 1].to_string(),
    ]
}

/// What must never appear in any output: each value (and, where it differs, the value without
/// its trailing newline) in its four forms, and every 12-character window of a form longer than
/// 16 characters. A value that embeds another secret value (CNPG's `uri`, `jdbc-uri` and
/// `pgpass` embed the password) is secret where it embeds it: its windows count where they
/// hold at least 6 characters of the embedded value (the redactor's floor: fewer are ordinary
/// text, as `:litellm:smo` of `pgpass` is of the service account `...:litellm:smokecheck`);
/// the rest is host, port and database name, which the report prints. The embedded value's own
/// windows are all checked, as its own.
pub fn forbidden(values: &[String]) -> Vec<String> {
    let mut all: Vec<String> = values.iter().map(|v| v.trim().to_string()).collect();
    all.extend(values.iter().cloned());
    all.sort();
    all.dedup();
    let atomic: Vec<&String> = all
        .iter()
        .filter(|v| {
            !all.iter()
                .any(|o| o != *v && o.trim() != v.trim() && v.contains(o.trim()))
        })
        .collect();
    let mut out = Vec::new();
    for value in &all {
        let mut cores: Vec<&str> = atomic
            .iter()
            .map(|a| a.trim())
            .filter(|a| *a != value.trim() && value.contains(a))
            .collect();
        if cores.is_empty() {
            cores.push(value.as_str());
        }
        let forms = leak_forms(value);
        for (i, form) in forms.iter().enumerate() {
            out.push(form.clone());
            if form.chars().count() <= WINDOWED_OVER {
                continue;
            }
            let chars: Vec<(usize, char)> = form.char_indices().collect();
            // Where in this form the secret cores are (base64 mixes neighbouring bytes: all
            // of it counts). Overlaps are measured in bytes: the forms are ASCII but for raw and
            // JSON text, where a multi-byte character only makes the overlap look longer.
            let spans: Vec<(usize, usize)> = if i == 1 {
                vec![(0, form.len())]
            } else {
                cores
                    .iter()
                    .flat_map(|c| {
                        let fc = leak_forms(c)[i].clone();
                        form.match_indices(fc.as_str())
                            .map(move |(at, m)| (at, at + m.len()))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            };
            for w in 0..=chars.len() - WINDOW {
                let start = chars[w].0;
                let end = chars.get(w + WINDOW).map_or(form.len(), |c| c.0);
                if spans
                    .iter()
                    .any(|(s, e)| end.min(*e).saturating_sub(start.max(*s)) >= MIN_SECRET_LEN)
                {
                    out.push(form[start..end].to_string());
                }
            }
        }
    }
    out.retain(|f| !f.trim().is_empty());
    out.sort();
    out.dedup();
    out
}

/// Asserts that none of [`forbidden`]`(values)` appears in anything the run wrote.
#[track_caller]
pub fn assert_no_leaks(what: &str, values: &[String], run: &Run) {
    assert_no_leaks_in(what, values, &run.all_output());
}

/// Asserts that none of [`forbidden`]`(values)` appears in `output` (what an in-process run
/// returned or told its event sink, say).
#[track_caller]
pub fn assert_no_leaks_in(what: &str, values: &[String], output: &str) {
    let forbidden = forbidden(values);
    let matcher = aho_corasick::AhoCorasick::new(&forbidden).expect("matcher");
    let found: Vec<&str> = matcher
        .find_iter(output)
        .map(|m| forbidden[m.pattern().as_usize()].as_str())
        .collect();
    assert!(
        found.is_empty(),
        "{what}: secret fragments leaked: {found:?}\n{output}"
    );
}

pub fn assert_no_secret_leaks(scenario: &str, run: &Run) {
    assert_no_leaks(scenario, &secret_values(scenario), run);
}

/// What a hostile log line or server message sends to a terminal: an OSC 52 clipboard write,
/// clear-screen, a carriage return and backspaces that overwrite what came before, a C1 CSI,
/// a bidi override that reverses what follows, and characters XML 1.0 forbids.
pub const TERMINAL_ATTACK: &str = "attack:\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{1b}[2J\rPASS\u{8}\u{8}\u{9b}31m\u{202e}evil\u{202c}\u{0}\u{ffff}:end";

/// [`TERMINAL_ATTACK`] as the renderers show it.
pub const TERMINAL_ATTACK_SHOWN: &str =
    "attack:␛]52;c;cm0gLXJmIH4=␇␛[2J␍PASS␈␈\\u{9b}31m\\u{202e}evil\\u{202c}␀\\u{ffff}:end";

/// Every raw control character in `text`, except `\n` and the SGR colour sequences
/// (`ESC [ digits ; m`) our own styles write.
pub fn raw_controls(text: &str) -> Vec<String> {
    let sgr = regex::Regex::new(r"\x1b\[[0-9;]*m").expect("pattern");
    sgr.replace_all(text, "")
        .chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{ffff}')
        })
        .map(|c| c.escape_unicode().to_string())
        .collect()
}

/// Text a server might echo: `marker`, then every value in its four forms (one line per
/// value), then [`TERMINAL_ATTACK`] and `marker` again (a log tail or a cut may keep either end).
pub fn planted_text(marker: &str, values: &[String]) -> String {
    let mut out = format!("{marker}\n");
    for v in values {
        out.push_str(&leak_forms(v).join(" "));
        out.push('\n');
    }
    out.push_str(TERMINAL_ATTACK);
    out.push(' ');
    out.push_str(marker);
    out
}

/// Plants server-echoed text in a scenario: `log` at the end of every container log (current
/// and previous), `message` in every message under an object's `status` (container waiting and
/// terminated states, pod, Job, Namespace, SealedSecret and Deployment conditions, the CNPG
/// Cluster's conditions and phase reason, the Argo CD Application's health and operation),
/// added where such an entry has none.
pub fn plant(scenario: &mut Scenario, log: &str, message: &str) {
    for text in scenario.logs.values_mut() {
        if !text.ends_with('\n') && !text.is_empty() {
            text.push('\n');
        }
        text.push_str(log);
        text.push('\n');
    }
    fn walk(v: &mut Value, message: &str) {
        match v {
            Value::Object(map) => {
                let entry = ["reason", "message", "phase", "status"]
                    .iter()
                    .any(|k| map.get(*k).is_some_and(Value::is_string));
                for key in ["message", "phaseReason"] {
                    if let Some(Value::String(existing)) = map.get_mut(key) {
                        existing.push(' ');
                        existing.push_str(message);
                    }
                }
                if entry && !map.contains_key("message") {
                    map.insert("message".into(), Value::from(message));
                }
                for child in map.values_mut() {
                    walk(child, message);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, message)),
            _ => {}
        }
    }
    for object in scenario.objects.iter_mut() {
        if let Some(status) = object.get_mut("status") {
            walk(status, message);
        }
    }
}

/// [`run_in`] (JSON) with `env` set for the child and `unset` removed from its environment.
pub fn run_in_env(
    dir: tempfile::TempDir,
    kubeconfig: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    unset: &[&str],
) -> Run {
    let mut cmd = command();
    for name in unset {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied());
    run_with(dir, kubeconfig, &["--format", "json"], args, cmd)
}
