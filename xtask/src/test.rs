//! `cargo xtask test`: the README's (and CI's) one command for lints and every test.
//!
//! Order: setup, fmt, clippy (fail fast, cheapest first), build the agent, `cargo test`, a check
//! that no test left a lab network namespace behind, every fuzz target for a few seconds
//! (`cargo xtask fuzz --seconds 12`, unless `--no-fuzz`), the kernel matrix (`cargo xtask vm`'s
//! default subset on each of its kernels, unless `--no-vm`), kernel_frames in the arm64, armhf
//! and s390x VMs (unless `--no-vm` or `--no-arch`), and the quick benchmark (so that
//! `cargo xtask bench` cannot rot).

use std::{
    ffi::OsString,
    io::{self, Read as _, Write as _},
    path::Path,
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    build,
    cmd::{self, Phases, cargo, display, is_root, output},
    fuzz,
    setup::{self, Toolchain},
    vm,
};

/// Prefix of the network namespaces the lab creates ("egress lab"); all must be gone after the
/// tests.
const NETNS_PREFIX: &str = "egl-";

/// The variable through which the integration tests find the agent binary they run.
pub const AGENT_BIN_VAR: &str = "EGRESS_MONITOR_BIN";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    no_lint: bool,

    /// Skip the kernel matrix (the default subset of the tests in QEMU on each Debian kernel
    /// of `cargo xtask vm`).
    #[arg(long)]
    no_vm: bool,

    /// Skip only the foreign-architecture VMs (kernel_frames on arm64, armhf and s390x, as
    /// `cargo xtask vm --arch arm64 --arch armhf --arch s390x` runs them).
    #[arg(long)]
    no_arch: bool,

    /// Skip the fuzz targets (`cargo xtask fuzz`, run here for `--fuzz-seconds` each).
    #[arg(long)]
    no_fuzz: bool,

    /// Seconds each fuzz target runs: 7 targets of 12 s and their build stay under 3 minutes.
    #[arg(long, default_value_t = 12, value_name = "N")]
    fuzz_seconds: u32,

    /// Passed to `cargo test` as they are, e.g. `cargo xtask test -- -p egress-lab -- --nocapture`.
    #[arg(last = true)]
    cargo_test_args: Vec<OsString>,
}

pub fn run(args: &Args) -> Result<()> {
    if !is_root()? {
        bail!(
            "`cargo xtask test` must run as root: the integration tests load BPF programs and \
             create network namespaces"
        );
    }
    let mut phases = Phases::default();
    let mut tally = None;
    let result = run_phases(args, &mut phases, &mut tally);
    eprintln!("\n{}", phases.summary());
    if let Some(tally) = tally.filter(|t| t.runs > 0) {
        // Last, alone on its line: the total over every test binary, for people and CI logs.
        println!("{tally}");
    }
    result
}

/// Runs the phases in order; `tally` is filled once `cargo test` ran, even when it failed.
fn run_phases(args: &Args, phases: &mut Phases, tally: &mut Option<Tally>) -> Result<()> {
    let toolchain = phases.run("setup", setup::run)?;
    if !args.no_lint {
        phases.run("fmt", || {
            ensure_tool("fmt", "rustfmt")?;
            cmd::run(cargo().args(["fmt", "--all", "--", "--check"]))
                .context("code is not formatted: run `cargo fmt --all`")?;
            // The fuzz crate is a workspace of its own (see the root Cargo.toml's `exclude`).
            cmd::run(cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]))
                .context("fuzz/ is not formatted: run `cargo fmt --manifest-path fuzz/Cargo.toml`")
        })?;
        phases.run("clippy", || {
            ensure_tool("clippy", "clippy")?;
            // No `--workspace`: the default members are everything that builds for the host.
            // The eBPF crate (no_std, no_main) is linted for its own target below.
            cmd::run(
                cargo()
                    .args(["clippy", "--all-targets", "--", "-D", "warnings"])
                    .envs(toolchain.env()?),
            )
        })?;
        phases.run("clippy (eBPF)", || {
            clippy_ebpf(&toolchain, "bpfel-unknown-none")
        })?;
        // Big-endian routers (mips) and s390x embed the bpfeb build of the same crate.
        phases.run("clippy (eBPF, bpfeb)", || {
            clippy_ebpf(&toolchain, "bpfeb-unknown-none")
        })?;
    }
    let agent = phases.run("build", || build::build_agent(&toolchain, false))?;
    let tests = phases.run("test", || {
        cargo_test(
            &toolchain,
            &agent,
            &args.cargo_test_args,
            tally.insert(Tally::default()),
        )
    });
    // Checked even when tests failed: a failing test is the likeliest to leave a namespace.
    let leftovers = phases.run("netns check", check_no_leftover_namespaces);
    tests?;
    leftovers?;
    if !args.no_fuzz {
        phases.run("fuzz", || {
            fuzz::run_targets(&toolchain, fuzz::TARGETS, args.fuzz_seconds)
        })?;
    }
    if !args.no_vm {
        phases.run("vm", || {
            vm::run_matrix(
                &toolchain,
                &agent,
                &vm::Options::for_test()?,
                tally.get_or_insert_with(Tally::default),
            )
        })?;
    }
    if !args.no_vm && !args.no_arch {
        phases.run("vm (arch)", || {
            vm::run_arches(
                &toolchain,
                &vm::Options::for_arch_test()?,
                tally.get_or_insert_with(Tally::default),
            )
        })?;
    }
    phases.run("bench (quick)", || {
        crate::bench::run_bench(&toolchain, &agent, true, None)
    })?;
    phases.run("netns check (bench)", check_no_leftover_namespaces)
}

