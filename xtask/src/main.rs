//! Developer tasks for egress-monitor, run as `cargo xtask <command>` (an alias in
//! `.cargo/config.toml`), so that building and testing need no tool but cargo.

mod bench;
mod build;
mod cmd;
mod cross;
mod fuzz;
mod lab;
mod package;
mod setup;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Build, test and demo tasks for egress-monitor")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make this machine ready: nightly rust-src, bpf-linker, the tests' Debian packages, bpffs.
    Setup,
    /// Set up, then build the agent with its eBPF programs.
    Build(build::Args),
    /// Set up, lint, build and run every test, as CI does (needs root).
    Test(test::Args),
    /// The demo: the agent on a virtual router with three simulated devices (needs root).
    Lab(lab::Args),
    /// Measure the cost per packet and per flow, write docs/benchmarks.md (needs root).
    Bench(bench::Args),
    /// Build the fuzz targets (fuzz/, cargo-fuzz) and run each for a bounded time.
    Fuzz(fuzz::Args),
    /// Boot Debian's 5.10, 6.1 and 6.12 kernels in QEMU and run the kernel-facing tests in each.
    Vm(vm::Args),
    /// An OpenWrt package (.ipk, 23.05 and 24.10) of a cross-built agent: target/openwrt/.
    Package(package::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Setup => setup::run().map(drop),
        Command::Build(args) => build::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Lab(args) => lab::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Vm(args) => vm::run(&args),
        Command::Package(args) => package::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The cause chain, without the backtrace that `RUST_BACKTRACE=1` would add to
            // anyhow's Debug output: every error here names the command or file involved.
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
