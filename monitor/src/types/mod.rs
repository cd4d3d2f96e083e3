//! The agent's shared domain types: devices, directions, counts and destination labels.

pub mod mac;

use std::net::IpAddr;

pub use mac::MacAddr;

/// Which way traffic crosses the network's edge. The discriminants are the kernel's encoding,
/// which also indexes the per-direction statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Direction {
    /// From a LAN device to the world.
    Egress = monitor_common::DIRECTION_EGRESS,
    /// From the world to a LAN device.
    Ingress = monitor_common::DIRECTION_INGRESS,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Egress, Direction::Ingress];

    /// The kernel's encoding (`monitor_common::DIRECTION_*`).
    pub fn from_kernel(value: u8) -> Option<Self> {
        match value {
            monitor_common::DIRECTION_EGRESS => Some(Self::Egress),
            monitor_common::DIRECTION_INGRESS => Some(Self::Ingress),
            _ => None,
        }
    }

    /// The `direction` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Egress => "egress",
            Self::Ingress => "ingress",
        }
    }
}

/// Bytes and packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub bytes: u64,
    pub packets: u64,
}

impl Count {
    pub const fn new(bytes: u64, packets: u64) -> Self {
        Self { bytes, packets }
    }

    pub(crate) fn fields(self) -> [u64; 2] {
        [self.bytes, self.packets]
    }

    pub(crate) fn from_fields([bytes, packets]: [u64; 2]) -> Self {
        Self { bytes, packets }
    }

    pub(crate) fn saturating_add(self, other: Count) -> Count {
        Count::new(
            self.bytes.saturating_add(other.bytes),
            self.packets.saturating_add(other.packets),
        )
    }
}

/// A device in one direction: the unit whose numbers must add up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId {
    pub mac: MacAddr,
    pub direction: Direction,
}

impl DeviceId {
    /// The key of this device in the kernel's device maps.
    pub fn kernel_key(self) -> monitor_common::DeviceKey {
        monitor_common::DeviceKey {
            mac: self.mac.0,
            direction: self.direction as u8,
            pad: 0,
        }
    }
}

/// The `destination` label of exported bytes: the remote address, or a name the device
/// resolved for it. An address stays an address (no string is made of it until a scrape), so a
/// poll that labels 100k addresses allocates nothing for them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Label {
    Addr(IpAddr),
    Name(Box<str>),
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Addr(addr) => addr.fmt(f),
            Label::Name(name) => f.write_str(name),
        }
    }
}
