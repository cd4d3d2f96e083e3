//! Pure parsers that name devices and destinations: DNS answers and TLS ClientHellos seen on the
//! LAN say which name a device meant by an address; DHCP requests and DHCP servers' lease files
//! say what a device calls itself; [`domain`] turns a host name into a bounded metric label.
//!
//! Every parser here is a pure function of its input: no I/O, no clock, no global state, so each
//! is tested with table-driven cases, real captured bytes (`monitor/tests/fixtures/`) and property
//! tests. Input comes from the network or from files other programs write, so none of them panics
//! on any input and each caps what it returns: a hostile packet costs a bounded amount of memory.

pub mod dhcp;
pub mod dns;
pub mod domain;
pub mod leases;
pub mod tls;

#[cfg(test)]
mod fuzz_tests;

/// Longest DNS name in presentation form, without the trailing dot (RFC 1035 §2.3.4 allows 255
/// octets on the wire, which is 253 characters as text).
pub const MAX_DNS_NAME_LEN: usize = 253;

/// Longest device name kept from DHCP or a lease file: one DNS label (RFC 1035 §2.3.4). Longer
/// names are cut here, so a device cannot blow up a metric label.
pub const MAX_DEVICE_NAME_LEN: usize = 63;

/// Normalises a DNS host name as a device asked for it (a DNS question, a TLS server name):
/// lowercase, no trailing dot, at most 253 characters, labels of 1 to 63 characters made of ASCII
/// letters, digits, `-` and `_` (underscores appear in real service names such as
/// `_dmarc.example.com`). Returns `None` for anything else, such as the escaped binary labels
/// hickory produces for non-printable bytes, so such input never reaches a metric label.
pub(crate) fn normalize_dns_name(raw: &str) -> Option<String> {
    let name = raw.strip_suffix('.').unwrap_or(raw);
    if name.is_empty() || name.len() > MAX_DNS_NAME_LEN {
        return None;
    }
    let valid_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.split('.').all(valid_label) {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

/// Cleans a name a device gave itself (DHCP option 12, a lease file's hostname column) into a
/// value safe for a label and a log line: surrounding whitespace and trailing dots removed, case
/// kept, at most [`MAX_DEVICE_NAME_LEN`] bytes (cut at a character boundary). Names with control
/// characters or invisible formatting characters (zero-width, bidirectional overrides, which
/// could make one name look like another on a dashboard) are rejected whole rather than
/// repaired, since what remains would not be what the device sent.
pub(crate) fn clean_device_name(raw: &str) -> Option<String> {
    // Dots and whitespace mixed at the end ("tv. .") all go: trimming each once in turn would
    // leave "tv." (found by the `leases` fuzz target).
    fn trim_end(s: &str) -> &str {
        s.trim_end_matches(|c: char| c == '.' || c.is_whitespace())
    }
    let name = trim_end(raw.trim_start());
    if name.is_empty() || name.chars().any(is_unsafe_char) {
        return None;
    }
    let mut end = name.len().min(MAX_DEVICE_NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    // The cut may land just after a dot or a space: trim again, so a long name never ends in
    // one either ("my-l......" cut at 63 bytes was "my-l" and 59 dots).
    let name = trim_end(&name[..end]);
    (!name.is_empty()).then(|| name.to_owned())
}

/// Control characters and the invisible formatting characters of Unicode's "Cf" category that
/// matter for spoofing: zero-width spaces and joiners, directional marks, embeddings, overrides
/// and isolates, word joiners and the byte-order mark.
fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}')
}

/// Parses hex bytes written with optional `:` or `-` separators (`aa:bb:cc`, `aabbcc`,
/// `0:1b:2`) as lease files write MAC addresses, DUIDs and client identifiers. With separators,
/// each group may have one or two digits (glibc's `ether_ntoa` drops leading zeros). Returns
/// `None` past `max_len` bytes, so a hostile file cannot make it allocate much.
pub(crate) fn parse_hex_bytes(text: &str, max_len: usize) -> Option<Vec<u8>> {
    if text.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    if text.contains([':', '-']) {
        for group in text.split([':', '-']) {
            if group.is_empty() || group.len() > 2 || out.len() >= max_len {
                return None;
            }
            out.push(hex_byte(group)?);
        }
    } else {
        if !text.len().is_multiple_of(2) || text.len() / 2 > max_len {
            return None;
        }
        for i in (0..text.len()).step_by(2) {
            out.push(hex_byte(text.get(i..i + 2)?)?);
        }
    }
    Some(out)
}

fn hex_byte(digits: &str) -> Option<u8> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_dns_names() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Example.COM.", Some("example.com")),
            ("a.b.example.co.uk", Some("a.b.example.co.uk")),
            ("_dmarc.example.com", Some("_dmarc.example.com")),
            ("xn--bcher-kva.example", Some("xn--bcher-kva.example")),
            ("localhost", Some("localhost")),
            ("", None),
            (".", None),
            ("a..b", None),
            ("a b.example", None),
            ("bücher.example", None),
            ("\\000.example", None),
            ("a.example..", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_dns_name(raw).as_deref(), *want, "{raw:?}");
        }
        let label = "a".repeat(63);
        assert!(normalize_dns_name(&format!("{label}.example")).is_some());
        assert!(normalize_dns_name(&format!("{label}a.example")).is_none());
        let long = vec!["abc"; 64].join(".");
        assert_eq!(long.len(), 255);
        assert!(normalize_dns_name(&long).is_none());
        assert!(normalize_dns_name(&long[2..]).is_some());
    }

    #[test]
    fn cleans_device_names() {
        let cases: &[(&str, Option<&str>)] = &[
            ("my-phone", Some("my-phone")),
            ("  Living Room TV \n", Some("Living Room TV")),
            ("Living\nRoom", None),
            ("laptop.lan.", Some("laptop.lan")),
            ("Zoë's iPhone", Some("Zoë's iPhone")),
            ("", None),
            ("   ", None),
            ("...", None),
            ("evil\u{1b}[31m", None),
            ("tab\there", None),
            ("admin\u{202e}lmth.exe", None),
            ("zero\u{200b}width", None),
        ];
        for (raw, want) in cases {
            assert_eq!(clean_device_name(raw).as_deref(), *want, "{raw:?}");
        }
        let long = "x".repeat(100);
        assert_eq!(clean_device_name(&long).unwrap().len(), MAX_DEVICE_NAME_LEN);
        // A multi-byte character straddling the cap is dropped whole.
        let straddle = format!("{}é", "x".repeat(62));
        assert_eq!(clean_device_name(&straddle).unwrap(), "x".repeat(62));
        // Dots and spaces where the name ends, also where the cap cuts it, are trimmed.
        assert_eq!(clean_device_name("tv. . ").as_deref(), Some("tv"));
        let dots = format!("my-l{}x", ".".repeat(80));
        assert_eq!(clean_device_name(&dots).as_deref(), Some("my-l"));
        let spaces = format!("{} tail", "x".repeat(62));
        assert_eq!(clean_device_name(&spaces).unwrap(), "x".repeat(62));
        assert_eq!(clean_device_name(&format!("{}x", ".".repeat(80))), None);
    }

    /// The `leases` fuzz target's input (first byte: the format, `LeaseFormat::ALL[0]`, dnsmasq)
    /// whose host name, cut at 63 bytes, ended in dots.
    #[test]
    fn fuzz_long_host_name_cut_after_a_dot() {
        let bytes = include_bytes!("fixtures/fuzz_leases_trailing_dots.bin");
        let format = leases::LeaseFormat::ALL[usize::from(bytes[0]) % 5];
        let text = std::str::from_utf8(&bytes[1..]).unwrap();
        let parsed = leases::parse(format, text);
        let names: Vec<&str> = parsed
            .leases
            .iter()
            .filter_map(|l| l.hostname.as_deref())
            .collect();
        assert!(names.contains(&"my-l"), "{names:?}");
        for name in names {
            assert!(name.len() <= MAX_DEVICE_NAME_LEN, "{name:?}");
            assert!(!name.ends_with(['.', ' ']), "{name:?}");
        }
    }

    #[test]
    fn parses_hex_bytes() {
        let cases: &[(&str, Option<&[u8]>)] = &[
            ("aa:bb:cc", Some(&[0xaa, 0xbb, 0xcc])),
            ("AA-BB-0c", Some(&[0xaa, 0xbb, 0x0c])),
            ("0:1b:2", Some(&[0x00, 0x1b, 0x02])),
            ("001122", Some(&[0x00, 0x11, 0x22])),
            ("00112", None),
            ("", None),
            ("aa::bb", None),
            ("aaa:bb", None),
            ("zz", None),
            ("+1", None),
            ("aa:bb:", None),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_hex_bytes(raw, 8).as_deref(), *want, "{raw:?}");
        }
        assert!(parse_hex_bytes("00:11:22", 2).is_none());
        assert!(parse_hex_bytes("001122", 2).is_none());
    }
}
