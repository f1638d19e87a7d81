//! The `smokecheck` binary: everything happens in [`smokecheck::run`].

fn main() -> std::process::ExitCode {
    smokecheck::run(std::env::args_os())
}
