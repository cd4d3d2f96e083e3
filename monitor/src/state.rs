//! What the poller publishes and the HTTP handlers read. The poller holds the write lock only
//! to apply a reading it already took from the kernel, so a scrape never waits on a syscall.

use std::{
    sync::{Arc, RwLock},
    time::SystemTime,
};

use monitor_common::KernelStats;

use crate::{ledger::Ledger, loader::Attachment};

/// Sizes of one kernel map.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapUsage {
    pub entries: u64,
    pub capacity: u64,
}

/// Everything one scrape shows.
#[derive(Debug, Default)]
pub struct State {
    pub ledger: Ledger,
    /// Per direction (`DIRECTION_EGRESS`, `DIRECTION_INGRESS`), summed over CPUs.
    pub kernel: [KernelStats; 2],
    pub flows: MapUsage,
    pub devices: MapUsage,
    /// Local prefixes written to the kernel: (IPv4, IPv6).
    pub local_prefixes: (usize, usize),
    pub attachments: Vec<Attachment>,
    pub last_poll: Option<SystemTime>,
}

/// The state shared between the poller and the server.
pub type Shared = Arc<RwLock<State>>;
