//! What the agent knows about each device besides its traffic: its name, group and addresses.
//!
//! A name comes, in order of precedence, from the configuration's `[devices]` table, from a
//! DHCP server's lease file, or from the hostname the device itself sent in a DHCP request the
//! kernel copied. Addresses come from lease files, the neighbour table and the packets the
//! kernel copied (a DNS answer's destination is the device's address). All of it is bounded:
//! a device cannot make the agent remember an unbounded number of addresses, and the number of
//! devices remembered from DHCP is capped.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::Path,
    time::SystemTime,
};

use crate::{
    config::{DeviceConfig, LeaseSource},
    kernel::neighbours::Neighbour,
    parsers::leases::{self, Lease},
    types::MacAddr,
};

/// Addresses remembered per device (a phone makes a new temporary IPv6 address every day).
const ADDRESSES_PER_DEVICE: usize = 32;
/// Devices remembered from DHCP requests alone.
const DHCP_DEVICES: usize = 4096;

/// Where a device's name comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameSource {
    Config,
    Lease,
    Dhcp,
}

impl NameSource {
    pub fn as_str(self) -> &'static str {
        match self {
            NameSource::Config => "config",
            NameSource::Lease => "lease",
            NameSource::Dhcp => "dhcp",
        }
    }
}

/// One lease file and what was last read from it.
#[derive(Debug)]
pub struct LeaseFile {
    pub source: LeaseSource,
    /// (modification time, size, inode) at the last read: a change means read again.
    stamp: Option<(i64, i64, u64, u64)>,
    leases: Vec<Lease>,
    /// Malformed lines skipped, over all reads.
    pub skipped_lines: u64,
    /// Reads that failed (missing file, no permission), over all attempts.
    pub read_errors: u64,
    /// Successful reads (parses).
    pub reads: u64,
}

/// The device registry.
#[derive(Debug, Default)]
pub struct Devices {
    configured: BTreeMap<MacAddr, DeviceConfig>,
    lease_files: Vec<LeaseFile>,
    /// Hostnames devices sent in DHCP requests.
    dhcp_hostnames: HashMap<MacAddr, String>,
    /// Addresses seen in copied packets, with when.
    seen_addresses: HashMap<MacAddr, BTreeMap<IpAddr, SystemTime>>,
    /// The neighbour table at the last refresh.
    neighbours: HashMap<MacAddr, BTreeSet<IpAddr>>,
}

impl Devices {
    pub fn new(configured: BTreeMap<MacAddr, DeviceConfig>, lease_sources: &[LeaseSource]) -> Self {
        Self {
            configured,
            lease_files: lease_sources
                .iter()
                .map(|source| LeaseFile {
                    source: source.clone(),
                    stamp: None,
                    leases: Vec::new(),
                    skipped_lines: 0,
                    read_errors: 0,
                    reads: 0,
                })
                .collect(),
            ..Self::default()
        }
    }

    /// Names and groups from a reloaded configuration.
    pub fn set_configured(&mut self, configured: BTreeMap<MacAddr, DeviceConfig>) {
        self.configured = configured;
    }

