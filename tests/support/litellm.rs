//! The real LiteLLM proxy (`.venv`, pinned by `ci/test`) in front of fake vLLMs.
//!
//! One proxy per test binary (`litellm_proxy()`), started on first use and killed with the test
//! process (see `process.rs`). Its generated config has one alias per scenario, each backed by a
//! fake vLLM of its own: a fault on one alias (a 401 puts a deployment into a ~5 s cooldown)
//! never disturbs another, so tests on different aliases run in parallel. The trimming
//! guardrail fixture is copied to `<config dir>/custom_guardrails/message_overflow.py`, where
//! LiteLLM resolves `custom_guardrails.message_overflow.<Class>` relative to the config file.
//!
//! The proxy runs without `DATABASE_URL`: Prisma would download its query engine at start, which
//! cannot happen here (reference/litellm-behaviour.md).
//!
//! For scale, [`start_dedicated`] starts a proxy of the caller's own whose config has many
//! aliases (a deployment's `model_list` of 200, say), all routed to one fake vLLM.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::fake_vllm::{FakeVllm, Fault};
use super::process::Supervised;

/// The pinned version; `ci/test` installs exactly this one.
pub const LITELLM_VERSION: &str = "1.106.12";
/// The proxy's master key (`PROXY_MASTER_KEY`; LiteLLM requires the `sk-` prefix).
pub const MASTER_KEY: &str = "sk-smokecheck-bed-master-3b9d";
/// The key LiteLLM sends to vLLM (`CA_VLLM_LOCAL_API_KEY`) and every fake expects, except
/// `key-mismatch`'s.
pub const VLLM_KEY: &str = "vllm-bed-key-71c2";
/// What `key-mismatch`'s fake expects instead.
pub const OTHER_VLLM_KEY: &str = "vllm-bed-key-rotated-9e40";
/// The model every fake serves; aliases use `openai/<this>`, as the deployment's config does.
pub const SERVED_MODEL: &str = "acme/tiny-chat";
/// Small, so an oversized prompt stays a few kilobytes.
pub const MAX_MODEL_LEN: u32 = 512;
/// The delay of `slow`'s fake at start (tests may change it).
pub const SLOW_DELAY: Duration = Duration::from_secs(2);
/// Readiness normally answers 10-13 s after start; leave room for a loaded 2-core CI machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The scenario aliases of the shared proxy's config.
pub mod alias {
    /// Guardrail on, fake healthy.
    pub const HEALTHY: &str = "healthy";
    /// Guardrail off: an oversized prompt reaches vLLM.
    pub const TRIM_OFF: &str = "trim-off";
    /// Its fake expects `OTHER_VLLM_KEY`: 401 from vLLM, then cooldown.
    pub const KEY_MISMATCH: &str = "key-mismatch";
    /// Its fake is down (connection refused).
    pub const DOWN: &str = "down";
    /// Its fake answers after `SLOW_DELAY`.
    pub const SLOW: &str = "slow";
    /// Healthy at start; tests flip its status override (5xx, 429).
    pub const FAULTY: &str = "faulty";
    /// Its guardrail raises.
    pub const GUARDRAIL_CRASH: &str = "guardrail-crash";
    /// `smokecheck verify`'s own key-mismatch scenario (tests/it/verify_e2e.rs): as
    /// `KEY_MISMATCH`, but no other test puts it into cooldown first.
    pub const VERIFY_KEY_MISMATCH: &str = "verify-key-mismatch";
    /// `smokecheck verify`'s own vLLM-down scenario, as `DOWN`.
    pub const VERIFY_DOWN: &str = "verify-down";
    /// The stack's (laptop tests, sandbox) own faults, as `KEY_MISMATCH` and `DOWN`.
    pub const STACK_KEY_MISMATCH: &str = "stack-key-mismatch";
    pub const STACK_DOWN: &str = "stack-down";
    /// The fleet test's key-mismatch cluster (tests/it/fleet.rs), as `STACK_KEY_MISMATCH`, so
    /// the laptop tests' cooldown never meets it.
    pub const FLEET_KEY_MISMATCH: &str = "fleet-key-mismatch";
    /// The pipeline test's key-mismatch cluster (tests/it/pipeline.rs), for the same reason.
    pub const PIPELINE_KEY_MISMATCH: &str = "pipeline-key-mismatch";
    /// The leak sweep's (tests/it/leaks.rs): its fake answers 503 with an error message that
    /// echoes secret values, which the proxy relays.
    pub const STACK_LEAK: &str = "stack-leak";
    /// Guardrail on, fake healthy, and called by one test only (tests/it/monitor.rs): its fake
    /// counts exactly the requests of one run, for the cost note of the continuous checks.
    pub const SERVE_COST: &str = "serve-cost";
    /// `smokecheck serve` scraped by a real Prometheus (tests/it/serve.rs): its fake's key is
    /// rotated and restored while serve runs, so no other test may share it.
    pub const SERVE_LIVE: &str = "serve-live";
    pub const ALL: [&str; 16] = [
        HEALTHY,
        TRIM_OFF,
        KEY_MISMATCH,
        DOWN,
        SLOW,
        FAULTY,
        GUARDRAIL_CRASH,
        VERIFY_KEY_MISMATCH,
        VERIFY_DOWN,
        STACK_KEY_MISMATCH,
        STACK_DOWN,
        FLEET_KEY_MISMATCH,
        PIPELINE_KEY_MISMATCH,
        STACK_LEAK,
        SERVE_COST,
        SERVE_LIVE,
    ];
}

