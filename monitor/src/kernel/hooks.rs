//! Where the programs attach: the hook devices of each configured LAN interface, kept in step
//! with the interfaces and bridge ports that come and go.
//!
//! A configured LAN interface that is a bridge (`br-lan`), or a VLAN device on top of one
//! (`br-lan.1` on OpenWrt's DSA boards with bridge VLAN filtering), is counted on the bridge's
//! ports (lan1..lan4, the Wi-Fi interfaces), not on the bridge device. With software flow
//! offload (an nftables flowtable, as firewall4 sets it up on the ports and the WAN device), an
//! offloaded flow's packets skip the bridge device: from the WAN they are sent straight to the
//! port, and from the device they are taken from the port's ingress into the flowtable. The
//! ports' TC hooks still see every packet: TC ingress runs before the netfilter ingress hook
//! that holds the flowtable, and the flowtable transmits with `dev_queue_xmit`, which runs TC
//! egress. What the ports also see, traffic bridged between two devices, has local addresses
//! on both ends (the local prefixes come from the configured interface), so it is never a
//! destination, and each packet crosses exactly one port in each direction, so nothing counts
//! twice.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType,
        tc::{self, SchedClassifierLink, TcAttachOptions},
    },
};

use crate::{
    config::AttachPolicy,
    kernel::loader::{
        AttachMode, LoadError, PROGRAM_LAN_EGRESS, PROGRAM_LAN_INGRESS, error_chain,
        permission_denied,
    },
};

/// What the network looks like from the interfaces' point of view; [`Sysfs`] in the agent, a
/// table in tests.
pub trait Topology {
    fn ifindex(&self, name: &str) -> Option<u32>;
    fn is_bridge(&self, name: &str) -> bool;
    /// The ports of bridge `name`, sorted.
    fn bridge_ports(&self, name: &str) -> Vec<String>;
    /// The devices `name` is stacked on (a VLAN device's parent), sorted.
    fn lower_devices(&self, name: &str) -> Vec<String>;
}

/// The devices whose TC hooks see the packets of LAN interface `lan`: a bridge's ports, the
/// ports of the bridge a VLAN device sits on, or else `lan` itself. A bridge without ports has
/// no hook device (nothing crosses it).
pub fn hook_devices(topology: &impl Topology, lan: &str) -> Vec<String> {
    if let Some(bridge) = bridge_of(topology, lan) {
        return topology.bridge_ports(&bridge);
    }
    vec![lan.to_owned()]
}

/// The bridge whose ports carry `lan`'s packets: `lan` itself, or the one bridge under a VLAN
/// device.
pub fn bridge_of(topology: &impl Topology, lan: &str) -> Option<String> {
    if topology.is_bridge(lan) {
        return Some(lan.to_owned());
    }
    match topology.lower_devices(lan).as_slice() {
        [lower] if topology.is_bridge(lower) => Some(lower.clone()),
        _ => None,
    }
}

/// The kernel's view through `/sys/class/net` (of the agent's network namespace).
pub struct Sysfs;

impl Sysfs {
    fn dir(name: &str) -> PathBuf {
        Path::new("/sys/class/net").join(name)
    }

    /// Names in `dir` (with `prefix`, stripped), sorted; an unreadable directory is empty.
    fn names(dir: &Path, prefix: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_prefix(prefix).map(str::to_owned))
            .collect();
        names.sort();
        names
    }
}

impl Topology for Sysfs {
    fn ifindex(&self, name: &str) -> Option<u32> {
        nix::net::if_::if_nametoindex(name).ok()
    }

    fn is_bridge(&self, name: &str) -> bool {
        Self::dir(name).join("bridge").is_dir()
    }

    fn bridge_ports(&self, name: &str) -> Vec<String> {
        Self::names(&Self::dir(name).join("brif"), "")
    }

    fn lower_devices(&self, name: &str) -> Vec<String> {
        Self::names(&Self::dir(name), "lower_")
    }
}

/// One configured LAN interface's hook device, as the metrics and the API show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The device the programs are attached to: the LAN interface or one of its bridge's ports.
    pub interface: String,
    /// The configured LAN interface it belongs to.
    pub lan: String,
    /// The interface index the programs are attached to; None while not attached.
    pub ifindex: Option<u32>,
    /// None while not attached.
    pub mode: Option<AttachMode>,
}

