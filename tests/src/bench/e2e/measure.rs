//! One run of the bench: the lab fixture the runs share, one workload measured under one
//! variant (its CPU time and forwarded packets), and the pass with the BPF statistics on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::bpf_stats::{
    PROGRAMS, attached_program_ids, enable_bpf_stats, program_stats, stats_between,
};
use super::cpu::{CpuSnapshot, ksoftirqd_pids};
use super::load::udp_load;
use super::variants::Active;
use super::{BpfRun, E2eOptions, Run, Variant, Workload};
use crate::netns::{exec_ok, exec_ok_stdin};
use crate::{
    LAN_BRIDGE, Lab, SERVERS_V4, TCP_SINK_PORT, TcpSink, UDP_SINK_PORT, WAN_IF, WanCount,
    tcp_upload,
};

/// The lab and what the runs share.
pub(super) struct Bench<'a> {
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
/// How long a variant may settle after it starts (the agent's first polls, say), at most.
const SETTLE: Duration = Duration::from_millis(500);
/// Pause after the load, so that packets still queued are processed inside the measurement.
const DRAIN: Duration = Duration::from_millis(50);

impl<'a> Bench<'a> {
    pub(super) fn new(lab: &'a Lab, options: &'a E2eOptions) -> Bench<'a> {
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
    pub(super) fn settle(&self) -> Duration {
        SETTLE.min(self.options.duration / 2)
    }

    /// One workload with `active` running; the CPU time and packets of exactly that.
    pub(super) fn measure(
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
                .map(|&s| rx_packets(&wan_before, &wan_after, s.into()))
                .sum(),
            Workload::Tcp => rx_packets(&wan_before, &wan_after, self.tcp_to.ip()),
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
    pub(super) fn bpf_pass(&self, repetition: usize) -> Vec<BpfRun> {
        let active = Active::start(self.lab, Variant::EgressMonitor, self.settle());
        let Active::Agent(agent) = &active else {
            unreachable!("Active::start(EgressMonitor) starts the agent")
        };
        // One program, attached to every port of br-lan: its statistics cover them all.
        let port = &self.lab.devices()[0].router_port;
        let ids = attached_program_ids(self.lab.router_ns(), port);
        for name in PROGRAMS {
            assert!(
                ids.contains_key(name),
                "the agent (pid {}) attached no program {name} to {port}, a port of {LAN_BRIDGE}: found {ids:?}",
                agent.child().pid()
            );
        }
        let stats_on = enable_bpf_stats();
        let mut out = Vec::new();
        for workload in Workload::ALL {
            let before = program_stats(&ids);
            let run = self.measure(repetition, Variant::EgressMonitor, workload, &active);
            let after = program_stats(&ids);
            out.push(BpfRun {
                repetition,
                workload,
                packets: run.packets,
                programs: stats_between(&ids, &before, &after),
                lab_cpu: run.lab_cpu,
            });
        }
        drop(stats_on);
        active.stop(self.lab);
        out
    }
}

/// Packets the WAN namespace received for `server` between two readings of its counters.
fn rx_packets(
    before: &HashMap<IpAddr, WanCount>,
    after: &HashMap<IpAddr, WanCount>,
    server: IpAddr,
) -> u64 {
    let get = |m: &HashMap<IpAddr, WanCount>| m.get(&server).map_or(0, |c| c.rx_packets);
    get(after).saturating_sub(get(before))
}
