//! DHCPv4 requests seen on the LAN: what a device calls itself, straight from the device.
//!
//! Lease files say the same when the router's DHCP server writes one the agent can read, but not
//! every router does (or the agent may not be on the DHCP server). A client's DISCOVER or REQUEST
//! carries its MAC, the host name it wants to be known by (option 12) and the address it asks
//! for (option 50), which is enough to name the device. Decoding is dhcproto's.

use std::net::Ipv4Addr;

pub use dhcproto::v4::MessageType;
use dhcproto::v4::borrowed::Message;
use dhcproto::v4::{DhcpOption, HType, Opcode, OptionCode};

use super::clean_device_name;
use crate::types::MacAddr;

/// The fixed BOOTP header (236 bytes, RFC 2131 §2) and the magic cookie (4 bytes) that makes
/// it DHCP (RFC 2131 §3).
const FIXED_LEN: usize = 240;
/// The DHCP magic cookie (RFC 2132 §2).
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// What a DHCP client says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpRequest {
    /// The client's hardware address (chaddr): the device.
    pub client_mac: MacAddr,
    /// Option 53; `None` for a plain BOOTP request.
    pub message_type: Option<MessageType>,
    /// Option 12, cleaned for use as a label value (see [`parse_request`]).
    pub hostname: Option<String>,
    /// Option 50: the address the client asks for (in DISCOVER, and in REQUEST while selecting or
    /// rebooting).
    pub requested_ip: Option<Ipv4Addr>,
    /// `ciaddr`, when nonzero: the address the client already holds (renewing, INFORM).
    pub client_ip: Option<Ipv4Addr>,
}

/// Why a payload yields no client request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhcpError {
    /// Shorter than the fixed header and magic cookie.
    #[error("DHCP message truncated: {0} bytes, the fixed header and magic cookie need 240")]
    Truncated(usize),
    /// The magic cookie is missing: BOOTP without DHCP, or not DHCP at all.
    #[error("not a DHCP message: magic cookie is {0:02x?}, expected [63, 82, 53, 63]")]
    BadMagic([u8; 4]),
    /// A server's reply (BOOTREPLY), or an unknown op: only clients' requests describe clients.
    #[error("DHCP op is {0}, not BOOTREQUEST (1): not from a client")]
    NotRequest(u8),
    /// The client's hardware address is not an Ethernet MAC, so it names no device here.
    #[error(
        "client hardware address is not Ethernet: htype {htype}, hlen {hlen} (expected 1 and 6)"
    )]
    NotEthernet {
        /// Hardware type.
        htype: u8,
        /// Hardware address length.
        hlen: u8,
    },
}

