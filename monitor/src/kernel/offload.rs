//! Hardware offload: packets a NIC or switch forwards by itself never reach the CPU, so no hook
//! of ours, or anyone's, sees them. Two ways to turn it on are detected on every hook device:
//!
//! * `hw-tc-offload` (an ethtool feature): TC rules and flowtables may be pushed into the NIC;
//! * an nftables flowtable with `flags offload` that lists the device (firewall4's "hardware
//!   flow offloading" option).
//!
//! A software flowtable (no `flags offload`) is harmless here: it skips the bridge device and
//! the forward path, not the ports' TC hooks, which is where the agent counts a bridge (see
//! [`crate::kernel::hooks`]). Flowtables are read with one nfnetlink dump (`NFT_MSG_GETFLOWTABLE`), the
//! feature with the `SIOCETHTOOL` ioctl: both take microseconds, and the agent checks every few
//! seconds.

use std::{
    collections::BTreeSet,
    io,
    time::{Duration, Instant},
};

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NlaBuffer, NlasIterator};
use netlink_sys::protocols::NETLINK_NETFILTER;

use crate::kernel::netlink::{DumpSocket, RECEIVE_BUFFER};

/// How the flowtable dump is named in errors.
const WHAT: &str = "nfnetlink flowtable dump";
/// How long the dump may take.
const TIMEOUT: Duration = Duration::from_secs(3);

// nfnetlink and nf_tables constants (linux/netfilter/nfnetlink.h, nf_tables.h).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWFLOWTABLE: u16 = 22;
const NFT_MSG_GETFLOWTABLE: u16 = 23;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NFTA_FLOWTABLE_TABLE: u16 = 1;
const NFTA_FLOWTABLE_NAME: u16 = 2;
const NFTA_FLOWTABLE_HOOK: u16 = 3;
const NFTA_FLOWTABLE_FLAGS: u16 = 7;
const NFTA_FLOWTABLE_HOOK_DEVS: u16 = 3;
const NFTA_DEVICE_NAME: u16 = 1;
/// `NF_FLOWTABLE_HW_OFFLOAD`.
const FLOWTABLE_HW_OFFLOAD: u32 = 1;
/// Size of `struct nfgenmsg`, before a flowtable's attributes.
const NFGENMSG_LEN: usize = 4;
/// The type bits of an attribute (the top two bits are the nested and byte-order flags).
const NLA_TYPE_MASK: u16 = 0x3fff;

/// One nftables flowtable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flowtable {
    /// `family table name`, e.g. `inet fw4 ft`.
    pub name: String,
    pub devices: Vec<String>,
    /// `flags offload`: flows are pushed into the hardware.
    pub hardware: bool,
}

/// Every flowtable of the agent's network namespace. A kernel without nf_tables has none.
pub fn flowtables() -> io::Result<Vec<Flowtable>> {
    let socket = match DumpSocket::send(NETLINK_NETFILTER, &request(), WHAT) {
        Ok(socket) => socket,
        Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let deadline = Instant::now() + TIMEOUT;
    let within = humantime::format_duration(TIMEOUT).to_string();
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    let mut found = Vec::new();
    loop {
        let len = socket.receive(&mut buf, deadline, &within)?;
        if read_datagram(&buf[..len], &mut found)? {
            return Ok(found);
        }
    }
}

/// `NFT_MSG_GETFLOWTABLE` with `NLM_F_DUMP`, for every family.
fn request() -> Vec<u8> {
    let len = 16 + NFGENMSG_LEN;
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETFLOWTABLE).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    // nfgenmsg: family AF_UNSPEC (all), version NFNETLINK_V0, resource id 0.
    msg.extend_from_slice(&[0, 0, 0, 0]);
    msg
}

/// Reads the messages of one datagram into `found`; true once the dump is complete.
fn read_datagram(datagram: &[u8], found: &mut Vec<Flowtable>) -> io::Result<bool> {
    let mut rest = datagram;
    while !rest.is_empty() {
        let message = NetlinkBuffer::new_checked(rest)
            .map_err(|e| invalid(format!("a malformed netlink message: {e}")))?;
        let length = message.length() as usize;
        match message.message_type() {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = message
                    .payload()
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                if code < 0 {
                    // No nf_tables in this kernel: nothing is offloaded by it.
                    if -code == libc::EOPNOTSUPP || -code == libc::ENOENT {
                        return Ok(true);
                    }
                    return Err(netlink_error(code));
                }
            }
            t if t == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWFLOWTABLE => {
                found.push(decode(message.payload())?);
            }
            _ => {}
        }
        let next = length.next_multiple_of(4).min(rest.len());
        rest = &rest[next..];
    }
    Ok(false)
}

