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

/// Reads and parses one lease file.
pub fn read_leases(path: &Path, format: LeaseFormat) -> std::io::Result<Leases> {
    use std::{io::Read, os::unix::fs::OpenOptionsExt as _};
    // O_NONBLOCK: opening a FIFO (or a device) would otherwise wait for a writer. The opened
    // file must then be a regular one; a read of a regular file ignores the flag.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", describe_file_type(kind)),
        ));
    }
    let mut text = String::new();
    file.take(LEASE_FILE_MAX_BYTES).read_to_string(&mut text)?;
    Ok(leases::parse(format, &text))
}

/// What a non-regular file is, for an error message.
fn describe_file_type(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
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