/// Parses a DHCPv4 client message (a UDP payload to port 67).
///
/// The message is read with dhcproto's lazy `borrowed::Message`, and only the options used here
/// are decoded (message type, host name, requested address; options split per RFC 3396 are
/// joined). Its eager decoder is not used: it decodes every option, and some option decoders
/// assert on lengths, which a hostile packet would turn into a panic. An option that does not
/// decode (a host name that is not UTF-8, an address that is not 4 bytes) is left out; the others
/// are kept.
///
/// The host name (option 12) is cleaned as device names are everywhere in [`super`]: trimmed,
/// trailing dots dropped, at most 63 bytes, and dropped whole if it holds control or invisible
/// formatting characters.
pub fn parse_request(payload: &[u8]) -> Result<DhcpRequest, DhcpError> {
    let message = Message::new(payload).map_err(|_| DhcpError::Truncated(payload.len()))?;
    let magic: [u8; 4] = payload
        .get(236..FIXED_LEN)
        .and_then(|m| m.try_into().ok())
        .ok_or(DhcpError::Truncated(payload.len()))?;
    if magic != MAGIC_COOKIE {
        return Err(DhcpError::BadMagic(magic));
    }
    let opcode = message.opcode();
    if opcode != Opcode::BootRequest {
        return Err(DhcpError::NotRequest(opcode.into()));
    }
    let (htype, hlen) = (message.htype(), message.hlen());
    if htype != HType::Eth || hlen != 6 {
        return Err(DhcpError::NotEthernet {
            htype: htype.into(),
            hlen,
        });
    }
    // hlen is 6, so chaddr() stays inside the 16-byte field.
    let client_mac = MacAddr(
        message
            .chaddr()
            .try_into()
            .map_err(|_| DhcpError::Truncated(payload.len()))?,
    );
    let mut request = DhcpRequest {
        client_mac,
        message_type: None,
        hostname: None,
        requested_ip: None,
        client_ip: Some(message.ciaddr()).filter(|ip| !ip.is_unspecified()),
    };
    for option in message.opts() {
        if !matches!(
            option.code(),
            OptionCode::MessageType | OptionCode::Hostname | OptionCode::RequestedIpAddress
        ) {
            continue;
        }
        match option.into_option() {
            Ok(DhcpOption::MessageType(t)) => request.message_type = Some(t),
            Ok(DhcpOption::Hostname(name)) => request.hostname = clean_device_name(&name),
            Ok(DhcpOption::RequestedIpAddress(addr)) => request.requested_ip = Some(addr),
            _ => {}
        }
    }
    Ok(request)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const DISCOVER: &[u8] = include_bytes!("../../tests/fixtures/dhcp_discover.bin");
    pub(crate) const REQUEST: &[u8] = include_bytes!("../../tests/fixtures/dhcp_request.bin");
    pub(crate) const OFFER: &[u8] = include_bytes!("../../tests/fixtures/dhcp_offer.bin");

    const PHONE: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);

    /// The captured DISCOVER with its options replaced by `options` (then END).
    fn with_options(options: &[u8]) -> Vec<u8> {
        let mut msg = DISCOVER[..FIXED_LEN].to_vec();
        msg.extend_from_slice(options);
        msg.push(255);
        msg
    }

    #[test]
    fn parses_captured_udhcpc_messages() {
        let cases = [
            (
                "DISCOVER",
                DISCOVER,
                DhcpRequest {
                    client_mac: PHONE,
                    message_type: Some(MessageType::Discover),
                    hostname: Some("my-phone".into()),
                    requested_ip: None,
                    client_ip: None,
                },
            ),
            (
                "REQUEST",
                REQUEST,
                DhcpRequest {
                    client_mac: PHONE,
                    message_type: Some(MessageType::Request),
                    hostname: Some("my-phone".into()),
                    requested_ip: Some(Ipv4Addr::new(192, 0, 2, 101)),
                    client_ip: None,
                },
            ),
        ];
        for (what, payload, want) in cases {
            assert_eq!(parse_request(payload), Ok(want), "{what}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_client_request() {
        let mut token_ring = DISCOVER.to_vec();
        token_ring[1] = 6;
        let mut long_hlen = DISCOVER.to_vec();
        long_hlen[2] = 200;
        let mut bootp = DISCOVER.to_vec();
        bootp[236..240].copy_from_slice(&[0, 0, 0, 0]);
        let cases: Vec<(&str, &[u8], DhcpError)> = vec![
            ("server's OFFER", OFFER, DhcpError::NotRequest(2)),
            ("empty", &[], DhcpError::Truncated(0)),
            (
                "cut before the cookie",
                &DISCOVER[..239],
                DhcpError::Truncated(239),
            ),
            (
                "IEEE 802 hardware",
                &token_ring,
                DhcpError::NotEthernet { htype: 6, hlen: 6 },
            ),
            (
                "hlen past chaddr",
                &long_hlen,
                DhcpError::NotEthernet {
                    htype: 1,
                    hlen: 200,
                },
            ),
            ("BOOTP", &bootp, DhcpError::BadMagic([0, 0, 0, 0])),
        ];
        for (what, payload, want) in cases {
            assert_eq!(parse_request(payload), Err(want), "{what}");
        }
        assert_eq!(
            DhcpError::BadMagic([0, 0, 0, 0]).to_string(),
            "not a DHCP message: magic cookie is [00, 00, 00, 00], expected [63, 82, 53, 63]"
        );
    }

    #[test]
    fn cleans_host_names_and_reads_options() {
        // (what, options, hostname, requested, message type)
        type Case = (
            &'static str,
            Vec<u8>,
            Option<&'static str>,
            Option<Ipv4Addr>,
            Option<MessageType>,
        );
        let cases: Vec<Case> = vec![
            ("no options", vec![], None, None, None),
            (
                "trailing dot and spaces",
                [&[53, 1, 3, 12, 11][..], b" tv.local. "].concat(),
                Some("tv.local"),
                None,
                Some(MessageType::Request),
            ),
            (
                "escape sequence rejected",
                [&[12, 6][..], b"a\x1b[31m"].concat(),
                None,
                None,
                None,
            ),
            (
                "host name not UTF-8: dropped, other options kept",
                vec![53, 1, 1, 12, 2, 0xff, 0xfe, 50, 4, 192, 0, 2, 7],
                None,
                Some(Ipv4Addr::new(192, 0, 2, 7)),
                Some(MessageType::Discover),
            ),
            (
                "host name split over two options (RFC 3396)",
                [&[12, 3][..], b"my-", &[12, 5], b"phone"].concat(),
                Some("my-phone"),
                None,
                None,
            ),
            (
                "option cut by the end of the packet",
                vec![53, 1, 8, 12, 20, b'x'],
                None,
                None,
                Some(MessageType::Inform),
            ),
            (
                "long name cut to 63 bytes",
                [&[12, 100][..], &[b'x'; 100][..]].concat(),
                Some("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
                None,
                None,
            ),
            (
                "requested address",
                vec![50, 4, 192, 0, 2, 7],
                None,
                Some(Ipv4Addr::new(192, 0, 2, 7)),
                None,
            ),
            (
                "requested address of the wrong length is dropped",
                vec![50, 3, 192, 0, 2],
                None,
                None,
                None,
            ),
        ];
        for (what, options, hostname, requested, message_type) in cases {
            let got =
                parse_request(&with_options(&options)).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(got.hostname.as_deref(), hostname, "{what}");
            assert_eq!(got.requested_ip, requested, "{what}");
            assert_eq!(got.message_type, message_type, "{what}");
            assert_eq!(got.client_mac, PHONE, "{what}");
        }
    }

    #[test]
    fn options_that_trip_dhcproto_assertions_are_never_decoded() {
        // dhcproto's eager decoder debug-asserts on these lengths (found by the property tests:
        // rapid commit with a value). Only the options used here are decoded.
        for options in [
            &[80, 1, 0][..],    // rapid commit must be empty
            &[81, 0][..],       // client FQDN needs 3 bytes
            &[151, 0][..],      // bulk lease query status needs 1
            &[93, 2, 0, 0][..], // client network interface needs 3
        ] {
            let got = parse_request(&with_options(&[&[53, 1, 1], options].concat())).unwrap();
            assert_eq!(got.message_type, Some(MessageType::Discover), "{options:?}");
        }
    }

    #[test]
    fn reads_ciaddr_when_renewing() {
        let mut renew = with_options(&[53, 1, 3]);
        renew[12..16].copy_from_slice(&[192, 0, 2, 101]);
        let got = parse_request(&renew).unwrap();
        assert_eq!(got.client_ip, Some(Ipv4Addr::new(192, 0, 2, 101)));
    }
}
