//! `cargo xtask bench`: what counting costs, measured against the alternatives.
//!
//! [`e2e`] forwards real traffic through the lab's virtual router with and without each way of
//! counting it (egress-monitor, tcpdump, an nftables set, conntrack accounting) and compares
//! the CPU time spent per forwarded packet.

pub mod e2e;
