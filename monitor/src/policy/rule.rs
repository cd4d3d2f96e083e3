//! One entry of an `allow`, `deny` or baseline list: a domain (with its subdomains), an
//! address prefix, a country (`country:DE`) or an autonomous system (`asn:64500`). Parsing is
//! strict, because a rule that silently matches nothing is a policy that silently allows
//! everything.

use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;

use crate::enrich::{Asn, Country, Enrichment};
use crate::types::Label;

/// Longest domain name (RFC 1035), without the trailing dot.
const MAX_DOMAIN_LEN: usize = 253;
/// Longest label of a domain name (RFC 1035).
const MAX_LABEL_LEN: usize = 63;

/// A destination rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// A domain, lower case, without a trailing dot: matches it and every subdomain.
    Domain(Box<str>),
    /// An address prefix (a single address is a /32 or /128), host bits cleared.
    Net(IpNet),
    /// A country (ISO 3166-1 alpha-2, upper case): matches addresses the country database
    /// places there; an address it does not know matches no country.
    Country(Country),
    /// An autonomous system: matches addresses the AS database gives to it; an address it
    /// does not know matches no AS.
    Asn(Asn),
}

/// What a destination is known by when a rule is checked against it.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The remote address.
    pub addr: IpAddr,
    /// The host name the device resolved or sent for it, if known now.
    pub host: Option<&'a str>,
    /// The exported `destination` label (the registrable domain, the host or the address).
    pub label: &'a Label,
    /// What the databases say about the address (all unknown without databases).
    pub enrichment: &'a Enrichment,
}

impl Rule {
    /// The kind, as the `rule` label spells it after `deny:`.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::Domain(_) => "domain",
            Rule::Net(_) => "cidr",
            Rule::Country(_) => "country",
            Rule::Asn(_) => "asn",
        }
    }

    /// The rule that accepts exactly what a destination label names: its domain (and
    /// subdomains), or its address.
    pub fn for_label(label: &Label) -> Rule {
        match label {
            Label::Addr(addr) => Rule::Net(IpNet::from(*addr)),
            Label::Name(name) => Rule::Domain(name.to_ascii_lowercase().into_boxed_str()),
        }
    }

    pub fn matches(&self, target: &Target<'_>) -> bool {
        match self {
            Rule::Net(net) => net.contains(&target.addr),
            Rule::Domain(domain) => {
                target.host.is_some_and(|host| within(host, domain))
                    || matches!(target.label, Label::Name(name) if within(name, domain))
            }
            Rule::Country(country) => target.enrichment.country == Some(*country),
            Rule::Asn(asn) => target.enrichment.asn == Some(*asn),
        }
    }
}

/// Is `name` the domain or one of its subdomains? Case-insensitive, a trailing dot ignored.
fn within(name: &str, domain: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() == domain.len() {
        return name.eq_ignore_ascii_case(domain);
    }
    name.len() > domain.len()
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
        && name[name.len() - domain.len()..].eq_ignore_ascii_case(domain)
}

impl FromStr for Rule {
    type Err = String;

    fn from_str(s: &str) -> Result<Rule, String> {
        let invalid = |why: &str| Err(format!("invalid rule {s:?}: {why}"));
        let lower = s.to_ascii_lowercase();
        // `kind:value`, unless it is an IPv6 address or prefix ("cc::1" is one).
        if let Some((kind, value)) = s.split_once(':')
            && matches!(
                kind.to_ascii_lowercase().as_str(),
                "country" | "asn" | "as" | "cc" | "org"
            )
            && s.parse::<IpAddr>().is_err()
            && s.parse::<IpNet>().is_err()
        {
            return match kind.to_ascii_lowercase().as_str() {
                "country" => match Country::parse(&value.to_ascii_uppercase()) {
                    Some(country) => Ok(Rule::Country(country)),
                    None => invalid(
                        "a country is an ISO 3166 two-letter code (A-Z), like \"country:DE\"",
                    ),
                },
                "asn" => match Asn::parse(value) {
                    Some(asn) => Ok(Rule::Asn(asn)),
                    None => invalid(
                        "an autonomous system is a number from 1 to 4294967295, like \
                         \"asn:64500\" or \"asn:AS64500\"",
                    ),
                },
                "as" => invalid("write \"asn:NUMBER\", like \"asn:64500\""),
                "cc" => invalid("write \"country:CODE\", like \"country:DE\""),
                _ => invalid(
                    "organisation rules are not supported: name the organisation's autonomous \
                     systems (\"asn:64500\")",
                ),
            };
        }
        if s.contains('/') {
            return match s.parse::<IpNet>() {
                Ok(net) => Ok(Rule::Net(net.trunc())),
                Err(_) => invalid("not a prefix like \"192.0.2.0/24\" or \"2001:db8::/32\""),
            };
        }
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(Rule::Net(IpNet::from(addr)));
        }
        if s.starts_with("*.") || s.starts_with('.') {
            return invalid(&format!(
                "write {:?}: a domain rule already covers its subdomains",
                s.trim_start_matches('*').trim_start_matches('.')
            ));
        }
        let domain = lower.strip_suffix('.').unwrap_or(&lower);
        if domain.is_empty() {
            return invalid("empty");
        }
        if domain.len() > MAX_DOMAIN_LEN {
            return invalid(&format!("longer than {MAX_DOMAIN_LEN} characters"));
        }
        for label in domain.split('.') {
            if label.is_empty() {
                return invalid("empty label between dots");
            }
            if label.len() > MAX_LABEL_LEN {
                return invalid(&format!(
                    "a label is longer than {MAX_LABEL_LEN} characters"
                ));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return invalid(&format!(
                    "{c:?} cannot be in a domain (expected a domain like \"vendor.example\", an \
                     address, a prefix like \"192.0.2.0/24\", \"country:DE\" or \"asn:64500\")"
                ));
            }
        }
        Ok(Rule::Domain(domain.into()))
    }
}