/// Adds a toolchain component (rustfmt, clippy) when its cargo subcommand is missing: a
/// minimal rustup profile has neither.
fn ensure_tool(subcommand: &str, component: &str) -> Result<()> {
    let present = cargo()
        .args([subcommand, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if present {
        return Ok(());
    }
    cmd::run(Command::new("rustup").args(["component", "add", component]))
        .with_context(|| format!("cannot add the {component} component"))
}

/// Lints the eBPF crate the way aya-build compiles it: nightly, `target` (`bpfel-unknown-none`
/// or `bpfeb-unknown-none`), `-Z build-std=core` and the `bpf_target_arch` cfg aya-ebpf reads.
fn clippy_ebpf(toolchain: &Toolchain, target: &str) -> Result<()> {
    let nightly_clippy = Command::new("rustup")
        .args(["run", "nightly", "cargo", "clippy", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !nightly_clippy {
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "clippy",
            "--toolchain",
            "nightly",
        ]))
        .context("cannot add clippy to the nightly toolchain")?;
    }
    let mut clippy = Command::new("rustup");
    clippy
        .current_dir(cmd::workspace_root())
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "-p",
            "monitor-ebpf",
            "--bins",
            "--release",
        ])
        .args(["--target", target, "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"])
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        )
        .envs(toolchain.env()?);
    cmd::run(&mut clippy)
}

/// Runs `cargo test` on the default members, echoing its stdout live while counting results
/// into `tally`.
fn cargo_test(
    toolchain: &Toolchain,
    agent: &Path,
    extra: &[OsString],
    tally: &mut Tally,
) -> Result<()> {
    let mut test = cargo();
    test.arg("test")
        .args(extra)
        .env(AGENT_BIN_VAR, agent)
        .envs(toolchain.env()?)
        .stdout(Stdio::piped());
    let shown = display(&test);
    eprintln!("$ {AGENT_BIN_VAR}={} {shown}", agent.display());
    let mut child = test
        .spawn()
        .with_context(|| format!("failed to start `{shown}`"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");

    // Forwarded in chunks, not lines, so that libtest's "test name ... " shows before "ok".
    let mut pending = Vec::new();
    let mut buf = [0; 8192];
    let mut out = io::stdout();
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err).context("cannot read `cargo test` output"),
        };
        out.write_all(&buf[..n])
            .and_then(|()| out.flush())
            .context("cannot write to stdout")?;
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            tally.add_line(&String::from_utf8_lossy(&line));
        }
    }
    let status: ExitStatus = child
        .wait()
        .with_context(|| format!("failed to wait for `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Totals of libtest's "test result:" lines over every test binary and doc-test run (the
/// kernel matrix's guests included).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Test binaries (and doc-test runs) that reported a result.
    pub(crate) runs: u64,
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    /// Adds another tally's counts (a guest's, in the kernel matrix).
    pub(crate) fn add(&mut self, other: &Tally) {
        self.runs += other.runs;
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Adds a line like `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; ...`.
    pub(crate) fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        let Some((_verdict, counts)) = rest.split_once(". ") else {
            return;
        };
        self.runs += 1;
        for part in counts.split(';') {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

impl std::fmt::Display for Tally {
    /// `tests: N passed, N failed, N skipped` (ignored tests are the skipped ones).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tests: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.ignored
        )
    }
}

/// Fails if any lab namespace (`egl-*`) exists: every test must remove what it created, or
/// later runs and the machine inherit its interfaces and routes.
fn check_no_leftover_namespaces() -> Result<()> {
    let list = output(Command::new("ip").args(["netns", "list"]))?;
    let left = lab_namespaces(&list);
    if left.is_empty() {
        println!("no {NETNS_PREFIX}* network namespaces left");
        return Ok(());
    }
    for name in &left {
        eprintln!("left behind: network namespace {name}");
    }
    bail!(
        "the tests left {} network namespace(s) behind: {} (remove with `ip netns delete NAME`)",
        left.len(),
        left.join(" ")
    )
}

/// The `egl-` names in `ip netns list` output, whose lines look like `egl-r1 (id: 3)`.
fn lab_namespaces(list: &str) -> Vec<&str> {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(NETNS_PREFIX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_sums_test_result_lines() {
        let mut tally = Tally::default();
        for line in [
            "running 3 tests",
            "test a ... ok",
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        ] {
            tally.add_line(line);
        }
        assert_eq!(
            tally,
            Tally {
                runs: 3,
                passed: 4,
                failed: 2,
                ignored: 1
            }
        );
        assert_eq!(tally.to_string(), "tests: 4 passed, 2 failed, 1 skipped");
    }

    #[test]
    fn finds_only_lab_namespaces() {
        let list = "egl-r1 (id: 3)\nother (id: 1)\negl-lan0\n";
        assert_eq!(lab_namespaces(list), ["egl-r1", "egl-lan0"]);
        assert!(lab_namespaces("").is_empty());
    }
}
