//! The real kernel programs run on crafted frames through BPF_PROG_TEST_RUN: every frame is
//! counted exactly or counted as what it is (not IP, local, parse error), and always passes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, PerCpuArray, PerCpuHashMap, RingBuf, lpm_trie::Key},
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use egress_lab::{
    frames::{frame, ipv4_tcp, ipv4_udp, ipv6_hbh_tcp, ipv6_udp, with_tags},
    require_root,
};
use monitor::kernel::loader::{self, MapSizes};
use monitor_common::{
    Counters, DEVICE_SLOTS_MAP, DEVICE_TOTALS_MAP, DEVICES_MAP, DIRECTION_EGRESS,
    DIRECTION_INGRESS, DeviceKey, FAMILY_V4, FAMILY_V6, FLOWS_MAP, FlowKey, FlowValue, KernelStats,
    LOCAL_V4_MAP, LOCAL_V6_MAP, SNIFF_DATA_MAX, SNIFF_DHCP, SNIFF_DNS_QUERY, SNIFF_DNS_RESPONSE,
    SNIFF_MAP, SNIFF_TLS_HELLO, STATS_MAP, SniffHeader,
};

const DEVICE: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x01];
const ROUTER: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x50, 0x01];
const PHONE_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 11);
const SERVER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const PHONE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x50, 0, 0, 0, 0, 0x11);
const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
/// TC_ACT_UNSPEC as the kernel returns it: the verdict that lets every packet go on.
const PASS: u32 = u32::MAX;

/// The programs loaded (not attached) with their maps.
struct Kernel {
    ebpf: Ebpf,
}

impl Kernel {
    fn new() -> Self {
        Self::with_ring(monitor_common::DEFAULT_SNIFF_RING_BYTES)
    }

    /// With a sniff ring buffer of `ring_bytes`.
    fn with_ring(ring_bytes: u32) -> Self {
        require_root("running eBPF programs with BPF_PROG_TEST_RUN");
        let mut ebpf = loader::load(&MapSizes {
            flows: 64,
            devices: 64,
            sniff_ring_bytes: ring_bytes,
        })
        .expect("load the eBPF object");
        for name in [loader::PROGRAM_LAN_INGRESS, loader::PROGRAM_LAN_EGRESS] {
            loader::load_program(&mut ebpf, name).expect("load program");
        }
        Self { ebpf }
    }

    fn add_local(&mut self, net: &str) {
        let net: ipnet::IpNet = net.parse().unwrap();
        match net {
            ipnet::IpNet::V4(n) => {
                let mut trie: LpmTrie<_, [u8; 4], u8> =
                    LpmTrie::try_from(self.ebpf.map_mut(LOCAL_V4_MAP).unwrap()).unwrap();
                trie.insert(&Key::new(n.prefix_len().into(), n.addr().octets()), 1, 0)
                    .unwrap();
            }
            ipnet::IpNet::V6(n) => {
                let mut trie: LpmTrie<_, [u8; 16], u8> =
                    LpmTrie::try_from(self.ebpf.map_mut(LOCAL_V6_MAP).unwrap()).unwrap();
                trie.insert(&Key::new(n.prefix_len().into(), n.addr().octets()), 1, 0)
                    .unwrap();
            }
        }
    }

    /// Runs a program once on `frame`; `gso_segs` > 0 makes the frame a GSO super-packet.
    fn run(&mut self, program: &str, frame: &[u8], gso_segs: u32) -> u32 {
        let prog: &mut SchedClassifier =
            self.ebpf.program_mut(program).unwrap().try_into().unwrap();
        let ctx = skb_context(gso_segs);
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        if gso_segs > 0 {
            opts.ctx_in = Some(&ctx);
        }
        prog.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
    }

    fn egress(&mut self, frame: &[u8]) -> u32 {
        self.run(loader::PROGRAM_LAN_INGRESS, frame, 0)
    }

