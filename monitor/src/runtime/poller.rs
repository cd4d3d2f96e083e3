//! The poll loop: every `poll_interval`, refresh the local prefixes, read the kernel maps,
//! settle them into the ledger and publish. It runs on its own thread because reading the maps
//! (see `collect`) takes blocking syscalls, which have no place on the async runtime.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime},
};

use ipnet::IpNet;
use monitor_common::KernelStats;

use crate::{
    http::metrics::SelfMetrics,
    kernel::counters::{self, Collected, CounterMaps},
    kernel::device_totals::DeviceTotals,
    kernel::loader::{KernelMaps, Loaded},
    kernel::offload::OffloadWatch,
    kernel::prefixes::{self, LocalPrefixMaps},
    ledger::Reading,
    policy::Target,
    runtime::state::{MapUsage, Shared, State},
};

/// What the poller needs besides the kernel objects.
pub struct PollerConfig {
    pub interval: Duration,
    pub lan: Vec<String>,
    pub extra_local: Vec<IpNet>,
    pub flow_capacity: u32,
    pub device_capacity: u32,
    /// Reads the configuration again on SIGHUP or when the file changes.
    pub reloader: crate::runtime::reload::Reloader,
    /// Where the policy's state file is written.
    pub state_dir: std::path::PathBuf,
}

/// How often the neighbour table is read (a netlink dump of every entry), and the hook devices
/// are checked for hardware offload.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(5);

