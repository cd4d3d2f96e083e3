//! Loading the kernel programs and attaching them to the LAN interfaces.
//!
//! TCX links (kernel >= 6.6) belong to this process: they vanish when it exits, even on
//! SIGKILL, so a crash never leaves a program counting into maps nobody reads. Older kernels
//! get clsact filters, which outlive the process; those are removed by name before attaching.
//! Which devices the programs attach to is [`crate::kernel::hooks`]' concern.

use std::{collections::BTreeSet, io, path::Path};

use ipnet::IpNet;

use crate::{config::AttachPolicy, kernel::hooks::Hooks, kernel::prefixes::LocalPrefixMaps};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{ProgramError, SchedClassifier},
};
use monitor_common::{
    Counters, DEVICE_SLOTS_MAP, DEVICE_TOTALS_MAP, DEVICES_MAP, DeviceKey, FLOWS_MAP, FlowKey,
    FlowValue, KernelStats, LOCAL_V4_MAP, LOCAL_V6_MAP, SNIFF_MAP, STATS_MAP,
};

/// The eBPF object built by build.rs from the `monitor-ebpf` crate.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor-ebpf"));

/// The program on the TC ingress hook of each LAN interface: what devices send, traffic of
/// direction egress (named for its hook, as in the eBPF crate).
pub const PROGRAM_LAN_INGRESS: &str = "lan_ingress";
/// The program on the TC egress hook of each LAN interface: what devices receive, traffic of
/// direction ingress.
pub const PROGRAM_LAN_EGRESS: &str = "lan_egress";

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

/// Loaded and attached programs.
pub struct Loaded {
    /// Keeps the programs alive.
    pub ebpf: Ebpf,
    pub maps: KernelMaps,
    /// The programs' links to the hook devices; dropping it detaches them.
    pub hooks: Hooks,
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
    for program in [PROGRAM_LAN_INGRESS, PROGRAM_LAN_EGRESS] {
        load_program(&mut ebpf, program)?;
    }
    let mut maps = take_maps(&mut ebpf)?;
    maps.local
        .sync(local)
        .map_err(|e| LoadError::Load(format!("cannot write the local prefixes: {e}")))?;
    let hooks = Hooks::attach_all(&mut ebpf, interfaces, policy)?;
    Ok(Loaded { ebpf, maps, hooks })
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

pub(crate) fn permission_denied(error: &(dyn std::error::Error + 'static)) -> Option<String> {
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
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
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