/// The guardrails the config declares, by name, with the fixture class each uses.
const GUARDRAILS: [(&str, &str); 2] = [
    ("message_trimming", "MessageOverflowGuardrail"),
    ("message_trimming_crash", "CrashingGuardrail"),
];

/// One alias of a generated config.
struct AliasSpec<'a> {
    name: &'a str,
    api_base: String,
    guardrail: Option<&'a str>,
}

/// A running proxy with its fakes.
pub struct LiteLlm {
    process: Mutex<Supervised>,
    addr: SocketAddr,
    dir: PathBuf,
    fakes: Vec<FakeVllm>,
    /// Each alias of the config and the index in `fakes` of the fake behind it.
    aliases: Vec<(String, usize)>,
    started_in: Duration,
}

impl LiteLlm {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn master_key(&self) -> &'static str {
        MASTER_KEY
    }

    /// The fake vLLM behind `alias` (panics on an alias the config does not have).
    pub fn fake(&self, alias: &str) -> &FakeVllm {
        self.aliases
            .iter()
            .find(|(a, _)| a == alias)
            .map(|(_, i)| &self.fakes[*i])
            .unwrap_or_else(|| {
                let names: Vec<&str> = self.aliases.iter().map(|(a, _)| a.as_str()).collect();
                panic!("the bed's proxy has no alias {alias:?}; it has {names:?}")
            })
    }

    /// The aliases of its config, in config order.
    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.aliases.iter().map(|(a, _)| a.as_str())
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// How long the proxy took from spawn to a 200 on `/health/readiness`.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    pub fn pid(&self) -> u32 {
        self.process.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// The proxy's resident memory, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The last `lines` lines of the proxy's log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log_tail(lines)
    }
}

/// The proxy shared by the whole test binary, started on first use.
///
/// A failed start is remembered: every later caller panics with the same message at once
/// instead of waiting for another start.
pub fn litellm_proxy() -> &'static LiteLlm {
    static PROXY: OnceLock<Result<LiteLlm, String>> = OnceLock::new();
    match PROXY.get_or_init(start_shared) {
        Ok(proxy) => proxy,
        Err(why) => panic!("{why}"),
    }
}

/// `.venv/bin/litellm` of this checkout, or a panic that says how to get it. Never a skip: a
/// missing venv would otherwise turn the whole end-to-end layer green by testing nothing.
pub fn litellm_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/litellm");
    assert!(
        bin.exists(),
        "{} is missing: the end-to-end tests need the real LiteLLM proxy. Run `ci/test` (or \
         `ci/test --no-run`, which installs it without running the tests): it links .venv to a \
         venv with litellm[proxy]=={LITELLM_VERSION}.",
        bin.display()
    );
    bin
}

