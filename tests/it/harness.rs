//! Runs the real `smokecheck` binary against the test bed and gives tests what it wrote:
//! exit code, stdout, stderr, the JUnit file and the JSON document.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use crate::support::fake_kube::{FakeKube, load_scenario};

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub junit: Option<String>,
    /// The child's own peak resident memory (GNU time's `%M`), in KiB.
    pub peak_rss_kib: u64,
    /// From spawn to exit.
    pub elapsed: std::time::Duration,
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

    /// Everything the run wrote, for leak checks.
    pub fn all_output(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.stdout,
            self.stderr,
            self.junit.clone().unwrap_or_default()
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
    let mut cmd = Command::new(bin());
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

pub fn run_in(dir: tempfile::TempDir, kubeconfig: &Path, format: &[&str], args: &[&str]) -> Run {
    let junit = dir.path().join("junit.xml");
    let mut cmd = command();
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
        _dir: dir,
    }
}

/// What a finished child left: its exit code (128 + the signal when a signal ended it, as a
/// shell reports it), output, peak memory and wall time.
pub struct Measured {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub peak_rss_kib: u64,
    pub elapsed: std::time::Duration,
}

/// GNU time, which reports the peak memory of the command it runs.
const GNU_TIME: &str = "/usr/bin/time";

/// Runs `cmd` to its end, collecting its output and its own peak memory. The peak comes from
/// GNU time (`%M`, its child's `ru_maxrss`), not from `wait4` on our own child: Linux starts a
/// child's high-water mark at its parent's size at fork and keeps it across exec, so a child
/// of this test binary (hundreds of MiB with the bed's servers) would report the test binary.
/// GNU time is a small process, so the mark it passes on is a MiB or two.
pub fn measured(cmd: Command) -> Measured {
    use std::io::Read;
    use std::process::Stdio;
    let report = tempfile::NamedTempFile::new().expect("a file for GNU time's report");
    let mut timed = Command::new(GNU_TIME);
    timed
        .args(["-q", "-f", "%M", "-o"])
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => timed.env(key, v),
            None => timed.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let started = std::time::Instant::now();
    let mut child = timed
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {GNU_TIME} (ci/setup.sh installs it): {e}"));
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = pipe(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = pipe(Box::new(child.stderr.take().expect("piped stderr")));
    let status = child.wait().expect("waiting for the measured command");
    let elapsed = started.elapsed();
    let report = std::fs::read_to_string(report.path()).unwrap_or_default();
    let peak_rss_kib = report
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("GNU time reported no peak memory: {report:?}"));
    Measured {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        peak_rss_kib,
        elapsed,
    }
}

/// Secret values of a scenario that must never appear in any output.
pub fn secret_values(scenario: &str) -> Vec<String> {
    let sensitive = [
        "PROXY_MASTER_KEY",
        "CA_VLLM_LOCAL_API_KEY",
        "VLLM_API_KEY",
        "password",
        "uri",
        "jdbc-uri",
        "pgpass",
    ];
    load_scenario(scenario)
        .objects
        .iter()
        .filter(|o| o["kind"] == "Secret")
        .filter_map(|o| serde_json::from_value::<Secret>(o.clone()).ok())
        .flat_map(|s| s.data.unwrap_or_default())
        .filter(|(k, _)| sensitive.contains(&k.as_str()))
        .map(|(_, v)| String::from_utf8_lossy(&v.0).trim().to_string())
        .filter(|v| v.len() >= 6)
        .collect()
}

pub fn assert_no_secret_leaks(scenario: &str, run: &Run) {
    let output = run.all_output();
    for value in secret_values(scenario) {
        assert!(
            !output.contains(&value),
            "scenario {scenario}: a secret value leaked into the output:\n{output}"
        );
    }
}
