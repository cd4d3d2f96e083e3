//! Everything that talks to the kernel: loading and attaching the programs, following the LAN
//! interfaces and bridge ports, reading the counter maps, giving devices their slots, the
//! local prefixes, the ring of copied packets, the neighbour table and offload checks.

pub mod counters;
pub mod device_totals;
pub mod hooks;
pub mod loader;
pub mod neighbours;
pub mod netlink;
pub mod offload;
pub mod prefixes;
pub mod sniff_ring;