    fn ingress(&mut self, frame: &[u8]) -> u32 {
        self.run(loader::PROGRAM_LAN_EGRESS, frame, 0)
    }

    /// Every record waiting in the sniff ring buffer: header and captured payload.
    fn sniffed(&mut self) -> Vec<(SniffHeader, Vec<u8>)> {
        let mut ring = RingBuf::try_from(self.ebpf.map_mut(SNIFF_MAP).unwrap()).unwrap();
        let mut out = Vec::new();
        while let Some(record) = ring.next() {
            assert!(record.len() >= size_of::<SniffHeader>(), "record too short");
            // SAFETY: SniffHeader is plain old data and the record holds at least its size.
            let header: SniffHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
            let data = record[size_of::<SniffHeader>()..][..header.captured as usize].to_vec();
            out.push((header, data));
        }
        out
    }

    fn stats(&self, direction: u8) -> KernelStats {
        let map: PerCpuArray<_, KernelStats> =
            PerCpuArray::try_from(self.ebpf.map(STATS_MAP).unwrap()).unwrap();
        map.get(&(direction as u32), 0)
            .unwrap()
            .iter()
            .fold(KernelStats::default(), KernelStats::merged)
    }

    /// The device's total in the hash (before the agent gives it a slot).
    fn device(&self, direction: u8) -> Counters {
        let map: PerCpuHashMap<_, DeviceKey, Counters> =
            PerCpuHashMap::try_from(self.ebpf.map(DEVICES_MAP).unwrap()).unwrap();
        map.get(&device_key(direction), 0)
            .map(|v| sum(v.iter()))
            .unwrap_or_default()
    }

    /// Gives the device a slot in DEVICE_TOTALS, as the agent does.
    fn give_slot(&mut self, direction: u8, slot: u32) {
        let mut map: HashMap<_, DeviceKey, u32> =
            HashMap::try_from(self.ebpf.map_mut(DEVICE_SLOTS_MAP).unwrap()).unwrap();
        map.insert(device_key(direction), slot, 0).unwrap();
    }

    /// The total at a device slot.
    fn slot_total(&self, slot: u32) -> Counters {
        let map: PerCpuArray<_, Counters> =
            PerCpuArray::try_from(self.ebpf.map(DEVICE_TOTALS_MAP).unwrap()).unwrap();
        sum(map.get(&slot, 0).unwrap().iter())
    }

    fn flow(&self, direction: u8, remote: IpAddr) -> Counters {
        let (c, _) = self.flow_value(direction, remote);
        c
    }

    /// A flow's counts and the device slot (plus one) its entry caches, per CPU.
    fn flow_value(&self, direction: u8, remote: IpAddr) -> (Counters, Vec<u32>) {
        let map: PerCpuHashMap<_, FlowKey, FlowValue> =
            PerCpuHashMap::try_from(self.ebpf.map(FLOWS_MAP).unwrap()).unwrap();
        let (family, addr) = match remote {
            IpAddr::V4(a) => {
                let mut addr = [0u8; 16];
                addr[..4].copy_from_slice(&a.octets());
                (FAMILY_V4, addr)
            }
            IpAddr::V6(a) => (FAMILY_V6, a.octets()),
        };
        let key = FlowKey {
            mac: DEVICE,
            direction,
            family,
            addr,
        };
        match map.get(&key, 0) {
            Ok(values) => (
                values.iter().fold(Counters::default(), |acc, v| {
                    acc.merged(&Counters {
                        bytes: v.bytes,
                        packets: v.packets,
                    })
                }),
                values.iter().map(|v| v.device_slot).collect(),
            ),
            Err(_) => (Counters::default(), Vec::new()),
        }
    }
}

fn device_key(direction: u8) -> DeviceKey {
    DeviceKey {
        mac: DEVICE,
        direction,
        pad: 0,
    }
}

fn sum<'a>(values: impl Iterator<Item = &'a Counters>) -> Counters {
    values.fold(Counters::default(), Counters::merged)
}

