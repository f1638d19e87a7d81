//! `ci/sandbox`: the test bed as a local stack, and `smokecheck verify` run against it, so a
//! newcomer sees the real output in one command. The stack is the fake API server serving a
//! scenario, a fake vLLM, the real PostgreSQL with LiteLLM's schema and the real LiteLLM proxy
//! (tests/support/stack.rs); smokecheck reaches them as from a laptop, through port-forwards.
//!
//! The scale and latency flags model a real cluster for `ci/bench` (tests/support/scale.rs and
//! latency.rs): many aliases on a proxy of the sandbox's own, a crowded namespace, an API server,
//! port-forwards and a model that take their time. `--serve` keeps the stack up and also holds
//! port-forwards open for the script baseline (ci/baseline/verify.sh), whose settings it writes
//! to a file it names.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;

use support::fake_kube::ForwardLatency;
use support::latency::{Latency, ModelLatency};
use support::stack::{self, FAULTS, Options};

/// The test bed as a local stack, with `smokecheck verify` run against it through port-forwards.
///
/// Latencies are humantime durations, fixed (`300ms`) or a uniform range (`5ms..20ms`) drawn
/// from a generator seeded by --seed.
#[derive(Parser, Debug)]
#[command(
    name = "ci/sandbox",
    bin_name = "ci/sandbox",
    after_help = "Examples:\n  ci/sandbox\n  ci/sandbox --fault key-mismatch\n  ci/sandbox --serve --no-verify --aliases 200 --filler-pods 2000 --filler-secrets 50 \\\n    --api-latency 5ms..20ms --model-latency 300ms --forward-latency 2ms"
)]
struct Args {
    /// The failure to show (--list-faults names them).
    #[arg(long, default_value = "healthy")]
    fault: String,
    /// Name the faults and exit.
    #[arg(long)]
    list_faults: bool,
    /// Keep the stack running afterwards; print how to point smokecheck and the script
    /// baseline at it.
    #[arg(long)]
    serve: bool,
    /// With --serve: start the stack without running smokecheck against it first.
    #[arg(long, requires = "serve")]
    no_verify: bool,
    /// A LiteLLM proxy of the sandbox's own whose config has N aliases (chat-001...), all on
    /// one fake vLLM; the cluster's proxy config lists the same. Default: the bed's proxy, one
    /// alias.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=2000))]
    aliases: Option<u16>,
    /// Pods added to namespace litellm beside the suite's own (copies of its pods' shapes,
    /// other apps' labels).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=20000))]
    filler_pods: u32,
    /// Secrets added to namespace litellm beside the suite's own (Helm releases, TLS pairs,
    /// registry credentials, Opaque).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=5000))]
    filler_secrets: u32,
    /// Added to every request to the API server.
    #[arg(long, value_name = "D[..D]", value_parser = latency)]
    api_latency: Option<Latency>,
    /// Added to the setup of each port-forward stream.
    #[arg(long, value_name = "D[..D]", value_parser = latency)]
    forward_latency: Option<Latency>,
    /// Added to each round trip through a port-forward stream.
    #[arg(long, value_name = "D[..D]", value_parser = latency)]
    forward_rtt: Option<Latency>,
    /// A chat completion's whole time at the fake vLLM (a stream's [DONE]); implies --aliases 1
    /// when --aliases is not given.
    #[arg(long, value_name = "D[..D]", value_parser = latency)]
    model_latency: Option<Latency>,
    /// A stream's first token (default: a third of --model-latency).
    #[arg(long, value_name = "D[..D]", value_parser = latency, requires = "model_latency")]
    model_ttft: Option<Latency>,
    /// The fake vLLM's /health and /v1/models.
    #[arg(long, value_name = "D[..D]", value_parser = latency)]
    vllm_latency: Option<Latency>,
    /// Seeds the latency draws and the filler's content.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Arguments for `smokecheck verify` (after --).
    #[arg(last = true)]
    verify_args: Vec<String>,
}

fn latency(text: &str) -> Result<Latency, String> {
    Latency::parse(text, 0)
}

impl Args {
    fn options(&self) -> Options {
        // Each knob its own seed, so their draws are not in step.
        let seeded = |l: &Option<Latency>, n: u64| {
            l.as_ref()
                .map(|l| Latency::range(l.min(), l.max(), self.seed.wrapping_add(n)))
                .unwrap_or_default()
        };
        let third = |l: &Latency| Latency::range(l.min() / 3, l.max() / 3, 0);
        let ttft = match (&self.model_ttft, &self.model_latency) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(total)) => Some(third(total)),
            (None, None) => None,
        };
        let aliases = self
            .aliases
            .map(usize::from)
            .or(self.model_latency.as_ref().map(|_| 1));
        Options {
            aliases,
            filler_pods: self.filler_pods as usize,
            filler_secrets: self.filler_secrets as usize,
            seed: self.seed,
            api_latency: seeded(&self.api_latency, 1),
            forward: ForwardLatency {
                setup: seeded(&self.forward_latency, 2),
                round_trip: seeded(&self.forward_rtt, 3),
            },
            model: ModelLatency {
                health: seeded(&self.vllm_latency, 4),
                models: seeded(&self.vllm_latency, 5),
                completion: seeded(&self.model_latency, 6),
                first_token: seeded(&ttft, 7),
            },
        }
    }
}

