//! The poller: the owner of the agent's state. Every `poll_interval` it runs its stages (follow
//! the LAN's interfaces, write the local prefixes, refresh the neighbours, read the kernel maps
//! and settle them, save the state file when due, publish a snapshot); between polls it
//! applies what other threads send it (decoded packets, lease files, a reloaded
//! configuration, control requests, state writes done). It runs on its own thread because
//! reading the maps takes blocking syscalls, which have no place on the async runtime; it
//! never reads or writes a file itself.

use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use super::{fault, reload::Reload, shutdown::Shutdown, state::State};
use crate::{
    config::Config,
    http::metrics::SelfMetrics,
    kernel::{KernelSource, counters::Collected, pins::Start, sniff_ring::Sniffed},
    naming::lease_files::LeaseRead,
    persist::{
        control::{self, ControlReply, ControlRequest},
        writer::WriteJob,
    },
    snapshot::{MapUsage, Published, Snapshot},
};

/// How often the neighbour table is read (a netlink dump of every entry), and the hook devices
/// are checked for hardware offload.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(5);
/// How long the final state file write may take at a stop.
const FINAL_WRITE: Duration = Duration::from_secs(2);

/// What other threads tell the poller.
pub enum Message {
    /// Lease files that changed or failed, by index in the configuration.
    Leases(Vec<(usize, LeaseRead)>),
    Reload(Reload),
    Control(ControlRequest),
    /// A state file write finished: whether it succeeded.
    Wrote(bool),
    /// The MMDB databases open now (one was opened, re-opened or failed), and how many
    /// failed since the last such message.
    Databases(crate::enrich::Databases, u64),
}

/// The channels the poller listens on.
pub struct Inbox {
    pub messages: Receiver<Message>,
    pub sniffed: Receiver<Sniffed>,
}

/// What the poller needs besides the kernel and its channels.
pub struct PollerConfig {
    pub interval: Duration,
    pub flow_capacity: u32,
    pub device_capacity: u32,
}

/// The poller and the state it owns.
pub struct Poller<K> {
    kernel: K,
    state: State,
    config: PollerConfig,
    published: Published,
    metrics: SelfMetrics,
    /// Where state file texts go to be written.
    writer: Sender<WriteJob>,
    /// A periodic write is on its way: no second one until it is done.
    write_in_flight: bool,
    neighbours_read: Option<Instant>,
}

impl<K: KernelSource> Poller<K> {
    pub fn new(
        kernel: K,
        state: State,
        config: PollerConfig,
        published: Published,
        metrics: SelfMetrics,
        writer: Sender<WriteJob>,
    ) -> Self {
        let mut poller = Self {
            kernel,
            state,
            config,
            published,
            metrics,
            writer,
            write_in_flight: false,
            neighbours_read: None,
        };
        poller.state.agent.attachments = poller.kernel.attachments();
        poller.state.agent.kernel_start = poller.kernel.start().as_str();
        let carried = poller.kernel.take_carried_flows();
        poller.state.ledger.carry(&carried);
        poller
    }

