//! The kernel's neighbour table (ARP for IPv4, neighbour discovery for IPv6): which MAC address
//! answers for which IP address on which interface, as `ip neigh` shows it.
//!
//! It is read with one rtnetlink dump (`RTM_GETNEIGH` with `NLM_F_DUMP`) over a blocking socket
//! of the calling thread's network namespace; no async runtime is involved. Each dump is bounded
//! by [`TIMEOUT`], so one that the kernel never finishes is an error, not a hang.

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_sys::protocols::NETLINK_ROUTE;

use crate::kernel::netlink::{self, DumpSocket, RECEIVE_BUFFER};
use crate::types::MacAddr;

/// One neighbour entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The interface the neighbour was seen on.
    pub ifindex: u32,
    pub mac: MacAddr,
    pub addr: IpAddr,
    /// The kernel has recent proof that `mac` answers for `addr` (or was told so, for a static
    /// entry); false when the entry is stale, i.e. once right but not confirmed lately.
    pub reachable: bool,
}

/// How long one dump may take, from the request to `NLMSG_DONE`. A dump of even a large table
/// takes milliseconds.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// How often a dump is tried when the kernel reports that the table changed while it was being
/// dumped (`NLM_F_DUMP_INTR`); the last try is returned as it is.
const ATTEMPTS: u32 = 3;

/// How the dump is named in errors.
const WHAT: &str = "netlink neighbour dump";

/// The sequence number of the request. Each dump uses a fresh socket that receives nothing but
/// the answers to this one request, so any number will do.
const SEQUENCE: u32 = 1;

/// Every IPv4 (ARP) and IPv6 (ND) entry of the calling thread's network namespace, on every
/// interface, that has a unicast Ethernet address (`NDA_LLADDR`, neither all-zero nor a group
/// address) and a usable state: `reachable` is true for `NUD_REACHABLE`, `NUD_PERMANENT`,
/// `NUD_DELAY` and `NUD_PROBE` entries, false for `NUD_STALE` ones; `NUD_INCOMPLETE`,
/// `NUD_FAILED` and `NUD_NOARP` (and `NUD_NONE`) entries are left out.
///
/// Errors are `io::Error`s whose message starts with "netlink neighbour dump:" and says what
/// failed; a dump that does not finish within [`TIMEOUT`] fails with `io::ErrorKind::TimedOut`.
pub fn dump() -> io::Result<Vec<Neighbour>> {
    let mut attempt = 1;
    loop {
        let dump = dump_once(Instant::now() + TIMEOUT)?;
        if !dump.interrupted || attempt == ATTEMPTS {
            return Ok(dump.entries);
        }
        attempt += 1;
    }
}

/// What one dump found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Dump {
    entries: Vec<Neighbour>,
    /// The table changed during the dump, which may then miss or repeat entries.
    interrupted: bool,
}

/// Sends one dump request on a fresh socket and collects the answer until `NLMSG_DONE`.
fn dump_once(deadline: Instant) -> io::Result<Dump> {
    let socket = DumpSocket::send(NETLINK_ROUTE, &request(), WHAT)?;
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    let mut dump = Dump::default();
    let within = humantime::format_duration(TIMEOUT).to_string();
    loop {
        let len = socket.receive(&mut buf, deadline, &within)?;
        if read_datagram(&buf[..len], &mut dump)? {
            return Ok(dump);
        }
    }
}

/// The request: dump the neighbours of every family (`AF_UNSPEC` covers the ARP and the ND
/// table) on every interface.
fn request() -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = SEQUENCE;
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetNeighbour(
            NeighbourMessage::default(),
        )),
    );
    message.finalize();
    let mut buf = vec![0u8; message.buffer_len()];
    message.serialize(&mut buf);
    buf
}

