//! Kubernetes credentials: the kubeconfig's ways to authenticate work (a static token, an exec
//! credential plugin), a rejected or hanging one ends the run on time with exit 2, and none
//! reaches the output: a failing exec credential plugin is reported by its command, exit status
//! and env var names (never their values, never its output), a malformed kubeconfig by file,
//! line and field (never the line), and a plugin that hangs is killed with everything it
//! started.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{Run, command, passed, run_in, run_reporting_in};
use crate::support::fake_kube::FakeKube;

/// Replaces the kubeconfig's static token by `user` (lines indented under `user:`).
fn with_user(fake: &FakeKube, dir: &Path, user: &str) -> PathBuf {
    let kubeconfig = fake.write_kubeconfig(dir);
    let text = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    let token_line = format!("    token: {}\n", fake.token());
    assert!(text.contains(&token_line));
    std::fs::write(&kubeconfig, text.replace(&token_line, user)).expect("rewrite");
    kubeconfig
}

/// Writes an executable plugin script `dir/name` and returns the kubeconfig `exec` block
/// running it.
fn plugin(dir: &Path, name: &str, script: &str, env: &[(&str, &str)]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write plugin");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut block = format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: {}\n      interactiveMode: Never\n",
        path.display()
    );
    if !env.is_empty() {
        block.push_str("      env:\n");
        for (name, value) in env {
            block.push_str(&format!("      - name: {name}\n        value: {value}\n"));
        }
    }
    block
}

