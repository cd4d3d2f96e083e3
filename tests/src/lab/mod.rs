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
//!
//! By concern: this module builds a lab and tears it down; `router` is the router namespace
//! (bridge, uplink, NAT, GRO), `wan` the WAN namespace (servers' addresses, the uplink counters,
//! traffic to the sinks), `devices` the LAN devices (addresses, namespaces, DHCP renewals), and
//! `services` what runs in the lab (dnsmasq, the outside resolver, TLS servers, the servers).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::dhcp;
use crate::dns::{OUTSIDE_RESOLVER_V4, OUTSIDE_RESOLVER_V6};
use crate::netns::{self, describe, sysctls};
use crate::process::LabChild;
use crate::scratch::ScratchDir;

mod devices;
mod router;
mod services;
mod wan;

pub use devices::{
    DEFAULT_DEVICES, DEVICE_IF, Device, MAX_DEVICES, device_ipv4, device_ipv6, device_mac,
    mac_to_string,
};
pub(crate) use router::lan_v4_network;
pub use router::{
    LAN_BRIDGE, LAN_PREFIX_V4, LAN_PREFIX_V6, ROUTER_LAN_MAC, ROUTER_LAN_V4, ROUTER_LAN_V6,
    ROUTER_WAN_IF, ROUTER_WAN_MAC, ROUTER_WAN_V4, ROUTER_WAN_V6,
};
pub use wan::{SERVERS, SERVERS_V4, SERVERS_V6, WAN_IF, WAN_MAC, WAN_V4, WAN_V6};

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
        devices::validate_names(&self.devices);
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
                Device::new(&id, index, name)
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
            bpffs: OnceLock::new(),
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
    /// A bpf filesystem of the lab's own, mounted in the lab directory when first needed (see
    /// [`Lab::pin_dir`]); unmounted when the lab goes.
    bpffs: OnceLock<PathBuf>,
    /// The two dnsmasq instances, with [`LabBuilder::dnsmasq`].
    dns: Option<services::Resolvers>,
    /// Whether devices get their IPv4 address by DHCP.
    dhcp: bool,
    /// The DHCP hostname of each device, by device name.
    hostnames: Mutex<HashMap<String, String>>,
    /// The TLS servers' certificate and key, made when first needed.
    tls_cert: OnceLock<(PathBuf, PathBuf)>,
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

    /// Where this lab's agents pin their maps and links: shared by the agents one lab starts
    /// in turn, so a restarted agent adopts what the previous one left.
    ///
    /// On a bpf filesystem of the lab's own, in the lab directory: `ip netns exec` mounts a
    /// fresh /sys for the agent, where /sys/fs/bpf is not mounted, while mounts elsewhere are
    /// seen by every process the lab starts. It goes with the lab: removing the link pins
    /// detaches what still counted.
    pub fn pin_dir(&self) -> PathBuf {
        let mount = self.bpffs.get_or_init(|| {
            let dir = self.scratch_dir().join("bpf");
            std::fs::create_dir_all(&dir).expect("create the lab's bpffs mount point");
            let out = Command::new("mount")
                .args(["-t", "bpf", "-o", "mode=0700", "egl-bpf"])
                .arg(&dir)
                .output()
                .expect("run mount");
            assert!(
                out.status.success(),
                "cannot mount a bpf filesystem at {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            dir
        });
        mount.join("egress-monitor")
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

    fn children(&self) -> MutexGuard<'_, Vec<LabChild>> {
        lock(&self.children)
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
        // The agents' pins: removing the link pins detaches what still counted.
        if let Some(mount) = self.bpffs.get() {
            let _ = std::fs::remove_dir_all(mount.join("egress-monitor"));
            let _ = Command::new("umount").arg(mount).output();
        }
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

/// How long after setup the lab waits for the interfaces' initial multicast reports to pass.
const SETTLE: Duration = Duration::from_millis(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_names() {
        let b = LabBuilder::default().device_count(5);
        assert_eq!(b.devices, ["phone", "laptop", "camera", "dev4", "dev5"]);
        devices::validate_names(&b.devices);
    }
}
