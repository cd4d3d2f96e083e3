//! The kernel side of egress-monitor: TC programs on each LAN interface that count, per device
//! and remote address, the IP-layer bytes and packets leaving and entering the network.
//!
//! The programs only add numbers, and copy the few packets that name things (DNS answers, TLS
//! ClientHellos, DHCP requests) to the agent; naming, policy and export happen in the agent.
//!
//! # What every verifier from Linux 5.10 on needs
//! The same object must load on 5.10 (Debian 11), 5.15 (OpenWrt 23.05), 6.1 (Debian 12) and
//! newer, on both byte orders, with or without kernel BTF; `cargo xtask vm` proves it on
//! Debian's 5.10, 6.1 and 6.12. Older verifiers track less, so the code keeps to these rules:
//! * **A bounds check and every read that relies on it sit on one path.** A length chosen by a
//!   condition, checked once, then a second test of the same condition before the read that
//!   needs the longer length, is rejected by 5.10 and 6.1 (`invalid access to packet`): they do
//!   not carry the outcome of the first test into the second. So each protocol's header has its
//!   own branch with its own check (`parse::Packet::set_l4`).
//! * **A packet offset that went through memory is bounded again before use.** Before 5.16 a
//!   value stored with a write narrower than 8 bytes (the u32 fields of `parse::Packet`) reads
//!   back as an unknown scalar, and a packet pointer plus an unbounded offset is rejected. Such
//!   offsets pass through `parse::bounded_offset` (an opaque load and a compare LLVM cannot drop).
//! * **Helper sizes carry both bounds on the register passed**, through an opaque load and a
//!   mask (`sniff::copy_len`): LLVM folds a plain clamp into a form whose lower bound is 0.
//! * **No CO-RE, no kfuncs, no BTF-only features**: the maps are legacy map definitions, the
//!   context fields read (`len`, `gso_segs`, `ifindex`) exist in `__sk_buff` since 5.0, and
//!   helpers are those of 5.8 (ring buffer) or older. TCX (6.6) is the agent's choice at
//!   attach time, with clsact below.
//! * **Loops are bounded and small** (`ipv6_gso_header_len`: four extension headers), within
//!   the instruction budget of every verifier.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod account;
mod maps;
mod parse;
mod sniff;

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use monitor_common::{DIRECTION_EGRESS, DIRECTION_INGRESS};

// The verdict is always TC_ACT_UNSPEC: under TCX it means "next program", under clsact
// "continue with the next filter", so a monitor never drops a packet nor cuts short someone
// else's program that runs after it, whatever happens in here.

/// TC ingress on a LAN interface: a device sends a frame towards the world.
#[classifier]
pub fn lan_ingress(ctx: TcContext) -> i32 {
    account::account(&ctx, DIRECTION_EGRESS);
    TC_ACT_UNSPEC
}

/// TC egress on a LAN interface: the router delivers a frame to a device.
#[classifier]
pub fn lan_egress(ctx: TcContext) -> i32 {
    account::account(&ctx, DIRECTION_INGRESS);
    TC_ACT_UNSPEC
}

/// An empty classifier, loaded the same way, so benchmarks can report the cost of the real
/// programs over the bare cost of running a TC program.
#[classifier]
pub fn noop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// On the host the crate is an empty binary, so `cargo clippy --workspace` can lint it.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