/// Both programs on one device. Dropping it detaches them.
struct Hook {
    lan: String,
    device: String,
    ifindex: u32,
    mode: AttachMode,
    /// Owned links: dropping one detaches its program (TCX link or clsact filter).
    _links: Vec<SchedClassifierLink>,
}

/// A device that should carry the programs but does not yet (attaching failed); retried at
/// every [`Hooks::follow`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    lan: String,
    device: String,
    /// The last error, logged once.
    error: String,
}

/// The programs' attachments to every hook device of the configured LAN interfaces.
pub struct Hooks {
    lan: Vec<String>,
    policy: AttachPolicy,
    hooks: Vec<Hook>,
    pending: Vec<Pending>,
    /// Every device ever hooked, so the log tells a device that came back from a new port.
    known: BTreeSet<String>,
}

/// (configured LAN interface, hook device, ifindex) for every device that should carry the
/// programs now; a device reached from two LAN interfaces (two VLANs of one bridge) is hooked
/// once, for the first. Devices that do not exist are left out.
fn wanted(topology: &impl Topology, lan: &[String]) -> Vec<(String, String, u32)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for l in lan {
        for device in hook_devices(topology, l) {
            if let Some(index) = topology.ifindex(&device)
                && seen.insert(device.clone())
            {
                out.push((l.clone(), device, index));
            }
        }
    }
    out
}

impl Hooks {
    /// Attaches both (loaded) programs to every hook device of `lan`; any failure is fatal,
    /// so that a misconfigured agent never starts half-blind.
    pub fn attach_all(
        ebpf: &mut Ebpf,
        lan: &[String],
        policy: AttachPolicy,
    ) -> Result<Self, LoadError> {
        let mut hooks = Vec::new();
        for (l, device, ifindex) in wanted(&Sysfs, lan) {
            hooks.push(attach_hook(ebpf, &l, &device, ifindex, policy)?);
        }
        for l in lan {
            if bridge_of(&Sysfs, l).is_some() && hook_devices(&Sysfs, l).is_empty() {
                tracing::warn!(
                    lan = l,
                    "the bridge has no ports: nothing to count until one joins"
                );
            }
        }
        Ok(Self {
            lan: lan.to_vec(),
            policy,
            known: hooks.iter().map(|h| h.device.clone()).collect(),
            hooks,
            pending: Vec::new(),
        })
    }

    /// Brings the attachments in step with the interfaces of now: a port that joined is
    /// attached, one that left (or a device that is gone) is detached, a device re-created
    /// under its name (a network restart rebuilds the bridge) is attached again. Failures are
    /// logged once each and retried at the next call. True if anything changed.
    pub fn follow(&mut self, ebpf: &mut Ebpf) -> bool {
        let wanted = wanted(&Sysfs, &self.lan);
        let before = self.attachments();
        self.hooks.retain(|h| {
            let keep = wanted
                .iter()
                .any(|(_, d, i)| *d == h.device && *i == h.ifindex);
            if !keep {
                tracing::info!(
                    interface = h.device,
                    lan = h.lan,
                    "detached: the device left the LAN or is gone"
                );
            }
            keep
        });
        let mut pending = Vec::new();
        for (lan, device, ifindex) in wanted {
            if self.hooks.iter().any(|h| h.device == device) {
                continue;
            }
            match attach_hook(ebpf, &lan, &device, ifindex, self.policy) {
                Ok(hook) => {
                    let mode = hook.mode.as_str();
                    if !self.known.insert(device.clone()) {
                        tracing::info!(interface = device, lan, ifindex, mode, "attached again");
                    } else {
                        tracing::info!(
                            interface = device,
                            lan,
                            ifindex,
                            mode,
                            "attached to a new port"
                        );
                    }
                    self.hooks.push(hook);
                }
                Err(e) => {
                    let error = e.to_string();
                    let said = self
                        .pending
                        .iter()
                        .any(|p| p.device == device && p.error == error);
                    if !said {
                        tracing::warn!(interface = device, lan, error, "cannot attach yet");
                    }
                    pending.push(Pending { lan, device, error });
                }
            }
        }
        self.pending = pending;
        self.attachments() != before
    }

