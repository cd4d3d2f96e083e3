//! The maps shared with the agent. Sizes here are defaults; the agent sets the real capacities
//! of the flow and device maps from its configuration when it loads the object.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use monitor_common::{
    Counters, DEFAULT_DEVICE_ENTRIES, DEFAULT_FLOW_ENTRIES, DEFAULT_SNIFF_RING_BYTES, DIRECTIONS,
    DeviceKey, FlowKey, FlowValue, KernelStats, LOCAL_PREFIX_ENTRIES,
};

/// (device, direction, remote) -> counts. LRU bounds memory whatever the devices do; what it
/// evicts still shows in the device totals, so the agent reports it as unattributed.
#[map]
pub static FLOWS: LruPerCpuHashMap<FlowKey, FlowValue> =
    LruPerCpuHashMap::with_max_entries(DEFAULT_FLOW_ENTRIES, 0);

/// (device, direction) -> totals, until the agent gives the device a slot. Not LRU: a device
/// total must never be lost.
#[map]
pub static DEVICES: PerCpuHashMap<DeviceKey, Counters> =
    PerCpuHashMap::with_max_entries(DEFAULT_DEVICE_ENTRIES, 0);

/// (device, direction) -> slot in [`DEVICE_TOTALS`], written by the agent.
#[map]
pub static DEVICE_SLOTS: HashMap<DeviceKey, u32> =
    HashMap::with_max_entries(DEFAULT_DEVICE_ENTRIES, 0);

/// Device totals by slot, once the agent gave one.
#[map]
pub static DEVICE_TOTALS: PerCpuArray<Counters> =
    PerCpuArray::with_max_entries(DEFAULT_DEVICE_ENTRIES, 0);

/// Per-direction statistics of what the programs saw.
#[map]
pub static STATS: PerCpuArray<KernelStats> = PerCpuArray::with_max_entries(DIRECTIONS, 0);

/// Local IPv4 prefixes, written by the agent: traffic to them is not a destination.
#[map]
pub static LOCAL_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(LOCAL_PREFIX_ENTRIES, 0);

/// Local IPv6 prefixes, written by the agent.
#[map]
pub static LOCAL_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(LOCAL_PREFIX_ENTRIES, 0);

/// Packets the agent names devices and destinations from (DNS answers, TLS ClientHellos,
/// DHCP requests, DNS queries to outside resolvers). A full ring drops the record, counted in
/// [`STATS`]; the packet itself is never held up.
#[map]
pub static SNIFF: RingBuf = RingBuf::with_byte_size(DEFAULT_SNIFF_RING_BYTES, 0);
