//! The web configuration's watcher: a thread that looks at the file, and at the certificates,
//! keys and CAs it names, every interval, and reads them again when one changed (its inode,
//! size, modification or change time). A renewed certificate is served from the next
//! connection on; a broken file or certificate leaves the last good configuration in force.
//!
//! The reads happen on this thread: a file on a stalled mount blocks it, not the server.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::{Live, Reloads, load};
use crate::runtime::shutdown::Shutdown;

/// How often the files are looked at.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// What tells one version of a file from the next; `None` when it cannot be read.
type Stamp = Option<(u64, u64, u64, i64, i64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files.iter().map(|f| stamp(f)).collect()
}

/// The outcome of one look.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    Unchanged,
    Reloaded,
    /// The new version was refused, for this reason; the last good one stays.
    Refused(String),
}

/// Remembers what it last saw of the files.
pub struct Watcher {
    path: PathBuf,
    live: Live,
    reloads: Arc<Reloads>,
    seen: (Vec<PathBuf>, Vec<Stamp>),
}

impl Watcher {
    /// Starts from the files of the configuration in force, as they are now.
    pub fn new(path: PathBuf, live: Live, reloads: Arc<Reloads>) -> Self {
        let files = live.current().files.clone();
        let seen = (files.clone(), stamps(&files));
        Self {
            path,
            live,
            reloads,
            seen,
        }
    }

    /// Reads the file again if it or a file it names changed since the last look.
    pub fn check(&mut self) -> Checked {
        let files = self.live.current().files.clone();
        let now = stamps(&files);
        if (&files, &now) == (&self.seen.0, &self.seen.1) {
            return Checked::Unchanged;
        }
        self.seen = (files, now);
        let outcome = match load(&self.path) {
            Ok(config) => {
                if config.tls.is_some() != self.live.current().tls.is_some() {
                    Checked::Refused(format!(
                        "web configuration file {}: switching between TLS and plain HTTP needs a restart",
                        self.path.display()
                    ))
                } else {
                    // The new version's own files, as read now.
                    self.seen = (config.files.clone(), stamps(&config.files));
                    self.live.replace(config);
                    Checked::Reloaded
                }
            }
            Err(e) => Checked::Refused(e.to_string()),
        };
        match &outcome {
            Checked::Reloaded => {
                tracing::info!(path = %self.path.display(), "web configuration reloaded");
            }
            Checked::Refused(why) => {
                tracing::warn!("{why}; keeping the last good web configuration");
            }
            Checked::Unchanged => {}
        }
        self.reloads.count(outcome == Checked::Reloaded);
        outcome
    }
}

/// Looks every [`INTERVAL`] until `shutdown`.
pub fn run(mut watcher: Watcher, shutdown: Shutdown) {
    loop {
        crossbeam_channel::select! {
            recv(shutdown.channel()) -> _ => return,
            default(INTERVAL) => {}
        }
        watcher.check();
    }
}
