//! What outlives the agent: the counter maps and the programs' links, pinned under bpffs
//! (`pin_dir`, by default `/sys/fs/bpf/egress-monitor`), so the programs keep counting while no
//! agent runs and the next agent adopts them. Prometheus then sees no reset, and the bytes that
//! crossed meanwhile are counted.
//!
//! ```text
//! <pin_dir>/maps/FLOWS, DEVICES, DEVICE_SLOTS, DEVICE_TOTALS, STATS   the kernel's maps
//! <pin_dir>/maps/CARRIED_DEVICES, CARRIED_FLOWS, CARRIED_STATS        agent-only: totals carried
//!                                                                     over from replaced maps
//! <pin_dir>/maps/LAYOUT                                               version, sizes, netns
//! <pin_dir>/links/<ifindex>-<ingress|egress>                          TCX links
//! ```
//!
//! An agent starting finds one of four things ([`Found`]): nothing (it creates and pins), the
//! same layout and sizes (it adopts the maps as they are and swaps its programs into the links
//! atomically), the same layout with other sizes (it creates new maps, swaps its programs in,
//! reads the old maps once they are still and carries their totals over), or a layout it does
//! not know (it says so in one line and the metric `egress_monitor_kernel_start_info`, and
//! starts afresh: a map it does not understand is never read). `LAYOUT` is pinned last, so an
//! agent killed while creating pins leaves a set the next one replaces.
//!
//! The carried maps hold totals of maps that were replaced (a restart with other sizes); the
//! kernel never writes them, so the agent can, without racing the programs.

use std::{
    collections::BTreeMap,
    fs, io,
    os::unix::fs::{DirBuilderExt, MetadataExt},
    path::{Path, PathBuf},
};

use aya::{
    Pod,
    maps::{Array, HashMap, Map, MapData, MapError, MapInfo, MapType},
    programs::TcAttachType,
};
use monitor_common::{
    Counters, DEVICE_SLOTS_MAP, DEVICE_TOTALS_MAP, DEVICES_MAP, DeviceKey, FLOWS_MAP, FlowKey,
    FlowValue, KernelStats, MAP_LAYOUT_VERSION, STATS_MAP,
};

use crate::types::Count;

/// The kernel maps that are pinned. The local-prefix tries and the ring of copied packets are
/// not: each agent fills its own tries before attaching, and a copied packet is only a name.
pub const PINNED_KERNEL_MAPS: [&str; 5] = [
    FLOWS_MAP,
    DEVICES_MAP,
    DEVICE_SLOTS_MAP,
    DEVICE_TOTALS_MAP,
    STATS_MAP,
];
const LAYOUT: &str = "LAYOUT";
const CARRIED_DEVICES: &str = "CARRIED_DEVICES";
const CARRIED_FLOWS: &str = "CARRIED_FLOWS";
const CARRIED_STATS: &str = "CARRIED_STATS";
/// Hash map entries allocated as they are used, not all at creation.
const BPF_F_NO_PREALLOC: u32 = 1;

/// What `LAYOUT` holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LayoutRecord {
    version: u32,
    flow_entries: u32,
    device_entries: u32,
    pad: u32,
    /// The inode of the network namespace whose interfaces the links are on.
    netns: u64,
}

// SAFETY: repr(C), Copy, no padding (4 x u32 then a u64).
unsafe impl Pod for LayoutRecord {}

/// How this agent's kernel side began, for the log and `egress_monitor_kernel_start_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// `pin_dir` is off, or not on a bpf filesystem: the programs stop with the agent.
    Unpinned,
    /// Nothing was pinned: new maps, now pinned.
    Fresh,
    /// The pins of an earlier agent, adopted as they are.
    Adopted,
    /// An earlier agent's maps had other sizes: new maps, the old totals carried over.
    Resized,
    /// Pins of a layout this agent does not know, replaced (their counts are lost).
    Replaced,
}

impl Start {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unpinned => "unpinned",
            Self::Fresh => "fresh",
            Self::Adopted => "adopted",
            Self::Resized => "resized",
            Self::Replaced => "replaced",
        }
    }
}

/// What a start found under the pin directory.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Nothing,
    Same,
    /// Same layout, the flow or device map sizes differ.
    Resized,
    /// A layout this agent cannot read; why.
    Foreign(String),
}

/// Why the pins cannot be used. One line each.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "pin_dir {}: its pins belong to an agent in another network namespace; give each agent its own pin_dir (or run `egress-monitor detach` for the old one)",
        .0.display()
    )]
    OtherNamespace(PathBuf),
    #[error("pin_dir {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("pin_dir: map {name}: {message}")]
    Map { name: String, message: String },
}

