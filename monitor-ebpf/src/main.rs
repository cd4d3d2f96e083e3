//! The kernel side of egress-monitor: TC programs on each LAN interface that count, per device
//! and remote address, the IP-layer bytes and packets leaving and entering the network.
//!
//! The programs only add numbers, and copy the few packets that name things (DNS answers, TLS
//! ClientHellos, DHCP requests) to the agent; naming, policy and export happen in the agent.
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
