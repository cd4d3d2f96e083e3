//! Kea's memfile lease CSV.

use std::net::IpAddr;

use super::{
    LastPerAddress, Lease, Leases, MAX_DUID_LEN, content_lines, epoch, mac_from_bytes,
    mac_from_duid, quote,
};
use crate::parsers::{clean_device_name, parse_hex_bytes};

/// Kea's "infinite" lifetime (`Lease::INFINITY_LFT`).
const INFINITE_LIFETIME: u64 = u32::MAX as u64;

/// Kea memfile lease CSV, as `CSVLeaseFile4` and `CSVLeaseFile6` in Kea's src/lib/dhcpsrv write it.
/// The header names the columns, so they are found by name:
///
/// ```text
/// address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id
/// address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source,pool_id
/// ```
///
/// `expire` is seconds since the epoch. The file is a log: the last row per address wins, and a
/// row with `valid_lifetime` 0 deletes the lease. `state` 0 is an active lease; declined (1),
/// expired-reclaimed (2) and released (3) are returned inactive. Commas in text are written as
/// `&#x2c` (Kea's `CSVRow::escapeCharacters`). An IPv6 row with `lease_type` 2 is a delegated
/// prefix and gets no address.
pub(super) fn parse(text: &str) -> Leases {
    let mut table = LastPerAddress::default();
    let mut columns: Option<Columns> = None;
    for (n, line) in content_lines(text) {
        if line.starts_with("address,") {
            columns = Columns::from_header(line);
            if columns.is_none() {
                table.out.skip(n, "header without an address column");
            }
            continue;
        }
        let Some(cols) = &columns else {
            table.out.skip(n, "row before the header line");
            continue;
        };
        let fields: Vec<&str> = line.split(',').take(cols.count + 1).collect();
        let field = |i: Option<usize>| i.and_then(|i| fields.get(i)).copied().unwrap_or("");
        let address = field(Some(cols.address));
        let Ok(addr) = address.parse::<IpAddr>() else {
            table
                .out
                .skip(n, format!("{} is not an IP address", quote(address)));
            continue;
        };
        let valid = field(cols.valid_lifetime).parse::<u64>().ok();
        if valid == Some(0) {
            table.remove(addr);
            continue;
        }
        let expires = match (valid, field(cols.expire).parse::<u64>().ok()) {
            (Some(INFINITE_LIFETIME), _) => None,
            (_, Some(secs)) => epoch(secs),
            (_, None) => None,
        };
        let mac = parse_hex_bytes(field(cols.hwaddr), 16)
            .and_then(|b| mac_from_bytes(&b))
            .or_else(|| {
                parse_hex_bytes(field(cols.duid), MAX_DUID_LEN).and_then(|d| mac_from_duid(&d))
            });
        let state = field(cols.state);
        // A delegated prefix (lease_type 2) is keyed by its address so that later rows still
        // supersede it, but it names no single host.
        let prefix = field(cols.lease_type) == "2";
        let lease = Lease {
            mac,
            addr: (!prefix).then_some(addr),
            hostname: clean_device_name(&unescape(field(cols.hostname))),
            expires,
            active: state.is_empty() || state == "0",
        };
        table.put(n, addr, lease);
    }
    table.finish()
}

/// Column positions from a Kea CSV header.
struct Columns {
    count: usize,
    address: usize,
    hwaddr: Option<usize>,
    duid: Option<usize>,
    valid_lifetime: Option<usize>,
    expire: Option<usize>,
    hostname: Option<usize>,
    state: Option<usize>,
    lease_type: Option<usize>,
}

impl Columns {
    fn from_header(header: &str) -> Option<Columns> {
        let names: Vec<&str> = header.split(',').take(64).map(str::trim).collect();
        let find = |name: &str| names.iter().position(|n| *n == name);
        Some(Columns {
            count: names.len(),
            address: find("address")?,
            hwaddr: find("hwaddr"),
            duid: find("duid"),
            valid_lifetime: find("valid_lifetime"),
            expire: find("expire"),
            hostname: find("hostname"),
            state: find("state"),
            lease_type: find("lease_type"),
        })
    }
}