/// The totals of replaced maps, carried into the counts of the maps that replaced them.
#[derive(Debug, Default, Clone)]
pub struct Carried {
    pub devices: BTreeMap<DeviceKey, Count>,
    pub flows: BTreeMap<FlowKey, Count>,
    /// Per direction.
    pub stats: [KernelStats; 2],
}

impl Carried {
    /// Adds `other` into this.
    pub fn absorb(&mut self, other: Carried) {
        for (key, count) in other.devices {
            let c = self.devices.entry(key).or_default();
            *c = c.saturating_add(count);
        }
        for (key, count) in other.flows {
            let c = self.flows.entry(key).or_default();
            *c = c.saturating_add(count);
        }
        for (mine, theirs) in self.stats.iter_mut().zip(other.stats) {
            *mine = mine.merged(&theirs);
        }
    }
}

/// The pin directory of one agent.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    /// `root` if it is (or would be created) on a bpf filesystem; None, with a warning, if not.
    pub fn usable(root: &Path) -> Option<Self> {
        let mut probe = root;
        while !probe.exists() {
            probe = probe.parent()?;
        }
        match nix::sys::statfs::statfs(probe) {
            Ok(fs) if fs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC => Some(Self {
                root: root.to_owned(),
            }),
            _ => {
                tracing::warn!(
                    pin_dir = %root.display(),
                    "pin_dir is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf): the programs stop counting whenever the agent stops"
                );
                None
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Where kernel map `name` is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    /// Where the TCX link of one hook is pinned.
    pub fn link(&self, ifindex: u32, attach_type: TcAttachType) -> PathBuf {
        let hook = match attach_type {
            TcAttachType::Ingress => "ingress",
            _ => "egress",
        };
        self.links().join(format!("{ifindex}-{hook}"))
    }

    /// The link pins there are now.
    pub fn link_pins(&self) -> Vec<PathBuf> {
        list(&self.links())
    }

    fn io(&self, path: &Path) -> impl FnOnce(io::Error) -> PinError {
        let path = path.to_owned();
        move |source| PinError::Io { path, source }
    }

    /// Creates the directories (mode 0700: map contents say who talks to whom).
    pub fn create_dirs(&self) -> Result<(), PinError> {
        for dir in [self.root.clone(), self.maps(), self.links()] {
            match fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(self.io(&dir)(e)),
            }
        }
        Ok(())
    }

    /// What is pinned, judged against the sizes this agent wants.
    pub fn inspect(&self, flows: u32, devices: u32) -> Result<Found, PinError> {
        if list(&self.maps()).is_empty() {
            return Ok(Found::Nothing);
        }
        let layout = match self.read_layout() {
            Ok(layout) => layout,
            Err(why) => return Ok(Found::Foreign(why)),
        };
        if layout.netns != own_netns().map_err(self.io(Path::new("/proc/self/ns/net")))? {
            return Err(PinError::OtherNamespace(self.root.clone()));
        }
        if layout.version != MAP_LAYOUT_VERSION {
            return Ok(Found::Foreign(format!(
                "map layout version {}, this agent reads version {MAP_LAYOUT_VERSION}",
                layout.version
            )));
        }
        for (name, expected) in expected_maps() {
            let info = match MapInfo::from_pin(self.map(name)) {
                Ok(info) => info,
                Err(e) => return Ok(Found::Foreign(format!("map {name}: {e}"))),
            };
            let found = (info.map_type().ok(), info.key_size(), info.value_size());
            if found != (Some(expected.0), expected.1, expected.2) {
                return Ok(Found::Foreign(format!(
                    "map {name} is {:?} with {}-byte keys and {}-byte values, this agent expects {:?} with {} and {}",
                    found.0, found.1, found.2, expected.0, expected.1, expected.2
                )));
            }
        }
        if (layout.flow_entries, layout.device_entries) != (flows, devices) {
            return Ok(Found::Resized);
        }
        Ok(Found::Same)
    }

    fn read_layout(&self) -> Result<LayoutRecord, String> {
        let missing = "no layout record (an agent stopped while it created its maps)";
        let data = MapData::from_pin(self.map(LAYOUT)).map_err(|_| missing.to_owned())?;
        let array: Array<MapData, LayoutRecord> =
            Array::try_from(Map::Array(data)).map_err(|e| format!("{LAYOUT}: {e}"))?;
        array.get(&0, 0).map_err(|e| format!("{LAYOUT}: {e}"))
    }

    /// Pins the layout record: the last pin a start makes.
    pub fn write_layout(&self, flows: u32, devices: u32) -> Result<(), PinError> {
        let map_error = |e: &dyn std::fmt::Display| PinError::Map {
            name: LAYOUT.into(),
            message: e.to_string(),
        };
        let record = LayoutRecord {
            version: MAP_LAYOUT_VERSION,
            flow_entries: flows,
            device_entries: devices,
            pad: 0,
            netns: own_netns().map_err(self.io(Path::new("/proc/self/ns/net")))?,
        };
        let mut array = Array::<MapData, LayoutRecord>::create(1, 0).map_err(|e| map_error(&e))?;
        array.set(0, record, 0).map_err(|e| map_error(&e))?;
        array.pin(self.map(LAYOUT)).map_err(|e| map_error(&e))
    }

    /// Removes every map pin, the layout record first (a pin set without it is never read).
    pub fn remove_maps(&self) -> Result<(), PinError> {
        let layout = self.map(LAYOUT);
        match fs::remove_file(&layout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io(&layout)(e)),
        }
        for path in list(&self.maps()) {
            fs::remove_file(&path).map_err(self.io(&path))?;
        }
        Ok(())
    }

    /// Removes everything: maps, links (which detaches TCX programs no process holds) and the
    /// directories.
    pub fn remove_all(&self) -> Result<usize, PinError> {
        let links = self.link_pins();
        for path in &links {
            fs::remove_file(path).map_err(self.io(path))?;
        }
        self.remove_maps()?;
        for dir in [self.maps(), self.links(), self.root.clone()] {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&dir)(e)),
            }
        }
        Ok(links.len())
    }

    /// Opens a pinned map of the kernel's, to read it once more before it is replaced.
    pub fn open_map(&self, name: &str) -> Result<Map, PinError> {
        let data = MapData::from_pin(self.map(name)).map_err(|e| PinError::Map {
            name: name.into(),
            message: e.to_string(),
        })?;
        let map = match name {
            FLOWS_MAP => Map::PerCpuLruHashMap(data),
            DEVICES_MAP => Map::PerCpuHashMap(data),
            DEVICE_SLOTS_MAP => Map::HashMap(data),
            _ => Map::PerCpuArray(data),
        };
        Ok(map)
    }

    /// The carried totals pinned now (empty when there are none).
    pub fn read_carried(&self) -> Result<Carried, PinError> {
        let map_error = |name: &str| {
            let name = name.to_owned();
            move |e: MapError| PinError::Map {
                name,
                message: e.to_string(),
            }
        };
        let mut carried = Carried {
            devices: self.read_counts(CARRIED_DEVICES)?,
            flows: self.read_counts(CARRIED_FLOWS)?,
            ..Carried::default()
        };
        if let Ok(data) = MapData::from_pin(self.map(CARRIED_STATS)) {
            let map: Array<MapData, KernelStats> =
                Array::try_from(Map::Array(data)).map_err(map_error(CARRIED_STATS))?;
            for (direction, slot) in carried.stats.iter_mut().enumerate() {
                *slot = map
                    .get(&(direction as u32), 0)
                    .map_err(map_error(CARRIED_STATS))?;
            }
        }
        Ok(carried)
    }

    /// The pinned carried device totals, to keep them as the agent drains and recycles.
    pub fn open_carried_devices(&self) -> Result<HashMap<MapData, DeviceKey, Counters>, PinError> {
        let error = |message: String| PinError::Map {
            name: CARRIED_DEVICES.into(),
            message,
        };
        let data =
            MapData::from_pin(self.map(CARRIED_DEVICES)).map_err(|e| error(e.to_string()))?;
        HashMap::try_from(Map::HashMap(data)).map_err(|e| error(e.to_string()))
    }

    /// The counts in pinned hash map `name` (none when it is not there).
    fn read_counts<K: Pod + Ord>(&self, name: &str) -> Result<BTreeMap<K, Count>, PinError> {
        let error = |e: MapError| PinError::Map {
            name: name.into(),
            message: e.to_string(),
        };
        let Ok(data) = MapData::from_pin(self.map(name)) else {
            return Ok(BTreeMap::new());
        };
        let map: HashMap<MapData, K, Counters> =
            HashMap::try_from(Map::HashMap(data)).map_err(error)?;
        let mut counts = BTreeMap::new();
        for entry in map.iter() {
            let (key, c) = entry.map_err(error)?;
            counts.insert(key, Count::new(c.bytes, c.packets));
        }
        Ok(counts)
    }

    /// Pins `carried` as the carried maps, replacing any there are. The device map has room
    /// for 16 times `device_entries` devices (allocated as used): drained and recycled devices
    /// go there as the agent runs.
    pub fn write_carried(&self, carried: &Carried, device_entries: u32) -> Result<(), PinError> {
        let map_error = |name: &str| {
            let name = name.to_owned();
            move |e: &dyn std::fmt::Display| PinError::Map {
                name,
                message: e.to_string(),
            }
        };
        for name in [CARRIED_DEVICES, CARRIED_FLOWS, CARRIED_STATS] {
            let path = self.map(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&path)(e)),
            }
        }
        let capacity = |n: usize| u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        let room = capacity(carried.devices.len() * 2).max(device_entries.saturating_mul(16));
        let mut devices = HashMap::<MapData, DeviceKey, Counters>::create(room, BPF_F_NO_PREALLOC)
            .map_err(|e| map_error(CARRIED_DEVICES)(&e))?;
        for (key, c) in &carried.devices {
            devices
                .insert(key, counters(*c), 0)
                .map_err(|e| map_error(CARRIED_DEVICES)(&e))?;
        }
        let mut flows =
            HashMap::<MapData, FlowKey, Counters>::create(capacity(carried.flows.len()), 0)
                .map_err(|e| map_error(CARRIED_FLOWS)(&e))?;
        for (key, c) in &carried.flows {
            flows
                .insert(key, counters(*c), 0)
                .map_err(|e| map_error(CARRIED_FLOWS)(&e))?;
        }
        let mut stats = Array::<MapData, KernelStats>::create(2, 0)
            .map_err(|e| map_error(CARRIED_STATS)(&e))?;
        for (direction, s) in carried.stats.iter().enumerate() {
            stats
                .set(direction as u32, *s, 0)
                .map_err(|e| map_error(CARRIED_STATS)(&e))?;
        }
        devices
            .pin(self.map(CARRIED_DEVICES))
            .map_err(|e| map_error(CARRIED_DEVICES)(&e))?;
        flows
            .pin(self.map(CARRIED_FLOWS))
            .map_err(|e| map_error(CARRIED_FLOWS)(&e))?;
        stats
            .pin(self.map(CARRIED_STATS))
            .map_err(|e| map_error(CARRIED_STATS)(&e))
    }
}

