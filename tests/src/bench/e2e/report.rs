//! What the runs add up to: a [`Summary`] per variant and workload over the repetitions, and
//! the report as Markdown and as plain text.

use std::fmt::Write as _;
use std::time::Duration;

use super::bpf_stats::PROGRAMS;
use super::load::MAX_BURST_SLOTS;
use super::{BpfRun, E2eReport, ProgramStats, Run, Variant, Workload};

/// One variant under one workload, over all repetitions.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub variant: Variant,
    pub workload: Workload,
    /// Median of the runs' forwarded packets.
    pub packets: u64,
    /// Median of the runs' sent datagrams (UDP) or bytes (TCP).
    pub sent: u64,
    /// Median lab CPU ns per packet.
    pub lab_ns: f64,
    /// Median, over repetitions, of (this variant's lab ns/packet − `none`'s).
    pub extra_ns: f64,
    /// Lab ns/packet as a ratio to `none` in the same repetition.
    pub ratio: Spread,
    /// Median ns per packet of the variant's own process (part of `lab_ns`).
    pub process_ns: f64,
    /// Median whole-machine kernel ns per packet.
    pub machine_kernel_ns: f64,
    /// Its ratio to `none` in the same repetition.
    pub machine_kernel_ratio: Spread,
    /// Median whole-machine user ns per packet.
    pub machine_user_ns: f64,
}

/// Minimum, median and maximum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread {
                min: f64::NAN,
                median: f64::NAN,
                max: f64::NAN,
            };
        }
        v.sort_by(f64::total_cmp);
        Spread {
            min: v[0],
            median: median_sorted(&v),
            max: v[v.len() - 1],
        }
    }
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn median(values: &[f64]) -> f64 {
    Spread::of(values).median
}

fn median_u64(values: &[u64]) -> u64 {
    let f: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    median(&f).round() as u64
}

impl E2eReport {
    /// The runs of one variant and workload, by repetition.
    fn runs_of(&self, workload: Workload, variant: Variant) -> impl Iterator<Item = &Run> {
        self.runs
            .iter()
            .filter(move |r| r.workload == workload && r.variant == variant)
    }

    fn baseline(&self, workload: Workload, repetition: usize) -> Option<&Run> {
        self.runs_of(workload, Variant::None)
            .find(|r| r.repetition == repetition)
    }

    /// One variant under one workload, over the repetitions.
    pub fn summary(&self, workload: Workload, variant: Variant) -> Summary {
        let runs: Vec<&Run> = self.runs_of(workload, variant).collect();
        let pairs: Vec<(&Run, &Run)> = runs
            .iter()
            .filter_map(|r| Some((*r, self.baseline(workload, r.repetition)?)))
            .collect();
        let ratios = |f: fn(&Run) -> f64| -> Vec<f64> {
            pairs.iter().map(|(r, base)| f(r) / f(base)).collect()
        };
        let values = |f: fn(&Run) -> f64| -> Vec<f64> { runs.iter().map(|r| f(r)).collect() };
        Summary {
            variant,
            workload,
            packets: median_u64(&runs.iter().map(|r| r.packets).collect::<Vec<_>>()),
            sent: median_u64(&runs.iter().map(|r| r.sent).collect::<Vec<_>>()),
            lab_ns: median(&values(Run::lab_ns_per_packet)),
            extra_ns: median(
                &pairs
                    .iter()
                    .map(|(r, base)| r.lab_ns_per_packet() - base.lab_ns_per_packet())
                    .collect::<Vec<_>>(),
            ),
            ratio: Spread::of(&ratios(Run::lab_ns_per_packet)),
            process_ns: median(&values(Run::process_ns_per_packet)),
            machine_kernel_ns: median(&values(Run::machine_kernel_ns_per_packet)),
            machine_kernel_ratio: Spread::of(&ratios(Run::machine_kernel_ns_per_packet)),
            machine_user_ns: median(&values(Run::machine_user_ns_per_packet)),
        }
    }

