//! A test hook: `EGRESS_MONITOR_TEST_PANIC=<thread>` makes that thread (`poller`, `sniff`) panic
//! at its first turn, so the integration tests can prove that a dying thread stops the agent
//! with a non-zero exit instead of leaving it serving frozen numbers. Unset, it costs one
//! environment lookup per thread.

use std::sync::OnceLock;

/// The variable that names the thread to panic.
pub const TEST_PANIC_VAR: &str = "EGRESS_MONITOR_TEST_PANIC";

/// Panics if [`TEST_PANIC_VAR`] names `thread`.
pub fn panic_if_requested(thread: &str) {
    static REQUESTED: OnceLock<Option<String>> = OnceLock::new();
    let requested = REQUESTED.get_or_init(|| std::env::var(TEST_PANIC_VAR).ok());
    if requested.as_deref() == Some(thread) {
        panic!("{TEST_PANIC_VAR}={thread}: a panic asked for by a test");
    }
}