fn counters(c: Count) -> Counters {
    Counters {
        bytes: c.bytes,
        packets: c.packets,
    }
}

/// (name, (type, key size, value size)) of every pinned map, as this agent lays them out.
fn expected_maps() -> [(&'static str, (MapType, u32, u32)); 8] {
    fn sizes<K, V>(map_type: MapType) -> (MapType, u32, u32) {
        (map_type, size_of::<K>() as u32, size_of::<V>() as u32)
    }
    [
        (
            FLOWS_MAP,
            sizes::<FlowKey, FlowValue>(MapType::LruPerCpuHash),
        ),
        (
            DEVICES_MAP,
            sizes::<DeviceKey, Counters>(MapType::PerCpuHash),
        ),
        (DEVICE_SLOTS_MAP, sizes::<DeviceKey, u32>(MapType::Hash)),
        (
            DEVICE_TOTALS_MAP,
            sizes::<u32, Counters>(MapType::PerCpuArray),
        ),
        (STATS_MAP, sizes::<u32, KernelStats>(MapType::PerCpuArray)),
        (CARRIED_DEVICES, sizes::<DeviceKey, Counters>(MapType::Hash)),
        (CARRIED_FLOWS, sizes::<FlowKey, Counters>(MapType::Hash)),
        (CARRIED_STATS, sizes::<u32, KernelStats>(MapType::Array)),
    ]
}

/// The inode of this process's network namespace.
fn own_netns() -> io::Result<u64> {
    Ok(fs::metadata("/proc/self/ns/net")?.ino())
}

/// The entries of `dir`, sorted; none when it does not exist.
fn list(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carried_totals_add_up() {
        let key = DeviceKey {
            mac: [2, 0, 0, 0, 0, 1],
            direction: 0,
            pad: 0,
        };
        let mut a = Carried::default();
        a.devices.insert(key, Count::new(100, 2));
        a.stats[0].frames = 5;
        let mut b = Carried::default();
        b.devices.insert(key, Count::new(50, 1));
        b.stats[0].frames = 7;
        a.absorb(b);
        assert_eq!(a.devices[&key], Count::new(150, 3));
        assert_eq!(a.stats[0].frames, 12);
    }

    #[test]
    fn link_pins_are_named_by_interface_and_hook() {
        let dir = PinDir {
            root: "/sys/fs/bpf/em".into(),
        };
        assert_eq!(
            dir.link(7, TcAttachType::Ingress),
            Path::new("/sys/fs/bpf/em/links/7-ingress")
        );
        assert_eq!(
            dir.link(7, TcAttachType::Egress),
            Path::new("/sys/fs/bpf/em/links/7-egress")
        );
        assert_eq!(dir.map(FLOWS_MAP), Path::new("/sys/fs/bpf/em/maps/FLOWS"));
    }

    #[test]
    fn the_layout_record_has_no_padding() {
        assert_eq!(size_of::<LayoutRecord>(), 24);
    }
}
