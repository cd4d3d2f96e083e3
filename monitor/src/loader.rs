//! Loading the kernel programs and attaching them to the LAN interfaces.
//!
//! TCX links (kernel >= 6.6) belong to this process: they vanish when it exits, even on
//! SIGKILL, so a crash never leaves a program counting into maps nobody reads. Older kernels
//! get clsact filters, which outlive the process; those are removed by name before attaching.

use std::{collections::BTreeSet, io, path::Path};

use ipnet::IpNet;

use crate::{config::AttachPolicy, prefixes::LocalPrefixMaps};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType,
        tc::{self, TcAttachOptions},
    },
};
use monitor_common::{
    Counters, DEVICE_SLOTS_MAP, DEVICE_TOTALS_MAP, DEVICES_MAP, DeviceKey, FLOWS_MAP, FlowKey,
    FlowValue, KernelStats, LOCAL_V4_MAP, LOCAL_V6_MAP, SNIFF_MAP, STATS_MAP,
};

/// The eBPF object built by build.rs from the `monitor-ebpf` crate.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor-ebpf"));

/// Program run on TC ingress of each LAN interface (device -> world).
pub const PROGRAM_EGRESS: &str = "lan_ingress";
/// Program run on TC egress of each LAN interface (world -> device).
pub const PROGRAM_INGRESS: &str = "lan_egress";

/// Why the programs could not be loaded or attached. Each variant's message is one line a user
/// can act on.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("LAN interface `{0}` does not exist")]
    InterfaceMissing(String),
    #[error(
        "`{port}` is a port of bridge `{bridge}`, which is also monitored: its traffic would be counted twice; monitor one of them"
    )]
    BridgePortTwice { port: String, bridge: String },
    #[error(
        "no permission to load eBPF programs ({0}): run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
    )]
    Permission(String),
    #[error("loading the eBPF programs failed: {0}")]
    Load(String),
    #[error("attaching to `{interface}` failed: {message}")]
    Attach { interface: String, message: String },
}

/// How a program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Tcx,
    Clsact,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
        }
    }
}

/// The maps the agent reads and writes, taken out of the loaded object.
pub struct KernelMaps {
    pub flows: PerCpuHashMap<MapData, FlowKey, FlowValue>,
    /// Device totals counted before the device had a slot.
    pub devices: PerCpuHashMap<MapData, DeviceKey, Counters>,
    /// Device -> slot in `device_totals`; the agent writes it.
    pub device_slots: HashMap<MapData, DeviceKey, u32>,
    pub device_totals: PerCpuArray<MapData, Counters>,
    pub stats: PerCpuArray<MapData, KernelStats>,
    /// The local prefixes (LPM tries): traffic to them is not a destination.
    pub local: LocalPrefixMaps,
    /// Packets copied for naming.
    pub sniff: RingBuf<MapData>,
}

/// One LAN interface and how the programs are attached to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub interface: String,
    /// The interface index the programs are attached to; None while the interface is gone.
    pub ifindex: Option<u32>,
    /// None while not attached.
    pub mode: Option<AttachMode>,
}

/// Loaded and attached programs. Dropping it detaches them.
pub struct Loaded {
    /// Keeps the programs and their links alive; dropping it detaches them.
    pub ebpf: Ebpf,
    pub maps: KernelMaps,
    pub attachments: Vec<Attachment>,
}

/// Sizes of the maps the configuration chooses.
pub struct MapSizes {
    pub flows: u32,
    pub devices: u32,
    /// Bytes of the sniff ring buffer (a power of two, a multiple of the page size).
    pub sniff_ring_bytes: u32,
}

/// Fails unless every interface exists and no interface is a port of another listed bridge.
pub fn check_interfaces(interfaces: &[String]) -> Result<(), LoadError> {
    for name in interfaces {
        if nix::net::if_::if_nametoindex(name.as_str()).is_err() {
            return Err(LoadError::InterfaceMissing(name.clone()));
        }
        let master = Path::new("/sys/class/net").join(name).join("master");
        if let Ok(target) = std::fs::read_link(&master)
            && let Some(bridge) = target.file_name().and_then(|n| n.to_str())
            && interfaces.iter().any(|i| i == bridge)
        {
            return Err(LoadError::BridgePortTwice {
                port: name.clone(),
                bridge: bridge.to_owned(),
            });
        }
    }
    Ok(())
}

/// Loads the object with the configured map sizes; programs are not loaded into the kernel
/// yet. Tests use this to run the programs on crafted frames without attaching them.
pub fn load(sizes: &MapSizes) -> Result<Ebpf, LoadError> {
    EbpfLoader::new()
        .map_max_entries(FLOWS_MAP, sizes.flows)
        .map_max_entries(DEVICES_MAP, sizes.devices)
        .map_max_entries(DEVICE_SLOTS_MAP, sizes.devices)
        .map_max_entries(DEVICE_TOTALS_MAP, sizes.devices)
        .map_max_entries(SNIFF_MAP, sizes.sniff_ring_bytes)
        .load(EBPF_OBJECT)
        .map_err(|e| classify(&e, LoadError::Load))
}

/// Loads one of the classifiers into the kernel and returns it.
pub fn load_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut SchedClassifier, LoadError> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| LoadError::Load(format!("program {name} missing from the object")))?
        .try_into()
        .map_err(|e: ProgramError| LoadError::Load(e.to_string()))?;
    prog.load().map_err(|e| classify(&e, LoadError::Load))?;
    Ok(prog)
}

