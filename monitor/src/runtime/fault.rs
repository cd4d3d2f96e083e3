//! Test hooks. `EGRESS_MONITOR_TEST_PANIC=<thread>` makes that thread (`poller`, `sniff`,
//! `files`, `control`) panic at its first turn, so the integration tests can prove that a
//! dying thread stops the agent with a non-zero exit instead of leaving it serving frozen
//! numbers. `EGRESS_MONITOR_TEST_STALL=files` makes the file watcher hang as in a read from a
//! stalled network mount, to prove that nothing else waits for it. Unset, each costs one
//! environment lookup per thread.

use std::{sync::OnceLock, time::Duration};

/// The variable that names the thread to panic.
pub const TEST_PANIC_VAR: &str = "EGRESS_MONITOR_TEST_PANIC";
/// The variable that names the thread to stall.
pub const TEST_STALL_VAR: &str = "EGRESS_MONITOR_TEST_STALL";

fn requested(var: &'static str, cell: &'static OnceLock<Option<String>>) -> Option<&'static str> {
    cell.get_or_init(|| std::env::var(var).ok()).as_deref()
}

/// Panics if [`TEST_PANIC_VAR`] names `thread`.
pub fn panic_if_requested(thread: &str) {
    static REQUESTED: OnceLock<Option<String>> = OnceLock::new();
    if requested(TEST_PANIC_VAR, &REQUESTED) == Some(thread) {
        panic!("{TEST_PANIC_VAR}={thread}: a panic asked for by a test");
    }
}

/// Never returns if [`TEST_STALL_VAR`] names `thread`: like a read that never completes, it
/// does not look at the shutdown token either.
pub fn stall_if_requested(thread: &str) {
    static REQUESTED: OnceLock<Option<String>> = OnceLock::new();
    if requested(TEST_STALL_VAR, &REQUESTED) == Some(thread) {
        tracing::warn!("{TEST_STALL_VAR}={thread}: stalling as a test asked");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
