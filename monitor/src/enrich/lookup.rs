//! From a database record to what the agent keeps of it. Records are decoded into a lenient
//! shape: every field optional, and a field of an unexpected type read as nothing rather than
//! failing the record, so that a vendor's new or odd layout still yields what it can.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::label::{Asn, Country, sanitize_org};
use super::layout::Layout;

/// What one database knows about an address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub country: Option<Country>,
    pub asn: Option<Asn>,
    pub org: Option<Arc<str>>,
}

/// The fields of every layout the agent reads; all others are skipped unread.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Record<'a> {
    // MaxMind and DB-IP.
    #[serde(borrow)]
    country: Field<'a>,
    #[serde(borrow)]
    registered_country: Field<'a>,
    #[serde(borrow)]
    autonomous_system_number: Field<'a>,
    #[serde(borrow)]
    autonomous_system_organization: Field<'a>,
    // IPinfo.
    #[serde(borrow)]
    country_code: Field<'a>,
    #[serde(borrow)]
    asn: Field<'a>,
    #[serde(borrow)]
    as_name: Field<'a>,
}

/// A field as found, whatever its type: a string, a number, or a map of which only
/// `iso_code` is kept (MaxMind's `country`).
#[derive(Debug, Default, PartialEq)]
enum Field<'a> {
    #[default]
    Absent,
    Str(Cow<'a, str>),
    Number(u64),
    Place {
        iso_code: Option<Cow<'a, str>>,
    },
    /// A type no layout uses here (negative, fractional, boolean, array).
    Other,
}

impl<'a> Field<'a> {
    fn str(&self) -> Option<&str> {
        match self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }

    fn iso_code(&self) -> Option<&str> {
        match self {
            Field::Place { iso_code } => iso_code.as_deref(),
            _ => None,
        }
    }

    fn asn(&self) -> Option<Asn> {
        match self {
            Field::Str(s) => Asn::parse(s),
            Field::Number(n) => Asn::from_number(*n),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Field<'de>, E> {
        Ok(Field::Number(n))
    }

    fn visit_u128<E: de::Error>(self, n: u128) -> Result<Field<'de>, E> {
        Ok(u64::try_from(n).map_or(Field::Other, Field::Number))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Field<'de>, E> {
        Ok(u64::try_from(n).map_or(Field::Other, Field::Number))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        let mut iso_code = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "iso_code" {
                if let Field::Str(code) = map.next_value::<Field<'de>>()? {
                    iso_code = Some(code);
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Field::Place { iso_code })
    }
}

