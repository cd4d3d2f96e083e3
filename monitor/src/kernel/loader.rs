//! Loading the kernel programs and attaching them to the LAN interfaces.
//!
//! With a pin directory (the default), the counter maps and the TCX links are pinned and clsact
//! filters stay, so the programs go on counting after the agent stops, and the next agent
//! adopts them (see [`crate::kernel::pins`]). Without one, TCX links belong to this process and
//! vanish when it exits, and clsact filters are removed at a clean stop. Which devices the
//! programs attach to is [`crate::kernel::hooks`]' concern.

use std::{collections::BTreeSet, io, path::Path, time::Duration};

use ipnet::IpNet;

use crate::{
    config::AttachPolicy,
    kernel::{
        counters::{self, CounterMaps},
        device_totals::DeviceTotals,
        hooks::Hooks,
        pins::{self, Carried, Found, PinDir, PinError, Start},
        prefixes::LocalPrefixMaps,
    },
};
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
    #[error(transparent)]
    Pins(#[from] PinError),
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
    /// The programs' links to the hook devices; dropping it detaches them, unless pinned.
    pub hooks: Hooks,
    /// How the kernel side began: afresh, or adopting an earlier agent's pins.
    pub start: Start,
    /// Totals carried over from maps an earlier agent replaced.
    pub carried: Carried,
    /// Where the carried device totals are pinned, to keep them as they grow.
    pub carried_pin: Option<HashMap<MapData, DeviceKey, Counters>>,
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
    load_pinned(sizes, None)
}

/// [`load`], the counter maps opened from `pins` where they are pinned, else created and
/// pinned there.
fn load_pinned(sizes: &MapSizes, pins: Option<&PinDir>) -> Result<Ebpf, LoadError> {
    let paths: Vec<(&str, std::path::PathBuf)> = pins
        .map(|dir| {
            pins::PINNED_KERNEL_MAPS
                .iter()
                .map(|name| (*name, dir.map(name)))
                .collect()
        })
        .unwrap_or_default();
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(FLOWS_MAP, sizes.flows)
        .map_max_entries(DEVICES_MAP, sizes.devices)
        .map_max_entries(DEVICE_SLOTS_MAP, sizes.devices)
        .map_max_entries(DEVICE_TOTALS_MAP, sizes.devices)
        .map_max_entries(SNIFF_MAP, sizes.sniff_ring_bytes);
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    loader
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

/// How long the programs an agent replaced may still be running on packets they took before
/// the swap (a program run lasts microseconds), before their maps are read for the last time.
const REPLACED_PROGRAMS_SETTLE: Duration = Duration::from_millis(100);

/// Loads the object with the configured map sizes, writes the `local` prefixes, and only then
/// attaches both programs to every interface. With `pin_dir`, the counter maps and links of an
/// earlier agent are adopted, or replaced with their totals carried over (see `pins`).
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
    pin_dir: Option<&Path>,
) -> Result<Loaded, LoadError> {
    check_interfaces(interfaces)?;
    let mut pins = pin_dir.and_then(PinDir::usable);
    let (start, old) = match &pins {
        None => (Start::Unpinned, None),
        Some(dir) => match prepare_pins(dir, sizes) {
            Err(LoadError::Permission(why)) => {
                tracing::warn!(
                    "{why}: running without pins, so the programs stop counting whenever the agent stops (give the agent's user a pin_dir it may write, or run it as root)"
                );
                pins = None;
                (Start::Unpinned, None)
            }
            other => other?,
        },
    };
    let mut ebpf = load_pinned(sizes, pins.as_ref())?;
    for program in [PROGRAM_LAN_INGRESS, PROGRAM_LAN_EGRESS] {
        load_program(&mut ebpf, program)?;
    }
    let mut maps = take_maps(&mut ebpf)?;
    maps.local
        .sync(local)
        .map_err(|e| LoadError::Load(format!("cannot write the local prefixes: {e}")))?;
    // Swaps these programs in for an earlier agent's, hook by hook, atomically.
    let hooks = Hooks::attach_all(&mut ebpf, interfaces, policy, pins.as_ref())?;
    let mut carried = Carried::default();
    let mut carried_pin = None;
    if let Some(dir) = &pins {
        match start {
            Start::Adopted => carried = dir.read_carried()?,
            _ => {
                if let Some((old_maps, old_carried)) = old {
                    // No program writes the old maps any more: read them once, for good.
                    std::thread::sleep(REPLACED_PROGRAMS_SETTLE);
                    carried = old_carried;
                    carried.absorb(read_final(&old_maps)?);
                }
                dir.write_carried(&carried, sizes.devices)?;
                dir.write_layout(sizes.flows, sizes.devices)?;
            }
        }
        carried_pin = Some(dir.open_carried_devices()?);
    }
    Ok(Loaded {
        ebpf,
        maps,
        hooks,
        start,
        carried,
        carried_pin,
    })
}

