//! `cargo xtask bench`: builds the agent and the benchmark runner (`egress-bench`, in the lab
//! crate) and runs it: kernel programs under BPF_PROG_TEST_RUN, the agent's poll and
//! exposition, and the lab router's CPU per packet against the alternatives. Writes
//! `docs/benchmarks.md`. `--quick` is the seconds-long variant CI runs so the benchmark cannot
//! rot; its page goes to `target/` and its figures mean nothing.

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};

use crate::{
    build,
    cmd::{self, cargo, is_root},
    setup::{self, Toolchain},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tiny repeat counts and durations: checks that every part runs, in seconds.
    #[arg(long)]
    quick: bool,

    /// Where to write the results page [default: docs/benchmarks.md, or
    /// target/benchmarks-quick.md with --quick].
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    ensure!(
        is_root()?,
        "`cargo xtask bench` must run as root: it loads BPF programs and builds the lab"
    );
    let toolchain = setup::run()?;
    // The full run measures release builds; the quick one only checks that everything runs.
    let agent = build::build_agent(&toolchain, !args.quick)?;
    run_bench(&toolchain, &agent, args.quick, args.out.clone())
}

/// Runs the benchmark runner with `agent` as the agent binary.
pub fn run_bench(
    toolchain: &Toolchain,
    agent: &Path,
    quick: bool,
    out: Option<PathBuf>,
) -> Result<()> {
    let root = cmd::workspace_root();
    let out = out.unwrap_or_else(|| {
        if quick {
            root.join("target/benchmarks-quick.md")
        } else {
            root.join("docs/benchmarks.md")
        }
    });
    let command = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let mut bench = cargo();
    bench.args(["run", "-p", "egress-lab", "--bin", "egress-bench"]);
    if !quick {
        bench.arg("--release");
    }
    bench
        .arg("--")
        .args(quick.then_some("--quick"))
        .arg("--out")
        .arg(&out)
        .args(["--command", command])
        .env(crate::test::AGENT_BIN_VAR, agent)
        .envs(toolchain.env()?);
    cmd::run(&mut bench)
}