/// A `struct __sk_buff` for ctx_in with only gso_segs set (offset 164 in the UAPI layout).
/// The programs read nothing else of GSO; the kernel validates the rest.
fn skb_context(gso_segs: u32) -> [u8; 192] {
    let mut ctx = [0u8; 192];
    ctx[164..168].copy_from_slice(&gso_segs.to_ne_bytes());
    ctx
}

fn up_v4(ip: &[u8]) -> Vec<u8> {
    frame(DEVICE, ROUTER, 0x0800, ip)
}

fn up_v6(ip: &[u8]) -> Vec<u8> {
    frame(DEVICE, ROUTER, 0x86dd, ip)
}

fn assert_counts(c: Counters, bytes: u64, packets: u64, what: &str) {
    assert_eq!(
        (c.bytes, c.packets),
        (bytes, packets),
        "{what}: (bytes, packets)"
    );
}

#[test]
fn ipv4_and_ipv6_are_counted_at_the_ip_layer_per_device_and_destination() {
    let mut k = Kernel::new();
    let v4 = ipv4_udp(PHONE_V4, SERVER_V4, 0, 100);
    let v6 = ipv6_udp(PHONE_V6, SERVER_V6, 100);
    for _ in 0..3 {
        assert_eq!(k.egress(&up_v4(&v4)), PASS);
    }
    assert_eq!(k.egress(&up_v6(&v6)), PASS);
    assert_counts(
        k.flow(DIRECTION_EGRESS, SERVER_V4.into()),
        3 * 128,
        3,
        "v4 flow",
    );
    assert_counts(
        k.flow(DIRECTION_EGRESS, SERVER_V6.into()),
        148,
        1,
        "v6 flow",
    );
    assert_counts(k.device(DIRECTION_EGRESS), 3 * 128 + 148, 4, "device total");

    // World -> device: the device is the destination MAC, the remote is the source address.
    let down = frame(
        ROUTER,
        DEVICE,
        0x0800,
        &ipv4_udp(SERVER_V4, PHONE_V4, 0, 1000),
    );
    assert_eq!(k.ingress(&down), PASS);
    assert_counts(
        k.flow(DIRECTION_INGRESS, SERVER_V4.into()),
        1028,
        1,
        "ingress flow",
    );
    assert_counts(k.device(DIRECTION_INGRESS), 1028, 1, "ingress total");
    let s = k.stats(DIRECTION_EGRESS);
    assert_eq!((s.frames, s.counted, s.flows_created), (4, 4, 2));
}

#[test]
fn ipv4_options_and_ethernet_padding_count_what_the_ip_header_says() {
    let mut k = Kernel::new();
    // 12 bytes of options: 32-byte header, 8 UDP, 10 payload = 50 bytes.
    assert_eq!(
        k.egress(&up_v4(&ipv4_udp(PHONE_V4, SERVER_V4, 12, 10))),
        PASS
    );
    assert_counts(k.device(DIRECTION_EGRESS), 50, 1, "with options");
    // A 29-byte packet padded to the 60-byte Ethernet minimum counts 29, not 46.
    let mut padded = up_v4(&ipv4_udp(PHONE_V4, SERVER_V4, 0, 1));
    padded.resize(60, 0);
    assert_eq!(k.egress(&padded), PASS);
    assert_counts(k.device(DIRECTION_EGRESS), 50 + 29, 2, "padded");
    // A length field that claims more than the frame holds counts what the frame holds.
    let mut lying = ipv4_udp(PHONE_V4, SERVER_V4, 0, 20);
    lying[2..4].copy_from_slice(&9000u16.to_be_bytes());
    assert_eq!(k.egress(&up_v4(&lying)), PASS);
    assert_counts(k.device(DIRECTION_EGRESS), 50 + 29 + 48, 3, "lying length");
}

