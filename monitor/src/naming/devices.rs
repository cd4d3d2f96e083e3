//! What the agent knows about each device besides its traffic: its name, group and addresses.
//!
//! A name comes, in order of precedence, from the configuration's `[devices]` table, from a
//! DHCP server's lease file, or from the hostname the device itself sent in a DHCP request the
//! kernel copied. Addresses come from lease files, the neighbour table and the packets the
//! kernel copied (a DNS answer's destination is the device's address). All of it is bounded:
//! a device cannot make the agent remember an unbounded number of addresses, and the number of
//! devices remembered from DHCP is capped.
//!
//! The registry does no I/O: lease files are read and parsed elsewhere (see
//! [`super::lease_files`]) and their results applied here. The leases are indexed by MAC when
//! applied, so a name or an address is one lookup however many leases there are.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::SystemTime,
};

use super::lease_files::LeaseRead;
use crate::{
    config::{DeviceConfig, LeaseSource},
    kernel::neighbours::Neighbour,
    parsers::leases::Lease,
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

/// One lease file, what was last read from it, and its counters.
#[derive(Clone, Debug)]
pub struct LeaseFile {
    pub source: LeaseSource,
    leases: Vec<Lease>,
    /// Malformed lines skipped, over all reads.
    pub skipped_lines: u64,
    /// Reads that failed (missing file, no permission), over all attempts.
    pub read_errors: u64,
    /// Successful reads (parses).
    pub reads: u64,
}

/// What the lease files say of one MAC.
#[derive(Debug, Default)]
struct LeasedDevice {
    /// The hostname: the first file in configuration order that names it, and within a file
    /// the lease that expires last (with its expiry, to compare within the file).
    hostname: Option<(usize, Option<SystemTime>, String)>,
    addresses: BTreeSet<IpAddr>,
}

/// The device registry.
#[derive(Debug, Default)]
pub struct Devices {
    configured: BTreeMap<MacAddr, DeviceConfig>,
    lease_files: Vec<LeaseFile>,
    /// The leases of every file by MAC; rebuilt when a file or the neighbour table changes.
    leased: HashMap<MacAddr, LeasedDevice>,
    /// Hostnames devices sent in DHCP requests.
    dhcp_hostnames: HashMap<MacAddr, String>,
    /// Addresses seen in copied packets, with when.
    seen_addresses: HashMap<MacAddr, BTreeMap<IpAddr, SystemTime>>,
    /// The neighbour table at the last refresh.
    neighbours: HashMap<MacAddr, BTreeSet<IpAddr>>,
    /// Bumped by every change of a name, group, address or the set of devices.
    generation: u64,
}

impl Devices {
    pub fn new(configured: BTreeMap<MacAddr, DeviceConfig>, lease_sources: &[LeaseSource]) -> Self {
        Self {
            configured,
            lease_files: lease_sources
                .iter()
                .map(|source| LeaseFile {
                    source: source.clone(),
                    leases: Vec::new(),
                    skipped_lines: 0,
                    read_errors: 0,
                    reads: 0,
                })
                .collect(),
            ..Self::default()
        }
    }

    /// Moves whenever anything the registry shows changed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Names and groups from a reloaded configuration.
    pub fn set_configured(&mut self, configured: BTreeMap<MacAddr, DeviceConfig>) {
        self.configured = configured;
        self.generation += 1;
    }

    /// The outcome of reading lease file `index` (in configuration order). A file that cannot
    /// be read keeps its last leases: a DHCP server rewriting it is not a reason to forget.
    pub fn apply_lease_read(&mut self, index: usize, read: LeaseRead) {
        let Some(file) = self.lease_files.get_mut(index) else {
            return;
        };
        match read {
            LeaseRead::Read(parsed) => {
                file.skipped_lines += parsed.skipped.len() as u64;
                file.leases = parsed.leases;
                file.reads += 1;
                self.index_leases();
            }
            LeaseRead::Failed => file.read_errors += 1,
        }
        self.generation += 1;
    }

    /// Replaces the neighbour table's view of addresses.
    pub fn set_neighbours(&mut self, entries: &[Neighbour]) {
        let mut neighbours: HashMap<MacAddr, BTreeSet<IpAddr>> = HashMap::new();
        for n in entries {
            if n.mac.is_multicast() {
                continue;
            }
            let set = neighbours.entry(n.mac).or_default();
            if set.len() < ADDRESSES_PER_DEVICE {
                set.insert(n.addr);
            }
        }
        if neighbours != self.neighbours {
            self.neighbours = neighbours;
            // Leases without a MAC belong to the neighbour that holds their address.
            self.index_leases();
            self.generation += 1;
        }
    }

    /// A hostname the device sent in a DHCP request.
    pub fn observe_dhcp_hostname(&mut self, mac: MacAddr, hostname: &str) {
        if self.dhcp_hostnames.len() >= DHCP_DEVICES && !self.dhcp_hostnames.contains_key(&mac) {
            return;
        }
        if self.dhcp_hostnames.get(&mac).map(String::as_str) != Some(hostname) {
            self.dhcp_hostnames.insert(mac, hostname.to_owned());
            self.generation += 1;
        }
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
        if seen.insert(addr, now).is_none() {
            self.generation += 1;
        }
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
        if let Some((_, _, name)) = self.leased.get(&mac).and_then(|l| l.hostname.as_ref()) {
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
        let mut all = self
            .leased
            .get(&mac)
            .map(|l| l.addresses.clone())
            .unwrap_or_default();
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
        all.extend(self.leased.keys());
        all
    }

    /// The lease files and their counters.
    pub fn lease_files(&self) -> &[LeaseFile] {
        &self.lease_files
    }

    /// Rebuilds [`Devices::leased`] from the files and the neighbour table: one pass over the
    /// leases, where looking each device up in every lease made a scrape quadratic.
    fn index_leases(&mut self) {
        let by_addr: HashMap<IpAddr, MacAddr> = self
            .neighbours
            .iter()
            .flat_map(|(mac, addrs)| addrs.iter().map(move |a| (*a, *mac)))
            .collect();
        let mut leased: HashMap<MacAddr, LeasedDevice> = HashMap::new();
        for (index, file) in self.lease_files.iter().enumerate() {
            for lease in &file.leases {
                let Some(mac) = lease_mac(lease, &by_addr) else {
                    continue;
                };
                let device = leased.entry(mac).or_default();
                device.addresses.extend(lease.addr);
                let Some(hostname) = &lease.hostname else {
                    continue;
                };
                let better = match &device.hostname {
                    None => true,
                    // An earlier file wins; within a file, the lease that expires last.
                    Some((i, expires, _)) => *i == index && lease.expires >= *expires,
                };
                if better {
                    device.hostname = Some((index, lease.expires, hostname.clone()));
                }
            }
        }
        self.leased = leased;
    }
}

/// The MAC a lease belongs to: its own, or for formats without one (odhcpd's hosts file) the
/// neighbour that holds its address.
fn lease_mac(lease: &Lease, neighbours_by_addr: &HashMap<IpAddr, MacAddr>) -> Option<MacAddr> {
    if let Some(mac) = lease.mac {
        return Some(mac);
    }
    neighbours_by_addr.get(&lease.addr?).copied()
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, path::PathBuf};

    use super::*;
    use crate::{config::LeaseFormat, naming::lease_files::LeaseReader};

    /// What the file watcher does each round: look at the files, apply what changed.
    fn refresh(devices: &mut Devices, reader: &mut LeaseReader) {
        for (index, read) in reader.check() {
            devices.apply_lease_read(index, read);
        }
    }

    const PHONE: MacAddr = MacAddr([0, 0x16, 0x3e, 0, 0, 1]);
    const LAPTOP: MacAddr = MacAddr([0, 0x16, 0x3e, 0, 0, 2]);

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
        let sources = [LeaseSource {
            format: LeaseFormat::Dnsmasq,
            path: path.clone(),
        }];
        let mut devices = Devices::new(configured, &sources);
        let mut reader = LeaseReader::new(&sources);
        let stranger = MacAddr([0x02, 0, 0, 0, 0, 9]);
        devices.observe_dhcp_hostname(stranger, "android-1234");
        devices.observe_dhcp_hostname(PHONE, "phone-dhcp");
        refresh(&mut devices, &mut reader);
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
        refresh(&mut devices, &mut reader);
        assert_eq!(devices.lease_files()[0].reads, 1);
        std::fs::write(
            &path,
            "1900000000 00:16:3e:00:00:01 192.168.50.11 renamed *\n",
        )
        .unwrap();
        refresh(&mut devices, &mut reader);
        assert_eq!(devices.name(PHONE), Some(("renamed", NameSource::Lease)));
        // A vanished file keeps the last names.
        std::fs::remove_file(&path).unwrap();
        refresh(&mut devices, &mut reader);
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

    fn lease(mac: Option<MacAddr>, addr: [u8; 4], hostname: &str, expires: u64) -> Lease {
        Lease {
            mac,
            addr: Some(IpAddr::V4(Ipv4Addr::from(addr))),
            hostname: Some(hostname.to_owned()),
            expires: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(expires)),
            active: true,
        }
    }

    fn read(leases: Vec<Lease>) -> LeaseRead {
        LeaseRead::Read(crate::parsers::leases::Leases {
            leases,
            skipped: Vec::new(),
        })
    }

    #[test]
    fn leases_are_indexed_by_mac_with_their_precedence_and_a_neighbour_for_mac_less_ones() {
        let sources: Vec<LeaseSource> = ["a", "b"]
            .iter()
            .map(|name| LeaseSource {
                format: LeaseFormat::Dnsmasq,
                path: PathBuf::from(format!("/nonexistent/{name}")),
            })
            .collect();
        let mut devices = Devices::new(BTreeMap::new(), &sources);
        let start = devices.generation();
        // Within a file, the lease that expires last; across files, the first file.
        devices.apply_lease_read(
            0,
            read(vec![
                lease(Some(PHONE), [192, 168, 1, 10], "old-name", 100),
                lease(Some(PHONE), [192, 168, 1, 11], "new-name", 200),
            ]),
        );
        devices.apply_lease_read(
            1,
            read(vec![lease(
                Some(PHONE),
                [192, 168, 1, 12],
                "other-file",
                300,
            )]),
        );
        assert_eq!(devices.name(PHONE), Some(("new-name", NameSource::Lease)));
        assert_eq!(devices.addresses(PHONE).len(), 3);
        assert!(devices.generation() > start);
        // odhcpd's hosts file has no MAC: the neighbour holding the address owns the lease.
        devices.apply_lease_read(
            1,
            read(vec![lease(None, [192, 168, 1, 20], "laptop-v6", 300)]),
        );
        assert_eq!(devices.name(LAPTOP), None);
        let before = devices.generation();
        let neighbour = Neighbour {
            ifindex: 3,
            mac: LAPTOP,
            addr: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)),
            reachable: true,
        };
        devices.set_neighbours(std::slice::from_ref(&neighbour));
        assert_eq!(devices.name(LAPTOP), Some(("laptop-v6", NameSource::Lease)));
        assert!(devices.known().contains(&LAPTOP));
        assert!(devices.generation() > before);
        // The same table again changes nothing.
        let same = devices.generation();
        devices.set_neighbours(&[neighbour]);
        assert_eq!(devices.generation(), same);
        // A failed read keeps the names and counts the failure.
        devices.apply_lease_read(0, LeaseRead::Failed);
        assert_eq!(devices.name(PHONE), Some(("new-name", NameSource::Lease)));
        assert_eq!(devices.lease_files()[0].read_errors, 1);
    }
}
