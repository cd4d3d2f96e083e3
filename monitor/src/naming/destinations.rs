//! Names of destinations, per device: which host name a device meant when it sent bytes to an
//! address.
//!
//! The binding is per device because two devices may reach one address (a CDN, a cloud load
//! balancer) under different names, and each one's traffic belongs to the name *it* asked for.
//! A binding comes from a DNS answer the device received (valid for the record's TTL plus a
//! grace period: devices keep using an address past its TTL) or from the server name in a TLS
//! ClientHello the device sent (valid for a fixed time). The most recent binding of an address
//! wins.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use crate::types::MacAddr;

/// Where a binding came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Dns,
    Tls,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Dns => "dns",
            Source::Tls => "tls",
        }
    }
}

/// One address's name for one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub name: String,
    pub source: Source,
    pub expires: SystemTime,
}

/// The bindings of every device, each bounded in number.
#[derive(Debug)]
pub struct DestinationNames {
    grace: Duration,
    tls_ttl: Duration,
    max_per_device: usize,
    devices: HashMap<MacAddr, HashMap<IpAddr, Binding>>,
}

impl DestinationNames {
    pub fn new(grace: Duration, tls_ttl: Duration, max_per_device: usize) -> Self {
        Self {
            grace,
            tls_ttl,
            max_per_device: max_per_device.max(1),
            devices: HashMap::new(),
        }
    }

    /// Binds `addr` to `name` for the device, from a DNS record with `ttl` seconds to live.
    pub fn bind_dns(&mut self, mac: MacAddr, addr: IpAddr, name: &str, ttl: u32, now: SystemTime) {
        let expires = now + Duration::from_secs(u64::from(ttl)) + self.grace;
        self.bind(mac, addr, name, Source::Dns, expires, now);
    }

    /// Binds `addr` to the server name the device sent it in a TLS ClientHello.
    pub fn bind_tls(&mut self, mac: MacAddr, addr: IpAddr, name: &str, now: SystemTime) {
        let expires = now + self.tls_ttl;
        self.bind(mac, addr, name, Source::Tls, expires, now);
    }

    fn bind(
        &mut self,
        mac: MacAddr,
        addr: IpAddr,
        name: &str,
        source: Source,
        expires: SystemTime,
        now: SystemTime,
    ) {
        let bindings = self.devices.entry(mac).or_default();
        if !bindings.contains_key(&addr) && bindings.len() >= self.max_per_device {
            // Full: first drop what has expired, then the binding closest to expiring.
            bindings.retain(|_, b| b.expires > now);
            if bindings.len() >= self.max_per_device
                && let Some(victim) = bindings
                    .iter()
                    .min_by_key(|(_, b)| b.expires)
                    .map(|(a, _)| *a)
            {
                bindings.remove(&victim);
            }
        }
        bindings.insert(
            addr,
            Binding {
                name: name.to_owned(),
                source,
                expires,
            },
        );
    }

    /// The name `addr` has for the device at `now`, if a binding is still valid.
    pub fn lookup(&self, mac: MacAddr, addr: IpAddr, now: SystemTime) -> Option<&Binding> {
        self.devices
            .get(&mac)?
            .get(&addr)
            .filter(|binding| binding.expires > now)
    }

    /// Forgets expired bindings and devices left without any.
    pub fn expire(&mut self, now: SystemTime) {
        self.devices.retain(|_, bindings| {
            bindings.retain(|_, b| b.expires > now);
            !bindings.is_empty()
        });
    }

    /// Bindings held, over all devices.
    pub fn len(&self) -> usize {
        self.devices.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const PHONE: MacAddr = MacAddr([0, 0x16, 0x3e, 0, 0, 1]);
    const CAMERA: MacAddr = MacAddr([0, 0x16, 0x3e, 0, 0, 3]);
    const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 30));

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn names() -> DestinationNames {
        DestinationNames::new(Duration::from_secs(10), Duration::from_secs(3600), 4)
    }

    fn name_at(n: &DestinationNames, mac: MacAddr, addr: IpAddr, secs: u64) -> Option<&str> {
        n.lookup(mac, addr, at(secs)).map(|b| b.name.as_str())
    }

    #[test]
    fn a_dns_name_lasts_its_ttl_plus_the_grace_period() {
        let mut n = names();
        n.bind_dns(PHONE, SERVER, "tracker.ads.example.co.uk", 60, at(0));
        assert_eq!(
            name_at(&n, PHONE, SERVER, 69),
            Some("tracker.ads.example.co.uk")
        );
        assert_eq!(name_at(&n, PHONE, SERVER, 70), None);
        n.expire(at(70));
        assert!(n.is_empty());
    }

    #[test]
    fn each_device_has_its_own_name_for_one_address() {
        let mut n = names();
        n.bind_dns(PHONE, SERVER, "tracker.ads.example.co.uk", 300, at(0));
        n.bind_dns(
            CAMERA,
            SERVER,
            "api.camera-cloud.example.com.au",
            300,
            at(1),
        );
        assert_eq!(
            name_at(&n, PHONE, SERVER, 2),
            Some("tracker.ads.example.co.uk")
        );
        assert_eq!(
            name_at(&n, CAMERA, SERVER, 2),
            Some("api.camera-cloud.example.com.au")
        );
    }

    #[test]
    fn the_most_recent_name_wins_even_with_a_shorter_ttl() {
        let mut n = names();
        n.bind_dns(PHONE, SERVER, "a.example", 3600, at(0));
        n.bind_dns(PHONE, SERVER, "b.example", 5, at(1));
        assert_eq!(name_at(&n, PHONE, SERVER, 2), Some("b.example"));
        n.bind_tls(PHONE, SERVER, "c.example", at(3));
        let binding = n.lookup(PHONE, SERVER, at(4)).unwrap();
        assert_eq!(
            (binding.name.as_str(), binding.source),
            ("c.example", Source::Tls)
        );
        assert_eq!(name_at(&n, PHONE, SERVER, 3 + 3599), Some("c.example"));
        assert_eq!(name_at(&n, PHONE, SERVER, 3 + 3600), None);
    }

    #[test]
    fn a_full_device_drops_the_binding_closest_to_expiring() {
        let mut n = names();
        for i in 0..4u8 {
            let addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, i));
            n.bind_dns(
                PHONE,
                addr,
                &format!("n{i}.example"),
                100 + u32::from(i),
                at(0),
            );
        }
        n.bind_dns(PHONE, SERVER, "new.example", 100, at(1));
        assert_eq!(n.len(), 4);
        assert_eq!(
            name_at(&n, PHONE, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 2),
            None
        );
        assert_eq!(name_at(&n, PHONE, SERVER, 2), Some("new.example"));
        // Re-binding a known address never evicts another.
        n.bind_dns(PHONE, SERVER, "newer.example", 100, at(2));
        assert_eq!(n.len(), 4);
    }
}