/// Reads the netlink messages of one received datagram into `dump`; true once `NLMSG_DONE`
/// has come, when the dump is complete.
fn read_datagram(datagram: &[u8], dump: &mut Dump) -> io::Result<bool> {
    let mut rest = datagram;
    while !rest.is_empty() {
        let length = NetlinkBuffer::new_checked(rest)
            .map_err(|e| invalid(format!("a malformed netlink message: {e}")))?
            .length() as usize;
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
            .map_err(|e| invalid(format!("an undecodable netlink message: {e}")))?;
        if message.header.flags & NLM_F_DUMP_INTR != 0 {
            dump.interrupted = true;
        }
        match message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(entry)) => {
                dump.entries.extend(decode(&entry));
            }
            NetlinkPayload::Done(done) if done.code < 0 => {
                return Err(failed(
                    "the kernel ended the dump with an error",
                    io::Error::from_raw_os_error(-done.code),
                ));
            }
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(error) if error.code.is_some() => {
                return Err(failed("the kernel refused the request", error.to_io()));
            }
            NetlinkPayload::Overrun(_) => {
                return Err(invalid("the kernel reported an overrun".into()));
            }
            // Acknowledgements and no-ops; nothing else answers a neighbour dump.
            _ => {}
        }
        // Messages in a datagram start at 4-byte boundaries; `new_checked` has made sure that
        // `length` covers at least a header and stays within `rest`.
        let next = length.next_multiple_of(4).min(rest.len());
        rest = &rest[next..];
    }
    Ok(false)
}

/// The entry `message` describes, if it is one to report: an IPv4 or IPv6 address with a
/// unicast Ethernet address in a usable state (see [`reachability`]).
fn decode(message: &NeighbourMessage) -> Option<Neighbour> {
    let reachable = reachability(message.header.state)?;
    let addr = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
            _ => None,
        })?;
    let mac = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                <[u8; 6]>::try_from(bytes.as_slice()).ok()
            }
            _ => None,
        })?;
    let mac = MacAddr(mac);
    if mac.0 == [0; 6] || mac.is_multicast() {
        return None;
    }
    Some(Neighbour {
        ifindex: message.header.ifindex,
        mac,
        addr,
        reachable,
    })
}

/// Whether an entry in `state` counts as reachable (`Some(true)`), stale (`Some(false)`), or is
/// not reported at all (`None`): still being resolved (incomplete), given up on (failed), not
/// resolved by ARP or ND at all (noarp, e.g. multicast and point-to-point), or never used (none).
///
/// The state is a bit mask in the kernel's ABI, although the kernel sets one bit at a time; an
/// entry with a disqualifying bit is left out whatever else is set.
fn reachability(state: NeighbourState) -> Option<bool> {
    let bits = u16::from(state);
    if bits & (libc::NUD_INCOMPLETE | libc::NUD_FAILED | libc::NUD_NOARP) != 0 {
        None
    } else if bits & (libc::NUD_REACHABLE | libc::NUD_PERMANENT | libc::NUD_DELAY | libc::NUD_PROBE)
        != 0
    {
        Some(true)
    } else if bits & libc::NUD_STALE != 0 {
        Some(false)
    } else {
        None
    }
}

/// `error` while doing `what`, keeping its kind.
fn failed(what: &str, error: io::Error) -> io::Error {
    netlink::failed(WHAT, what, error)
}

