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

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::Agent;
use crate::netns::{exec, exec_ok, exec_ok_stdin, run_in, sysctl};
use crate::{
    LAN_BRIDGE, Lab, LabChild, SERVERS_V4, TCP_SINK_PORT, TcpSink, UDP_SINK_PORT, WAN_IF, WanCount,
    tcp_upload,
};

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

/// The lab and what the runs share.
struct Bench<'a> {
    lab: &'a Lab,
    options: &'a E2eOptions,
    /// The TCP upload's destination, with its sink.
    tcp_to: SocketAddr,
    _tcp_sink: TcpSink,
    ksoftirqd: Vec<u32>,
}

/// A table in the WAN namespace that drops the UDP load after the lab's counters have counted
/// it: no socket has to receive it, so less of the measured time is the same in every variant.
const WAN_DROP_TABLE: &str = "egl_bench_drop";
/// The router's table for [`Variant::NftSet`].
const NFT_SET_TABLE: &str = "egl_bench_flows";
/// How long a variant may settle after it starts (the agent's first polls, say), at most.
const SETTLE: Duration = Duration::from_millis(500);
/// Pause after the load, so that packets still queued are processed inside the measurement.
const DRAIN: Duration = Duration::from_millis(50);

impl<'a> Bench<'a> {
    fn new(lab: &'a Lab, options: &'a E2eOptions) -> Bench<'a> {
        exec_ok_stdin(
            lab.wan_ns(),
            "nft",
            &["-f", "-"],
            &format!(
                "table inet {WAN_DROP_TABLE} {{\n\
                 \x20 chain input {{\n\
                 \x20   type filter hook input priority filter + 10; policy accept;\n\
                 \x20   iifname \"{WAN_IF}\" udp dport {UDP_SINK_PORT} drop\n\
                 \x20 }}\n\
                 }}\n"
            ),
        );
        let tcp_to = SocketAddr::new(SERVERS_V4[0].into(), TCP_SINK_PORT);
        Bench {
            lab,
            options,
            tcp_to,
            _tcp_sink: TcpSink::start(lab.wan_ns(), tcp_to),
            ksoftirqd: ksoftirqd_pids(),
        }
    }

    /// How long a variant settles before its first run: [`SETTLE`], shorter for short runs.
    fn settle(&self) -> Duration {
        SETTLE.min(self.options.duration / 2)
    }

    /// One workload with `active` running; the CPU time and packets of exactly that.
    fn measure(
        &self,
        repetition: usize,
        variant: Variant,
        workload: Workload,
        active: &Active,
    ) -> Run {
        // Every run starts with an empty conntrack table, so every run creates its entries
        // (and with conntrack-acct, entries that carry counters).
        exec_ok(self.lab.router_ns(), "conntrack", &["-F"]);
        let wan_before = self.lab.wan_counters();
        let helpers = active.pid().into_iter().collect::<Vec<_>>();
        let cpu_before = CpuSnapshot::take(&helpers, &self.ksoftirqd);
        let wall_start = Instant::now();
        let (offered, sent, send_errors) = match workload {
            Workload::Udp => {
                let sent = udp_load(self.lab, self.options);
                (sent.offered, sent.sent, sent.errors)
            }
            Workload::Tcp => {
                let device = &self.lab.devices()[0];
                tcp_upload(&device.ns, self.tcp_to, self.options.tcp_bytes);
                (self.options.tcp_bytes, self.options.tcp_bytes, 0)
            }
        };
        std::thread::sleep(DRAIN);
        let wall = wall_start.elapsed();
        let cpu_after = CpuSnapshot::take(&helpers, &self.ksoftirqd);
        let wan_after = self.lab.wan_counters();
        let packets = match workload {
            Workload::Udp => SERVERS_V4
                .iter()
                .map(|&s| delta(&wan_before, &wan_after, s.into(), |c| c.rx_packets))
                .sum(),
            Workload::Tcp => delta(&wan_before, &wan_after, self.tcp_to.ip(), |c| c.rx_packets),
        };
        let cpu = cpu_after.since(&cpu_before);
        Run {
            repetition,
            variant,
            workload,
            packets,
            offered,
            sent,
            send_errors,
            wall,
            lab_cpu: cpu.lab,
            process_cpu: cpu.process,
            machine_kernel_cpu: cpu.machine_kernel,
            machine_user_cpu: cpu.machine_user,
        }
    }

    /// The agent once more, with the kernel's BPF statistics on, for the programs' own time.
    fn bpf_pass(&self, repetition: usize) -> Vec<BpfRun> {
        let active = Active::start(self.lab, Variant::EgressMonitor, self.settle());
        let Active::Agent(agent) = &active else {
            unreachable!("Active::start(EgressMonitor) starts the agent")
        };
        let ids = attached_program_ids(self.lab.router_ns());
        for name in PROGRAMS {
            assert!(
                ids.contains_key(name),
                "the agent (pid {}) attached no program {name} to {LAN_BRIDGE}: found {ids:?}",
                agent.child().pid()
            );
        }
        let stats_on = enable_bpf_stats();
        let mut out = Vec::new();
        for workload in Workload::ALL {
            let before = program_stats(&ids);
            let run = self.measure(repetition, Variant::EgressMonitor, workload, &active);
            let after = program_stats(&ids);
            let programs = PROGRAMS
                .iter()
                .map(|&name| {
                    let get = |m: &HashMap<String, (u64, u64)>| {
                        m.get(name).copied().unwrap_or_else(|| {
                            panic!("bpftool does not show program {name} ({ids:?})")
                        })
                    };
                    let (t0, c0) = get(&before);
                    let (t1, c1) = get(&after);
                    ProgramStats {
                        name: name.to_owned(),
                        run_time_ns: t1.saturating_sub(t0),
                        run_cnt: c1.saturating_sub(c0),
                    }
                })
                .collect();
            out.push(BpfRun {
                repetition,
                workload,
                packets: run.packets,
                programs,
                lab_cpu: run.lab_cpu,
            });
        }
        drop(stats_on);
        active.stop(self.lab);
        out
    }
}