impl fmt::Display for Rule {
    /// The text that parses back to the same rule; a single address prints without `/32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Domain(d) => f.write_str(d),
            Rule::Net(net) if net.prefix_len() == net.max_prefix_len() => net.addr().fmt(f),
            Rule::Net(net) => net.fmt(f),
            Rule::Country(country) => write!(f, "country:{country}"),
            Rule::Asn(asn) => write!(f, "asn:{asn}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> Rule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    static UNKNOWN: Enrichment = Enrichment {
        country: None,
        asn: None,
        org: None,
    };

    fn target<'a>(addr: &str, host: Option<&'a str>, label: &'a Label) -> Target<'a> {
        Target {
            addr: addr.parse().unwrap(),
            host,
            label,
            enrichment: &UNKNOWN,
        }
    }

    #[test]
    fn domains_match_themselves_and_subdomains_only() {
        let addr = Label::Addr("192.0.2.10".parse().unwrap());
        let r = rule("Vendor.Example.");
        assert_eq!(r, Rule::Domain("vendor.example".into()));
        for host in [
            "vendor.example",
            "updates.vendor.example",
            "a.b.VENDOR.example.",
        ] {
            assert!(
                r.matches(&target("192.0.2.10", Some(host), &addr)),
                "{host}"
            );
        }
        for host in ["notvendor.example", "vendor.example.evil", "example"] {
            assert!(
                !r.matches(&target("192.0.2.10", Some(host), &addr)),
                "{host}"
            );
        }
        // Without a host name, only a name label can match a domain.
        assert!(!r.matches(&target("192.0.2.10", None, &addr)));
        let named = Label::Name("vendor.example".into());
        assert!(r.matches(&target("192.0.2.10", None, &named)));
        // A narrower rule does not match the wider registrable-domain label.
        assert!(!rule("updates.vendor.example").matches(&target("192.0.2.10", None, &named)));
    }

    #[test]
    fn prefixes_and_addresses_match_the_address() {
        let label = Label::Name("x.example".into());
        let net = rule("192.0.2.99/24");
        assert_eq!(net.to_string(), "192.0.2.0/24");
        assert!(net.matches(&target("192.0.2.200", None, &label)));
        assert!(!net.matches(&target("192.0.3.1", None, &label)));
        let one = rule("2001:db8::1");
        assert_eq!(one.to_string(), "2001:db8::1");
        assert!(one.matches(&target("2001:db8::1", None, &label)));
        assert!(!one.matches(&target("2001:db8::2", None, &label)));
        assert_eq!(one.kind(), "cidr");
        assert_eq!(rule("a.example").kind(), "domain");
    }

    #[test]
    fn rules_print_back_to_themselves() {
        for s in [
            "vendor.example",
            "192.0.2.0/24",
            "192.0.2.7",
            "2001:db8::/32",
            "x_y.example",
        ] {
            assert_eq!(rule(s).to_string(), s);
            assert_eq!(rule(&rule(s).to_string()), rule(s));
        }
    }

