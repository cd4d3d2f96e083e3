//! The writer's files, read back with the `maxminddb` crate the agent uses.

use std::net::IpAddr;

use maxminddb::Reader;
use serde_json::{Value as Json, json};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn open(writer: &MmdbWriter) -> Reader<Vec<u8>> {
    Reader::from_source(writer.to_bytes()).unwrap_or_else(|e| panic!("{writer:?}: {e}"))
}

/// The whole record at `addr`, as JSON, or `None` where the database has nothing.
fn record(reader: &Reader<Vec<u8>>, addr: &str) -> Option<Json> {
    reader.lookup(ip(addr)).unwrap().decode::<Json>().unwrap()
}

fn tag(name: &str) -> Value {
    Value::map([("tag", Value::str(name))])
}

fn nested() -> MmdbWriter {
    // Out of order on purpose: the /24 before the /16 that holds it.
    MmdbWriter::new("Test-Nested")
        .insert(net("10.1.2.0/24"), tag("inner"))
        .insert(net("10.1.0.0/16"), tag("outer"))
        .insert(net("10.1.2.128/32"), tag("host"))
        .insert(net("2001:db8::/32"), tag("v6-outer"))
        .insert(net("2001:db8:1::/48"), tag("v6-inner"))
        .insert(net("203.0.113.0/24"), tag("outer"))
}

#[test]
fn longest_prefix_wins_for_ipv4_and_ipv6_at_every_record_size() {
    for size in [RecordSize::Bits24, RecordSize::Bits28, RecordSize::Bits32] {
        let reader = open(&nested().record_size(size));
        let cases = [
            ("10.1.0.1", Some("outer")),
            ("10.1.255.255", Some("outer")),
            ("10.1.2.0", Some("inner")),
            ("10.1.2.127", Some("inner")),
            ("10.1.2.128", Some("host")),
            ("10.1.2.129", Some("inner")),
            ("10.2.0.0", None),
            ("10.0.255.255", None),
            ("203.0.113.77", Some("outer")),
            ("198.51.100.1", None),
            ("2001:db8::1", Some("v6-outer")),
            ("2001:db8:1::1", Some("v6-inner")),
            ("2001:db8:1:ffff::", Some("v6-inner")),
            ("2001:db8:2::1", Some("v6-outer")),
            ("2001:db9::1", None),
            ("::1", None),
            // IPv4 lives at ::/96: the IPv4-compatible spelling finds the same record.
            ("::10.1.2.3", Some("inner")),
        ];
        for (addr, expected) in cases {
            let found = record(&reader, addr).map(|r| r["tag"].as_str().unwrap().to_owned());
            assert_eq!(found.as_deref(), expected, "{addr} with {size:?}");
        }
        // A network nothing splits comes back whole; around 10.1.2.128/32 the /24 is split.
        let network = |addr| {
            reader
                .lookup(ip(addr))
                .unwrap()
                .network()
                .unwrap()
                .to_string()
        };
        assert_eq!(network("203.0.113.77"), "203.0.113.0/24", "{size:?}");
        assert_eq!(network("10.1.2.5"), "10.1.2.0/25", "{size:?}");
    }
}

#[test]
fn metadata_says_what_the_writer_was_told() {
    let writer = nested()
        .build_epoch(1_234_567_890)
        .record_size(RecordSize::Bits32);
    let reader = open(&writer);
    let meta = reader.metadata();
    assert_eq!(meta.binary_format_major_version, 2);
    assert_eq!(meta.binary_format_minor_version, 0);
    assert_eq!(meta.build_epoch, 1_234_567_890);
    assert_eq!(meta.database_type, "Test-Nested");
    assert_eq!(meta.description["en"], "Test-Nested for tests");
    assert_eq!(meta.ip_version, 6);
    assert_eq!(meta.languages, ["en"]);
    assert_eq!(meta.record_size, 32);
    assert!(meta.node_count > 128, "{}", meta.node_count);
    reader.verify().unwrap();
}

#[test]
fn every_value_type_reads_back() {
    let long = "x".repeat(70_000);
    let record = Value::map([
        ("string", Value::str("Grüße")),
        ("long", Value::String(long.clone())),
        ("double", Value::Double(-12.5)),
        ("u16", Value::Uint16(65_535)),
        ("u32", Value::Uint32(4_000_000_000)),
        ("u64", Value::Uint64(u64::MAX)),
        ("zero", Value::Uint32(0)),
        ("yes", Value::Bool(true)),
        ("no", Value::Bool(false)),
        (
            "array",
            Value::Array(vec![
                Value::str("a"),
                Value::Uint16(2),
                Value::Array(vec![]),
            ]),
        ),
        ("map", Value::map([("inner", Value::map([]))])),
    ]);
    let reader = open(&MmdbWriter::new("Test-Types").insert(net("192.0.2.0/24"), record));
    reader.verify().unwrap();
    assert_eq!(
        self::record(&reader, "192.0.2.1").unwrap(),
        json!({
            "string": "Grüße", "long": long, "double": -12.5, "u16": 65_535,
            "u32": 4_000_000_000u32, "u64": u64::MAX, "zero": 0, "yes": true, "no": false,
            "array": ["a", 2, []], "map": {"inner": {}},
        })
    );
}

