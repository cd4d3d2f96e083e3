//! The lab's DNS: the zone that both resolvers serve ([`ZONE`]), and a stub resolver that runs
//! inside a device's namespace ([`dns_lookup`], [`dns_query`], [`dns_burst`]).
//!
//! The router's dnsmasq (see [`crate::LabBuilder::dnsmasq`]) answers on [`crate::ROUTER_LAN_V4`]
//! and [`crate::ROUTER_LAN_V6`]; a second one in the WAN namespace plays a public resolver that a
//! device may use instead, bypassing the router ([`OUTSIDE_RESOLVER_V4`],
//! [`OUTSIDE_RESOLVER_V6`]). Both answer from [`ZONE`] only, answer NXDOMAIN for every other
//! name, and forward nothing.
//!
//! Queries are built and parsed with `hickory-proto` in the test process, on sockets created in
//! the device's namespace with [`run_in`], so what the router sees is an ordinary stub
//! resolver's traffic: one question, recursion desired, no EDNS.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use hickory_proto::op::ResponseCode;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
pub use hickory_proto::rr::RecordType;
use hickory_proto::rr::{Name, RData};

use crate::lab::{SERVERS_V4, SERVERS_V6};
use crate::netns::run_in;

/// The DNS port, where both resolvers listen (UDP and TCP).
pub const DNS_PORT: u16 = 53;

/// The resolver "on the internet", in the WAN namespace: devices that use it bypass the router's.
pub const OUTSIDE_RESOLVER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
/// The outside resolver's IPv6 address.
pub const OUTSIDE_RESOLVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x53);

/// TTL of every name of [`ZONE`] but the short-lived one.
pub const ZONE_TTL: u32 = 300;
/// TTL of [`SHORT_TTL_NAME`]: short enough that a test can watch a name expire.
pub const SHORT_TTL: u32 = 2;
/// The name whose answers expire after [`SHORT_TTL`] seconds.
pub const SHORT_TTL_NAME: &str = "short.vendor.example";

/// One name of the lab zone.
///
/// `ttl` is the TTL that appears in answers, as the lab smoke tests check: dnsmasq gives
/// `host-record` and `cname` entries the TTL written in its configuration, unchanged by
/// `local-ttl`, `max-ttl` or `auth-ttl` (2.90 on Debian 12), and does not count it down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneName {
    /// The name, without the final dot.
    pub name: &'static str,
    /// Its A record (none for an alias).
    pub v4: Option<Ipv4Addr>,
    /// Its AAAA record (none for an alias).
    pub v6: Option<Ipv6Addr>,
    /// For an alias: the target of its CNAME record (which may be an alias itself).
    pub cname_of: Option<&'static str>,
    /// TTL of its records in answers, in seconds.
    pub ttl: u32,
}

const fn host(
    name: &'static str,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    ttl: u32,
) -> ZoneName {
    ZoneName {
        name,
        v4,
        v6,
        cname_of: None,
        ttl,
    }
}

const fn alias(name: &'static str, target: &'static str) -> ZoneName {
    ZoneName {
        name,
        v4: None,
        v6: None,
        cname_of: Some(target),
        ttl: ZONE_TTL,
    }
}

/// The lab zone, served by the router's dnsmasq and by the outside resolver.
///
/// It has what naming destinations runs into:
/// * several names for one address (`telemetry.` and `updates.vendor.example`, and the two names
///   of 192.0.2.30 under different public suffixes);
/// * a chain of two CNAMEs (`cdn.vendor.example` -> `edge.cdn-provider.example` ->
///   `node7.cdn-provider.example`), so the address is only in the last record of the answer;
/// * names under multi-label public suffixes (`co.uk`, `com.au`);
/// * a name with a 2-second TTL ([`SHORT_TTL_NAME`]).
///
/// 203.0.113.6 (`SERVERS_V4[4]`) has no name on purpose: a destination no device looked up.
pub const ZONE: &[ZoneName] = &[
    host(
        "telemetry.vendor.example",
        Some(SERVERS_V4[0]),
        Some(SERVERS_V6[0]),
        ZONE_TTL,
    ),
    host(
        "updates.vendor.example",
        Some(SERVERS_V4[0]),
        Some(SERVERS_V6[0]),
        ZONE_TTL,
    ),
    alias("cdn.vendor.example", "edge.cdn-provider.example"),
    alias("edge.cdn-provider.example", "node7.cdn-provider.example"),
    host(
        "node7.cdn-provider.example",
        Some(SERVERS_V4[1]),
        Some(SERVERS_V6[1]),
        ZONE_TTL,
    ),
    host(
        "tracker.ads.example.co.uk",
        Some(SERVERS_V4[2]),
        None,
        ZONE_TTL,
    ),
    host(
        "api.camera-cloud.example.com.au",
        Some(SERVERS_V4[2]),
        None,
        ZONE_TTL,
    ),
    host(
        SHORT_TTL_NAME,
        Some(SERVERS_V4[3]),
        Some(SERVERS_V6[2]),
        SHORT_TTL,
    ),
];