    /// Every hook device and every configured interface without one, for the metrics.
    pub fn attachments(&self) -> Vec<Attachment> {
        let mut out: Vec<Attachment> = self
            .hooks
            .iter()
            .map(|h| Attachment {
                interface: h.device.clone(),
                lan: h.lan.clone(),
                ifindex: Some(h.ifindex),
                mode: Some(h.mode),
            })
            .collect();
        out.extend(self.pending.iter().map(|p| Attachment {
            interface: p.device.clone(),
            lan: p.lan.clone(),
            ifindex: None,
            mode: None,
        }));
        for l in &self.lan {
            if !out.iter().any(|a| a.lan == *l) {
                out.push(Attachment {
                    interface: l.clone(),
                    lan: l.clone(),
                    ifindex: None,
                    mode: None,
                });
            }
        }
        out.sort_by(|a, b| (&a.lan, &a.interface).cmp(&(&b.lan, &b.interface)));
        out
    }

    /// The interface indexes of the configured LAN interfaces (where the router's neighbour
    /// entries for the devices live), as of now.
    pub fn lan_ifindexes(&self) -> Vec<u32> {
        self.lan.iter().filter_map(|l| Sysfs.ifindex(l)).collect()
    }
}

/// Attaches both programs to one device.
fn attach_hook(
    ebpf: &mut Ebpf,
    lan: &str,
    device: &str,
    ifindex: u32,
    policy: AttachPolicy,
) -> Result<Hook, LoadError> {
    let mut mode = AttachMode::Tcx;
    let mut links = Vec::with_capacity(2);
    for (program, attach_type) in [
        (PROGRAM_LAN_INGRESS, TcAttachType::Ingress),
        (PROGRAM_LAN_EGRESS, TcAttachType::Egress),
    ] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(program)
            .ok_or_else(|| LoadError::Load(format!("program {program} missing from the object")))?
            .try_into()
            .map_err(|e: ProgramError| LoadError::Load(e.to_string()))?;
        let (link, attached) = attach(prog, device, attach_type, program, policy)?;
        mode = attached;
        links.push(link);
    }
    Ok(Hook {
        lan: lan.to_owned(),
        device: device.to_owned(),
        ifindex,
        mode,
        _links: links,
    })
}