fn start_shared() -> Result<LiteLlm, String> {
    let fake_for = |name: &str| {
        let key = if [
            alias::KEY_MISMATCH,
            alias::VERIFY_KEY_MISMATCH,
            alias::STACK_KEY_MISMATCH,
            alias::FLEET_KEY_MISMATCH,
            alias::PIPELINE_KEY_MISMATCH,
        ]
        .contains(&name)
        {
            OTHER_VLLM_KEY
        } else {
            VLLM_KEY
        };
        let fake = FakeVllm::start(&[(SERVED_MODEL, MAX_MODEL_LEN)], key);
        match name {
            alias::DOWN | alias::VERIFY_DOWN | alias::STACK_DOWN => fake.set_fault(Fault::Down),
            alias::SLOW => fake.set_fault(Fault::Delay(SLOW_DELAY)),
            _ => {}
        }
        fake
    };
    let fakes: Vec<FakeVllm> = alias::ALL.iter().map(|a| fake_for(a)).collect();
    let specs: Vec<AliasSpec> = alias::ALL
        .iter()
        .zip(&fakes)
        .map(|(name, fake)| AliasSpec {
            name,
            api_base: format!("{}/v1", fake.url()),
            guardrail: match *name {
                alias::HEALTHY | alias::SERVE_COST | alias::SERVE_LIVE => Some("message_trimming"),
                alias::GUARDRAIL_CRASH => Some("message_trimming_crash"),
                _ => None,
            },
        })
        .collect();
    let aliases = alias::ALL
        .iter()
        .enumerate()
        .map(|(i, a)| (a.to_string(), i))
        .collect();
    start(&specs, fakes, aliases, "proxy")
}

/// Starts a proxy of the caller's own (not the shared one) whose config has `aliases`, in that
/// order, every one routed to `fake`, behind the trimming guardrail when `guarded`. Stops when
/// dropped. Start-up takes as long as the shared proxy's (10-15 s, more on a loaded machine).
pub fn start_dedicated(
    aliases: &[String],
    fake: FakeVllm,
    guarded: bool,
) -> Result<LiteLlm, String> {
    let api_base = format!("{}/v1", fake.url());
    let specs: Vec<AliasSpec> = aliases
        .iter()
        .map(|name| AliasSpec {
            name,
            api_base: api_base.clone(),
            guardrail: guarded.then_some("message_trimming"),
        })
        .collect();
    let routes = aliases.iter().map(|a| (a.clone(), 0)).collect();
    start(&specs, vec![fake], routes, "dedicated")
}

fn start(
    specs: &[AliasSpec],
    fakes: Vec<FakeVllm>,
    aliases: Vec<(String, usize)>,
    what: &str,
) -> Result<LiteLlm, String> {
    let dir = bed_dir(what);
    install_guardrail(&dir);
    let (mut process, addr) = launch(&dir, &config_yaml(specs))?;
    let started = Instant::now();
    match wait_ready(&mut process, addr, START_TIMEOUT) {
        Ok(()) => Ok(LiteLlm {
            process: Mutex::new(process),
            addr,
            dir,
            fakes,
            aliases,
            started_in: started.elapsed(),
        }),
        Err(why) => Err(format!(
            "{why}\n--- proxy log ({}) ---\n{}",
            dir.display(),
            process.log_tail(60)
        )),
    }
}

/// What became of a proxy that was expected not to start.
#[derive(Debug)]
pub struct FailedStart {
    /// Its exit status, or `None` if it was still running at the deadline (then killed).
    pub status: Option<ExitStatus>,
    /// Whether `/health/readiness` ever answered 200 (it must not).
    pub became_ready: bool,
    pub log: String,
    pub elapsed: Duration,
}

