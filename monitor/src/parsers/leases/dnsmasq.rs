//! dnsmasq's lease file.

use std::net::IpAddr;

use super::{
    Lease, Leases, MAX_DUID_LEN, content_lines, epoch, mac_from_bytes, mac_from_duid, quote,
};
use crate::parsers::{clean_device_name, parse_hex_bytes};

/// dnsmasq `dnsmasq.leases`, as written by `lease_update_file()` in dnsmasq's src/lease.c and
/// read back by `read_leases()` there:
///
/// ```text
/// <expiry> <hwaddr> <ipv4> <hostname|*> <client-id|*>
/// duid <server duid>
/// <expiry> [T]<iaid> <ipv6> <hostname|*> <client duid|*>
/// ```
///
/// Expiry is seconds since the epoch, 0 for an infinite lease. The hardware address is
/// colon-separated hex, prefixed with `<type>-` unless it is Ethernet (`00-` when there is none).
/// IPv6 leases follow the `duid` line and carry the client's DUID where IPv4 has a client ID.
/// `vendorclass` and `agent-info` lines (extra data for a lease above) are ignored.
pub(super) fn parse(text: &str) -> Leases {
    let mut out = Leases::default();
    for (n, line) in content_lines(text) {
        let fields: Vec<&str> = line.split_whitespace().take(6).collect();
        if matches!(
            fields.first(),
            Some(&("duid" | "vendorclass" | "agent-info"))
        ) {
            continue;
        }
        let &[expiry, hw_or_iaid, addr, hostname, client_id] = fields.as_slice() else {
            out.skip(
                n,
                "expected 5 fields: expiry, MAC or IAID, address, hostname, client ID",
            );
            continue;
        };
        let Ok(expiry) = expiry.parse::<u64>() else {
            out.skip(
                n,
                format!("expiry {} is not a number of seconds", quote(expiry)),
            );
            continue;
        };
        let Ok(addr) = addr.parse::<IpAddr>() else {
            out.skip(n, format!("{} is not an IP address", quote(addr)));
            continue;
        };
        let mac = match addr {
            // Any "<type>-" prefix means the address is not Ethernet.
            IpAddr::V4(_) if !hw_or_iaid.contains('-') => {
                parse_hex_bytes(hw_or_iaid, 16).and_then(|b| mac_from_bytes(&b))
            }
            IpAddr::V4(_) => None,
            IpAddr::V6(_) if client_id != "*" => {
                parse_hex_bytes(client_id, MAX_DUID_LEN).and_then(|d| mac_from_duid(&d))
            }
            IpAddr::V6(_) => None,
        };
        out.push(
            n,
            Lease {
                mac,
                addr: Some(addr),
                hostname: (hostname != "*")
                    .then(|| clean_device_name(hostname))
                    .flatten(),
                expires: if expiry == 0 { None } else { epoch(expiry) },
                active: true,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::parsers::leases::tests::{at, ip, lease, mac, skipped};
    use crate::parsers::leases::{LeaseFormat, parse};

    #[test]
    fn dnsmasq() {
        let text = "\
# not written by dnsmasq, but a comment all the same

1795813266 00:00:5e:00:53:02 192.0.2.102 * *
0 00:00:5e:00:53:03 192.0.2.103 printer 01:00:00:5e:00:53:03
1795813266 06-00:00:5e:00:53:04 192.0.2.104 tokenring *
1795813266 00- 192.0.2.105 nohw ff:00:00:00:01
1795813266 00:00:5e:00:53:06 192.0.2.106 bad\u{1b}name *
soon 00:00:5e:00:53:07 192.0.2.107 x *
1795813266 00:00:5e:00:53:08 192.0.2.300 x *
1795813266 00:00:5e:00:53:09 192.0.2.109
duid 00:01:00:01:2c:5e:10:00:00:00:5e:00:53:fe
1795813266 1234 2001:db8::10 laptop 00:01:00:01:2c:5e:10:00:00:00:5e:00:53:10
1795813266 T99 2001:db8::11 * 00:03:00:01:00:00:5e:00:53:11
1795813266 5 2001:db8::12 tablet 00:02:00:00:ab:11:01:02
1795813266 5 2001:db8::13 x *
vendorclass 192.0.2.102 01:02
agent-info 192.0.2.102 01:02
";
        let got = parse(LeaseFormat::Dnsmasq, text);
        assert_eq!(
            got.leases,
            vec![
                lease(
                    mac("00:00:5e:00:53:02"),
                    ip("192.0.2.102"),
                    None,
                    at(1_795_813_266),
                    true
                ),
                lease(
                    mac("00:00:5e:00:53:03"),
                    ip("192.0.2.103"),
                    Some("printer"),
                    None,
                    true
                ),
                lease(
                    None,
                    ip("192.0.2.104"),
                    Some("tokenring"),
                    at(1_795_813_266),
                    true
                ),
                lease(
                    None,
                    ip("192.0.2.105"),
                    Some("nohw"),
                    at(1_795_813_266),
                    true
                ),
                lease(
                    mac("00:00:5e:00:53:06"),
                    ip("192.0.2.106"),
                    None,
                    at(1_795_813_266),
                    true
                ),
                lease(
                    mac("00:00:5e:00:53:10"),
                    ip("2001:db8::10"),
                    Some("laptop"),
                    at(1_795_813_266),
                    true
                ),
                lease(
                    mac("00:00:5e:00:53:11"),
                    ip("2001:db8::11"),
                    None,
                    at(1_795_813_266),
                    true
                ),
                lease(
                    None,
                    ip("2001:db8::12"),
                    Some("tablet"),
                    at(1_795_813_266),
                    true
                ),
                lease(None, ip("2001:db8::13"), Some("x"), at(1_795_813_266), true),
            ]
        );
        assert_eq!(
            got.skipped,
            vec![
                skipped(8, "expiry \"soon\" is not a number of seconds"),
                skipped(9, "\"192.0.2.300\" is not an IP address"),
                skipped(
                    10,
                    "expected 5 fields: expiry, MAC or IAID, address, hostname, client ID"
                ),
            ]
        );
    }
}
