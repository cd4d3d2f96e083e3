//! The server name (SNI) in a TLS ClientHello: the destination's name for devices that resolve
//! names themselves (DNS over HTTPS, hard-coded resolvers), whose DNS answers the router never sees.
//!
//! Parsing is tls-parser's. A capture may hold only the first bytes of a connection (2048, say),
//! and a ClientHello with a post-quantum key share is larger than that; since the server_name
//! extension usually comes early, a record cut short still names its server when the extension
//! lies wholly inside the captured bytes. For that case the record header (5 bytes, with
//! tls-parser's `parse_tls_record_header`) and the handshake header (type and 24-bit length) are
//! read here, tls-parser's `parse_tls_handshake_client_hello` parses the fixed fields, and its
//! `parse_tls_extension` parses the extensions one at a time until the bytes run out.

use tls_parser::{
    MAX_RECORD_LEN, SNIType, TlsExtension, TlsMessage, TlsMessageHandshake, TlsRecordType,
    parse_tls_extension, parse_tls_handshake_client_hello, parse_tls_plaintext,
    parse_tls_record_header,
};

use super::{MAX_DNS_NAME_LEN, normalize_dns_name};

/// TLS record header: content type, version, length.
const RECORD_HEADER_LEN: usize = 5;
/// Handshake header: message type, 24-bit length.
const HANDSHAKE_HEADER_LEN: usize = 4;
/// Handshake message type of a ClientHello (RFC 8446 §4).
const CLIENT_HELLO: u8 = 1;
/// Extension type of server_name (RFC 6066 §3).
const SERVER_NAME: u16 = 0;
/// At most this many characters of an invalid server name are kept in the error, for the log.
const MAX_ERROR_NAME_CHARS: usize = 64;

/// Why a payload yields no server name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The first byte is not a handshake record's content type (22): not TLS, or not the start
    /// of the stream.
    #[error("not a TLS handshake record: content type {0}, expected 22")]
    NotHandshake(u8),
    /// A handshake record, but its first message is not a ClientHello (the server's side of the
    /// connection, say).
    #[error("TLS handshake message type {0} is not a ClientHello (1)")]
    NotClientHello(u8),
    /// The record is longer than the bytes captured, and the server_name extension is not
    /// wholly inside what was captured.
    #[error(
        "TLS record truncated: {needed} bytes needed, {captured} captured, and no complete server_name extension in them"
    )]
    Truncated {
        /// Bytes the record needs, with its header.
        needed: usize,
        /// Bytes there are.
        captured: usize,
    },
    /// A whole ClientHello without a server_name extension (or with an empty one): the client
    /// connected to an address, not a name.
    #[error("ClientHello has no server_name extension")]
    NoServerName,
    /// The server name is not a DNS host name: not ASCII, an empty or over-long label, or more
    /// than 253 characters. The error keeps at most 64 characters of it, for the log.
    #[error("server name {0:?} is not a valid DNS host name")]
    InvalidServerName(String),
    /// The bytes do not follow the ClientHello structure.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// Returns the host name a TLS client asked for in its ClientHello, lowercase and without a