/// A flowtable from an `NFT_MSG_NEWFLOWTABLE` payload (nfgenmsg, then attributes).
fn decode(payload: &[u8]) -> io::Result<Flowtable> {
    let family = match payload.first() {
        Some(2) => "ip",
        Some(10) => "ip6",
        Some(1) => "inet",
        Some(7) => "bridge",
        Some(5) => "netdev",
        _ => "unknown",
    };
    let attributes = payload
        .get(NFGENMSG_LEN..)
        .ok_or_else(|| invalid("a flowtable message without its header".into()))?;
    let mut table = String::new();
    let mut name = String::new();
    let mut devices = Vec::new();
    let mut flags = 0;
    for nla in NlasIterator::new(attributes) {
        let nla = nla.map_err(|e| invalid(format!("a malformed attribute: {e}")))?;
        match nla.kind() & NLA_TYPE_MASK {
            NFTA_FLOWTABLE_TABLE => table = text(nla.value()),
            NFTA_FLOWTABLE_NAME => name = text(nla.value()),
            NFTA_FLOWTABLE_FLAGS => flags = be32(nla.value()),
            NFTA_FLOWTABLE_HOOK => devices = hook_devices(&nla)?,
            _ => {}
        }
    }
    Ok(Flowtable {
        name: format!("{family} {table} {name}"),
        devices,
        hardware: flags & FLOWTABLE_HW_OFFLOAD != 0,
    })
}

/// The device names in a `NFTA_FLOWTABLE_HOOK` attribute.
fn hook_devices(hook: &NlaBuffer<&[u8]>) -> io::Result<Vec<String>> {
    let mut devices = Vec::new();
    for nla in NlasIterator::new(hook.value()) {
        let nla = nla.map_err(|e| invalid(format!("a malformed hook attribute: {e}")))?;
        if nla.kind() & NLA_TYPE_MASK != NFTA_FLOWTABLE_HOOK_DEVS {
            continue;
        }
        for dev in NlasIterator::new(nla.value()) {
            let dev = dev.map_err(|e| invalid(format!("a malformed device attribute: {e}")))?;
            if dev.kind() & NLA_TYPE_MASK == NFTA_DEVICE_NAME {
                devices.push(text(dev.value()));
            }
        }
    }
    Ok(devices)
}

/// A NUL-terminated attribute string.
fn text(value: &[u8]) -> String {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

fn be32(value: &[u8]) -> u32 {
    value
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{WHAT}: {what}"))
}

fn netlink_error(code: i32) -> io::Error {
    let e = io::Error::from_raw_os_error(-code);
    io::Error::new(
        e.kind(),
        format!("{WHAT}: the kernel refused the request: {e}"),
    )
}

// ethtool (linux/ethtool.h): the feature strings, then the feature bits.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;
/// The feature that lets TC rules and flowtables be pushed into the NIC.
const HW_TC_OFFLOAD: &str = "hw-tc-offload";

/// Whether `device` has `hw-tc-offload` active. A device without ethtool support has it off.
pub fn hw_tc_offload(device: &str) -> io::Result<bool> {
    Ok(feature_active(device, HW_TC_OFFLOAD)?.unwrap_or(false))
}

/// Whether the netdev feature `name` (as `ethtool -k` names it, e.g. `hw-tc-offload`,
/// `rx-gro`) is active on `device`; None when the kernel or the device does not know it.
pub fn feature_active(device: &str, name: &str) -> io::Result<Option<bool>> {
    // SAFETY: plain socket call; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let ioctl = |data: *mut libc::c_void| ethtool(&socket, device, data);

    // How many feature strings: ethtool_sset_info { cmd, reserved, sset_mask: u64, data[1] }.
    let mut info = [0u32; 5];
    info[0] = ETHTOOL_GSSET_INFO;
    let mask = 1u64 << ETH_SS_FEATURES;
    info[2] = mask as u32;
    info[3] = (mask >> 32) as u32;
    match ioctl(info.as_mut_ptr().cast()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(None),
        Err(e) => return Err(e),
    }
    let returned_mask = u64::from(info[2]) | (u64::from(info[3]) << 32);
    if returned_mask & mask == 0 {
        return Ok(None);
    }
    let count = info[4] as usize;
    if count == 0 || count > 1024 {
        return Ok(None);
    }
    // ethtool_gstrings { cmd, string_set, len, data[len * 32] }.
    let mut strings = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
    strings[0] = ETHTOOL_GSTRINGS;
    strings[1] = ETH_SS_FEATURES;
    strings[2] = count as u32;
    ioctl(strings.as_mut_ptr().cast())?;
    let bytes: Vec<u8> = strings[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
    let Some(bit) = feature_index(&bytes, name) else {
        return Ok(None);
    };
    // ethtool_gfeatures { cmd, size, features[size] { available, requested, active, never } }.
    let blocks = count.div_ceil(32);
    let mut features = vec![0u32; 2 + blocks * 4];
    features[0] = ETHTOOL_GFEATURES;
    features[1] = blocks as u32;
    ioctl(features.as_mut_ptr().cast())?;
    let active = features[2 + (bit / 32) * 4 + 2];
    Ok(Some(active & (1 << (bit % 32)) != 0))
}

/// The position of `name` in a table of 32-byte, NUL-padded strings.
fn feature_index(table: &[u8], name: &str) -> Option<usize> {
    table
        .chunks_exact(ETH_GSTRING_LEN)
        .position(|s| text(s) == name)
}

fn ethtool(socket: &std::os::fd::OwnedFd, device: &str, data: *mut libc::c_void) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: an all-zero ifreq is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = device.as_bytes();
    if name.len() >= ifr.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name `{device}` is too long"),
        ));
    }
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = data.cast();
    // SAFETY: `ifr` names the device and points at a buffer laid out for the command in it.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL as _, &mut ifr) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Why a hook device's packets may be hidden from the hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HardwareOffload {
    /// `hw-tc-offload` is on.
    TcFeature,
    /// The device is in a flowtable with `flags offload`.
    Flowtable,
}

