//! `cargo xtask bench --vm-no-jit`: the known flow's cost per packet without a JIT, as on
//! MIPS32 kernels before 5.16, which interpret eBPF.
//!
//! The host's kernel has `CONFIG_BPF_JIT_ALWAYS_ON`, so the interpreter is measured in a
//! Debian guest (`cargo xtask vm --shell`, whose kernels let `net.core.bpf_jit_enable` go to 0):
//! `egress-bench --jit-compare` loads the programs and the empty classifier once with the JIT
//! and once without, and runs the known flow under BPF_PROG_TEST_RUN. Under QEMU's TCG every
//! figure is inflated, so what carries over is the ratio of interpreter to JIT in the same
//! guest; the host's native JIT figure anchors it. The section it writes into
//! `docs/benchmarks.md` sits between two markers, which `cargo xtask bench` keeps.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    cmd::{self, cargo},
    setup::Toolchain,
};

/// The section's first line in the page.
pub const BEGIN: &str =
    "<!-- vm-no-jit: written by `cargo xtask bench --vm-no-jit`; kept by `cargo xtask bench` -->";
/// The section's last line.
pub const END: &str = "<!-- /vm-no-jit -->";

/// The router the estimate is for: a MIPS 24Kc, as in MT7621's and QCA95xx's class.
const ROUTER_MHZ: f64 = 880.0;
/// Line rate per direction.
const LINE_BITS_PER_S: f64 = 300e6;
/// How many more cycles the 24Kc (in-order, single-issue, 32-bit: every 64-bit eBPF ALU
/// operation is two or more instructions) needs than the host's core for the same eBPF
/// program with a JIT: an assumption, not a measurement.
const CYCLES_FACTOR: f64 = 4.0;
/// The lower end of the interpreter/JIT ratio on real hardware: an assumption, not a
/// measurement (TCG's ratio is rather an upper bound).
const NATIVE_RATIO_LOW: f64 = 5.0;

/// One `jit-compare` line: ns per packet of the real program and of the empty one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pair {
    pub ns: f64,
    pub noop: f64,
}

impl Pair {
    pub fn over(&self) -> f64 {
        self.ns - self.noop
    }
}

/// What one kernel gave: with the JIT and (unless refused) with the interpreter.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    pub where_: String,
    pub jit: Option<Pair>,
    pub interp: Option<Pair>,
    pub repeat: Option<u32>,
    pub rounds: Option<u32>,
}

/// Reads `jit-compare jit=N ns=X noop=Y repeat=R rounds=K` lines out of any output (the
/// guest's come prefixed by its kernel's name).
pub fn parse(where_: &str, output: &str) -> Measured {
    let mut m = Measured {
        where_: where_.to_owned(),
        jit: None,
        interp: None,
        repeat: None,
        rounds: None,
    };
    for line in output.lines() {
        let Some(rest) = line.find("jit-compare ").map(|i| &line[i + 12..]) else {
            continue;
        };
        let field = |name: &str| {
            rest.split_whitespace()
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        };
        let (Some(jit), Some(ns), Some(noop)) = (field("jit"), field("ns"), field("noop")) else {
            continue;
        };
        let (Ok(ns), Ok(noop)) = (ns.parse(), noop.parse()) else {
            continue;
        };
        let pair = Some(Pair { ns, noop });
        match jit {
            "1" => m.jit = pair,
            "0" => m.interp = pair,
            _ => continue,
        }
        m.repeat = field("repeat").and_then(|r| r.parse().ok());
        m.rounds = field("rounds").and_then(|r| r.parse().ok());
    }
    m
}

/// Builds `egress-bench` (release) and returns its path.
fn build_bench(toolchain: &Toolchain) -> Result<PathBuf> {
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "egress-lab",
        "--bin",
        "egress-bench",
    ]);
    build.envs(toolchain.env()?);
    cmd::run(&mut build)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::workspace_root().join("target"));
    let bench = target.join("release/egress-bench");
    ensure!(bench.exists(), "{} was not built", bench.display());
    Ok(bench)
}

/// Runs `command`, its stdout streamed to ours and returned.
fn run_capture(mut command: Command) -> Result<String> {
    let shown = cmd::display(&command);
    eprintln!("$ {shown}");
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start `{shown}`"))?;
    let mut out = String::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        out.push_str(&line);
        out.push('\n');
    }
    let status = child.wait()?;
    ensure!(status.success(), "`{shown}` failed: {status}");
    Ok(out)
}

