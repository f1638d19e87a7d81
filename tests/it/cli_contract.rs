//! The command-line contract under abuse: usage errors that name what is wrong (a flag value
//! bad or out of range, a suite file's line and field, a hook deadline that leaves no time), a
//! reader that goes away, credentials smuggled into `--endpoint`, and reports that must always
//! land (never an earlier run's pass left for CI to read, never a half-written file, a
//! termination message on every way out, a panic included). What a run that starts does
//! (filters, exit codes, the clock, signals, hook mode, colour) is cli_run.rs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::harness::{command, eventually, run_in};
use crate::support::fake_kube::FakeKube;

/// An earlier run's JUnit report saying everything passed.
const OLD_PASS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="smokecheck" tests="1" failures="0" errors="0"><testsuite name="kubernetes" tests="1" failures="0"><testcase name="kubernetes::pods::litellm"/></testsuite></testsuites>
"#;
const OLD_TERMINATION: &str = "smokecheck: 17 checks passed, 0 skipped";

#[test]
fn out_of_range_durations_are_usage_errors_naming_the_flag() {
    let fake = FakeKube::start("healthy");
    for (flag, value) in [
        ("--timeout", "18446744073709551615s"),
        ("--timeout", "25h"),
        ("--wait", "18446744073709551615s"),
        ("--deadline", "18446744073709551615s"),
        ("--deadline", "8days"),
        ("--job-active-deadline", "18446744073709551615s"),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = fake.write_kubeconfig(dir.path());
        let run = run_in(
            dir,
            &kubeconfig,
            &["--format", "json"],
            &["platform::namespace", flag, value],
        );
        assert_eq!(run.code, 2, "{flag} {value}: {}", run.stderr);
        assert!(
            run.stderr.starts_with(&format!("error: {flag}: ")) && run.stderr.contains("at most"),
            "{flag} {value}: {}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert_eq!(run.json()["checks"][0]["cause"], "setup", "{}", run.stdout);
    }
}

/// `smokecheck verify ARGS --suite <a file holding text>`, which must be refused with exit code
/// 2: its stderr, and the suite file's path (in the returned dir).
#[track_caller]
fn refused_suite(text: &str, args: &[&str]) -> (String, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = dir.path().join("suite.yaml");
    std::fs::write(&suite, text).expect("write");
    let out = command()
        .arg("verify")
        .args(args)
        .arg("--suite")
        .arg(&suite)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (stderr, suite, dir)
}

#[test]
fn bad_suite_is_a_one_line_error_naming_file_line_and_field() {
    let (stderr, suite, _dir) =
        refused_suite("version: 1\nlitellm:\n  pods:\n    selektor: a=b\n", &[]);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:4:5: litellm.pods.selektor: unknown field `selektor`",
            suite.display()
        )),
        "{stderr}"
    );
}

#[test]
fn an_alias_listed_twice_is_a_suite_error() {
    let (stderr, _, _dir) = refused_suite(
        "version: 1\nlitellm:\n  aliases: [small, small]\n",
        &["--list"],
    );
    assert!(
        stderr.contains("litellm.aliases[1]: \"small\" is listed twice"),
        "{stderr}"
    );
}

#[test]
fn bad_flag_value_names_the_flag() {
    let out = command()
        .args(["verify", "--timeout", "soon"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: --timeout: \"soon\" is not a duration"),
        "{stderr}"
    );
    let out = command()
        .args(["verify", "--endpoint", "litelm=http://x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--endpoint: unknown endpoint \"litelm\"")
    );
}

