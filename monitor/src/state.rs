//! What the poller publishes and the HTTP handlers read. The poller holds the write lock only
//! to apply a reading it already took from the kernel, so a scrape never waits on a syscall.

use std::{
    sync::{Arc, RwLock},
    time::SystemTime,
};

use monitor_common::KernelStats;

use crate::{config::Config, ledger::Ledger, loader::Attachment, naming::Naming};

/// Sizes of one kernel map.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapUsage {
    pub entries: u64,
    pub capacity: u64,
}

/// Everything one scrape shows.
#[derive(Debug)]
pub struct State {
    pub ledger: Ledger,
    /// Names of devices and destinations, resolver bypass.
    pub naming: Naming,
    /// Per direction (`DIRECTION_EGRESS`, `DIRECTION_INGRESS`), summed over CPUs.
    pub kernel: [KernelStats; 2],
    pub flows: MapUsage,
    pub devices: MapUsage,
    /// Local prefixes written to the kernel: (IPv4, IPv6).
    pub local_prefixes: (usize, usize),
    pub attachments: Vec<Attachment>,
    pub last_poll: Option<SystemTime>,
}

impl State {
    pub fn new(config: &Config) -> Self {
        Self {
            ledger: Ledger::new(config.max_destinations_per_device as usize),
            naming: Naming::new(config),
            kernel: Default::default(),
            flows: MapUsage::default(),
            devices: MapUsage::default(),
            local_prefixes: (0, 0),
            attachments: Vec::new(),
            last_poll: None,
        }
    }
}

/// The state shared between the poller and the server.
pub type Shared = Arc<RwLock<State>>;