fn delta(
    before: &HashMap<IpAddr, WanCount>,
    after: &HashMap<IpAddr, WanCount>,
    server: IpAddr,
    field: impl Fn(&WanCount) -> u64,
) -> u64 {
    let get = |m: &HashMap<IpAddr, WanCount>| m.get(&server).map_or(0, &field);
    get(after).saturating_sub(get(before))
}

/// A variant while it runs.
enum Active {
    None,
    Agent(Agent),
    Tcpdump(LabChild),
    NftSet,
    ConntrackAcct,
}

impl Active {
    /// Starts `variant` and returns once it is in place (and has settled).
    fn start(lab: &Lab, variant: Variant, settle: Duration) -> Active {
        let router = lab.router_ns();
        let active = match variant {
            Variant::None => Active::None,
            Variant::EgressMonitor => Active::Agent(Agent::start_with_poll(lab, "", &[], "1s")),
            Variant::Tcpdump => {
                let child = lab.spawn_in(
                    router,
                    "tcpdump",
                    &["-i", LAN_BRIDGE, "-w", "/dev/null", "-s", "0", "-n"],
                );
                assert!(
                    child.wait_for_log("listening on", Duration::from_secs(10)),
                    "tcpdump did not start listening on {LAN_BRIDGE} within 10 s: {}",
                    child.log()
                );
                Active::Tcpdump(child)
            }
            Variant::NftSet => {
                exec_ok_stdin(router, "nft", &["-f", "-"], &nft_set_ruleset());
                Active::NftSet
            }
            Variant::ConntrackAcct => {
                sysctl(router, "net/netfilter/nf_conntrack_acct", "1");
                Active::ConntrackAcct
            }
        };
        std::thread::sleep(settle);
        active
    }

    /// The variant's own process, whose CPU time counts.
    fn pid(&self) -> Option<u32> {
        match self {
            Active::Agent(agent) => Some(agent.child().pid()),
            Active::Tcpdump(child) => Some(child.pid()),
            _ => None,
        }
    }

