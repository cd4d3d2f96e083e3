//! Frame builders for feeding the kernel programs through BPF_PROG_TEST_RUN: explicit bytes, so
//! every test and benchmark says exactly what it feeds the kernel.

use std::net::{Ipv4Addr, Ipv6Addr};

pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// Inserts VLAN tags after the MAC addresses: each (TPID, VID).
pub fn with_tags(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&frame[12..]);
    f
}

/// IPv4 + UDP with `options` bytes of IP options (a multiple of 4) and `payload` bytes.
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, options: usize, payload: usize) -> Vec<u8> {
    let ihl = 20 + options;
    let total = ihl + 8 + payload;
    let mut p = vec![0x40 | (ihl / 4) as u8, 0];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend(std::iter::repeat_n(1u8, options)); // NOP options
    p.extend_from_slice(&[0x30, 0x39, 0x23, 0x28]);
    p.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend(std::iter::repeat_n(0xabu8, payload));
    p
}

/// IPv4 + TCP with a `tcp_header`-byte TCP header (20..=60) and `payload` bytes.
pub fn ipv4_tcp(src: Ipv4Addr, dst: Ipv4Addr, tcp_header: usize, payload: usize) -> Vec<u8> {
    let total = 20 + tcp_header + payload;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend(tcp(tcp_header, payload));
    p
}

pub fn tcp(header: usize, payload: usize) -> Vec<u8> {
    let mut t = vec![0x30, 0x39, 0x23, 0x29, 0, 0, 0, 1, 0, 0, 0, 0];
    t.push(((header / 4) as u8) << 4);
    t.extend_from_slice(&[0x10, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend(std::iter::repeat_n(1u8, header - 20)); // NOP options
    t.extend(std::iter::repeat_n(0xcdu8, payload));
    t
}

/// IPv6 + UDP with `payload` bytes.
pub fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, payload: usize) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0x30, 0x39, 0x23, 0x28]);
    p.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend(std::iter::repeat_n(0xabu8, payload));
    p
}

/// IPv6 + hop-by-hop (8 bytes) + TCP.
pub fn ipv6_hbh_tcp(src: Ipv6Addr, dst: Ipv6Addr, tcp_header: usize, payload: usize) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&((8 + tcp_header + payload) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // next = TCP, len 0 (8 bytes), PadN
    p.extend(tcp(tcp_header, payload));
    p
}

pub fn frame(src: [u8; 6], dst: [u8; 6], ethertype: u16, ip: &[u8]) -> Vec<u8> {
    let mut f = ethernet(dst, src, ethertype);
    f.extend_from_slice(ip);
    f
}

/// Sends each of `frames` (whole Ethernet frames) out of interface `interface` of namespace
/// `ns` through a packet socket, as a device with any source MAC would, pausing 1 ms every
/// `per_ms` frames. Panics if a frame cannot be sent.
pub fn send_raw(ns: &str, interface: &str, frames: &[Vec<u8>], per_ms: usize) {
    crate::netns::run_in(ns, || {
        let name = std::ffi::CString::new(interface).expect("an interface name");
        // SAFETY: a NUL-terminated name; the call only reads it.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(ifindex != 0, "no interface {interface} in {ns}");
        // SAFETY: plain socket creation; the descriptor is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        for (i, frame) in frames.iter().enumerate() {
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            // SAFETY: `frame` and `addr` outlive the call, which only reads them.
            let sent = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert!(
                sent == frame.len() as isize,
                "frame {i} from {ns}: {}",
                std::io::Error::last_os_error()
            );
            if per_ms > 0 && i % per_ms == per_ms - 1 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        // SAFETY: the descriptor opened above, closed once.
        unsafe { libc::close(fd) };
    });
}