/// The entry of [`ZONE`] called `name`, if any.
pub fn zone_name(name: &str) -> Option<&'static ZoneName> {
    let name = name.trim_end_matches('.');
    ZONE.iter().find(|z| z.name.eq_ignore_ascii_case(name))
}

/// The entries an answer for `name` is made of: `name` itself, then the target of each CNAME
/// in turn, ending with the entry that holds the addresses. Empty if `name` is not in [`ZONE`].
pub fn zone_chain(name: &str) -> Vec<&'static ZoneName> {
    let mut chain = Vec::new();
    let mut next = zone_name(name);
    while let Some(entry) = next {
        assert!(
            chain.len() < ZONE.len(),
            "CNAME loop in ZONE at {}",
            entry.name
        );
        chain.push(entry);
        next = entry.cname_of.map(|target| {
            zone_name(target).unwrap_or_else(|| panic!("ZONE: {target} is not in the zone"))
        });
    }
    chain
}

/// The addresses `name` resolves to for `qtype` (A or AAAA), following CNAMEs through [`ZONE`].
pub fn zone_addresses(name: &str, qtype: RecordType) -> Vec<IpAddr> {
    let Some(last) = zone_chain(name).pop() else {
        return Vec::new();
    };
    match qtype {
        RecordType::A => last.v4.map(IpAddr::V4).into_iter().collect(),
        RecordType::AAAA => last.v6.map(IpAddr::V6).into_iter().collect(),
        other => panic!("zone_addresses: only A and AAAA, not {other}"),
    }
}

/// The dnsmasq options that serve [`ZONE`]: one `host-record` or `cname` line per name, each
/// with its TTL.
pub(crate) fn dnsmasq_zone_lines() -> String {
    let mut lines = String::new();
    for z in ZONE {
        let line = match (z.cname_of, z.v4, z.v6) {
            (Some(target), None, None) => format!("cname={},{target},{}\n", z.name, z.ttl),
            (None, v4, v6) if v4.is_some() || v6.is_some() => {
                let addrs: Vec<String> = [v4.map(IpAddr::V4), v6.map(IpAddr::V6)]
                    .into_iter()
                    .flatten()
                    .map(|a| a.to_string())
                    .collect();
                format!("host-record={},{},{}\n", z.name, addrs.join(","), z.ttl)
            }
            _ => panic!(
                "ZONE: {} must have addresses or a CNAME target, not both",
                z.name
            ),
        };
        lines += &line;
    }
    lines
}

/// What a resolver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// NoError, NXDomain, Refused...
    pub rcode: ResponseCode,
    /// The AA bit: the resolver answered from its own data.
    pub authoritative: bool,
    /// The TC bit: the answer did not fit in the UDP datagram.
    pub truncated: bool,
    /// The answer section, in order (CNAMEs first, then the addresses).
    pub records: Vec<DnsRecord>,
}

impl DnsAnswer {
    /// The addresses of the A and AAAA records, in order.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.records
            .iter()
            .filter_map(|r| match r.data {
                DnsData::Addr(addr) => Some(addr),
                _ => None,
            })
            .collect()
    }

    /// The CNAME records as `(alias, target)`, in order.
    pub fn cnames(&self) -> Vec<(&str, &str)> {
        self.records
            .iter()
            .filter_map(|r| match &r.data {
                DnsData::Cname(target) => Some((r.name.as_str(), target.as_str())),
                _ => None,
            })
            .collect()
    }
}

/// One record of an answer section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// Owner name, without the final dot.
    pub name: String,
    pub ttl: u32,
    pub data: DnsData,
}

/// The data of a [`DnsRecord`], for the types the lab serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsData {
    /// An A or AAAA record.
    Addr(IpAddr),
    /// A CNAME record's target, without the final dot.
    Cname(String),
    /// Any other type, by number.
    Other(u16),
}

