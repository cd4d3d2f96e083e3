//! DNS answers seen on the LAN: which name a device asked for before it talked to an address.
//!
//! A device that resolves `api.tracker.example` and then sends bytes to `192.0.2.30` was talking to
//! `api.tracker.example`, even when the answer went through CNAMEs to a CDN's
//! `edge-17.cdn.example.net`. So each address record in the answer is followed back through the
//! CNAME chain to the name in the question, and the binding carries the name the device asked.
//! The binding lives as long as the shortest TTL along the chain: past that, the device would
//! have asked again.
//!
//! Wire decoding is hickory-proto's (header, question and answer records); only the chain logic
//! is ours. The authority and additional sections are never decoded: they name no address the
//! device asked for, and a malformed record there must not cost the answers.

use std::net::IpAddr;

use hickory_proto::op::{Header, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::normalize_dns_name;

/// At most this many bindings come out of one message. Real answers hold a handful of addresses;
/// a message stuffed with thousands of records must not flood the name table.
pub const MAX_BINDINGS: usize = 64;

/// At most this many answer records are decoded from one message; the rest are ignored.
pub const MAX_ANSWER_RECORDS: usize = 256;

/// CNAME chains longer than this are not followed (resolvers give up near 8 to 16); this also
/// ends CNAME loops.
pub const MAX_CHAIN: usize = 16;

/// Length of the DNS header (RFC 1035 §4.1.1).
const HEADER_LEN: usize = 12;

/// How the message arrived: over TCP, each message is preceded by its length (RFC 1035 §4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The payload is the DNS message itself.
    Udp,
    /// The payload starts with a 2-byte big-endian length, then the message.
    Tcp,
}

/// What one DNS response says about names and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The message ID, to pair the answer with its query if the caller wants to.
    pub id: u16,
    /// The first question's name, normalised (lowercase, no trailing dot); `None` when the message
    /// has no question or its name is not a valid host name.
    pub question: Option<String>,
    /// Address bindings, at most [`MAX_BINDINGS`], in answer order. Empty unless the response is
    /// a standard query's answer with RCODE NOERROR.
    pub bindings: Vec<Binding>,
}

/// An address a device learnt for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The address from an A or AAAA record.
    pub addr: IpAddr,
    /// The name the device asked for (the question), lowercase without the trailing dot; the
    /// record's own name when no CNAME chain leads back to the question.
    pub name: String,
    /// Seconds the binding holds: the smallest TTL of the address record and the CNAMEs that
    /// lead to it.
    pub ttl: u32,
}

/// Why a payload yields no DNS response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The capture ends before the message does.
    #[error("DNS message truncated: {needed} bytes needed, {captured} captured")]
    Truncated {
        /// Bytes the message needs (with the TCP length prefix, when there is one).
        needed: usize,
        /// Bytes there are.
        captured: usize,
    },
    /// A query (QR=0): only responses carry answers. The caller fed the wrong direction.
    #[error("DNS message is a query, not a response")]
    NotResponse,
    /// The header's record counts cannot fit in the message: no point decoding it (and no
    /// allocating for records that are not there).
    #[error(
        "DNS header claims {questions} questions and {records} records, more than {len} bytes can hold"
    )]
    ImpossibleCounts {
        /// QDCOUNT.
        questions: u16,
        /// ANCOUNT + NSCOUNT + ARCOUNT.
        records: u32,
        /// Length of the message.
        len: usize,
    },
    /// hickory-proto could not decode the header, question or an answer record.
    #[error("malformed DNS message: {0}")]
    Malformed(String),
}