    /// Stops the variant after checking that it counted something; returns what the check
    /// found, or panics if it counted nothing.
    fn stop(self, lab: &Lab) -> Option<String> {
        let router = lab.router_ns();
        match self {
            Active::None => None,
            Active::Agent(agent) => {
                let status = agent.stop();
                assert!(status.success(), "the agent exited with {status}");
                None
            }
            Active::Tcpdump(child) => {
                child.terminate(Duration::from_secs(5));
                let log = child.log();
                let stats = parse_tcpdump_stats(&log)
                    .unwrap_or_else(|| panic!("tcpdump printed no capture statistics: {log}"));
                assert!(stats.captured > 0, "tcpdump captured nothing: {log}");
                Some(format!(
                    "tcpdump captured {} packets, {} dropped by the kernel",
                    stats.captured, stats.dropped
                ))
            }
            Active::NftSet => {
                let json = exec_ok(
                    router,
                    "nft",
                    &["-j", "list", "set", "inet", NFT_SET_TABLE, "flows"],
                );
                let (elements, packets) = nft_set_counters(&json);
                exec_ok(router, "nft", &["delete", "table", "inet", NFT_SET_TABLE]);
                assert!(
                    packets > 0,
                    "the nft set counted no packets; `nft -j list set` printed: {json}"
                );
                Some(format!(
                    "nft set: {elements} elements, {packets} packets counted"
                ))
            }
            Active::ConntrackAcct => {
                let listed = exec(router, "conntrack", &["-L"]);
                sysctl(router, "net/netfilter/nf_conntrack_acct", "0");
                let text = String::from_utf8_lossy(&listed.stdout);
                let packets = conntrack_packets(&text);
                assert!(
                    packets > 0,
                    "conntrack entries carry no counters with nf_conntrack_acct=1: {text}"
                );
                Some(format!(
                    "conntrack: {} entries, {packets} packets counted on those still listed",
                    text.lines().count()
                ))
            }
        }
    }
}

fn nft_set_ruleset() -> String {
    format!(
        "table inet {NFT_SET_TABLE} {{\n\
         \x20 set flows {{\n\
         \x20   type ether_addr . ipv4_addr\n\
         \x20   flags dynamic\n\
         \x20   size 65536\n\
         \x20   counter\n\
         \x20 }}\n\
         \x20 chain count_flows {{\n\
         \x20   type filter hook forward priority filter - 10; policy accept;\n\
         \x20   iifname \"{LAN_BRIDGE}\" update @flows {{ ether saddr . ip daddr }}\n\
         \x20 }}\n\
         }}\n"
    )
}

/// Elements and the sum of their packet counters in `nft -j list set` output.
fn nft_set_counters(json: &str) -> (u64, u64) {
    let doc: Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("nft printed invalid JSON ({e}): {json}"));
    let mut elements = 0;
    let mut packets = 0;
    let sets = doc["nftables"].as_array().into_iter().flatten();
    for set in sets.filter_map(|item| item.get("set")) {
        for elem in set["elem"].as_array().into_iter().flatten() {
            elements += 1;
            packets += elem["elem"]["counter"]["packets"].as_u64().unwrap_or(0);
        }
    }
    (elements, packets)
}

/// The sum of `packets=` fields in `conntrack -L` output.
fn conntrack_packets(text: &str) -> u64 {
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix("packets="))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// tcpdump's statistics at exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpdumpStats {
    captured: u64,
    dropped: u64,
}

fn parse_tcpdump_stats(log: &str) -> Option<TcpdumpStats> {
    let find = |suffix: &str| {
        log.lines()
            .find_map(|l| l.trim().strip_suffix(suffix)?.trim().parse::<u64>().ok())
    };
    Some(TcpdumpStats {
        captured: find("packets captured")?,
        dropped: find("packets dropped by kernel")?,
    })
}

/// What the UDP sender did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sent {
    offered: u64,
    sent: u64,
    errors: u64,
}

/// How often the UDP sender wakes up to send what is due. One thread for all devices, waking
/// once per slot, keeps the load generator's own cost (a timer and a context switch per
/// wake-up, expensive in a virtual machine) small next to the forwarding it causes.
const SLOT: Duration = Duration::from_millis(1);

/// Most datagrams sent in one burst, as slots' worth: a sender that is later than that (it did
/// not get the CPU) drops the debt instead of flooding; those count as offered, not sent.
const MAX_BURST_SLOTS: u64 = 10;

