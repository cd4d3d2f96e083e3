//! odhcpd's hosts file and lease file (OpenWrt).

use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use super::{
    Lease, Leases, MAX_DUID_LEN, content_lines, epoch, mac_from_bytes, mac_from_duid, quote,
};
use crate::parsers::{clean_device_name, parse_hex_bytes};

/// The hosts file odhcpd writes for dnsmasq to serve its clients' names, from
/// `statefiles_write_host()` in odhcpd's src/statefiles.c (older: `dhcpv6_write_statefile()` in
/// src/dhcpv6-ia.c):
///
/// ```text
/// <address>\t<hostname>.<domain>\t<hostname>
/// <address>\t<hostname>
/// ```
///
/// The last name is the bare host name. There is no MAC and no expiry.
pub(super) fn parse_hosts(text: &str) -> Leases {
    let mut out = Leases::default();
    for (n, line) in content_lines(text) {
        let mut fields = line.split_whitespace();
        let addr = fields.next().unwrap_or_default();
        let Ok(addr) = addr.parse::<IpAddr>() else {
            out.skip(n, format!("{} is not an IP address", quote(addr)));
            continue;
        };
        let Some(name) = fields.last() else {
            out.skip(n, "no host name after the address");
            continue;
        };
        out.push(
            n,
            Lease {
                mac: None,
                addr: Some(addr),
                hostname: clean_device_name(name),
                expires: None,
                active: true,
            },
        );
    }
    out
}

/// At most this many addresses are read from one odhcpd lease line.
const MAX_ODHCPD_ADDRS: usize = 16;

