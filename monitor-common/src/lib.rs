//! Types shared by the egress-monitor kernel programs and the agent.
//!
//! Every type here crosses the kernel/user boundary as raw bytes, so each is `#[repr(C)]`,
//! `Copy`, and has no hidden padding: explicit padding fields are zero, and flags are `u8`.
#![no_std]

/// Name of the LRU per-CPU hash map of (device, direction, remote address) -> [`Counters`].
pub const FLOWS_MAP: &str = "FLOWS";
/// Name of the per-CPU hash map of (device, direction) -> [`Counters`]: device totals counted
/// before the agent gave the device a slot in [`DEVICE_TOTALS_MAP`].
pub const DEVICES_MAP: &str = "DEVICES";
/// Name of the hash map of (device, direction) -> slot in [`DEVICE_TOTALS_MAP`], written by the
/// agent (the only allocator, so the kernel needs no atomics).
pub const DEVICE_SLOTS_MAP: &str = "DEVICE_SLOTS";
/// Name of the per-CPU array of [`Counters`] indexed by device slot: device totals after the
/// slot was given. A device's exact total is its [`DEVICES_MAP`] value plus its slot's value.
pub const DEVICE_TOTALS_MAP: &str = "DEVICE_TOTALS";
/// Name of the per-CPU array of [`KernelStats`], indexed by direction.
pub const STATS_MAP: &str = "STATS";
/// Name of the LPM trie of local IPv4 prefixes (key data `[u8; 4]`, value `u8`).
pub const LOCAL_V4_MAP: &str = "LOCAL_V4";
/// Name of the LPM trie of local IPv6 prefixes (key data `[u8; 16]`, value `u8`).
pub const LOCAL_V6_MAP: &str = "LOCAL_V6";
/// Name of the ring buffer of [`SniffHeader`] records: the packets the agent names things from.
pub const SNIFF_MAP: &str = "SNIFF";

/// Default capacity of [`FLOWS_MAP`]; the agent resizes it from its configuration at load time.
pub const DEFAULT_FLOW_ENTRIES: u32 = 65_536;
/// Default capacity of [`DEVICES_MAP`], [`DEVICE_SLOTS_MAP`] and [`DEVICE_TOTALS_MAP`] (one
/// entry per device and direction).
pub const DEFAULT_DEVICE_ENTRIES: u32 = 4_096;
/// Capacity of each local-prefix trie.
pub const LOCAL_PREFIX_ENTRIES: u32 = 1_024;
/// Default size of [`SNIFF_MAP`] in bytes (a power of two, a multiple of the page size); the
/// agent sets the real size from its configuration. 1 MiB holds about 490 full records.
pub const DEFAULT_SNIFF_RING_BYTES: u32 = 1 << 20;
/// Bytes of payload a [`SniffEvent`] carries: a DNS answer over UDP fits (EDNS's usual 1232),
/// and so does a ClientHello with a post-quantum key share (about 1.8 KB).
pub const SNIFF_DATA_MAX: usize = 2048;

/// [`SniffHeader::kind`]: a DNS message to a device (UDP or TCP source port 53), with payload.
pub const SNIFF_DNS_RESPONSE: u8 = 1;
/// A DNS query from a device to a resolver that is not local (UDP or TCP destination port 53);
/// header only: the agent reports it as resolver bypass.
pub const SNIFF_DNS_QUERY: u8 = 2;
/// The start of a TLS ClientHello from a device, with payload.
pub const SNIFF_TLS_HELLO: u8 = 3;
/// A DHCPv4 message from a device (UDP destination port 67), with payload.
pub const SNIFF_DHCP: u8 = 4;
/// IP protocol numbers in [`SniffHeader::protocol`].
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// TC ingress on a LAN interface: frames from a device, leaving towards the world.
pub const DIRECTION_EGRESS: u8 = 0;
/// TC egress on a LAN interface: frames to a device, coming from the world.
pub const DIRECTION_INGRESS: u8 = 1;
/// Number of directions; the size of [`STATS_MAP`].
pub const DIRECTIONS: u32 = 2;

/// [`FlowKey::family`] of an IPv4 remote address (stored in the first 4 bytes of `addr`).
pub const FAMILY_V4: u8 = 4;
/// [`FlowKey::family`] of an IPv6 remote address.
pub const FAMILY_V6: u8 = 6;

/// Key of the flow map: one device talking to one remote address in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// The device's MAC address: source MAC on egress, destination MAC on ingress.
    pub mac: [u8; 6],
    /// [`DIRECTION_EGRESS`] or [`DIRECTION_INGRESS`].
    pub direction: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// The remote address, network byte order; IPv4 uses the first 4 bytes, the rest are zero.
    pub addr: [u8; 16],
}

/// Key of the device map: one device in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceKey {
    /// The device's MAC address.
    pub mac: [u8; 6],
    /// [`DIRECTION_EGRESS`] or [`DIRECTION_INGRESS`].
    pub direction: u8,
    /// Zero; makes the key 8 bytes with no hidden padding.
    pub pad: u8,
}

