//! Turns the packets the kernel copies (DNS answers, TLS ClientHellos, DHCP requests, DNS
//! queries to outside resolvers) into names for devices and destinations, and into resolver
//! bypass counts.

pub mod destinations;
pub mod devices;
pub mod lease_files;
pub mod records;

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    time::SystemTime,
};

use monitor_common::{SNIFF_DHCP, SNIFF_DNS_QUERY, SNIFF_DNS_RESPONSE, SNIFF_TLS_HELLO};
pub use records::{Observation, Seen, ServerName};

use crate::{
    config::{Config, LabelMode},
    naming::{destinations::DestinationNames, devices::Devices},
    parsers::domain,
    types::{Label, MacAddr},
};

/// Resolvers remembered per device for the bypass metric; more are counted as "other".
const RESOLVERS_PER_DEVICE: usize = 16;
/// The `resolver` label of resolvers beyond [`RESOLVERS_PER_DEVICE`].
pub const OTHER_RESOLVER: &str = "other";

const DOT_PORT: u16 = 853;
const HTTPS_PORT: u16 = 443;

/// How a device went around the router's resolver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BypassProtocol {
    /// Plain DNS (port 53) to a resolver that is not the router.
    Dns,
    /// DNS over TLS (a ClientHello to port 853).
    Dot,
    /// DNS over HTTPS: a ClientHello to a listed public resolver on port 443.
    Doh,
}

impl BypassProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            BypassProtocol::Dns => "dns",
            BypassProtocol::Dot => "dot",
            BypassProtocol::Doh => "doh",
        }
    }
}

/// Kinds of copied records, for the statistics.
pub const KINDS: [(u8, &str); 4] = [
    (SNIFF_DNS_RESPONSE, "dns_response"),
    (SNIFF_DNS_QUERY, "dns_query"),
    (SNIFF_TLS_HELLO, "tls_client_hello"),
    (SNIFF_DHCP, "dhcp"),
];

pub(crate) fn kind_index(kind: u8) -> Option<usize> {
    KINDS.iter().position(|(k, _)| *k == kind)
}

/// Counters of what the agent made of the copied records.
#[derive(Clone, Copy, Debug, Default)]
pub struct SniffStats {
    /// Records read, per kind (in [`KINDS`] order).
    pub records: [u64; 4],
    /// Records that did not parse, per kind.
    pub parse_errors: [u64; 4],
    /// Records too short for their header or of an unknown kind.
    pub malformed: u64,
    /// Names bound from DNS answers and ClientHellos.
    pub names_bound: u64,
}

/// Everything naming knows.
#[derive(Debug)]
pub struct Naming {
    pub destinations: DestinationNames,
    pub devices: Devices,
    pub label_mode: LabelMode,
    public_resolvers: HashSet<IpAddr>,
    /// Per device: (resolver label, protocol) -> queries or handshakes.
    bypass: BTreeMap<MacAddr, BTreeMap<(String, BypassProtocol), u64>>,
    pub stats: SniffStats,
}

impl Naming {
    pub fn new(config: &Config) -> Self {
        Self {
            destinations: DestinationNames::new(
                config.names.dns_grace,
                config.names.tls_ttl,
                config.names.max_names_per_device as usize,
            ),
            devices: Devices::new(config.devices.clone(), &config.leases),
            label_mode: config.destination_label,
            public_resolvers: config.names.public_resolvers.iter().copied().collect(),
            bypass: BTreeMap::new(),
            stats: SniffStats::default(),
        }
    }

    /// The `destination` label of `addr` for the device at `now`.
    pub fn label(&self, mac: MacAddr, addr: IpAddr, now: SystemTime) -> Label {
        if self.label_mode == LabelMode::Address {
            return Label::Addr(addr);
        }
        let Some(binding) = self.destinations.lookup(mac, addr, now) else {
            return Label::Addr(addr);
        };
        let label = domain::destination_label(self.label_mode, Some(&binding.name), addr);
        // A name that is not one (an IP literal, say) labels as the address.
        if label.parse::<IpAddr>() == Ok(addr) {
            Label::Addr(addr)
        } else {
            Label::Name(label.into_boxed_str())
        }
    }