/// The UDP load: `udp_pps` datagrams per second for `duration`, from every device to every
/// IPv4 server in turn, sent by one thread in a burst per [`SLOT`].
fn udp_load(lab: &Lab, options: &E2eOptions) -> Sent {
    // Socket i belongs to device i % devices and sends to server (i / devices) % servers, so
    // consecutive datagrams come from different devices.
    let mut sockets = Vec::new();
    for server in SERVERS_V4 {
        for device in lab.devices() {
            let ns = &device.ns;
            let socket = run_in(ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
                .unwrap_or_else(|e| panic!("UDP load: bind in {ns}: {e}"));
            socket
                .connect((server, UDP_SINK_PORT))
                .unwrap_or_else(|e| panic!("UDP load: connect from {ns} to {server}: {e}"));
            socket
                .set_write_timeout(Some(Duration::from_secs(1)))
                .expect("set timeout");
            sockets.push(socket);
        }
    }
    paced_send(
        &sockets,
        options.udp_pps,
        options.udp_payload,
        options.duration,
    )
}

/// Sends `pps` datagrams per second for `duration`, over `sockets` in turn.
fn paced_send(sockets: &[UdpSocket], pps: u64, payload_len: usize, duration: Duration) -> Sent {
    let max_burst = datagrams_due(pps, SLOT * MAX_BURST_SLOTS as u32).max(1);
    let payload = vec![0x5a_u8; payload_len];
    let start = Instant::now();
    let mut attempted = 0u64;
    let mut skipped = 0u64;
    let mut errors = 0u64;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = datagrams_due(pps, elapsed);
        let mut owed = due.saturating_sub(attempted + skipped);
        if owed > max_burst {
            skipped += owed - max_burst;
            owed = max_burst;
        }
        for _ in 0..owed {
            let socket = &sockets[(attempted % sockets.len() as u64) as usize];
            if socket.send(&payload).is_err() {
                errors += 1;
            }
            attempted += 1;
        }
        std::thread::sleep(SLOT.min(duration.saturating_sub(start.elapsed())));
    }
    Sent {
        offered: datagrams_due(pps, duration),
        sent: attempted - errors,
        errors,
    }
}

/// Datagrams a sender of `pps` per second should have sent after `elapsed`.
fn datagrams_due(pps: u64, elapsed: Duration) -> u64 {
    (u128::from(pps) * elapsed.as_nanos() / 1_000_000_000) as u64
}

/// CPU time, taken before and after a run.
#[derive(Debug, Clone, Copy)]
struct CpuSnapshot {
    /// This process + helpers + ksoftirqd, in ns.
    lab_ns: u64,
    /// The helpers alone, in ns.
    process_ns: u64,
    /// `/proc/stat`'s first line.
    machine: MachineTicks,
}

/// CPU time of the whole machine in clock ticks (`/proc/stat`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct MachineTicks {
    /// user + nice.
    user: u64,
    /// system + irq + softirq.
    kernel: u64,
}

/// The difference of two snapshots.
#[derive(Debug, Clone, Copy)]
struct CpuUsed {
    lab: Duration,
    process: Duration,
    machine_kernel: Duration,
    machine_user: Duration,
}

impl CpuSnapshot {
    fn take(helpers: &[u32], ksoftirqd: &[u32]) -> CpuSnapshot {
        let process_ns = helpers
            .iter()
            .map(|&pid| process_tasks_ns(pid))
            .sum::<u64>();
        let lab_ns =
            process_cpu_ns() + process_ns + ksoftirqd.iter().map(|&pid| task_ns(pid)).sum::<u64>();
        let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
        CpuSnapshot {
            lab_ns,
            process_ns,
            machine: parse_proc_stat(&stat).expect("/proc/stat has a `cpu` line"),
        }
    }

    fn since(&self, before: &CpuSnapshot) -> CpuUsed {
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let ticks = |t: u64| Duration::from_nanos(t * 1_000_000_000 / hz);
        CpuUsed {
            lab: Duration::from_nanos(self.lab_ns.saturating_sub(before.lab_ns)),
            process: Duration::from_nanos(self.process_ns.saturating_sub(before.process_ns)),
            machine_kernel: ticks(self.machine.kernel.saturating_sub(before.machine.kernel)),
            machine_user: ticks(self.machine.user.saturating_sub(before.machine.user)),
        }
    }
}