fn smokecheck_bin() -> PathBuf {
    // target/<profile>/examples/sandbox → target/<profile>/smokecheck
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("smokecheck"))
        .unwrap_or_else(|| PathBuf::from("smokecheck"))
}

/// What the options change, for the start-up line.
fn describe(o: &Options) -> String {
    let mut parts = Vec::new();
    if let Some(n) = o.aliases {
        let aliases = if n == 1 { "alias" } else { "aliases" };
        parts.push(format!("{n} {aliases} on a proxy of its own"));
    }
    if o.filler_pods > 0 || o.filler_secrets > 0 {
        parts.push(format!(
            "{} filler pods and {} filler secrets",
            o.filler_pods, o.filler_secrets
        ));
    }
    for (what, l) in [
        ("API latency", &o.api_latency),
        ("port-forward setup", &o.forward.setup),
        ("port-forward round trip", &o.forward.round_trip),
        ("model latency", &o.model.completion),
        ("first token", &o.model.first_token),
        ("vLLM /health and /v1/models", &o.model.health),
    ] {
        if !l.is_zero() {
            parts.push(format!("{what} {l}"));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join(", "))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list_faults {
        for f in FAULTS {
            println!("{:<20} {}", f.name, f.what);
        }
        return ExitCode::SUCCESS;
    }
    let Some(fault) = stack::fault(&args.fault) else {
        let names: Vec<&str> = FAULTS.iter().map(|f| f.name).collect();
        eprintln!(
            "error: --fault: unknown fault {:?} (one of: {})",
            args.fault,
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    let bin = smokecheck_bin();
    if !args.no_verify && !bin.exists() {
        eprintln!(
            "error: {} is missing: build it first (ci/sandbox does)",
            bin.display()
        );
        return ExitCode::from(2);
    }
    let options = args.options();

    eprintln!(
        "sandbox: starting the stack for {:?} ({}{}): PostgreSQL, LiteLLM (~10 s), fake vLLM, fake API server",
        fault.name,
        fault.what,
        describe(&options)
    );
    let stack = stack::start_with_options(fault, &options);
    // The external route has no name a resolver knows: say where it is and how to reach it.
    for (host, url) in stack.ingress_endpoints() {
        let port = url.rsplit(':').next().unwrap_or_default();
        eprintln!(
            "sandbox: the Ingress route https://{host} is served (as Traefik would) at {url}, its certificates chained to {ca}\n  curl --cacert {ca} --resolve {host}:{port}:127.0.0.1 https://{host}:{port}/health/liveliness",
            ca = stack.ingress_ca().display()
        );
    }
    let mut code = 0;
    if !args.no_verify {
        eprintln!(
            "sandbox: running smokecheck verify as from a laptop (port-forwards through the API server)\n"
        );
        let status = Command::new(&bin)
            .arg("verify")
            .arg("--kubeconfig")
            .arg(&stack.kubeconfig)
            .arg("--suite")
            .arg(&stack.suite)
            // The route's host resolves nowhere: reach it at its front, keeping the host for
            // SNI and verification.
            .args(
                stack
                    .ingress_endpoints()
                    .iter()
                    .map(|(host, url)| format!("--endpoint=ingress:{host}={url}")),
            )
            .args(&args.verify_args)
            .status();
        code = match status {
            Ok(s) => s.code().unwrap_or(1),
            Err(e) => {
                eprintln!("error: running {}: {e}", bin.display());
                2
            }
        };
    }
    if args.serve {
        let relays = stack.relays();
        let env = stack.dir().join("baseline.env");
        // And where a pod in the cluster would reach the Services (ci/bench's hook runs).
        let in_cluster = stack.dir().join("in-cluster.env");
        for (path, text) in [
            (&env, stack.baseline_env(&relays)),
            (&in_cluster, stack.in_cluster_env()),
        ] {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("error: writing {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
        // The most requests in flight at once at each server, since the start: what the
        // per-destination caps bound (ci/bench reads it after a run).
        let peaks = stack.dir().join("peaks");
        eprintln!(
            "\nsandbox: the stack keeps running; in another shell:\n  {} verify --kubeconfig {} --suite {}\n  kubectl --kubeconfig {} get pods -A\n  (set -a; . {}; ci/baseline/verify.sh)   the script baseline, through port-forwards held open\n  cat {}   the most requests in flight at once at LiteLLM, the API server and vLLM\nCtrl-C stops it.",
            bin.display(),
            stack.kubeconfig.display(),
            stack.suite.display(),
            stack.kubeconfig.display(),
            env.display(),
            peaks.display(),
        );
        loop {
            let line = format!(
                "litellm {} api {} vllm {}\n",
                stack.litellm.in_flight().peak(),
                stack.fake.in_flight().peak(),
                stack.vllm().smokecheck_in_flight().peak(),
            );
            if let Err(e) = std::fs::write(&peaks, line) {
                eprintln!("sandbox: writing {}: {e}", peaks.display());
            }
            std::thread::park_timeout(Duration::from_secs(1));
        }
    }
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