/// Parses a DNS response from a UDP datagram's or a TCP segment's payload into the address
/// bindings it gives the device that asked.
///
/// Only standard queries (OPCODE QUERY) answered with NOERROR bind names. Other responses
/// (NXDOMAIN, SERVFAIL, REFUSED, other opcodes) are `Ok` with no bindings and their question:
/// an NXDOMAIN is an ordinary answer, not a parse failure, and the caller counts failures. A query
/// is [`DnsError::NotResponse`].
///
/// Over TCP the payload must hold the length prefix and one whole message; bytes after it (a
/// pipelined second message) are ignored. A message cut short is [`DnsError::Truncated`].
///
/// Each A/AAAA record of class IN in the answer section is followed back through the answer's
/// CNAME records (at most [`MAX_CHAIN`] steps) to the question name. When the chain does not reach
/// the question (an unrelated record, a loop, a chain too long), the address is bound to the
/// record's own name with its own TTL. Names that are not valid host names (see
/// [`normalize_dns_name`]) are never bound.
pub fn parse_response(payload: &[u8], transport: Transport) -> Result<Response, DnsError> {
    let message = match transport {
        Transport::Udp => payload,
        Transport::Tcp => tcp_message(payload)?,
    };
    if message.len() < HEADER_LEN {
        return Err(DnsError::Truncated {
            needed: HEADER_LEN + tcp_prefix_len(transport),
            captured: payload.len(),
        });
    }
    let mut decoder = BinDecoder::new(message);
    let header = Header::read(&mut decoder).map_err(|e| DnsError::Malformed(e.to_string()))?;
    let counts = header.counts;
    // The smallest question is 5 bytes (root name, type, class), the smallest record 11 (root
    // name, type, class, TTL, RDLENGTH): a header claiming more is lying.
    let records =
        u32::from(counts.answers) + u32::from(counts.authorities) + u32::from(counts.additionals);
    let min_len = HEADER_LEN + 5 * usize::from(counts.queries) + 11 * records as usize;
    if min_len > message.len() {
        return Err(DnsError::ImpossibleCounts {
            questions: counts.queries,
            records,
            len: message.len(),
        });
    }
    if header.metadata.message_type != MessageType::Response {
        return Err(DnsError::NotResponse);
    }

    let mut question = None;
    for i in 0..counts.queries {
        let query = Query::read(&mut decoder).map_err(|e| DnsError::Malformed(e.to_string()))?;
        if i == 0 {
            question = normalize_dns_name(&query.name.to_ascii());
        }
    }
    let mut response = Response {
        id: header.metadata.id,
        question,
        bindings: Vec::new(),
    };
    if header.metadata.op_code != OpCode::Query
        || header.metadata.response_code != ResponseCode::NoError
    {
        return Ok(response);
    }

    let mut answers = Vec::new();
    for _ in 0..usize::from(counts.answers).min(MAX_ANSWER_RECORDS) {
        let record = Record::read(&mut decoder).map_err(|e| DnsError::Malformed(e.to_string()))?;
        if let Some(answer) = Answer::from_record(&record) {
            answers.push(answer);
        }
    }
    response.bindings = bind(&answers, response.question.as_deref());
    Ok(response)
}

/// Length of the prefix before the message: 2 over TCP.
fn tcp_prefix_len(transport: Transport) -> usize {
    match transport {
        Transport::Udp => 0,
        Transport::Tcp => 2,
    }
}

/// The one message a TCP payload holds after its length prefix.
fn tcp_message(payload: &[u8]) -> Result<&[u8], DnsError> {
    let Some((prefix, rest)) = payload.split_first_chunk::<2>() else {
        return Err(DnsError::Truncated {
            needed: 2,
            captured: payload.len(),
        });
    };
    let len = usize::from(u16::from_be_bytes(*prefix));
    rest.get(..len).ok_or(DnsError::Truncated {
        needed: 2 + len,
        captured: payload.len(),
    })
}

/// An answer record reduced to what the binding logic needs.
struct Answer {
    /// Owner name, normalised; `None` if it is not a valid host name.
    owner: Option<String>,
    ttl: u32,
    data: AnswerData,
}

enum AnswerData {
    Address(IpAddr),
    /// CNAME target, normalised; `None` if not a valid host name.
    Alias(Option<String>),
}

