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
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    },
};

use crate::{
    config::AttachPolicy,
    kernel::{
        loader::{
            AttachMode, LoadError, PROGRAM_LAN_EGRESS, PROGRAM_LAN_INGRESS, error_chain,
            permission_denied,
        },
        pins::PinDir,
    },
};

/// Where our clsact filters sit: first (priority 1), under a handle of our own, so the next
/// agent can swap its program into the same filter (`tc filter replace`), atomically.
const CLSACT_PRIORITY: u16 = 1;
const CLSACT_HANDLE: TcHandle = TcHandle::new(0, 0xe6a0);

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

/// Both programs on one device. Dropping it detaches them, unless they are pinned: then they
/// go on counting for the next agent.
struct Hook {
    lan: String,
    device: String,
    ifindex: u32,
    mode: AttachMode,
    links: Vec<HookLink>,
}

/// One program's link. A TCX link with a pin outlives the process; a clsact filter outlives it
/// anyway, and is removed only when `keep` is false.
struct HookLink {
    link: Option<SchedClassifierLink>,
    pin: Option<PathBuf>,
    keep: bool,
}

impl HookLink {
    /// Detaches the program for good (the device left the LAN).
    fn release(mut self) {
        if let Some(pin) = self.pin.take() {
            let _ = fs::remove_file(pin);
        }
        self.keep = false;
    }
}