/// The kernel sent something this module cannot read.
fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{WHAT}: {what}"))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::num::NonZeroI32;

    use netlink_packet_core::{DoneMessage, ErrorMessage, NLM_F_MULTIPART as NLM_F_MULTI};
    use netlink_packet_route::AddressFamily;

    use super::*;

    const MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0xaa, 0xbb, 0xcc];
    const V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
    const V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);

    /// An `RTM_NEWNEIGH` body as the kernel sends it in a dump.
    fn entry(
        ifindex: u32,
        state: NeighbourState,
        addr: Option<IpAddr>,
        lladdr: Option<&[u8]>,
    ) -> NeighbourMessage {
        let mut message = NeighbourMessage::default();
        message.header.family = match addr {
            Some(IpAddr::V6(_)) => AddressFamily::Inet6,
            _ => AddressFamily::Inet,
        };
        message.header.ifindex = ifindex;
        message.header.state = state;
        if let Some(addr) = addr {
            message
                .attributes
                .push(NeighbourAttribute::Destination(addr.into()));
        }
        if let Some(lladdr) = lladdr {
            message
                .attributes
                .push(NeighbourAttribute::LinkLayerAddress(lladdr.to_vec()));
        }
        message
    }

    fn reported(ifindex: u32, addr: IpAddr, reachable: bool) -> Neighbour {
        Neighbour {
            ifindex,
            mac: MacAddr(MAC),
            addr,
            reachable,
        }
    }

    /// `payload` as one netlink message, with `flags`.
    fn message(payload: NetlinkPayload<RouteNetlinkMessage>, flags: u16) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = SEQUENCE;
        let mut message = NetlinkMessage::new(header, payload);
        message.finalize();
        let mut buf = vec![0u8; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    fn new_neighbour(entry: NeighbourMessage) -> Vec<u8> {
        message(
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(entry)),
            NLM_F_MULTI,
        )
    }

    fn done(code: i32) -> Vec<u8> {
        let mut done = DoneMessage::default();
        done.code = code;
        message(NetlinkPayload::Done(done), NLM_F_MULTI)
    }

    #[test]
    fn reachability_by_state() {
        use NeighbourState as S;
        let cases = [
            (S::Reachable, Some(true)),
            (S::Permanent, Some(true)),
            (S::Delay, Some(true)),
            (S::Probe, Some(true)),
            (S::Stale, Some(false)),
            (S::Incomplete, None),
            (S::Failed, None),
            (S::Noarp, None),
            (S::None, None),
            // Bit combinations the kernel does not send: a disqualifying bit wins.
            (S::Other(libc::NUD_REACHABLE | libc::NUD_STALE), Some(true)),
            (S::Other(libc::NUD_PERMANENT | libc::NUD_NOARP), None),
            (S::Other(0x100), None),
        ];
        for (state, expected) in cases {
            assert_eq!(reachability(state), expected, "{state:?}");
        }
    }

    #[test]
    fn decodes_usable_entries() {
        let cases = [
            (
                entry(3, NeighbourState::Reachable, Some(V4.into()), Some(&MAC)),
                Some(reported(3, V4.into(), true)),
            ),
            (
                entry(7, NeighbourState::Stale, Some(V6.into()), Some(&MAC)),
                Some(reported(7, V6.into(), false)),
            ),
            (
                entry(2, NeighbourState::Permanent, Some(V6.into()), Some(&MAC)),
                Some(reported(2, V6.into(), true)),
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(decode(&message), expected, "{message:?}");
        }
    }

    #[test]
    fn skips_entries_without_a_unicast_ethernet_address_or_usable_state() {
        let cases = [
            // No NDA_LLADDR (an incomplete or proxy entry).
            entry(3, NeighbourState::Reachable, Some(V4.into()), None),
            // No NDA_DST.
            entry(3, NeighbourState::Reachable, None, Some(&MAC)),
            // Not Ethernet: an IPoIB hardware address, a GRE tunnel's IPv4 "link-layer" one.
            entry(
                3,
                NeighbourState::Reachable,
                Some(V4.into()),
                Some(&[1; 20]),
            ),
            entry(
                3,
                NeighbourState::Reachable,
                Some(V4.into()),
                Some(&[192, 0, 2, 1]),
            ),
            // All-zero and group MACs.
            entry(3, NeighbourState::Permanent, Some(V4.into()), Some(&[0; 6])),
            entry(
                3,
                NeighbourState::Noarp,
                Some(Ipv4Addr::new(224, 0, 0, 251).into()),
                Some(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]),
            ),
            entry(
                3,
                NeighbourState::Permanent,
                Some(V4.into()),
                Some(&[0x33, 0x33, 0, 0, 0, 1]),
            ),
            // States that are not reported.
            entry(3, NeighbourState::Failed, Some(V4.into()), Some(&MAC)),
            entry(3, NeighbourState::Incomplete, Some(V4.into()), Some(&MAC)),
            entry(3, NeighbourState::Noarp, Some(V6.into()), Some(&MAC)),
            entry(3, NeighbourState::None, Some(V6.into()), Some(&MAC)),
        ];
        for message in cases {
            assert_eq!(decode(&message), None, "{message:?}");
        }
    }

    #[test]
    fn request_is_a_neighbour_dump_of_every_family() {
        let bytes = request();
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(message.header.flags, NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(message.header.length as usize, bytes.len());
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetNeighbour(body)) = message.payload
        else {
            panic!("not RTM_GETNEIGH: {:?}", message.payload);
        };
        assert_eq!(body.header.family, AddressFamily::Unspec);
        assert_eq!(body.header.ifindex, 0);
    }

    #[test]
    fn reads_a_dump_over_several_datagrams() {
        let mut dump = Dump::default();
        let first = [
            new_neighbour(entry(
                3,
                NeighbourState::Reachable,
                Some(V4.into()),
                Some(&MAC),
            )),
            // Skipped, but read past.
            new_neighbour(entry(
                3,
                NeighbourState::Failed,
                Some(V4.into()),
                Some(&MAC),
            )),
            new_neighbour(entry(4, NeighbourState::Stale, Some(V6.into()), Some(&MAC))),
        ]
        .concat();
        assert!(!read_datagram(&first, &mut dump).unwrap());
        let second = [
            new_neighbour(entry(5, NeighbourState::Delay, Some(V6.into()), Some(&MAC))),
            done(0),
        ]
        .concat();
        assert!(read_datagram(&second, &mut dump).unwrap());
        assert_eq!(
            dump,
            Dump {
                entries: vec![
                    reported(3, V4.into(), true),
                    reported(4, V6.into(), false),
                    reported(5, V6.into(), true),
                ],
                interrupted: false,
            }
        );
    }

    #[test]
    fn notes_an_interrupted_dump() {
        let mut dump = Dump::default();
        let reachable = entry(3, NeighbourState::Reachable, Some(V4.into()), Some(&MAC));
        let datagram = [
            message(
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(reachable)),
                NLM_F_MULTI | NLM_F_DUMP_INTR,
            ),
            done(0),
        ]
        .concat();
        assert!(read_datagram(&datagram, &mut dump).unwrap());
        assert!(dump.interrupted);
        assert_eq!(dump.entries, [reported(3, V4.into(), true)]);
    }

    #[test]
    fn reports_the_kernels_errors() {
        let mut refusal = ErrorMessage::default();
        refusal.code = NonZeroI32::new(-libc::EPERM);
        let refused = message(NetlinkPayload::Error(refusal), 0);
        let err = read_datagram(&refused, &mut Dump::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            err.to_string()
                .starts_with("netlink neighbour dump: the kernel refused the request: "),
            "{err}"
        );

        let err = read_datagram(&done(-libc::EINTR), &mut Dump::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        assert!(
            err.to_string()
                .starts_with("netlink neighbour dump: the kernel ended the dump with an error"),
            "{err}"
        );
    }

    #[test]
    fn rejects_malformed_datagrams() {
        let whole = new_neighbour(entry(
            3,
            NeighbourState::Reachable,
            Some(V4.into()),
            Some(&MAC),
        ));
        // Cut short: the header claims more than there is.
        let err = read_datagram(&whole[..whole.len() - 2], &mut Dump::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().starts_with("netlink neighbour dump: "),
            "{err}"
        );
        // Less than a netlink header.
        let err = read_datagram(&whole[..10], &mut Dump::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn an_acknowledgement_is_not_an_error() {
        let ack = message(NetlinkPayload::Error(ErrorMessage::default()), 0);
        let mut dump = Dump::default();
        assert!(!read_datagram(&ack, &mut dump).unwrap());
        assert_eq!(dump, Dump::default());
    }
}
