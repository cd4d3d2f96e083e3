//! The values enrichment yields, checked and bounded as Prometheus label values must be:
//! they come from a file someone else wrote.

use std::fmt;
use std::sync::Arc;

/// Longest organisation name kept, in characters; longer ones are cut.
pub const ORG_MAX_CHARS: usize = 64;

/// An ISO 3166-1 alpha-2 country code: two ASCII capital letters, nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// `"DE"` is a country; `"de"`, `"DEU"`, `"D1"`, `""` or `"--"` are not (a database that
    /// writes them does not know, as far as the labels go).
    pub fn parse(code: &str) -> Option<Country> {
        match code.as_bytes() {
            &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Some(Country([a, b])),
            _ => None,
        }
    }

    /// The code, as written in labels and rules.
    pub fn as_str(&self) -> &str {
        // Two ASCII letters, checked in `parse`.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An autonomous system number; displays as the bare number (`13335`), as the `asn` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Asn(pub u32);

impl Asn {
    /// `"AS13335"`, `"as13335"` or `"13335"`. AS 0 (RFC 7607: no AS) and anything else,
    /// signs and spaces included, is no AS.
    pub fn parse(s: &str) -> Option<Asn> {
        let digits = match s.get(..2) {
            Some(prefix) if prefix.eq_ignore_ascii_case("as") => &s[2..],
            _ => s,
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u32>().ok().and_then(Asn::from_number)
    }

    /// A number from a database; 0 and numbers past 32 bits are no AS.
    pub fn from_number(n: impl TryInto<u32>) -> Option<Asn> {
        n.try_into().ok().filter(|n| *n != 0).map(Asn)
    }
}

impl fmt::Display for Asn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An organisation name fit for a label: control characters become spaces, runs of
/// whitespace one space, the ends trimmed, at most [`ORG_MAX_CHARS`] characters. Nothing left
/// is no name.
pub fn sanitize_org(name: &str) -> Option<Arc<str>> {
    let mut out = String::with_capacity(name.len().min(ORG_MAX_CHARS * 4));
    let mut chars = 0;
    let mut pending_space = false;
    for c in name.chars() {
        if c.is_control() || c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        let needed = 1 + usize::from(pending_space);
        if chars + needed > ORG_MAX_CHARS {
            break;
        }
        if pending_space {
            out.push(' ');
            chars += 1;
            pending_space = false;
        }
        out.push(c);
        chars += 1;
    }
    (!out.is_empty()).then(|| Arc::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_are_two_capital_letters() {
        for (code, expected) in [
            ("DE", Some("DE")),
            ("CN", Some("CN")),
            ("de", None),
            ("De", None),
            ("DEU", None),
            ("D", None),
            ("", None),
            ("D1", None),
            ("--", None),
            (" D", None),
            ("ÄÖ", None),
        ] {
            let parsed = Country::parse(code);
            assert_eq!(parsed.as_ref().map(Country::as_str), expected, "{code:?}");
            if let Some(country) = parsed {
                assert_eq!(country.to_string(), code);
            }
        }
    }

    #[test]
    fn asns_with_or_without_the_as_prefix() {
        for (s, expected) in [
            ("AS13335", Some(13_335)),
            ("as13335", Some(13_335)),
            ("As4134", Some(4_134)),
            ("13335", Some(13_335)),
            ("AS4294967295", Some(u32::MAX)),
            ("AS4294967296", None),
            ("AS0", None),
            ("0", None),
            ("AS", None),
            ("", None),
            ("AS 13335", None),
            ("AS-1", None),
            ("+13335", None),
            ("13335 ", None),
            ("ASX", None),
            ("AS١٢", None),
        ] {
            assert_eq!(Asn::parse(s).map(|a| a.0), expected, "{s:?}");
        }
        assert_eq!(Asn(13_335).to_string(), "13335");
        assert_eq!(Asn::from_number(64_500u64), Some(Asn(64_500)));
        assert_eq!(Asn::from_number(0u32), None);
        assert_eq!(Asn::from_number(1u64 << 32), None);
    }

    #[test]
    fn org_names_are_trimmed_single_spaced_and_bounded() {
        let org = |s: &str| sanitize_org(s).map(|a| a.to_string());
        assert_eq!(
            org("Example Hosting GmbH").as_deref(),
            Some("Example Hosting GmbH")
        );
        assert_eq!(
            org("  Example \t Hosting\n").as_deref(),
            Some("Example Hosting")
        );
        assert_eq!(
            org("Evil\u{1b}[31mRed\0Co").as_deref(),
            Some("Evil [31mRed Co")
        );
        assert_eq!(
            org("Line\u{85}Break\u{2028}").as_deref(),
            Some("Line Break")
        );
        assert_eq!(
            org("Café \"Zürich\" \\ 🌍").as_deref(),
            Some("Café \"Zürich\" \\ 🌍")
        );
        assert_eq!(org(""), None);
        assert_eq!(org(" \t\r\n\u{7}"), None);

        let long = "ü".repeat(100);
        assert_eq!(org(&long).unwrap().chars().count(), ORG_MAX_CHARS);
        // A cut never leaves a space at the end.
        let spaced = format!("{} tail", "a".repeat(ORG_MAX_CHARS - 1));
        assert_eq!(org(&spaced).unwrap(), "a".repeat(ORG_MAX_CHARS - 1));
        let exact = "b".repeat(ORG_MAX_CHARS);
        assert_eq!(org(&exact).unwrap(), exact);
    }
}
