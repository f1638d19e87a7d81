//! Kubernetes credentials without leaks or hangs. kube-rs runs a kubeconfig's exec credential
//! plugin synchronously (a plugin stuck on SSO cannot be killed, and a token refresh runs it
//! again), reports a failure with the whole `Command` (env values included) and the plugin's
//! output, and quotes the offending kubeconfig line on a syntax error (a `token:` or a
//! `client-key-data:` line). So this module reads kubeconfig files itself, reporting syntax
//! errors by file, line and field only, and runs the plugin itself: bounded by the caller's
//! timeout, killed with every process it started when it overstays, its output read up to a
//! cap, and a failure reported by command, exit status and env var *names*, with at most the
//! first line of its stderr, redacted. The credential it prints is handed to kube as a static
//! token or client certificate (a run is far shorter than any credential's lifetime).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;
use kube::config::{AuthInfo, ExecConfig, ExecInteractiveMode, Kubeconfig, KubeconfigError};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::secret::{Redactor, SecretValue};

/// The most of a plugin's stdout read (an ExecCredential with a certificate is a few KiB).
const STDOUT_CAP: u64 = 1024 * 1024;
/// The most of its stderr read; only a first line is ever shown.
const STDERR_CAP: u64 = 64 * 1024;
/// How much of that first line is shown (after redaction).
const STDERR_LINE_CHARS: usize = 200;

/// A kubeconfig file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigFileError {
    #[error("reading kubeconfig {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    /// A YAML error, by position: the line itself may hold a credential.
    #[error("reading kubeconfig {}: {at}: {problem} (the line is not shown: it may hold a credential)", path.display())]
    Syntax {
        path: PathBuf,
        /// `line 14, column 12 (field token)`.
        at: String,
        problem: String,
    },
    #[error("merging the kubeconfig files of KUBECONFIG")]
    Merge(#[source] KubeconfigError),
}

/// Reads one kubeconfig file.
pub fn read(path: &Path) -> Result<Kubeconfig, KubeconfigFileError> {
    refuse_odd_utf16(path)
        .and_then(|()| Kubeconfig::read_from(path))
        .map_err(|source| match source {
            KubeconfigError::Parse(e) => syntax(path, &e),
            source => KubeconfigFileError::Read {
                path: path.to_path_buf(),
                source,
            },
        })
}

/// kube 5 decodes a kubeconfig that starts with a UTF-16 byte-order mark two bytes at a time
/// and panics on an odd count (a UTF-16 file, as PowerShell's `>` writes one, cut short). Such
/// a file is refused before kube reads it, as kube refuses other invalid UTF-16. Only regular
/// files are looked at: reading from a pipe (`--kubeconfig <(...)`) would consume it.
fn refuse_odd_utf16(path: &Path) -> Result<(), KubeconfigError> {
    let odd = || -> std::io::Result<bool> {
        use std::io::Read as _;
        let mut file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        let mut bom = [0u8; 2];
        Ok(meta.is_file()
            && meta.len() % 2 == 1
            && file.read_exact(&mut bom).is_ok()
            && matches!(bom, [0xFF, 0xFE] | [0xFE, 0xFF]))
    };
    // A file that cannot be opened or read is kube's to report.
    if odd().unwrap_or(false) {
        return Err(KubeconfigError::ReadConfig(
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "invalid UTF-16: an odd number of bytes after the byte-order mark",
            ),
            path.to_path_buf(),
        ));
    }
    Ok(())
}

/// Reads the kubeconfig as kubectl finds it: the files `KUBECONFIG` lists, merged, else
/// `~/.kube/config`.
pub fn read_default() -> Result<Kubeconfig, KubeconfigFileError> {
    let listed: Vec<PathBuf> = std::env::var_os("KUBECONFIG")
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    if listed.is_empty() {
        let path = std::env::home_dir()
            .map(|h| h.join(".kube").join("config"))
            .unwrap_or_else(|| PathBuf::from(".kube/config"));
        return read(&path);
    }
    listed
        .iter()
        .try_fold(Kubeconfig::default(), |merged, path| {
            merged
                .merge(read(path)?)
                .map_err(KubeconfigFileError::Merge)
        })
}

