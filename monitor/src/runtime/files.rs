//! The file watcher: the one thread that reads files while the agent runs (the DHCP lease
//! files and the configuration file), because a read can block (a stalled network mount, a
//! FIFO, a huge file) and nothing else may wait for it. What it finds goes to the poller as
//! messages; if it hangs, the agent goes on with the names it has, and a stop does not wait
//! for it.

use std::time::Duration;

use crossbeam_channel::Sender;

use super::{fault, poller::Message, reload::Reloader, shutdown::Shutdown};
use crate::naming::lease_files::LeaseReader;

/// Looks at the files every `interval` until `shutdown`.
pub fn run(
    mut leases: LeaseReader,
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
        if let Some(reload) = reloader.check()
            && poller.send(Message::Reload(reload)).is_err()
        {
            return;
        }
        crossbeam_channel::select! {
            recv(shutdown.channel()) -> _ => return,
            default(interval) => {}
        }
    }
}
