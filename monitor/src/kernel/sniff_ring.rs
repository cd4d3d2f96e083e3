//! The reader of the kernel's ring buffer of copied packets: it wakes when records arrive,
//! decodes and parses them (see `naming::records`) and sends them to the state's owner, the
//! poller, in batches. When the poller falls behind, the channel fills, this thread waits, the
//! ring fills and the kernel counts what it could not copy (`sniff_drops`): bytes are counted
//! whatever happens here, only names may be missed.

use std::{
    os::fd::AsRawFd,
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use crossbeam_channel::{SendTimeoutError, Sender};

use crate::{
    naming::{Observation, records},
    runtime::{fault, shutdown::Shutdown},
};

/// Records per batch: one message, one wake-up of the poller.
const BATCH: usize = 512;
/// Batches waiting for the poller before this thread waits too.
pub const QUEUED_BATCHES: usize = 64;
/// How long one wait for records lasts before the shutdown token is looked at again.
const WAKE: Duration = Duration::from_millis(200);

/// Copied packets, decoded, with when they were read.
pub struct Sniffed {
    pub at: SystemTime,
    pub observations: Vec<Observation>,
}

/// Reads records until `shutdown`.
pub fn run(mut ring: RingBuf<MapData>, owner: Sender<Sniffed>, shutdown: Shutdown) {
    let fd = ring.as_raw_fd();
    while !shutdown.is_triggered() {
        fault::panic_if_requested("sniff");
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pollfd, 1, WAKE.as_millis() as libc::c_int) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::warn!("waiting on the sniff ring buffer: {e}");
                std::thread::sleep(WAKE);
            }
            continue;
        }
        if !drain(&mut ring, &owner, &shutdown) {
            return;
        }
    }
}

/// Sends every record available now, a batch at a time. False when the owner is gone.
fn drain(ring: &mut RingBuf<MapData>, owner: &Sender<Sniffed>, shutdown: &Shutdown) -> bool {
    loop {
        let mut observations = Vec::new();
        while observations.len() < BATCH {
            let Some(record) = ring.next() else { break };
            observations.push(records::decode(&record));
        }
        if observations.is_empty() {
            return true;
        }
        let mut batch = Sniffed {
            at: SystemTime::now(),
            observations,
        };
        loop {
            match owner.send_timeout(batch, WAKE) {
                Ok(()) => break,
                Err(SendTimeoutError::Disconnected(_)) => return false,
                Err(SendTimeoutError::Timeout(back)) => {
                    if shutdown.is_triggered() {
                        return true;
                    }
                    batch = back;
                }
            }
        }
    }
}
