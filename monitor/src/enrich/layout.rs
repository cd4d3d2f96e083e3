//! Which fields of a record hold the country, the AS number and the organisation: the
//! vendors differ, and the database's `database_type` says which vendor wrote it.

use std::fmt;

use serde::Deserialize;

/// A vendor's record layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// MaxMind GeoLite2/GeoIP2 Country, City and ASN, and DB-IP Lite (which copies them):
    /// `country.iso_code` (else `registered_country.iso_code`), `autonomous_system_number`
    /// (an integer) and `autonomous_system_organization`.
    MaxMind,
    /// IPinfo Lite and IPinfo's other free files: strings `country_code` (or a bare code in
    /// `country`), `asn` (`"AS13335"`) and `as_name`.
    Ipinfo,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::MaxMind => "maxmind",
            Layout::Ipinfo => "ipinfo",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `country_layout` and `asn_layout` keys of `[enrich]`: `auto` detects the layout from
/// the file's metadata; the others say it, for a file whose `database_type` is unknown or
/// wrong (a database a user built). Whichever it is, a record's fields of the other layout
/// are still read when the layout's own are missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutSetting {
    #[default]
    Auto,
    #[serde(rename = "maxmind")]
    MaxMind,
    Ipinfo,
}

impl LayoutSetting {
    /// The value as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            LayoutSetting::Auto => "auto",
            LayoutSetting::MaxMind => "maxmind",
            LayoutSetting::Ipinfo => "ipinfo",
        }
    }

    /// The layout to read a file with, and where that came from.
    pub fn resolve(self, database_type: &str) -> (Layout, LayoutSource) {
        match self {
            LayoutSetting::MaxMind => (Layout::MaxMind, LayoutSource::Setting),
            LayoutSetting::Ipinfo => (Layout::Ipinfo, LayoutSource::Setting),
            LayoutSetting::Auto => match detect(database_type) {
                Some(layout) => (layout, LayoutSource::Metadata),
                None => (Layout::MaxMind, LayoutSource::Guess),
            },
        }
    }
}

/// How a database's layout was chosen, for the log line that says it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutSource {
    /// The configuration says it.
    Setting,
    /// The metadata's `database_type` names a known vendor.
    Metadata,
    /// Unknown vendor: MaxMind's layout first, then IPinfo's fields.
    Guess,
}

/// The layout a `database_type` names, if it is a vendor's own: `GeoLite2-*`, `GeoIP2-*`,
/// `GeoIP-*` and `DBIP-*` (DB-IP's Lite files say `DBIP-Country-Lite`, `DBIP-City-Lite`,
/// `DBIP-ASN-Lite (compat=GeoLite2-ASN)`) are MaxMind's layout; anything that mentions
/// `ipinfo` is IPinfo's.
pub fn detect(database_type: &str) -> Option<Layout> {
    let lower = database_type.trim().to_ascii_lowercase();
    if lower.contains("ipinfo") {
        return Some(Layout::Ipinfo);
    }
    let maxmind = ["geolite2-", "geoip2-", "geoip-", "dbip-", "db-ip-"];
    maxmind
        .iter()
        .any(|prefix| lower.starts_with(prefix))
        .then_some(Layout::MaxMind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_from_database_types() {
        for (database_type, expected) in [
            ("GeoLite2-Country", Some(Layout::MaxMind)),
            ("GeoLite2-City", Some(Layout::MaxMind)),
            ("GeoLite2-ASN", Some(Layout::MaxMind)),
            ("GeoIP2-Country", Some(Layout::MaxMind)),
            ("GeoIP2-City", Some(Layout::MaxMind)),
            ("GeoIP2-ISP", Some(Layout::MaxMind)),
            ("GeoIP2-Enterprise", Some(Layout::MaxMind)),
            ("DBIP-Country-Lite", Some(Layout::MaxMind)),
            ("DBIP-City-Lite", Some(Layout::MaxMind)),
            ("DBIP-ASN-Lite (compat=GeoLite2-ASN)", Some(Layout::MaxMind)),
            ("dbip-country-lite", Some(Layout::MaxMind)),
            ("ipinfo ipinfo_lite.mmdb", Some(Layout::Ipinfo)),
            ("ipinfo country_asn.mmdb", Some(Layout::Ipinfo)),
            ("IPinfo Lite", Some(Layout::Ipinfo)),
            ("ipinfo_lite", Some(Layout::Ipinfo)),
            ("My-Own-Database", None),
            ("GeoLite2", None),
            ("", None),
        ] {
            assert_eq!(detect(database_type), expected, "{database_type:?}");
        }
    }

    #[test]
    fn a_setting_wins_over_the_metadata() {
        use LayoutSetting as S;
        assert_eq!(
            S::Auto.resolve("GeoLite2-ASN"),
            (Layout::MaxMind, LayoutSource::Metadata)
        );
        assert_eq!(
            S::Auto.resolve("ipinfo ipinfo_lite.mmdb"),
            (Layout::Ipinfo, LayoutSource::Metadata)
        );
        assert_eq!(
            S::Auto.resolve("Custom"),
            (Layout::MaxMind, LayoutSource::Guess)
        );
        assert_eq!(
            S::Ipinfo.resolve("GeoLite2-ASN"),
            (Layout::Ipinfo, LayoutSource::Setting)
        );
        assert_eq!(
            S::MaxMind.resolve("ipinfo"),
            (Layout::MaxMind, LayoutSource::Setting)
        );
    }
}
