//! The state directory's lock: the running agent holds it for its whole life (one agent per
//! directory); the `baseline` command takes it to edit the state file when no agent runs.

use std::{fs::File, io, path::Path};

use super::state_file as store;

/// Held by the running agent for its whole life.
pub const LOCK_FILE: &str = "lock";

/// Takes the state directory's lock without waiting: `None` if another process (the agent)
/// holds it. The lock lasts as long as the returned file is open.
pub fn try_lock(dir: &Path) -> io::Result<Option<File>> {
    use std::os::fd::AsRawFd as _;
    store::create_dir(dir)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(file));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(err)
    }
}
