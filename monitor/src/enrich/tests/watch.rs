//! The file watcher's side: opening, re-opening, one file for both; and the cache in front.

use super::*;
use crate::config::EnrichConfig;

fn config(country_db: Option<&Path>, asn_db: Option<&Path>) -> EnrichConfig {
    EnrichConfig {
        country_db: country_db.map(Path::to_owned),
        asn_db: asn_db.map(Path::to_owned),
        ..EnrichConfig::default()
    }
}

fn country_of(files: &DatabaseFiles, addr: &str) -> Option<String> {
    files
        .databases()
        .lookup(ip(addr))
        .0
        .country
        .map(|c| c.to_string())
}

#[test]
fn a_replaced_file_is_reopened_and_a_broken_one_keeps_the_old() {
    let dir = Dir::new("reopen");
    let path = dir.path("country.mmdb");
    let version = |code| mmdb::geolite2_country(&[(net("192.0.2.0/24"), code)]);
    let mut files = DatabaseFiles::new(&config(Some(&path), None));

    // Not there yet: one error, then quiet until it appears.
    let check = files.check();
    assert!(!check.changed);
    assert!(
        matches!(check.errors[..], [DatabaseError::Missing { .. }]),
        "{check:?}"
    );
    assert!(files.check().errors.is_empty());
    assert!(files.databases().is_empty());

    version("DE").write(&path).unwrap();
    let check = files.check();
    assert!(check.changed && check.errors.is_empty(), "{check:?}");
    assert_eq!(check.opened.len(), 1);
    assert_eq!(country_of(&files, "192.0.2.1").as_deref(), Some("DE"));
    assert!(!files.check().changed, "unchanged file re-opened");

    version("NL").write(&path).unwrap();
    assert!(files.check().changed);
    assert_eq!(country_of(&files, "192.0.2.1").as_deref(), Some("NL"));

    // Broken replacements: reported once each, and NL stays.
    mmdb::write_atomic(&path, &mmdb::garbage()).unwrap();
    let check = files.check();
    assert!(!check.changed);
    assert!(
        matches!(check.errors[..], [DatabaseError::Invalid { .. }]),
        "{check:?}"
    );
    assert!(
        files.check().errors.is_empty(),
        "the same broken file reported twice"
    );
    assert_eq!(country_of(&files, "192.0.2.1").as_deref(), Some("NL"));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        files.check().errors[..],
        [DatabaseError::Missing { .. }]
    ));
    assert!(files.check().errors.is_empty());
    assert_eq!(country_of(&files, "192.0.2.1").as_deref(), Some("NL"));

    version("FR").write(&path).unwrap();
    assert!(files.check().changed);
    assert_eq!(country_of(&files, "192.0.2.1").as_deref(), Some("FR"));
}

#[test]
fn one_file_for_both_is_opened_once() {
    let dir = Dir::new("shared");
    let path = write(
        &dir,
        "ipinfo.mmdb",
        &mmdb::ipinfo_lite(&[(net("192.0.2.0/24"), "DE", "AS64500", "Example")]),
    );
    let mut files = DatabaseFiles::new(&config(Some(&path), Some(&path)));
    let check = files.check();
    assert_eq!(check.opened.len(), 1);
    assert_eq!(check.opened[0].roles(), BOTH);
    let databases = files.databases();
    assert!(Arc::ptr_eq(
        databases.country().unwrap(),
        databases.asn().unwrap()
    ));
    assert_eq!(
        databases.lookup(ip("192.0.2.1")).0,
        enrichment(Some("DE"), Some(64_500), Some("Example"))
    );
}

#[test]
fn the_enricher_caches_and_forgets_on_replace() {
    let dir = Dir::new("enricher");
    let path = write(&dir, "asn.mmdb", &mmdb::geolite2_asn(&asn_networks()));
    let mut files = DatabaseFiles::new(&config(None, Some(&path)));
    assert!(files.check().errors.is_empty());
    let mut enricher = Enricher::new(files.databases(), 16);
    let expected = enrichment(None, Some(64_500), Some("Example Hosting GmbH"));
    assert_eq!(enricher.lookup(ip("2001:db8::1")), expected);
    assert_eq!(enricher.lookup(ip("2001:db8::1")), expected);
    assert_eq!(enricher.lookup(ip("203.0.113.1")), Enrichment::default());
    assert_eq!(
        enricher.stats(),
        EnrichStats {
            lookups: 3,
            cache_hits: 1,
            lookup_errors: 0
        }
    );
    for i in 0..100u32 {
        enricher.lookup(IpAddr::from([10, 0, 0, i as u8]));
        assert!(enricher.cached() <= 16);
    }

    mmdb::geolite2_asn(&[(net("2001:db8::/32"), 64_509, "New Owner")])
        .write(&path)
        .unwrap();
    assert!(files.check().changed);
    enricher.replace(files.databases());
    assert_eq!(enricher.cached(), 0);
    assert_eq!(
        enricher.lookup(ip("2001:db8::1")),
        enrichment(None, Some(64_509), Some("New Owner"))
    );

    let mut none = Enricher::new(Databases::default(), 16);
    assert_eq!(none.lookup(ip("192.0.2.1")), Enrichment::default());
    assert_eq!(none.cached(), 0);
}
