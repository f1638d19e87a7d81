//! `ci/bench-fleet`'s bed: N fake clusters (the fake API server serving the healthy scenario,
//! each on its own port with its own CA and token) and fleet files naming the first 1, 5, ...
//! of them, so `smokecheck verify --fleet` can be timed on fleets of several sizes.
//!
//! Usage: fleet_bed [--latency MS] DIR SIZE...   writes DIR/fleet-<SIZE>.yaml for each SIZE,
//! prints "ready", and serves until its stdin closes. `--latency` delays every answer of every
//! fake API server by MS milliseconds (the fake's own delay knob), as a remote API server is
//! a round trip away.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::process::ExitCode;

use support::fake_kube::FakeKube;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let mut latency = std::time::Duration::ZERO;
    if args.peek().is_some_and(|a| a == "--latency") {
        args.next();
        match args.next().map(|ms| ms.parse::<u64>()) {
            Some(Ok(ms)) => latency = std::time::Duration::from_millis(ms),
            _ => {
                eprintln!("error: --latency: expected milliseconds");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = args.next().map(std::path::PathBuf::from) else {
        eprintln!("usage: fleet_bed DIR SIZE...");
        return ExitCode::from(2);
    };
    let sizes: Vec<usize> = match args.map(|a| a.parse()).collect() {
        Ok(sizes) => sizes,
        Err(e) => {
            eprintln!("error: SIZE: {e}");
            return ExitCode::from(2);
        }
    };
    let n = sizes.iter().copied().max().unwrap_or(0);
    let fakes: Vec<FakeKube> = (0..n).map(|_| FakeKube::start("healthy")).collect();
    if !latency.is_zero() {
        for fake in &fakes {
            fake.delay_requests("/", latency);
        }
    }
    let mut entries = Vec::new();
    for (i, fake) in fakes.iter().enumerate() {
        let cluster = dir.join(format!("cluster-{i}"));
        if let Err(e) = std::fs::create_dir_all(&cluster) {
            eprintln!("error: creating {}: {e}", cluster.display());
            return ExitCode::from(2);
        }
        let kubeconfig = fake.write_kubeconfig(&cluster);
        entries.push(format!(
            "  - name: cluster-{i}\n    kubeconfig: {}\n",
            kubeconfig.display()
        ));
    }
    for size in sizes {
        let path = dir.join(format!("fleet-{size}.yaml"));
        let text = format!("version: 1\nclusters:\n{}", entries[..size].concat());
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    println!("ready");
    // Serve until whoever started us closes our stdin (or goes away).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(fakes);
    ExitCode::SUCCESS
}
