//! Lease files of DHCP servers: which MAC holds which address, under which host name.
//!
//! The router's DHCP server already knows every device's name; its lease file is the cheapest
//! place to learn it. Each format is parsed line by line (or block by block) and never fails as a
//! whole: a line that does not parse is recorded in [`Leases::skipped`] with its line number and
//! why, and the rest of the file still counts. Files are written by other programs, often while
//! the agent reads them, so a half-written last line is an ordinary event.
//!
//! One submodule per server; each cites the source it took its format from.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::types::MacAddr;

mod dnsmasq;
mod isc;
mod kea;
mod odhcpd;

/// At most this many leases are returned from one file; the rest are skipped (and the first of
/// them is recorded). A home or office network has a few hundred.
pub const MAX_LEASES: usize = 65_536;

/// At most this many skipped lines are recorded, so a file of garbage costs bounded memory.
pub const MAX_SKIPPED: usize = 256;

/// Longest DUID (RFC 8415 §11.1: 2-byte type and at most 128 bytes), and so the longest hex
/// identifier read from a lease file.
const MAX_DUID_LEN: usize = 130;

/// At most this many characters of an offending token are quoted in a skip reason.
const MAX_QUOTE_CHARS: usize = 40;

/// Which DHCP server wrote a lease file: the configuration's type, so the two cannot drift.
pub use crate::config::LeaseFormat;

/// One lease: some of what the server knows about one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The client's MAC: from the hardware address, or from a DHCPv6 DUID of type LLT or LL with
    /// an Ethernet address. `None` when the format has none (odhcpd's hosts file) or the client
    /// identified itself otherwise.
    pub mac: Option<MacAddr>,
    /// The leased address; `None` for lease entries that hold only a delegated prefix.
    pub addr: Option<IpAddr>,
    /// The client's host name, cleaned (case kept, trailing dot dropped, at most 63 bytes).
    pub hostname: Option<String>,
    /// When the lease ends; `None` for an infinite lease or a format that does not say. An
    /// expired lease is returned with a time in the past: the caller decides what stale means.
    pub expires: Option<SystemTime>,
    /// False when the file says the address is not in use: ISC `binding state` other than
    /// active, Kea `state` other than 0 (declined, expired-reclaimed, released), odhcpd's
    /// expiry 0.
    pub active: bool,
}

/// A line (or block) that was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// 1-based line number (of the block's first line for ISC blocks).
    pub line: usize,
    /// What was wrong, for the log.
    pub reason: String,
}

/// What one lease file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leases {
    /// Leases in file order; for formats that append (ISC, Kea), one per address: the last.
    pub leases: Vec<Lease>,
    /// Lines that were not understood, at most [`MAX_SKIPPED`]. Comments and blank lines are not
    /// here.
    pub skipped: Vec<Skipped>,
}

impl Leases {
    fn skip(&mut self, line: usize, reason: impl Into<String>) {
        if self.skipped.len() < MAX_SKIPPED {
            self.skipped.push(Skipped {
                line,
                reason: reason.into(),
            });
        }
    }

    fn push(&mut self, line: usize, lease: Lease) {
        if self.leases.len() < MAX_LEASES {
            self.leases.push(lease);
        } else {
            self.skip(line, format!("more than {MAX_LEASES} leases"));
        }
    }
}

/// Parses a lease file of the given format. Never fails: see [`Leases::skipped`].
pub fn parse(format: LeaseFormat, text: &str) -> Leases {
    match format {
        LeaseFormat::Dnsmasq => dnsmasq::parse(text),
        LeaseFormat::OdhcpdHosts => odhcpd::parse_hosts(text),
        LeaseFormat::Odhcpd => odhcpd::parse_leases(text),
        LeaseFormat::IscDhcpd => isc::parse(text),
        LeaseFormat::KeaCsv => kea::parse(text),
    }
}

/// Quotes at most [`MAX_QUOTE_CHARS`] characters of a token for a skip reason.
fn quote(token: &str) -> String {
    let short: String = token.chars().take(MAX_QUOTE_CHARS).collect();
    format!("{short:?}")
}