#[test]
fn vendor_layouts_hold_the_fields_the_agent_reads() {
    let geo = open(&geolite2_country(&[
        (net("192.0.2.0/24"), "DE"),
        (net("2001:db8::/32"), "US"),
    ]));
    assert_eq!(geo.metadata().database_type, "GeoLite2-Country");
    let de = record(&geo, "192.0.2.9").unwrap();
    assert_eq!(de["country"]["iso_code"], "DE");
    assert_eq!(de["registered_country"]["iso_code"], "DE");
    assert_eq!(
        record(&geo, "2001:db8::5").unwrap()["country"]["iso_code"],
        "US"
    );
    assert_eq!(record(&geo, "198.51.100.1"), None);

    for (writer, database_type) in [
        (
            geoip2_country(&[(net("192.0.2.0/24"), "FR")]),
            "GeoIP2-Country",
        ),
        (
            geolite2_city(&[(net("192.0.2.0/24"), "FR")]),
            "GeoLite2-City",
        ),
        (
            dbip_country_lite(&[(net("192.0.2.0/24"), "FR")]),
            "DBIP-Country-Lite",
        ),
    ] {
        let reader = open(&writer);
        assert_eq!(reader.metadata().database_type, database_type);
        assert_eq!(
            record(&reader, "192.0.2.1").unwrap()["country"]["iso_code"],
            "FR"
        );
    }

    let example = [(net("203.0.113.0/24"), 64_500, "Example Hosting GmbH")];
    for (writer, database_type) in [
        (geolite2_asn(&example), "GeoLite2-ASN"),
        (
            dbip_asn_lite(&example),
            "DBIP-ASN-Lite (compat=GeoLite2-ASN)",
        ),
    ] {
        let reader = open(&writer);
        assert_eq!(reader.metadata().database_type, database_type);
        assert_eq!(
            record(&reader, "203.0.113.1").unwrap(),
            json!({"autonomous_system_number": 64_500,
                   "autonomous_system_organization": "Example Hosting GmbH"})
        );
    }

    let ipinfo = open(&ipinfo_lite(&[(
        net("198.51.100.0/24"),
        "CN",
        "AS64501",
        "Vendor Cloud",
    )]));
    let r = record(&ipinfo, "198.51.100.200").unwrap();
    assert_eq!(
        (&r["country_code"], &r["asn"], &r["as_name"]),
        (&json!("CN"), &json!("AS64501"), &json!("Vendor Cloud"))
    );
}

#[test]
fn write_replaces_the_file_atomically() {
    let dir = std::env::temp_dir().join(format!("egress-lab-mmdb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("country.mmdb");
    geolite2_country(&[(net("192.0.2.0/24"), "DE")])
        .write(&path)
        .unwrap();
    let first = Reader::from_source(std::fs::read(&path).unwrap()).unwrap();
    geolite2_country(&[(net("192.0.2.0/24"), "NL")])
        .write(&path)
        .unwrap();
    let second = Reader::from_source(std::fs::read(&path).unwrap()).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        record(&first, "192.0.2.1").unwrap()["country"]["iso_code"],
        "DE"
    );
    assert_eq!(
        record(&second, "192.0.2.1").unwrap()["country"]["iso_code"],
        "NL"
    );
    assert_eq!(leftovers, ["country.mmdb"]);
}

#[test]
fn broken_files_are_refused_or_fail_their_lookups() {
    let good = geolite2_asn(&[(net("203.0.113.0/24"), 64_500, "Example Hosting GmbH")]).to_bytes();
    assert!(Reader::from_source(garbage()).is_err());
    assert!(Reader::from_source(truncated(&good)).is_err());
    assert!(Reader::from_source(Vec::new()).is_err());

    let corrupt = Reader::from_source(corrupt_data_section(&good)).unwrap();
    assert!(
        corrupt
            .lookup(ip("203.0.113.1"))
            .unwrap()
            .decode::<Json>()
            .is_err()
    );
    assert!(corrupt.verify().is_err());
    // Outside every network there is nothing to decode, so nothing fails.
    assert_eq!(record(&corrupt, "192.0.2.1"), None);
}

#[test]
fn networks_parse_and_print() {
    assert_eq!(net("192.0.2.0/24").to_string(), "192.0.2.0/24");
    assert_eq!(net("2001:db8::1").to_string(), "2001:db8::1/128");
    assert_eq!(Network::from((ip("10.0.0.0"), 8)), net("10.0.0.0/8"));
    assert!("10.0.0.0/x".parse::<Network>().is_err());
    assert!(std::panic::catch_unwind(|| net("10.0.0.0/33")).is_err());
}