/// A syntax error by position and field; its message keeps no quoted text and none of the
/// offending line's value.
fn syntax(path: &Path, e: &serde_saphyr::Error) -> KubeconfigFileError {
    let line_text = e.location().and_then(|l| {
        let text = std::fs::read_to_string(path).ok()?;
        let index = usize::try_from(l.line()).ok()?.checked_sub(1)?;
        text.lines().nth(index).map(str::to_string)
    });
    let (field, value) = match line_text.as_deref().map(str::trim_start) {
        Some(line) => {
            let line = line.trim_start_matches("- ");
            match line.split_once(':') {
                Some((key, value)) if !key.is_empty() && !key.contains(char::is_whitespace) => {
                    (Some(key.to_string()), value.trim().to_string())
                }
                _ => (None, line.to_string()),
            }
        }
        None => (None, String::new()),
    };
    let at = match e.location() {
        Some(l) => format!(
            "line {}, column {}{}",
            l.line(),
            l.column(),
            field.map(|f| format!(" (field {f})")).unwrap_or_default()
        ),
        None => "not valid YAML".into(),
    };
    KubeconfigFileError::Syntax {
        path: path.to_path_buf(),
        at,
        problem: scrub(&e.without_snippet().to_string(), &value),
    }
}

/// A parser's message without anything it may have quoted from the input: its location prefix
/// (given separately), quoted text longer than a few characters, and `value` (the offending
/// line's) wherever it appears.
fn scrub(message: &str, value: &str) -> String {
    static LOCATION: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^(error: )?(line \d+,? column \d+: )?|\s*at line \d+,? column \d+$")
            .expect("static pattern")
    });
    static QUOTED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#""[^"]{4,}"?|'[^']{4,}'?|`[^`]{4,}`?"#).expect("static pattern")
    });
    let first = message.lines().next().unwrap_or_default();
    let mut out = LOCATION.replace_all(first, "").into_owned();
    out = QUOTED.replace_all(&out, "…").into_owned();
    let redactor = Redactor::default();
    for part in value.split(|c: char| c.is_whitespace() || "\"'[]{},".contains(c)) {
        redactor.register(&SecretValue::new(part.as_bytes().to_vec()));
    }
    let out = redactor.redact(&out);
    if out.trim().is_empty() {
        "not valid YAML".into()
    } else {
        out
    }
}

/// An exec credential plugin that did not yield a credential.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("the kubeconfig's exec credential plugin names no command")]
    NoCommand,
    #[error(
        "the kubeconfig's exec credential plugin {command} needs the cluster's info (provideClusterInfo), which the kubeconfig lacks"
    )]
    NoClusterInfo { command: String },
    #[error("starting the kubeconfig's exec credential plugin {command}{hint}")]
    Start {
        command: String,
        /// ` (install hint: ...)` from the kubeconfig, or empty.
        hint: String,
        #[source]
        source: std::io::Error,
    },
    /// Its env values and its output are left out: they are what the plugin is for.
    #[error("the kubeconfig's exec credential plugin {command} exited with {status}{env}{said}")]
    Failed {
        command: String,
        /// `status 3` or `signal 9`.
        status: String,
        /// ` (env NAME, OTHER)` or empty.
        env: String,
        /// `: <first line of its stderr, redacted>` or empty.
        said: String,
    },
    #[error("the kubeconfig's exec credential plugin {command} printed no ExecCredential ({at})")]
    Output { command: String, at: String },
    #[error(
        "the kubeconfig's exec credential plugin {command} printed an ExecCredential without a token or a client certificate and key"
    )]
    Empty { command: String },
}

/// What kube's client is given instead of the plugin.
pub enum Credential {
    Token(String),
    Certificate { cert_pem: String, key_pem: String },
}

