//! The lab itself: a router, its LAN devices and "the internet", each in a namespace of its own.
//!
//! ```text
//!  device ns "phone"        router ns                              WAN ns ("the internet")
//!  eth0 00:16:3e:00:00:01   lan1 ─┐
//!  192.168.50.11            lan2 ─┼─ br-lan 192.168.50.1    wan0 ─── eth0 198.51.100.2
//!  2001:db8:50::b           lan3 ─┘  2001:db8:50::1   198.51.100.1    lo: SERVERS_V4, SERVERS_V6
//!                                     (forwarding, IPv4 masquerade on wan0)
//! ```
//!
//! With [`LabBuilder::dnsmasq`], dnsmasq answers DNS on `br-lan` (and with
//! [`LabBuilder::dhcp`] hands out the devices' IPv4 addresses), and a second dnsmasq in the WAN
//! namespace plays an outside resolver on 203.0.113.53 and 2001:db8:2::53; see [`crate::dns`].
//!
//! Addresses are the same in every lab (they cannot clash: each lab has its own namespaces);
//! namespace names are unique per lab, so labs can exist side by side in one process and across
//! processes. Nothing is connected to the host's namespace.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::counters::{self, WanCount};
use crate::dns::{OUTSIDE_RESOLVER_V4, OUTSIDE_RESOLVER_V6};
use crate::netns::{self, describe, exec_ok, exec_ok_stdin, ip_batch, sysctl, sysctls};
use crate::process::LabChild;
use crate::scratch::ScratchDir;
use crate::servers::Servers;
use crate::tls::{self, TlsServer};
use crate::traffic::wait_until;
use crate::{dhcp, dnsmasq};

/// The LAN bridge in the router namespace; the agent watches its ports.
pub const LAN_BRIDGE: &str = "br-lan";
/// The router's uplink, towards the WAN namespace.
pub const ROUTER_WAN_IF: &str = "wan0";
/// The interface of each device, and of the WAN namespace towards the router.
pub const DEVICE_IF: &str = "eth0";
/// The WAN namespace's interface towards the router.
pub const WAN_IF: &str = "eth0";

/// The router's LAN address (gateway of the devices).
pub const ROUTER_LAN_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
/// The router's LAN IPv6 address (gateway of the devices).
pub const ROUTER_LAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x50, 0, 0, 0, 0, 1);
/// The LAN prefix lengths, IPv4 and IPv6.
pub const LAN_PREFIX_V4: u8 = 24;
pub const LAN_PREFIX_V6: u8 = 64;
/// The MAC address of `br-lan`, fixed so that "to the router" is recognisable in captures.
pub const ROUTER_LAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x50, 0x01];
/// The router's uplink addresses (the IPv4 one is the masquerade source).
pub const ROUTER_WAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const ROUTER_WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
/// The WAN namespace's uplink addresses (the router's default gateways).
pub const WAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2);
/// MAC addresses of the uplink ends (router side, WAN side).
pub const ROUTER_WAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xff, 0x01];
pub const WAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xff, 0x02];

/// IPv4 servers in the WAN namespace, kept off the uplink subnet so that "traffic to a server"
/// is never confused with traffic to the gateway.
pub const SERVERS_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(192, 0, 2, 10),
    Ipv4Addr::new(192, 0, 2, 20),
    Ipv4Addr::new(192, 0, 2, 30),
    Ipv4Addr::new(203, 0, 113, 5),
    Ipv4Addr::new(203, 0, 113, 6),
];
/// IPv6 servers in the WAN namespace.
pub const SERVERS_V6: [Ipv6Addr; 3] = [
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10),
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x20),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x5),
];
/// All servers, IPv4 first, in the order of [`SERVERS_V4`] then [`SERVERS_V6`].
pub const SERVERS: [IpAddr; 8] = [
    IpAddr::V4(SERVERS_V4[0]),
    IpAddr::V4(SERVERS_V4[1]),
    IpAddr::V4(SERVERS_V4[2]),
    IpAddr::V4(SERVERS_V4[3]),
    IpAddr::V4(SERVERS_V4[4]),
    IpAddr::V6(SERVERS_V6[0]),
    IpAddr::V6(SERVERS_V6[1]),
    IpAddr::V6(SERVERS_V6[2]),
];

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