/// An earlier agent's counter maps, opened before their pins were removed.
struct OldMaps {
    flows: counters::Flows,
    devices: DeviceTotals,
    stats: counters::Stats,
    flow_capacity: u32,
}

/// Decides what to do with what is pinned, and clears what will not be adopted. Returns the
/// old maps (and what they carried) when their totals are to be carried over.
fn prepare_pins(
    dir: &PinDir,
    sizes: &MapSizes,
) -> Result<(Start, Option<(OldMaps, Carried)>), LoadError> {
    dir.create_dirs().map_err(|e| match &e {
        PinError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
            LoadError::Permission(e.to_string())
        }
        _ => LoadError::Pins(e),
    })?;
    let found = dir.inspect(sizes.flows, sizes.devices)?;
    let start = match &found {
        Found::Nothing => Start::Fresh,
        Found::Same => Start::Adopted,
        Found::Resized => Start::Resized,
        Found::Foreign(why) => {
            tracing::warn!(
                pin_dir = %dir.root().display(),
                "replacing the pinned maps of an earlier agent, whose counts are lost: {why}"
            );
            Start::Replaced
        }
    };
    let old = match found {
        Found::Resized => {
            let take =
                |name: &str| -> Result<aya::maps::Map, LoadError> { Ok(dir.open_map(name)?) };
            fn typed<T>(map: aya::maps::Map, name: &str) -> Result<T, LoadError>
            where
                T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
            {
                T::try_from(map).map_err(|e| LoadError::Load(format!("pinned map {name}: {e}")))
            }
            let flows: counters::Flows = typed(take(FLOWS_MAP)?, FLOWS_MAP)?;
            let flow_capacity = aya::maps::IterableMap::map(&flows)
                .info()
                .map(|i| i.max_entries())
                .unwrap_or(sizes.flows);
            let devices = DeviceTotals::new(
                typed(take(DEVICES_MAP)?, DEVICES_MAP)?,
                typed(take(DEVICE_SLOTS_MAP)?, DEVICE_SLOTS_MAP)?,
                typed(take(DEVICE_TOTALS_MAP)?, DEVICE_TOTALS_MAP)?,
                0,
            );
            let stats = typed(take(STATS_MAP)?, STATS_MAP)?;
            let carried = dir.read_carried()?;
            tracing::info!(
                pin_dir = %dir.root().display(),
                flow_map_entries = sizes.flows,
                device_map_entries = sizes.devices,
                "the pinned maps have other sizes: new maps, the old totals carried over"
            );
            Some((
                OldMaps {
                    flows,
                    devices,
                    stats,
                    flow_capacity,
                },
                carried,
            ))
        }
        _ => None,
    };
    if start != Start::Adopted {
        // The open maps live on through their file descriptors.
        dir.remove_maps()?;
    }
    Ok((start, old))
}

/// Everything replaced maps hold, as totals to carry over.
fn read_final(old: &OldMaps) -> Result<Carried, LoadError> {
    let maps = CounterMaps {
        flows: &old.flows,
        devices: &old.devices,
        stats: &old.stats,
    };
    let collected = counters::read(&maps, old.flow_capacity)
        .map_err(|e| LoadError::Load(format!("reading the replaced maps: {e}")))?;
    let mut carried = Carried {
        stats: collected.kernel,
        ..Carried::default()
    };
    for (device, addr, count) in collected.reading.flows {
        carried
            .flows
            .insert(counters::flow_key(device, addr), count);
    }
    for (device, count) in collected.reading.devices {
        carried.devices.insert(device.kernel_key(), count);
    }
    Ok(carried)
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
