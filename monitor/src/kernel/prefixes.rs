//! What is "local", and so never a destination: the LAN interfaces' prefixes, every address of
//! the router itself, configured extra prefixes, and the ranges that never leave a link
//! (multicast, broadcast, link-local, unspecified, loopback).
//!
//! The set is recomputed from the interfaces at every poll (a WAN address from DHCP or PPPoE
//! changes) and written to the kernel's LPM tries as a diff. The kernel consults the tries only
//! for a packet of a flow it does not know yet, so when a prefix becomes local the flows to it
//! are removed from the flow map ([`forget_flows_to`]): their next packet is then found local.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{LpmTrie, MapData, MapError, lpm_trie::Key};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::kernel::counters::{Flows, remote_address};

/// Ranges that are local on every network.
pub fn builtin() -> Vec<IpNet> {
    const V4: [(Ipv4Addr, u8); 5] = [
        (Ipv4Addr::new(0, 0, 0, 0), 8), // "this network", DHCP's source address
        (Ipv4Addr::new(127, 0, 0, 0), 8), // loopback
        (Ipv4Addr::new(169, 254, 0, 0), 16), // link-local
        (Ipv4Addr::new(224, 0, 0, 0), 4), // multicast
        (Ipv4Addr::new(255, 255, 255, 255), 32), // limited broadcast
    ];
    const V6: [(Ipv6Addr, u8); 4] = [
        (Ipv6Addr::UNSPECIFIED, 128),
        (Ipv6Addr::LOCALHOST, 128),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),  // multicast
    ];
    V4.iter()
        .map(|&(a, l)| IpNet::V4(Ipv4Net::new(a, l).expect("valid builtin prefix")))
        .chain(
            V6.iter()
                .map(|&(a, l)| IpNet::V6(Ipv6Net::new(a, l).expect("valid builtin prefix"))),
        )
        .collect()
}

/// One address of one interface, as `getifaddrs` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub interface: String,
    pub address: IpAddr,
    pub prefix_len: u8,
}

/// The local set: for LAN interfaces their whole prefixes, for every other interface its own
/// addresses only (the WAN's neighbours are out in the world), plus `extra` and [`builtin`].
pub fn local_set(addrs: &[InterfaceAddress], lan: &[String], extra: &[IpNet]) -> BTreeSet<IpNet> {
    let mut set: BTreeSet<IpNet> = builtin().into_iter().collect();
    set.extend(extra.iter().map(IpNet::trunc));
    for a in addrs {
        let host_len = if a.address.is_ipv4() { 32 } else { 128 };
        set.insert(IpNet::new(a.address, host_len).expect("host prefix length is valid"));
        if lan.contains(&a.interface)
            && let Ok(net) = IpNet::new(a.address, a.prefix_len)
        {
            set.insert(net.trunc());
        }
    }
    set
}

/// The local set of now: [`local_set`] over this namespace's interface addresses.
pub fn wanted(lan: &[String], extra: &[IpNet]) -> std::io::Result<BTreeSet<IpNet>> {
    Ok(local_set(&interface_addresses()?, lan, extra))
}

/// Every IP address configured on this namespace's interfaces.
pub fn interface_addresses() -> std::io::Result<Vec<InterfaceAddress>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let (Some(address), Some(netmask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let (address, prefix_len) = if let (Some(a), Some(m)) =
            (address.as_sockaddr_in(), netmask.as_sockaddr_in())
        {
            (IpAddr::V4(a.ip()), m.ip().to_bits().count_ones() as u8)
        } else if let (Some(a), Some(m)) = (address.as_sockaddr_in6(), netmask.as_sockaddr_in6()) {
            (IpAddr::V6(a.ip()), m.ip().to_bits().count_ones() as u8)
        } else {
            continue;
        };
        out.push(InterfaceAddress {
            interface: ifa.interface_name,
            address,
            prefix_len,
        });
    }
    Ok(out)
}

/// Keeps the kernel's two LPM tries equal to a wanted set, writing only the difference.
pub struct LocalPrefixMaps {
    v4: LpmTrie<MapData, [u8; 4], u8>,
    v6: LpmTrie<MapData, [u8; 16], u8>,
    written: BTreeSet<IpNet>,
}

impl LocalPrefixMaps {
    pub fn new(v4: LpmTrie<MapData, [u8; 4], u8>, v6: LpmTrie<MapData, [u8; 16], u8>) -> Self {
        Self {
            v4,
            v6,
            written: BTreeSet::new(),
        }
    }

