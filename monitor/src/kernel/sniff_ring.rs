//! The reader of the kernel's ring buffer of copied packets: it wakes when records arrive and
//! hands them to [`crate::naming::Naming`] under the state lock, in batches, so a burst of DNS
//! answers costs one lock per batch. Records the kernel could not write because the ring was
//! full are counted by the kernel (`sniff_drops`); bytes are counted whatever happens here.

use std::{
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};

use crate::runtime::state::Shared;

/// Records handled per lock: bounds how long a scrape may wait on a burst.
const BATCH: usize = 512;
/// How long one wait for records lasts before the stop flag is checked again.
const WAKE: Duration = Duration::from_millis(200);

/// Reads records until `stop` is set.
pub fn run(mut ring: RingBuf<MapData>, shared: Shared, stop: Arc<AtomicBool>) {
    let fd = ring.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        crate::runtime::fault::panic_if_requested("sniff");
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
        drain(&mut ring, &shared);
    }
}

/// Handles every record available now, a batch per lock.
pub fn drain(ring: &mut RingBuf<MapData>, shared: &Shared) {
    loop {
        let now = SystemTime::now();
        let mut state = shared.write().expect("state lock");
        let mut handled = 0;
        while handled < BATCH {
            let Some(record) = ring.next() else {
                return;
            };
            state.naming.handle(&record, now);
            handled += 1;
        }
    }
}