#[derive(Deserialize)]
struct ExecCredential {
    status: Option<ExecCredentialStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecCredentialStatus {
    token: Option<String>,
    client_certificate_data: Option<String>,
    client_key_data: Option<String>,
}

/// Whether kube would run `auth`'s exec plugin: it comes last, after an auth provider, basic
/// auth, a token and a token file.
pub fn uses_exec(auth: &AuthInfo) -> bool {
    auth.exec.is_some()
        && auth.auth_provider.is_none()
        && !(auth.username.is_some() && auth.password.is_some())
        && auth.token.is_none()
        && auth.token_file.is_none()
}

/// Runs `auth`'s exec plugin (see [`uses_exec`]) and puts what it printed in its place. Bound
/// it with a timeout: dropping the future kills the plugin and everything it started.
pub async fn resolve_exec(auth: &mut AuthInfo) -> Result<(), PluginError> {
    let Some(exec) = auth.exec.as_ref() else {
        return Ok(());
    };
    match run(exec).await? {
        Credential::Token(token) => auth.token = Some(token.into()),
        Credential::Certificate { cert_pem, key_pem } => {
            let b64 = base64::engine::general_purpose::STANDARD;
            auth.client_certificate_data = Some(b64.encode(cert_pem));
            auth.client_key_data = Some(b64.encode(key_pem).into());
        }
    }
    auth.exec = None;
    Ok(())
}

/// Kills a plugin's whole process group (a wrapper script's children too) unless disarmed.
struct KillGroup(Option<i32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // SAFETY: kill(2) with a negative pid signals the process group we created for the
            // plugin (`process_group(0)`), whose leader has not been reaped yet.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
    }
}

async fn run(exec: &ExecConfig) -> Result<Credential, PluginError> {
    use std::io::IsTerminal;
    let command = exec.command.clone().ok_or(PluginError::NoCommand)?;
    // As client-go: `IfAvailable` (the default) is interactive only with a terminal to ask on.
    let interactive = match exec.interactive_mode {
        Some(ExecInteractiveMode::Never) => false,
        Some(ExecInteractiveMode::Always) => true,
        Some(ExecInteractiveMode::IfAvailable) | None => std::io::stdin().is_terminal(),
    };
    let cluster = if exec.provide_cluster_info {
        Some(
            exec.cluster
                .clone()
                .ok_or_else(|| PluginError::NoClusterInfo {
                    command: command.clone(),
                })?,
        )
    } else {
        None
    };
    let info = serde_json::json!({
        "apiVersion": exec.api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": interactive, "cluster": cluster},
    });
    let env: Vec<(String, String)> = exec
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.get("name")?.clone(), e.get("value")?.clone())))
        .collect();

    let mut cmd = tokio::process::Command::new(&command);
    cmd.args(exec.args.iter().flatten())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("KUBERNETES_EXEC_INFO", info.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    for name in exec.drop_env.iter().flatten() {
        cmd.env_remove(name);
    }
    if interactive {
        // It may prompt on the terminal: it stays in our process group, which owns it.
        cmd.stdin(Stdio::inherit()).stderr(Stdio::inherit());
    } else {
        cmd.stdin(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
    }
    let mut child = cmd.spawn().map_err(|source| PluginError::Start {
        command: command.clone(),
        hint: exec
            .install_hint
            .as_deref()
            .map(|h| format!(" (install hint: {})", h.trim()))
            .unwrap_or_default(),
        source,
    })?;
    let mut group = KillGroup(if interactive {
        None
    } else {
        child.id().and_then(|id| i32::try_from(id).ok())
    });
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let read_stdout = async {
        let mut buf = Vec::new();
        if let Some(out) = stdout {
            let _ = out.take(STDOUT_CAP).read_to_end(&mut buf).await;
        }
        buf
    };
    let read_stderr = async {
        let mut buf = Vec::new();
        if let Some(err) = stderr {
            let _ = err.take(STDERR_CAP).read_to_end(&mut buf).await;
        }
        buf
    };
    let (stdout, stderr, status) = tokio::join!(read_stdout, read_stderr, child.wait());
    // Reaped: its group id may be reused from now on, so it is never signalled again.
    group.0 = None;
    let status = status.map_err(|source| PluginError::Start {
        command: command.clone(),
        hint: String::new(),
        source,
    })?;
    if !status.success() {
        return Err(PluginError::Failed {
            status: describe_status(&status),
            env: if env.is_empty() {
                String::new()
            } else {
                let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
                format!(" (env {})", names.join(", "))
            },
            said: first_line(&stderr, &env)
                .map(|l| format!(": {l}"))
                .unwrap_or_default(),
            command,
        });
    }
    let credential: ExecCredential =
        serde_saphyr::from_slice(&stdout).map_err(|e| PluginError::Output {
            command: command.clone(),
            at: e
                .location()
                .map(|l| format!("line {}, column {}", l.line(), l.column()))
                .unwrap_or_else(|| "not YAML or JSON".into()),
        })?;
    let status = credential.status.ok_or_else(|| PluginError::Empty {
        command: command.clone(),
    })?;
    match (
        status.client_certificate_data,
        status.client_key_data,
        status.token,
    ) {
        (Some(cert_pem), Some(key_pem), _) => Ok(Credential::Certificate { cert_pem, key_pem }),
        (_, _, Some(token)) if !token.trim().is_empty() => Ok(Credential::Token(token)),
        _ => Err(PluginError::Empty { command }),
    }
}

/// kube's own auth error in one line, without what its formatting carries: a credential
/// command's `Command` (env values included) and its output. (Only a legacy `auth-provider`
/// command still runs inside kube; exec plugins run in [`resolve_exec`].)
pub fn describe_auth_error(e: &kube::client::AuthError) -> String {
    use kube::client::AuthError;
    match e {
        AuthError::AuthExecRun { out, .. } => format!(
            "the kubeconfig's credential command exited with {}",
            describe_status(&out.status)
        ),
        AuthError::AuthExecParse(_) | AuthError::ParseTokenKey(_) => {
            "the kubeconfig's credential command printed no usable credential".into()
        }
        AuthError::AuthExec(_) => "running the kubeconfig's credential command failed".into(),
        other => crate::text::error_chain(other),
    }
}

fn describe_status(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("status {code}"),
        None => "an unknown status".into(),
    }
}

