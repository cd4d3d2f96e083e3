//! Decoding the records the kernel copies into the ring buffer: header, addresses and the
//! parsed payload (DNS, TLS ClientHello, DHCP). Pure and stateless, so it runs on the sniff
//! thread and the owner of the naming state only applies the result ([`super::Naming::apply`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use monitor_common::{
    FAMILY_V4, IPPROTO_TCP, SNIFF_DHCP, SNIFF_DNS_QUERY, SNIFF_DNS_RESPONSE, SNIFF_TLS_HELLO,
    SniffHeader,
};

use super::kind_index;
use crate::{
    parsers::{dhcp, dns, tls},
    types::MacAddr,
};

/// What one copied packet says.
#[derive(Debug)]
pub enum Observation {
    /// Too short for its header, or of an unknown kind.
    Malformed,
    Record {
        /// Index in [`super::KINDS`].
        kind: usize,
        /// The LAN device the packet belongs to.
        mac: MacAddr,
        seen: Seen,
    },
}

/// The parsed payload of a record.
#[derive(Debug)]
pub enum Seen {
    /// A DNS answer to `device`; `None` when it did not parse.
    DnsAnswer {
        device: IpAddr,
        bindings: Option<Vec<dns::Binding>>,
    },
    /// A DNS query from `device` to a resolver outside.
    DnsQuery { device: IpAddr, resolver: IpAddr },
    /// A TLS ClientHello from `device` to `server:port`.
    TlsHello {
        device: IpAddr,
        server: IpAddr,
        port: u16,
        name: ServerName,
    },
    /// A DHCP request: `Some(hostname it sent, if any)`, `None` when it did not parse.
    Dhcp(Option<Option<(MacAddr, String)>>),
}

/// The server name of a ClientHello.
#[derive(Debug)]
pub enum ServerName {
    Named(String),
    /// A well-formed hello without a usable name: not a parse error.
    None,
    Unparsable,
}

/// Decodes and parses one record.
pub fn decode(record: &[u8]) -> Observation {
    let Some((header, payload)) = split(record) else {
        return Observation::Malformed;
    };
    let Some(kind) = kind_index(header.kind) else {
        return Observation::Malformed;
    };
    let mac = MacAddr(header.mac);
    let (src, dst) = addresses(&header);
    let seen = match header.kind {
        SNIFF_DNS_RESPONSE => {
            let transport = if header.protocol == IPPROTO_TCP {
                dns::Transport::Tcp
            } else {
                dns::Transport::Udp
            };
            let bindings = match dns::parse_response(payload, transport) {
                Ok(response) => Some(response.bindings),
                Err(e) => {
                    tracing::debug!(%mac, "DNS answer not understood: {e}");
                    None
                }
            };
            Seen::DnsAnswer {
                device: dst,
                bindings,
            }
        }
        SNIFF_DNS_QUERY => Seen::DnsQuery {
            device: src,
            resolver: dst,
        },
        SNIFF_TLS_HELLO => {
            let name = match tls::client_hello_server_name(payload) {
                Ok(name) => ServerName::Named(name),
                Err(e) => {
                    tracing::debug!(%mac, %dst, "ClientHello without a usable server name: {e}");
                    if matches!(e, tls::TlsError::NoServerName) {
                        ServerName::None
                    } else {
                        ServerName::Unparsable
                    }
                }
            };
            Seen::TlsHello {
                device: src,
                server: dst,
                port: header.dst_port,
                name,
            }
        }
        SNIFF_DHCP => Seen::Dhcp(match dhcp::parse_request(payload) {
            Ok(request) => Some(request.hostname.map(|h| (request.client_mac, h))),
            Err(e) => {
                tracing::debug!(%mac, "DHCP request not understood: {e}");
                None
            }
        }),
        _ => unreachable!("kind_index accepted it"),
    };
    Observation::Record { kind, mac, seen }
}

/// Splits a record into its header and the captured payload.
fn split(record: &[u8]) -> Option<(SniffHeader, &[u8])> {
    const HEADER: usize = size_of::<SniffHeader>();
    if record.len() < HEADER {
        return None;
    }
    // SAFETY: SniffHeader is plain old data (repr(C), no padding, every bit pattern valid) and
    // the slice holds at least its size; read_unaligned copes with any alignment.
    let header: SniffHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let rest = &record[HEADER..];
    let captured = (header.captured as usize).min(rest.len());
    Some((header, &rest[..captured]))
}

/// (source, destination) of the copied packet.
fn addresses(header: &SniffHeader) -> (IpAddr, IpAddr) {
    let addr = |raw: [u8; 16]| {
        if header.family == FAMILY_V4 {
            IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(raw))
        }
    };
    (addr(header.src), addr(header.dst))
}