/// The whole `--vm-no-jit` run: the host, then each kernel's guest; writes the section.
pub fn run(toolchain: &Toolchain, kernels: &[String], quick: bool, out: &Path) -> Result<()> {
    let bench = build_bench(toolchain)?;
    let quick_arg = quick.then_some("--quick");
    let mut host = Command::new(&bench);
    host.arg("--jit-compare").args(quick_arg);
    let host = parse("host", &run_capture(host)?);
    let mut guests = Vec::new();
    for kernel in kernels {
        let mut vm = Command::new(std::env::current_exe().context("cannot find xtask itself")?);
        vm.args(["vm", "--kernel", kernel, "--shell", "--"])
            .arg(&bench)
            .arg("--jit-compare")
            .args(quick_arg);
        let m = parse(&format!("Debian {kernel} guest"), &run_capture(vm)?);
        if m.jit.is_none() || m.interp.is_none() {
            bail!("the {kernel} guest gave no JIT and interpreter figures");
        }
        guests.push(m);
    }
    let command = command_line(kernels, quick);
    let section = markdown(&host, &guests, host_mhz(), &command);
    let page = fs::read_to_string(out).unwrap_or_default();
    fs::write(out, splice(&page, &section))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("{section}\nwrote {}", out.display());
    Ok(())
}

fn command_line(kernels: &[String], quick: bool) -> String {
    let mut c = "cargo xtask bench --vm-no-jit".to_owned();
    if kernels != super::DEFAULT_VM_KERNELS {
        for k in kernels {
            c.push_str(&format!(" --kernel {k}"));
        }
    }
    if quick {
        c.push_str(" --quick");
    }
    c
}

/// The host's clock as `/proc/cpuinfo` gives it, in MHz.
fn host_mhz() -> Option<f64> {
    let info = fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1)?.trim().parse().ok())
}

/// The section, markers included.
pub fn markdown(
    host: &Measured,
    guests: &[Measured],
    host_mhz: Option<f64>,
    command: &str,
) -> String {
    let mut s =
        format!("{BEGIN}\n## Without a JIT (interpreted eBPF, as on MIPS32 before 5.16)\n\n");
    s.push_str(&format!(
        "Measured by `{command}` (needs root; about a minute per guest under TCG, guests 6.12 and 5.10 unless `--kernel` is given). The known flow (IPv4 UDP, egress, `lan_ingress`) and the empty classifier `noop` under BPF_PROG_TEST_RUN, loaded once with `net.core.bpf_jit_enable=1` and once with `=0`. The host's kernel has `CONFIG_BPF_JIT_ALWAYS_ON`, so the interpreter runs in a Debian guest of `cargo xtask vm` under QEMU's TCG, where every figure is inflated by the emulation: only the ratios between figures of the same guest carry over.{}\n\n",
        match (host.repeat, host.rounds) {
            (Some(r), Some(k)) => format!(" {r} runs per call, median of {k} alternating rounds."),
            _ => String::new(),
        }
    ));
    s.push_str(
        "| where | eBPF | ns/packet | empty classifier | over empty |\n|---|---|---:|---:|---:|\n",
    );
    let mut row = |w: &str, kind: &str, p: &Option<Pair>| {
        if let Some(p) = p {
            s.push_str(&format!(
                "| {w} | {kind} | {:.1} | {:.1} | **{:.1}** |\n",
                p.ns,
                p.noop,
                p.over()
            ));
        }
    };
    row(&host.where_, "JIT (native)", &host.jit);
    for g in guests {
        row(&g.where_, "JIT", &g.jit);
        row(&g.where_, "interpreter", &g.interp);
    }
    s.push('\n');
    let ratios: Vec<(String, f64, f64)> = guests
        .iter()
        .filter_map(|g| {
            let (j, i) = (g.jit?, g.interp?);
            Some((g.where_.clone(), i.over() / j.over(), i.ns / j.ns))
        })
        .collect();
    for (w, over, total) in &ratios {
        s.push_str(&format!(
            "{w}: the interpreter costs **{over:.1}x** the JIT over the empty classifier ({total:.1}x on the whole run, hook included).\n\n"
        ));
    }
    let highest = ratios.iter().map(|r| r.1).fold(f64::NAN, f64::max);
    if let (Some(h), false) = (host.jit, highest.is_nan()) {
        s.push_str(&estimate(h.over(), highest, host_mhz));
    }
    s.push_str(END);
    s.push('\n');
    s
}

