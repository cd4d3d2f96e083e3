//! Reading the DHCP servers' lease files: a stat each round, and a read and a parse when the
//! file changed. This is blocking file I/O, so it runs on the file watcher's thread, never
//! where the state is; the results go to [`super::devices::Devices::apply_lease_read`].

use std::{os::unix::fs::MetadataExt as _, path::Path};

use crate::{
    config::{LeaseFormat, LeaseSource},
    parsers::leases::{self, Leases},
};

/// Lease files are small (one line per device); a file bigger than this is not a lease file.
const LEASE_FILE_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// What one look at a lease file found. Errors are logged by the reader.
#[derive(Debug)]
pub enum LeaseRead {
    /// The file changed and was read.
    Read(Leases),
    /// It could not be looked at or read.
    Failed,
}

/// (modification time, its nanoseconds, inode, size): a change means read again.
type Stamp = (i64, i64, u64, u64);

/// The lease files and what was last seen of each.
#[derive(Debug)]
pub struct LeaseReader {
    files: Vec<(LeaseSource, Option<Stamp>, Failures)>,
}

/// Failures since the last good read: the first is logged, the rest only counted.
#[derive(Debug, Default)]
struct Failures(u64);

impl LeaseReader {
    pub fn new(sources: &[LeaseSource]) -> Self {
        Self {
            files: sources
                .iter()
                .map(|s| (s.clone(), None, Failures::default()))
                .collect(),
        }
    }

    /// Looks at every file: `(index, what happened)` for each that changed or failed.
    pub fn check(&mut self) -> Vec<(usize, LeaseRead)> {
        let mut found = Vec::new();
        for (index, (source, stamp, failures)) in self.files.iter_mut().enumerate() {
            let path = &source.path;
            let now = match std::fs::metadata(path) {
                Ok(m) => (m.mtime(), m.mtime_nsec(), m.ino(), m.len()),
                Err(e) => {
                    if stamp.is_some() || failures.0 == 0 {
                        tracing::warn!(path = %path.display(), "lease file unreadable: {e}");
                    }
                    failures.0 += 1;
                    *stamp = None;
                    found.push((index, LeaseRead::Failed));
                    continue;
                }
            };
            if *stamp == Some(now) {
                continue;
            }
            match read_leases(path, source.format) {
                Ok(parsed) => {
                    for skipped in parsed.skipped.iter().take(3) {
                        tracing::warn!(
                            path = %path.display(),
                            line = skipped.line,
                            "skipped a malformed lease: {}",
                            skipped.reason
                        );
                    }
                    *stamp = Some(now);
                    failures.0 = 0;
                    found.push((index, LeaseRead::Read(parsed)));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "lease file unreadable: {e}");
                    failures.0 += 1;
                    found.push((index, LeaseRead::Failed));
                }
            }
        }
        found
    }
}

/// Reads and parses one lease file: a regular file (a FIFO is refused without waiting on it)
/// of at most [`LEASE_FILE_MAX_BYTES`].
pub fn read_leases(path: &Path, format: LeaseFormat) -> std::io::Result<Leases> {
    let text = crate::regular_file::read_text(path, LEASE_FILE_MAX_BYTES)?;
    Ok(leases::parse(format, &text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_or_a_directory_is_an_error_not_a_hang() {
        let dir = std::env::temp_dir().join(format!("egress-lease-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("leases.fifo");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = read_leases(&fifo, LeaseFormat::Dnsmasq).unwrap_err();
        assert!(
            err.to_string().contains("not a regular file (a FIFO)"),
            "{err}"
        );
        let err = read_leases(&dir, LeaseFormat::Dnsmasq).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