#[test]
fn vlan_and_qinq_tags_are_skipped_and_not_counted() {
    let mut k = Kernel::new();
    let v4 = up_v4(&ipv4_udp(PHONE_V4, SERVER_V4, 0, 100));
    let v6 = up_v6(&ipv6_udp(PHONE_V6, SERVER_V6, 100));
    assert_eq!(k.egress(&with_tags(&v4, &[(0x8100, 10)])), PASS);
    assert_eq!(
        k.egress(&with_tags(&v6, &[(0x88a8, 100), (0x8100, 10)])),
        PASS
    );
    assert_eq!(
        k.egress(&with_tags(&v4, &[(0x8100, 100), (0x8100, 10)])),
        PASS
    );
    assert_counts(
        k.flow(DIRECTION_EGRESS, SERVER_V4.into()),
        2 * 128,
        2,
        "tagged v4",
    );
    assert_counts(
        k.flow(DIRECTION_EGRESS, SERVER_V6.into()),
        148,
        1,
        "QinQ v6",
    );
    // Three tags are more than the programs look through: not IP to them, and still passed.
    let three = with_tags(&v4, &[(0x88a8, 1), (0x8100, 2), (0x8100, 3)]);
    assert_eq!(k.egress(&three), PASS);
    let s = k.stats(DIRECTION_EGRESS);
    assert_eq!((s.frames, s.counted, s.not_ip), (4, 3, 1));
}

#[test]
fn gso_super_packets_count_every_segment_and_its_headers() {
    let mut k = Kernel::new();
    // A 4-segment TCP super-packet with 32-byte TCP headers and 4 x 800 bytes of payload:
    // on the wire, 4 packets of 20 + 32 + 800 bytes. (BPF_PROG_TEST_RUN takes frames up to
    // about 3.7 KB, hence the small segments.)
    let v4 = up_v4(&ipv4_tcp(PHONE_V4, SERVER_V4, 32, 3200));
    assert_eq!(k.run(loader::PROGRAM_LAN_INGRESS, &v4, 4), PASS);
    assert_counts(
        k.flow(DIRECTION_EGRESS, SERVER_V4.into()),
        4 * 852,
        4,
        "v4 GSO",
    );
    // IPv6 with a hop-by-hop header, 3 segments of 40 + 8 + 20 + 500.
    let v6 = up_v6(&ipv6_hbh_tcp(PHONE_V6, SERVER_V6, 20, 1500));
    assert_eq!(k.run(loader::PROGRAM_LAN_INGRESS, &v6, 3), PASS);
    assert_counts(
        k.flow(DIRECTION_EGRESS, SERVER_V6.into()),
        3 * 568,
        3,
        "v6 GSO",
    );
    // UDP GSO: 8-byte UDP header in every segment; 5 x (20 + 8 + 200).
    let udp = up_v4(&ipv4_udp(PHONE_V4, Ipv4Addr::new(192, 0, 2, 20), 0, 1000));
    assert_eq!(k.run(loader::PROGRAM_LAN_INGRESS, &udp, 5), PASS);
    assert_counts(
        k.flow(DIRECTION_EGRESS, Ipv4Addr::new(192, 0, 2, 20).into()),
        5 * 228,
        5,
        "UDP GSO",
    );
}

#[test]
fn local_destinations_are_not_destinations() {
    let mut k = Kernel::new();
    k.add_local("192.168.50.0/24");
    k.add_local("224.0.0.0/4");
    k.add_local("ff00::/8");
    let lan_peer = up_v4(&ipv4_udp(PHONE_V4, Ipv4Addr::new(192, 168, 50, 12), 0, 10));
    let multicast = up_v4(&ipv4_udp(PHONE_V4, Ipv4Addr::new(239, 1, 1, 1), 0, 10));
    let mld = up_v6(&ipv6_udp(PHONE_V6, "ff02::16".parse().unwrap(), 10));
    for f in [&lan_peer, &multicast, &mld] {
        assert_eq!(k.egress(f), PASS);
    }
    let s = k.stats(DIRECTION_EGRESS);
    assert_eq!((s.frames, s.local, s.counted), (3, 3, 0));
    assert_counts(
        k.device(DIRECTION_EGRESS),
        0,
        0,
        "no device total for local traffic",
    );
}

