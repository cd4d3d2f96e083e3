//! The end-to-end bench: CPU time per forwarded packet on the lab's virtual router, with nothing
//! counting the traffic and with each way of counting it.
//!
//! One lab (several devices, `br-lan`, NAT and so conntrack) serves the whole run. Two
//! workloads cross the router from the devices to the WAN: small UDP datagrams at a fixed,
//! paced rate from every device (sent by one thread), and one TCP bulk upload. Each runs once per variant
//! ([`Variant`]) in every repetition; the variants take turns within a repetition, in an order
//! rotated from one repetition to the next, so that slow drift (other processes on the machine,
//! caches, thermal) falls on all of them alike. The numbers compared are ratios to `none`
//! within the same repetition.
//!
//! CPU time is taken two ways, before and after each run:
//! * the lab's share: this process's CPU time (the sending thread, whose system calls carry the
//!   whole forwarding path through the namespaces, since a veth delivers in the sender's
//!   softirq, and the TCP sink), the variant's own process (the agent, tcpdump) and the
//!   `ksoftirqd` threads;
//! * the whole machine's, from `/proc/stat` (system + softirq + irq, and user separately),
//!   which also counts whatever else runs on the machine at the time.
//!
//! The kernel programs' own time comes from the kernel's BPF statistics, in an extra pass per
//! repetition that is not part of the comparison, because keeping the statistics costs time
//! on every program run.

mod bpf_stats;
mod cpu;
mod load;
mod measure;
mod report;
mod variants;

use std::time::{Duration, Instant};

use crate::{Lab, SERVERS_V4};
use cpu::loadavg;
use measure::Bench;
pub use report::{Spread, Summary};
use variants::Active;

/// How much to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E2eOptions {
    /// How many times every variant runs every workload.
    pub repetitions: usize,
    /// How long the UDP load lasts in each run.
    pub duration: Duration,
    /// LAN devices; the UDP load comes from all of them in turn, each to every IPv4 server.
    pub devices: usize,
    /// UDP payload bytes per datagram.
    pub udp_payload: usize,
    /// Bytes of the TCP upload in each run (from the first device to one server).
    pub tcp_bytes: u64,
    /// UDP datagrams per second offered, all devices together. It must stay below what the
    /// machine forwards without falling behind: the report shows the datagrams actually sent.
    pub udp_pps: u64,
}

impl E2eOptions {
    /// The run behind the published numbers: a few minutes.
    pub fn full() -> Self {
        E2eOptions {
            repetitions: 5,
            duration: Duration::from_secs(5),
            devices: 4,
            udp_payload: 64,
            tcp_bytes: 200_000_000,
            udp_pps: 20_000,
        }
    }

    /// A smoke run for CI: every variant once, seconds in total.
    pub fn quick() -> Self {
        E2eOptions {
            repetitions: 1,
            duration: Duration::from_millis(300),
            devices: 2,
            udp_payload: 64,
            tcp_bytes: 2_000_000,
            udp_pps: 3_000,
        }
    }
}

/// What counts the traffic while it is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// Nothing: forwarding, NAT and conntrack only.
    None,
    /// The agent on `br-lan`, polling every second.
    EgressMonitor,
    /// `tcpdump -i br-lan -w /dev/null -s 0 -n` in the router namespace.
    Tcpdump,
    /// An nftables set keyed by `ether saddr . ip daddr` with a counter per element, updated from
    /// the forward hook for every packet from `br-lan`.
    NftSet,
    /// `net.netfilter.nf_conntrack_acct=1`: byte and packet counters on every conntrack entry
    /// (what nlbwmon reads).
    ConntrackAcct,
}

