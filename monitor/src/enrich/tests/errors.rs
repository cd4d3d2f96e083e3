//! Files that are missing, not files, too large, broken, or the wrong database.

use super::*;

#[test]
fn bad_files_are_clear_errors_and_never_hang() {
    use DatabaseError as E;
    let dir = Dir::new("errors");
    let msg = |path: &Path, roles| Database::open(path, LayoutSetting::Auto, roles).unwrap_err();

    let missing = dir.path("missing.mmdb");
    let e = msg(&missing, COUNTRY);
    assert!(matches!(e, E::Missing { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("MMDB database {}: no such file", missing.display())
    );
    assert_eq!(e.path(), missing);

    let e = msg(&dir.0, COUNTRY);
    assert!(
        matches!(
            e,
            E::NotRegularFile {
                kind: "a directory",
                ..
            }
        ),
        "{e:?}"
    );

    let fifo = dir.path("fifo.mmdb");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let e = msg(&fifo, COUNTRY);
    assert_eq!(
        e.to_string(),
        format!(
            "MMDB database {}: not a regular file (a FIFO)",
            fifo.display()
        )
    );
    let e = msg(Path::new("/dev/null"), COUNTRY);
    assert!(
        matches!(
            e,
            E::NotRegularFile {
                kind: "a device",
                ..
            }
        ),
        "{e:?}"
    );

    // Sparse: the size alone says no, before a byte is read.
    let huge = dir.path("huge.mmdb");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(MAX_DATABASE_BYTES + 1)
        .unwrap();
    let e = msg(&huge, COUNTRY);
    assert!(
        matches!(e, E::TooLarge { size, .. } if size == MAX_DATABASE_BYTES + 1),
        "{e:?}"
    );

    let good = mmdb::geolite2_asn(&asn_networks()).to_bytes();
    for (name, bytes) in [
        ("garbage.mmdb", mmdb::garbage()),
        ("truncated.mmdb", mmdb::truncated(&good)),
        ("empty.mmdb", Vec::new()),
        ("corrupt.mmdb", mmdb::corrupt_data_section(&good)),
    ] {
        let path = dir.path(name);
        mmdb::write_atomic(&path, &bytes).unwrap();
        let e = msg(&path, ASN);
        assert!(matches!(e, E::Invalid { .. }), "{name}: {e:?}");
        assert!(
            e.to_string().starts_with(&format!(
                "MMDB database {}: not a valid MMDB file: ",
                path.display()
            )),
            "{e}"
        );
    }

    // Valid files without what they are configured for.
    let city = write(&dir, "city.mmdb", &mmdb::geolite2_city(&country_networks()));
    let e = msg(&city, ASN);
    assert_eq!(
        e.to_string(),
        format!(
            "MMDB database {} (GeoLite2-City): no AS number found in its records; is it the \
             right file, or does it need country_layout/asn_layout?",
            city.display()
        )
    );
    let asn = write(&dir, "asn.mmdb", &mmdb::geolite2_asn(&asn_networks()));
    assert!(matches!(
        msg(&asn, COUNTRY),
        E::NoUsableFields {
            what: "country",
            ..
        }
    ));
    let bad_codes = mmdb::geolite2_country(&[(net("192.0.2.0/24"), "de")]);
    let bad_codes = write(&dir, "bad-codes.mmdb", &bad_codes);
    assert!(matches!(msg(&bad_codes, COUNTRY), E::NoUsableFields { .. }));
    let empty = write(
        &dir,
        "no-networks.mmdb",
        &MmdbWriter::new("GeoLite2-Country"),
    );
    assert!(matches!(msg(&empty, COUNTRY), E::NoUsableFields { .. }));
}