/// Undoes Kea's `&#xHH` escapes (written for commas, and for any escaped character).
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("&#x") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 3..];
        match after.get(..2).and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte)
                if byte.is_ascii() && after.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit) =>
            {
                out.push(char::from(byte));
                rest = &after[2..];
            }
            _ => {
                out.push_str("&#x");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parsers::leases::tests::{at, ip, lease, mac, skipped};
    use crate::parsers::leases::{LeaseFormat, parse};

    #[test]
    fn kea_csv_v4() {
        let text = "\
address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id
192.0.2.10,00:00:5e:00:53:01,01:00:00:5e:00:53:01,3600,1795813266,1,0,0,my-phone,0,,0
192.0.2.11,00:00:5e:00:53:02,,4294967295,1795813266,1,0,0,Living Room&#x2c TV.,0,{ \"a\": 1&#x2c \"b\": 2 },0
192.0.2.12,00:00:5e:00:53:03,,3600,1795813266,1,0,0,,1,,0
192.0.2.10,00:00:5e:00:53:01,01:00:00:5e:00:53:01,3600,1795816866,1,0,0,my-phone,0,,0
192.0.2.13,00:00:5e:00:53:04,,3600,1795813266,1,0,0,gone,0,,0
192.0.2.14,,,3600,1795813266,1,0,0,declined,1,,0
192.0.2.13,00:00:5e:00:53:04,,0,1795813266,1,0,0,gone,0,,0
not-an-address,00:00:5e:00:53:05,,3600,1795813266,1,0,0,x,0,,0
192.0.2.15,00:00:5e:00:53:06,,3600,1795813266,1,0,0,&#xzz&#x41,0,,0
";
        let got = parse(LeaseFormat::KeaCsv, text);
        assert_eq!(
            got.leases,
            vec![
                lease(
                    mac("00:00:5e:00:53:01"),
                    ip("192.0.2.10"),
                    Some("my-phone"),
                    at(1_795_816_866),
                    true
                ),
                lease(
                    mac("00:00:5e:00:53:02"),
                    ip("192.0.2.11"),
                    Some("Living Room, TV"),
                    None,
                    true
                ),
                lease(
                    mac("00:00:5e:00:53:03"),
                    ip("192.0.2.12"),
                    None,
                    at(1_795_813_266),
                    false
                ),
                lease(
                    None,
                    ip("192.0.2.14"),
                    Some("declined"),
                    at(1_795_813_266),
                    false
                ),
                lease(
                    mac("00:00:5e:00:53:06"),
                    ip("192.0.2.15"),
                    Some("&#xzzA"),
                    at(1_795_813_266),
                    true
                ),
            ]
        );
        assert_eq!(
            got.skipped,
            vec![skipped(9, "\"not-an-address\" is not an IP address")]
        );
    }

    #[test]
    fn kea_csv_v6() {
        let text = "\
address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source,pool_id
2001:db8::10,00:01:00:01:2c:5e:10:00:00:00:5e:00:53:10,3600,1795813266,1,3000,0,1234,128,0,0,laptop,,0,,,,0
2001:db8::11,00:02:00:00:ab:11:01:02,3600,1795813266,1,3000,0,1,128,0,0,tablet,00:00:5e:00:53:11,0,,1,4,0
2001:db8:0:100::,00:03:00:01:00:00:5e:00:53:12,3600,1795813266,1,3000,2,1,56,0,0,router2,,0,,,,0
";
        let got = parse(LeaseFormat::KeaCsv, text);
        let t = at(1_795_813_266);
        assert_eq!(
            got.leases,
            vec![
                lease(
                    mac("00:00:5e:00:53:10"),
                    ip("2001:db8::10"),
                    Some("laptop"),
                    t,
                    true
                ),
                lease(
                    mac("00:00:5e:00:53:11"),
                    ip("2001:db8::11"),
                    Some("tablet"),
                    t,
                    true
                ),
                lease(mac("00:00:5e:00:53:12"), None, Some("router2"), t, true),
            ]
        );
        assert!(got.skipped.is_empty(), "{:?}", got.skipped);
    }

    #[test]
    fn kea_csv_without_header() {
        let got = parse(
            LeaseFormat::KeaCsv,
            "192.0.2.10,00:00:5e:00:53:01,,3600,1795813266,1,0,0,x,0,,0\naddress2,x\n",
        );
        assert!(got.leases.is_empty());
        assert_eq!(
            got.skipped,
            vec![
                skipped(1, "row before the header line"),
                skipped(2, "row before the header line"),
            ]
        );
    }

    #[test]
    fn kea_unescapes() {
        for (raw, want) in [
            ("a&#x2cb", "a,b"),
            ("&#x2c&#x2c", ",,"),
            ("&#x", "&#x"),
            ("&#x2", "&#x2"),
            ("&#xé1", "&#xé1"),
            ("&#x+1", "&#x+1"),
            ("plain", "plain"),
        ] {
            assert_eq!(unescape(raw), want, "{raw:?}");
        }
    }
}