impl HardwareOffload {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TcFeature => "hw-tc-offload",
            Self::Flowtable => "flowtable",
        }
    }
}

/// Which hook devices have hardware offload, and how: `hooks` pairs each hook device with its
/// configured LAN interface (a bridge's port with the bridge), and a flowtable with
/// `flags offload` on either counts; `hw_tc` is [`hw_tc_offload`] in the agent.
pub fn hardware_offload(
    hooks: &[(String, String)],
    flowtables: &[Flowtable],
    mut hw_tc: impl FnMut(&str) -> bool,
) -> BTreeSet<(String, HardwareOffload)> {
    let mut out = BTreeSet::new();
    for (device, lan) in hooks {
        if hw_tc(device) {
            out.insert((device.clone(), HardwareOffload::TcFeature));
        }
        if flowtables
            .iter()
            .any(|f| f.hardware && (f.devices.contains(device) || f.devices.contains(lan)))
        {
            out.insert((device.clone(), HardwareOffload::Flowtable));
        }
    }
    out
}

/// Checks the hook devices now and then, and says each finding once.
#[derive(Default)]
pub struct OffloadWatch {
    /// What the last check found, to log only changes.
    hardware: BTreeSet<(String, HardwareOffload)>,
    software: BTreeSet<String>,
    last_error: Option<String>,
}