#[test]
fn frames_to_a_group_mac_belong_to_no_device() {
    let mut k = Kernel::new();
    // IPTV: multicast routed from the WAN onto the LAN, to 01:00:5e:01:02:03 and broadcast.
    let iptv = ipv4_udp(SERVER_V4, Ipv4Addr::new(239, 1, 2, 3), 0, 1316);
    for dst in [[0x01, 0x00, 0x5e, 0x01, 0x02, 0x03], [0xff; 6]] {
        assert_eq!(k.ingress(&frame(ROUTER, dst, 0x0800, &iptv)), PASS);
    }
    let s = k.stats(DIRECTION_INGRESS);
    assert_eq!((s.frames, s.local, s.counted), (2, 2, 0));
}

#[test]
fn truncated_and_malformed_frames_are_parse_errors_and_pass() {
    let mut k = Kernel::new();
    let v4 = up_v4(&ipv4_udp(PHONE_V4, SERVER_V4, 0, 100));
    let v6 = up_v6(&ipv6_udp(PHONE_V6, SERVER_V6, 100));
    // BPF_PROG_TEST_RUN itself refuses a frame whose outer ethertype is IP but whose IP header
    // is incomplete, so truncated IP headers travel behind a VLAN tag, which it does not parse.
    let tagged_v4 = with_tags(&v4, &[(0x8100, 10)]);
    let tagged_v6 = with_tags(&v6, &[(0x8100, 10)]);
    let qinq_v4 = with_tags(&v4, &[(0x88a8, 1), (0x8100, 10)]);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("tagged, IPv4 header absent", tagged_v4[..18].to_vec()),
        (
            "tagged, IPv4 header cut at 10 bytes",
            tagged_v4[..18 + 10].to_vec(),
        ),
        (
            "tagged, IPv4 header cut at 19 bytes",
            tagged_v4[..18 + 19].to_vec(),
        ),
        (
            "tagged, IPv6 header cut at 39 bytes",
            tagged_v6[..18 + 39].to_vec(),
        ),
        (
            "QinQ, IPv4 header cut at 12 bytes",
            qinq_v4[..22 + 12].to_vec(),
        ),
        ("VLAN tag cut in half", tagged_v4[..16].to_vec()),
        ("inner VLAN tag cut in half", qinq_v4[..20].to_vec()),
    ];
    let mut bad_ihl = v4.clone();
    bad_ihl[14] = 0x44; // IHL 4: shorter than the fixed header
    cases.push(("IPv4 IHL < 5", bad_ihl));
    let mut bad_version = v4.clone();
    bad_version[14] = 0x65; // version 6 under an IPv4 ethertype
    cases.push(("IPv4 ethertype, version 6", bad_version));
    let mut bad_v6 = v6.clone();
    bad_v6[14] = 0x45;
    cases.push(("IPv6 ethertype, version 4", bad_v6));
    for (what, f) in &cases {
        assert_eq!(k.egress(f), PASS, "{what}");
    }
    let s = k.stats(DIRECTION_EGRESS);
    assert_eq!(s.frames, cases.len() as u64);
    assert_eq!(
        s.parse_errors,
        cases.len() as u64,
        "every case is a parse error"
    );
    assert_counts(k.device(DIRECTION_EGRESS), 0, 0, "nothing counted");
}