/// The `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq ...
fn parse_proc_stat(text: &str) -> Option<MachineTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    (f.len() >= 7).then(|| MachineTicks {
        user: f[0] + f[1],
        kernel: f[2] + f[5] + f[6],
    })
}

/// This process's CPU time in ns, all threads, exited ones included.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec that outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time of every live thread of process `pid`, in ns (0 once it is gone).
fn process_tasks_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| parse_schedstat(&s))
        .sum()
}

/// CPU time of task `pid` in ns.
fn task_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| parse_schedstat(&s))
        .unwrap_or(0)
}

/// The first field of `/proc/<pid>/schedstat`: time spent on the CPU, in ns.
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

fn ksoftirqd_pids() -> Vec<u32> {
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .collect()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// The kernel programs whose statistics the bench reads.
const PROGRAMS: [&str; 2] = ["lan_ingress", "lan_egress"];

/// Turns the kernel's BPF run-time statistics on for as long as the returned descriptor is
/// open (`BPF_ENABLE_STATS`): unlike the `kernel.bpf_stats_enabled` sysctl, nothing is left
/// switched on if the bench dies, and other users of the sysctl do not turn it off under us.
fn enable_bpf_stats() -> OwnedFd {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .unwrap_or_else(|e| panic!("BPF_ENABLE_STATS failed: {e}"))
}

/// The ids of the programs attached to `br-lan` in namespace `router`, by name: TCX links
/// (asked from the kernel) and, if the agent fell back to them, clsact filters. bpftool 7.1
/// cannot list TCX attachments, nor (as built here) the processes that hold a program.
fn attached_program_ids(router: &str) -> HashMap<String, u32> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let mut ids: HashMap<String, u32> = run_in(router, || {
        [TcAttachType::Ingress, TcAttachType::Egress]
            .into_iter()
            .flat_map(|hook| {
                SchedClassifier::query_tcx(LAN_BRIDGE, hook)
                    .map(|(_, programs)| programs)
                    .unwrap_or_default()
            })
            .filter_map(|p| Some((p.name_as_str()?.to_owned(), p.id())))
            .collect()
    });
    for hook in ["ingress", "egress"] {
        let shown = exec_ok(router, "tc", &["filter", "show", "dev", LAN_BRIDGE, hook]);
        ids.extend(parse_tc_filter_ids(&shown));
    }
    ids.retain(|name, _| PROGRAMS.contains(&name.as_str()));
    ids
}

/// `(name, id)` of the BPF filters in `tc filter show` output (`... name lan_ingress ... id 7`).
fn parse_tc_filter_ids(shown: &str) -> Vec<(String, u32)> {
    shown
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |key: &str| {
                words
                    .windows(2)
                    .find(|w| w[0] == key)
                    .map(|w| w[1].to_owned())
            };
            // The filter's name comes after `bpf` (the object and section) and again as `name`.
            let name = after("name")?;
            let id = after("id")?.parse().ok()?;
            Some((name, id))
        })
        .collect()
}

/// `run_time_ns` and `run_cnt` of the programs `ids` (name to id), from `bpftool prog show`.
fn program_stats(ids: &HashMap<String, u32>) -> HashMap<String, (u64, u64)> {
    let json = exec_ok_host("bpftool", &["prog", "show", "--json"]);
    parse_program_stats(&json, ids)
}

fn parse_program_stats(json: &str, ids: &HashMap<String, u32>) -> HashMap<String, (u64, u64)> {
    let doc: Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("bpftool printed invalid JSON ({e}): {json}"));
    let programs = doc
        .as_array()
        .unwrap_or_else(|| panic!("bpftool printed no array: {json}"));
    ids.iter()
        .filter_map(|(name, &id)| {
            let p = programs.iter().find(|p| p["id"] == id)?;
            // bpftool leaves both fields out while run_time_ns is 0.
            let field = |k: &str| p[k].as_u64().unwrap_or(0);
            Some((name.clone(), (field("run_time_ns"), field("run_cnt"))))
        })
        .collect()
}

