//! The kernel as the poller sees it ([`super::KernelSource`]): the loaded programs, their
//! maps and hooks, owned together so that dropping them detaches the programs (unless they are
//! pinned: then they count on for the next agent).

use aya::Ebpf;
use ipnet::IpNet;

use super::{
    KernelSource,
    counters::{self, CollectError, Collected, CounterMaps, Flows, Stats},
    device_totals::DeviceTotals,
    hooks::{Attachment, Hooks},
    loader::{KernelMaps, Loaded},
    neighbours::Neighbour,
    offload::OffloadWatch,
    pins::Start,
    prefixes::{self, LocalPrefixMaps},
};
use crate::types::{Count, DeviceId};

/// The running programs and everything a poll reads or writes of them. Fields drop in
/// order: the log reader, the hooks (detaching the programs unless pinned), the maps, then the
/// object.
pub struct Live {
    log: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    hooks: Hooks,
    offload: OffloadWatch,
    devices: DeviceTotals,
    flows: Flows,
    stats: Stats,
    local: LocalPrefixMaps,
    lan: Vec<String>,
    extra_local: Vec<IpNet>,
    flow_capacity: u32,
    start: Start,
    /// Kernel statistics of replaced maps, per direction.
    carried_stats: [monitor_common::KernelStats; 2],
    /// Flow totals of replaced maps, until the ledger takes them.
    carried_flows: Vec<(DeviceId, std::net::IpAddr, Count)>,
    ebpf: Ebpf,
}

impl Live {
    /// Takes the loaded programs; returns the ring of copied packets, which the sniff thread
    /// reads on its own.
    pub fn new(
        loaded: Loaded,
        lan: Vec<String>,
        extra_local: Vec<IpNet>,
        flow_capacity: u32,
        device_capacity: u32,
    ) -> (Self, aya::maps::RingBuf<aya::maps::MapData>) {
        let Loaded {
            mut ebpf,
            maps,
            hooks,
            start,
            carried,
            carried_pin,
        } = loaded;
        // The programs log rare events (a full device map) through aya-log.
        let log = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(e) => {
                tracing::warn!(error = %e, "kernel log records will not be shown");
                None
            }
        };
        let KernelMaps {
            devices,
            device_slots,
            device_totals,
            flows,
            stats,
            local,
            sniff,
        } = maps;
        let live = Self {
            log,
            hooks,
            offload: OffloadWatch::default(),
            devices: DeviceTotals::new(devices, device_slots, device_totals, device_capacity)
                .with_carried(carried.devices, carried_pin),
            flows,
            stats,
            local,
            lan,
            extra_local,
            flow_capacity,
            start,
            carried_stats: carried.stats,
            carried_flows: carried
                .flows
                .iter()
                .filter_map(|(key, count)| {
                    let (device, addr) = counters::flow_of(key)?;
                    Some((device, addr, *count))
                })
                .collect(),
            ebpf,
        };
        (live, sniff)
    }
}

impl KernelSource for Live {
    fn follow_interfaces(&mut self) -> Option<Vec<Attachment>> {
        self.hooks
            .follow(&mut self.ebpf)
            .then(|| self.hooks.attachments())
    }

    fn attachments(&self) -> Vec<Attachment> {
        self.hooks.attachments()
    }

    fn sync_local_prefixes(&mut self) -> anyhow::Result<(usize, usize)> {
        let wanted = prefixes::wanted(&self.lan, &self.extra_local)?;
        let added = self.local.sync(&wanted)?;
        if !added.is_empty() {
            let forgotten = prefixes::forget_flows_to(&mut self.flows, &added)?;
            tracing::info!(prefixes = ?wanted, ?added, forgotten_flows = forgotten, "local prefixes updated");
        }
        Ok(self.local.counts())
    }

    fn read_counters(&mut self) -> Result<Collected, CollectError> {
        let maps = CounterMaps {
            flows: &self.flows,
            devices: &self.devices,
            stats: &self.stats,
        };
        let mut collected = counters::read(&maps, self.flow_capacity)?;
        for (kernel, carried) in collected.kernel.iter_mut().zip(&self.carried_stats) {
            *kernel = kernel.merged(carried);
        }
        match self
            .devices
            .maintain(&collected.device_maps, &mut self.flows)
        {
            Ok(done) if done.recycled > 0 => tracing::info!(
                recycled = done.recycled,
                assigned = done.assigned,
                "gave the slots of the longest idle devices to new ones (their totals carry on)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not maintain the device maps"),
        }
        Ok(collected)
    }

    fn lan_neighbours(&mut self) -> std::io::Result<Vec<Neighbour>> {
        let mut all = super::neighbours::dump()?;
        // Only the LAN's neighbours are devices: the WAN gateway is not.
        let lan = self.hooks.lan_ifindexes();
        all.retain(|n| lan.contains(&n.ifindex));
        Ok(all)
    }

    fn hardware_offload(&mut self) -> Vec<(String, bool)> {
        let attached: Vec<(String, String)> = self
            .hooks
            .attachments()
            .into_iter()
            .filter(|a| a.mode.is_some())
            .map(|a| (a.interface, a.lan))
            .collect();
        self.offload.check(&attached)
    }

    fn start(&self) -> Start {
        self.start
    }

    fn take_carried_flows(&mut self) -> Vec<(DeviceId, std::net::IpAddr, Count)> {
        std::mem::take(&mut self.carried_flows)
    }

    fn flush_log(&mut self) {
        if let Some(log) = self.log.as_mut() {
            log.flush();
        }
    }
}