/// UDP attempts of [`dns_lookup`], each waiting this long for the answer.
const UDP_TRIES: u32 = 3;
const UDP_WAIT: Duration = Duration::from_secs(1);
/// TCP attempts of [`dns_lookup`], and the connect and I/O timeout of each.
const TCP_TRIES: u32 = 2;
const TCP_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest DNS message over UDP that we read (no EDNS: answers are at most 512 bytes).
const UDP_BUF: usize = 4096;

/// Message IDs, distinct across lookups in this process (until they wrap).
static NEXT_ID: AtomicU16 = AtomicU16::new(0);

/// The first of `n` consecutive message IDs (mod 2^16) that no other lookup in this process
/// uses until the counter wraps; the start differs between runs.
fn reserve_ids(n: usize) -> u16 {
    static SEED: OnceLock<u16> = OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        (nanos ^ std::process::id().rotate_left(16)) as u16
    });
    // n = 65536 reserves the whole space: adding 0 is right.
    seed.wrapping_add(NEXT_ID.fetch_add(n as u16, Ordering::Relaxed))
}

/// A standard query for `name`/`qtype` with message ID `id`, recursion desired, in wire form.
fn encode_query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let qname = Name::from_ascii(name)
        .unwrap_or_else(|e| panic!("DNS query: {name:?} is not a valid name: {e}"));
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(qname, qtype));
    message
        .to_vec()
        .unwrap_or_else(|e| panic!("DNS query for {name}: cannot encode: {e}"))
}