/// The router estimate, with its assumptions spelled out: `ratio` is the highest
/// interpreter/JIT ratio measured in a guest, the upper end of the range.
fn estimate(host_over_ns: f64, ratio: f64, host_mhz: Option<f64>) -> String {
    let mhz = host_mhz.unwrap_or(3000.0);
    let host_cycles = host_over_ns * mhz / 1000.0;
    let jit_cycles = host_cycles * CYCLES_FACTOR;
    let low = jit_cycles * NATIVE_RATIO_LOW.min(ratio);
    let high = jit_cycles * ratio;
    let pps_big = LINE_BITS_PER_S / (1500.0 * 8.0);
    let pps_small = LINE_BITS_PER_S / (64.0 * 8.0);
    let share = |cycles: f64, pps: f64| 100.0 * cycles * pps / (ROUTER_MHZ * 1e6);
    let us = |cycles: f64| cycles / ROUTER_MHZ;
    let mut s = String::from(
        "### What it means for a 300 Mbit/s router\n\nAn estimate, not a measurement: no MIPS hardware ran it. Assumptions:\n\n",
    );
    s.push_str(&format!(
        "* The host's native JIT cost over the empty classifier, {host_over_ns:.0} ns, is {host_cycles:.0} cycles at the {mhz:.0} MHz {}.\n",
        if host_mhz.is_some() {
            "that /proc/cpuinfo reports"
        } else {
            "assumed (no clock in /proc/cpuinfo)"
        }
    ));
    s.push_str(&format!(
        "* A MIPS 24Kc at {ROUTER_MHZ:.0} MHz (in-order, single-issue, 32-bit, so every 64-bit eBPF operation takes two or more instructions; small caches) needs {CYCLES_FACTOR:.0}x those cycles with a JIT: {jit_cycles:.0} cycles, {:.2} µs per packet. This factor is an assumption, the weakest one; 2x to 8x is plausible, and every figure below scales with it.\n",
        us(jit_cycles)
    ));
    s.push_str(&format!(
        "* Without a JIT it needs the interpreter/JIT ratio times that. The ratio measured above ({ratio:.1}x, the highest of the guests) is the emulated guest's, not a MIPS core's, and rather an upper bound: the interpreter dispatches every eBPF instruction through an indirect jump, which TCG emulates dearly (a lookup of the next translated block each time), while a 24Kc pays a few cycles for it. The lower end assumes {NATIVE_RATIO_LOW:.0}x, the order an interpreter loses to a JIT on real hardware (an assumption, not measured here). So {low:.0} to {high:.0} cycles, {:.1} to {:.1} µs per packet.\n",
        us(low),
        us(high)
    ));
    s.push_str(&format!(
        "* 300 Mbit/s per direction is {pps_big:.0} packets/s at 1500 bytes, {pps_small:.0} at 64 bytes (frame bytes only; {:.0} counting preamble and gap). One program runs per packet in each direction (`lan_ingress` upload, `lan_egress` download), so traffic both ways at once doubles the shares below. The empty hook's own cost (the TC hook and the call, paid by any classifier) is not in them, nor is forwarding's.\n\n",
        LINE_BITS_PER_S / (84.0 * 8.0)
    ));
    s.push_str("| per direction at 300 Mbit/s | packets/s | JIT: share of one 24Kc | interpreter: share of one 24Kc |\n|---|---:|---:|---:|\n");
    for (name, pps) in [
        ("1500-byte packets", pps_big),
        ("64-byte packets", pps_small),
    ] {
        s.push_str(&format!(
            "| {name} | {pps:.0} | {:.1} % | {:.0} to {:.0} % |\n",
            share(jit_cycles, pps),
            share(low, pps),
            share(high, pps)
        ));
    }
    let (big_low, big_high) = (share(low, pps_big), share(high, pps_big));
    s.push_str(&format!(
        "\nSo with a JIT (MIPS32 from 5.16) counting is cheap: {:.1} % of the core per direction at full-size packets. On an interpreting MIPS32 kernel, full-size packets at 300 Mbit/s cost {big_low:.0} to {big_high:.0} % of the core per direction{}; small packets at that rate cost {}. The interpreter is usable on such a router for counting at tens of Mbit/s or for full-size traffic with CPU to spare; at 300 Mbit/s it needs a kernel with the MIPS32 JIT (5.16 or later), (hardware flow offload would spare the CPU, but offloaded flows bypass the TC hooks and go uncounted).\n\n",
        share(jit_cycles, pps_big),
        verdict(big_high),
        if share(low, pps_small) > 100.0 {
            "more than the whole core even at the lower end".to_owned()
        } else {
            format!("{:.0} % or more", share(low, pps_small))
        }
    ));
    s
}

