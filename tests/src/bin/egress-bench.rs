//! The benchmark runner behind `cargo xtask bench`: the kernel programs under
//! BPF_PROG_TEST_RUN, the agent's poll and exposition, and the CPU a lab router spends per
//! forwarded packet with egress-monitor and with the alternatives. Prints each table and writes
//! the results page.
//!
//! `egress-bench [--quick] [--kernel-only] [--out FILE] [--command TEXT]`; needs root, and the
//! agent binary in `EGRESS_MONITOR_BIN` for the end-to-end part. `--kernel-only` prints the
//! kernel programs' table alone (seconds), to compare two builds of the programs;
//! `--agent-only` the agent's tables alone (a minute or two), to compare two builds of the agent.
//! `--jit-compare` measures only the known flow and the empty classifier, with
//! `bpf_jit_enable` at 1 and then 0 (where the kernel allows it), one `jit-compare` line each,
//! for `cargo xtask bench --vm-no-jit`, which runs it in a VM.

use std::{path::PathBuf, process::Command, time::Instant};

use egress_lab::bench::{
    agent::{self, AgentBenchOptions},
    alert::{self, AlertOptions},
    e2e::{self, E2eOptions},
    kernel::{self, KernelOptions},
};

struct Args {
    quick: bool,
    kernel_only: bool,
    agent_only: bool,
    jit_compare: bool,
    out: Option<PathBuf>,
    command: String,
}

fn args() -> Args {
    let mut args = Args {
        quick: false,
        kernel_only: false,
        agent_only: false,
        jit_compare: false,
        out: None,
        command: "cargo xtask bench".to_owned(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--kernel-only" => args.kernel_only = true,
            "--agent-only" => args.agent_only = true,
            "--jit-compare" => args.jit_compare = true,
            "--out" => args.out = Some(it.next().expect("--out needs a file").into()),
            "--command" => args.command = it.next().expect("--command needs a text"),
            other => panic!(
                "unknown argument {other:?}: use --quick, --kernel-only, --agent-only, --jit-compare, --out FILE, --command TEXT"
            ),
        }
    }
    args
}

/// One line of a command's output, or "unknown".
fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::trim).map(str::to_owned))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Machine, kernel, commit: what a reader needs to compare figures.
fn environment() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown".to_owned(), |m| m.trim().to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map_or("unknown".to_owned(), |m| m.trim().to_owned());
    let commit = first_line("git", &["rev-parse", "--short=12", "HEAD"]);
    let dirty =
        !first_line("git", &["status", "--porcelain", "--untracked-files=no"]).eq("unknown");
    format!(
        "| | |\n|---|---|\n| machine | {model}, {cpus} CPUs, {memory} |\n| kernel | {} |\n| commit | {commit}{} |\n| date | {} |\n",
        first_line("uname", &["-r"]),
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        },
        first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    )
}

/// The known flow with the JIT, then with the interpreter: one parseable line per setting.
fn jit_compare(quick: bool) {
    let o = if quick {
        KernelOptions::quick()
    } else {
        KernelOptions::vm()
    };
    let before = std::fs::read_to_string(kernel::JIT_SYSCTL).unwrap_or_else(|_| "1\n".into());
    for jit in [1, 0] {
        match kernel::known_flow_with_jit(jit, &o) {
            Ok(c) => println!(
                "jit-compare jit={jit} ns={:.1} noop={:.1} repeat={} rounds={}",
                c.ns, c.noop_ns, o.repeat, o.rounds
            ),
            Err(e) => println!("jit-compare jit={jit} refused: {e}"),
        }
    }
    // Leave the setting as it was.
    let _ = std::fs::write(kernel::JIT_SYSCTL, before);
}

fn main() {
    let args = args();
    let started = Instant::now();
    if args.jit_compare {
        jit_compare(args.quick);
        return;
    }
    let (k, a, e, l) = if args.quick {
        (
            KernelOptions::quick(),
            AgentBenchOptions::quick(),
            E2eOptions::quick(),
            AlertOptions::quick(),
        )
    } else {
        (
            KernelOptions::full(),
            AgentBenchOptions::full(),
            E2eOptions::full(),
            AlertOptions::full(),
        )
    };
    if args.agent_only {
        println!("== agent (poll, /metrics, memory)");
        print!("{}", agent::run(&a).text());
        return;
    }
    println!("== kernel programs (BPF_PROG_TEST_RUN)");
    let kernel = kernel::run(&k);
    print!("{}", kernel.text());
    if args.kernel_only {
        return;
    }
    println!("\n== agent (poll, /metrics, memory)");
    let agent = agent::run(&a);
    print!("{}", agent.text());
    println!("\n== end to end (lab router CPU per forwarded packet)");
    let e2e = e2e::run(&e);
    print!("{}", e2e.text());
    println!("\n== alert latency (first unexpected packet to Alertmanager)");
    let alerts = alert::run(&l);
    print!("{}", alerts.text());
    let page = format!(
        "# Benchmarks\n\nWhat counting every packet costs, measured by `{}`{}. Rerun it to refresh this page; the figures are from one run on the machine below, not from a test.\n\n{}\n## Kernel programs, per packet\n\n{}\n## Agent\n\n{}\n{}\n## Alert latency\n\n{}",
        args.command,
        if args.quick {
            " (quick variant: tiny repeat counts, not representative)"
        } else {
            ""
        },
        environment(),
        kernel.markdown(),
        agent.markdown(),
        e2e.markdown(),
        alerts.markdown(),
    );
    if let Some(out) = &args.out {
        std::fs::write(out, page).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
        println!(
            "\nwrote {} ({:.0} s)",
            out.display(),
            started.elapsed().as_secs_f64()
        );
    }
}