/// The first non-empty line of a plugin's stderr, with its env values and anything shaped like
/// a credential redacted first, then cut, control characters neutralised.
fn first_line(stderr: &[u8], env: &[(String, String)]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let redactor = Redactor::default();
    for (_, value) in env {
        redactor.register(&SecretValue::new(value.as_bytes().to_vec()));
    }
    let clean = redactor.redact(line);
    let mut out: String = clean
        .chars()
        .take(STDERR_LINE_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.chars().count() > STDERR_LINE_CHARS {
        out.push('…');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_utf16_kubeconfig_with_an_odd_byte_count_is_an_error_not_a_panic() {
        // Found by fuzzing (fuzz/corpus/kubeconfig/utf16-odd-byte-count): kube reads the bytes
        // after a UTF-16 byte-order mark in pairs and indexes past the last one.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kubeconfig");
        for bom in [[0xFF, 0xFE], [0xFE, 0xFF]] {
            let mut bytes = bom.to_vec();
            bytes.extend(b"apiVersion: v1\n");
            std::fs::write(&path, &bytes).expect("writing the kubeconfig");
            let err = read(&path).expect_err("a kubeconfig cut inside a UTF-16 character loaded");
            let message = crate::text::error_chain(&err);
            assert!(matches!(err, KubeconfigFileError::Read { .. }), "{message}");
            assert!(message.contains("invalid UTF-16"), "{message}");
        }
    }

    #[test]
    fn a_stderr_line_loses_env_values_and_control_characters() {
        let env = vec![("SSO".to_string(), "sso-secret-value".to_string())];
        let line = first_line(b"\n  denied: sso-secret-value \x1b[2J now\nmore\n", &env);
        assert_eq!(line.as_deref(), Some("denied: <redacted> ?[2J now"));
        assert_eq!(first_line(b" \n", &env), None);
    }

    #[test]
    fn parser_messages_lose_quotes_and_the_lines_value() {
        assert_eq!(
            scrub(
                "error: line 3 column 9: invalid type: string \"hunter2-token\", expected a map",
                "hunter2-token"
            ),
            "invalid type: string …, expected a map"
        );
        assert_eq!(
            scrub("unexpected tokenvalue99 here", "[tokenvalue99"),
            "unexpected <redacted> here"
        );
        assert_eq!(
            scrub("line 1 column 2: unclosed bracket '['", ""),
            "unclosed bracket '['"
        );
        assert_eq!(
            scrub("unclosed quote at line 14, column 12", ""),
            "unclosed quote"
        );
    }

    #[test]
    fn only_a_kubeconfig_without_other_credentials_runs_its_plugin() {
        let mut auth = AuthInfo {
            exec: Some(ExecConfig {
                api_version: None,
                command: Some("true".into()),
                args: None,
                env: None,
                drop_env: None,
                install_hint: None,
                interactive_mode: None,
                provide_cluster_info: false,
                cluster: None,
                other: Default::default(),
            }),
            ..AuthInfo::default()
        };
        assert!(uses_exec(&auth));
        auth.token = Some("t".to_string().into());
        assert!(!uses_exec(&auth));
    }
}
