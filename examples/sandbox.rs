//! `ci/sandbox`: the test bed as a local stack, and `smokecheck verify` run against it, so a
//! newcomer sees the real output in one command. The stack is the fake API server serving a
//! scenario, a fake vLLM, the real PostgreSQL with LiteLLM's schema and the real LiteLLM proxy
//! (tests/support/stack.rs); smokecheck reaches them as from a laptop, through port-forwards.
//!
//! Usage: sandbox [--fault NAME] [--serve] [-- VERIFY ARGS...]
//!   --fault NAME   show a failure (--list-faults names them); default: healthy
//!   --serve        keep the stack running afterwards and print how to point smokecheck at it

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use support::stack::{self, FAULTS};

fn smokecheck_bin() -> PathBuf {
    // target/<profile>/examples/sandbox → target/<profile>/smokecheck
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("smokecheck"))
        .unwrap_or_else(|| PathBuf::from("smokecheck"))
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: sandbox [--fault NAME] [--serve] [-- VERIFY ARGS...]; --list-faults names the faults"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut fault = "healthy".to_string();
    let mut serve = false;
    let mut extra: Vec<String> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--fault" => match args.next() {
                Some(f) => fault = f,
                None => return usage(),
            },
            "--serve" => serve = true,
            "--list-faults" => {
                for f in FAULTS {
                    println!("{:<20} {}", f.name, f.what);
                }
                return ExitCode::SUCCESS;
            }
            "--" => extra.extend(args.by_ref()),
            "-h" | "--help" => {
                usage();
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("error: unknown argument {other:?}");
                return usage();
            }
        }
    }
    let Some(fault) = stack::fault(&fault) else {
        let names: Vec<&str> = FAULTS.iter().map(|f| f.name).collect();
        eprintln!(
            "error: --fault: unknown fault {fault:?} (one of: {})",
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    let bin = smokecheck_bin();
    if !bin.exists() {
        eprintln!(
            "error: {} is missing: build it first (ci/sandbox does)",
            bin.display()
        );
        return ExitCode::from(2);
    }

    eprintln!(
        "sandbox: starting the stack for {:?} ({}): PostgreSQL, LiteLLM (~10 s), fake vLLM, fake API server",
        fault.name, fault.what
    );
    let stack = stack::start(fault);
    // The external route has no name a resolver knows: say where it is and how to reach it.
    for (host, url) in stack.ingress_endpoints() {
        let port = url.rsplit(':').next().unwrap_or_default();
        eprintln!(
            "sandbox: the Ingress route https://{host} is served (as Traefik would) at {url}, its certificates chained to {ca}\n  curl --cacert {ca} --resolve {host}:{port}:127.0.0.1 https://{host}:{port}/health/liveliness",
            ca = stack.ingress_ca().display()
        );
    }
    eprintln!(
        "sandbox: running smokecheck verify as from a laptop (port-forwards through the API server)\n"
    );
    let status = Command::new(&bin)
        .arg("verify")
        .arg("--kubeconfig")
        .arg(&stack.kubeconfig)
        .arg("--suite")
        .arg(&stack.suite)
        // The route's host resolves nowhere: reach it at its front, keeping the host for SNI
        // and verification.
        .args(
            stack
                .ingress_endpoints()
                .iter()
                .map(|(host, url)| format!("--endpoint=ingress:{host}={url}")),
        )
        .args(&extra)
        .status();
    let code = match status {
        Ok(s) => s.code().unwrap_or(1),
        Err(e) => {
            eprintln!("error: running {}: {e}", bin.display());
            2
        }
    };
    if serve {
        eprintln!(
            "\nsandbox: the stack keeps running; in another shell:\n  {} verify --kubeconfig {} --suite {}\n  kubectl --kubeconfig {} get pods -A\nCtrl-C stops it.",
            bin.display(),
            stack.kubeconfig.display(),
            stack.suite.display(),
            stack.kubeconfig.display()
        );
        loop {
            std::thread::park();
        }
    }
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