/// Loads the object with the configured map sizes, writes the `local` prefixes, and only then
/// attaches both programs to every interface.
///
/// The order matters: a packet to the router or a LAN neighbour seen before its prefix is in
/// the trie would create a flow entry, and a known flow is never checked against the trie
/// again (that is what keeps a known flow at one lookup), so it would count as a destination
/// for as long as the entry lives. On a router, every device's DNS goes to the router.
pub fn load_and_attach(
    interfaces: &[String],
    sizes: &MapSizes,
    policy: AttachPolicy,
    local: &BTreeSet<IpNet>,
) -> Result<Loaded, LoadError> {
    check_interfaces(interfaces)?;
    let mut ebpf = load(sizes)?;
    for program in [PROGRAM_EGRESS, PROGRAM_INGRESS] {
        load_program(&mut ebpf, program)?;
    }
    let mut maps = take_maps(&mut ebpf)?;
    maps.local
        .sync(local)
        .map_err(|e| LoadError::Load(format!("cannot write the local prefixes: {e}")))?;
    let attachments = interfaces
        .iter()
        .map(|interface| attach_interface(&mut ebpf, interface, policy))
        .collect::<Result<_, _>>()?;
    Ok(Loaded {
        ebpf,
        maps,
        attachments,
    })
}

/// Attaches both (already loaded) programs to one interface. Also used to attach again to an
/// interface that was deleted and re-created (a bridge rebuilt by a network restart).
pub fn attach_interface(
    ebpf: &mut Ebpf,
    interface: &str,
    policy: AttachPolicy,
) -> Result<Attachment, LoadError> {
    let ifindex = nix::net::if_::if_nametoindex(interface)
        .map_err(|_| LoadError::InterfaceMissing(interface.to_owned()))?;
    let mut mode = AttachMode::Tcx;
    for (program, attach_type) in [
        (PROGRAM_EGRESS, TcAttachType::Ingress),
        (PROGRAM_INGRESS, TcAttachType::Egress),
    ] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(program)
            .ok_or_else(|| LoadError::Load(format!("program {program} missing from the object")))?
            .try_into()
            .map_err(|e: ProgramError| LoadError::Load(e.to_string()))?;
        mode = attach(prog, interface, attach_type, program, policy)?;
    }
    Ok(Attachment {
        interface: interface.to_owned(),
        ifindex: Some(ifindex),
        mode: Some(mode),
    })
}

fn attach(
    prog: &mut SchedClassifier,
    interface: &str,
    attach_type: TcAttachType,
    name: &str,
    policy: AttachPolicy,
) -> Result<AttachMode, LoadError> {
    let attach_error = |e: &dyn std::fmt::Display| LoadError::Attach {
        interface: interface.to_owned(),
        message: e.to_string(),
    };
    if policy != AttachPolicy::Clsact {
        // First in the chain: count what the device sent before anything else acts on it.
        let tcx_error = match prog.attach_with_options(
            interface,
            attach_type,
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        ) {
            Ok(_) => return Ok(AttachMode::Tcx),
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
        Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(attach_error(&e)),
    }
    prog.attach_with_options(
        interface,
        attach_type,
        TcAttachOptions::Netlink(Default::default()),
    )
    .map_err(|e| attach_error(&e))?;
    Ok(AttachMode::Clsact)
}

/// Takes the maps the agent uses out of a loaded object.
pub fn take_maps(ebpf: &mut Ebpf) -> Result<KernelMaps, LoadError> {
    fn take<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, LoadError>
    where
        T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = ebpf
            .take_map(name)
            .ok_or_else(|| LoadError::Load(format!("map {name} missing from the object")))?;
        T::try_from(map).map_err(|e| LoadError::Load(format!("map {name}: {e}")))
    }
    Ok(KernelMaps {
        flows: take(ebpf, FLOWS_MAP)?,
        devices: take(ebpf, DEVICES_MAP)?,
        device_slots: take(ebpf, DEVICE_SLOTS_MAP)?,
        device_totals: take(ebpf, DEVICE_TOTALS_MAP)?,
        stats: take(ebpf, STATS_MAP)?,
        local: LocalPrefixMaps::new(take(ebpf, LOCAL_V4_MAP)?, take(ebpf, LOCAL_V6_MAP)?),
        sniff: take(ebpf, SNIFF_MAP)?,
    })
}

/// Turns an error whose cause is EPERM into [`LoadError::Permission`]. (EACCES is not one: it
/// is how the verifier rejects a program.)
fn classify<E: std::error::Error + 'static>(
    error: &E,
    otherwise: fn(String) -> LoadError,
) -> LoadError {
    match permission_denied(error) {
        Some(message) => LoadError::Permission(message),
        None => otherwise(error_chain(error)),
    }
}

fn permission_denied(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.raw_os_error() == Some(libc::EPERM)
        {
            return Some(error_chain(error));
        }
        cause = e.source();
    }
    None
}

/// "outer: inner: innermost", on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_eperm_is_a_permission_problem() {
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        let eacces = io::Error::from_raw_os_error(libc::EACCES);
        assert!(matches!(
            classify(&eperm, LoadError::Load),
            LoadError::Permission(_)
        ));
        // The verifier says EACCES when it rejects a program: that is a load error.
        assert!(matches!(
            classify(&eacces, LoadError::Load),
            LoadError::Load(_)
        ));
    }
}
