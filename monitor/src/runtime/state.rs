//! The agent's state, owned by the poller's thread: no lock, and nobody else holds a
//! reference. Other threads send it messages (copied packets, lease files read, a reloaded
//! configuration, control requests; see `poller`), and read it only through the snapshot the
//! poller publishes after each poll (see `snapshot`).

use std::time::SystemTime;

use monitor_common::KernelStats;

use crate::{
    config::{Config, EnrichConfig},
    enrich::{Databases, Enricher},
    ledger::{Ledger, Placing, Reading},
    naming::Naming,
    policy::{Policy, Target},
    snapshot::{self, AgentStats, EnrichStatus, Snapshot, Sources},
};

/// Everything the agent knows.
#[derive(Debug)]
pub struct State {
    pub ledger: Ledger,
    /// Names of devices and destinations, resolver bypass.
    pub naming: Naming,
    /// The policy, learned baselines and unexpected traffic.
    pub policy: Policy,
    /// Countries and ASes of addresses: the databases and their cache.
    pub places: PlaceState,
    /// What the kernel side reported at the last poll: statistics, maps, hooks.
    pub agent: AgentStats,
    pub last_poll: Option<SystemTime>,
}

impl State {
    pub fn new(config: &Config) -> Self {
        let mut policy = Policy::new(config.policy.clone(), Default::default());
        policy.set_write_interval(config.state_write_interval);
        Self {
            ledger: Ledger::new(config.max_destinations_per_device as usize)
                .with_max_series(config.max_series as usize),
            naming: Naming::new(config),
            policy,
            places: PlaceState::new(&config.enrich),
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
            places,
            ..
        } = self;
        let names = &*naming;
        let (enabled, enricher) = (places.enabled, &mut places.enricher);
        // Disabled: a generation no address was placed under, so no cached place is used.
        let generation = if enabled {
            enricher.generation()
        } else {
            u64::MAX
        };
        let mut enrich = |addr| enabled.then(|| enricher.lookup(addr));
        let mut placing = Placing {
            enrich: &mut enrich,
            generation,
            max_ases: places.max_ases,
        };
        ledger.apply_observed(
            reading,
            now,
            &mut |mac, addr| names.label(mac, addr, now),
            &mut placing,
            &mut |id, addr, label, place, step| {
                // The full host name, not the label: a rule may name one host of a domain.
                let host = names.destinations.lookup(id.mac, addr, now);
                let target = Target {
                    addr,
                    host: host.map(|b| b.name.as_str()),
                    label,
                    enrichment: place,
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
        let mut agent = self.agent.clone();
        agent.enrich = self.places.status();
        snapshot::take(&sources, previous, agent, self.last_poll, now)
    }

    /// The state file's text when a write is due (`force`: whatever changed), with the
    /// devices' names of now.
    pub fn state_file_if_due(&mut self, force: bool) -> Option<String> {
        let Self { policy, naming, .. } = self;
        let name = |mac| naming.devices.name(mac).map(|(n, _)| n.to_owned());
        policy.snapshot_if_due(std::time::Instant::now(), force, &name)
    }
}

/// The enrichment side of the state.
#[derive(Debug)]
pub struct PlaceState {
    pub enricher: Enricher,
    /// Whether `[enrich]` names a database: only then are addresses placed (an absent or
    /// broken file places them in `unknown`).
    pub enabled: bool,
    pub max_ases: usize,
    /// Database files that failed to open or re-open, since the start.
    pub failures: u64,
}

impl PlaceState {
    fn new(config: &EnrichConfig) -> Self {
        Self {
            enricher: Enricher::new(Databases::default(), config.cache_entries),
            enabled: config.is_enabled(),
            max_ases: config.max_as_per_device as usize,
            failures: 0,
        }
    }

    /// A reloaded `[enrich]`: the bounds now; the files come from the file watcher.
    pub fn configure(&mut self, config: &EnrichConfig) {
        self.enabled = config.is_enabled();
        self.max_ases = config.max_as_per_device as usize;
    }

    /// What the agent's own metrics show of enrichment.
    pub fn status(&self) -> EnrichStatus {
        let databases = self.enricher.databases();
        EnrichStatus {
            enabled: self.enabled,
            country_open: databases.country().is_some(),
            asn_open: databases.asn().is_some(),
            memory_bytes: databases.memory_bytes(),
            failures: self.failures,
            stats: self.enricher.stats(),
            cached: self.enricher.cached(),
            databases: databases.clone(),
        }
    }
}