    /// Reads again every lease file that changed since the last read. A file that cannot be
    /// read keeps its last leases (a DHCP server rewriting it is not a reason to forget names).
    pub fn refresh_leases(&mut self) {
        for file in &mut self.lease_files {
            let path = file.source.path.clone();
            let stamp = match std::fs::metadata(&path) {
                Ok(m) => (m.mtime(), m.mtime_nsec(), m.ino(), m.len()),
                Err(e) => {
                    if file.stamp.is_some() || file.read_errors == 0 {
                        tracing::warn!(path = %path.display(), "lease file unreadable: {e}");
                    }
                    file.read_errors += 1;
                    file.stamp = None;
                    continue;
                }
            };
            if file.stamp == Some(stamp) {
                continue;
            }
            match read_leases(&path, file.source.format) {
                Ok(parsed) => {
                    file.skipped_lines += parsed.skipped.len() as u64;
                    for skipped in parsed.skipped.iter().take(3) {
                        tracing::warn!(
                            path = %path.display(),
                            line = skipped.line,
                            "skipped a malformed lease: {}",
                            skipped.reason
                        );
                    }
                    file.leases = parsed.leases;
                    file.reads += 1;
                    file.stamp = Some(stamp);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "lease file unreadable: {e}");
                    file.read_errors += 1;
                }
            }
        }
    }

    /// Replaces the neighbour table's view of addresses.
    pub fn set_neighbours(&mut self, entries: &[Neighbour]) {
        self.neighbours.clear();
        for n in entries {
            if n.mac.is_multicast() {
                continue;
            }
            let set = self.neighbours.entry(n.mac).or_default();
            if set.len() < ADDRESSES_PER_DEVICE {
                set.insert(n.addr);
            }
        }
    }

    /// A hostname the device sent in a DHCP request.
    pub fn observe_dhcp_hostname(&mut self, mac: MacAddr, hostname: &str) {
        if self.dhcp_hostnames.len() >= DHCP_DEVICES && !self.dhcp_hostnames.contains_key(&mac) {
            return;
        }
        self.dhcp_hostnames.insert(mac, hostname.to_owned());
    }

    /// An address the device used, seen in a copied packet.
    pub fn observe_address(&mut self, mac: MacAddr, addr: IpAddr, now: SystemTime) {
        if addr.is_unspecified() || addr.is_multicast() {
            return;
        }
        if self.seen_addresses.len() >= DHCP_DEVICES && !self.seen_addresses.contains_key(&mac) {
            return;
        }
        let seen = self.seen_addresses.entry(mac).or_default();
        seen.insert(addr, now);
        if seen.len() > ADDRESSES_PER_DEVICE {
            // Forget the address seen longest ago.
            if let Some(oldest) = seen.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a) {
                seen.remove(&oldest);
            }
        }
    }

    /// The device's name and where it comes from.
    pub fn name(&self, mac: MacAddr) -> Option<(&str, NameSource)> {
        if let Some(device) = self.configured.get(&mac) {
            return Some((device.name.as_str(), NameSource::Config));
        }
        if let Some(name) = self.lease_hostname(mac) {
            return Some((name, NameSource::Lease));
        }
        self.dhcp_hostnames
            .get(&mac)
            .map(|name| (name.as_str(), NameSource::Dhcp))
    }

    /// The group the configuration puts the device in.
    pub fn group(&self, mac: MacAddr) -> Option<&str> {
        self.configured.get(&mac)?.group.as_deref()
    }

    /// Every address known for the device, from leases, the neighbour table and packets.
    pub fn addresses(&self, mac: MacAddr) -> BTreeSet<IpAddr> {
        let mut all: BTreeSet<IpAddr> = self
            .lease_files
            .iter()
            .flat_map(|f| f.leases.iter())
            .filter(|lease| lease_mac(lease, &self.neighbours) == Some(mac))
            .filter_map(|lease| lease.addr)
            .collect();
        if let Some(n) = self.neighbours.get(&mac) {
            all.extend(n.iter().copied());
        }
        if let Some(seen) = self.seen_addresses.get(&mac) {
            all.extend(seen.keys().copied());
        }
        all
    }

    /// Every device the registry knows something about.
    pub fn known(&self) -> BTreeSet<MacAddr> {
        let mut all: BTreeSet<MacAddr> = self.configured.keys().copied().collect();
        all.extend(self.dhcp_hostnames.keys());
        all.extend(self.seen_addresses.keys());
        all.extend(self.neighbours.keys());
        for lease in self.lease_files.iter().flat_map(|f| f.leases.iter()) {
            all.extend(lease_mac(lease, &self.neighbours));
        }
        all
    }

    /// The lease files and their counters.
    pub fn lease_files(&self) -> &[LeaseFile] {
        &self.lease_files
    }

    /// The hostname the lease files give the device: the first file in configuration order
    /// that names it, and within a file the lease that expires last.
    fn lease_hostname(&self, mac: MacAddr) -> Option<&str> {
        self.lease_files.iter().find_map(|file| {
            file.leases
                .iter()
                .filter(|lease| lease_mac(lease, &self.neighbours) == Some(mac))
                .filter_map(|lease| Some((lease.hostname.as_deref()?, lease.expires)))
                .max_by_key(|(_, expires)| *expires)
                .map(|(name, _)| name)
        })
    }
}

