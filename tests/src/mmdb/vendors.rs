//! Databases in the layouts of the vendors the agent reads, with only the fields that matter
//! to it and a few around them, as the real files have.
//!
//! * MaxMind GeoLite2/GeoIP2 Country and City, and DB-IP Lite country: `country.iso_code`
//!   (and `registered_country.iso_code`).
//! * MaxMind GeoLite2-ASN and DB-IP ASN Lite: `autonomous_system_number` (uint32) and
//!   `autonomous_system_organization`.
//! * IPinfo Lite: strings `country_code`, `asn` (`"AS13335"`) and `as_name`, in one file.

use super::{MmdbWriter, Network, Value};

/// A GeoNames id for a country code, made up but stable: real files carry one.
fn geoname_id(code: &str) -> u32 {
    code.bytes().fold(2_000_000, |id, b| id * 31 + u32::from(b))
}

fn country_map(code: &str) -> Value {
    Value::map([
        ("geoname_id", Value::Uint32(geoname_id(code))),
        ("iso_code", Value::str(code)),
        ("names", Value::map([("en", Value::str(code))])),
    ])
}

fn maxmind_country(code: &str) -> Value {
    Value::map([
        (
            "continent",
            Value::map([
                ("code", Value::str("EU")),
                ("geoname_id", Value::Uint32(6_255_148)),
            ]),
        ),
        ("country", country_map(code)),
        ("registered_country", country_map(code)),
    ])
}

fn countries(database_type: &str, networks: &[(Network, &str)]) -> MmdbWriter {
    networks
        .iter()
        .fold(MmdbWriter::new(database_type), |w, (network, code)| {
            w.insert(*network, maxmind_country(code))
        })
}

fn asns(database_type: &str, networks: &[(Network, u32, &str)]) -> MmdbWriter {
    networks
        .iter()
        .fold(MmdbWriter::new(database_type), |w, (network, asn, org)| {
            w.insert(
                *network,
                Value::map([
                    ("autonomous_system_number", Value::Uint32(*asn)),
                    ("autonomous_system_organization", Value::str(org)),
                ]),
            )
        })
}

/// MaxMind GeoLite2 Country: `(network, ISO 3166 code)`.
pub fn geolite2_country(networks: &[(Network, &str)]) -> MmdbWriter {
    countries("GeoLite2-Country", networks)
}

/// MaxMind GeoIP2 Country (the commercial one): the same records as GeoLite2's.
pub fn geoip2_country(networks: &[(Network, &str)]) -> MmdbWriter {
    countries("GeoIP2-Country", networks)
}

/// MaxMind GeoLite2 City: the country records plus a city and a location (a double).
pub fn geolite2_city(networks: &[(Network, &str)]) -> MmdbWriter {
    networks
        .iter()
        .fold(MmdbWriter::new("GeoLite2-City"), |w, (network, code)| {
            let Value::Map(mut record) = maxmind_country(code) else {
                unreachable!()
            };
            record.push((
                "city".to_owned(),
                Value::map([("names", Value::map([("en", Value::str("Testville"))]))]),
            ));
            record.push((
                "location".to_owned(),
                Value::map([
                    ("accuracy_radius", Value::Uint16(100)),
                    ("latitude", Value::Double(52.5)),
                    ("longitude", Value::Double(13.4)),
                ]),
            ));
            w.insert(*network, Value::Map(record))
        })
}

/// MaxMind GeoLite2 ASN: `(network, AS number, organisation)`.
pub fn geolite2_asn(networks: &[(Network, u32, &str)]) -> MmdbWriter {
    asns("GeoLite2-ASN", networks)
}

/// DB-IP IP to Country Lite (`dbip-country-lite.mmdb`): GeoLite2's country layout, plus
/// `is_in_european_union`.
pub fn dbip_country_lite(networks: &[(Network, &str)]) -> MmdbWriter {
    networks.iter().fold(
        MmdbWriter::new("DBIP-Country-Lite"),
        |w, (network, code)| {
            let mut country = country_map(code);
            if let Value::Map(fields) = &mut country {
                fields.push((
                    "is_in_european_union".to_owned(),
                    Value::Bool(*code == "DE"),
                ));
            }
            w.insert(
                *network,
                Value::map([
                    ("continent", Value::map([("code", Value::str("EU"))])),
                    ("country", country),
                ]),
            )
        },
    )
}

/// DB-IP IP to ASN Lite (`dbip-asn-lite.mmdb`): GeoLite2-ASN's layout, as its type says.
pub fn dbip_asn_lite(networks: &[(Network, u32, &str)]) -> MmdbWriter {
    asns("DBIP-ASN-Lite (compat=GeoLite2-ASN)", networks)
}

/// IPinfo Lite (`ipinfo_lite.mmdb`): `(network, country code, "AS64500", AS name)`, all
/// strings, with `country` the country's name rather than a map.
pub fn ipinfo_lite(networks: &[(Network, &str, &str, &str)]) -> MmdbWriter {
    networks.iter().fold(
        MmdbWriter::new("ipinfo ipinfo_lite.mmdb"),
        |w, (network, code, asn, name)| {
            w.insert(
                *network,
                Value::map([
                    ("as_domain", Value::str("hosting.example")),
                    ("as_name", Value::str(name)),
                    ("asn", Value::str(asn)),
                    ("continent", Value::str("Europe")),
                    ("continent_code", Value::str("EU")),
                    ("country", Value::String(format!("Country {code}"))),
                    ("country_code", Value::str(code)),
                ]),
            )
        },
    )
}