/// Runs a tool in this process's own namespace (bpftool: programs are not per namespace).
fn exec_ok_host(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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

    #[test]
    fn spread_and_median() {
        let s = Spread::of(&[3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(median_u64(&[10, 30]), 20);
    }

    #[test]
    fn pacing_schedule() {
        assert_eq!(datagrams_due(20_000, Duration::from_millis(1)), 20);
        assert_eq!(datagrams_due(5_000, Duration::from_secs(5)), 25_000);
        assert_eq!(datagrams_due(3, Duration::from_millis(999)), 2);
    }

    #[test]
    fn parses_proc_stat() {
        let text = "cpu  100 5 30 1000 7 2 11 4 0 0\ncpu0 50 2 15 500 3 1 5 2 0 0\n";
        assert_eq!(
            parse_proc_stat(text),
            Some(MachineTicks {
                user: 105,
                kernel: 43
            })
        );
        assert_eq!(parse_proc_stat("intr 1 2\n"), None);
        assert_eq!(parse_schedstat("123456 789 10\n"), Some(123_456));
    }

    #[test]
    fn parses_tcpdump_statistics() {
        let log = "tcpdump: listening on br-lan, link-type EN10MB (Ethernet), snapshot length \
                   262144 bytes\n120 packets captured\n121 packets received by filter\n\
                   1 packets dropped by kernel\n";
        assert_eq!(
            parse_tcpdump_stats(log),
            Some(TcpdumpStats {
                captured: 120,
                dropped: 1
            })
        );
        assert_eq!(parse_tcpdump_stats("tcpdump: listening on br-lan\n"), None);
    }

    #[test]
    fn parses_nft_set_counters() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet",
            "name": "flows", "table": "egl_bench_flows", "type": ["ether_addr", "ipv4_addr"],
            "handle": 2, "size": 65536, "flags": ["dynamic"], "elem": [
            {"elem": {"val": {"concat": ["00:16:3e:00:00:01", "192.0.2.10"]},
                      "counter": {"packets": 7, "bytes": 644}}},
            {"elem": {"val": {"concat": ["00:16:3e:00:00:02", "192.0.2.20"]},
                      "counter": {"packets": 3, "bytes": 276}}}]}}]}"#;
        assert_eq!(nft_set_counters(json), (2, 10));
    }

    #[test]
    fn parses_conntrack_counters() {
        let text = "udp      17 29 src=192.168.50.11 dst=192.0.2.10 sport=40000 dport=9000 \
                    packets=5 bytes=460 [UNREPLIED] src=192.0.2.10 dst=198.51.100.1 \
                    sport=9000 dport=40000 packets=0 bytes=0 mark=0 use=1\n";
        assert_eq!(conntrack_packets(text), 5);
        assert_eq!(conntrack_packets("udp 17 29 src=1.2.3.4 dport=9000\n"), 0);
    }

    #[test]
    fn parses_bpftool_programs_by_id() {
        let json = r#"[
            {"id": 10, "type": "sched_cls", "name": "lan_ingress", "run_time_ns": 5000,
             "run_cnt": 100},
            {"id": 11, "type": "sched_cls", "name": "lan_egress"},
            {"id": 12, "type": "sched_cls", "name": "lan_ingress", "run_time_ns": 9,
             "run_cnt": 1}
        ]"#;
        let ids = HashMap::from([
            ("lan_ingress".to_owned(), 10),
            ("lan_egress".to_owned(), 11),
        ]);
        let stats = parse_program_stats(json, &ids);
        assert_eq!(stats.len(), 2);
        assert_eq!(stats["lan_ingress"], (5000, 100));
        assert_eq!(stats["lan_egress"], (0, 0));
    }

    #[test]
    fn parses_tc_filter_ids() {
        let shown = "filter protocol all pref 49152 bpf chain 0 \n\
                     filter protocol all pref 49152 bpf chain 0 handle 0x1 lan_ingress \
                     direct-action not_in_hw id 2372 name lan_ingress tag 250959fd50197de9 jited\n";
        assert_eq!(
            parse_tc_filter_ids(shown),
            [("lan_ingress".to_owned(), 2372)]
        );
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