    /// Writes `wanted`; returns the prefixes that were not local before (empty when nothing
    /// was added; see [`Self::counts`] for the size).
    pub fn sync(&mut self, wanted: &BTreeSet<IpNet>) -> Result<Vec<IpNet>, MapError> {
        if *wanted == self.written {
            return Ok(Vec::new());
        }
        let added: Vec<IpNet> = wanted.difference(&self.written).copied().collect();
        // Insert before removing, so that no packet sees a moment where an address that stays
        // local is missing.
        for net in &added {
            match net {
                IpNet::V4(n) => {
                    self.v4
                        .insert(&Key::new(n.prefix_len().into(), n.addr().octets()), 1, 0)?
                }
                IpNet::V6(n) => {
                    self.v6
                        .insert(&Key::new(n.prefix_len().into(), n.addr().octets()), 1, 0)?
                }
            }
        }
        for net in self.written.difference(wanted) {
            let removed = match net {
                IpNet::V4(n) => self
                    .v4
                    .remove(&Key::new(n.prefix_len().into(), n.addr().octets())),
                IpNet::V6(n) => self
                    .v6
                    .remove(&Key::new(n.prefix_len().into(), n.addr().octets())),
            };
            match removed {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        self.written = wanted.clone();
        Ok(added)
    }

    /// Number of prefixes written, per family.
    pub fn counts(&self) -> (usize, usize) {
        let v4 = self
            .written
            .iter()
            .filter(|n| matches!(n, IpNet::V4(_)))
            .count();
        (v4, self.written.len() - v4)
    }
}

/// Removes from the flow map every flow whose remote address lies in `nets` (prefixes that just
/// became local); returns how many. What such a flow counted stays exported, and what it
/// counted since the last read is in its device's total and so shows as unattributed: the
/// sums stay exact. The walk costs a syscall per key, but only when a prefix is added.
pub fn forget_flows_to(flows: &mut Flows, nets: &[IpNet]) -> Result<usize, MapError> {
    if nets.is_empty() {
        return Ok(0);
    }
    let mut doomed = Vec::new();
    for key in flows.keys() {
        let key = key?;
        if remote_address(&key).is_some_and(|addr| covered(addr, nets)) {
            doomed.push(key);
        }
    }
    for key in &doomed {
        match flows.remove(key) {
            // Evicted by the LRU in the meantime: gone either way.
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(doomed.len())
}

/// Whether `addr` lies in one of `nets`.
fn covered(addr: IpAddr, nets: &[IpNet]) -> bool {
    nets.iter().any(|net| net.contains(&addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(interface: &str, address: &str, prefix_len: u8) -> InterfaceAddress {
        InterfaceAddress {
            interface: interface.into(),
            address: address.parse().unwrap(),
            prefix_len,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn lan_prefixes_wan_hosts_builtins_and_extras() {
        let addrs = [
            addr("br-lan", "192.168.50.1", 24),
            addr("br-lan", "2001:db8:50::1", 64),
            addr("wan0", "198.51.100.1", 24),
            addr("wan0", "2001:db8:ff::1", 64),
            addr("lo", "127.0.0.1", 8),
        ];
        let set = local_set(&addrs, &["br-lan".into()], &[net("10.8.0.5/24")]);
        for wanted in [
            "192.168.50.0/24",
            "192.168.50.1/32",
            "2001:db8:50::/64",
            "198.51.100.1/32",
            "2001:db8:ff::1/128",
            "10.8.0.0/24",
            "224.0.0.0/4",
            "255.255.255.255/32",
            "169.254.0.0/16",
            "fe80::/10",
            "ff00::/8",
        ] {
            assert!(set.contains(&net(wanted)), "{wanted} missing from {set:?}");
        }
        // The WAN's own subnet is the world: only the router's address there is local.
        assert!(!set.contains(&net("198.51.100.0/24")));
        assert!(!set.contains(&net("2001:db8:ff::/64")));
    }

    #[test]
    fn flows_are_forgotten_only_inside_the_new_prefixes() {
        let nets = [net("192.168.60.0/24"), net("2001:db8:60::/48")];
        assert!(covered("192.168.60.7".parse().unwrap(), &nets));
        assert!(covered("2001:db8:60:1::9".parse().unwrap(), &nets));
        assert!(!covered("192.168.61.7".parse().unwrap(), &nets));
        assert!(!covered("2001:db8:61::9".parse().unwrap(), &nets));
        // An IPv4-mapped IPv6 address is not the IPv4 address: the kernel keys them apart.
        assert!(!covered("::ffff:192.168.60.7".parse().unwrap(), &nets));
        assert!(!covered("192.168.60.7".parse().unwrap(), &[]));
    }

    #[test]
    fn builtins_are_valid_and_distinct() {
        let b = builtin();
        let set: BTreeSet<_> = b.iter().collect();
        assert_eq!(set.len(), b.len());
    }
}
