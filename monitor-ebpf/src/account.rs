//! Per-packet accounting: the device total first, then the (device, remote) detail.
//!
//! A packet of a known flow costs one hash lookup: the flow entry remembers its device's slot
//! in the `DEVICE_TOTALS` array (learnt once per flow and CPU from `DEVICE_SLOTS`), and an
//! array lookup is inlined by the verifier. Until the agent has given a new device a slot (at
//! its next poll), the device's total goes to the `DEVICES` hash; the agent adds both.
//!
//! A byte goes into its device total before its flow, so at every instant the flows of a
//! device hold no byte its total lacks. The agent does not rely on reading both at one instant:
//! it settles each total a poll later, after reading the flows again (see its ledger).

use aya_ebpf::{bindings::BPF_ANY, programs::TcContext};
use aya_log_ebpf::warn;
use monitor_common::{Counters, DeviceKey, FAMILY_V4, FlowKey, FlowValue, KernelStats};

use crate::{
    maps::{DEVICE_SLOTS, DEVICE_TOTALS, DEVICES, FLOWS, LOCAL_V4, LOCAL_V6, STATS},
    parse::{Packet, Parsed, parse},
    sniff::sniff,
};

#[inline(always)]
pub fn account(ctx: &TcContext, direction: u8) {
    let Some(stats) = STATS.get_ptr_mut(direction as u32) else {
        return;
    };
    // SAFETY: per-CPU slot; TC programs do not nest on one CPU, so nothing else writes it now.
    let stats = unsafe { &mut *stats };
    stats.frames += 1;
    let mut pulled = false;
    let mut packet = Packet::default();
    let parsed = parse(ctx, direction, &mut pulled, &mut packet);
    if pulled {
        stats.header_pulls += 1;
    }
    match parsed {
        Parsed::NotIp => stats.not_ip += 1,
        Parsed::Malformed => stats.parse_errors += 1,
        Parsed::Ip => {
            let counted = count(ctx, &packet, direction, stats);
            sniff(ctx, &packet, direction, counted, stats);
        }
    }
}

/// Counts the packet; true when it went to a destination outside the network.
#[inline(always)]
fn count(ctx: &TcContext, packet: &Packet, direction: u8, stats: &mut KernelStats) -> bool {
    // A group MAC (multicast, broadcast) names no single device: e.g. IPTV multicast the
    // router forwards from the WAN onto the LAN.
    if packet.device[0] & 1 != 0 {
        stats.local += 1;
        return false;
    }
    let key = FlowKey {
        mac: packet.device,
        direction,
        family: packet.family,
        addr: packet.remote,
    };
    // A flow already in the map is known not to be local: one lookup, no trie walk.
    if let Some(flow) = FLOWS.get_ptr_mut(key) {
        // SAFETY: per-CPU value of this CPU; TC programs do not nest on one CPU.
        let flow = unsafe { &mut *flow };
        if !add_to_device(packet, direction, &mut flow.device_slot) {
            device_map_full(ctx, packet, stats);
            return false;
        }
        flow.bytes += packet.bytes;
        flow.packets += packet.packets;
        stats.counted += 1;
        return true;
    }
    if is_local(packet) {
        stats.local += 1;
        return false;
    }
    let mut device_slot = 0;
    if !add_to_device(packet, direction, &mut device_slot) {
        device_map_full(ctx, packet, stats);
        return false;
    }
    stats.counted += 1;
    let value = FlowValue {
        bytes: packet.bytes,
        packets: packet.packets,
        device_slot,
        pad: 0,
    };
    // On a per-CPU map an update writes only this CPU's slot, so BPF_ANY is right even when
    // another CPU creates the same key at the same moment.
    if FLOWS.insert(key, value, BPF_ANY as u64).is_ok() {
        stats.flows_created += 1;
    } else {
        stats.flow_update_errors += 1;
    }
    true
}

/// The device map is full: the frame is not counted. Said once per CPU and direction (the
/// counter is exported anyway), so a full map never floods the log buffer.
#[inline(always)]
fn device_map_full(ctx: &TcContext, packet: &Packet, stats: &mut KernelStats) {
    if stats.device_update_errors == 0 {
        warn!(
            ctx,
            "device map full: frames of {:mac} are not counted; raise device_map_entries",
            packet.device
        );
    }
    stats.device_update_errors += 1;
}

/// Adds the packet to its device's total; false when the device map is full. `slot` is the
/// flow's cached slot (plus one; 0 = not learnt), filled in when the agent has given one.
#[inline(always)]
fn add_to_device(packet: &Packet, direction: u8, slot: &mut u32) -> bool {
    if *slot != 0
        && let Some(total) = DEVICE_TOTALS.get_ptr_mut(*slot - 1)
    {
        // SAFETY: per-CPU value of this CPU.
        let total = unsafe { &mut *total };
        total.bytes += packet.bytes;
        total.packets += packet.packets;
        return true;
    }
    let key = DeviceKey {
        mac: packet.device,
        direction,
        pad: 0,
    };
    // SAFETY: a plain u32 read from a map value.
    if let Some(given) = unsafe { DEVICE_SLOTS.get(key) }
        && let Some(total) = DEVICE_TOTALS.get_ptr_mut(*given)
    {
        *slot = *given + 1;
        // SAFETY: per-CPU value of this CPU.
        let total = unsafe { &mut *total };
        total.bytes += packet.bytes;
        total.packets += packet.packets;
        return true;
    }
    if let Some(total) = DEVICES.get_ptr_mut(key) {
        // SAFETY: per-CPU value of this CPU.
        let total = unsafe { &mut *total };
        total.bytes += packet.bytes;
        total.packets += packet.packets;
        return true;
    }
    let value = Counters {
        bytes: packet.bytes,
        packets: packet.packets,
    };
    DEVICES.insert(key, value, BPF_ANY as u64).is_ok()
}

#[inline(always)]
fn is_local(packet: &Packet) -> bool {
    if packet.family == FAMILY_V4 {
        let addr = [
            packet.remote[0],
            packet.remote[1],
            packet.remote[2],
            packet.remote[3],
        ];
        LOCAL_V4
            .get(aya_ebpf::maps::lpm_trie::Key::new(32, addr))
            .is_some()
    } else {
        LOCAL_V6
            .get(aya_ebpf::maps::lpm_trie::Key::new(128, packet.remote))
            .is_some()
    }
}