fn attach(
    prog: &mut SchedClassifier,
    interface: &str,
    attach_type: TcAttachType,
    name: &str,
    policy: AttachPolicy,
) -> Result<(SchedClassifierLink, AttachMode), LoadError> {
    let attach_error = |e: &dyn std::fmt::Display| LoadError::Attach {
        interface: interface.to_owned(),
        message: e.to_string(),
    };
    let owned = |prog: &mut SchedClassifier, id| prog.take_link(id).map_err(|e| attach_error(&e));
    if policy != AttachPolicy::Clsact {
        // First in the chain: count what the device sent before anything else acts on it.
        let tcx_error = match prog.attach_with_options(
            interface,
            attach_type,
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        ) {
            Ok(id) => return Ok((owned(prog, id)?, AttachMode::Tcx)),
            Err(e) => e,
        };
        if let Some(permission) = permission_denied(&tcx_error) {
            return Err(LoadError::Permission(permission));
        }
        if policy == AttachPolicy::Tcx {
            return Err(attach_error(&format!(
                "TCX: {} (attach = \"tcx\" allows no fallback; kernels before 6.6 need clsact)",
                error_chain(&tcx_error)
            )));
        }
        tracing::info!(interface, error = %tcx_error, "TCX unavailable, falling back to clsact");
    }
    if let Err(e) = tc::qdisc_add_clsact(interface) {
        // EEXIST: the qdisc is already there, which is fine.
        if !matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST)) {
            return Err(attach_error(&e));
        }
    }
    // A filter of ours left by an agent that was killed would count everything twice.
    match tc::qdisc_detach_program(interface, attach_type, name) {
        Ok(()) => tracing::warn!(interface, name, "removed a stale filter of an earlier run"),
        Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(attach_error(&e)),
    }
    let id = prog
        .attach_with_options(
            interface,
            attach_type,
            TcAttachOptions::Netlink(Default::default()),
        )
        .map_err(|e| attach_error(&e))?;
    Ok((owned(prog, id)?, AttachMode::Clsact))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// (ifindex, bridge ports if a bridge, lower devices).
    type Device = (u32, Option<Vec<&'static str>>, Vec<&'static str>);

    /// name -> device.
    #[derive(Default)]
    struct Table(BTreeMap<&'static str, Device>);

    impl Table {
        fn dev(mut self, name: &'static str, index: u32) -> Self {
            self.0.insert(name, (index, None, vec![]));
            self
        }
        fn bridge(mut self, name: &'static str, index: u32, ports: &[&'static str]) -> Self {
            self.0.insert(name, (index, Some(ports.to_vec()), vec![]));
            self
        }
        fn vlan(mut self, name: &'static str, index: u32, parent: &'static str) -> Self {
            self.0.insert(name, (index, None, vec![parent]));
            self
        }
    }

    impl Topology for Table {
        fn ifindex(&self, name: &str) -> Option<u32> {
            self.0.get(name).map(|d| d.0)
        }
        fn is_bridge(&self, name: &str) -> bool {
            self.0.get(name).is_some_and(|d| d.1.is_some())
        }
        fn bridge_ports(&self, name: &str) -> Vec<String> {
            let mut ports: Vec<String> = self
                .0
                .get(name)
                .and_then(|d| d.1.clone())
                .unwrap_or_default()
                .into_iter()
                .map(str::to_owned)
                .collect();
            ports.sort();
            ports
        }
        fn lower_devices(&self, name: &str) -> Vec<String> {
            self.0
                .get(name)
                .map(|d| d.2.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default()
        }
    }

    fn lan(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_bridge_is_counted_on_its_ports_and_anything_else_on_itself() {
        let t = Table::default()
            .bridge("br-lan", 10, &["lan2", "lan1", "wlan0"])
            .dev("lan1", 11)
            .dev("lan2", 12)
            .dev("wlan0", 13)
            .dev("eth1", 20);
        assert_eq!(hook_devices(&t, "br-lan"), ["lan1", "lan2", "wlan0"]);
        assert_eq!(hook_devices(&t, "eth1"), ["eth1"]);
        assert_eq!(bridge_of(&t, "eth1"), None);
        assert_eq!(
            wanted(&t, &lan(&["br-lan", "eth1"])),
            [
                ("br-lan".into(), "lan1".into(), 11),
                ("br-lan".into(), "lan2".into(), 12),
                ("br-lan".into(), "wlan0".into(), 13),
                ("eth1".into(), "eth1".into(), 20),
            ]
        );
    }

    #[test]
    fn a_vlan_of_a_filtering_bridge_is_counted_on_the_bridge_ports_once() {
        // OpenWrt on DSA: br-lan with VLAN filtering, br-lan.1 the LAN, br-lan.3 a guest VLAN.
        let t = Table::default()
            .bridge("br-lan", 10, &["lan1", "lan2"])
            .dev("lan1", 11)
            .dev("lan2", 12)
            .vlan("br-lan.1", 30, "br-lan")
            .vlan("br-lan.3", 31, "br-lan");
        assert_eq!(bridge_of(&t, "br-lan.1").as_deref(), Some("br-lan"));
        assert_eq!(hook_devices(&t, "br-lan.1"), ["lan1", "lan2"]);
        assert_eq!(
            wanted(&t, &lan(&["br-lan.1", "br-lan.3"])),
            [
                ("br-lan.1".into(), "lan1".into(), 11),
                ("br-lan.1".into(), "lan2".into(), 12),
            ],
            "each port hooked once"
        );
    }

    #[test]
    fn a_vlan_on_a_plain_device_and_missing_devices() {
        let t = Table::default()
            .dev("eth0", 2)
            .vlan("eth0.10", 3, "eth0")
            .bridge("br-empty", 4, &[]);
        assert_eq!(hook_devices(&t, "eth0.10"), ["eth0.10"]);
        assert!(hook_devices(&t, "br-empty").is_empty());
        assert!(wanted(&t, &lan(&["gone", "br-empty"])).is_empty());
    }
}
