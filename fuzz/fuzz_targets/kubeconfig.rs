//! Kubeconfig loading as `--kubeconfig PATH` does it (`cluster::config`: kube's
//! `Kubeconfig::read_from`, which parses with `Kubeconfig::from_yaml`, then
//! `Config::from_custom_kubeconfig`), and building the client from the result: errors, never a
//! panic. No network is touched: building a client connects to nothing.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use smokecheck::cluster;
use smokecheck::plan::KubeSelection;

/// kube's client spawns its request buffer on a runtime when it is built.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime")
});

/// `cluster::config` reads a path, as the CLI does: one file per fuzzing process, in memory
/// where the machine has /dev/shm (rewriting a file in place on ext4 waits for the disk: 200
/// executions a second instead of thousands).
static PATH: LazyLock<PathBuf> = LazyLock::new(|| {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("smokecheck-fuzz-kubeconfig-{}", std::process::id()))
});

fuzz_target!(|data: &[u8]| {
    std::fs::write(&*PATH, data).expect("writing the kubeconfig to fuzz");
    let selection = KubeSelection {
        kubeconfig: Some(PATH.clone()),
        context: None,
    };
    RUNTIME.block_on(async {
        let loaded = cluster::config(&selection).await;
        // Read once; none is left behind when the fuzzer exits.
        let _ = std::fs::remove_file(&*PATH);
        match loaded {
            Ok((config, _context)) => {
                // Building the client runs an exec credential plugin or an auth provider: a
                // command the input names. Never run those from fuzz input.
                if config.auth_info.exec.is_none() && config.auth_info.auth_provider.is_none() {
                    let _ = kube::Client::try_from(config);
                }
            }
            Err(e) => {
                let _ = smokecheck::text::error_chain(&e);
            }
        }
    });
});