/// Parses `wire` as the response to query `id`; `None` if it is not (another ID, or not a
/// response), an error message if it cannot be parsed.
fn decode_answer(wire: &[u8], id: u16) -> Option<Result<DnsAnswer, String>> {
    let message = match Message::from_vec(wire) {
        Ok(message) => message,
        Err(e) => return Some(Err(format!("malformed response: {e}"))),
    };
    if message.metadata.id != id || message.metadata.message_type != MessageType::Response {
        return None;
    }
    let records = message
        .answers
        .iter()
        .map(|r| DnsRecord {
            name: r.name.to_ascii().trim_end_matches('.').to_owned(),
            ttl: r.ttl,
            data: match &r.data {
                RData::A(a) => DnsData::Addr(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => DnsData::Addr(IpAddr::V6(aaaa.0)),
                RData::CNAME(cname) => {
                    DnsData::Cname(cname.0.to_ascii().trim_end_matches('.').to_owned())
                }
                other => DnsData::Other(u16::from(other.record_type())),
            },
        })
        .collect();
    Some(Ok(DnsAnswer {
        rcode: message.metadata.response_code,
        authoritative: message.metadata.authoritative,
        truncated: message.metadata.truncation,
        records,
    }))
}

/// Asks `resolver` (port 53) for `name`/`qtype` from namespace `ns`, over TCP or UDP, and
/// returns the answer, or why there was none.
///
/// Bounded: UDP tries 3 times, waiting 1 s each; TCP tries twice, with 2 s timeouts. Over TCP
/// the message carries its 2-byte length prefix (RFC 1035 4.2.2). An answer with an error code
/// (NXDOMAIN, REFUSED) is an answer: `Ok`.
pub fn dns_lookup(
    ns: &str,
    resolver: IpAddr,
    name: &str,
    qtype: RecordType,
    tcp: bool,
) -> Result<DnsAnswer, String> {
    let id = reserve_ids(1);
    let query = encode_query(id, name, qtype);
    let to = SocketAddr::new(resolver, DNS_PORT);
    let what = format!("{qtype} {name} from {ns} to {to}");
    let result = if tcp {
        lookup_tcp(ns, to, id, &query)
    } else {
        lookup_udp(ns, to, id, &query)
    };
    result.map_err(|e| format!("DNS {what} over {}: {e}", if tcp { "TCP" } else { "UDP" }))
}

fn lookup_udp(ns: &str, to: SocketAddr, id: u16, query: &[u8]) -> Result<DnsAnswer, String> {
    let socket =
        run_in(ns, || UdpSocket::bind(unspecified(to.ip()))).map_err(|e| format!("bind: {e}"))?;
    let mut buf = vec![0u8; UDP_BUF];
    let mut last_error = String::from("no answer");
    for _ in 0..UDP_TRIES {
        if let Err(e) = socket.send_to(query, to) {
            last_error = format!("send: {e}");
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let deadline = Instant::now() + UDP_WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            socket
                .set_read_timeout(Some(left))
                .expect("a non-zero read timeout is valid");
            match socket.recv_from(&mut buf) {
                // Only the resolver's datagrams: anything else is not an answer.
                Ok((n, from)) if from == to => {
                    if let Some(answer) = decode_answer(&buf[..n], id) {
                        return answer;
                    }
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => break,
                Err(e) => {
                    // E.g. ECONNREFUSED from an ICMP port unreachable: nobody listens.
                    last_error = format!("receive: {e}");
                    break;
                }
            }
        }
    }
    Err(format!("{last_error} after {UDP_TRIES} tries"))
}

fn lookup_tcp(ns: &str, to: SocketAddr, id: u16, query: &[u8]) -> Result<DnsAnswer, String> {
    let len = u16::try_from(query.len()).expect("a query is shorter than 64 KiB");
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    let mut last_error = String::new();
    for _ in 0..TCP_TRIES {
        match tcp_exchange(ns, to, &framed) {
            Ok(wire) => match decode_answer(&wire, id) {
                Some(answer) => return answer,
                None => last_error = "the response has another ID".into(),
            },
            Err(e) => last_error = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{last_error} after {TCP_TRIES} tries"))
}

/// Connects, sends `framed`, and reads one length-prefixed message back.
fn tcp_exchange(ns: &str, to: SocketAddr, framed: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream = run_in(ns, || TcpStream::connect_timeout(&to, TCP_TIMEOUT))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(TCP_TIMEOUT))
        .expect("a non-zero read timeout is valid");
    stream
        .set_write_timeout(Some(TCP_TIMEOUT))
        .expect("a non-zero write timeout is valid");
    stream.write_all(framed).map_err(|e| format!("send: {e}"))?;
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .map_err(|e| format!("reading the length prefix: {e}"))?;
    let mut wire = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream
        .read_exact(&mut wire)
        .map_err(|e| format!("reading a {}-byte message: {e}", wire.len()))?;
    Ok(wire)
}

/// The addresses `resolver` gives for `name`/`qtype` (A or AAAA) when asked from namespace
/// `ns` (see [`dns_lookup`]); panics if no answer comes, so a broken resolver fails the test
/// here. An empty list means the resolver answered with no address (NXDOMAIN, or no record).
#[track_caller]
pub fn dns_query(
    ns: &str,
    resolver: IpAddr,
    name: &str,
    qtype: RecordType,
    tcp: bool,
) -> Vec<IpAddr> {
    dns_lookup(ns, resolver, name, qtype, tcp)
        .unwrap_or_else(|e| panic!("{e}"))
        .addresses()
}

/// How long [`dns_burst`] waits for answers after its last query.
const BURST_WAIT: Duration = Duration::from_secs(2);
/// How long [`dns_burst`] may spend sending.
const BURST_SEND_LIMIT: Duration = Duration::from_secs(5);

/// Sends `count` A queries over UDP from namespace `ns` to `resolver` as fast as the socket
/// takes them, cycling through `names`, each with its own message ID, and returns how many
/// distinct ones were answered (with any response code) within 2 s of the last.
///
/// One non-blocking socket sends and receives at once, so answers are read while queries are
/// still going out. Bounded: at most 65536 queries, 5 s of sending, 2 s of waiting.
pub fn dns_burst(ns: &str, resolver: IpAddr, names: &[&str], count: usize) -> usize {
    assert!(!names.is_empty(), "dns_burst: no names to ask for");
    assert!(
        count <= usize::from(u16::MAX) + 1,
        "dns_burst: {count} queries would reuse message IDs (at most 65536)"
    );
    let to = SocketAddr::new(resolver, DNS_PORT);
    let socket = run_in(ns, || UdpSocket::bind(unspecified(resolver)))
        .unwrap_or_else(|e| panic!("dns_burst: bind in {ns}: {e}"));
    socket
        .set_nonblocking(true)
        .expect("a UDP socket can be non-blocking");
    crate::traffic::force_rcvbuf(&socket, 4 << 20);
    let queries: Vec<Vec<u8>> = names
        .iter()
        .map(|name| encode_query(0, name, RecordType::A))
        .collect();
    // Reserved, so that lookups running at the same time use other IDs.
    let base = reserve_ids(count);
    let mut answered = vec![false; count];
    let mut answers = 0;
    let mut buf = vec![0u8; UDP_BUF];
    let mut receive = |answered: &mut [bool], answers: &mut usize| {
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if from != to || n < 12 || buf[2] & 0x80 == 0 {
                continue; // not from the resolver, or not a response
            }
            let offset = usize::from(u16::from_be_bytes([buf[0], buf[1]]).wrapping_sub(base));
            if let Some(seen) = answered.get_mut(offset).filter(|seen| !**seen) {
                *seen = true;
                *answers += 1;
            }
        }
    };
    let send_deadline = Instant::now() + BURST_SEND_LIMIT;
    let mut i = 0;
    while i < count && Instant::now() < send_deadline {
        let mut query = queries[i % queries.len()].clone();
        let id = base.wrapping_add(i as u16);
        query[..2].copy_from_slice(&id.to_be_bytes());
        match socket.send_to(&query, to) {
            Ok(_) => i += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                wait_writable(&socket, Duration::from_millis(10));
            }
            Err(e) => panic!("dns_burst from {ns} to {to}: query {i}: {e}"),
        }
        receive(&mut answered, &mut answers);
    }
    let deadline = Instant::now() + BURST_WAIT;
    while answers < i && Instant::now() < deadline {
        receive(&mut answered, &mut answers);
        std::thread::sleep(Duration::from_millis(5));
    }
    answers
}

/// The unspecified address of `addr`'s family, port 0: bind to it to talk to `addr`.
fn unspecified(addr: IpAddr) -> SocketAddr {
    match addr {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Waits up to `timeout` until `socket` can send.
fn wait_writable(socket: &UdpSocket, timeout: Duration) {
    let mut fds = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = timeout.as_millis().try_into().unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, which outlives the call.
    unsafe { libc::poll(&mut fds, 1, ms) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_chains() {
        let chain: Vec<&str> = zone_chain("cdn.vendor.example.")
            .iter()
            .map(|z| z.name)
            .collect();
        assert_eq!(
            chain,
            [
                "cdn.vendor.example",
                "edge.cdn-provider.example",
                "node7.cdn-provider.example"
            ]
        );
        assert_eq!(
            zone_addresses("cdn.vendor.example", RecordType::A),
            [IpAddr::V4(SERVERS_V4[1])]
        );
        assert_eq!(
            zone_addresses("api.camera-cloud.example.com.au", RecordType::AAAA),
            Vec::<IpAddr>::new()
        );
        assert!(zone_chain("nowhere.example").is_empty());
        assert_eq!(zone_name(SHORT_TTL_NAME).map(|z| z.ttl), Some(SHORT_TTL));
    }

    #[test]
    fn several_names_share_an_address() {
        let names_of = |a: Ipv4Addr| ZONE.iter().filter(|z| z.v4 == Some(a)).count();
        assert_eq!(names_of(SERVERS_V4[0]), 2);
        assert_eq!(names_of(SERVERS_V4[2]), 2);
        assert_eq!(names_of(SERVERS_V4[4]), 0, "203.0.113.6 stays nameless");
    }

    #[test]
    fn dnsmasq_lines() {
        let lines = dnsmasq_zone_lines();
        assert!(
            lines.contains("host-record=telemetry.vendor.example,192.0.2.10,2001:db8:1::10,300\n")
        );
        assert!(lines.contains("cname=cdn.vendor.example,edge.cdn-provider.example,300\n"));
        assert!(lines.contains("host-record=tracker.ads.example.co.uk,192.0.2.30,300\n"));
        assert!(lines.contains("host-record=short.vendor.example,203.0.113.5,2001:db8:2::5,2\n"));
        assert_eq!(lines.lines().count(), ZONE.len());
    }

    #[test]
    fn queries_round_trip() {
        let wire = encode_query(0x1234, "cdn.vendor.example", RecordType::AAAA);
        assert_eq!(&wire[..2], &[0x12, 0x34]);
        assert_eq!(wire[2] & 0x01, 1, "recursion desired");
        // Our own query is not a response to itself.
        assert!(decode_answer(&wire, 0x1234).is_none());
        let mut response = Message::from_vec(&wire).expect("our query parses");
        response.metadata.message_type = MessageType::Response;
        response.metadata.response_code = ResponseCode::NXDomain;
        let wire = response.to_vec().expect("encode");
        let answer = decode_answer(&wire, 0x1234)
            .expect("a response")
            .expect("parses");
        assert_eq!(answer.rcode, ResponseCode::NXDomain);
        assert!(answer.records.is_empty());
        assert!(decode_answer(&wire, 0x4321).is_none(), "another ID");
        assert!(
            decode_answer(&[1, 2, 3], 0x0102)
                .expect("an error")
                .is_err()
        );
    }
}
