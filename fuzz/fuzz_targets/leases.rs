//! Lease files of every format: the first byte picks the format (dnsmasq, odhcpd,
//! odhcpd-hosts, isc-dhcpd, kea-csv, in `LeaseFormat::ALL`'s order), the rest is the file. Never a
//! panic; leases and skipped lines bounded; names cleaned; skipped lines point into the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor::parsers::leases::{self, LeaseFormat, MAX_LEASES, MAX_SKIPPED};
use monitor_fuzz::{assert_device_name, assert_message};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let format = LeaseFormat::ALL[usize::from(first) % LeaseFormat::ALL.len()];
    // The agent reads files as UTF-8 (`read_to_string`): other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let parsed = leases::parse(format, text);
    let lines = text.lines().count();
    assert!(parsed.leases.len() <= MAX_LEASES);
    // ISC blocks may bind several addresses, but never more than the text has characters.
    assert!(parsed.leases.len() <= text.len(), "{format}: {parsed:?}");
    assert!(parsed.skipped.len() <= MAX_SKIPPED);
    for lease in &parsed.leases {
        if let Some(name) = &lease.hostname {
            assert_device_name(name);
        }
    }
    for skipped in &parsed.skipped {
        assert!(
            (1..=lines.max(1)).contains(&skipped.line),
            "{format}: line {} of {lines}",
            skipped.line
        );
        // A reason quotes at most 40 characters of the offending token, escaped (`\u{10}` is
        // six bytes for one), after a fixed text.
        assert_message(&skipped.reason, 512);
    }
});