/// Lines with their 1-based numbers, leaving out blank lines and `#` comments.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

/// Seconds since the Unix epoch as a time, `None` if it does not fit.
fn epoch(secs: u64) -> Option<SystemTime> {
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// A MAC from six bytes.
fn mac_from_bytes(bytes: &[u8]) -> Option<MacAddr> {
    <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
}

/// The Ethernet address inside a DHCPv6 DUID of type LLT (1) or LL (3) with hardware type 1
/// (RFC 8415 §11.2, §11.4). Other DUIDs (enterprise, UUID) hold no MAC.
pub fn mac_from_duid(duid: &[u8]) -> Option<MacAddr> {
    let (&[t0, t1, h0, h1], rest) = duid.split_first_chunk::<4>()?;
    if u16::from_be_bytes([h0, h1]) != 1 {
        return None;
    }
    match u16::from_be_bytes([t0, t1]) {
        1 => mac_from_bytes(rest.get(4..)?),
        3 => mac_from_bytes(rest),
        _ => None,
    }
}

/// Keeps the last lease per address, in the order each address first appeared. Replacing and
/// deleting are O(1), so a long log of updates costs linear time.
#[derive(Default)]
struct LastPerAddress {
    /// One slot per address; `None` once deleted.
    slots: Vec<Option<Lease>>,
    index: HashMap<IpAddr, usize>,
    /// Skipped lines; `leases` is filled from `slots` by [`LastPerAddress::finish`].
    out: Leases,
}

impl LastPerAddress {
    /// Records `lease` as the current one for `key` (its address, or its prefix).
    fn put(&mut self, line: usize, key: IpAddr, lease: Lease) {
        if let Some(&i) = self.index.get(&key) {
            self.slots[i] = Some(lease);
        } else if self.slots.len() < MAX_LEASES {
            self.index.insert(key, self.slots.len());
            self.slots.push(Some(lease));
        } else {
            self.out
                .skip(line, format!("more than {MAX_LEASES} leases"));
        }
    }

    fn remove(&mut self, key: IpAddr) {
        if let Some(i) = self.index.remove(&key) {
            self.slots[i] = None;
        }
    }

    fn finish(mut self) -> Leases {
        self.out.leases = self.slots.into_iter().flatten().collect();
        self.out.skipped.sort_by_key(|s| s.line);
        self.out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::parsers::parse_hex_bytes;

    pub(crate) const DNSMASQ_LEASES: &str = include_str!("../../../tests/fixtures/dnsmasq.leases");
    pub(crate) const ISC_LEASES: &str = include_str!("../../../tests/fixtures/dhcpd.leases");
    pub(crate) const KEA4_LEASES: &str = include_str!("../../../tests/fixtures/kea-leases4.csv");
    pub(crate) const KEA6_LEASES: &str = include_str!("../../../tests/fixtures/kea-leases6.csv");

    pub(crate) fn mac(s: &str) -> Option<MacAddr> {
        Some(s.parse().unwrap())
    }

    pub(crate) fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    pub(crate) fn at(secs: u64) -> Option<SystemTime> {
        epoch(secs)
    }

    pub(crate) fn lease(
        mac: Option<MacAddr>,
        addr: Option<IpAddr>,
        hostname: Option<&str>,
        expires: Option<SystemTime>,
        active: bool,
    ) -> Lease {
        Lease {
            mac,
            addr,
            hostname: hostname.map(str::to_owned),
            expires,
            active,
        }
    }

    pub(crate) fn skipped(line: usize, reason: &str) -> Skipped {
        Skipped {
            line,
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn reads_real_lease_files() {
        // Written by the servers themselves for one udhcpc client (DHCPv4, MAC 00:00:5e:00:53:01,
        // "my-phone") and one DHCPv6 client (DUID-LL of the same MAC, FQDN "my-laptop"); see
        // tests/fixtures/README.md.
        let phone = mac("00:00:5e:00:53:01");
        let cases = [
            (
                LeaseFormat::Dnsmasq,
                DNSMASQ_LEASES,
                vec![
                    lease(
                        phone,
                        ip("192.0.2.101"),
                        Some("my-phone"),
                        at(1_795_814_086),
                        true,
                    ),
                    lease(
                        phone,
                        ip("2001:db8::195"),
                        Some("my-laptop"),
                        at(1_795_814_086),
                        true,
                    ),
                ],
            ),
            (
                LeaseFormat::IscDhcpd,
                ISC_LEASES,
                vec![lease(
                    phone,
                    ip("192.0.2.100"),
                    Some("my-phone"),
                    at(1_795_814_089),
                    true,
                )],
            ),
            (
                LeaseFormat::KeaCsv,
                KEA4_LEASES,
                vec![lease(
                    phone,
                    ip("192.0.2.100"),
                    Some("my-phone"),
                    at(1_795_814_092),
                    true,
                )],
            ),
            (
                LeaseFormat::KeaCsv,
                KEA6_LEASES,
                vec![lease(
                    phone,
                    ip("2001:db8::100"),
                    Some("my-laptop"),
                    at(1_795_814_093),
                    true,
                )],
            ),
        ];
        for (format, text, want) in cases {
            assert_eq!(
                parse(format, text),
                Leases {
                    leases: want,
                    skipped: vec![]
                },
                "{format}"
            );
        }
    }

    #[test]
    fn mac_from_duids() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "00:01:00:01:2c:5e:10:00:00:00:5e:00:53:10",
                Some("00:00:5e:00:53:10"),
            ),
            ("00:03:00:01:00:00:5e:00:53:11", Some("00:00:5e:00:53:11")),
            // Hardware type 6 (IEEE 802), enterprise and UUID DUIDs, wrong lengths.
            ("00:03:00:06:00:00:5e:00:53:11", None),
            ("00:02:00:00:ab:11:01:02", None),
            (
                "00:04:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff",
                None,
            ),
            ("00:03:00:01:00:00:5e:00:53", None),
            ("00:01:00:01:2c:5e:10:00:00:00:5e:00:53", None),
            ("00:03", None),
        ];
        for (duid, want) in cases {
            let duid = parse_hex_bytes(duid, MAX_DUID_LEN).unwrap();
            assert_eq!(mac_from_duid(&duid), want.and_then(mac), "{duid:02x?}");
        }
    }

    #[test]
    fn skipped_lines_are_capped() {
        let text = "garbage\n".repeat(MAX_SKIPPED * 2);
        for format in [
            LeaseFormat::Dnsmasq,
            LeaseFormat::OdhcpdHosts,
            LeaseFormat::KeaCsv,
        ] {
            let got = parse(format, &text);
            assert_eq!(got.skipped.len(), MAX_SKIPPED, "{format}");
        }
    }

    #[test]
    fn lease_count_is_capped_and_logs_are_linear() {
        let n = MAX_LEASES + 3;
        let addr = |i: usize| format!("2001:db8::{:x}:{:x}", i >> 16, i & 0xffff);
        let dnsmasq: String = (0..n)
            .map(|i| format!("0 00:00:5e:00:53:01 {} * *\n", addr(i)))
            .collect();
        let got = parse(LeaseFormat::Dnsmasq, &dnsmasq);
        assert_eq!(got.leases.len(), MAX_LEASES);
        assert_eq!(got.skipped.len(), 3);
        assert_eq!(
            got.skipped[0],
            skipped(MAX_LEASES + 1, "more than 65536 leases")
        );

        // A Kea log that adds and deletes every address: deletions must not cost a scan each.
        let mut kea = String::from("address,hwaddr,valid_lifetime,expire,hostname,state\n");
        for i in 0..n {
            kea.push_str(&format!("{},,3600,1795813266,,0\n", addr(i)));
        }
        for i in (0..n).step_by(2) {
            kea.push_str(&format!("{},,0,1795813266,,0\n", addr(i)));
        }
        let got = parse(LeaseFormat::KeaCsv, &kea);
        assert_eq!(got.leases.len(), MAX_LEASES / 2);
        assert_eq!(got.leases[0].addr, ip("2001:db8::0:1"));
        assert_eq!(got.skipped.len(), 3);
    }
}