/// odhcpd's lease file, from `statefiles_write_lease4()`/`statefiles_write_lease6()` in odhcpd's
/// src/statefiles.c (older releases: `dhcpv6_ia_write_statefile()` in src/dhcpv6-ia.c). Every
/// lease is a line that starts with `#`:
///
/// ```text
/// # <ifname> <hwaddr> ipv4 <hostname|-> <expiry> <hex address> 32 <address>/32
/// # <ifname> <duid> <hex iaid> <hostname|-> <expiry> <hex host or subnet id> <length> [<address>/<length> ...]
/// ```
///
/// The hardware address is hex without separators (`odhcpd_hexlify`) or colon-separated
/// (`ether_ntoa`, in newer releases). Expiry is seconds since the epoch, -1 for infinite, 0 for
/// expired. A hostname odhcpd found invalid is written as `broken\x20<name>` and is not used.
/// Older releases also wrote hosts-file lines (`<address>\t<name>`) into this file: they repeat
/// the `#` line and are ignored. `#` lines that are not leases are comments.
pub(super) fn parse_leases(text: &str) -> Leases {
    let mut out = Leases::default();
    for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() {
            continue;
        }
        let Some(lease_line) = line.strip_prefix('#') else {
            let first = line.split_whitespace().next().unwrap_or_default();
            if first.parse::<IpAddr>().is_err() {
                out.skip(n, "neither a lease (# ...) nor a hosts line");
            }
            continue;
        };
        let fields: Vec<&str> = lease_line
            .split_whitespace()
            .take(7 + MAX_ODHCPD_ADDRS)
            .collect();
        let is_lease = fields.get(2).is_some_and(|iaid| {
            *iaid == "ipv4" || (iaid.len() <= 8 && iaid.bytes().all(|b| b.is_ascii_hexdigit()))
        });
        if !is_lease {
            continue; // A comment.
        }
        if fields.len() < 7 {
            out.skip(n, "lease line with fewer than 7 fields");
            continue;
        }
        let (id, kind, hostname, expiry, hex_addr) =
            (fields[1], fields[2], fields[3], fields[4], fields[5]);
        let Ok(expiry) = expiry.parse::<i64>() else {
            out.skip(n, format!("expiry {} is not a number", quote(expiry)));
            continue;
        };
        let (expires, active) = match expiry {
            -1 => (None, true),
            0 => (Some(SystemTime::UNIX_EPOCH), false),
            secs => match u64::try_from(secs).ok().and_then(epoch) {
                Some(t) => (Some(t), true),
                None => {
                    out.skip(n, format!("expiry {secs} is not a time"));
                    continue;
                }
            },
        };
        let hostname = match hostname {
            "-" => None,
            name if name.starts_with("broken\\x20") => None,
            name => clean_device_name(name),
        };
        let addrs = &fields[7..];
        if kind == "ipv4" {
            let Some(mac) = parse_hex_bytes(id, 6).and_then(|b| mac_from_bytes(&b)) else {
                out.skip(n, format!("{} is not a MAC address", quote(id)));
                continue;
            };
            let addr = addrs
                .iter()
                .find_map(|a| a.strip_suffix("/32")?.parse::<Ipv4Addr>().ok())
                .or_else(|| u32::from_str_radix(hex_addr, 16).ok().map(Ipv4Addr::from));
            let Some(addr) = addr else {
                out.skip(n, "no IPv4 address");
                continue;
            };
            out.push(
                n,
                Lease {
                    mac: Some(mac),
                    addr: Some(IpAddr::V4(addr)),
                    hostname,
                    expires,
                    active,
                },
            );
            continue;
        }
        let Some(duid) = parse_hex_bytes(id, MAX_DUID_LEN) else {
            out.skip(n, format!("{} is not a hex DUID", quote(id)));
            continue;
        };
        let mac = mac_from_duid(&duid);
        let mut lease = Lease {
            mac,
            addr: None,
            hostname,
            expires,
            active,
        };
        // Host addresses (/128) are leases; delegated prefixes name no single host.
        let mut any = false;
        for addr in addrs {
            let Some((addr, len)) = addr.split_once('/') else {
                continue;
            };
            if len != "128" {
                continue;
            }
            let Ok(addr) = addr.parse::<IpAddr>() else {
                out.skip(n, format!("{} is not an IPv6 address", quote(addr)));
                continue;
            };
            lease.addr = Some(addr);
            out.push(n, lease.clone());
            any = true;
        }
        if !any && (lease.mac.is_some() || lease.hostname.is_some()) {
            out.push(n, lease);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::parsers::leases::tests::{at, ip, lease, mac, skipped};
    use crate::parsers::leases::{LeaseFormat, parse};

    #[test]
    fn odhcpd_hosts() {
        let text = "\
192.0.2.10\tphone.lan\tphone
2001:db8::10\tlaptop
# a comment
not-an-address name
192.0.2.11
";
        let got = parse(LeaseFormat::OdhcpdHosts, text);
        assert_eq!(
            got.leases,
            vec![
                lease(None, ip("192.0.2.10"), Some("phone"), None, true),
                lease(None, ip("2001:db8::10"), Some("laptop"), None, true),
            ]
        );
        assert_eq!(
            got.skipped,
            vec![
                skipped(4, "\"not-an-address\" is not an IP address"),
                skipped(5, "no host name after the address"),
            ]
        );
    }

    #[test]
    fn odhcpd_leases() {
        let text = "\
# STATEFILE_VERSION=1
# br-lan 00005e005301 ipv4 my-phone 1795813266 c0000265 32 192.0.2.101/32
# br-lan 00:00:5E:00:53:02 ipv4 - -1 c0000266 32 192.0.2.102/32
192.0.2.103\tprinter.lan\tprinter
# br-lan 0:0:5e:0:53:3 ipv4 printer 0 c0000267 32 192.0.2.103/32
# br-lan 00005e005304 ipv4 broken\\x20bad_name 1795813266 c0000268 32 192.0.2.104/32
# br-lan 00005e005305 ipv4 nolist 1795813266 c0000269 32
# br-lan 000100012c5e100000005e005310 4d2 laptop 1795813266 10 128 2001:db8::10/128 2001:db8::11/128
# br-lan 0003000100005e005311 1 router2 1795813266 1 56 2001:db8:0:100::/56
# br-lan 000200000ab11 2 - 1795813266 1 56
# br-lan zz:zz ipv4 x 1 1 32 192.0.2.9/32
# br-lan 00005e005306 ipv4 x 1795813266
garbage here
";
        let got = parse(LeaseFormat::Odhcpd, text);
        let t = at(1_795_813_266);
        assert_eq!(
            got.leases,
            vec![
                lease(
                    mac("00:00:5e:00:53:01"),
                    ip("192.0.2.101"),
                    Some("my-phone"),
                    t,
                    true
                ),
                lease(
                    mac("00:00:5e:00:53:02"),
                    ip("192.0.2.102"),
                    None,
                    None,
                    true
                ),
                lease(
                    mac("00:00:5e:00:53:03"),
                    ip("192.0.2.103"),
                    Some("printer"),
                    at(0),
                    false
                ),
                lease(mac("00:00:5e:00:53:04"), ip("192.0.2.104"), None, t, true),
                lease(
                    mac("00:00:5e:00:53:05"),
                    ip("192.0.2.105"),
                    Some("nolist"),
                    t,
                    true
                ),
                lease(
                    mac("00:00:5e:00:53:10"),
                    ip("2001:db8::10"),
                    Some("laptop"),
                    t,
                    true
                ),
                lease(
                    mac("00:00:5e:00:53:10"),
                    ip("2001:db8::11"),
                    Some("laptop"),
                    t,
                    true
                ),
                lease(mac("00:00:5e:00:53:11"), None, Some("router2"), t, true),
            ]
        );
        assert_eq!(
            got.skipped,
            vec![
                skipped(10, "\"000200000ab11\" is not a hex DUID"),
                skipped(11, "\"zz:zz\" is not a MAC address"),
                skipped(12, "lease line with fewer than 7 fields"),
                skipped(13, "neither a lease (# ...) nor a hosts line"),
            ]
        );
    }
}
