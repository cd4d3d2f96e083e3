//! The `[enrich]` table: database paths, layouts, the cache's size, and their errors.

use super::*;

fn enrich(src: &str) -> EnrichConfig {
    load_ok(&format!("lan = [\"br-lan\"]\n{src}"), &Overrides::default()).enrich
}

fn enrich_err(src: &str) -> String {
    load_err(&format!("lan = [\"br-lan\"]\n{src}"), &Overrides::default()).to_string()
}

#[test]
fn every_enrich_key_is_read() {
    let config = enrich(
        "[enrich]\ncountry_db = \"/var/lib/GeoIP/dbip-country-lite.mmdb\"\n\
         asn_db = \"/var/lib/GeoIP/GeoLite2-ASN.mmdb\"\ncountry_layout = \"maxmind\"\n\
         asn_layout = \"ipinfo\"\ncache_entries = 1024\n",
    );
    assert_eq!(
        config,
        EnrichConfig {
            country_db: Some("/var/lib/GeoIP/dbip-country-lite.mmdb".into()),
            asn_db: Some("/var/lib/GeoIP/GeoLite2-ASN.mmdb".into()),
            country_layout: LayoutSetting::MaxMind,
            asn_layout: LayoutSetting::Ipinfo,
            cache_entries: 1024,
            max_as_per_device: 32,
        }
    );
    assert!(config.is_enabled());
    assert!(!enrich("").is_enabled());
    assert_eq!(enrich("[enrich]\n"), EnrichConfig::default());
    assert_eq!(
        EnrichConfig::default().cache_entries,
        DEFAULT_ENRICH_CACHE_ENTRIES
    );
    assert!(ENRICH_CACHE_ENTRIES_RANGE.contains(&DEFAULT_ENRICH_CACHE_ENTRIES));
}

#[test]
fn one_file_may_serve_both_with_one_layout() {
    let same =
        "[enrich]\ncountry_db = \"/tmp/ipinfo_lite.mmdb\"\nasn_db = \"/tmp/ipinfo_lite.mmdb\"\n";
    assert_eq!(enrich(same).asn_db, enrich(same).country_db);
    let one_said = format!("{same}asn_layout = \"ipinfo\"\n");
    assert_eq!(enrich(&one_said).asn_layout, LayoutSetting::Ipinfo);
    let agreed = format!("{one_said}country_layout = \"ipinfo\"\n");
    assert_eq!(enrich(&agreed).country_layout, LayoutSetting::Ipinfo);
    // Different files may have different layouts.
    let two = "[enrich]\ncountry_db = \"/tmp/a.mmdb\"\nasn_db = \"/tmp/b.mmdb\"\n\
               country_layout = \"maxmind\"\nasn_layout = \"ipinfo\"\n";
    assert_eq!(enrich(two).asn_layout, LayoutSetting::Ipinfo);
}

#[test]
fn enrich_errors_name_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "[enrich]\ncountry_db = \"GeoLite2-Country.mmdb\"\n",
            r#"/etc/egress-monitor.toml:3:14: enrich.country_db: invalid database path "GeoLite2-Country.mmdb": must be absolute, like "/usr/share/GeoIP/GeoLite2-ASN.mmdb""#,
        ),
        (
            "[enrich]\nasn_db = 5\n",
            r#"/etc/egress-monitor.toml:3:10: enrich.asn_db: invalid type: integer `5`, expected an absolute path like "/usr/share/GeoIP/GeoLite2-ASN.mmdb""#,
        ),
        (
            "[enrich]\ncountry_layout = \"geolite\"\n",
            "/etc/egress-monitor.toml:3:18: enrich.country_layout: unknown variant `geolite`, expected one of `auto`, `maxmind`, `ipinfo`",
        ),
        (
            "[enrich]\ncache_entries = 8\n",
            "/etc/egress-monitor.toml:3:17: enrich.cache_entries: 8 is out of range: allowed 16 to 16777216",
        ),
        (
            "[enrich]\ncache_entries = \"64k\"\n",
            r#"/etc/egress-monitor.toml:3:17: enrich.cache_entries: invalid type: string "64k", expected a number from 16 to 16777216"#,
        ),
        (
            "[enrich]\ncity_db = \"/tmp/city.mmdb\"\n",
            "/etc/egress-monitor.toml:3:1: enrich.city_db: unknown key `city_db`, expected one of `country_db`, `asn_db`, `country_layout`, `asn_layout`, `cache_entries`, `max_as_per_device`",
        ),
        (
            "enrich = \"on\"\n",
            r#"/etc/egress-monitor.toml:2:10: enrich: invalid type: string "on", expected a table of enrichment settings, like [enrich]"#,
        ),
        (
            "[enrich]\ncountry_db = \"/tmp/ipinfo.mmdb\"\nasn_db = \"/tmp/ipinfo.mmdb\"\n\
             country_layout = \"maxmind\"\nasn_layout = \"ipinfo\"\n",
            r#"/etc/egress-monitor.toml:6:14: enrich.asn_layout: "ipinfo" contradicts country_layout = "maxmind": asn_db and country_db are the same file, read with one layout"#,
        ),
    ];
    for (src, expected) in cases {
        assert_eq!(enrich_err(src), *expected, "{src:?}");
    }
}