impl Variant {
    /// Every variant, baseline first.
    pub const ALL: [Variant; 5] = [
        Variant::None,
        Variant::EgressMonitor,
        Variant::Tcpdump,
        Variant::NftSet,
        Variant::ConntrackAcct,
    ];

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::EgressMonitor => "egress-monitor",
            Variant::Tcpdump => "tcpdump",
            Variant::NftSet => "nft-set",
            Variant::ConntrackAcct => "conntrack-acct",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Variant::None => {
                "nothing counts; the router forwards, masquerades and tracks connections"
            }
            Variant::EgressMonitor => {
                "the agent (its TC programs `lan_ingress` and `lan_egress` on `br-lan`, polling \
                 every second)"
            }
            Variant::Tcpdump => {
                "`tcpdump -i br-lan -w /dev/null -s 0 -n` in the router namespace, started and \
                 listening before the load"
            }
            Variant::NftSet => {
                "an nftables table with a dynamic set keyed by `ether saddr . ip daddr` with a \
                 counter per element, updated from a forward-hook chain for every packet from \
                 `br-lan`"
            }
            Variant::ConntrackAcct => {
                "`net.netfilter.nf_conntrack_acct=1` in the router namespace (conntrack already \
                 runs for NAT; this adds per-connection byte and packet counters, as nlbwmon uses)"
            }
        }
    }
}

/// The traffic of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// Small UDP datagrams, paced, from every device to the WAN servers.
    Udp,
    /// One TCP bulk upload from a device to a WAN server.
    Tcp,
}

impl Workload {
    /// Every workload, in the order each variant runs them.
    pub const ALL: [Workload; 2] = [Workload::Udp, Workload::Tcp];

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Udp => "udp-small",
            Workload::Tcp => "tcp-bulk",
        }
    }
}

/// One workload under one variant in one repetition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// 0-based.
    pub repetition: usize,
    pub variant: Variant,
    pub workload: Workload,
    /// Packets the router forwarded, counted by nftables at the WAN end of the uplink: UDP
    /// datagrams that arrived; for TCP, the upload's segments that arrived (the ACKs going the
    /// other way, whose number varies from run to run, are forwarded too but not counted).
    pub packets: u64,
    /// UDP: datagrams the schedule asked for. TCP: bytes to upload.
    pub offered: u64,
    /// UDP: datagrams sent. TCP: bytes uploaded.
    pub sent: u64,
    /// UDP: send calls that failed.
    pub send_errors: u64,
    pub wall: Duration,
    /// CPU time of the lab's processes and threads (see the module documentation).
    pub lab_cpu: Duration,
    /// The part of `lab_cpu` spent by the variant's own process (the agent, tcpdump).
    pub process_cpu: Duration,
    /// The whole machine's system + softirq + irq time (`/proc/stat`).
    pub machine_kernel_cpu: Duration,
    /// The whole machine's user + nice time (`/proc/stat`).
    pub machine_user_cpu: Duration,
}

impl Run {
    /// Lab CPU nanoseconds per forwarded packet.
    pub fn lab_ns_per_packet(&self) -> f64 {
        per_packet(self.lab_cpu, self.packets)
    }

    /// The variant's own process's CPU nanoseconds per forwarded packet.
    pub fn process_ns_per_packet(&self) -> f64 {
        per_packet(self.process_cpu, self.packets)
    }

    /// Whole-machine kernel nanoseconds per forwarded packet.
    pub fn machine_kernel_ns_per_packet(&self) -> f64 {
        per_packet(self.machine_kernel_cpu, self.packets)
    }

    /// Whole-machine user nanoseconds per forwarded packet.
    pub fn machine_user_ns_per_packet(&self) -> f64 {
        per_packet(self.machine_user_cpu, self.packets)
    }
}

fn per_packet(cpu: Duration, packets: u64) -> f64 {
    if packets == 0 {
        f64::NAN
    } else {
        cpu.as_nanos() as f64 / packets as f64
    }
}

/// A kernel program's statistics over one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: String,
    /// Time spent in the program (`run_time_ns`).
    pub run_time_ns: u64,
    /// Times it ran (`run_cnt`).
    pub run_cnt: u64,
}

/// The BPF statistics pass of one workload in one repetition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfRun {
    pub repetition: usize,
    pub workload: Workload,
    /// Forwarded packets (as in [`Run::packets`]).
    pub packets: u64,
    /// `lan_ingress` and `lan_egress`.
    pub programs: Vec<ProgramStats>,
    /// The run's lab CPU, with the statistics on.
    pub lab_cpu: Duration,
}

