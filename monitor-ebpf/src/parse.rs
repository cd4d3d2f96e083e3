//! Header parsing with direct packet access: Ethernet, up to two VLAN tags (802.1Q, 802.1ad),
//! IPv4 with any header length, IPv6. Only what accounting needs is read.

use aya_ebpf::programs::TcContext;
use monitor_common::{DIRECTION_EGRESS, FAMILY_V4, FAMILY_V6, IPPROTO_TCP, IPPROTO_UDP};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_HLEN: usize = 4;
const IPV6_HLEN: u32 = 40;
const UDP_HLEN: u32 = 8;
const TCP_MIN_HLEN: usize = 20;

/// Every header we read lies in the first bytes of the frame: 14 (Ethernet) + 8 (two tags) +
/// 60 (IPv4 with options) or 40 + extension headers, + 20 (TCP header up to the window).
const PULL_LEN: u32 = 192;

/// The largest offset of a transport payload the parser can produce: two VLAN tags, IPv4 with
/// options, TCP with options (14 + 8 + 60 + 60). IPv6 payloads start earlier (14 + 8 + 40 + 60).
pub const MAX_PAYLOAD_OFF: u32 = 142;

/// One accountable IP packet (or GSO super-packet).
#[derive(Default)]
pub struct Packet {
    /// MAC address of the LAN device: source on egress, destination on ingress.
    pub device: [u8; 6],
    pub family: u8,
    /// The remote address: destination on egress, source on ingress. IPv4 in the first 4 bytes.
    pub remote: [u8; 16],
    /// IP-layer bytes as they cross the wire.
    pub bytes: u64,
    /// Wire packets: the GSO segment count of a super-packet, else 1.
    pub packets: u64,
    /// Offset of the IP header in the frame.
    pub l3_off: u32,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`] when the transport header could be read (the first
    /// fragment, no IPv6 extension headers, not cut short); otherwise 0 and the fields below
    /// are meaningless. Only the sniffer (naming) reads them, never the accounting.
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// Offset of the transport payload in the frame, and its length in this packet.
    pub payload_off: u32,
    pub payload_len: u32,
}

/// What the frame is. Fieldless on purpose: the packet itself is written through an
/// out-parameter, so that no enum payload with undefined bytes is moved around; the verifier
/// rejects a program that copies an uninitialised register, even one nobody reads later.
pub enum Parsed {
    Ip,
    NotIp,
    Malformed,
}

/// Why parsing stopped short of a packet.
enum Stop {
    /// The frame ends before a header does.
    Malformed,
    /// A header lies beyond the linear part of the skb, in paged fragments.
    NotLinear,
}

/// Bounds of the linear packet data, and the whole frame's length.
struct Frame {
    data: usize,
    end: usize,
    len: u32,
}

impl Frame {
    #[inline(always)]
    fn of(ctx: &TcContext) -> Frame {
        Frame {
            data: ctx.data(),
            end: ctx.data_end(),
            len: ctx.len(),
        }
    }

    /// A pointer to `len` readable bytes at `off`.
    #[inline(always)]
    fn ptr(&self, off: usize, len: usize) -> Result<*const u8, Stop> {
        let start = self.data + off;
        if start + len <= self.end {
            Ok(start as *const u8)
        } else if off + len <= self.len as usize {
            Err(Stop::NotLinear)
        } else {
            Err(Stop::Malformed)
        }
    }
}

/// `value` as a packet offset the verifier can add to a packet pointer: at most `max`, proven
/// by a comparison it sees next to the use. The value goes through an opaque load so that LLVM
/// cannot drop the comparison as redundant: a value that was stored to the stack with a 4-byte
/// write (as `Packet`'s u32 fields are) is unknown to verifiers before 5.16 when read back,
/// and a packet pointer plus an unbounded offset is rejected.
#[inline(always)]
pub fn bounded_offset(value: u32, max: u32) -> Option<usize> {
    // SAFETY: reading a local variable.
    let opaque = unsafe { core::ptr::read_volatile(&value) };
    if opaque <= max {
        Some(opaque as usize)
    } else {
        None
    }
}

#[inline(always)]
fn be16(p: *const u8, off: usize) -> u16 {
    // SAFETY: callers pass a pointer from Frame::ptr whose length covers off + 2.
    unsafe { u16::from_be_bytes([*p.add(off), *p.add(off + 1)]) }
}

#[inline(always)]
fn byte(p: *const u8, off: usize) -> u8 {
    // SAFETY: callers pass a pointer from Frame::ptr whose length covers off + 1.
    unsafe { *p.add(off) }
}

#[inline(always)]
fn is_vlan(proto: u16) -> bool {
    proto == ETH_P_8021Q || proto == ETH_P_8021AD
}

/// Parses the frame into `packet`; `pulled` is set when its headers had to be pulled into the
/// linear part.
#[inline(always)]
pub fn parse(ctx: &TcContext, direction: u8, pulled: &mut bool, packet: &mut Packet) -> Parsed {
    match parse_frame(ctx, &Frame::of(ctx), direction, packet) {
        Ok(true) => Parsed::Ip,
        Ok(false) => Parsed::NotIp,
        Err(Stop::Malformed) => Parsed::Malformed,
        Err(Stop::NotLinear) => {
            // Headers normally sit in the linear part of the skb (GSO super-packets carry just
            // their headers there); a driver may have left some in paged fragments. Pull them
            // in, once: this moves no byte of the packet, so nothing changes on the wire.
            *pulled = true;
            let len = ctx.len();
            let want = if len < PULL_LEN { len } else { PULL_LEN };
            if ctx.skb.pull_data(want).is_err() {
                return Parsed::Malformed;
            }
            match parse_frame(ctx, &Frame::of(ctx), direction, packet) {
                Ok(true) => Parsed::Ip,
                Ok(false) => Parsed::NotIp,
                Err(_) => Parsed::Malformed,
            }
        }
    }
}

/// Fills `packet`; false if the frame is not IP.
#[inline(always)]
fn parse_frame(
    ctx: &TcContext,
    frame: &Frame,
    direction: u8,
    packet: &mut Packet,
) -> Result<bool, Stop> {
    let eth = frame.ptr(0, ETH_HLEN)?;
    let mac_off = if direction == DIRECTION_EGRESS { 6 } else { 0 };
    // SAFETY: eth covers 14 bytes; the MAC is 6 of them.
    packet.device = unsafe { core::ptr::read_unaligned(eth.add(mac_off) as *const [u8; 6]) };
    let mut proto = be16(eth, 12);
    let mut l3 = ETH_HLEN;
    if is_vlan(proto) {
        let tag = frame.ptr(l3, VLAN_HLEN)?;
        proto = be16(tag, 2);
        l3 += VLAN_HLEN;
        if is_vlan(proto) {
            let tag = frame.ptr(l3, VLAN_HLEN)?;
            proto = be16(tag, 2);
            l3 += VLAN_HLEN;
        }
    }

    let ip = L3 {
        frame,
        offset: l3,
        // Wire bytes from the IP header on; skb->len counts the frame from its Ethernet header.
        len: frame.len.saturating_sub(l3 as u32),
        // SAFETY: reading a field of the context the kernel handed us.
        segs: unsafe { (*ctx.skb.skb).gso_segs },
        direction,
    };
    match proto {
        ETH_P_IP => ipv4(&ip, packet).map(|()| true),
        ETH_P_IPV6 => ipv6(&ip, packet).map(|()| true),
        _ => Ok(false),
    }
}

/// Bytes of a packet: its own length field, clipped to what the frame holds (Ethernet padding
/// is not IP data, a lying length field is not either). A GSO super-packet of N segments stands
/// for N packets, each carrying its own copy of the headers (`hdr_len`).
#[inline(always)]
fn wire_bytes(length_field: u32, l3_len: u32, segs: u32, hdr_len: u32) -> (u64, u64) {
    if segs > 1 {
        let extra = (segs - 1) as u64 * hdr_len as u64;
        (l3_len as u64 + extra, segs as u64)
    } else {
        let bytes = if length_field == 0 || length_field > l3_len {
            l3_len
        } else {
            length_field
        };
        (bytes as u64, 1)
    }
}

/// Length of the TCP or UDP header at `l4`, replicated in every GSO segment.
#[inline(always)]
fn l4_header_len(frame: &Frame, l4: usize, proto: u8) -> Result<u32, Stop> {
    Ok(match proto {
        IPPROTO_TCP => ((byte(frame.ptr(l4, 13)?, 12) >> 4) as u32) * 4,
        IPPROTO_UDP => UDP_HLEN,
        _ => 0,
    })
}

/// Where the IP header starts and what the frame around it says.
struct L3<'a> {
    frame: &'a Frame,
    /// Offset of the IP header in the frame.
    offset: usize,
    /// Bytes from the IP header to the end of the frame.
    len: u32,
    /// GSO segments (0 or 1 for an ordinary packet).
    segs: u32,
    direction: u8,
}

impl Packet {
    /// Records the IP layer's findings; `length_field` is the header's own idea of the size.
    #[inline(always)]
    fn set_ip(&mut self, l3: &L3, family: u8, remote: [u8; 16], length_field: u32, hdr_len: u32) {
        let (bytes, packets) = wire_bytes(length_field, l3.len, l3.segs, hdr_len);
        self.family = family;
        self.remote = remote;
        self.bytes = bytes;
        self.packets = packets;
        self.l3_off = l3.offset as u32;
    }

    /// Records the transport header at `l4` (TCP or UDP), for the sniffer. A header cut short
    /// by the frame is not an error here: accounting does not need it.
    ///
    /// One branch per protocol, each with its own bounds check right before the reads that
    /// rely on it: a check of a length chosen by protocol followed by a second test of the
    /// protocol before the TCP-only read is what the verifiers of 5.10 and 6.1 reject (they do
    /// not carry "protocol is TCP" from one branch to the other; see the crate's notes).
    #[inline(always)]
    fn set_l4(&mut self, l3: &L3, ip_end: u32, l4: usize, protocol: u8) -> Result<(), Stop> {
        let payload_off = match protocol {
            IPPROTO_TCP => {
                let th = match l3.frame.ptr(l4, TCP_MIN_HLEN) {
                    Ok(th) => th,
                    Err(Stop::NotLinear) => return Err(Stop::NotLinear),
                    Err(Stop::Malformed) => return Ok(()),
                };
                self.src_port = be16(th, 0);
                self.dst_port = be16(th, 2);
                l4 as u32 + ((byte(th, 12) >> 4) as u32) * 4
            }
            IPPROTO_UDP => {
                let uh = match l3.frame.ptr(l4, UDP_HLEN as usize) {
                    Ok(uh) => uh,
                    Err(Stop::NotLinear) => return Err(Stop::NotLinear),
                    Err(Stop::Malformed) => return Ok(()),
                };
                self.src_port = be16(uh, 0);
                self.dst_port = be16(uh, 2);
                l4 as u32 + UDP_HLEN
            }
            _ => return Ok(()),
        };
        self.protocol = protocol;
        self.payload_off = payload_off;
        self.payload_len = ip_end.saturating_sub(payload_off);
        Ok(())
    }
}

#[inline(always)]
fn ipv4(l3: &L3, packet: &mut Packet) -> Result<(), Stop> {
    let (frame, segs) = (l3.frame, l3.segs);
    let ip = frame.ptr(l3.offset, 20)?;
    let ver_ihl = byte(ip, 0);
    let ihl = ((ver_ihl & 0x0f) as u32) * 4;
    if ver_ihl >> 4 != 4 || ihl < 20 {
        return Err(Stop::Malformed);
    }
    let total_len = be16(ip, 2) as u32;
    let addr_off = if l3.direction == DIRECTION_EGRESS {
        16
    } else {
        12
    };
    // SAFETY: ip covers 20 bytes; both addresses lie within them.
    let addr = unsafe { core::ptr::read_unaligned(ip.add(addr_off) as *const [u8; 4]) };
    let mut remote = [0u8; 16];
    remote[0] = addr[0];
    remote[1] = addr[1];
    remote[2] = addr[2];
    remote[3] = addr[3];
    let hdr_len = if segs > 1 {
        ihl + l4_header_len(frame, l3.offset + ihl as usize, byte(ip, 9))?
    } else {
        0
    };
    packet.set_ip(l3, FAMILY_V4, remote, total_len, hdr_len);
    let protocol = byte(ip, 9);
    let first_fragment = be16(ip, 6) & 0x1fff == 0;
    if first_fragment && (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP) {
        let ip_end = ip_end(l3, total_len);
        packet.set_l4(l3, ip_end, l3.offset + ihl as usize, protocol)?;
    }
    Ok(())
}

/// Offset in the frame where the IP packet ends: its length field, clipped to the frame; the
/// frame's end for a GSO super-packet, whose length field may describe one segment or none.
#[inline(always)]
fn ip_end(l3: &L3, length_field: u32) -> u32 {
    let len = if l3.segs > 1 || length_field == 0 || length_field > l3.len {
        l3.len
    } else {
        length_field
    };
    l3.offset as u32 + len
}

#[inline(always)]
fn ipv6(l3: &L3, packet: &mut Packet) -> Result<(), Stop> {
    let ip = l3.frame.ptr(l3.offset, IPV6_HLEN as usize)?;
    if byte(ip, 0) >> 4 != 6 {
        return Err(Stop::Malformed);
    }
    let payload_len = be16(ip, 4) as u32;
    let addr_off = if l3.direction == DIRECTION_EGRESS {
        24
    } else {
        8
    };
    // SAFETY: ip covers 40 bytes; both addresses lie within them.
    let remote = unsafe { core::ptr::read_unaligned(ip.add(addr_off) as *const [u8; 16]) };
    let hdr_len = if l3.segs > 1 {
        ipv6_gso_header_len(l3.frame, l3.offset, byte(ip, 6))?
    } else {
        0
    };
    // A zero payload length is a jumbogram: the frame's length is the truth.
    let length_field = if payload_len == 0 {
        0
    } else {
        IPV6_HLEN + payload_len
    };
    packet.set_ip(l3, FAMILY_V6, remote, length_field, hdr_len);
    // Only a transport header right after the fixed header: the names the sniffer looks for
    // (DNS, TLS, DHCP) do not come with extension headers.
    let next = byte(ip, 6);
    if next == IPPROTO_TCP || next == IPPROTO_UDP {
        let ip_end = ip_end(l3, length_field);
        packet.set_l4(l3, ip_end, l3.offset + IPV6_HLEN as usize, next)?;
    }
    Ok(())
}

/// IPv6 header, extension headers and transport header: what every GSO segment repeats.
/// Only called for super-packets, so the walk costs nothing on ordinary packets.
#[inline(always)]
fn ipv6_gso_header_len(frame: &Frame, l3: usize, first_next: u8) -> Result<u32, Stop> {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const DEST_OPTS: u8 = 60;
    let mut next = first_next;
    let mut off = IPV6_HLEN as usize;
    for _ in 0..4 {
        let ext_len = match next {
            HOP_BY_HOP | ROUTING | DEST_OPTS => {
                let ext = frame.ptr(l3 + off, 2)?;
                next = byte(ext, 0);
                (byte(ext, 1) as usize + 1) * 8
            }
            FRAGMENT => {
                // The whole 8-byte header: a 1-byte check compiles to `ptr < end`, from which
                // the verifier proves no readable byte at all.
                next = byte(frame.ptr(l3 + off, 8)?, 0);
                8
            }
            _ => break,
        };
        off += ext_len;
    }
    Ok(off as u32 + l4_header_len(frame, l3 + off, next)?)
}