/// Chooses the devices of a lab and what runs on its router; [`LabBuilder::build`] makes it.
#[derive(Debug, Clone)]
pub struct LabBuilder {
    devices: Vec<String>,
    dnsmasq: bool,
    dhcp: bool,
    /// DHCP hostnames that differ from the device name, as (device, hostname).
    hostnames: Vec<(String, String)>,
}

impl Default for LabBuilder {
    fn default() -> Self {
        LabBuilder {
            devices: DEFAULT_DEVICES.map(str::to_owned).to_vec(),
            dnsmasq: false,
            dhcp: false,
            hostnames: Vec::new(),
        }
    }
}

impl LabBuilder {
    /// The devices, in order (the first is index 1). Names must be unique, made of ASCII
    /// letters, digits, `-` or `_`, at most 32 characters (they become part of namespace names).
    pub fn devices<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.devices = names.into_iter().map(Into::into).collect();
        self
    }

    /// `n` devices: the default names first ("phone", "laptop", "camera"), then "dev4", "dev5"...
    pub fn device_count(self, n: usize) -> Self {
        let names = (1..=n).map(|i| {
            DEFAULT_DEVICES
                .get(i - 1)
                .map_or_else(|| format!("dev{i}"), |&name| name.to_owned())
        });
        self.devices(names)
    }

    /// With `true`, the router runs dnsmasq as the LAN's resolver on `br-lan`'s addresses
    /// ([`ROUTER_LAN_V4`], [`ROUTER_LAN_V6`], port 53), and the WAN namespace runs a second one,
    /// the outside resolver ([`OUTSIDE_RESOLVER_V4`], [`OUTSIDE_RESOLVER_V6`]); both serve
    /// [`crate::ZONE`] and forward nothing. Off by default.
    pub fn dnsmasq(mut self, on: bool) -> Self {
        self.dnsmasq = on;
        self
    }

    /// With `true` (which implies [`LabBuilder::dnsmasq`]), the router's dnsmasq is also the
    /// LAN's DHCPv4 server, and each device gets its IPv4 address by running busybox `udhcpc`
    /// once, sending its hostname ([`LabBuilder::hostname`]), instead of having it set
    /// statically. The addresses are the same as without DHCP (dnsmasq pins each MAC to
    /// [`device_ipv4`]); IPv6 stays static. [`LabBuilder::build`] returns once every device has
    /// its lease and the lease file ([`Lab::lease_file`]) lists it. Off by default.
    pub fn dhcp(mut self, on: bool) -> Self {
        self.dhcp = on;
        if on {
            self.dnsmasq = true;
        }
        self
    }

    /// The hostname `device` sends in its DHCP requests (option 12), instead of its name.
    /// Needs [`LabBuilder::dhcp`]; 1-63 printable ASCII characters without spaces (udhcpc stops
    /// at a space, and the lease file separates its fields with them).
    ///
    /// The lease file shows what dnsmasq 2.90 made of it: `a.b` loses its domain part (`a`), and
    /// a name it finds illegal (`ab$c`, `-x`) is ignored: the lease keeps its previous name, or
    /// `*`. Case and underscores are kept.
    pub fn hostname(mut self, device: impl Into<String>, hostname: impl Into<String>) -> Self {
        let device = device.into();
        self.hostnames.retain(|(d, _)| *d != device);
        self.hostnames.push((device, hostname.into()));
        self
    }

    /// Creates the namespaces, links, addresses, routes, NAT and counters, and with the options
    /// dnsmasq and the devices' DHCP leases.
    ///
    /// Panics (after removing whatever it had created) if any step fails, or if not root.
    #[track_caller]
    pub fn build(self) -> Lab {
        netns::require_root("building the lab (network namespaces)");
        validate_names(&self.devices);
        for (device, hostname) in &self.hostnames {
            assert!(
                self.dhcp,
                "hostname({device:?}, {hostname:?}) needs a DHCP lab: add .dhcp(true)"
            );
            assert!(
                self.devices.contains(device),
                "hostname({device:?}, ..): no such device (devices: {:?})",
                self.devices
            );
            dhcp::validate_hostname(device, hostname);
        }
        netns::cleanup_stale_once();

        let id = netns::unique_lab_id();
        let devices = self
            .devices
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let index = u8::try_from(i + 1).expect("at most MAX_DEVICES devices");
                Device {
                    index,
                    name: name.clone(),
                    ns: format!("{id}-dev-{name}"),
                    router_port: format!("lan{index}"),
                    mac: device_mac(index),
                    ipv4: device_ipv4(index),
                    ipv6: device_ipv6(index),
                }
            })
            .collect();
        let hostnames = self
            .devices
            .iter()
            .map(|name| {
                let hostname = self
                    .hostnames
                    .iter()
                    .find(|(device, _)| device == name)
                    .map_or(name, |(_, hostname)| hostname);
                (name.clone(), hostname.clone())
            })
            .collect();
        // From here on, a panic drops `lab`, which removes what was created so far.
        let mut lab = Lab {
            router: format!("{id}-router"),
            wan: format!("{id}-wan"),
            id,
            devices,
            created: Vec::new(),
            children: Mutex::new(Vec::new()),
            scratch: OnceLock::new(),
            dns: None,
            dhcp: self.dhcp,
            hostnames: Mutex::new(hostnames),
            tls_cert: OnceLock::new(),
        };
        lab.create_namespaces();
        lab.setup_router();
        lab.setup_wan();
        lab.setup_ports();
        for device in &lab.devices {
            lab.setup_device(device, !self.dhcp);
        }
        if self.dnsmasq {
            lab.dns = Some(lab.start_dnsmasq());
        }
        if self.dhcp {
            let clients: Vec<(&Device, String)> = lab
                .devices
                .iter()
                .map(|d| (d, lab.dhcp_hostname(&d.name)))
                .collect();
            dhcp::obtain_leases(&lab, &clients, &lab.lease_file());
        }
        // Let the multicast reports that interfaces send when they come up go by (see
        // `quiet_settings`), so that the links are silent until a test sends something.
        std::thread::sleep(SETTLE);
        lab
    }
}