    /// The state, for tests.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Polls until `shutdown`, then writes what changed and drops the kernel side, which
    /// detaches the programs unless they are pinned.
    pub fn run(mut self, inbox: Inbox, shutdown: &Shutdown) {
        let Inbox {
            mut messages,
            mut sniffed,
        } = inbox;
        if matches!(self.kernel.start(), Start::Adopted | Start::Resized) {
            // The maps hold what an earlier agent exported: a reading that is not published
            // first, so the first published device totals are settled ones (see the ledger),
            // not zeros that Prometheus would take for a counter reset.
            self.read_and_settle(SystemTime::now());
        }
        let mut next = Instant::now();
        'polls: loop {
            fault::panic_if_requested("poller");
            self.apply_pending(&sniffed);
            self.poll(SystemTime::now());
            next += self.config.interval;
            let now = Instant::now();
            if next < now {
                // Overran (a huge map, a stalled machine): skip the missed ticks, do not burst.
                next = now + self.config.interval;
            }
            loop {
                let wait = next.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    break;
                }
                crossbeam_channel::select! {
                    recv(shutdown.channel()) -> _ => break 'polls,
                    recv(messages) -> m => match m {
                        Ok(m) => self.handle(m),
                        // Every sender is gone: nothing more will come.
                        Err(_) => messages = crossbeam_channel::never(),
                    },
                    recv(sniffed) -> b => match b {
                        Ok(b) => self.apply_sniffed(b),
                        Err(_) => sniffed = crossbeam_channel::never(),
                    },
                    default(wait) => break,
                }
            }
        }
        self.stop(&messages);
    }

    /// One poll: every stage in order.
    pub fn poll(&mut self, now: SystemTime) {
        let started = Instant::now();
        self.kernel.flush_log();
        self.follow_interfaces();
        self.sync_local_prefixes();
        self.refresh_neighbours();
        self.read_and_settle(now);
        self.save_if_due();
        self.publish(now);
        self.metrics
            .poll_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.polls.inc();
    }

    /// Stage: hook ports that appeared; the attachments shown follow.
    fn follow_interfaces(&mut self) {
        if let Some(attachments) = self.kernel.follow_interfaces() {
            self.state.agent.attachments = attachments;
        }
    }

    /// Stage: the local prefixes of now.
    fn sync_local_prefixes(&mut self) {
        match self.kernel.sync_local_prefixes() {
            Ok(counts) => self.state.agent.local_prefixes = counts,
            Err(e) => self.failed("local_prefixes", "could not update the local prefixes", &e),
        }
    }

    /// Stage, every [`NEIGHBOUR_REFRESH`]: the neighbour table and hardware offload.
    fn refresh_neighbours(&mut self) {
        if self
            .neighbours_read
            .is_some_and(|t| t.elapsed() < NEIGHBOUR_REFRESH)
        {
            return;
        }
        self.neighbours_read = Some(Instant::now());
        self.state.agent.hardware_offload = self.kernel.hardware_offload();
        match self.kernel.lan_neighbours() {
            Ok(n) => self.state.naming.devices.set_neighbours(&n),
            Err(e) => tracing::debug!("neighbour table: {e}"),
        }
    }

    /// Stage: read the counter maps and settle them into the ledger. A failed read is counted
    /// and the last good totals stay.
    fn read_and_settle(&mut self, now: SystemTime) {
        match self.kernel.read_counters() {
            Ok(Collected {
                reading,
                kernel,
                flow_entries,
                device_entries,
                ..
            }) => {
                self.state.settle(&reading, kernel, now);
                self.state.agent.flows = MapUsage {
                    entries: flow_entries,
                    capacity: self.config.flow_capacity.into(),
                };
                self.state.agent.devices = MapUsage {
                    entries: device_entries,
                    capacity: self.config.device_capacity.into(),
                };
            }
            Err(e) => self.failed("read_maps", "could not read the kernel maps", &e),
        }
    }

    /// A stage that failed: counted by its name, logged; the next poll tries again.
    fn failed(&self, stage: &str, what: &str, error: &dyn std::fmt::Display) {
        self.metrics.poll_errors.with_label_values(&[stage]).inc();
        tracing::warn!(error = %error, "{what}");
    }

    /// Stage: hand the state file's text to the writer when a write is due.
    fn save_if_due(&mut self) {
        if self.write_in_flight {
            return;
        }
        if let Some(text) = self.state.state_file_if_due(false) {
            self.write_in_flight = self.writer.send(WriteJob { text, done: None }).is_ok();
        }
    }

    /// Stage: the snapshot scrapes and the API read from now on.
    fn publish(&mut self, now: SystemTime) {
        let previous = self.published.latest();
        let snapshot: Snapshot = self.state.snapshot(&previous, now);
        drop(previous);
        self.published.publish(snapshot);
    }

    /// Applies decoded packets that are waiting, so a name sniffed before the maps are read
    /// labels the bytes read now.
    fn apply_pending(&mut self, sniffed: &Receiver<Sniffed>) {
        for batch in sniffed
            .try_iter()
            .take(crate::kernel::sniff_ring::QUEUED_BATCHES)
        {
            self.apply_sniffed(batch);
        }
    }

    /// Applies one batch of decoded packets.
    pub fn apply_sniffed(&mut self, batch: Sniffed) {
        for observation in batch.observations {
            self.state.naming.apply(observation, batch.at);
        }
    }

    /// Applies one message.
    pub fn handle(&mut self, message: Message) {
        match message {
            Message::Leases(read) => {
                for (index, read) in read {
                    self.state.naming.devices.apply_lease_read(index, read);
                }
            }
            Message::Reload(Reload::Accepted(config)) => {
                self.apply_config(&config);
                self.publish(SystemTime::now());
            }
            Message::Reload(Reload::Rejected) => {
                self.state.policy.reloaded(false);
                self.publish(SystemTime::now());
            }
            Message::Control(request) => self.answer(request),
            Message::Wrote(ok) => {
                self.write_in_flight = false;
                self.state.policy.wrote(ok);
            }
            Message::Databases(databases, failures) => {
                self.state.places.enricher.replace(databases);
                self.state.places.failures += failures;
            }
        }
    }

    /// A reloaded configuration's policy and device names, in force at once.
    fn apply_config(&mut self, config: &Config) {
        self.state.policy.set_config(config.policy.clone());
        self.state
            .policy
            .set_write_interval(config.state_write_interval);
        self.state.places.configure(&config.enrich);
        self.state
            .naming
            .devices
            .set_configured(config.devices.clone());
        self.state.policy.reloaded(true);
    }

    /// A `baseline` request: applied, written at once if it changed something, and published.
    fn answer(&mut self, ControlRequest { request, reply }: ControlRequest) {
        let State {
            policy,
            naming,
            ledger,
            ..
        } = &mut self.state;
        let (result, written) = match control::execute(policy, naming, ledger, &request) {
            Ok((text, true)) => {
                let written = self.state.state_file_if_due(true).and_then(|text| {
                    let (done, written) = crossbeam_channel::bounded(1);
                    let job = WriteJob {
                        text,
                        done: Some(done),
                    };
                    self.writer.send(job).ok().map(|()| written)
                });
                self.publish(SystemTime::now());
                (Ok(text), written)
            }
            Ok((text, false)) => (Ok(text), None),
            Err(e) => (Err(e), None),
        };
        let _ = reply.send(ControlReply { result, written });
    }

    /// The end: what changed since the last write goes to the writer, so a restart loses
    /// nothing learned; then the kernel side is dropped.
    fn stop(mut self, messages: &Receiver<Message>) {
        // Outcomes of writes already done, so the final text is taken after them.
        for message in messages.try_iter() {
            if let Message::Wrote(ok) = message {
                self.handle(Message::Wrote(ok));
            }
        }
        if let Some(text) = self.state.state_file_if_due(true) {
            let (done, written) = crossbeam_channel::bounded(1);
            let job = WriteJob {
                text,
                done: Some(done),
            };
            if self.writer.send(job).is_ok() && written.recv_timeout(FINAL_WRITE).is_err() {
                tracing::warn!("the state file was not written before the stop");
            }
        }
        let pinned = self.kernel.start() != Start::Unpinned;
        drop(self.kernel);
        if pinned {
            tracing::info!(
                "stopped; the pinned programs count on for the next agent (`egress-monitor detach` removes them)"
            );
        } else {
            tracing::info!("detached from the LAN interfaces");
        }
    }
}

#[cfg(test)]
#[path = "poller_tests.rs"]
mod tests;