impl Record<'_> {
    /// What the record says, the layout's own fields first and the other layout's after.
    pub(super) fn found(&self, layout: Layout) -> Found {
        let maxmind_country = || {
            self.country
                .iso_code()
                .and_then(Country::parse)
                .or_else(|| self.registered_country.iso_code().and_then(Country::parse))
        };
        // IPinfo's older free files put the code itself in `country`.
        let ipinfo_country = || {
            self.country_code
                .str()
                .and_then(Country::parse)
                .or_else(|| self.country.str().and_then(Country::parse))
        };
        let maxmind_asn = || self.autonomous_system_number.asn();
        let ipinfo_asn = || self.asn.asn();
        let maxmind_org = || {
            self.autonomous_system_organization
                .str()
                .and_then(sanitize_org)
        };
        let ipinfo_org = || self.as_name.str().and_then(sanitize_org);
        match layout {
            Layout::MaxMind => Found {
                country: maxmind_country().or_else(ipinfo_country),
                asn: maxmind_asn().or_else(ipinfo_asn),
                org: maxmind_org().or_else(ipinfo_org),
            },
            Layout::Ipinfo => Found {
                country: ipinfo_country().or_else(maxmind_country),
                asn: ipinfo_asn().or_else(maxmind_asn),
                org: ipinfo_org().or_else(maxmind_org),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::de::value::{Error, MapDeserializer};

    use super::*;

    fn place(code: &'static str) -> Field<'static> {
        Field::Place {
            iso_code: Some(Cow::Borrowed(code)),
        }
    }

    fn s(v: &'static str) -> Field<'static> {
        Field::Str(Cow::Borrowed(v))
    }

    #[test]
    fn each_layout_reads_its_fields_then_the_others() {
        let maxmind = Record {
            country: place("DE"),
            registered_country: place("FR"),
            autonomous_system_number: Field::Number(64_500),
            autonomous_system_organization: s(" Example\tHosting "),
            ..Record::default()
        };
        let expected = Found {
            country: Country::parse("DE"),
            asn: Some(Asn(64_500)),
            org: Some("Example Hosting".into()),
        };
        assert_eq!(maxmind.found(Layout::MaxMind), expected);
        assert_eq!(maxmind.found(Layout::Ipinfo), expected);

        let ipinfo = Record {
            country: s("Germany"),
            country_code: s("DE"),
            asn: s("AS64500"),
            as_name: s("Example Hosting"),
            ..Record::default()
        };
        assert_eq!(ipinfo.found(Layout::Ipinfo), expected);
        assert_eq!(ipinfo.found(Layout::MaxMind), expected);

        // Both: the layout decides.
        let both = Record {
            country: place("NL"),
            country_code: s("DE"),
            autonomous_system_number: Field::Number(1),
            asn: s("AS2"),
            ..Record::default()
        };
        assert_eq!(both.found(Layout::MaxMind).country, Country::parse("NL"));
        assert_eq!(both.found(Layout::Ipinfo).country, Country::parse("DE"));
        assert_eq!(both.found(Layout::MaxMind).asn, Some(Asn(1)));
        assert_eq!(both.found(Layout::Ipinfo).asn, Some(Asn(2)));
    }

    #[test]
    fn fallbacks_and_bad_values_are_unknown() {
        let registered = Record {
            country: Field::Place { iso_code: None },
            registered_country: place("US"),
            ..Record::default()
        };
        assert_eq!(
            registered.found(Layout::MaxMind).country,
            Country::parse("US")
        );

        // IPinfo's country_asn.mmdb: the code in `country`, the AS as a string.
        let old_ipinfo = Record {
            country: s("CN"),
            asn: s("AS4134"),
            ..Record::default()
        };
        assert_eq!(
            old_ipinfo.found(Layout::Ipinfo),
            Found {
                country: Country::parse("CN"),
                asn: Some(Asn(4_134)),
                org: None,
            }
        );

        let bad = Record {
            country: place("de"),
            country_code: s("XXX"),
            autonomous_system_number: Field::Other,
            asn: s("AS0"),
            as_name: s("\u{7}\n"),
            ..Record::default()
        };
        assert_eq!(bad.found(Layout::MaxMind), Found::default());
        assert_eq!(Record::default().found(Layout::Ipinfo), Found::default());
    }

    /// Through serde's own value deserializers; the database tests read real files.
    #[test]
    fn fields_of_any_type_decode() {
        let map = MapDeserializer::<_, Error>::new(
            [
                ("asn", "AS13335"),
                ("as_name", "Cloudflare, Inc."),
                ("country_code", "US"),
                ("ignored", "x"),
            ]
            .into_iter(),
        );
        let record = Record::deserialize(map).unwrap();
        assert_eq!(
            record.found(Layout::Ipinfo),
            Found {
                country: Country::parse("US"),
                asn: Some(Asn(13_335)),
                org: Some("Cloudflare, Inc.".into()),
            }
        );
        let numbers = MapDeserializer::<_, Error>::new(
            [("autonomous_system_number", 13_335u64), ("country", 7)].into_iter(),
        );
        let record = Record::deserialize(numbers).unwrap();
        assert_eq!(record.found(Layout::MaxMind).asn, Some(Asn(13_335)));
        assert_eq!(record.found(Layout::MaxMind).country, None);
    }
}
