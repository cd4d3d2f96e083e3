//! `cargo xtask bench`: builds the agent and the benchmark runner (`egress-bench`, in the lab
//! crate) and runs it: kernel programs under BPF_PROG_TEST_RUN, the agent's poll and
//! exposition, and the lab router's CPU per packet against the alternatives. Writes
//! `docs/benchmarks.md`. `--quick` is the seconds-long variant CI runs so the benchmark cannot
//! rot; its page goes to `target/` and its figures mean nothing.
//!
//! `--vm-no-jit` measures instead the known flow with and without the JIT in a VM ([`nojit`])
//! and writes that section alone; a later full run keeps it.

mod nojit;

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, ensure};

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

    /// Measure only the known flow with the JIT and with the interpreter
    /// (`bpf_jit_enable=0`), in a `cargo xtask vm` guest, beside the host's native JIT; writes
    /// its own section of the page, which later runs keep.
    #[arg(long)]
    vm_no_jit: bool,

    /// With --vm-no-jit: the guest kernels (repeatable): 5.10, 6.1, 6.12 [default: 6.12 and 5.10].
    #[arg(long = "kernel", value_name = "SERIES", requires = "vm_no_jit")]
    kernels: Vec<String>,
}

/// The guests of `--vm-no-jit` without `--kernel`: the newest and the oldest of the matrix.
const DEFAULT_VM_KERNELS: [&str; 2] = ["6.12", "5.10"];

pub fn run(args: &Args) -> Result<()> {
    ensure!(
        is_root()?,
        "`cargo xtask bench` must run as root: it loads BPF programs and builds the lab"
    );
    let toolchain = setup::run()?;
    if args.vm_no_jit {
        let kernels = if args.kernels.is_empty() {
            DEFAULT_VM_KERNELS.iter().map(|k| (*k).to_owned()).collect()
        } else {
            args.kernels.clone()
        };
        let out = args.out.clone().unwrap_or_else(|| default_out(args.quick));
        return nojit::run(&toolchain, &kernels, args.quick, &out);
    }
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
    let out = out.unwrap_or_else(|| default_out(quick));
    // The runner writes the whole page: keep the section of `--vm-no-jit` and the router CPUs'
    // figures, which it does not measure.
    let old_page = fs::read_to_string(&out).unwrap_or_default();
    let kept: Vec<(nojit::Marked, String)> = [nojit::SECTION, nojit::ROUTERS]
        .into_iter()
        .filter_map(|m| Some((m, nojit::marked_section_of(m, &old_page)?.to_owned())))
        .collect();
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
    cmd::run(&mut bench)?;
    if !kept.is_empty() {
        let mut page =
            fs::read_to_string(&out).with_context(|| format!("cannot read {}", out.display()))?;
        for (marked, section) in &kept {
            page = nojit::splice_marked(*marked, &page, section);
        }
        fs::write(&out, page).with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(())
}

fn default_out(quick: bool) -> PathBuf {
    let root = cmd::workspace_root();
    if quick {
        root.join("target/benchmarks-quick.md")
    } else {
        root.join("docs/benchmarks.md")
    }
}