#[test]
fn non_ip_and_garbage_frames_always_pass_and_add_up() {
    let mut k = Kernel::new();
    let arp = frame(DEVICE, [0xff; 6], 0x0806, &[0u8; 28]);
    let lldp = frame(DEVICE, [0x01, 0x80, 0xc2, 0, 0, 0x0e], 0x88cc, &[0u8; 40]);
    assert_eq!(k.egress(&arp), PASS);
    assert_eq!(k.ingress(&arp), PASS);
    assert_eq!(k.egress(&lldp), PASS);
    assert_eq!(k.stats(DIRECTION_EGRESS).not_ip, 2);
    assert_eq!(k.stats(DIRECTION_INGRESS).not_ip, 1);

    // Random bytes of random lengths, with the ethertype forced to IP half of the time so the
    // IP parsers see garbage too. Whatever comes in passes, and the outcomes add up.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut runs = 0u64;
    for i in 0..500 {
        // Outer IP ethertypes need a whole IP header for BPF_PROG_TEST_RUN to take the frame.
        let len = 14 + 40 + (next() % 300) as usize;
        let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        match i % 5 {
            0 => f[12..14].copy_from_slice(&0x0800u16.to_be_bytes()),
            1 => f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes()),
            2 => f[12..14].copy_from_slice(&0x8100u16.to_be_bytes()),
            3 => {
                f[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
                f[16..18].copy_from_slice(&0x8100u16.to_be_bytes());
                f[20..22].copy_from_slice(&0x0800u16.to_be_bytes());
            }
            _ => {}
        }
        if i % 2 == 0 {
            f.truncate(14 + 4 + (next() % 40) as usize); // short frames, headers cut anywhere
            if matches!(i % 5, 0 | 1) {
                f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
            }
        }
        assert_eq!(k.egress(&f), PASS, "garbage frame {i}");
        assert_eq!(k.ingress(&f), PASS, "garbage frame {i}");
        runs += 1;
    }
    for direction in [DIRECTION_EGRESS, DIRECTION_INGRESS] {
        let s = k.stats(direction);
        let outcomes = s.counted + s.not_ip + s.local + s.parse_errors + s.device_update_errors;
        assert_eq!(s.frames, outcomes, "every frame has exactly one outcome");
        assert!(s.frames >= runs);
        let device = k.device(direction);
        // The device total of the fixed MAC can only hold what was counted for it.
        assert!(device.packets <= s.counted);
    }
}

// ---- what the kernel copies for naming ----

const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
const RESOLVER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);

/// IPv4 + UDP with the given ports and payload.
fn ipv4_udp_to(src: Ipv4Addr, dst: Ipv4Addr, ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    let mut p = ipv4_udp(src, dst, 0, payload.len());
    p[20..22].copy_from_slice(&ports.0.to_be_bytes());
    p[22..24].copy_from_slice(&ports.1.to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// IPv4 + TCP (20-byte header) with the given ports and payload.
fn ipv4_tcp_to(src: Ipv4Addr, dst: Ipv4Addr, ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    let mut p = ipv4_tcp(src, dst, 20, payload.len());
    p[20..22].copy_from_slice(&ports.0.to_be_bytes());
    p[22..24].copy_from_slice(&ports.1.to_be_bytes());
    p[40..].copy_from_slice(payload);
    p
}

fn down_v4(ip: &[u8]) -> Vec<u8> {
    frame(ROUTER, DEVICE, 0x0800, ip)
}

/// The start of a ClientHello record: handshake, TLS 1.0 record version, length, type 1.
fn client_hello_like(len: usize) -> Vec<u8> {
    let mut p = vec![0x16, 0x03, 0x01];
    p.extend_from_slice(&((len - 5) as u16).to_be_bytes());
    p.push(0x01);
    p.extend((6..len).map(|i| i as u8));
    p
}

fn v4(addr: &[u8; 16]) -> Ipv4Addr {
    Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])
}

