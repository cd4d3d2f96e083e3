//! The LAN devices: their names, MACs and addresses, their namespaces, and their DHCP leases.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{LAN_PREFIX_V4, LAN_PREFIX_V6, Lab, ROUTER_LAN_V4, ROUTER_LAN_V6, lock};
use crate::dhcp;
use crate::netns::ip_batch;

/// The interface of each device, and of the WAN namespace towards the router.
pub const DEVICE_IF: &str = "eth0";

/// The devices of [`Lab::new`].
pub const DEFAULT_DEVICES: [&str; 3] = ["phone", "laptop", "camera"];

/// Most devices a lab can have: addresses are `.10 + index`, and stay below the broadcast.
pub const MAX_DEVICES: usize = 200;

/// MAC of device `index` (1-based): `00:16:3e:00:00:{index:02x}`.
pub fn device_mac(index: u8) -> [u8; 6] {
    [0x00, 0x16, 0x3e, 0, 0, index]
}

/// IPv4 address of device `index` (1-based): `192.168.50.{10 + index}`.
pub fn device_ipv4(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 50, 10 + index)
}

/// IPv6 address of device `index` (1-based): `2001:db8:50::{10 + index, in hex}`.
pub fn device_ipv6(index: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x50, 0, 0, 0, 0, 10 + u16::from(index))
}

/// `aa:bb:cc:dd:ee:ff`, lower case, as `ip link` prints it.
pub fn mac_to_string(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// One LAN device: a namespace with a single interface on the router's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// 1-based position; fixes the MAC and addresses.
    pub index: u8,
    /// The name the caller gave ("phone").
    pub name: String,
    /// Its namespace (`egl-{pid}-{n}-dev-{name}`).
    pub ns: String,
    /// The router-side port of its link (`lan{index}`), a port of `br-lan`.
    pub router_port: String,
    pub mac: [u8; 6],
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl Device {
    /// Device `index` (1-based) called `name` of the lab `lab_id`.
    pub(super) fn new(lab_id: &str, index: u8, name: &str) -> Device {
        Device {
            index,
            name: name.to_owned(),
            ns: format!("{lab_id}-dev-{name}"),
            router_port: format!("lan{index}"),
            mac: device_mac(index),
            ipv4: device_ipv4(index),
            ipv6: device_ipv6(index),
        }
    }

    /// The MAC as text, `00:16:3e:00:00:01`.
    pub fn mac_string(&self) -> String {
        mac_to_string(self.mac)
    }

    /// The device's IPv4 or IPv6 address.
    pub fn ip(&self, v4: bool) -> IpAddr {
        if v4 {
            self.ipv4.into()
        } else {
            self.ipv6.into()
        }
    }
}

/// Panics unless `names` are at most [`MAX_DEVICES`] unique device names that can be part of
/// a namespace name.
pub(super) fn validate_names(names: &[String]) {
    assert!(
        names.len() <= MAX_DEVICES,
        "a lab has at most {MAX_DEVICES} devices, not {}",
        names.len()
    );
    for (i, name) in names.iter().enumerate() {
        let ok = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        assert!(
            ok,
            "device name {name:?}: use 1-32 ASCII letters, digits, '-' or '_'"
        );
        assert!(
            !names[..i].contains(name),
            "device name {name:?} is used twice"
        );
    }
}

impl Lab {
    /// The hostname device `name` sends in its DHCP requests.
    pub fn dhcp_hostname(&self, name: &str) -> String {
        lock(&self.hostnames)
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no device {name:?} in the lab"))
    }

    /// Runs udhcpc again in device `name`, which renews its lease (same address, new expiry,
    /// the current hostname), and returns once dnsmasq's lease file shows the renewal.
    pub fn renew_dhcp(&self, name: &str) {
        assert!(
            self.dhcp,
            "renew_dhcp: the lab has no DHCP; build it with .dhcp(true)"
        );
        let device = self.device(name);
        dhcp::obtain_leases(
            self,
            &[(device, self.dhcp_hostname(name))],
            &self.lease_file(),
        );
    }

    /// Changes the hostname device `name` sends, and renews its lease with it
    /// ([`Lab::renew_dhcp`]), as a device renamed by its user does.
    pub fn renew_dhcp_as(&self, name: &str, hostname: &str) {
        dhcp::validate_hostname(name, hostname);
        self.device(name); // panics for an unknown device, before anything changes
        lock(&self.hostnames).insert(name.to_owned(), hostname.to_owned());
        self.renew_dhcp(name);
    }

    /// Brings the device's interface up with its IPv6 address and route, and with `static_v4`
    /// its IPv4 address and route too (otherwise DHCP sets them).
    pub(super) fn setup_device(&self, d: &Device, static_v4: bool) {
        let mut script = format!(
            "link set lo up\n\
             addr add {v6}/{LAN_PREFIX_V6} dev {DEVICE_IF} nodad\n\
             link set {DEVICE_IF} up\n\
             route add ::/0 via {ROUTER_LAN_V6}\n",
            v6 = d.ipv6,
        );
        if static_v4 {
            script += &format!(
                "addr add {v4}/{LAN_PREFIX_V4} dev {DEVICE_IF}\n\
                 route add default via {ROUTER_LAN_V4}\n",
                v4 = d.ipv4,
            );
        }
        ip_batch(&d.ns, &script);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_addresses() {
        assert_eq!(mac_to_string(device_mac(1)), "00:16:3e:00:00:01");
        assert_eq!(mac_to_string(device_mac(17)), "00:16:3e:00:00:11");
        assert_eq!(device_ipv4(1).to_string(), "192.168.50.11");
        assert_eq!(device_ipv6(1).to_string(), "2001:db8:50::b");
        assert_eq!(device_ipv6(3).to_string(), "2001:db8:50::d");
        let d = Device::new("egl-1-2", 3, "camera");
        assert_eq!(
            (d.ns.as_str(), d.router_port.as_str(), d.mac_string()),
            ("egl-1-2-dev-camera", "lan3", "00:16:3e:00:00:03".to_owned())
        );
    }

    #[test]
    #[should_panic(expected = "used twice")]
    fn duplicate_names_are_refused() {
        validate_names(&["a".into(), "a".into()]);
    }

    #[test]
    #[should_panic(expected = "ASCII letters")]
    fn bad_names_are_refused() {
        validate_names(&["a b".into()]);
    }
}
