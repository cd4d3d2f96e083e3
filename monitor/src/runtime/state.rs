//! What the poller publishes and the HTTP handlers read. The poller holds the write lock only
//! to apply a reading it already took from the kernel, so a scrape never waits on a syscall.

use std::{
    sync::{Arc, RwLock},
    time::SystemTime,
};

use monitor_common::KernelStats;

use crate::{
    config::Config, kernel::hooks::Attachment, ledger::Ledger, naming::Naming, policy::Policy,
};

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
    /// The policy, learned baselines and unexpected traffic.
    pub policy: Policy,
    /// Per direction (`DIRECTION_EGRESS`, `DIRECTION_INGRESS`), summed over CPUs.
    pub kernel: [KernelStats; 2],
    pub flows: MapUsage,
    pub devices: MapUsage,
    /// Local prefixes written to the kernel: (IPv4, IPv6).
    pub local_prefixes: (usize, usize),
    pub attachments: Vec<Attachment>,
    /// Per hook device: whether hardware offload may hide its packets (see `offload`).
    pub hardware_offload: Vec<(String, bool)>,
    pub last_poll: Option<SystemTime>,
}

impl State {
    pub fn new(config: &Config) -> Self {
        Self {
            ledger: Ledger::new(config.max_destinations_per_device as usize),
            naming: Naming::new(config),
            policy: Policy::new(config.policy.clone(), Default::default()),
            kernel: Default::default(),
            flows: MapUsage::default(),
            devices: MapUsage::default(),
            local_prefixes: (0, 0),
            attachments: Vec::new(),
            hardware_offload: Vec::new(),
            last_poll: None,
        }
    }
}

/// The state shared between the poller and the server.
pub type Shared = Arc<RwLock<State>>;

/// Writes the policy's state file when due (`force`: whatever changed), outside the state
/// lock. One writer at a time, each with a snapshot taken after the previous write, so an
/// older snapshot never replaces a newer file.
pub fn save(shared: &Shared, dir: &std::path::Path, force: bool) -> std::io::Result<()> {
    static WRITER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _writer = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    let text = {
        let mut guard = shared.write().expect("state lock");
        let State { policy, naming, .. } = &mut *guard;
        let name = |mac| naming.devices.name(mac).map(|(n, _)| n.to_owned());
        policy.snapshot_if_due(std::time::Instant::now(), force, &name)
    };
    let Some(text) = text else { return Ok(()) };
    let result = crate::persist::state_file::write(dir, &text);
    if let Err(e) = &result {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the state file");
    }
    shared
        .write()
        .expect("state lock")
        .policy
        .wrote(result.is_ok());
    result
}