/// Polls until `stop` receives (or its sender is dropped), then drops `loaded`, which detaches
/// the programs. Fails when the sniff thread died: the agent must not go on half blind.
pub fn run(
    loaded: Loaded,
    mut config: PollerConfig,
    shared: Shared,
    metrics: SelfMetrics,
    stop: mpsc::Receiver<()>,
) -> Result<(), crate::runtime::ThreadPanic> {
    let Loaded {
        mut ebpf,
        maps,
        mut hooks,
    } = loaded;
    // The programs log rare events (a full device map) through aya-log; drained every poll.
    let mut kernel_log = match aya_log::EbpfLogger::init(&mut ebpf) {
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
        mut flows,
        stats,
        mut local,
        sniff,
    } = maps;
    let mut devices =
        DeviceTotals::new(devices, device_slots, device_totals, config.device_capacity);
    // Copied packets are read as they arrive, on their own thread.
    let sniff_stop = Arc::new(AtomicBool::new(false));
    let sniffer = {
        let (shared, stop) = (shared.clone(), sniff_stop.clone());
        std::thread::Builder::new()
            .name("sniff".into())
            .spawn(move || crate::kernel::sniff_ring::run(sniff, shared, stop))
            .expect("cannot start the sniff thread")
    };
    let mut neighbours_read: Option<Instant> = None;
    let mut offload = OffloadWatch::default();
    shared.write().expect("state lock").attachments = hooks.attachments();
    let mut next = Instant::now();
    loop {
        let started = Instant::now();
        crate::runtime::fault::panic_if_requested("poller");
        if sniffer.is_finished() {
            break;
        }
        if let Some(log) = kernel_log.as_mut() {
            log.flush();
        }
        if hooks.follow(&mut ebpf) {
            shared.write().expect("state lock").attachments = hooks.attachments();
        }
        if let Err(e) = sync_prefixes(&mut local, &mut flows, &config) {
            metrics
                .poll_errors
                .with_label_values(&["local_prefixes"])
                .inc();
            tracing::warn!(error = %e, "could not update the local prefixes");
        }
        let due = neighbours_read.is_none_or(|t| t.elapsed() >= NEIGHBOUR_REFRESH);
        if due {
            let attached: Vec<(String, String)> = hooks
                .attachments()
                .into_iter()
                .filter(|a| a.mode.is_some())
                .map(|a| (a.interface, a.lan))
                .collect();
            let found = offload.check(&attached);
            shared.write().expect("state lock").hardware_offload = found;
        }
        let neighbours = if due {
            neighbours_read = Some(Instant::now());
            match crate::kernel::neighbours::dump() {
                // Only the LAN's neighbours are devices: the WAN gateway is not.
                Ok(mut n) => {
                    let lan = hooks.lan_ifindexes();
                    n.retain(|n| lan.contains(&n.ifindex));
                    Some(n)
                }
                Err(e) => {
                    tracing::debug!("neighbour table: {e}");
                    None
                }
            }
        } else {
            None
        };
        {
            let mut state = shared.write().expect("state lock");
            if let Some(n) = &neighbours {
                state.naming.devices.set_neighbours(n);
            }
            state.naming.devices.refresh_leases();
        }
        let counter_maps = CounterMaps {
            flows: &flows,
            devices: &devices,
            stats: &stats,
        };
        let collected = counters::read(&counter_maps, config.flow_capacity);
        if let Ok(c) = &collected
            && let Err(e) = devices.assign(&c.devices_without_slot)
        {
            tracing::warn!(error = %e, "could not give new devices their slot");
        }
        match collected {
            Ok(Collected {
                reading,
                kernel,
                flow_entries,
                device_entries,
                ..
            }) => {
                let mut state = shared.write().expect("state lock");
                publish(&mut state, &reading, kernel, SystemTime::now());
                state.flows = MapUsage {
                    entries: flow_entries,
                    capacity: config.flow_capacity.into(),
                };
                state.devices = MapUsage {
                    entries: device_entries,
                    capacity: config.device_capacity.into(),
                };
                state.local_prefixes = local.counts();
            }
            Err(e) => {
                metrics.poll_errors.with_label_values(&["read_maps"]).inc();
                tracing::warn!(error = %e, "could not read the kernel maps");
            }
        }
        config.reloader.check(&shared);
        // Failures are logged and counted inside; the next due time retries.
        let _ = crate::runtime::state::save(&shared, &config.state_dir, false);
        metrics
            .poll_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.polls.inc();
        next += config.interval;
        let now = Instant::now();
        if next < now {
            // Overran (a huge map, a stalled machine): skip the missed ticks, do not burst.
            next = now + config.interval;
        }
        match stop.recv_timeout(next - now) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // What changed since the last write, so a restart loses nothing learned.
    let _ = crate::runtime::state::save(&shared, &config.state_dir, true);
    sniff_stop.store(true, Ordering::Relaxed);
    let sniffed = sniffer
        .join()
        .map_err(|payload| crate::runtime::panic_message(payload.as_ref()));
    drop(kernel_log);
    drop(hooks);
    drop(ebpf);
    tracing::info!("detached from the LAN interfaces");
    sniffed.map_err(|message| crate::runtime::ThreadPanic {
        thread: "sniff",
        message,
    })
}

/// Settles one poll's reading into the state: bytes read now are labelled with the names
/// valid now (see `ledger`), then expired names are dropped.
pub fn publish(state: &mut State, reading: &Reading, kernel: [KernelStats; 2], now: SystemTime) {
    let State {
        ledger,
        naming,
        policy,
        ..
    } = state;
    let names = &*naming;
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
            };
            policy.observe(id, names.devices.group(id.mac), &target, step, now);
        },
    );
    naming.destinations.expire(now);
    state.kernel = kernel;
    state.last_poll = Some(now);
}

/// Writes the local prefixes of now, and forgets the flows to the ones that became local.
fn sync_prefixes(
    local: &mut LocalPrefixMaps,
    flows: &mut counters::Flows,
    config: &PollerConfig,
) -> anyhow::Result<()> {
    let wanted = prefixes::wanted(&config.lan, &config.extra_local)?;
    let added = local.sync(&wanted)?;
    if !added.is_empty() {
        let forgotten = prefixes::forget_flows_to(flows, &added)?;
        tracing::info!(prefixes = ?wanted, ?added, forgotten_flows = forgotten, "local prefixes updated");
    }
    Ok(())
}
