//! Reloading the configuration without a restart: on SIGHUP, or when the file changes (its
//! modification time, size or inode: editors replace files), the file watcher's thread reads
//! it again and hands the outcome to the poller ([`Reload`]). A valid file's policy and device
//! names take effect at once, counts untouched; an invalid one is rejected with its file, line
//! and reason, and the policy in force stays.

use std::{
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::SystemTime,
};

use crate::config::{Config, Overrides};

/// The outcome of reading the configuration again, for the poller to apply.
#[derive(Debug)]
pub enum Reload {
    Accepted(Box<Config>),
    /// The file did not load: the message is logged, the policy in force stays.
    Rejected,
}

/// What identifies a version of the file.
type Stamp = (Option<SystemTime>, u64, u64);

/// Watches the configuration file.
pub struct Reloader {
    path: Option<PathBuf>,
    overrides: Overrides,
    /// Set by the SIGHUP handler.
    requested: Arc<AtomicBool>,
    stamp: Option<Stamp>,
    current: Config,
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        overrides: Overrides,
        current: Config,
        requested: Arc<AtomicBool>,
    ) -> Self {
        let stamp = path.as_deref().and_then(stamp);
        Self {
            path,
            overrides,
            requested,
            stamp,
            current,
        }
    }

    /// Reloads if asked to or if the file changed since the last attempt; `None` when no
    /// reload was attempted.
    pub fn check(&mut self) -> Option<Reload> {
        let asked = self.requested.swap(false, Ordering::Relaxed);
        let Some(path) = self.path.clone() else {
            if asked {
                tracing::info!("SIGHUP: no configuration file to read again (no --config)");
            }
            return None;
        };
        let now = stamp(&path);
        if !asked && now == self.stamp {
            return None;
        }
        // A failed attempt is not retried until the file changes again or SIGHUP.
        self.stamp = now;
        match Config::load(Some(&path), &self.overrides) {
            Ok(config) => {
                let restart = needs_restart(&self.current, &config);
                if !restart.is_empty() {
                    tracing::warn!(
                        keys = restart.join(", "),
                        "configuration reloaded; these keys take effect at the next restart"
                    );
                }
                tracing::info!(
                    file = %path.display(),
                    devices = config.policy.devices.len(),
                    groups = config.policy.groups.len(),
                    default = config.policy.default.is_some(),
                    "configuration reloaded: the new policy is in force"
                );
                self.current = config.clone();
                Some(Reload::Accepted(Box::new(config)))
            }
            Err(e) => {
                tracing::error!(
                    "configuration reload rejected, the previous policy stays in force: {e}"
                );
                Some(Reload::Rejected)
            }
        }
    }
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok(), meta.len(), meta.ino()))
}

/// Keys whose new value the running agent cannot take: kernel maps, sockets, threads.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |key, same: bool| {
        if !same {
            keys.push(key);
        }
    };
    check("lan", old.lan == new.lan);
    check("listen", old.listen == new.listen);
    check("poll_interval", old.poll_interval == new.poll_interval);
    check("pin_dir", old.pin_dir == new.pin_dir);
    check("local_prefixes", old.local_prefixes == new.local_prefixes);
    check(
        "flow_map_entries",
        old.flow_map_entries == new.flow_map_entries,
    );
    check(
        "device_map_entries",
        old.device_map_entries == new.device_map_entries,
    );
    check(
        "max_destinations_per_device",
        old.max_destinations_per_device == new.max_destinations_per_device,
    );
    check("attach", old.attach == new.attach);
    check(
        "destination_label",
        old.destination_label == new.destination_label,
    );
    check(
        "sniff_ring_bytes",
        old.sniff_ring_bytes == new.sniff_ring_bytes,
    );
    check("names", old.names == new.names);
    check("leases", old.leases == new.leases);
    check("state_dir", old.state_dir == new.state_dir);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_reloaded_and_a_bad_one_rejected() {
        let dir = std::env::temp_dir().join(format!("egress-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        let base = "lan = [\"br-lan\"]\n[devices]\n\"02:00:00:00:00:05\" = \"camera\"\n";
        std::fs::write(&path, base).unwrap();
        let config = Config::load(Some(&path), &Overrides::default()).unwrap();
        let hup = Arc::new(AtomicBool::new(false));
        let mut reloader = Reloader::new(
            Some(path.clone()),
            Overrides::default(),
            config,
            hup.clone(),
        );
        assert!(reloader.check().is_none(), "nothing changed");

        let policy = format!("{base}[policy.devices.camera]\nallow = [\"vendor.example\"]\n");
        std::fs::write(&path, &policy).unwrap();
        match reloader.check() {
            Some(Reload::Accepted(config)) => assert_eq!(config.policy.devices.len(), 1),
            other => panic!("{other:?}"),
        }
        // A typo: rejected, and no retry until something changes.
        std::fs::write(&path, format!("{policy}deny = [\"*.x\"]\n")).unwrap();
        assert!(matches!(reloader.check(), Some(Reload::Rejected)));
        assert!(reloader.check().is_none());
        // SIGHUP tries again even if the file did not change.
        hup.store(true, Ordering::Relaxed);
        assert!(matches!(reloader.check(), Some(Reload::Rejected)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_that_need_a_restart_are_named() {
        let a = Config::from_toml_str("lan = [\"br-lan\"]", None, &Overrides::default()).unwrap();
        let b = Config::from_toml_str(
            "lan = [\"br-lan\", \"wlan0\"]\npoll_interval = \"2s\"\n[policy.default]\nlearn = \"1d\"\n",
            None,
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(needs_restart(&a, &b), ["lan", "poll_interval"]);
    }
}