    /// Every variant's summary for `workload`, in [`Variant::ALL`] order.
    pub fn summaries(&self, workload: Workload) -> Vec<Summary> {
        Variant::ALL
            .iter()
            .map(|&v| self.summary(workload, v))
            .collect()
    }

    /// Per program, the median ns per run and the total runs, over the BPF passes of `workload`.
    fn bpf_summary(&self, workload: Workload) -> Vec<(String, f64, u64)> {
        PROGRAMS
            .iter()
            .map(|&name| {
                let stats: Vec<&ProgramStats> = self
                    .bpf
                    .iter()
                    .filter(|b| b.workload == workload)
                    .flat_map(|b| b.programs.iter().filter(|p| p.name == name))
                    .collect();
                let per_run: Vec<f64> = stats
                    .iter()
                    .filter(|p| p.run_cnt > 0)
                    .map(|p| p.run_time_ns as f64 / p.run_cnt as f64)
                    .collect();
                (
                    name.to_owned(),
                    median(&per_run),
                    stats.iter().map(|p| p.run_cnt).sum(),
                )
            })
            .collect()
    }

    fn bpf_ns_per_packet(&self, workload: Workload) -> f64 {
        median(
            &self
                .bpf
                .iter()
                .filter(|b| b.workload == workload)
                .map(BpfRun::program_ns_per_packet)
                .collect::<Vec<_>>(),
        )
    }

    fn workload_title(&self, workload: Workload) -> String {
        let o = &self.options;
        match workload {
            Workload::Udp => format!(
                "{}: {}-byte UDP payloads, {} datagrams/s offered from {} devices for {} s",
                workload.name(),
                o.udp_payload,
                o.udp_pps,
                o.devices,
                fmt_secs(o.duration)
            ),
            Workload::Tcp => format!(
                "{}: one TCP upload of {} MB from a device to a WAN server",
                workload.name(),
                o.tcp_bytes / 1_000_000
            ),
        }
    }

    /// What the numbers say about egress-monitor and tcpdump, from the data: their extra cost,
    /// the multiple between them, and whether the repetitions' ratios leave them apart from
    /// `none` at all.
    fn comparison(&self, workload: Workload) -> String {
        let em = self.summary(workload, Variant::EgressMonitor);
        let td = self.summary(workload, Variant::Tcpdump);
        let mut s = format!(
            "Measured here ({}): egress-monitor added {:.0} ns of CPU per packet over `none` \
             (ratio {}), tcpdump {:.0} ns (ratio {})",
            workload.name(),
            em.extra_ns,
            fmt_spread(&em.ratio),
            td.extra_ns,
            fmt_spread(&td.ratio),
        );
        if em.extra_ns > 0.0 && td.extra_ns > 0.0 {
            let _ = write!(
                s,
                "; the median of tcpdump's extra cost is {:.1}x egress-monitor's.",
                td.extra_ns / em.extra_ns
            );
        } else {
            s.push_str("; no multiple between them can be given.");
        }
        let noisy: Vec<&str> = [&em, &td]
            .into_iter()
            .filter(|v| v.ratio.min <= 1.0 && 1.0 <= v.ratio.max)
            .map(|v| v.variant.name())
            .collect();
        if !noisy.is_empty() {
            let _ = write!(
                s,
                " The ratios of {} to `none` range across 1.0 over the repetitions: on this \
                 machine that difference is within the run-to-run noise.",
                noisy.join(" and ")
            );
        }
        s
    }

