//! The file watcher: the one thread that reads files while the agent runs (the DHCP lease
//! files and the configuration file), because a read can block (a stalled network mount, a
//! FIFO, a huge file) and nothing else may wait for it. What it finds goes to the poller as
//! messages; if it hangs, the agent goes on with the names it has, and a stop does not wait
//! for it.

use std::time::Duration;

use crossbeam_channel::Sender;

use super::{
    fault,
    poller::Message,
    reload::{Reload, Reloader},
    shutdown::Shutdown,
};
use crate::{enrich::DatabaseFiles, naming::lease_files::LeaseReader};

/// Looks at the files every `interval` until `shutdown`.
pub fn run(
    mut leases: LeaseReader,
    mut databases: DatabaseFiles,
    mut reloader: Reloader,
    interval: Duration,
    poller: Sender<Message>,
    shutdown: Shutdown,
) {
    loop {
        fault::panic_if_requested("files");
        fault::stall_if_requested("files");
        let read = leases.check();
        if !read.is_empty() && poller.send(Message::Leases(read)).is_err() {
            return;
        }
        if let Some((open, failures)) = check_databases(&mut databases)
            && poller.send(Message::Databases(open, failures)).is_err()
        {
            return;
        }
        if let Some(reload) = reloader.check() {
            // Other database files: opened on the next turn, before the poller counts more.
            if let Reload::Accepted(config) = &reload
                && *databases.config() != config.enrich
            {
                databases = DatabaseFiles::new(&config.enrich);
            }
            if poller.send(Message::Reload(reload)).is_err() {
                return;
            }
        }
        crossbeam_channel::select! {
            recv(shutdown.channel()) -> _ => return,
            default(interval) => {}
        }
    }
}

/// Opens the databases that appeared and re-opens those replaced; logs what opened and each
/// new failure once. Returns the databases to hand the poller, and the new failures, when
/// anything happened.
fn check_databases(files: &mut DatabaseFiles) -> Option<(crate::enrich::Databases, u64)> {
    let check = files.check();
    for db in &check.opened {
        tracing::info!(
            path = %db.path().display(),
            database_type = db.database_type(),
            bytes = db.memory_bytes(),
            "MMDB database opened"
        );
    }
    for error in &check.errors {
        tracing::warn!("{error}; counting goes on, its addresses are unknown");
    }
    let failures = check.errors.len() as u64;
    (check.changed || failures > 0).then(|| (files.databases(), failures))
}
