//! The kernel programs alone, under BPF_PROG_TEST_RUN: nanoseconds per packet for each kind of
//! frame, side by side with an empty classifier loaded the same way (`noop`), so the figure
//! that matters is the difference: what counting adds to a TC hook.
//!
//! The kernel reports the mean duration of `repeat` runs of one frame. Rounds alternate the
//! real program and the empty one, so drift (frequency scaling, a neighbour's load) hits both;
//! the report gives the median over rounds.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, lpm_trie::Key},
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use monitor::kernel::loader::{self, MapSizes};
use monitor_common::{
    DEFAULT_SNIFF_RING_BYTES, DEVICE_SLOTS_MAP, DIRECTION_EGRESS, DIRECTION_INGRESS, DeviceKey,
    LOCAL_V4_MAP,
};

use crate::frames::{frame, ipv4_tcp, ipv4_udp, ipv6_udp, with_tags};

const DEVICE: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x01];
const ROUTER: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x50, 0x01];
const PHONE_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 11);
const PHONE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x50, 0, 0, 0, 0, 0x11);
const SERVER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
/// The target for a flow already in the map, in ns over the empty classifier.
pub const TARGET_OVER_NOOP_NS: f64 = 40.0;
/// Capacity of the flow map in the churn case: small, so it is full after the first frames.
const CHURN_MAP_ENTRIES: u32 = 1024;

/// How much to measure.
#[derive(Clone, Debug)]
pub struct KernelOptions {
    /// Runs per BPF_PROG_TEST_RUN call.
    pub repeat: u32,
    /// Alternating rounds (real program, empty program) per case.
    pub rounds: usize,
    /// Distinct new flows in the churn case, one call each.
    pub churn_flows: u32,
}

impl KernelOptions {
    /// What `cargo xtask bench` runs: a million runs per call.
    pub fn full() -> Self {
        Self {
            repeat: 1_000_000,
            rounds: 7,
            churn_flows: 20_000,
        }
    }

    /// For the known flow under QEMU's TCG, where a run costs microseconds and the interpreter
    /// several times more: seconds per setting of `bpf_jit_enable`.
    pub fn vm() -> Self {
        Self {
            repeat: 100_000,
            rounds: 5,
            churn_flows: 0,
        }
    }

    /// For CI: seconds, so the benchmark cannot rot.
    pub fn quick() -> Self {
        Self {
            repeat: 1_000,
            rounds: 2,
            churn_flows: 200,
        }
    }
}

/// One case's result.
#[derive(Clone, Debug)]
pub struct KernelCase {
    pub name: &'static str,
    /// Median ns per packet of the real program.
    pub ns: f64,
    /// Median ns per packet of the empty classifier on the same frame.
    pub noop_ns: f64,
}

impl KernelCase {
    pub fn over_noop(&self) -> f64 {
        self.ns - self.noop_ns
    }
}

/// Every case.
#[derive(Clone, Debug)]
pub struct KernelReport {
    pub options: KernelOptions,
    pub cases: Vec<KernelCase>,
}

/// The programs of one loaded object.
struct Programs {
    ebpf: Ebpf,
}

impl Programs {
    fn load(flow_entries: u32) -> Self {
        crate::require_root("benchmarking eBPF programs with BPF_PROG_TEST_RUN");
        let mut ebpf = loader::load(&MapSizes {
            flows: flow_entries,
            devices: 1024,
            sniff_ring_bytes: DEFAULT_SNIFF_RING_BYTES,
        })
        .expect("load the eBPF object");
        for name in [
            loader::PROGRAM_LAN_INGRESS,
            loader::PROGRAM_LAN_EGRESS,
            "noop",
        ] {
            loader::load_program(&mut ebpf, name).expect("load program");
        }
        // The LAN prefix is local, as the agent would write it.
        let mut trie: LpmTrie<_, [u8; 4], u8> =
            LpmTrie::try_from(ebpf.map_mut(LOCAL_V4_MAP).expect("LOCAL_V4 map"))
                .expect("an LPM trie");
        trie.insert(&Key::new(24, [192, 168, 50, 0]), 1, 0)
            .expect("insert a local prefix");
        // The device has its slot, as the agent gives one at its first poll.
        let mut slots: HashMap<_, DeviceKey, u32> =
            HashMap::try_from(ebpf.map_mut(DEVICE_SLOTS_MAP).expect("DEVICE_SLOTS map"))
                .expect("a hash map");
        for direction in [DIRECTION_EGRESS, DIRECTION_INGRESS] {
            let key = DeviceKey {
                mac: DEVICE,
                direction,
                pad: 0,
            };
            slots
                .insert(key, u32::from(direction), 0)
                .expect("give the device a slot");
        }
        Self { ebpf }
    }