impl Answer {
    /// Keeps class-IN A, AAAA and CNAME records; drops everything else (RRSIGs, HTTPS, ...).
    fn from_record(record: &Record) -> Option<Answer> {
        if record.dns_class != DNSClass::IN {
            return None;
        }
        let data = match &record.data {
            RData::A(a) => AnswerData::Address(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => AnswerData::Address(IpAddr::V6(aaaa.0)),
            RData::CNAME(cname) => AnswerData::Alias(normalize_dns_name(&cname.0.to_ascii())),
            _ => return None,
        };
        Some(Answer {
            owner: normalize_dns_name(&record.name.to_ascii()),
            ttl: record.ttl,
            data,
        })
    }
}

/// Binds each address record to the question it answers, following CNAMEs backwards.
fn bind(answers: &[Answer], question: Option<&str>) -> Vec<Binding> {
    let mut bindings: Vec<Binding> = Vec::new();
    for answer in answers {
        let AnswerData::Address(addr) = answer.data else {
            continue;
        };
        let Some(owner) = answer.owner.as_deref() else {
            continue;
        };
        let (name, ttl) = match trace_to_question(answers, owner, answer.ttl, question) {
            Some(ttl) => (question.unwrap_or(owner), ttl),
            None => (owner, answer.ttl),
        };
        if let Some(existing) = bindings
            .iter_mut()
            .find(|b| b.addr == addr && b.name == name)
        {
            existing.ttl = existing.ttl.min(ttl);
            continue;
        }
        if bindings.len() == MAX_BINDINGS {
            break;
        }
        bindings.push(Binding {
            addr,
            name: name.to_owned(),
            ttl,
        });
    }
    bindings
}

/// Walks from `owner` back through CNAMEs whose target is the current name until the question is
/// reached; returns the smallest TTL seen, or `None` if the walk does not reach the question within
/// [`MAX_CHAIN`] steps.
fn trace_to_question(
    answers: &[Answer],
    owner: &str,
    ttl: u32,
    question: Option<&str>,
) -> Option<u32> {
    let question = question?;
    let mut current = owner;
    let mut ttl = ttl;
    for _ in 0..=MAX_CHAIN {
        if current == question {
            return Some(ttl);
        }
        let alias = answers.iter().find_map(|a| match &a.data {
            AnswerData::Alias(Some(target)) if target == current => {
                a.owner.as_deref().map(|o| (o, a.ttl))
            }
            _ => None,
        })?;
        current = alias.0;
        ttl = ttl.min(alias.1);
    }
    None
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    pub(crate) const A_UDP: &[u8] = include_bytes!("../../tests/fixtures/dns_a_udp.bin");
    pub(crate) const AAAA_UDP: &[u8] = include_bytes!("../../tests/fixtures/dns_aaaa_udp.bin");
    pub(crate) const CNAME_UDP: &[u8] =
        include_bytes!("../../tests/fixtures/dns_cname_chain_udp.bin");
    pub(crate) const CNAME_TCP: &[u8] =
        include_bytes!("../../tests/fixtures/dns_cname_chain_tcp.bin");
    pub(crate) const NXDOMAIN_UDP: &[u8] =
        include_bytes!("../../tests/fixtures/dns_nxdomain_udp.bin");
    pub(crate) const QUERY_UDP: &[u8] = include_bytes!("../../tests/fixtures/dns_query_a_udp.bin");

    fn binding(addr: &str, name: &str, ttl: u32) -> Binding {
        Binding {
            addr: addr.parse().unwrap(),
            name: name.to_owned(),
            ttl,
        }
    }

    #[test]
    fn parses_captured_answers() {
        // (what, fixture, transport, id, question, bindings); TTLs as dnsmasq was told to give.
        type Case = (
            &'static str,
            &'static [u8],
            Transport,
            u16,
            Option<&'static str>,
            Vec<Binding>,
        );
        let cases: Vec<Case> = vec![
            (
                "A",
                A_UDP,
                Transport::Udp,
                0x49a0,
                Some("api.example.com"),
                vec![
                    binding("192.0.2.80", "api.example.com", 300),
                    binding("192.0.2.81", "api.example.com", 300),
                ],
            ),
            (
                "AAAA",
                AAAA_UDP,
                Transport::Udp,
                0x0876,
                Some("v6.example.com"),
                vec![binding("2001:db8::80", "v6.example.com", 900)],
            ),
            (
                // www.shop.example.com CNAME(300) edge.cdn.example.net CNAME(120)
                // lb.cdn.example.net A(600) 192.0.2.30
                "CNAME chain over UDP",
                CNAME_UDP,
                Transport::Udp,
                0x2277,
                Some("www.shop.example.com"),
                vec![binding("192.0.2.30", "www.shop.example.com", 120)],
            ),
            (
                "CNAME chain over TCP",
                CNAME_TCP,
                Transport::Tcp,
                0x4e4d,
                Some("www.shop.example.com"),
                vec![binding("192.0.2.30", "www.shop.example.com", 120)],
            ),
            (
                "NXDOMAIN",
                NXDOMAIN_UDP,
                Transport::Udp,
                0x321c,
                Some("missing.example.com"),
                vec![],
            ),
        ];
        for (what, payload, transport, id, question, bindings) in cases {
            let response =
                parse_response(payload, transport).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(response.id, id, "{what}");
            assert_eq!(response.question.as_deref(), question, "{what}");
            assert_eq!(response.bindings, bindings, "{what}");
        }
    }

    #[test]
    fn rejects_what_is_not_one_whole_response() {
        let cut_tcp = &CNAME_TCP[..CNAME_TCP.len() - 1];
        let cases: Vec<(&str, &[u8], Transport, DnsError)> = vec![
            ("query", QUERY_UDP, Transport::Udp, DnsError::NotResponse),
            (
                "empty UDP",
                &[],
                Transport::Udp,
                DnsError::Truncated {
                    needed: 12,
                    captured: 0,
                },
            ),
            (
                "short header",
                &A_UDP[..11],
                Transport::Udp,
                DnsError::Truncated {
                    needed: 12,
                    captured: 11,
                },
            ),
            (
                "TCP without length",
                &[0x00],
                Transport::Tcp,
                DnsError::Truncated {
                    needed: 2,
                    captured: 1,
                },
            ),
            (
                "TCP cut one byte short",
                cut_tcp,
                Transport::Tcp,
                DnsError::Truncated {
                    needed: CNAME_TCP.len(),
                    captured: CNAME_TCP.len() - 1,
                },
            ),
            (
                "TCP with a zero length",
                &[0x00, 0x00, 0xff],
                Transport::Tcp,
                DnsError::Truncated {
                    needed: 14,
                    captured: 3,
                },
            ),
            (
                "UDP message sent as TCP",
                A_UDP,
                Transport::Tcp,
                DnsError::Truncated {
                    needed: 2 + 0x49a0,
                    captured: A_UDP.len(),
                },
            ),
        ];
        for (what, payload, transport, want) in cases {
            assert_eq!(parse_response(payload, transport), Err(want), "{what}");
        }
    }

    #[test]
    fn counts_that_cannot_fit_are_refused_before_decoding() {
        // A 12-byte header claiming 65535 answers.
        let mut msg = A_UDP[..12].to_vec();
        msg[6..8].copy_from_slice(&[0xff, 0xff]);
        let err = parse_response(&msg, Transport::Udp).unwrap_err();
        assert!(
            matches!(err, DnsError::ImpossibleCounts { records: 65535, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("65535 records"), "{err}");
    }

    #[test]
    fn cut_udp_answers_are_malformed() {
        let err = parse_response(&CNAME_UDP[..CNAME_UDP.len() - 2], Transport::Udp).unwrap_err();
        assert!(matches!(err, DnsError::Malformed(_)), "{err}");
        assert!(
            err.to_string().starts_with("malformed DNS message: "),
            "{err}"
        );
    }

    #[test]
    fn tcp_ignores_a_pipelined_second_message() {
        let mut two = CNAME_TCP.to_vec();
        two.extend_from_slice(CNAME_TCP);
        let response = parse_response(&two, Transport::Tcp).unwrap();
        assert_eq!(response.bindings.len(), 1);
    }

    /// Builds a response with the given question and answer records, through hickory.
    fn build(question: &str, answers: &[(&str, u32, RData)], rcode: ResponseCode) -> Vec<u8> {
        use hickory_proto::op::Message;
        use hickory_proto::rr::{Name, RecordType};

        let mut msg = Message::response(7, OpCode::Query);
        msg.metadata.response_code = rcode;
        msg.add_query(Query::query(
            Name::from_ascii(question).unwrap(),
            RecordType::A,
        ));
        for (owner, ttl, data) in answers {
            // Raw labels, so a test can put bytes in a name that presentation form would escape.
            let labels = owner.trim_end_matches('.').split('.').map(str::as_bytes);
            let mut name = Name::from_labels(labels).unwrap();
            name.set_fqdn(true);
            msg.add_answer(Record::from_rdata(name, *ttl, data.clone()));
        }
        msg.to_vec().unwrap()
    }

    fn a(ip: [u8; 4]) -> RData {
        RData::A(hickory_proto::rr::rdata::A(Ipv4Addr::from(ip)))
    }

    fn cname(target: &str) -> RData {
        RData::CNAME(hickory_proto::rr::rdata::CNAME(
            hickory_proto::rr::Name::from_ascii(target).unwrap(),
        ))
    }

    #[test]
    fn follows_chains_back_to_the_question() {
        // (what, question, answers, bindings)
        type Case = (
            &'static str,
            &'static str,
            Vec<(&'static str, u32, RData)>,
            Vec<Binding>,
        );
        let cases: Vec<Case> = vec![
            (
                "question name is lowercased, trailing dot dropped",
                "WWW.Example.COM.",
                vec![("www.example.com.", 60, a([192, 0, 2, 1]))],
                vec![binding("192.0.2.1", "www.example.com", 60)],
            ),
            (
                "CNAMEs listed after the address, shortest TTL wins",
                "a.example.",
                vec![
                    ("c.example.", 500, a([192, 0, 2, 3])),
                    ("b.example.", 40, cname("c.example.")),
                    ("a.example.", 90, cname("b.example.")),
                ],
                vec![binding("192.0.2.3", "a.example", 40)],
            ),
            (
                "unrelated record keeps its own name and TTL",
                "a.example.",
                vec![
                    ("a.example.", 30, a([192, 0, 2, 1])),
                    ("other.example.", 700, a([192, 0, 2, 9])),
                ],
                vec![
                    binding("192.0.2.1", "a.example", 30),
                    binding("192.0.2.9", "other.example", 700),
                ],
            ),
            (
                "CNAME loop ends",
                "a.example.",
                vec![
                    ("b.example.", 10, cname("c.example.")),
                    ("c.example.", 10, cname("b.example.")),
                    ("c.example.", 50, a([192, 0, 2, 4])),
                ],
                vec![binding("192.0.2.4", "c.example", 50)],
            ),
            (
                "AAAA through a CNAME",
                "v6.example.",
                vec![
                    ("v6.example.", 300, cname("edge.example.")),
                    (
                        "edge.example.",
                        200,
                        RData::AAAA(hickory_proto::rr::rdata::AAAA(Ipv6Addr::new(
                            0x2001, 0xdb8, 0, 0, 0, 0, 0, 1,
                        ))),
                    ),
                ],
                vec![binding("2001:db8::1", "v6.example", 200)],
            ),
            (
                "duplicate address record keeps one binding with the smaller TTL",
                "a.example.",
                vec![
                    ("a.example.", 300, a([192, 0, 2, 1])),
                    ("a.example.", 100, a([192, 0, 2, 1])),
                ],
                vec![binding("192.0.2.1", "a.example", 100)],
            ),
            (
                "owner with a space is not bound",
                "a.example.",
                vec![("a b.example.", 300, a([192, 0, 2, 1]))],
                vec![],
            ),
        ];
        for (what, question, answers, bindings) in cases {
            let msg = build(question, &answers, ResponseCode::NoError);
            let response = parse_response(&msg, Transport::Udp).unwrap();
            assert_eq!(response.bindings, bindings, "{what}");
        }
    }

    #[test]
    fn chains_longer_than_the_limit_are_not_followed() {
        let names: Vec<String> = (0..=MAX_CHAIN + 1)
            .map(|i| format!("n{i}.example."))
            .collect();
        let mut answers: Vec<(&str, u32, RData)> = names
            .windows(2)
            .map(|w| (w[0].as_str(), 60, cname(&w[1])))
            .collect();
        let last = names.last().unwrap().as_str();
        answers.push((last, 60, a([192, 0, 2, 1])));
        let msg = build(&names[0], &answers, ResponseCode::NoError);
        let response = parse_response(&msg, Transport::Udp).unwrap();
        assert_eq!(
            response.bindings,
            vec![binding("192.0.2.1", last.trim_end_matches('.'), 60)]
        );

        // One step shorter reaches the question.
        let msg = build(&names[1], &answers[1..], ResponseCode::NoError);
        let response = parse_response(&msg, Transport::Udp).unwrap();
        assert_eq!(
            response.bindings,
            vec![binding("192.0.2.1", names[1].trim_end_matches('.'), 60)]
        );
    }

    #[test]
    fn bindings_are_capped() {
        let answers: Vec<(&str, u32, RData)> = (0..200u8)
            .map(|i| ("many.example.", 60, a([192, 0, 2, i])))
            .collect();
        let msg = build("many.example.", &answers, ResponseCode::NoError);
        let response = parse_response(&msg, Transport::Udp).unwrap();
        assert_eq!(response.bindings.len(), MAX_BINDINGS);
        assert_eq!(response.bindings[63].addr, IpAddr::from([192, 0, 2, 63]));
    }

    #[test]
    fn error_rcodes_bind_nothing() {
        for rcode in [
            ResponseCode::ServFail,
            ResponseCode::Refused,
            ResponseCode::NXDomain,
        ] {
            let msg = build(
                "a.example.",
                &[("a.example.", 60, a([192, 0, 2, 1]))],
                rcode,
            );
            let response = parse_response(&msg, Transport::Udp).unwrap();
            assert_eq!(response.question.as_deref(), Some("a.example"), "{rcode:?}");
            assert!(response.bindings.is_empty(), "{rcode:?}");
        }
    }
}
