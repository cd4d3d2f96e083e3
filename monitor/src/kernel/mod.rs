//! Everything that talks to the kernel: loading and attaching the programs, following the LAN
//! interfaces and bridge ports, reading the counter maps, giving devices their slots, the
//! local prefixes, the ring of copied packets, the neighbour table and offload checks.

pub mod counters;
pub mod detach;
pub mod device_totals;
pub mod hooks;
pub mod live;
pub mod loader;
pub mod neighbours;
pub mod netlink;
pub mod offload;
pub mod pins;
pub mod prefixes;
pub mod sniff_ring;

pub use live::Live;

use crate::kernel::{
    counters::{CollectError, Collected},
    hooks::Attachment,
    neighbours::Neighbour,
};

/// What a poll asks of the kernel. [`Live`] is the real thing; the poller's tests use a fake,
/// so its stages are tested without root (the real thing is tested in the lab).
pub trait KernelSource {
    /// Hooks LAN ports that appeared or were re-created; the attachments when they changed.
    fn follow_interfaces(&mut self) -> Option<Vec<Attachment>>;
    /// Every device the programs are (or should be) attached to.
    fn attachments(&self) -> Vec<Attachment>;
    /// Writes the local prefixes of now (forgetting flows to new ones); their numbers
    /// (IPv4, IPv6).
    fn sync_local_prefixes(&mut self) -> anyhow::Result<(usize, usize)>;
    /// Reads the counter maps (flows, then devices, then statistics), and gives devices
    /// counted without a slot their slot.
    fn read_counters(&mut self) -> Result<Collected, CollectError>;
    /// The neighbours on the LAN's devices.
    fn lan_neighbours(&mut self) -> std::io::Result<Vec<Neighbour>>;
    /// Per hook device: whether hardware offload may hide its packets.
    fn hardware_offload(&mut self) -> Vec<(String, bool)>;
    /// Shows what the programs logged since the last call.
    fn flush_log(&mut self);
    /// How the kernel side began (afresh, or adopting an earlier agent's pins).
    fn start(&self) -> pins::Start {
        pins::Start::Unpinned
    }
    /// Flow totals carried over from maps an earlier agent replaced, once: the ledger adds
    /// them to the addresses' counts.
    fn take_carried_flows(
        &mut self,
    ) -> Vec<(
        crate::types::DeviceId,
        std::net::IpAddr,
        crate::types::Count,
    )> {
        Vec::new()
    }
}