    /// The report as Markdown: a table per workload, the BPF statistics, the checks and the
    /// method.
    pub fn markdown(&self) -> String {
        let o = &self.options;
        let m = &self.machine;
        let mut md = String::new();
        let _ = writeln!(md, "## End to end: CPU per forwarded packet\n");
        let _ = writeln!(
            md,
            "{} repetition(s) on Linux {}, {} CPUs; 1-minute load average {} before, {} after; \
             {} s in all.\n",
            o.repetitions,
            m.kernel,
            m.cpus,
            m.load_before,
            m.load_after,
            fmt_secs(self.elapsed)
        );
        for workload in Workload::ALL {
            let _ = writeln!(md, "### {}\n", self.workload_title(workload));
            let _ = writeln!(
                md,
                "| variant | ns CPU/packet (median) | extra ns/packet vs none (median) | ratio to \
                 none (min / median / max) | of which the variant's process, ns/packet | \
                 packets (median) | machine kernel ns/packet (median; ratio min / median / max) \
                 | machine user ns/packet (median) |"
            );
            let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|--:|--:|");
            for s in self.summaries(workload) {
                let _ = writeln!(
                    md,
                    "| {} | {:.0} | {:+.0} | {} | {:.0} | {}{} | {:.0}; {} | {:.0} |",
                    s.variant.name(),
                    s.lab_ns,
                    s.extra_ns,
                    fmt_spread(&s.ratio),
                    s.process_ns,
                    s.packets,
                    self.sent_note(workload, &s),
                    s.machine_kernel_ns,
                    fmt_spread(&s.machine_kernel_ratio),
                    s.machine_user_ns,
                );
            }
            let _ = writeln!(md);
            let _ = writeln!(md, "{}\n", self.bpf_line(workload));
            let _ = writeln!(md, "{}\n", self.comparison(workload));
        }
        if !self.checks.is_empty() {
            let _ = writeln!(md, "Checks that each variant counted:\n");
            for check in &self.checks {
                let _ = writeln!(md, "* {check}");
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(md, "### Method\n");
        let _ = writeln!(md, "{}", self.method());
        md
    }

    /// For UDP, a note when the senders did not send what was offered.
    fn sent_note(&self, workload: Workload, s: &Summary) -> String {
        if workload != Workload::Udp {
            return String::new();
        }
        let offered = median_u64(
            &self
                .runs_of(workload, s.variant)
                .map(|r| r.offered)
                .collect::<Vec<_>>(),
        );
        if s.sent * 100 < offered * 99 {
            format!(" (sent {} of {offered} offered)", s.sent)
        } else {
            String::new()
        }
    }

    fn bpf_line(&self, workload: Workload) -> String {
        let programs: Vec<String> = self
            .bpf_summary(workload)
            .into_iter()
            .map(|(name, ns, runs)| {
                if runs == 0 {
                    format!("`{name}` did not run")
                } else {
                    format!("`{name}` {ns:.0} ns per run ({runs} runs)")
                }
            })
            .collect();
        let extra = self.summary(workload, Variant::EgressMonitor).extra_ns;
        let passes = self.bpf.iter().filter(|b| b.workload == workload);
        let (runs, packets) = passes.fold((0u64, 0u64), |(r, p), b| {
            (
                r + b.programs.iter().map(|p| p.run_cnt).sum::<u64>(),
                p + b.packets,
            )
        });
        format!(
            "BPF statistics (separate egress-monitor pass with `BPF_ENABLE_STATS`, median over \
             repetitions): {}; {:.2} program runs per forwarded packet; both programs together \
             {:.0} ns per forwarded packet, against {:.0} ns of extra CPU per packet measured \
             for egress-monitor above.",
            programs.join(", "),
            runs as f64 / packets.max(1) as f64,
            self.bpf_ns_per_packet(workload),
            extra
        )
    }

    fn method(&self) -> String {
        let o = &self.options;
        let mut p = String::new();
        let _ = write!(
            p,
            "One lab serves the whole run: {devices} device namespaces on the bridge `br-lan` of \
             a router namespace that forwards, masquerades on its uplink (so conntrack is active) \
             and routes to a WAN namespace with servers on documentation addresses. Two \
             workloads cross the router. **{udp}**: the devices send {payload}-byte UDP payloads \
             to the five IPv4 servers, each device to each server in turn, together {pps} \
             datagrams per second for {secs} s, from one sending thread that wakes every \
             millisecond and sends what is due (at most {burst} ms' worth: a sender that falls \
             further behind drops the debt, and the table notes runs that sent less than \
             offered); the WAN \
             namespace counts them and drops them before any socket. **{tcp}**: one TCP upload \
             of {mb} MB from the first device to a WAN sink. Packets are what nftables counted \
             at the WAN end of the uplink; for TCP, the upload's segments (the router also \
             forwards the ACKs back, whose number varies between runs, so the cost of those \
             counts within the cost per upload segment). The device sends GSO super-packets, \
             which the router segments only on its uplink, so for TCP it handles fewer, larger \
             packets than are counted, as a router whose NIC does GRO does: the counting \
             variants act once per super-packet and ACK, the BPF line shows how often. Before every run conntrack's table is flushed.\n\n",
            devices = o.devices,
            udp = Workload::Udp.name(),
            payload = o.udp_payload,
            pps = o.udp_pps,
            burst = MAX_BURST_SLOTS,
            secs = fmt_secs(o.duration),
            tcp = Workload::Tcp.name(),
            mb = o.tcp_bytes / 1_000_000,
        );
        p.push_str("Variants:\n\n");
        for v in Variant::ALL {
            let _ = writeln!(p, "* `{}`: {}.", v.name(), v.method());
        }
        let _ = write!(
            p,
            "\nIn each repetition every variant runs both workloads, the variants in turn in an \
             order rotated by one from each repetition to the next, so that drift in the \
             machine's load falls on all of them alike; each variant is compared with `none` of \
             the same repetition, and the table gives the minimum, median and maximum of those \
             ratios over the repetitions.\n\n\
             **ns CPU/packet** is the CPU time of the lab's share divided by the packets \
             forwarded: this process (whose sending thread carries the whole forwarding path, \
             since a veth delivers packets in the sender's own softirq, through the bridge, the \
             TC hooks, netfilter and NAT into the WAN namespace; and the TCP sink), the \
             variant's own process (the agent's poll loop, tcpdump) and the `ksoftirqd` \
             threads, read from `CLOCK_PROCESS_CPUTIME_ID` and `/proc/<pid>/schedstat` before \
             and after each run. It leaves out other processes on the machine, which other \
             builds kept busy during these runs. **Machine** columns are the same per-packet \
             figure from `/proc/stat` (all CPUs; system + softirq + irq, and user), which does \
             include everything else that ran meanwhile and is much noisier here.\n\n\
             Both include the cost of generating the load, the senders' system calls and \
             for TCP the sink's receiving, which is the same in every variant: ratios to `none` \
             therefore understate how much more the counting itself costs relative to \
             forwarding alone. The **extra ns/packet** column (variant minus `none` in the same \
             repetition) is the direct estimate of what counting adds per packet. The column \
             of the variant's process shows how much of it is the agent's or tcpdump's own CPU \
             time, in user space and in its system calls: the agent's is a cost per poll \
             (once a second), not per packet, so it shrinks per packet as the rate grows, \
             while tcpdump's grows with the packets it copies.\n\n\
             The kernel programs' own time (`run_time_ns`, `run_cnt` from `bpftool prog show`, \
             for the agent's `lan_ingress` and `lan_egress`) comes from an extra egress-monitor \
             pass in each repetition with the kernel's BPF statistics on, held by a \
             `BPF_ENABLE_STATS` descriptor rather than the `kernel.bpf_stats_enabled` sysctl so \
             that nothing stays switched on if the bench dies. That pass is not in the \
             comparison, because keeping the statistics adds two clock reads to every program \
             run.\n"
        );
        p
    }

    /// The report for a terminal: fixed-width tables, the BPF statistics and the checks.
    pub fn text(&self) -> String {
        let o = &self.options;
        let m = &self.machine;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "end-to-end bench: {} repetition(s), {} devices, Linux {}, {} CPUs, load {} -> {}, \
             {} s",
            o.repetitions,
            o.devices,
            m.kernel,
            m.cpus,
            m.load_before,
            m.load_after,
            fmt_secs(self.elapsed)
        );
        for workload in Workload::ALL {
            let _ = writeln!(t, "\n{}", self.workload_title(workload));
            let _ = writeln!(
                t,
                "  {:<15} {:>9} {:>9} {:>19} {:>9} {:>10} {:>10} {:>19} {:>9}",
                "variant",
                "ns/pkt",
                "+ns/pkt",
                "ratio min/med/max",
                "proc ns",
                "packets",
                "sent",
                "machine-kernel ns",
                "user ns"
            );
            for s in self.summaries(workload) {
                let _ = writeln!(
                    t,
                    "  {:<15} {:>9.0} {:>+9.0} {:>19} {:>9.0} {:>10} {:>10} {:>19} {:>9.0}",
                    s.variant.name(),
                    s.lab_ns,
                    s.extra_ns,
                    fmt_spread(&s.ratio),
                    s.process_ns,
                    s.packets,
                    s.sent,
                    format!(
                        "{:.0} ({:.2})",
                        s.machine_kernel_ns, s.machine_kernel_ratio.median
                    ),
                    s.machine_user_ns,
                );
            }
            let _ = writeln!(t, "  {}", self.bpf_line(workload));
            let _ = writeln!(t, "  {}", self.comparison(workload));
        }
        let _ = writeln!(t, "\nper run (lab ns/packet):");
        for workload in Workload::ALL {
            for variant in Variant::ALL {
                let per_rep: Vec<String> = self
                    .runs_of(workload, variant)
                    .map(|r| format!("{:.0}", r.lab_ns_per_packet()))
                    .collect();
                let _ = writeln!(
                    t,
                    "  {:<9} {:<15} {}",
                    workload.name(),
                    variant.name(),
                    per_rep.join(" ")
                );
            }
        }
        if !self.checks.is_empty() {
            let _ = writeln!(t, "\nchecks:");
            for check in &self.checks {
                let _ = writeln!(t, "  {check}");
            }
        }
        t
    }
}

fn fmt_spread(s: &Spread) -> String {
    format!("{:.2} / {:.2} / {:.2}", s.min, s.median, s.max)
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::e2e::{E2eOptions, Machine};

    #[test]
    fn spread_and_median() {
        let s = Spread::of(&[3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(median_u64(&[10, 30]), 20);
    }

    fn run(rep: usize, variant: Variant, lab_ms: u64, packets: u64) -> Run {
        Run {
            repetition: rep,
            variant,
            workload: Workload::Udp,
            packets,
            offered: packets,
            sent: packets,
            send_errors: 0,
            wall: Duration::from_secs(1),
            lab_cpu: Duration::from_millis(lab_ms),
            process_cpu: Duration::ZERO,
            machine_kernel_cpu: Duration::from_millis(lab_ms),
            machine_user_cpu: Duration::ZERO,
        }
    }

    #[test]
    fn ratios_are_taken_within_a_repetition() {
        let report = E2eReport {
            options: E2eOptions::quick(),
            machine: Machine {
                kernel: "6.x".into(),
                cpus: 2,
                load_before: "0".into(),
                load_after: "0".into(),
            },
            runs: vec![
                run(0, Variant::None, 100, 1000),
                run(0, Variant::EgressMonitor, 110, 1000),
                run(1, Variant::None, 200, 1000),
                run(1, Variant::EgressMonitor, 240, 1000),
                run(2, Variant::None, 100, 1000),
                run(2, Variant::EgressMonitor, 130, 1000),
            ],
            bpf: Vec::new(),
            checks: Vec::new(),
            elapsed: Duration::from_secs(1),
        };
        let s = report.summary(Workload::Udp, Variant::EgressMonitor);
        assert!((s.ratio.min - 1.1).abs() < 1e-9);
        assert!((s.ratio.median - 1.2).abs() < 1e-9);
        assert!((s.ratio.max - 1.3).abs() < 1e-9);
        // 10, 40 and 30 µs extra per 1000 packets.
        assert!((s.extra_ns - 30_000.0).abs() < 1e-6);
        assert_eq!(s.packets, 1000);
        let md = report.markdown();
        for v in Variant::ALL {
            assert!(md.contains(&format!("| {} |", v.name())), "{md}");
        }
    }
}