impl OffloadWatch {
    /// Looks at `hooks` (each hook device with its configured LAN interface) and returns, for
    /// each device, whether hardware offload may hide its packets.
    pub fn check(&mut self, hooks: &[(String, String)]) -> Vec<(String, bool)> {
        let tables = match flowtables() {
            Ok(t) => {
                self.last_error = None;
                t
            }
            Err(e) => {
                let text = e.to_string();
                if self.last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = text, "cannot read the nftables flowtables");
                }
                self.last_error = Some(text);
                Vec::new()
            }
        };
        let hardware = hardware_offload(hooks, &tables, |d| hw_tc_offload(d).unwrap_or(false));
        for (device, how) in hardware.difference(&self.hardware) {
            tracing::warn!(
                interface = device,
                offload = how.as_str(),
                "hardware offload is on: flows the hardware forwards by itself reach no hook and \
                 are not counted"
            );
        }
        for (device, how) in self.hardware.difference(&hardware) {
            tracing::info!(
                interface = device,
                offload = how.as_str(),
                "hardware offload is off again"
            );
        }
        self.hardware = hardware;
        let monitored = |d: &String| hooks.iter().any(|(h, l)| h == d || l == d);
        let software: BTreeSet<String> = tables
            .iter()
            .filter(|t| !t.hardware && t.devices.iter().any(monitored))
            .map(|t| format!("{} on {}", t.name, t.devices.join(",")))
            .collect();
        for table in software.difference(&self.software) {
            tracing::info!(
                flowtable = table,
                "software flow offload on monitored devices: counted where the packets are still \
                 seen (the ports' TC hooks)"
            );
        }
        self.software = software;
        hooks
            .iter()
            .map(|(d, _)| (d.clone(), self.hardware.iter().any(|(h, _)| h == d)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attribute: length, type, value, padding to 4 bytes.
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    /// `NFT_MSG_NEWFLOWTABLE` as the kernel sends it in a dump.
    fn flowtable_message(table: &str, name: &str, devices: &[&str], flags: u32) -> Vec<u8> {
        let mut devs = Vec::new();
        for d in devices {
            devs.extend(nla(NFTA_DEVICE_NAME, format!("{d}\0").as_bytes()));
        }
        let mut hook = nla(1, &0u32.to_be_bytes()); // NFTA_FLOWTABLE_HOOK_NUM: ingress
        hook.extend(nla(2, &0u32.to_be_bytes())); // priority
        hook.extend(nla(NFTA_FLOWTABLE_HOOK_DEVS | 0x8000, &devs));
        let mut payload = vec![1, 0, 0, 0]; // nfgenmsg: inet
        payload.extend(nla(NFTA_FLOWTABLE_TABLE, format!("{table}\0").as_bytes()));
        payload.extend(nla(NFTA_FLOWTABLE_NAME, format!("{name}\0").as_bytes()));
        payload.extend(nla(NFTA_FLOWTABLE_HOOK | 0x8000, &hook));
        payload.extend(nla(4, &1u32.to_be_bytes())); // NFTA_FLOWTABLE_USE
        payload.extend(nla(NFTA_FLOWTABLE_FLAGS, &flags.to_be_bytes()));
        header(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWFLOWTABLE, &payload)
    }

    fn header(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&0x2u16.to_ne_bytes()); // NLM_F_MULTI
        msg.extend_from_slice(&1u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        msg
    }

    #[test]
    fn flowtables_decode_with_their_devices_and_hardware_flag() {
        let mut datagram = flowtable_message("fw4", "ft", &["lan1", "lan2", "wan"], 0x2 | 0x1);
        datagram.extend(flowtable_message("egl", "soft", &["br-lan"], 0x2));
        let mut found = Vec::new();
        assert!(
            !read_datagram(&datagram, &mut found).unwrap(),
            "no DONE yet"
        );
        assert_eq!(
            found,
            [
                Flowtable {
                    name: "inet fw4 ft".into(),
                    devices: vec!["lan1".into(), "lan2".into(), "wan".into()],
                    hardware: true,
                },
                Flowtable {
                    name: "inet egl soft".into(),
                    devices: vec!["br-lan".into()],
                    hardware: false,
                },
            ]
        );
        let done = header(NLMSG_DONE, &0i32.to_ne_bytes());
        assert!(read_datagram(&done, &mut found).unwrap());
    }

    #[test]
    fn a_kernel_error_is_named_and_no_nf_tables_is_no_flowtable() {
        let refused = header(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        let err = read_datagram(&refused, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
        let absent = header(NLMSG_ERROR, &(-libc::EOPNOTSUPP).to_ne_bytes());
        assert!(read_datagram(&absent, &mut Vec::new()).unwrap());
        // A truncated message is an error, not a panic.
        let cut = flowtable_message("fw4", "ft", &["lan1"], 1);
        assert!(read_datagram(&cut[..cut.len() - 7], &mut Vec::new()).is_err());
    }

    #[test]
    fn hardware_offload_per_device() {
        let flowtables = [
            Flowtable {
                name: "inet fw4 ft".into(),
                devices: vec!["lan1".into(), "wan".into()],
                hardware: true,
            },
            Flowtable {
                name: "inet fw4 soft".into(),
                devices: vec!["lan2".into()],
                hardware: false,
            },
        ];
        let hook = |d: &str, l: &str| (d.to_string(), l.to_string());
        let hooks = [
            hook("lan1", "br-lan"),
            hook("lan2", "br-lan"),
            hook("lan3", "br-lan"),
            hook("eth1", "br-guest"),
        ];
        let found = hardware_offload(&hooks, &flowtables, |d| d == "lan3");
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            [
                ("lan1".to_string(), HardwareOffload::Flowtable),
                ("lan3".to_string(), HardwareOffload::TcFeature),
            ]
        );
        // A hardware flowtable on the bridge covers every port of it.
        let on_bridge = [Flowtable {
            name: "inet fw4 ft".into(),
            devices: vec!["br-guest".into()],
            hardware: true,
        }];
        let found = hardware_offload(&hooks, &on_bridge, |_| false);
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            [("eth1".to_string(), HardwareOffload::Flowtable)]
        );
    }

    #[test]
    fn feature_strings_are_found_by_name() {
        let mut table = vec![0u8; 3 * ETH_GSTRING_LEN];
        table[..7].copy_from_slice(b"tx-csum");
        table[ETH_GSTRING_LEN..ETH_GSTRING_LEN + 13].copy_from_slice(b"hw-tc-offload");
        assert_eq!(feature_index(&table, HW_TC_OFFLOAD), Some(1));
        assert_eq!(feature_index(&table, "rx-gro"), None);
    }

    #[test]
    fn the_loopback_device_has_no_tc_offload() {
        // A real ioctl on a device every namespace has.
        assert!(!hw_tc_offload("lo").unwrap());
        assert_eq!(feature_active("lo", "no-such-feature").unwrap(), None);
        assert!(hw_tc_offload("no-such-device0").is_err());
    }
}