    /// Resolver bypass counts: (device, resolver, protocol, count).
    pub fn bypass(&self) -> impl Iterator<Item = (MacAddr, &str, BypassProtocol, u64)> + '_ {
        self.bypass.iter().flat_map(|(mac, per)| {
            per.iter()
                .map(move |((resolver, protocol), n)| (*mac, resolver.as_str(), *protocol, *n))
        })
    }

    /// Handles one record from the ring buffer: [`records::decode`] then [`Naming::apply`].
    pub fn handle(&mut self, record: &[u8], now: SystemTime) {
        self.apply(records::decode(record), now);
    }

    /// Applies what one copied packet said (parsed on the sniff thread).
    pub fn apply(&mut self, observation: Observation, now: SystemTime) {
        let Observation::Record { kind, mac, seen } = observation else {
            self.stats.malformed += 1;
            return;
        };
        self.stats.records[kind] += 1;
        let ok = match seen {
            Seen::DnsAnswer { device, bindings } => {
                self.devices.observe_address(mac, device, now);
                match bindings {
                    Some(bindings) => {
                        for b in &bindings {
                            self.destinations.bind_dns(mac, b.addr, &b.name, b.ttl, now);
                            self.stats.names_bound += 1;
                        }
                        true
                    }
                    None => false,
                }
            }
            Seen::DnsQuery { device, resolver } => {
                self.devices.observe_address(mac, device, now);
                self.count_bypass(mac, resolver, BypassProtocol::Dns);
                true
            }
            Seen::TlsHello {
                device,
                server,
                port,
                name,
            } => {
                self.devices.observe_address(mac, device, now);
                if port == DOT_PORT {
                    self.count_bypass(mac, server, BypassProtocol::Dot);
                } else if port == HTTPS_PORT && self.public_resolvers.contains(&server) {
                    self.count_bypass(mac, server, BypassProtocol::Doh);
                }
                match name {
                    ServerName::Named(name) => {
                        self.destinations.bind_tls(mac, server, &name, now);
                        self.stats.names_bound += 1;
                        true
                    }
                    ServerName::None => true,
                    ServerName::Unparsable => false,
                }
            }
            Seen::Dhcp(request) => match request {
                Some(hostname) => {
                    if let Some((client, hostname)) = hostname {
                        self.devices.observe_dhcp_hostname(client, &hostname);
                    }
                    true
                }
                None => false,
            },
        };
        if !ok {
            self.stats.parse_errors[kind] += 1;
        }
    }

    fn count_bypass(&mut self, mac: MacAddr, resolver: IpAddr, protocol: BypassProtocol) {
        let per = self.bypass.entry(mac).or_default();
        let mut label = resolver.to_string();
        if !per.contains_key(&(label.clone(), protocol))
            && per.keys().filter(|(l, _)| l != OTHER_RESOLVER).count() >= RESOLVERS_PER_DEVICE
        {
            label = OTHER_RESOLVER.to_owned();
        }
        *per.entry((label, protocol)).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::{FAMILY_V4, SniffHeader};

    use super::*;

    fn record(kind: u8, src: [u8; 4], dst: [u8; 4], dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut header = SniffHeader {
            kind,
            family: FAMILY_V4,
            protocol: monitor_common::IPPROTO_UDP,
            mac: [0, 0x16, 0x3e, 0, 0, 1],
            dst_port,
            payload_len: payload.len() as u32,
            captured: payload.len() as u32,
            ..SniffHeader::default()
        };
        header.src[..4].copy_from_slice(&src);
        header.dst[..4].copy_from_slice(&dst);
        // SAFETY: plain old data.
        let bytes: [u8; size_of::<SniffHeader>()] = unsafe { std::mem::transmute(header) };
        let mut out = bytes.to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn naming() -> Naming {
        let config = Config::from_toml_str(
            "lan = [\"br-lan\"]\n[names]\npublic_resolvers = [\"192.0.2.53\"]\n",
            None,
            &Default::default(),
        )
        .unwrap();
        Naming::new(&config)
    }

    #[test]
    fn dns_queries_to_outside_resolvers_count_as_bypass_bounded_per_device() {
        let mut n = naming();
        let now = SystemTime::now();
        for i in 0..40u8 {
            let r = record(
                SNIFF_DNS_QUERY,
                [192, 168, 50, 11],
                [203, 0, 113, i],
                53,
                &[],
            );
            n.handle(&r, now);
        }
        let rows: Vec<_> = n.bypass().collect();
        assert_eq!(rows.len(), RESOLVERS_PER_DEVICE + 1);
        let other = rows.iter().find(|r| r.1 == OTHER_RESOLVER).unwrap();
        assert_eq!(other.3, 40 - RESOLVERS_PER_DEVICE as u64);
        assert_eq!(n.stats.records[kind_index(SNIFF_DNS_QUERY).unwrap()], 40);
    }

    #[test]
    fn short_and_unknown_records_are_counted_not_fatal() {
        let mut n = naming();
        n.handle(&[1, 2, 3], SystemTime::now());
        n.handle(&record(99, [0; 4], [0; 4], 0, &[]), SystemTime::now());
        assert_eq!(n.stats.malformed, 2);
        // A DNS "answer" of garbage is a parse error of its kind.
        n.handle(
            &record(
                SNIFF_DNS_RESPONSE,
                [192, 168, 50, 1],
                [192, 168, 50, 11],
                40000,
                b"garbage",
            ),
            SystemTime::now(),
        );
        assert_eq!(
            n.stats.parse_errors[kind_index(SNIFF_DNS_RESPONSE).unwrap()],
            1
        );
    }
}