    /// Mean ns per run of `program` on `frame`, as the kernel measured it.
    fn run(&mut self, program: &str, frame: &[u8], repeat: u32) -> f64 {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(program)
            .expect("program in the object")
            .try_into()
            .expect("a classifier");
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        let result = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        result.duration.as_nanos() as f64
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn up(ip: &[u8], ethertype: u16) -> Vec<u8> {
    frame(DEVICE, ROUTER, ethertype, ip)
}

/// Real program and empty program, alternating, on one frame.
fn measure(
    p: &mut Programs,
    name: &'static str,
    program: &str,
    frame: &[u8],
    o: &KernelOptions,
) -> KernelCase {
    // One run first, so a flow case measures a flow already in the map.
    p.run(program, frame, 1);
    let mut real = Vec::new();
    let mut empty = Vec::new();
    for _ in 0..o.rounds {
        real.push(p.run(program, frame, o.repeat));
        empty.push(p.run("noop", frame, o.repeat));
    }
    KernelCase {
        name,
        ns: median(real),
        noop_ns: median(empty),
    }
}

/// New flows into a full LRU map: each frame goes to a new destination, one call per frame
/// (repeat 1), the empty program measured the same way.
fn churn(o: &KernelOptions) -> KernelCase {
    let mut p = Programs::load(CHURN_MAP_ENTRIES);
    let frame_to = |i: u32| {
        let [_, b, c, d] = i.to_be_bytes();
        let dst = Ipv4Addr::new(198, 18 | (b & 1), c, d);
        up(&ipv4_udp(PHONE_V4, dst, 0, 64), 0x0800)
    };
    // Fill the map first.
    for i in 0..CHURN_MAP_ENTRIES * 2 {
        p.run(loader::PROGRAM_LAN_INGRESS, &frame_to(i), 1);
    }
    let (mut real, mut empty) = (0.0, 0.0);
    let start = CHURN_MAP_ENTRIES * 2;
    for i in start..start + o.churn_flows {
        let f = frame_to(i);
        real += p.run(loader::PROGRAM_LAN_INGRESS, &f, 1);
        empty += p.run("noop", &f, 1);
    }
    let n = f64::from(o.churn_flows);
    KernelCase {
        name: "new flow into a full LRU map (churn)",
        ns: real / n,
        noop_ns: empty / n,
    }
}

/// The sysctl that picks JIT (1) or interpreter (0) for programs loaded after it is written.
pub const JIT_SYSCTL: &str = "/proc/sys/net/core/bpf_jit_enable";

/// The known-flow case alone (IPv4 UDP, egress) and the empty classifier, with programs loaded
/// after `bpf_jit_enable` was set to `jit`. An error if the kernel refuses the setting (as one
/// built with `CONFIG_BPF_JIT_ALWAYS_ON` refuses 0).
pub fn known_flow_with_jit(jit: u8, o: &KernelOptions) -> std::io::Result<KernelCase> {
    std::fs::write(JIT_SYSCTL, format!("{jit}\n"))?;
    let mut p = Programs::load(65_536);
    let v4 = up(&ipv4_udp(PHONE_V4, SERVER_V4, 0, 64), 0x0800);
    Ok(measure(
        &mut p,
        "known flow, IPv4 UDP (egress)",
        loader::PROGRAM_LAN_INGRESS,
        &v4,
        o,
    ))
}

/// Runs every case.
pub fn run(o: &KernelOptions) -> KernelReport {
    let mut p = Programs::load(65_536);
    let egress = loader::PROGRAM_LAN_INGRESS;
    let v4 = up(&ipv4_udp(PHONE_V4, SERVER_V4, 0, 64), 0x0800);
    let v4_tcp = up(&ipv4_tcp(PHONE_V4, SERVER_V4, 32, 1400), 0x0800);
    let v6 = up(&ipv6_udp(PHONE_V6, SERVER_V6, 64), 0x86dd);
    let vlan = with_tags(&v4, &[(0x8100, 100)]);
    let down = frame(
        ROUTER,
        DEVICE,
        0x0800,
        &ipv4_udp(SERVER_V4, PHONE_V4, 0, 64),
    );
    let local = up(
        &ipv4_udp(PHONE_V4, Ipv4Addr::new(192, 168, 50, 12), 0, 64),
        0x0800,
    );
    let arp = {
        let mut f = crate::frames::ethernet([0xff; 6], DEVICE, 0x0806);
        f.extend_from_slice(&[0u8; 28]);
        f
    };
    let mut cases = vec![
        measure(&mut p, "known flow, IPv4 UDP (egress)", egress, &v4, o),
        measure(
            &mut p,
            "known flow, IPv4 TCP 1400 B (egress)",
            egress,
            &v4_tcp,
            o,
        ),
        measure(&mut p, "known flow, IPv6 UDP (egress)", egress, &v6, o),
        measure(&mut p, "known flow, IPv4 802.1Q (egress)", egress, &vlan, o),
        measure(
            &mut p,
            "known flow, IPv4 UDP (ingress)",
            loader::PROGRAM_LAN_EGRESS,
            &down,
            o,
        ),
        measure(&mut p, "local destination (LAN peer)", egress, &local, o),
        measure(&mut p, "not IP (ARP)", egress, &arp, o),
    ];
    cases.push(churn(o));
    KernelReport {
        options: o.clone(),
        cases,
    }
}

impl KernelReport {
    /// The results as a Markdown section.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "BPF_PROG_TEST_RUN, {} runs per call, median of {} alternating rounds of the real program and the empty classifier `noop` on the same frame. Churn: {} new destinations into a full {}-entry LRU map, one call each.\n\n",
            self.options.repeat, self.options.rounds, self.options.churn_flows, CHURN_MAP_ENTRIES
        ));
        let known: Vec<f64> = self
            .cases
            .iter()
            .filter(|c| c.name.starts_with("known flow"))
            .map(KernelCase::over_noop)
            .collect();
        let worst = known.iter().copied().fold(f64::MIN, f64::max);
        let best = known.iter().copied().fold(f64::MAX, f64::min);
        out.push_str(&format!(
            "A flow already in the map costs {best:.0} to {worst:.0} ns over the empty classifier; the target is at most {TARGET_OVER_NOOP_NS:.0} ns ({}).\n\n",
            if worst <= TARGET_OVER_NOOP_NS { "met" } else { "missed" }
        ));
        out.push_str(
            "| case | ns/packet | empty classifier | over empty |\n|---|---:|---:|---:|\n",
        );
        for c in &self.cases {
            out.push_str(&format!(
                "| {} | {:.1} | {:.1} | **{:.1}** |\n",
                c.name,
                c.ns,
                c.noop_ns,
                c.over_noop()
            ));
        }
        out
    }

    /// The results for a terminal.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{:<42} {:>10} {:>10} {:>10}\n",
            "kernel case", "ns/pkt", "empty", "over"
        );
        for c in &self.cases {
            out.push_str(&format!(
                "{:<42} {:>10.1} {:>10.1} {:>10.1}\n",
                c.name,
                c.ns,
                c.noop_ns,
                c.over_noop()
            ));
        }
        out
    }
}