/// The MAC a lease belongs to: its own, or for formats without one (odhcpd's hosts file) the
/// neighbour that holds its address.
fn lease_mac(lease: &Lease, neighbours: &HashMap<MacAddr, BTreeSet<IpAddr>>) -> Option<MacAddr> {
    if let Some(mac) = lease.mac {
        return Some(mac);
    }
    let addr = lease.addr?;
    neighbours
        .iter()
        .find(|(_, addrs)| addrs.contains(&addr))
        .map(|(mac, _)| *mac)
}

/// Lease files are small (one line per device); a file bigger than this is not a lease file.
const LEASE_FILE_MAX_BYTES: u64 = 16 * 1024 * 1024;

fn read_leases(path: &Path, format: crate::config::LeaseFormat) -> std::io::Result<leases::Leases> {
    use std::{io::Read, os::unix::fs::OpenOptionsExt as _};
    // O_NONBLOCK: opening a FIFO (or a device) would otherwise wait for a writer, and the
    // agent with it. The opened file must then be a regular one; a read of a regular file
    // ignores the flag.
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
    use std::{net::Ipv4Addr, path::PathBuf};

    use super::*;
    use crate::config::LeaseFormat;

    const PHONE: MacAddr = MacAddr([0, 0x16, 0x3e, 0, 0, 1]);
    const LAPTOP: MacAddr = MacAddr([0, 0x16, 0x3e, 0, 0, 2]);

    #[test]
    fn a_fifo_or_a_directory_is_an_error_not_a_hang() {
        let dir = std::env::temp_dir().join(format!("egress-devices-fifo-{}", std::process::id()));
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

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("egress-devices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn config_beats_lease_beats_dhcp_hostname() {
        let path = temp_file(
            "precedence.leases",
            "1900000000 00:16:3e:00:00:01 192.168.50.11 redmi-note *\n\
             1900000000 00:16:3e:00:00:02 192.168.50.12 laptop-lease *\n\
             this line is broken\n",
        );
        let mut configured = BTreeMap::new();
        configured.insert(
            LAPTOP,
            DeviceConfig {
                name: "work laptop".into(),
                group: Some("work".into()),
            },
        );
        let mut devices = Devices::new(
            configured,
            &[LeaseSource {
                format: LeaseFormat::Dnsmasq,
                path: path.clone(),
            }],
        );
        let stranger = MacAddr([0x02, 0, 0, 0, 0, 9]);
        devices.observe_dhcp_hostname(stranger, "android-1234");
        devices.observe_dhcp_hostname(PHONE, "phone-dhcp");
        devices.refresh_leases();
        assert_eq!(
            devices.name(LAPTOP),
            Some(("work laptop", NameSource::Config))
        );
        assert_eq!(devices.group(LAPTOP), Some("work"));
        assert_eq!(devices.name(PHONE), Some(("redmi-note", NameSource::Lease)));
        assert_eq!(
            devices.name(stranger),
            Some(("android-1234", NameSource::Dhcp))
        );
        assert_eq!(devices.lease_files()[0].skipped_lines, 1);
        assert!(
            devices
                .addresses(PHONE)
                .contains(&IpAddr::V4(Ipv4Addr::new(192, 168, 50, 11)))
        );
        // A changed file is read again; an unchanged one is not.
        devices.refresh_leases();
        assert_eq!(devices.lease_files()[0].reads, 1);
        std::fs::write(
            &path,
            "1900000000 00:16:3e:00:00:01 192.168.50.11 renamed *\n",
        )
        .unwrap();
        devices.refresh_leases();
        assert_eq!(devices.name(PHONE), Some(("renamed", NameSource::Lease)));
        // A vanished file keeps the last names.
        std::fs::remove_file(&path).unwrap();
        devices.refresh_leases();
        assert_eq!(devices.name(PHONE), Some(("renamed", NameSource::Lease)));
        assert_eq!(devices.lease_files()[0].read_errors, 1);
    }

    #[test]
    fn addresses_are_bounded_per_device() {
        let mut devices = Devices::default();
        for i in 0..100u32 {
            let addr = IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001, 0xdb8, 0x50, 0, 0, 0, 0, i as u16,
            ));
            devices.observe_address(
                PHONE,
                addr,
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(i)),
            );
        }
        let addrs = devices.addresses(PHONE);
        assert_eq!(addrs.len(), ADDRESSES_PER_DEVICE);
        // The most recent are kept.
        assert!(addrs.contains(&IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001, 0xdb8, 0x50, 0, 0, 0, 0, 99
        ))));
    }
}