    #[test]
    fn label_rules_accept_what_the_label_names() {
        let name = Label::Name("example.co.uk".into());
        let r = Rule::for_label(&name);
        assert!(r.matches(&target(
            "192.0.2.30",
            Some("tracker.ads.example.co.uk"),
            &name
        )));
        let addr = Label::Addr("192.0.2.7".parse().unwrap());
        assert_eq!(Rule::for_label(&addr).to_string(), "192.0.2.7");
    }

    #[test]
    fn bad_rules_say_why() {
        let cases = [
            ("", "empty"),
            ("*.vendor.example", "write \"vendor.example\""),
            ("country:C", "two-letter code"),
            ("country:CHN", "two-letter code"),
            ("country:C1", "two-letter code"),
            ("country:", "two-letter code"),
            ("country: CN", "two-letter code"),
            ("country:ÄÖ", "two-letter code"),
            ("asn:0", "from 1 to 4294967295"),
            ("asn:AS0", "from 1 to 4294967295"),
            ("asn:-1", "from 1 to 4294967295"),
            ("asn:4294967296", "from 1 to 4294967295"),
            ("asn:AS 64500", "from 1 to 4294967295"),
            ("asn:", "from 1 to 4294967295"),
            ("as:64500", "write \"asn:NUMBER\""),
            ("cc:DE", "write \"country:CODE\""),
            ("org:Vendor", "organisation rules are not supported"),
            ("192.0.2.0/33", "not a prefix"),
            ("vendor..example", "empty label"),
            ("vendor example", "' ' cannot be in a domain"),
            ("https://vendor.example", "not a prefix"),
        ];
        for (s, why) in cases {
            let err = s.parse::<Rule>().unwrap_err();
            assert!(err.contains(why), "{s:?}: {err}");
            assert!(err.contains(&format!("{s:?}")), "{s:?}: {err}");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(long.parse::<Rule>().unwrap_err().contains("longer than 63"));
    }

    #[test]
    fn country_and_as_rules_parse_case_insensitively_and_print_back() {
        for (s, expected, printed) in [
            (
                "country:CN",
                Rule::Country(Country::parse("CN").unwrap()),
                "country:CN",
            ),
            (
                "country:de",
                Rule::Country(Country::parse("DE").unwrap()),
                "country:DE",
            ),
            (
                "Country:De",
                Rule::Country(Country::parse("DE").unwrap()),
                "country:DE",
            ),
            ("asn:4134", Rule::Asn(Asn(4134)), "asn:4134"),
            ("asn:AS4134", Rule::Asn(Asn(4134)), "asn:4134"),
            ("ASN:as4134", Rule::Asn(Asn(4134)), "asn:4134"),
            ("asn:4294967295", Rule::Asn(Asn(u32::MAX)), "asn:4294967295"),
        ] {
            assert_eq!(rule(s), expected, "{s}");
            assert_eq!(expected.to_string(), printed);
            assert_eq!(rule(printed), expected);
        }
        assert_eq!(rule("country:CN").kind(), "country");
        assert_eq!(rule("asn:4134").kind(), "asn");
        // IPv6 addresses whose first group looks like a kind are still addresses.
        assert_eq!(rule("cc::1").to_string(), "cc::1");
        assert_eq!(rule("cc::/16").to_string(), "cc::/16");
    }

    #[test]
    fn country_and_as_rules_match_what_the_enrichment_says_and_never_unknown() {
        let label = Label::Name("vendor.example".into());
        let cn_4134 = Enrichment {
            country: Country::parse("CN"),
            asn: Asn::parse("4134"),
            org: Some("Chinanet".into()),
        };
        let de_only = Enrichment {
            country: Country::parse("DE"),
            ..Enrichment::default()
        };
        let with = |enrichment| Target {
            enrichment,
            ..target("192.0.2.10", None, &label)
        };
        assert!(rule("country:CN").matches(&with(&cn_4134)));
        assert!(rule("country:cn").matches(&with(&cn_4134)));
        assert!(!rule("country:DE").matches(&with(&cn_4134)));
        assert!(rule("asn:AS4134").matches(&with(&cn_4134)));
        assert!(!rule("asn:4135").matches(&with(&cn_4134)));
        assert!(rule("country:DE").matches(&with(&de_only)));
        // No AS known: no AS rule matches.
        assert!(!rule("asn:4134").matches(&with(&de_only)));
        // Nothing known: neither kind matches.
        for r in ["country:CN", "country:DE", "asn:4134"] {
            assert!(!rule(r).matches(&with(&UNKNOWN)), "{r}");
        }
    }
}