#[test]
fn dns_answers_to_a_device_are_copied_even_from_the_router() {
    let mut k = Kernel::new();
    k.add_local("192.168.50.0/24");
    let answer: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let f = down_v4(&ipv4_udp_to(ROUTER_V4, PHONE_V4, (53, 40000), &answer));
    assert_eq!(k.ingress(&f), PASS);
    let records = k.sniffed();
    assert_eq!(records.len(), 1);
    let (h, data) = &records[0];
    assert_eq!(h.kind, SNIFF_DNS_RESPONSE);
    assert_eq!((h.mac, h.family, h.protocol), (DEVICE, FAMILY_V4, 17));
    assert_eq!((h.src_port, h.dst_port), (53, 40000));
    assert_eq!((v4(&h.src), v4(&h.dst)), (ROUTER_V4, PHONE_V4));
    assert_eq!((h.payload_len, h.captured), (300, 300));
    assert_eq!(data, &answer);
    let s = k.stats(DIRECTION_INGRESS);
    assert_eq!(
        (s.local, s.sniffed, s.sniff_drops),
        (1, 1, 0),
        "still local, not a destination"
    );
    // Not from port 53: nothing copied.
    let f = down_v4(&ipv4_udp_to(ROUTER_V4, PHONE_V4, (5353, 40000), &answer));
    k.ingress(&f);
    assert!(k.sniffed().is_empty());
}

#[test]
fn a_long_dns_answer_is_cut_at_the_record_size() {
    let mut k = Kernel::new();
    let answer = vec![0x5a; 3000];
    let f = down_v4(&ipv4_udp_to(RESOLVER_V4, PHONE_V4, (53, 40000), &answer));
    k.ingress(&f);
    let records = k.sniffed();
    assert_eq!(records.len(), 1);
    let (h, data) = &records[0];
    assert_eq!((h.payload_len, h.captured), (3000, SNIFF_DATA_MAX as u32));
    assert_eq!(data.len(), SNIFF_DATA_MAX);
}

#[test]
fn dns_queries_are_copied_only_when_they_leave_the_network() {
    let mut k = Kernel::new();
    k.add_local("192.168.50.0/24");
    let query = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    k.egress(&up_v4(&ipv4_udp_to(
        PHONE_V4,
        ROUTER_V4,
        (40000, 53),
        &query,
    )));
    assert!(
        k.sniffed().is_empty(),
        "a query to the router's resolver is not a bypass"
    );
    k.egress(&up_v4(&ipv4_udp_to(
        PHONE_V4,
        RESOLVER_V4,
        (40000, 53),
        &query,
    )));
    // Twice: the second one takes the known-flow path.
    k.egress(&up_v4(&ipv4_tcp_to(
        PHONE_V4,
        RESOLVER_V4,
        (40001, 53),
        &query,
    )));
    // A TCP segment without payload (the handshake) is no query.
    k.egress(&up_v4(&ipv4_tcp_to(
        PHONE_V4,
        RESOLVER_V4,
        (40001, 53),
        &[],
    )));
    let records = k.sniffed();
    assert_eq!(records.len(), 2);
    for (h, data) in &records {
        assert_eq!(h.kind, SNIFF_DNS_QUERY);
        assert_eq!(
            (v4(&h.src), v4(&h.dst), h.dst_port),
            (PHONE_V4, RESOLVER_V4, 53)
        );
        assert!(data.is_empty(), "queries carry no payload");
    }
    assert_eq!((records[0].0.protocol, records[1].0.protocol), (17, 6));
}

#[test]
fn client_hellos_are_recognised_by_their_first_bytes() {
    let mut k = Kernel::new();
    let hello = client_hello_like(517);
    k.egress(&up_v4(&ipv4_tcp_to(
        PHONE_V4,
        SERVER_V4,
        (40000, 443),
        &hello,
    )));
    // Application data, an alert and a ServerHello-shaped payload are not copied.
    for not_hello in [
        [0x17, 0x03, 0x03, 0, 10, 0x01],
        [0x15, 0x03, 0x03, 0, 2, 0x01],
        [0x16, 0x03, 0x03, 0, 10, 0x02],
    ] {
        k.egress(&up_v4(&ipv4_tcp_to(
            PHONE_V4,
            SERVER_V4,
            (40000, 443),
            &not_hello,
        )));
    }
    // Nor a ClientHello the router sends a device (wrong direction).
    k.ingress(&down_v4(&ipv4_tcp_to(
        SERVER_V4,
        PHONE_V4,
        (443, 40000),
        &hello,
    )));
    let records = k.sniffed();
    assert_eq!(records.len(), 1);
    let (h, data) = &records[0];
    assert_eq!(h.kind, SNIFF_TLS_HELLO);
    assert_eq!((h.dst_port, h.payload_len, h.captured), (443, 517, 517));
    assert_eq!(data, &hello);
}

