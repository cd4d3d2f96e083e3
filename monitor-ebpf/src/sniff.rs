//! Copies the few packets that name things to the agent, through a ring buffer: DNS answers to
//! devices, TLS ClientHellos and DHCP requests from devices, and DNS queries to resolvers that
//! are not the router. The agent parses them; the kernel only recognises them by their ports
//! and first bytes, so the cost on every other packet is a few comparisons.

use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::TcContext};
use monitor_common::{
    DIRECTION_INGRESS, FAMILY_V4, IPPROTO_TCP, IPPROTO_UDP, KernelStats, SNIFF_DATA_MAX,
    SNIFF_DHCP, SNIFF_DNS_QUERY, SNIFF_DNS_RESPONSE, SNIFF_TLS_HELLO, SniffEvent, SniffHeader,
};

use crate::{
    maps::SNIFF,
    parse::{MAX_PAYLOAD_OFF, Packet, bounded_offset},
};

const DNS_PORT: u16 = 53;
const DHCP_SERVER_PORT: u16 = 67;
/// Larger TCP payloads are bulk data (GSO/GRO super-packets), never a ClientHello's first
/// segment worth looking at; skipping them keeps bulk transfers from paying for the peek.
const TLS_HELLO_MAX_PAYLOAD: u32 = 4096;
/// TLS record: content type handshake, legacy version 3.x; handshake type ClientHello.
const TLS_HANDSHAKE: u8 = 0x16;
const TLS_MAJOR: u8 = 0x03;
const TLS_CLIENT_HELLO: u8 = 0x01;

/// Looks at one parsed IP packet; `counted` says it went to a destination outside the network
/// (so queries and handshakes to the router itself are never copied).
#[inline(always)]
pub fn sniff(
    ctx: &TcContext,
    packet: &Packet,
    direction: u8,
    counted: bool,
    stats: &mut KernelStats,
) {
    if packet.protocol == 0 || packet.device[0] & 1 != 0 {
        return;
    }
    if direction == DIRECTION_INGRESS {
        // Answers from any resolver, the router's own (local) included: that is where names
        // come from.
        if packet.src_port == DNS_PORT && packet.payload_len > 0 {
            emit(ctx, packet, SNIFF_DNS_RESPONSE, true, stats);
        }
        return;
    }
    if packet.protocol == IPPROTO_UDP && packet.dst_port == DHCP_SERVER_PORT {
        emit(ctx, packet, SNIFF_DHCP, true, stats);
        return;
    }
    if !counted || packet.payload_len == 0 {
        return;
    }
    if packet.dst_port == DNS_PORT {
        emit(ctx, packet, SNIFF_DNS_QUERY, false, stats);
    } else if packet.protocol == IPPROTO_TCP
        && packet.payload_len >= 6
        && packet.payload_len <= TLS_HELLO_MAX_PAYLOAD
        && is_client_hello(ctx, packet)
    {
        emit(ctx, packet, SNIFF_TLS_HELLO, true, stats);
    }
}

/// The first bytes of a TLS record carrying a ClientHello: type, version major, and the
/// handshake type after the 5-byte record header. Read in place when the payload is in the
/// linear data (a few nanoseconds); through the helper otherwise (paged payload).
#[inline(always)]
fn is_client_hello(ctx: &TcContext, packet: &Packet) -> bool {
    let Some(off) = bounded_offset(packet.payload_off, MAX_PAYLOAD_OFF) else {
        return false;
    };
    let start = ctx.data() + off;
    if start + 8 <= ctx.data_end() {
        let p = start as *const u8;
        // SAFETY: the 8 bytes at `p` lie within the linear packet data (checked above).
        let (kind, major, handshake) = unsafe { (*p, *p.add(1), *p.add(5)) };
        return kind == TLS_HANDSHAKE && major == TLS_MAJOR && handshake == TLS_CLIENT_HELLO;
    }
    let mut head = [0u8; 8];
    // SAFETY: `head` is 8 writable bytes; the helper bounds-checks the packet side.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            packet.payload_off,
            head.as_mut_ptr().cast(),
            6,
        )
    };
    ret == 0 && head[0] == TLS_HANDSHAKE && head[1] == TLS_MAJOR && head[5] == TLS_CLIENT_HELLO
}

/// Writes a record; a full ring buffer drops it (counted), it never waits.
#[inline(always)]
fn emit(ctx: &TcContext, packet: &Packet, kind: u8, with_payload: bool, stats: &mut KernelStats) {
    if with_payload {
        let Some(mut entry) = SNIFF.reserve::<SniffEvent>(0) else {
            stats.sniff_drops += 1;
            return;
        };
        let event = entry.as_mut_ptr();
        // SAFETY: `event` points to a reserved, writable SniffEvent; fields are written in
        // place (the record is larger than the BPF stack).
        unsafe {
            fill_header(ctx, packet, kind, &mut (*event).header);
            let len = copy_len(packet.payload_len);
            let copied = packet.payload_len > 0
                && bpf_skb_load_bytes(
                    ctx.skb.skb.cast(),
                    packet.payload_off,
                    (*event).data.as_mut_ptr().cast(),
                    len,
                ) == 0;
            (*event).header.captured = if copied { len } else { 0 };
        }
        entry.submit(0);
    } else {
        let Some(mut entry) = SNIFF.reserve::<SniffHeader>(0) else {
            stats.sniff_drops += 1;
            return;
        };
        // SAFETY: a reserved, writable SniffHeader.
        unsafe { fill_header(ctx, packet, kind, &mut *entry.as_mut_ptr()) };
        entry.submit(0);
    }
    stats.sniffed += 1;
}

/// How many payload bytes to copy: `payload_len` clipped to [1, SNIFF_DATA_MAX]. The verifier
/// must see both bounds on the register it is given; LLVM folds a plain clamp into a form
/// whose lower bound is 0 (rejected as a zero-sized read), so the value goes through an opaque
/// load and a mask it cannot fold. Callers skip the copy when `payload_len` is 0.
#[inline(always)]
fn copy_len(payload_len: u32) -> u32 {
    let clamped = if payload_len > SNIFF_DATA_MAX as u32 {
        SNIFF_DATA_MAX as u32
    } else {
        payload_len
    };
    // SAFETY: reading a local variable.
    let opaque = unsafe { core::ptr::read_volatile(&clamped) };
    (opaque.wrapping_sub(1) & (SNIFF_DATA_MAX as u32 - 1)) + 1
}

#[inline(always)]
fn fill_header(ctx: &TcContext, packet: &Packet, kind: u8, header: &mut SniffHeader) {
    header.kind = kind;
    header.family = packet.family;
    header.protocol = packet.protocol;
    header.pad0 = 0;
    // SAFETY: reading a field of the context the kernel handed us.
    header.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    header.mac = packet.device;
    header.src_port = packet.src_port;
    header.dst_port = packet.dst_port;
    header.pad1 = 0;
    header.payload_len = packet.payload_len;
    header.captured = 0;
    header.pad2 = 0;
    header.src = [0; 16];
    header.dst = [0; 16];
    // Both addresses, straight from the IP header: source at 12 (IPv4) or 8 (IPv6), the
    // destination right after it.
    let (off, len) = if packet.family == FAMILY_V4 {
        (packet.l3_off + 12, 4)
    } else {
        (packet.l3_off + 8, 16)
    };
    // SAFETY: each destination buffer has at least `len` writable bytes.
    unsafe {
        bpf_skb_load_bytes(ctx.skb.skb.cast(), off, header.src.as_mut_ptr().cast(), len);
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            off + len,
            header.dst.as_mut_ptr().cast(),
            len,
        );
    }
}