/// What the kernel copies to the agent about one packet. Every record starts with this header;
/// kinds that carry payload are a whole [`SniffEvent`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SniffHeader {
    /// One of the `SNIFF_*` kinds.
    pub kind: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub protocol: u8,
    pub pad0: u8,
    /// The interface the packet crossed.
    pub ifindex: u32,
    /// The device's MAC address.
    pub mac: [u8; 6],
    /// Host byte order.
    pub src_port: u16,
    /// Host byte order.
    pub dst_port: u16,
    pub pad1: u16,
    /// Transport payload bytes in the packet (may exceed what was captured).
    pub payload_len: u32,
    /// Payload bytes copied into [`SniffEvent::data`].
    pub captured: u32,
    pub pad2: u32,
    /// Source and destination addresses, network byte order; IPv4 in the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// A sniffed packet with the start of its transport payload.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SniffEvent {
    pub header: SniffHeader,
    pub data: [u8; SNIFF_DATA_MAX],
}

/// A flow's per-CPU counts, and where its device's total lives, so that a packet of a known
/// flow costs one hash lookup: the device total is then an array slot, whose lookup the
/// verifier inlines.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub bytes: u64,
    pub packets: u64,
    /// The device's slot in [`DEVICE_TOTALS_MAP`] plus one; 0 when this CPU has not learnt it
    /// yet (a per-CPU value starts zeroed on the other CPUs).
    pub device_slot: u32,
    pub pad: u32,
}

/// Per-CPU byte and packet counts. Bytes are IP-layer bytes as on the wire; a GSO/GRO
/// super-packet counts as the segments it stands for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub bytes: u64,
    pub packets: u64,
}

/// What the kernel programs saw, per CPU and direction. Every frame lands in exactly one of
/// `counted`, `not_ip`, `local`, `parse_errors`, `device_update_errors`, so they sum to `frames`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Every frame the program ran on.
    pub frames: u64,
    /// Frames counted in a device total (and, unless `flow_update_errors`, in a flow).
    pub counted: u64,
    /// Frames that are not IPv4 or IPv6 (ARP, LLDP, ...).
    pub not_ip: u64,
    /// IP frames whose remote address is local: LAN, the router itself, multicast, broadcast,
    /// link-local.
    pub local: u64,
    /// Frames whose headers are truncated or malformed.
    pub parse_errors: u64,
    /// Frames not counted because the device map was full.
    pub device_update_errors: u64,
    /// Counted frames whose flow entry could not be created; they show up as `unattributed`.
    pub flow_update_errors: u64,
    /// Flow entries created (new destinations, or destinations re-created after LRU eviction).
    pub flows_created: u64,
    /// Frames whose headers were not all in the skb's linear part and had to be pulled in
    /// (a cost, not an outcome: these frames are also in one of the outcomes above).
    pub header_pulls: u64,
    /// Records written to the sniff ring buffer (DNS, TLS ClientHello, DHCP).
    pub sniffed: u64,
    /// Records lost because the ring buffer was full: the agent fell behind.
    pub sniff_drops: u64,
}

impl Counters {
    /// The sum of two counts, e.g. of one key's per-CPU values.
    pub fn merged(self, other: &Counters) -> Counters {
        Counters {
            bytes: self.bytes.wrapping_add(other.bytes),
            packets: self.packets.wrapping_add(other.packets),
        }
    }
}

impl KernelStats {
    /// The sum of two sets of statistics, e.g. of the per-CPU values of one direction.
    pub fn merged(self, other: &KernelStats) -> KernelStats {
        KernelStats {
            frames: self.frames.wrapping_add(other.frames),
            counted: self.counted.wrapping_add(other.counted),
            not_ip: self.not_ip.wrapping_add(other.not_ip),
            local: self.local.wrapping_add(other.local),
            parse_errors: self.parse_errors.wrapping_add(other.parse_errors),
            device_update_errors: self
                .device_update_errors
                .wrapping_add(other.device_update_errors),
            flow_update_errors: self
                .flow_update_errors
                .wrapping_add(other.flow_update_errors),
            flows_created: self.flows_created.wrapping_add(other.flows_created),
            header_pulls: self.header_pulls.wrapping_add(other.header_pulls),
            sniffed: self.sniffed.wrapping_add(other.sniffed),
            sniff_drops: self.sniff_drops.wrapping_add(other.sniff_drops),
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all these types are repr(C), Copy, and have no padding bytes.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::DeviceKey {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::KernelStats {}
    unsafe impl aya::Pod for super::SniffHeader {}
}

/// Version of the layout of the maps the agent pins (their types, keys and values, and what the
/// numbers in them mean). An agent finding pins of another version replaces them instead of
/// reading them: bump it with any change to a type below or to how the programs count.
pub const MAP_LAYOUT_VERSION: u32 = 1;

// The kernel and the agent must agree on these sizes; a change here is a map layout change.
const _: () = assert!(core::mem::size_of::<FlowKey>() == 24);
const _: () = assert!(core::mem::size_of::<DeviceKey>() == 8);
const _: () = assert!(core::mem::size_of::<Counters>() == 16);
const _: () = assert!(core::mem::size_of::<FlowValue>() == 24);
const _: () = assert!(core::mem::size_of::<KernelStats>() == 88);
const _: () = assert!(core::mem::size_of::<SniffHeader>() == 64);
const _: () = assert!(core::mem::size_of::<SniffEvent>() == 64 + SNIFF_DATA_MAX);
