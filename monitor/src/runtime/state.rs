//! The agent's state, owned by the poller's thread: no lock, and nobody else holds a
//! reference. Other threads send it messages (copied packets, lease files read, a reloaded
//! configuration, control requests; see `poller`), and read it only through the snapshot the
//! poller publishes after each poll (see `snapshot`).

use std::time::SystemTime;

use monitor_common::KernelStats;

use crate::{
    config::Config,
    ledger::{Ledger, Reading},
    naming::Naming,
    policy::{Policy, Target},
    snapshot::{self, AgentStats, Snapshot, Sources},
};

/// Everything the agent knows.
#[derive(Debug)]
pub struct State {
    pub ledger: Ledger,
    /// Names of devices and destinations, resolver bypass.
    pub naming: Naming,
    /// The policy, learned baselines and unexpected traffic.
    pub policy: Policy,
    /// What the kernel side reported at the last poll: statistics, maps, hooks.
    pub agent: AgentStats,
    pub last_poll: Option<SystemTime>,
}

impl State {
    pub fn new(config: &Config) -> Self {
        Self {
            ledger: Ledger::new(config.max_destinations_per_device as usize),
            naming: Naming::new(config),
            policy: Policy::new(config.policy.clone(), Default::default()),
            agent: AgentStats::default(),
            last_poll: None,
        }
    }

    /// Settles one poll's reading: bytes read now are labelled with the names valid now (see
    /// `ledger`), and judged by the policy; then expired names are dropped.
    pub fn settle(&mut self, reading: &Reading, kernel: [KernelStats; 2], now: SystemTime) {
        let Self {
            ledger,
            naming,
            policy,
            ..
        } = self;
        let names = &*naming;
        // What the databases say about each address: unknown until the lookups are wired in.
        let enrichment = crate::enrich::Enrichment::default();
        ledger.apply_observed(
            reading,
            now,
            &mut |mac, addr| names.label(mac, addr, now),
            &mut |id, addr, label, step| {
                // The full host name, not the label: a rule may name one host of a domain.
                let host = names.destinations.lookup(id.mac, addr, now);
                let target = Target {
                    addr,
                    host: host.map(|b| b.name.as_str()),
                    label,
                    enrichment: &enrichment,
                };
                policy.observe(id, names.devices.group(id.mac), &target, step, now);
            },
        );
        naming.destinations.expire(now);
        self.agent.kernel = kernel;
        self.last_poll = Some(now);
    }

    /// The snapshot of now; `previous` lends whatever did not change.
    pub fn snapshot(&self, previous: &Snapshot, now: SystemTime) -> Snapshot {
        let sources = Sources {
            ledger: &self.ledger,
            naming: &self.naming,
            policy: &self.policy,
        };
        snapshot::take(&sources, previous, self.agent.clone(), self.last_poll, now)
    }

    /// The state file's text when a write is due (`force`: whatever changed), with the
    /// devices' names of now.
    pub fn state_file_if_due(&mut self, force: bool) -> Option<String> {
        let Self { policy, naming, .. } = self;
        let name = |mac| naming.devices.name(mac).map(|(n, _)| n.to_owned());
        policy.snapshot_if_due(std::time::Instant::now(), force, &name)
    }
}
