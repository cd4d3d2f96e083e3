//! Each vendor's layout, and a home-made one.

use super::*;

#[test]
fn every_vendor_layout_yields_country_asn_and_org() {
    let dir = Dir::new("vendors");
    let countries = [
        (
            "GeoLite2-Country",
            mmdb::geolite2_country(&country_networks()),
        ),
        ("GeoIP2-Country", mmdb::geoip2_country(&country_networks())),
        ("GeoLite2-City", mmdb::geolite2_city(&country_networks())),
        (
            "DBIP-Country-Lite",
            mmdb::dbip_country_lite(&country_networks()),
        ),
    ];
    let asns = [
        ("GeoLite2-ASN", mmdb::geolite2_asn(&asn_networks())),
        (
            "DBIP-ASN-Lite (compat=GeoLite2-ASN)",
            mmdb::dbip_asn_lite(&asn_networks()),
        ),
    ];
    let cases = [
        ("192.0.2.1", enrichment(Some("DE"), None, None)),
        (
            "198.51.100.7",
            enrichment(Some("CN"), Some(64_501), Some("Vendor Cloud Ltd")),
        ),
        (
            "::ffff:198.51.100.7",
            enrichment(Some("CN"), Some(64_501), Some("Vendor Cloud Ltd")),
        ),
        (
            "2001:db8::1",
            enrichment(Some("NL"), Some(64_500), Some("Example Hosting GmbH")),
        ),
        ("203.0.113.1", Enrichment::default()),
        ("2001:db9::1", Enrichment::default()),
    ];
    for (country_type, country_db) in &countries {
        for (asn_type, asn_db) in &asns {
            let country = open(&write(&dir, "country.mmdb", country_db), COUNTRY);
            let asn = open(&write(&dir, "asn.mmdb", asn_db), ASN);
            assert_eq!(country.database_type(), *country_type);
            assert_eq!(asn.database_type(), *asn_type);
            assert_eq!(country.layout(), Layout::MaxMind);
            assert_eq!(country.layout_source(), LayoutSource::Metadata);
            let databases = Databases::new(Some(country), Some(asn));
            for (addr, expected) in &cases {
                let (found, error) = databases.lookup(ip(addr));
                assert!(error.is_none(), "{error:?}");
                assert_eq!(&found, expected, "{addr} in {country_type} and {asn_type}");
            }
        }
    }

    // IPinfo Lite: one file for both.
    let ipinfo = mmdb::ipinfo_lite(&[
        (
            net("198.51.100.0/24"),
            "CN",
            "AS64501",
            "Vendor Cloud\tLtd\u{7}",
        ),
        (
            net("2001:db8::/32"),
            "NL",
            "AS64500",
            "Example Hosting GmbH",
        ),
        (net("192.0.2.0/24"), "DE", "", ""),
    ]);
    let both = open(&write(&dir, "ipinfo.mmdb", &ipinfo), BOTH);
    assert_eq!(both.layout(), Layout::Ipinfo);
    let databases = Databases::new(Some(both.clone()), Some(both));
    assert_eq!(databases.memory_bytes(), ipinfo.to_bytes().len() as u64);
    for (addr, expected) in &cases {
        assert_eq!(
            &databases.lookup(ip(addr)).0,
            expected,
            "{addr} in IPinfo Lite"
        );
    }
}

#[test]
fn an_unknown_layout_yields_what_it_can_and_a_setting_overrides() {
    let dir = Dir::new("layouts");
    let custom = MmdbWriter::new("Home-Made").insert(
        net("192.0.2.0/24"),
        Value::map([
            ("country_code", Value::str("FR")),
            ("country", Value::map([("iso_code", Value::str("DE"))])),
            ("asn", Value::Uint32(64_502)),
            ("as_name", Value::str("Home Net")),
            (
                "extra",
                Value::Array(vec![Value::Bool(true), Value::Double(1.5)]),
            ),
        ]),
    );
    let path = write(&dir, "custom.mmdb", &custom);
    let guessed = Database::open(&path, LayoutSetting::Auto, BOTH).unwrap();
    assert_eq!(
        (guessed.layout(), guessed.layout_source()),
        (Layout::MaxMind, LayoutSource::Guess)
    );
    assert_eq!(
        guessed.lookup(ip("192.0.2.1")).unwrap(),
        Found {
            country: Country::parse("DE"),
            asn: Some(Asn(64_502)),
            org: Some("Home Net".into()),
        }
    );
    let told = Database::open(&path, LayoutSetting::Ipinfo, BOTH).unwrap();
    assert_eq!(told.layout_source(), LayoutSource::Setting);
    assert_eq!(
        told.lookup(ip("192.0.2.1")).unwrap().country,
        Country::parse("FR")
    );
}