/// What a share of the core means beside forwarding, which on a 24Kc at 300 Mbit/s without
/// offload already takes most of it.
fn verdict(share: f64) -> &'static str {
    if share > 100.0 {
        ", more than the whole core: it cannot keep up"
    } else if share > 25.0 {
        " at the upper end, which a router already busy forwarding at that rate cannot spare"
    } else {
        ", which such a router can spare"
    }
}

/// A section of the page between two marker lines, which `cargo xtask bench` keeps as it is
/// when it writes the page anew.
#[derive(Debug, Clone, Copy)]
pub struct Marked {
    pub begin: &'static str,
    pub end: &'static str,
}

/// This module's section.
pub const SECTION: Marked = Marked {
    begin: BEGIN,
    end: END,
};

/// The figures of the router CPUs (binary sizes, the agent's memory in the foreign guests),
/// written by hand from `cargo xtask build --target` and `cargo xtask vm --arch`.
pub const ROUTERS: Marked = Marked {
    begin: "<!-- routers: from `cargo xtask build --release --target` and `cargo xtask vm --arch`; kept by `cargo xtask bench` -->",
    end: "<!-- /routers -->",
};

/// `page` with `section` in place of its old one, or appended.
pub fn splice(page: &str, section: &str) -> String {
    splice_marked(SECTION, page, section)
}

/// `page` with `section` in place of its old one between `marked`'s lines, or appended.
pub fn splice_marked(marked: Marked, page: &str, section: &str) -> String {
    let (begin, end) = (marked.begin, marked.end);
    let (before, after) = match (page.find(begin), page.find(end)) {
        (Some(b), Some(e)) if e > b => (&page[..b], &page[e + end.len()..]),
        _ => (page, ""),
    };
    let mut out = before.trim_end().to_owned();
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(section.trim_end());
    out.push('\n');
    let after = after.trim_start();
    if !after.is_empty() {
        out.push('\n');
        out.push_str(after);
    }
    out
}

/// The section between `marked`'s lines in `page`, markers included, if it has one.
pub fn marked_section_of(marked: Marked, page: &str) -> Option<&str> {
    let b = page.find(marked.begin)?;
    let e = page[b..].find(marked.end)? + b;
    Some(&page[b..e + marked.end.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixed_guest_lines() {
        let out = "[6.12] jit-compare jit=1 ns=900.5 noop=300.0 repeat=50000 rounds=5\n\
                   noise\n[6.12] jit-compare jit=0 ns=4000.0 noop=500.0 repeat=50000 rounds=5\n";
        let m = parse("g", out);
        assert_eq!(
            m.jit,
            Some(Pair {
                ns: 900.5,
                noop: 300.0
            })
        );
        assert_eq!(
            m.interp,
            Some(Pair {
                ns: 4000.0,
                noop: 500.0
            })
        );
        assert_eq!(m.repeat, Some(50_000));
        let host = parse(
            "host",
            "jit-compare jit=1 ns=80 noop=26 repeat=1 rounds=1\njit-compare jit=0 refused: Invalid argument\n",
        );
        assert!(host.jit.is_some() && host.interp.is_none());
    }

    #[test]
    fn the_section_replaces_its_old_self_and_survives_a_rewrite() {
        let section = format!("{BEGIN}\nnew\n{END}\n");
        let page = format!("# B\n\ntext\n\n{BEGIN}\nold\n{END}\n\n## After\n");
        let spliced = splice(&page, &section);
        assert_eq!(
            spliced,
            format!("# B\n\ntext\n\n{BEGIN}\nnew\n{END}\n\n## After\n")
        );
        assert_eq!(
            marked_section_of(SECTION, &spliced),
            Some(section.trim_end())
        );
        assert_eq!(splice("# B\n", &section), format!("# B\n\n{section}"));
    }

    #[test]
    fn the_section_has_the_ratio_and_the_estimate() {
        let host = parse(
            "host",
            "jit-compare jit=1 ns=80 noop=26 repeat=1 rounds=1\n",
        );
        let g = parse(
            "guest",
            "jit-compare jit=1 ns=1000 noop=400\njit-compare jit=0 ns=4000 noop=1000\n",
        );
        let s = markdown(&host, &[g], Some(2500.0), "cargo xtask bench --vm-no-jit");
        assert!(s.contains("**5.0x**"), "{s}");
        assert!(s.contains("300 Mbit/s"));
        assert!(s.starts_with(BEGIN) && s.trim_end().ends_with(END));
    }
}