/// Starts a proxy whose config names the trimming guardrail but whose module file is not where
/// LiteLLM looks (as when the ConfigMap is mounted elsewhere). Returns once the process exits,
/// becomes ready, or `timeout` passes.
pub fn start_with_missing_guardrail(timeout: Duration) -> FailedStart {
    let dir = bed_dir("missing-guardrail");
    // Port 9 (discard): nothing is called before the proxy is up, and it never comes up.
    let specs = [AliasSpec {
        name: alias::HEALTHY,
        api_base: "http://127.0.0.1:9/v1".to_string(),
        guardrail: Some("message_trimming"),
    }];
    let started = Instant::now();
    let (mut process, addr) = match launch(&dir, &config_yaml(&specs)) {
        Ok(p) => p,
        Err(why) => panic!("{why}"),
    };
    let deadline = started + timeout;
    let mut became_ready = false;
    let status = loop {
        if let Some(status) = process.exited() {
            break Some(status);
        }
        if matches!(http_get(addr, "/health/readiness"), Ok((200, _))) {
            became_ready = true;
            break None;
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let elapsed = started.elapsed();
    let log = std::fs::read_to_string(dir.join("litellm.log")).unwrap_or_default();
    drop(process);
    let _ = std::fs::remove_dir_all(&dir);
    FailedStart {
        status,
        became_ready,
        log,
        elapsed,
    }
}

/// A fresh folder under the target dir's tmp (`CARGO_TARGET_TMPDIR`), kept after the run for
/// post-mortems (config and log). Folders of test processes that are gone are removed first, so
/// they do not pile up (several test binaries may share the target dir, hence the pid check).
fn bed_dir(what: &str) -> PathBuf {
    // Integration tests get CARGO_TARGET_TMPDIR; the sandbox (an example) uses target/tmp.
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp"))
        .join("litellm-bed");
    std::fs::create_dir_all(&base).unwrap_or_else(|e| panic!("creating {}: {e}", base.display()));
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("{}-{what}-", std::process::id()))
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("creating a folder in {}: {e}", base.display()))
        .keep()
}

fn install_guardrail(dir: &Path) {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/guardrails/message_overflow.py");
    let dst_dir = dir.join("custom_guardrails");
    std::fs::create_dir_all(&dst_dir)
        .unwrap_or_else(|e| panic!("creating {}: {e}", dst_dir.display()));
    std::fs::copy(&src, dst_dir.join("message_overflow.py"))
        .unwrap_or_else(|e| panic!("copying {} into {}: {e}", src.display(), dst_dir.display()));
}

/// The proxy config, shaped like the deployment's ConfigMap.
fn config_yaml(aliases: &[AliasSpec]) -> String {
    let mut y = String::from("model_list:\n");
    for a in aliases {
        let _ = write!(
            y,
            "  - model_name: {name}\n    litellm_params:\n      model: openai/{SERVED_MODEL}\n      \
             api_base: {base}\n      api_key: os.environ/CA_VLLM_LOCAL_API_KEY\n",
            name = a.name,
            base = a.api_base,
        );
        if let Some(g) = a.guardrail {
            let _ = writeln!(y, "      guardrails: [\"{g}\"]");
        }
    }
    y.push_str("guardrails:\n");
    for (name, class) in GUARDRAILS {
        let _ = write!(
            y,
            "  - guardrail_name: {name}\n    litellm_params:\n      \
             guardrail: custom_guardrails.message_overflow.{class}\n      mode: pre_call\n      \
             default_on: false\n      max_model_len: {MAX_MODEL_LEN}\n"
        );
    }
    y.push_str("general_settings:\n  master_key: os.environ/PROXY_MASTER_KEY\n");
    y
}

/// Writes the config and spawns the proxy on a free loopback port.
fn launch(dir: &Path, config: &str) -> Result<(Supervised, SocketAddr), String> {
    let bin = litellm_bin();
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, config)
        .map_err(|e| format!("writing {}: {e}", config_path.display()))?;
    let addr = free_port();
    let mut cmd = Command::new(&bin);
    cmd.arg("--config")
        .arg(&config_path)
        .arg("--host")
        .arg("127.0.0.1")
        .arg("--port")
        .arg(addr.port().to_string())
        .current_dir(dir)
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("PROXY_MASTER_KEY", MASTER_KEY)
        .env("CA_VLLM_LOCAL_API_KEY", VLLM_KEY)
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("DATABASE_URL")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy");
    let log = dir.join("litellm.log");
    let process =
        Supervised::spawn(cmd, &log).map_err(|e| format!("spawning {}: {e}", bin.display()))?;
    Ok((process, addr))
}

fn free_port() -> SocketAddr {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 for a free port");
    l.local_addr().expect("local address of a free port")
}

fn wait_ready(process: &mut Supervised, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.exited() {
            return Err(format!(
                "the LiteLLM proxy exited before it was ready ({status})"
            ));
        }
        let last = match http_get(addr, "/health/readiness") {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => {
                format!("{status} {}", body.chars().take(200).collect::<String>())
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "the LiteLLM proxy on {addr} was not ready after {timeout:?} (last /health/readiness: {last})"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A minimal blocking GET (status and body) for readiness polls, usable before any runtime.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "no HTTP status line in {:?}",
                text.chars().take(80).collect::<String>()
            ))
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