#[test]
fn hook_deadline_must_leave_time_before_the_jobs() {
    let out = command()
        .args([
            "verify",
            "--list",
            "--job-active-deadline",
            "60s",
            "--deadline",
            "2m",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: --deadline: 2m leaves no time to write the reports before the Job's activeDeadlineSeconds (1m): use at most 50s"), "{stderr}");
    let out = command()
        .args(["verify", "--list", "--argocd-app", "litellm"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--argocd-app: \"litellm\" is not NAMESPACE/NAME")
    );
}

/// Runs smokecheck with a stdout whose reader is already gone (`| head -c0`).
fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = command()
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("running smokecheck");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_is_not_a_panic_and_keeps_the_exit_code() {
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let kubeconfig = kubeconfig.to_str().expect("utf-8 path");
    let cases: [(&[&str], i32); 6] = [
        (&["verify", "--list"], 0),
        (&["verify", "--list", "--format", "json"], 0),
        (&["schema"], 0),
        (&["rbac"], 0),
        (
            &[
                "verify",
                "--format",
                "json",
                "--kubeconfig",
                kubeconfig,
                "platform::namespace",
            ],
            0,
        ),
        (
            &[
                "verify",
                "--format",
                "json",
                "--kubeconfig",
                "/nonexistent/kubeconfig",
            ],
            2,
        ),
    ];
    for (args, code) in cases {
        let (got, stderr) = with_closed_stdout(args);
        assert_eq!(got, Some(code), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `smokecheck verify --format json --endpoint SPEC --junit <tmp>`, which must be refused with
/// exit code 2: its stderr, and everything it wrote (stderr, stdout, the JUnit file).
#[track_caller]
fn refused_endpoint(spec: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let junit = dir.path().join("j.xml");
    let out = command()
        .args(["verify", "--format", "json", "--endpoint", spec, "--junit"])
        .arg(&junit)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{spec}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let all = format!(
        "{stderr}{}{}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(&junit).unwrap_or_default()
    );
    (stderr, all)
}

#[test]
fn credentials_on_the_command_line_are_refused_and_never_echoed() {
    let (stderr, all) = refused_endpoint("database=postgresql://litellm:hunter2secret@db:5432");
    assert!(
        stderr.contains("--endpoint: database: the URL must not carry credentials"),
        "{stderr}"
    );
    assert!(!all.contains("hunter2secret"), "{all}");
}

#[test]
fn credentials_in_an_endpoint_query_or_fragment_are_refused_and_never_echoed() {
    for spec in [
        "litellm=http://127.0.0.1:4000/?token=hunter2secret",
        "litellm=http://127.0.0.1:4000?api_key=hunter2secret",
        "vllm=http://127.0.0.1:8000/v1?Access-Token=hunter2secret&x=1",
        "vllm=https://vllm.example:8443/v1?apikey=hunter2secret",
        "database=postgresql://db:5432/litellm?password=hunter2secret",
        "litellm=http://127.0.0.1:4000/#access_token=hunter2secret",
        "litellm=http://127.0.0.1:4000/?x=%20&Token=hunter2secret%ZZ",
    ] {
        let (stderr, all) = refused_endpoint(spec);
        assert!(
            stderr.starts_with("error: --endpoint: "),
            "{spec}: {stderr}"
        );
        assert!(
            stderr.contains("must not carry credentials"),
            "{spec}: {stderr}"
        );
        assert!(!all.contains("hunter2secret"), "{spec}: {all}");
    }
    // A query string that is no credential is still refused: nothing but scheme, host, port and
    // path is used, and a base URL with a query would be glued to every API path.
    let out = command()
        .args([
            "verify",
            "--endpoint",
            "litellm=http://127.0.0.1:4000/?region=eu",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--endpoint: litellm: the URL must not have a query string"),
        "{stderr}"
    );
}

#[test]
fn a_killed_run_leaves_no_earlier_pass_behind() {
    let fake = FakeKube::start("healthy");
    // Slow pod reads: the run is still checking when it is killed.
    fake.delay_requests("/pods", Duration::from_secs(30));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let junit = dir.path().join("junit.xml");
    let term = dir.path().join("termination-log");
    std::fs::write(&junit, OLD_PASS).expect("old report");
    std::fs::write(&term, OLD_TERMINATION).expect("old message");
    let mut child = command()
        .arg("verify")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--junit")
        .arg(&junit)
        .arg("--termination-log")
        .arg(&term)
        .args(["--format", "plain", "kubernetes::pods::litellm"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    eventually("smokecheck lists pods", Duration::from_secs(30), || {
        fake.requests().iter().any(|r| r.path.ends_with("/pods"))
    });
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), None, "killed by a signal");
    assert!(
        !junit.exists(),
        "the previous run's JUnit report is still there: {:?}",
        std::fs::read_to_string(&junit)
    );
    let message = std::fs::read_to_string(&term).expect("termination message");
    assert!(!message.contains("passed"), "{message}");
    assert!(
        message.starts_with("smokecheck: no outcome: the run ended before it finished"),
        "{message}"
    );
}

/// The inotify events of a directory, by file name.
struct DirWatch {
    fd: i32,
}

impl DirWatch {
    fn new(dir: &Path) -> DirWatch {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("path");
        // SAFETY: plain syscalls on a descriptor we own and a NUL-terminated path.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1");
        let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_ALL_EVENTS) };
        assert!(wd >= 0, "inotify_add_watch");
        DirWatch { fd }
    }

    /// Every event so far: (file name, mask).
    fn events(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reads into a buffer we own, at most its length.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            let mut at = 0usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            while at + header <= n as usize {
                // SAFETY: the kernel wrote a whole event here; read_unaligned copes with packing.
                let event: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                let name = &buf[at + header..at + header + event.len as usize];
                let name = String::from_utf8_lossy(name)
                    .trim_end_matches('\0')
                    .to_string();
                out.push((name, event.mask));
                at += header + event.len as usize;
            }
        }
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this value owns.
        unsafe { libc::close(self.fd) };
    }
}

#[test]
fn reports_are_renamed_into_place_never_written_in_place() {
    let fake = FakeKube::start("crash-loop");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let reports = dir.path().join("reports");
    std::fs::create_dir(&reports).expect("reports dir");
    let junit = reports.join("junit.xml");
    std::fs::write(&junit, OLD_PASS).expect("old report");
    let watch = DirWatch::new(&reports);
    let out = command()
        .arg("verify")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--junit")
        .arg(&junit)
        .args(["--format", "json", "pods"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let events = watch.events();
    let on_report: Vec<u32> = events
        .iter()
        .filter(|(name, _)| name == "junit.xml")
        .map(|(_, mask)| *mask)
        .collect();
    assert!(
        on_report.iter().any(|m| m & libc::IN_DELETE != 0),
        "the old report is removed at the start: {events:?}"
    );
    assert!(
        on_report.iter().any(|m| m & libc::IN_MOVED_TO != 0),
        "the report is renamed into place: {events:?}"
    );
    assert!(
        !on_report
            .iter()
            .any(|m| m & (libc::IN_MODIFY | libc::IN_CREATE) != 0),
        "the report is never written under its own name: {events:?}"
    );
    let text = std::fs::read_to_string(&junit).expect("junit");
    assert!(text.contains("kubernetes::pods::litellm"), "{text}");
    assert!(text.trim_end().ends_with("</testsuites>"), "{text}");
    let left: Vec<_> = std::fs::read_dir(&reports)
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("junit.xml")],
        "no temp file is left"
    );
}

#[test]
fn a_panic_outside_the_checks_still_ends_with_one_line_and_the_termination_message() {
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let junit = dir.path().join("junit.xml");
    let term = dir.path().join("termination-log");
    std::fs::write(&junit, OLD_PASS).expect("old report");
    std::fs::write(&term, OLD_TERMINATION).expect("old message");
    let out = command()
        .env("SMOKECHECK_TEST_PANIC", "1")
        // With RUST_BACKTRACE, the full report is printed on purpose (for whoever debugs it).
        .env_remove("RUST_BACKTRACE")
        .arg("verify")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--junit")
        .arg(&junit)
        .arg("--termination-log")
        .arg(&term)
        .args(["--format", "plain", "kubernetes::"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("error: smokecheck panicked at src/"),
        "{stderr}"
    );
    assert!(stderr.contains("a bug: please report it"), "{stderr}");
    let message = std::fs::read_to_string(&term).expect("termination message");
    assert!(
        message.starts_with("smokecheck: nothing could be checked: smokecheck panicked at src/"),
        "{message}"
    );
    let report = std::fs::read_to_string(&junit).expect("the JUnit report says why");
    assert!(report.contains("errors=\"1\""), "{report}");
    assert!(report.contains("type=\"panicked\""), "{report}");
}

#[test]
fn a_bad_flag_in_hook_mode_still_writes_the_termination_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let term = dir.path().join("termination-log");
    std::fs::write(&term, OLD_TERMINATION).expect("old message");
    let out = command()
        .env("SMOKECHECK_ARGOCD_APP", "argocd/litellm")
        .env("SMOKECHECK_TERMINATION_LOG", &term)
        .env("SMOKECHECK_FORMAT", "xml")
        .arg("verify")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let message = std::fs::read_to_string(&term).expect("termination message");
    assert!(
        message.starts_with("smokecheck: nothing could be checked: ")
            && message.contains("xml")
            && message.contains("--format"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
}