fn validate_names(names: &[String]) {
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

/// A running lab. Dropping it kills the processes started in it and removes its namespaces
/// (which removes their interfaces), also when a test panics.
pub struct Lab {
    /// `egl-{pid}-{n}`: the prefix of all its namespace names.
    id: String,
    router: String,
    wan: String,
    devices: Vec<Device>,
    /// Namespaces created so far, for `Drop`.
    created: Vec<String>,
    children: Mutex<Vec<LabChild>>,
    /// The lab directory, made when first needed; removed after the processes are gone.
    scratch: OnceLock<ScratchDir>,
    /// The two dnsmasq instances, with [`LabBuilder::dnsmasq`].
    dns: Option<Resolvers>,
    /// Whether devices get their IPv4 address by DHCP.
    dhcp: bool,
    /// The DHCP hostname of each device, by device name.
    hostnames: Mutex<HashMap<String, String>>,
    /// The TLS servers' certificate and key, made when first needed.
    tls_cert: OnceLock<(PathBuf, PathBuf)>,
}

/// The dnsmasq processes of a lab.
struct Resolvers {
    /// On the router, for the LAN (and its DHCP server).
    router: LabChild,
    /// In the WAN namespace.
    outside: LabChild,
}

impl Lab {
    /// The default lab: devices "phone", "laptop" and "camera".
    #[track_caller]
    pub fn new() -> Lab {
        LabBuilder::default().build()
    }

    /// A builder, to choose the devices.
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// The prefix of this lab's namespace names, `egl-{pid}-{n}`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The router's namespace (where the agent runs).
    pub fn router_ns(&self) -> &str {
        &self.router
    }

    /// The WAN namespace ("the internet", with the servers and the counters).
    pub fn wan_ns(&self) -> &str {
        &self.wan
    }

    /// The devices, in index order.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The device called `name`; panics if there is none.
    pub fn device(&self, name: &str) -> &Device {
        self.devices
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| {
                let known: Vec<&str> = self.devices.iter().map(|d| d.name.as_str()).collect();
                panic!("no device {name:?} in the lab (devices: {known:?})")
            })
    }

    /// Every namespace of this lab (router, WAN, then devices).
    pub fn namespaces(&self) -> &[String] {
        &self.created
    }

    /// Turns GRO on the router's `wan0` on or off (it starts off).
    ///
    /// With GRO on, downloads arrive at the router as aggregated super-packets and leave towards
    /// the devices as such, which is what a real router with a GRO-capable NIC does; the WAN
    /// counters still see wire packets.
    ///
    /// The WAN side sends one segment per packet (see [`crate::WanCount`]), and a veth runs its
    /// receive poll after each one, so GRO alone would find nothing to merge. Like a NIC's
    /// interrupt coalescing, a `gro_flush_timeout` of 200 µs holds packets across polls so that
    /// consecutive segments are merged (into up to 64 KB).
    pub fn set_router_wan_gro(&self, on: bool) {
        let (state, flush_timeout_ns) = if on { ("on", "200000") } else { ("off", "0") };
        exec_ok(
            &self.router,
            "ethtool",
            &["-K", ROUTER_WAN_IF, "gro", state],
        );
        // /sys shows the namespace's devices only under `ip netns exec`, which remounts it.
        let path = format!("/sys/class/net/{ROUTER_WAN_IF}/gro_flush_timeout");
        exec_ok_stdin(&self.router, "tee", &[path.as_str()], flush_timeout_ns);
    }

    /// Per-server traffic counted at the WAN end of the uplink, for every server in [`SERVERS`].
    pub fn wan_counters(&self) -> HashMap<IpAddr, WanCount> {
        counters::read(&self.wan, &SERVERS)
    }

    /// The WAN counters of one server; panics if `server` is not in [`SERVERS`].
    pub fn wan_count(&self, server: IpAddr) -> WanCount {
        *self
            .wan_counters()
            .get(&server)
            .unwrap_or_else(|| panic!("{server} is not a lab server"))
    }

    /// Polls the WAN counters of `server` until `done` accepts them or `timeout` passes, and
    /// returns the last reading. Packets cross the veths asynchronously, so exact comparisons
    /// should wait for the expected value first.
    pub fn wait_wan_count(
        &self,
        server: IpAddr,
        timeout: Duration,
        mut done: impl FnMut(&WanCount) -> bool,
    ) -> WanCount {
        let mut last = WanCount::default();
        wait_until(timeout, || {
            last = self.wan_count(server);
            done(&last)
        });
        last
    }

    /// Sets all WAN counters back to zero.
    pub fn reset_wan_counters(&self) {
        counters::reset(&self.wan);
    }

    /// Packets longer than the MTU seen on the WAN end of the uplink. Anything but 0 means the
    /// counters saw aggregates, not wire packets, and byte-exact comparisons are off.
    pub fn wan_oversize_packets(&self) -> u64 {
        counters::read_oversize(&self.wan)
    }

    /// Resolves `name` (A) through the router's dnsmasq, from `device`, as its stub resolver
    /// would; its first address. Panics if there is none.
    pub fn resolve(&self, device: &str, name: &str) -> IpAddr {
        let router = IpAddr::V4(ROUTER_LAN_V4);
        let addrs = crate::dns_query(
            &self.device(device).ns,
            router,
            name,
            crate::RecordType::A,
            false,
        );
        *addrs
            .first()
            .unwrap_or_else(|| panic!("{name} resolved to nothing"))
    }

    /// Sends `count` datagrams of `payload` bytes from `device` to the UDP sink of `to` (a
    /// sink, so no ICMP error comes back); the IP-layer bytes sent.
    pub fn send_to_sink(&self, device: &str, to: IpAddr, payload: usize, count: u32) -> u64 {
        crate::udp_send(
            &self.device(device).ns,
            SocketAddr::new(to, crate::UDP_SINK_PORT),
            payload,
            count,
        );
        u64::from(count) * crate::udp_ip_bytes(to.is_ipv4(), payload)
    }

    /// Starts servers on every address of [`SERVERS`] (see [`Servers::start`]); the TCP
    /// sources send `download_bytes` per connection.
    pub fn start_servers(&self, download_bytes: u64) -> Servers {
        Servers::start(&self.wan, &SERVERS, download_bytes)
    }

    /// Spawns `cmd` (typically from [`netns::command`]) and tracks it: the lab kills it when
    /// dropped. Its piped stdout and stderr, if any, go to [`LabChild::log`].
    pub fn spawn(&self, cmd: &mut Command) -> LabChild {
        let description = describe(cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{description}`: {e}"));
        let child = LabChild::new(child, description);
        self.children().push(child.clone());
        child
    }

    /// Starts `program args` in namespace `ns`, tracked, with stdin closed and stdout and stderr
    /// captured in [`LabChild::log`].
    pub fn spawn_in<S: AsRef<OsStr>>(&self, ns: &str, program: &str, args: &[S]) -> LabChild {
        let mut cmd = netns::command(ns, program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.spawn(&mut cmd)
    }

    /// [`Lab::spawn_in`] the router namespace (e.g. the agent).
    pub fn spawn_in_router<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> LabChild {
        self.spawn_in(&self.router, program, args)
    }

    /// The lab's own temporary directory (`$TMPDIR/egl-{pid}-{n}`), made on first use and
    /// removed with the lab: dnsmasq's files, the udhcpc script and the TLS certificate live
    /// there, and tests may put files there too.
    pub fn scratch_dir(&self) -> &Path {
        self.scratch
            .get_or_init(|| ScratchDir::create(&self.id))
            .path()
    }

    /// The router's dnsmasq lease file (`<expiry> <mac> <ip> <hostname> <client-id>` per
    /// line), as an agent on the router would read it. Panics unless the lab has DHCP.
    pub fn lease_file(&self) -> PathBuf {
        assert!(
            self.dhcp,
            "the lab has no lease file: build it with .dhcp(true)"
        );
        dnsmasq::lease_file(self.scratch_dir())
    }

    /// The router's dnsmasq. Panics unless the lab was built with [`LabBuilder::dnsmasq`].
    pub fn dnsmasq(&self) -> &LabChild {
        &self.resolvers().router
    }

    /// What the router's dnsmasq logged so far: every query and answer, and DHCP in detail.
    pub fn dnsmasq_log(&self) -> String {
        self.dns
            .as_ref()
            .map_or_else(|| "(the lab runs no dnsmasq)".into(), |r| r.router.log())
    }

    /// The outside resolver's dnsmasq, in the WAN namespace.
    pub fn outside_resolver(&self) -> &LabChild {
        &self.resolvers().outside
    }

    fn resolvers(&self) -> &Resolvers {
        self.dns
            .as_ref()
            .expect("the lab runs no dnsmasq: build it with .dnsmasq(true)")
    }

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

    /// Starts a TLS server ([`TlsServer`], `openssl s_server` with a throwaway self-signed
    /// certificate) on `addr:port` in the WAN namespace. `addr` must be one of the WAN's
    /// addresses: a server in [`SERVERS`], or an outside resolver address (a DNS-over-TLS
    /// look-alike on port 853). Stops when the returned server or the lab is dropped.
    pub fn start_tls_server(&self, addr: IpAddr, port: u16) -> TlsServer {
        let (cert, key) = self
            .tls_cert
            .get_or_init(|| tls::make_certificate(&self.wan, self.scratch_dir()));
        TlsServer::start(self, &self.wan, SocketAddr::new(addr, port), cert, key)
    }

    /// Starts both dnsmasq instances at once and waits until they serve.
    fn start_dnsmasq(&self) -> Resolvers {
        let dir = self.scratch_dir();
        let dhcp_devices = self.dhcp.then_some(self.devices.as_slice());
        let router = dnsmasq::spawn(
            self,
            &self.router,
            "router",
            &dnsmasq::router_config(dir, dhcp_devices),
        );
        let outside = dnsmasq::spawn(self, &self.wan, "outside", &dnsmasq::outside_config(dir));
        dnsmasq::wait_started(&router, "router");
        dnsmasq::wait_started(&outside, "outside");
        Resolvers { router, outside }
    }

    fn children(&self) -> MutexGuard<'_, Vec<LabChild>> {
        self.children
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates every namespace first: links are made between existing namespaces.
    fn create_namespaces(&mut self) {
        let names: Vec<String> = [self.router.clone(), self.wan.clone()]
            .into_iter()
            .chain(self.devices.iter().map(|d| d.ns.clone()))
            .collect();
        // Recorded first: if creation fails halfway, `Drop` removes those that were made (and
        // only complains about the others).
        self.created.clone_from(&names);
        netns::create(&names);
        for ns in &names {
            sysctls(ns, &netns::quiet_settings());
        }
    }

    /// The router: bridge, uplink, routes, NAT. Configured with one `ip -batch` per step,
    /// because each `ip` process costs a few milliseconds.
    fn setup_router(&self) {
        let (r, w) = (self.router.as_str(), self.wan.as_str());
        sysctls(
            r,
            &[
                ("net/ipv4/ip_forward".into(), "1".into()),
                ("net/ipv6/conf/all/forwarding".into(), "1".into()),
            ],
        );
        ip_batch(
            r,
            &format!(
                "link set lo up\n\
                 link add {LAN_BRIDGE} address {lan_mac} type bridge\n\
                 addr add {ROUTER_LAN_V4}/{LAN_PREFIX_V4} dev {LAN_BRIDGE}\n\
                 addr add {ROUTER_LAN_V6}/{LAN_PREFIX_V6} dev {LAN_BRIDGE} nodad\n\
                 link set {LAN_BRIDGE} up\n\
                 link add {ROUTER_WAN_IF} address {wan_mac} type veth \
                   peer name {WAN_IF} address {peer_mac} netns {w}\n\
                 addr add {ROUTER_WAN_V4}/24 dev {ROUTER_WAN_IF}\n\
                 addr add {ROUTER_WAN_V6}/64 dev {ROUTER_WAN_IF} nodad\n\
                 link set {ROUTER_WAN_IF} up\n\
                 route add default via {WAN_V4}\n\
                 route add ::/0 via {WAN_V6}\n",
                lan_mac = mac_to_string(ROUTER_LAN_MAC),
                wan_mac = mac_to_string(ROUTER_WAN_MAC),
                peer_mac = mac_to_string(WAN_MAC),
            ),
        );
        // Wire-size packets on the uplink, so that the WAN counters count real packets.
        exec_ok(
            r,
            "ethtool",
            &[
                "-K",
                ROUTER_WAN_IF,
                "tso",
                "off",
                "gso",
                "off",
                "gro",
                "off",
            ],
        );
        exec_ok_stdin(r, "nft", &["-f", "-"], &router_ruleset());
    }

    /// The internet: uplink, the route back to the LAN's IPv6 prefix, servers, counters.
    fn setup_wan(&self) {
        let w = self.wan.as_str();
        let mut script = format!(
            "link set lo up\n\
             addr add {WAN_V4}/24 dev {WAN_IF}\n\
             addr add {WAN_V6}/64 dev {WAN_IF} nodad\n\
             link set {WAN_IF} gso_max_segs 1\n\
             link set {WAN_IF} up\n\
             route add {lan6}/{LAN_PREFIX_V6} via {ROUTER_WAN_V6}\n",
            lan6 = lan_v6_prefix(),
        );
        // The outside resolver's addresses exist in every lab, so that a test can point traffic
        // (a DNS-over-TLS look-alike, say) at them with or without dnsmasq.
        let outside: [IpAddr; 2] = [OUTSIDE_RESOLVER_V4.into(), OUTSIDE_RESOLVER_V6.into()];
        for server in SERVERS.into_iter().chain(outside) {
            match server {
                IpAddr::V4(a) => script += &format!("addr add {a}/32 dev lo\n"),
                IpAddr::V6(a) => script += &format!("addr add {a}/128 dev lo nodad\n"),
            }
        }
        // `gso_max_segs 1`: TCP builds GSO packets even when the device has GSO off, and the
        // output hook would count them before segmentation; one segment per packet keeps the
        // counts per wire packet.
        ip_batch(w, &script);
        exec_ok(
            w,
            "ethtool",
            &["-K", WAN_IF, "tso", "off", "gso", "off", "gro", "off"],
        );
        counters::install(w, &SERVERS);
    }

    /// Deletes `br-lan` and builds it again with the same name, MAC, addresses and ports, as a
    /// router's network restart does: the new bridge has a new interface index.
    pub fn rebuild_bridge(&self) {
        let mut script = format!(
            "link del {LAN_BRIDGE}\n\
             link add {LAN_BRIDGE} address {lan_mac} type bridge\n\
             addr add {ROUTER_LAN_V4}/{LAN_PREFIX_V4} dev {LAN_BRIDGE}\n\
             addr add {ROUTER_LAN_V6}/{LAN_PREFIX_V6} dev {LAN_BRIDGE} nodad\n",
            lan_mac = mac_to_string(ROUTER_LAN_MAC),
        );
        for d in &self.devices {
            script += &format!("link set {} master {LAN_BRIDGE} up\n", d.router_port);
        }
        script += &format!("link set {LAN_BRIDGE} up\n");
        ip_batch(&self.router, &script);
    }

    /// The devices' links, as ports of `br-lan`.
    fn setup_ports(&self) {
        let r = self.router.as_str();
        // Ports need no addresses. Without IPv6 they send no MLD reports of their own, which
        // would look like router-to-device traffic; `br-lan` and `wan0` exist already and keep
        // theirs, the ports created here inherit this.
        sysctl(r, "net/ipv6/conf/default/disable_ipv6", "1");
        let mut script = String::new();
        for d in &self.devices {
            let port_mac = mac_to_string([0x02, 0, 0, 0x01, 0, d.index]);
            script += &format!(
                "link add {port} address {port_mac} type veth \
                   peer name {DEVICE_IF} address {mac} netns {ns}\n\
                 link set {port} master {LAN_BRIDGE} up\n",
                port = d.router_port,
                mac = d.mac_string(),
                ns = d.ns,
            );
        }
        ip_batch(r, &script);
        sysctl(r, "net/ipv6/conf/default/disable_ipv6", "0");
    }

    /// Brings the device's interface up with its IPv6 address and route, and with `static_v4`
    /// its IPv4 address and route too (otherwise DHCP sets them).
    fn setup_device(&self, d: &Device, static_v4: bool) {
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

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Drop for Lab {
    /// Kills tracked processes, then anything else left in the namespaces, then removes them;
    /// then (as a field) the lab directory goes.
    /// Never panics: it also runs while a failed test unwinds.
    fn drop(&mut self) {
        for child in self.children().drain(..) {
            child.kill_quietly();
        }
        netns::destroy(&self.created);
    }
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("id", &self.id)
            .field("router", &self.router)
            .field("wan", &self.wan)
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for Lab {
    /// A short map of the lab, for demos and failure messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "lab {}", self.id)?;
        writeln!(
            f,
            "  router  {}: {LAN_BRIDGE} {ROUTER_LAN_V4} {ROUTER_LAN_V6}, \
             {ROUTER_WAN_IF} {ROUTER_WAN_V4} {ROUTER_WAN_V6}",
            self.router
        )?;
        for d in &self.devices {
            writeln!(
                f,
                "  device  {} ({}): {DEVICE_IF} {} {} {} on {}",
                d.name,
                d.ns,
                d.mac_string(),
                d.ipv4,
                d.ipv6,
                d.router_port
            )?;
        }
        let servers: Vec<String> = SERVERS.iter().map(ToString::to_string).collect();
        write!(
            f,
            "  wan     {}: {WAN_IF} {WAN_V4} {WAN_V6}, servers {}",
            self.wan,
            servers.join(" ")
        )?;
        if self.dns.is_some() {
            write!(
                f,
                "\n  dns     dnsmasq on {ROUTER_LAN_V4} {ROUTER_LAN_V6}{}, \
                 outside resolver {OUTSIDE_RESOLVER_V4} {OUTSIDE_RESOLVER_V6}, in {}",
                if self.dhcp { " (and DHCP)" } else { "" },
                self.scratch_dir().display()
            )?;
        }
        Ok(())
    }
}

/// Locks `m`, ignoring poisoning: a panic elsewhere must not stop the lab's cleanup.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `192.168.50.0`, the LAN's IPv4 network.
pub(crate) fn lan_v4_network() -> Ipv4Addr {
    let o = ROUTER_LAN_V4.octets();
    Ipv4Addr::new(o[0], o[1], o[2], 0)
}

/// `2001:db8:50::`, the LAN's IPv6 prefix.
fn lan_v6_prefix() -> Ipv6Addr {
    let s = ROUTER_LAN_V6.segments();
    Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)
}

/// How long after setup the lab waits for the interfaces' initial multicast reports to pass.
const SETTLE: Duration = Duration::from_millis(60);

/// IPv4 masquerade on the uplink; IPv6 is routed as is.
fn router_ruleset() -> String {
    format!(
        "table ip nat {{\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   oifname \"{ROUTER_WAN_IF}\" masquerade\n\
         \x20 }}\n\
         }}\n"
    )
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
        assert_eq!(mac_to_string(ROUTER_LAN_MAC), "02:00:00:00:50:01");
        assert_eq!(lan_v6_prefix().to_string(), "2001:db8:50::");
    }

    #[test]
    fn servers_are_off_the_uplink_and_lan() {
        for s in SERVERS_V4 {
            assert_ne!(s.octets()[..3], WAN_V4.octets()[..3]);
            assert_ne!(s.octets()[..3], ROUTER_LAN_V4.octets()[..3]);
        }
        assert_eq!(SERVERS[5], IpAddr::V6(SERVERS_V6[0]));
        assert_eq!(SERVERS_V6[0].to_string(), "2001:db8:1::10");
    }

    #[test]
    fn builder_names() {
        let b = LabBuilder::default().device_count(5);
        assert_eq!(b.devices, ["phone", "laptop", "camera", "dev4", "dev5"]);
        validate_names(&b.devices);
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