/// trailing dot, validated as a DNS name of at most 253 characters.
///
/// `payload` is the start of the client's side of a TCP stream. A complete record is parsed whole
/// by tls-parser; a record longer than `payload` (a capture cut short, or a ClientHello split over
/// several records) is parsed as far as the bytes go, and its server name is returned if the
/// server_name extension is complete. Otherwise the result is [`TlsError::Truncated`].
pub fn client_hello_server_name(payload: &[u8]) -> Result<String, TlsError> {
    let Some(&content_type) = payload.first() else {
        return Err(TlsError::Truncated {
            needed: RECORD_HEADER_LEN,
            captured: 0,
        });
    };
    if content_type != u8::from(TlsRecordType::Handshake) {
        return Err(TlsError::NotHandshake(content_type));
    }
    let Ok((_, header)) = parse_tls_record_header(payload) else {
        return Err(TlsError::Truncated {
            needed: RECORD_HEADER_LEN,
            captured: payload.len(),
        });
    };
    if header.len > MAX_RECORD_LEN {
        return Err(TlsError::Malformed("record longer than TLS allows"));
    }
    let needed = RECORD_HEADER_LEN + usize::from(header.len);
    if let Some(record) = payload.get(..needed)
        && let Ok((_, plaintext)) = parse_tls_plaintext(record)
    {
        return match plaintext.msg.first() {
            Some(TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello))) => {
                server_name_in_extensions(hello.ext.unwrap_or_default(), None)
            }
            _ => match record.get(RECORD_HEADER_LEN) {
                Some(&CLIENT_HELLO) | None => Err(TlsError::Malformed("unexpected record content")),
                Some(&other) => Err(TlsError::NotClientHello(other)),
            },
        };
    }
    // Cut short, a handshake message spread over records, or malformed: parse what is there.
    partial_server_name(payload, needed)
}

/// Finds the server name in a ClientHello whose record is not all there (or that tls-parser did
/// not accept whole), from the fields that are.
fn partial_server_name(payload: &[u8], needed: usize) -> Result<String, TlsError> {
    let captured = payload.len();
    let fragment = &payload[RECORD_HEADER_LEN..needed.min(captured)];
    let Some((&message_type, rest)) = fragment.split_first() else {
        return Err(TlsError::Truncated { needed, captured });
    };
    if message_type != CLIENT_HELLO {
        return Err(TlsError::NotClientHello(message_type));
    }
    let Some(&[a, b, c]) = rest.first_chunk::<3>() else {
        return Err(TlsError::Truncated { needed, captured });
    };
    let message_len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
    let body = &fragment[HANDSHAKE_HEADER_LEN..];
    // Not all there: cut short, or a message longer than its record (continued in the next).
    let cut_short = (body.len() < message_len).then(|| TlsError::Truncated {
        needed: needed.max(RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + message_len),
        captured,
    });
    let body = &body[..message_len.min(body.len())];
    let Ok((after_fixed_fields, hello)) = parse_tls_handshake_client_hello(body) else {
        return Err(cut_short.unwrap_or(TlsError::Malformed("ClientHello fields")));
    };
    let extensions = match hello.ext {
        Some(extensions) => extensions,
        // tls-parser leaves out an extensions block that is not complete; take what there is.
        None => match after_fixed_fields.split_first_chunk::<2>() {
            Some((declared, rest)) => {
                let declared = usize::from(u16::from_be_bytes(*declared));
                &rest[..declared.min(rest.len())]
            }
            None => return Err(cut_short.unwrap_or(TlsError::NoServerName)),
        },
    };
    server_name_in_extensions(extensions, cut_short)
}

/// Parses extensions one at a time and returns the first host_name of the server_name
/// extension. An extension that is whole but that tls-parser rejects is skipped by its length, so
/// one odd extension does not hide the server name; an incomplete one ends the search. Without a
/// server name the result is `cut_short` if the extensions were cut, else
/// [`TlsError::NoServerName`].
fn server_name_in_extensions(
    mut extensions: &[u8],
    cut_short: Option<TlsError>,
) -> Result<String, TlsError> {
    while let Some((&[t0, t1, l0, l1], rest)) = extensions.split_first_chunk::<4>() {
        let ext_type = u16::from_be_bytes([t0, t1]);
        let ext_len = usize::from(u16::from_be_bytes([l0, l1]));
        if rest.len() < ext_len {
            break;
        }
        let parsed = parse_tls_extension(extensions);
        extensions = &rest[ext_len..];
        match parsed {
            Ok((_, TlsExtension::SNI(names))) => {
                let Some((_, name)) = names.iter().find(|(t, _)| *t == SNIType::HostName) else {
                    return Err(TlsError::NoServerName);
                };
                return validate(name);
            }
            Err(_) if ext_type == SERVER_NAME => {
                return Err(TlsError::Malformed("server_name extension"));
            }
            _ => {}
        }
    }
    Err(cut_short.unwrap_or(TlsError::NoServerName))
}