impl Drop for HookLink {
    fn drop(&mut self) {
        // Dropping a link detaches it: a TCX link only loses our descriptor (its pin holds it),
        // but a clsact filter would be deleted. Forgetting one leaks nothing: it holds no
        // descriptor, only the filter's address.
        if let Some(link) = self.link.take()
            && self.keep
            && <&FdLink>::try_from(&link).is_err()
        {
            std::mem::forget(link);
        }
    }
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
    pins: Option<PinDir>,
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
        pins: Option<&PinDir>,
    ) -> Result<Self, LoadError> {
        let mut hooks = Vec::new();
        for (l, device, ifindex) in wanted(&Sysfs, lan) {
            hooks.push(attach_hook(ebpf, &l, &device, ifindex, policy, pins)?);
        }
        if let Some(dir) = pins {
            // Links of devices that are no longer hooked (gone, or no longer in the LAN):
            // removing the pin detaches the program.
            let used: BTreeSet<&PathBuf> = hooks
                .iter()
                .flat_map(|h: &Hook| h.links.iter().filter_map(|l| l.pin.as_ref()))
                .collect();
            for pin in dir.link_pins() {
                if !used.contains(&pin) {
                    tracing::info!(pin = %pin.display(), "removed the link of a device no longer hooked");
                    let _ = fs::remove_file(&pin);
                }
            }
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
            pins: pins.cloned(),
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
        let hooks = std::mem::take(&mut self.hooks);
        let (kept, left): (Vec<Hook>, Vec<Hook>) = hooks.into_iter().partition(|h| {
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
        self.hooks = kept;
        for hook in left {
            hook.links.into_iter().for_each(HookLink::release);
        }
        let mut pending = Vec::new();
        for (lan, device, ifindex) in wanted {
            if self.hooks.iter().any(|h| h.device == device) {
                continue;
            }
            match attach_hook(
                ebpf,
                &lan,
                &device,
                ifindex,
                self.policy,
                self.pins.as_ref(),
            ) {
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

/// Attaches both programs to one device: swapped into the links (or filters) of an earlier
/// agent where there are some, else new.
fn attach_hook(
    ebpf: &mut Ebpf,
    lan: &str,
    device: &str,
    ifindex: u32,
    policy: AttachPolicy,
    pins: Option<&PinDir>,
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
        let hook = Target {
            interface: device,
            attach_type,
            name: program,
        };
        let pin = pins.map(|dir| dir.link(ifindex, attach_type));
        let (link, attached) = attach(prog, &hook, policy, pin.as_deref())?;
        mode = attached;
        links.push(HookLink {
            link: Some(link),
            pin: pin.filter(|_| attached == AttachMode::Tcx),
            keep: pins.is_some(),
        });
    }
    Ok(Hook {
        lan: lan.to_owned(),
        device: device.to_owned(),
        ifindex,
        mode,
        links,
    })
}

/// One program on one hook.
struct Target<'a> {
    interface: &'a str,
    attach_type: TcAttachType,
    /// The program's name, which its clsact filter carries.
    name: &'a str,
}

fn attach(
    prog: &mut SchedClassifier,
    target: &Target<'_>,
    policy: AttachPolicy,
    pin: Option<&Path>,
) -> Result<(SchedClassifierLink, AttachMode), LoadError> {
    let interface = target.interface;
    let attach_error = |e: &dyn std::fmt::Display| LoadError::Attach {
        interface: interface.to_owned(),
        message: e.to_string(),
    };
    let owned = |prog: &mut SchedClassifier, id| prog.take_link(id).map_err(|e| attach_error(&e));
    if policy != AttachPolicy::Clsact {
        if let Some(pin) = pin
            && let Some(id) = swap_into_pinned_link(prog, pin, interface)
        {
            return Ok((owned(prog, id)?, AttachMode::Tcx));
        }
        // First in the chain: count what the device sent before anything else acts on it.
        let tcx_error = match prog.attach_with_options(
            interface,
            target.attach_type,
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        ) {
            Ok(id) => {
                let link = owned(prog, id)?;
                return match pin {
                    Some(pin) => Ok((
                        pin_link(link, pin).map_err(|e| attach_error(&e))?,
                        AttachMode::Tcx,
                    )),
                    None => Ok((link, AttachMode::Tcx)),
                };
            }
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
    if pin.is_some() {
        // An earlier agent's filter: this program takes its place, with no packet between.
        let ours = SchedClassifierLink::attached(
            interface,
            target.attach_type,
            CLSACT_PRIORITY,
            CLSACT_HANDLE,
            None,
        )
        .map_err(|e| attach_error(&e))?;
        if let Ok(id) = prog.attach_to_link(ours) {
            tracing::info!(
                interface,
                name = target.name,
                "took over the filter of an earlier agent"
            );
            return Ok((owned(prog, id)?, AttachMode::Clsact));
        }
    }
    // A filter of ours left by an agent that kept no pins would count everything twice.
    match tc::qdisc_detach_program(interface, target.attach_type, target.name) {
        Ok(()) => tracing::warn!(
            interface,
            name = target.name,
            "removed a stale filter of an earlier run"
        ),
        Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(attach_error(&e)),
    }
    let id = prog
        .attach_with_options(
            interface,
            target.attach_type,
            TcAttachOptions::Netlink(NlOptions {
                priority: CLSACT_PRIORITY,
                handle: CLSACT_HANDLE,
                ..Default::default()
            }),
        )
        .map_err(|e| attach_error(&e))?;
    Ok((owned(prog, id)?, AttachMode::Clsact))
}

/// Swaps `prog` into the TCX link pinned at `pin` (an earlier agent's), atomically: every
/// packet meets exactly one of the two programs. None when there is no usable link there (a
/// stale pin is removed).
fn swap_into_pinned_link(
    prog: &mut SchedClassifier,
    pin: &Path,
    interface: &str,
) -> Option<aya::programs::tc::SchedClassifierLinkId> {
    let pinned = match PinnedLink::from_pin(pin) {
        Ok(pinned) => pinned,
        Err(_) if !pin.exists() => return None,
        Err(e) => {
            tracing::warn!(pin = %pin.display(), error = %e, "removing an unreadable link pin");
            let _ = fs::remove_file(pin);
            return None;
        }
    };
    let swapped = SchedClassifierLink::try_from(FdLink::from(pinned))
        .map_err(|e| e.to_string())
        .and_then(|link| prog.attach_to_link(link).map_err(|e| error_chain(&e)));
    match swapped {
        Ok(id) => {
            tracing::info!(interface, pin = %pin.display(), "took over the link of an earlier agent");
            Some(id)
        }
        Err(e) => {
            // A link whose device is gone is defunct: a new one replaces it.
            tracing::info!(pin = %pin.display(), error = e, "replacing a stale link pin");
            let _ = fs::remove_file(pin);
            None
        }
    }
}

/// Pins a new TCX link, so it outlives the process.
fn pin_link(link: SchedClassifierLink, pin: &Path) -> Result<SchedClassifierLink, String> {
    let fd_link = FdLink::try_from(link).map_err(|e| e.to_string())?;
    let _ = fs::remove_file(pin);
    let pinned = fd_link
        .pin(pin)
        .map_err(|e| format!("cannot pin the link at {}: {e}", pin.display()))?;
    SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string())
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