#[test]
fn a_failing_credential_plugin_is_reported_without_its_env_values_or_output() {
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = "plugin-secret-4f9c2e7a1b";
    // A plugin that fails and, as some do when they fail, echoes its env and its token.
    let user = plugin(
        dir.path(),
        "sso-plugin.sh",
        "echo \"login failed for token=$SSO_TOKEN\" >&2\n\
         echo \"second line $SSO_TOKEN\" >&2\n\
         echo \"{\\\"token\\\": \\\"$SSO_TOKEN\\\"}\"\n\
         exit 3",
        &[("SSO_TOKEN", secret)],
    );
    let kubeconfig = with_user(&fake, dir.path(), &user);
    let run = run_reporting_in(dir, &kubeconfig, &["--format", "json"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let all = run.all_output();
    assert!(!all.contains(secret), "the plugin's secret leaked:\n{all}");
    assert!(!all.contains("second line"), "only its first line: {all}");
    let stderr = run.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("sso-plugin.sh exited with status 3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the kubeconfig's exec credential plugin "),
        "{stderr}"
    );
    assert!(stderr.contains("env SSO_TOKEN"), "names its env: {stderr}");
    assert!(
        stderr.contains("login failed for token=<redacted>"),
        "the first line of its stderr, redacted: {stderr}"
    );
    assert_eq!(run.json()["checks"][0]["cause"], "unauthorized");
}

#[test]
fn a_credential_plugin_that_prints_no_credential_is_reported_without_its_output() {
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = "half-a-token-8e1d55c0b2";
    let user = plugin(
        dir.path(),
        "half-plugin.sh",
        &format!("echo '{{kind: ExecCredential, status: [{secret}'"),
        &[],
    );
    let kubeconfig = with_user(&fake, dir.path(), &user);
    let run = run_reporting_in(dir, &kubeconfig, &["--format", "json"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let all = run.all_output();
    assert!(!all.contains(secret), "{all}");
    assert!(
        run.stderr
            .contains("half-plugin.sh printed no ExecCredential"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("line 1"), "{}", run.stderr);
}

/// A kubeconfig whose user has `line` (malformed YAML holding `secret`).
fn malformed(dir: &Path, line: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n\
             contexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n\
             {line}\n    other: x\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

#[test]
fn a_malformed_token_line_is_reported_by_file_line_and_field_not_content() {
    let secret = "SuperSecretTokenValue123abc";
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = malformed(dir.path(), &format!("    token: \"{secret}"));
    let shown = kubeconfig.display().to_string();
    let run = run_reporting_in(dir, &kubeconfig, &["--format", "plain"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let all = run.all_output();
    assert!(!all.contains(secret), "{all}");
    assert!(!all.contains("SuperSecret"), "no part of it: {all}");
    let stderr = run.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: reading kubeconfig {shown}: line 14, column 12 (field token): "
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("unclosed quote"),
        "says what to fix: {stderr}"
    );
}

#[test]
fn a_malformed_client_key_line_from_kubeconfig_env_is_reported_by_file_line_and_field() {
    let secret = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JSUV2Z0lC";
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = malformed(
        dir.path(),
        &format!("    client-certificate-data: AAAA\n    client-key-data: [{secret}"),
    );
    let out = command()
        .env("KUBECONFIG", &kubeconfig)
        .args(["verify", "--format", "json"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for text in [&stderr, &stdout] {
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains(&secret[..12]), "{text}");
    }
    assert!(
        stderr.starts_with(&format!(
            "error: reading kubeconfig {}: line 15, column 22 (field client-key-data): ",
            kubeconfig.display()
        )),
        "{stderr}"
    );
}

/// A run with `--timeout 2s` whose kubeconfig's `user` is a credential plugin that hangs: it
/// must end well before the plugin would (a generous bound: the machine is shared), with exit
/// code 2 naming the timeout.
#[track_caller]
fn hanging_plugin_run(fake: &FakeKube, dir: tempfile::TempDir, user: &str) -> Run {
    let kubeconfig = with_user(fake, dir.path(), user);
    let started = Instant::now();
    let run = run_in(
        dir,
        &kubeconfig,
        &["--format", "json"],
        &["--timeout", "2s"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the run waited for the plugin"
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("did not finish within 2s"),
        "{}",
        run.stderr
    );
    run
}

/// The pids of processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<i32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

#[test]
fn a_timed_out_credential_plugin_is_killed_with_the_processes_it_started() {
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    // A wrapper script (as most plugins are) whose child hangs; a unique duration names it.
    let nap = format!("20.{}", std::process::id());
    let user = plugin(
        dir.path(),
        "slow-plugin.sh",
        &format!("sleep {nap}\necho done"),
        &[],
    );
    hanging_plugin_run(&fake, dir, &user);
    // The kill is sent before smokecheck exits; give the kernel a moment to reap.
    let until = Instant::now() + Duration::from_secs(5);
    let mut left = processes(&["sleep", &nap]);
    while !left.is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        left = processes(&["sleep", &nap]);
    }
    for pid in &left {
        // SAFETY: plain kill(2) of a leftover we identified by its unique command line.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    assert!(
        left.is_empty(),
        "the plugin's sleep outlived the run: {left:?}"
    );
}

#[test]
fn exec_credential_plugin_kubeconfig_works() {
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig_exec(dir.path());
    let run = run_in(dir, &kubeconfig, &["--format", "json"], &["pods"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    passed(&run, "kubernetes::pods::litellm");
}

#[test]
fn rejected_token_exits_2_naming_the_401() {
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = with_user(&fake, dir.path(), "    token: wrong-token\n");
    let run = run_in(dir, &kubeconfig, &["--format", "plain"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("rejected our credentials (401 Unauthorized)"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_credential_plugin_that_hangs_ends_the_run_on_time() {
    let fake = FakeKube::start("healthy");
    let dir = tempfile::tempdir().expect("temp dir");
    // An exec plugin stuck (on SSO, say): `sleep` never prints a credential in time.
    let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: sleep\n      args: [\"20\"]\n      interactiveMode: Never\n";
    let run = hanging_plugin_run(&fake, dir, exec);
    assert!(
        run.stderr.contains("obtaining credentials (the kubeconfig's exec credential plugin) did not finish within 2s"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["checks"][0]["cause"], "unauthorized");
    assert!(run.junit.is_some(), "the JUnit report is still written");
}