/// Checks that the SNI bytes are a DNS host name and normalises them.
fn validate(name: &[u8]) -> Result<String, TlsError> {
    std::str::from_utf8(name)
        .ok()
        .filter(|s| s.len() <= MAX_DNS_NAME_LEN + 1)
        .and_then(normalize_dns_name)
        .ok_or_else(|| {
            TlsError::InvalidServerName(
                String::from_utf8_lossy(name)
                    .chars()
                    .take(MAX_ERROR_NAME_CHARS)
                    .collect(),
            )
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const TLS13: &[u8] = include_bytes!("../../tests/fixtures/tls13_client_hello.bin");
    pub(crate) const TLS12: &[u8] = include_bytes!("../../tests/fixtures/tls12_client_hello.bin");
    pub(crate) const SERVER_HELLO: &[u8] =
        include_bytes!("../../tests/fixtures/tls13_server_hello.bin");

    const NAME: &str = "tracker.example.co.uk";

    /// Offset just past the server_name extension in a fixture: the name is its last field.
    fn end_of_server_name(hello: &[u8]) -> usize {
        hello
            .windows(NAME.len())
            .position(|w| w == NAME.as_bytes())
            .expect("fixture names tracker.example.co.uk")
            + NAME.len()
    }

    /// A minimal ClientHello record with the given extensions, as (type, data) pairs.
    fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut ext = Vec::new();
        for (t, data) in extensions {
            ext.extend_from_slice(&t.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(data);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0x11; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut handshake = vec![CLIENT_HELLO];
        handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        let mut record = vec![22, 0x03, 0x01];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    /// server_name extension data with one entry of the given type.
    fn sni(name_type: u8, name: &[u8]) -> Vec<u8> {
        let mut entry = vec![name_type];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        data
    }

    #[test]
    fn reads_server_name_from_captured_client_hellos() {
        for (what, hello) in [("TLS 1.3", TLS13), ("TLS 1.2 only", TLS12)] {
            assert_eq!(
                client_hello_server_name(hello).as_deref(),
                Ok(NAME),
                "{what}"
            );
        }
    }

    #[test]
    fn truncated_capture_still_names_the_server_when_the_extension_is_inside() {
        for (what, hello) in [("TLS 1.3", TLS13), ("TLS 1.2 only", TLS12)] {
            let end = end_of_server_name(hello);
            assert!(
                end < hello.len(),
                "{what}: server_name is not the last extension"
            );
            for cut in end..hello.len() {
                assert_eq!(
                    client_hello_server_name(&hello[..cut]).as_deref(),
                    Ok(NAME),
                    "{what} cut at {cut}"
                );
            }
            for cut in 0..end {
                let want = if cut == 0 {
                    TlsError::Truncated {
                        needed: 5,
                        captured: 0,
                    }
                } else if cut < 5 {
                    TlsError::Truncated {
                        needed: 5,
                        captured: cut,
                    }
                } else {
                    TlsError::Truncated {
                        needed: hello.len(),
                        captured: cut,
                    }
                };
                assert_eq!(
                    client_hello_server_name(&hello[..cut]),
                    Err(want),
                    "{what} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn rejects_what_is_not_a_client_hello() {
        let cases: Vec<(&str, Vec<u8>, TlsError)> = vec![
            (
                "server's first flight",
                SERVER_HELLO.to_vec(),
                TlsError::NotClientHello(2),
            ),
            (
                "HTTP",
                b"GET / HTTP/1.1\r\n".to_vec(),
                TlsError::NotHandshake(b'G'),
            ),
            (
                "application data",
                vec![23, 3, 3, 0, 1, 0],
                TlsError::NotHandshake(23),
            ),
            (
                "record longer than TLS allows",
                vec![22, 3, 1, 0xff, 0xff, 1],
                TlsError::Malformed("record longer than TLS allows"),
            ),
            (
                "ClientHello without extensions",
                {
                    let mut r = client_hello(&[]);
                    // Drop the empty extensions block and fix the lengths.
                    r.truncate(r.len() - 2);
                    let hl = r.len() - 9;
                    r[6..9].copy_from_slice(&(hl as u32).to_be_bytes()[1..]);
                    let rl = r.len() - 5;
                    r[3..5].copy_from_slice(&(rl as u16).to_be_bytes());
                    r
                },
                TlsError::NoServerName,
            ),
            (
                "no server_name extension",
                client_hello(&[(10, vec![0, 2, 0, 29])]),
                TlsError::NoServerName,
            ),
            (
                "empty server_name extension",
                client_hello(&[(0, vec![])]),
                TlsError::NoServerName,
            ),
            (
                "server_name with an unknown name type only",
                client_hello(&[(0, sni(7, b"x.example"))]),
                TlsError::NoServerName,
            ),
            (
                "server_name list longer than the extension",
                client_hello(&[(0, vec![0, 9, 0, 0, 1, b'x'])]),
                TlsError::Malformed("server_name extension"),
            ),
            (
                "name with a space",
                client_hello(&[(0, sni(0, b"bad name.example"))]),
                TlsError::InvalidServerName("bad name.example".into()),
            ),
            (
                "binary name",
                client_hello(&[(0, sni(0, &[0xff, 0xfe, b'a']))]),
                TlsError::InvalidServerName("\u{fffd}\u{fffd}a".into()),
            ),
            (
                "name too long",
                client_hello(&[(0, sni(0, format!("{}a", "a.".repeat(127)).as_bytes()))]),
                TlsError::InvalidServerName("a.".repeat(32)),
            ),
            (
                "handshake message of another type",
                {
                    let mut r = client_hello(&[]);
                    r[5] = 11;
                    r
                },
                TlsError::NotClientHello(11),
            ),
        ];
        for (what, payload, want) in cases {
            assert_eq!(client_hello_server_name(&payload), Err(want), "{what}");
        }
    }

    #[test]
    fn normalizes_and_skips_odd_extensions() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "uppercase and trailing dot",
                client_hello(&[(0, sni(0, b"WWW.Example.COM."))]),
                "www.example.com",
            ),
            (
                "after a GREASE and a malformed known extension",
                client_hello(&[
                    (0x0a0a, vec![]),
                    (43, vec![0xff]), // supported_versions with a bad length byte
                    (0, sni(0, b"late.example")),
                ]),
                "late.example",
            ),
            (
                "first host_name entry wins",
                client_hello(&[(0, {
                    let mut d = sni(0, b"first.example");
                    let second = sni(0, b"second.example");
                    d.extend_from_slice(&second[2..]);
                    let len = (d.len() - 2) as u16;
                    d[..2].copy_from_slice(&len.to_be_bytes());
                    d
                })]),
                "first.example",
            ),
        ];
        for (what, payload, want) in cases {
            assert_eq!(
                client_hello_server_name(&payload).as_deref(),
                Ok(want),
                "{what}"
            );
        }
    }

    #[test]
    fn client_hello_split_over_two_records_is_read_from_the_first() {
        // Real stacks may fragment a large ClientHello; the first record then holds only the start
        // of the handshake message.
        let whole = client_hello(&[(0, sni(0, b"split.example")), (21, vec![0; 300])]);
        let handshake = &whole[5..];
        let first = &handshake[..120];
        let mut payload = vec![22, 3, 1];
        payload.extend_from_slice(&(first.len() as u16).to_be_bytes());
        payload.extend_from_slice(first);
        payload.extend_from_slice(&[22, 3, 1, 0, 1, 0]);
        assert_eq!(
            client_hello_server_name(&payload).as_deref(),
            Ok("split.example")
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = client_hello_server_name(&TLS13[..100]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "TLS record truncated: {} bytes needed, 100 captured, and no complete \
                 server_name extension in them",
                TLS13.len()
            )
        );
        assert_eq!(
            TlsError::NotHandshake(23).to_string(),
            "not a TLS handshake record: content type 23, expected 22"
        );
    }
}
