//! The destination label: how a destination is named in the metrics.
//!
//! A phone talks to `a1.cdn.tracker.example.co.uk`, `a2.cdn...` and `api.tracker.example.co.uk`;
//! one series per host name would be many series for one organisation, so by default the label is
//! the registrable domain (`tracker.example.co.uk`), found with the Public Suffix List (the `psl`
//! crate). Users who want more detail choose the host name, or the bare address.

use std::net::IpAddr;

use super::normalize_dns_name;

/// How much of a destination's name goes into its label: the configuration's type.
pub use crate::config::LabelMode;

/// Names a destination for a metric label, lowercase.
///
/// * [`LabelMode::Address`], no `host`, a `host` that is an IP literal, or a `host` that is not a
///   valid DNS name: the address, as `IpAddr` displays it.
/// * [`LabelMode::Host`]: the host name, lowercase, without a trailing dot.
/// * [`LabelMode::Domain`]: the registrable domain of the host name by the Public Suffix List
///   (ICANN and private sections); the whole host name when it is itself a public suffix
///   (`co.uk`). A top-level domain the list does not know follows the list's own default rule
///   `*` (one label is the suffix), as browsers do: `a.b.unknown-tld` -> `b.unknown-tld`.
pub fn destination_label(mode: LabelMode, host: Option<&str>, addr: IpAddr) -> String {
    let host = match (mode, host) {
        (LabelMode::Address, _) | (_, None) => return addr.to_string(),
        (_, Some(host)) => host,
    };
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if literal.parse::<IpAddr>().is_ok() {
        return addr.to_string();
    }
    let Some(host) = normalize_dns_name(host) else {
        return addr.to_string();
    };
    match mode {
        LabelMode::Domain => registrable_domain(&host).unwrap_or(host),
        _ => host,
    }
}

/// The registrable domain of a normalised host name; None when it is itself a public suffix.
fn registrable_domain(host: &str) -> Option<String> {
    let domain = psl::domain(host.as_bytes())?;
    std::str::from_utf8(domain.as_bytes())
        .ok()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 30));

    #[test]
    fn labels_destinations() {
        let v6: IpAddr = "2001:db8::80".parse().unwrap();
        let cases: &[(LabelMode, Option<&str>, IpAddr, &str)] = &[
            (
                LabelMode::Domain,
                Some("a.b.example.co.uk"),
                V4,
                "example.co.uk",
            ),
            (
                LabelMode::Domain,
                Some("tracker.example.co.uk"),
                V4,
                "example.co.uk",
            ),
            (
                LabelMode::Domain,
                Some("WWW.Example.COM."),
                V4,
                "example.com",
            ),
            (LabelMode::Domain, Some("example.com"), V4, "example.com"),
            // A private-section suffix: each user's site is its own domain.
            (
                LabelMode::Domain,
                Some("alice.github.io"),
                V4,
                "alice.github.io",
            ),
            (
                LabelMode::Domain,
                Some("cdn.alice.github.io"),
                V4,
                "alice.github.io",
            ),
            // A name that is itself a public suffix, or has no known suffix: the whole name.
            (LabelMode::Domain, Some("co.uk"), V4, "co.uk"),
            (LabelMode::Domain, Some("github.io"), V4, "github.io"),
            (LabelMode::Domain, Some("printer.lan"), V4, "printer.lan"),
            (
                LabelMode::Domain,
                Some("a.b.unknown-tld"),
                V4,
                "b.unknown-tld",
            ),
            (LabelMode::Domain, Some("localhost"), V4, "localhost"),
            // IP literals and names that are not names: the address.
            (LabelMode::Domain, Some("192.0.2.30"), V4, "192.0.2.30"),
            (LabelMode::Domain, Some("198.51.100.1"), V4, "192.0.2.30"),
            (LabelMode::Host, Some("[2001:db8::80]"), v6, "2001:db8::80"),
            (
                LabelMode::Domain,
                Some("bad name.example"),
                V4,
                "192.0.2.30",
            ),
            (LabelMode::Domain, Some(""), V4, "192.0.2.30"),
            (LabelMode::Domain, None, v6, "2001:db8::80"),
            (
                LabelMode::Host,
                Some("A.B.Example.co.uk."),
                V4,
                "a.b.example.co.uk",
            ),
            (LabelMode::Host, None, V4, "192.0.2.30"),
            (
                LabelMode::Address,
                Some("a.b.example.co.uk"),
                V4,
                "192.0.2.30",
            ),
            (LabelMode::Address, Some("x.example"), v6, "2001:db8::80"),
        ];
        for (mode, host, addr, want) in cases {
            assert_eq!(
                destination_label(*mode, *host, *addr),
                *want,
                "{mode:?} {host:?} {addr}"
            );
        }
    }
}