#[test]
fn dhcp_requests_are_copied_though_broadcast() {
    let mut k = Kernel::new();
    k.add_local("255.255.255.255/32");
    let request: Vec<u8> = vec![1; 300];
    let ip = ipv4_udp_to(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        (68, 67),
        &request,
    );
    k.egress(&frame(DEVICE, [0xff; 6], 0x0800, &ip));
    let records = k.sniffed();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].0.kind, records[0].0.mac), (SNIFF_DHCP, DEVICE));
    assert_eq!(records[0].1, request);
    assert_eq!(k.stats(DIRECTION_EGRESS).local, 1);
}

#[test]
fn a_full_ring_drops_records_and_counts_them_but_never_the_bytes() {
    // One page holds one full record.
    let mut k = Kernel::with_ring(4096);
    let answer = vec![0x5a; 100];
    let f = down_v4(&ipv4_udp_to(RESOLVER_V4, PHONE_V4, (53, 40000), &answer));
    for _ in 0..5 {
        assert_eq!(k.ingress(&f), PASS);
    }
    let s = k.stats(DIRECTION_INGRESS);
    assert_eq!((s.counted, s.sniffed, s.sniff_drops), (5, 1, 4));
    assert_eq!(k.sniffed().len(), 1);
    assert_counts(
        k.flow(DIRECTION_INGRESS, IpAddr::V4(RESOLVER_V4)),
        5 * 128,
        5,
        "resolver",
    );
}

#[test]
fn once_the_device_has_a_slot_its_total_goes_there_and_flows_cache_it() {
    let mut k = Kernel::new();
    let f = up_v4(&ipv4_udp(PHONE_V4, SERVER_V4, 0, 100));
    let bytes = 20 + 8 + 100;
    k.egress(&f);
    assert_counts(
        k.device(DIRECTION_EGRESS),
        bytes,
        1,
        "before a slot: the hash",
    );
    k.give_slot(DIRECTION_EGRESS, 7);
    for _ in 0..3 {
        k.egress(&f);
    }
    // The same flow learns the slot; the hash stops growing.
    assert_counts(k.device(DIRECTION_EGRESS), bytes, 1, "hash part");
    assert_counts(k.slot_total(7), 3 * bytes, 3, "slot part");
    let (flow, slots) = k.flow_value(DIRECTION_EGRESS, IpAddr::V4(SERVER_V4));
    assert_counts(flow, 4 * bytes, 4, "flow");
    assert!(
        slots.contains(&8),
        "the flow caches slot 7 (+1) on the CPU that ran it: {slots:?}"
    );
    // A new flow of the same device goes to the slot too.
    let other = up_v6(&ipv6_udp(PHONE_V6, SERVER_V6, 100));
    k.egress(&other);
    assert_counts(
        k.slot_total(7),
        3 * bytes + 40 + 8 + 100,
        4,
        "slot part after a new flow",
    );
    // A slot beyond the array is ignored: the hash keeps counting, nothing is lost.
    k.give_slot(DIRECTION_INGRESS, 1 << 30);
    let down = frame(
        ROUTER,
        DEVICE,
        0x0800,
        &ipv4_udp(SERVER_V4, PHONE_V4, 0, 100),
    );
    k.ingress(&down);
    assert_counts(
        k.device(DIRECTION_INGRESS),
        bytes,
        1,
        "out-of-range slot: the hash",
    );
}
