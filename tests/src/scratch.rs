//! A lab's temporary directory: dnsmasq's configuration, log and lease file, the udhcpc script,
//! the throwaway TLS certificate.
//!
//! It is named like the lab's namespaces (`$TMPDIR/egl-{pid}-{n}`), so that leftovers of a
//! killed run are recognised and removed with its namespaces ([`crate::cleanup_stale`]).

use std::path::{Path, PathBuf};

use crate::netns::PREFIX;

/// A directory removed, with everything in it, when dropped.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `$TMPDIR/{lab_id}`; panics if it exists already (another lab owns it) or cannot
    /// be made.
    pub(crate) fn create(lab_id: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(lab_id);
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create the lab directory {}: {e}", path.display()));
        ScratchDir { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    /// Best effort, never panics: it also runs while a failed test unwinds.
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("egress-lab: removing {}: {e}", self.path.display());
        }
    }
}

/// Removes the lab directories in `$TMPDIR` whose owner `stale(pid)` says is gone; returns their
/// paths. Only names of the exact form `egl-{pid}-{n}` are touched.
pub(crate) fn remove_stale(stale: impl Fn(u32) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(lab_dir_owner) else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && stale(pid) {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => removed.push(entry.path()),
                Err(e) => eprintln!("egress-lab: removing {}: {e}", entry.path().display()),
            }
        }
    }
    removed
}

/// The owner pid of a lab directory name `egl-{pid}-{n}`, if `name` is exactly that.
fn lab_dir_owner(name: &str) -> Option<u32> {
    let (pid, n) = name.strip_prefix(PREFIX)?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n)).then(|| pid.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_lab_directories_only() {
        assert_eq!(lab_dir_owner("egl-4242-7"), Some(4242));
        assert_eq!(lab_dir_owner("egl-4242-7-router"), None);
        assert_eq!(lab_dir_owner("egl-4242-"), None);
        assert_eq!(lab_dir_owner("egl--7"), None);
        assert_eq!(lab_dir_owner("other-4242-7"), None);
    }

    #[test]
    fn created_and_removed() {
        let id = format!("egl-{}-unit-test", std::process::id());
        let dir = ScratchDir::create(&id);
        std::fs::write(dir.path().join("f"), "x").expect("write into the scratch dir");
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists());
    }
}