impl BpfRun {
    /// Nanoseconds inside both programs per forwarded packet.
    pub fn program_ns_per_packet(&self) -> f64 {
        let ns: u64 = self.programs.iter().map(|p| p.run_time_ns).sum();
        ns as f64 / self.packets.max(1) as f64
    }
}

/// The machine the bench ran on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub kernel: String,
    pub cpus: usize,
    /// `/proc/loadavg`'s 1-minute average before and after.
    pub load_before: String,
    pub load_after: String,
}

/// Everything measured; [`E2eReport::markdown`] and [`E2eReport::text`] present it.
#[derive(Debug, Clone)]
pub struct E2eReport {
    pub options: E2eOptions,
    pub machine: Machine,
    pub runs: Vec<Run>,
    pub bpf: Vec<BpfRun>,
    /// What each variant's own check found (tcpdump's capture statistics, the nft set's
    /// counters, conntrack's counters), one line each.
    pub checks: Vec<String>,
    pub elapsed: Duration,
}

/// The order of the variants in repetition `repetition`: [`Variant::ALL`] rotated by it.
pub fn variant_order(repetition: usize) -> Vec<Variant> {
    let mut order = Variant::ALL.to_vec();
    order.rotate_left(repetition % Variant::ALL.len());
    order
}

/// Runs the bench and returns its measurements. Needs root and the agent binary
/// ([`crate::agent::agent_binary`]); panics with a message saying what failed.
pub fn run(options: &E2eOptions) -> E2eReport {
    assert!(
        options.repetitions > 0,
        "E2eOptions: repetitions must be > 0"
    );
    assert!(
        (1..=SERVERS_V4.len() * 40).contains(&options.devices),
        "E2eOptions: devices must be between 1 and {}",
        SERVERS_V4.len() * 40
    );
    assert!(
        options.udp_payload <= crate::MAX_UDP_PAYLOAD,
        "E2eOptions: udp_payload {} > {} would fragment",
        options.udp_payload,
        crate::MAX_UDP_PAYLOAD
    );
    assert!(
        options.udp_pps >= options.devices as u64,
        "E2eOptions: udp_pps must give every device at least one datagram per second"
    );
    // Fail before building anything if the binary is missing.
    crate::agent::agent_binary();
    for tool in ["tcpdump", "nft", "bpftool", "conntrack"] {
        assert!(
            on_path(tool),
            "the bench needs `{tool}` (cargo xtask setup installs it)"
        );
    }
    let started = Instant::now();
    let load_before = loadavg();
    let lab = Lab::builder().device_count(options.devices).build();
    let bench = Bench::new(&lab, options);
    let mut runs = Vec::new();
    let mut bpf = Vec::new();
    let mut checks = Vec::new();
    for repetition in 0..options.repetitions {
        for variant in variant_order(repetition) {
            let active = Active::start(&lab, variant, bench.settle());
            for workload in Workload::ALL {
                runs.push(bench.measure(repetition, variant, workload, &active));
            }
            if let Some(check) = active.stop(&lab) {
                checks.push(format!("repetition {}: {check}", repetition + 1));
            }
        }
        for run in runs.iter().filter(|r| r.repetition == repetition) {
            if run.send_errors > 0 {
                checks.push(format!(
                    "repetition {}: {} under {}: {} send calls failed",
                    repetition + 1,
                    run.workload.name(),
                    run.variant.name(),
                    run.send_errors
                ));
            }
        }
        bpf.extend(bench.bpf_pass(repetition));
    }
    let machine = Machine {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        load_after: loadavg(),
    };
    drop(bench);
    drop(lab);
    E2eReport {
        options: options.clone(),
        machine,
        runs,
        bpf,
        checks,
        elapsed: started.elapsed(),
    }
}

/// Whether `tool` is a file in one of `PATH`'s directories.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_rotates_every_repetition() {
        assert_eq!(variant_order(0), Variant::ALL);
        assert_eq!(variant_order(1)[0], Variant::EgressMonitor);
        assert_eq!(variant_order(1)[4], Variant::None);
        assert_eq!(variant_order(5), Variant::ALL);
        for r in 0..5 {
            let mut o = variant_order(r);
            o.sort();
            assert_eq!(o, Variant::ALL);
        }
    }
}
