//! Reading the kernel's counter maps into one [`Reading`]: flows first, then devices (see the
//! ledger for why the order matters), then the kernel statistics.
//!
//! The flow map can hold hundreds of thousands of entries, so it is read with
//! `BPF_MAP_LOOKUP_BATCH`: a few thousand keys and their per-CPU values per syscall, instead of
//! two syscalls per key (next key, then lookup). aya 0.14 has no API for it, so this module
//! calls bpf(2) itself. Kernels before 5.6 do not know the command; on those the agent falls
//! back, once and for good, to the walk one key at a time ([`read_per_key`]).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    sync::atomic::{AtomicBool, Ordering},
};

use aya::maps::{IterableMap, MapData, MapError, PerCpuArray, PerCpuHashMap};
use monitor_common::{Counters, FAMILY_V4, FAMILY_V6, FlowKey, FlowValue, KernelStats};

use crate::{
    kernel::device_totals::{DeviceReading, DeviceTotals},
    ledger::Reading,
    types::MacAddr,
    types::{Count, DeviceId, Direction},
};

/// The flow map: (device, direction, remote address) -> per-CPU counters (and device slot).
pub type Flows = PerCpuHashMap<MapData, FlowKey, FlowValue>;
/// The kernel statistics, per direction and CPU.
pub type Stats = PerCpuArray<MapData, KernelStats>;

/// The maps one poll reads.
#[derive(Clone, Copy)]
pub struct CounterMaps<'a> {
    pub flows: &'a Flows,
    /// Device totals: a handful of entries, read key by key.
    pub devices: &'a DeviceTotals,
    pub stats: &'a Stats,
}

/// One poll's worth of kernel data.
#[derive(Debug)]
pub struct Collected {
    pub reading: Reading,
    /// Per direction (`DIRECTION_EGRESS`, `DIRECTION_INGRESS`), summed over CPUs.
    pub kernel: [KernelStats; 2],
    /// Distinct keys read from the flow map.
    pub flow_entries: u64,
    /// Entries read from the device map.
    pub device_entries: u64,
    /// The device maps as read: the poller drains, recycles and gives slots from it.
    pub device_maps: DeviceReading,
}

/// Why the maps could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    Map(#[from] MapError),
    /// The kernel does not offer `BPF_MAP_LOOKUP_BATCH` for this map (before Linux 5.6).
    #[error("the kernel cannot read map {map} in batches: {source}")]
    BatchUnsupported {
        map: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("BPF_MAP_LOOKUP_BATCH on map {map} failed: {source}")]
    Batch {
        map: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot tell the number of possible CPUs from {path}: {source}")]
    Cpus {
        path: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Set once the kernel refused a batch read: from then on every poll walks key by key.
static BATCH_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Reads the maps with batch lookups, or key by key on kernels without them.
pub fn read(maps: &CounterMaps<'_>, flow_capacity: u32) -> Result<Collected, CollectError> {
    if !BATCH_UNSUPPORTED.load(Ordering::Relaxed) {
        match read_batch(maps, flow_capacity) {
            Err(CollectError::BatchUnsupported { map, source }) => {
                BATCH_UNSUPPORTED.store(true, Ordering::Relaxed);
                tracing::warn!(
                    map,
                    error = %source,
                    "the kernel cannot read maps in batches (BPF_MAP_LOOKUP_BATCH, Linux 5.6); \
                     reading one key at a time from now on, which is slower on large maps"
                );
            }
            other => return other,
        }
    }
    read_per_key(maps, flow_capacity)
}

/// Reads the flow and device maps with `BPF_MAP_LOOKUP_BATCH`. Fails with
/// [`CollectError::BatchUnsupported`] on kernels without it.
pub fn read_batch(maps: &CounterMaps<'_>, flow_capacity: u32) -> Result<Collected, CollectError> {
    read_batch_sized(maps, flow_capacity, None)
}

/// [`read_batch`] asking for `batch_keys` keys per call at first (by default up to 4096,
/// depending on the number of CPUs). Tests start with one key: every hash bucket holding more
/// then makes the kernel answer `ENOSPC`, and the reader grow its batch.
pub fn read_batch_sized(
    maps: &CounterMaps<'_>,
    flow_capacity: u32,
    batch_keys: Option<usize>,
) -> Result<Collected, CollectError> {
    let cpus =
        aya::util::nr_cpus().map_err(|(path, source)| CollectError::Cpus { path, source })?;
    let batch = batch_keys
        .unwrap_or_else(|| initial_batch_size(cpus))
        .max(1);
    let mut flows = Vec::new();
    lookup_batch(
        IterableMap::map(maps.flows).fd().as_fd(),
        size_of::<FlowKey>(),
        size_of::<FlowValue>(),
        cpus,
        batch,
        walk_limit(flow_capacity),
        |key, count| {
            flows.push((decode_flow_key(key), count));
        },
    )
    .map_err(|e| e.for_map(monitor_common::FLOWS_MAP))?;
    finish(flows, maps.devices, maps.stats)
}

/// Reads the flow and device maps one key at a time: two syscalls per key (next key, then
/// lookup). The fallback for kernels before 5.6.
pub fn read_per_key(maps: &CounterMaps<'_>, flow_capacity: u32) -> Result<Collected, CollectError> {
    let mut flows = Vec::new();
    for key in maps.flows.keys().take(walk_limit(flow_capacity)) {
        let key = key?;
        match maps.flows.get(&key, 0) {
            Ok(values) => {
                let c = values.iter().fold(Counters::default(), |acc, v| {
                    acc.merged(&Counters {
                        bytes: v.bytes,
                        packets: v.packets,
                    })
                });
                flows.push((key, Count::new(c.bytes, c.packets)));
            }
            // Evicted between the walk and the read.
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    finish(flows, maps.devices, maps.stats)
}

/// How many flow entries a walk reads at most. Walking a hash map one key at a time while the
/// kernel deletes from it can restart from the first key, so the walk is bounded and keys are
/// deduplicated ([`dedup_flows`]).
fn walk_limit(flow_capacity: u32) -> usize {
    2 * flow_capacity as usize + 16
}

/// Sorts flows by key and keeps, of a key read twice, the value read last.
///
/// A key is read twice only when a key-by-key walk restarted; the ledger must not see both
/// values, as a smaller second one would pass for a re-created entry. The order is also the
/// ledger's own (device, direction, address), which makes settling the reading cheaper.
fn dedup_flows(flows: &mut Vec<(FlowKey, Count)>) {
    // Stable: the reads of one key stay in the order they were made. Two integers in
    // big-endian order sort as the key's fields do, and compare faster.
    flows.sort_by_key(|(key, _)| {
        let mut head = [0; 8];
        head[..6].copy_from_slice(&key.mac);
        head[6] = key.direction;
        head[7] = key.family;
        (u64::from_be_bytes(head), u128::from_be_bytes(key.addr))
    });
    flows.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 = later.1;
        }
        same
    });
}

/// Turns what was read into a [`Reading`] and adds the kernel statistics.
fn finish(
    mut flows: Vec<(FlowKey, Count)>,
    devices: &DeviceTotals,
    stats: &Stats,
) -> Result<Collected, CollectError> {
    dedup_flows(&mut flows);
    let mut reading = Reading::default();
    reading.flows.reserve(flows.len());
    for (key, count) in &flows {
        if let (Some(direction), Some(addr)) =
            (Direction::from_kernel(key.direction), remote_address(key))
        {
            let device = DeviceId {
                mac: MacAddr(key.mac),
                direction,
            };
            reading.flows.push((device, addr, *count));
        }
    }
    // After the flows: see the ledger for why the order matters.
    let devices = devices.read()?;
    for (key, count) in &devices.totals {
        if let Some(direction) = Direction::from_kernel(key.direction) {
            let device = DeviceId {
                mac: MacAddr(key.mac),
                direction,
            };
            reading.devices.push((device, *count));
        }
    }
    let mut kernel = [KernelStats::default(); 2];
    for (direction, slot) in kernel.iter_mut().enumerate() {
        let values = stats.get(&(direction as u32), 0)?;
        *slot = values
            .iter()
            .fold(KernelStats::default(), KernelStats::merged);
    }
    let device_entries = reading.devices.len() as u64;
    Ok(Collected {
        reading,
        kernel,
        flow_entries: flows.len() as u64,
        device_entries,
        device_maps: devices,
    })
}

/// The remote address of a flow key, or None for a family the kernel never writes.
pub fn remote_address(key: &FlowKey) -> Option<IpAddr> {
    match key.family {
        FAMILY_V4 => {
            let [a, b, c, d, ..] = key.addr;
            Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
        }
        FAMILY_V6 => Some(IpAddr::V6(Ipv6Addr::from(key.addr))),
        _ => None,
    }
}

/// The flow key of a device's remote address: [`remote_address`] the other way.
pub fn flow_key(device: DeviceId, addr: IpAddr) -> FlowKey {
    let (family, addr) = match addr {
        IpAddr::V4(v4) => {
            let mut bytes = [0; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            (FAMILY_V4, bytes)
        }
        IpAddr::V6(v6) => (FAMILY_V6, v6.octets()),
    };
    FlowKey {
        mac: device.mac.0,
        direction: device.direction as u8,
        family,
        addr,
    }
}

/// The device and remote address of a flow key; None for a key the kernel never writes.
pub fn flow_of(key: &FlowKey) -> Option<(DeviceId, IpAddr)> {
    let direction = Direction::from_kernel(key.direction)?;
    let device = DeviceId {
        mac: MacAddr(key.mac),
        direction,
    };
    Some((device, remote_address(key)?))
}

/// A [`FlowKey`] from its 24 bytes as the kernel lays them out.
fn decode_flow_key(bytes: &[u8]) -> FlowKey {
    let mut key = FlowKey {
        mac: [0; 6],
        direction: bytes[6],
        family: bytes[7],
        addr: [0; 16],
    };
    key.mac.copy_from_slice(&bytes[..6]);
    key.addr.copy_from_slice(&bytes[8..24]);
    key
}

// The decoders above follow the layouts of monitor-common.
const _: () = assert!(size_of::<FlowKey>() == 24);
const _: () = assert!(size_of::<FlowValue>() == 24);

/// Bytes one CPU's value takes in a per-CPU value buffer: the kernel pads each to 8 bytes.
const fn per_cpu_stride(value_size: usize) -> usize {
    value_size.div_ceil(8) * 8
}

/// The sum over CPUs of one key's values in a per-CPU value buffer: one value per possible
/// CPU, each `per_cpu_stride(value_size)` bytes apart, starting with `bytes` and `packets` (as
/// [`Counters`] and [`FlowValue`] do).
fn sum_per_cpu(values: &[u8], value_size: usize, cpus: usize) -> Count {
    let stride = per_cpu_stride(value_size);
    let field = |cpu: usize, at: usize| {
        let start = cpu * stride + at;
        u64::from_ne_bytes(values[start..start + 8].try_into().expect("8 bytes"))
    };
    let mut total = Counters::default();
    for cpu in 0..cpus {
        total = total.merged(&Counters {
            bytes: field(cpu, 0),
            packets: field(cpu, 8),
        });
    }
    Count::new(total.bytes, total.packets)
}

/// Keys asked for per batch: at most 4096, fewer on machines with many CPUs so that the value
/// buffer stays near 1 MiB, but never fewer than 64.
fn initial_batch_size(cpus: usize) -> usize {
    const VALUE_BUFFER_BYTES: usize = 1 << 20;
    let per_key = cpus.max(1) * per_cpu_stride(size_of::<FlowValue>());
    (VALUE_BUFFER_BYTES / per_key).clamp(64, 4096)
}

/// Transient failures retried at the same position before giving up.
const MAX_RETRIES: u32 = 8;

/// What to do after one `BPF_MAP_LOOKUP_BATCH` call.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Ask for the next batch.
    Continue,
    /// The walk reached the last bucket.
    Done,
    /// One hash bucket holds more keys than the batch has room for: ask again from the same
    /// position with room for this many.
    Grow(usize),
    /// Contention on a bucket lock, or a signal: ask again from the same position, dropping
    /// whatever this call returned (reading an entry twice is harmless: flows are
    /// deduplicated, and the ledger keeps the larger of two device totals).
    Retry,
    /// The kernel does not know the command (before 5.6) or not for this map type.
    Unsupported,
    /// Anything else.
    Fail,
}

/// `ENOTSUPP`, the kernel-internal "not supported" some map types return to user space.
const ENOTSUPP: i32 = 524;

/// Decides from the call's error (None on success) and the number of entries it returned.
fn next_step(errno: Option<i32>, count: usize, batch: usize) -> Next {
    match errno {
        None => Next::Continue,
        // The last batch: `count` may hold its final entries.
        Some(libc::ENOENT) => Next::Done,
        Some(libc::ENOSPC) if count == 0 => Next::Grow(batch.saturating_mul(2)),
        Some(libc::ENOSPC) => Next::Continue,
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY | libc::EDEADLK | libc::ETIMEDOUT) => {
            Next::Retry
        }
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP) => Next::Unsupported,
        Some(_) => Next::Fail,
    }
}

/// A failed batch walk, before it is told which map it was on.
#[derive(Debug)]
enum BatchError {
    Unsupported(io::Error),
    Failed(io::Error),
}

impl BatchError {
    fn for_map(self, map: &'static str) -> CollectError {
        match self {
            Self::Unsupported(source) => CollectError::BatchUnsupported { map, source },
            Self::Failed(source) => CollectError::Batch { map, source },
        }
    }
}

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Walks a per-CPU hash map of [`Counters`] in batches of `batch` keys (more if a hash bucket
/// needs it), calling `each` with every key's bytes and its values summed over CPUs; stops
/// after `limit` entries.
///
/// A hash map's batch position is a bucket index, so unlike the key-by-key walk this one never
/// restarts; an entry the kernel adds to a bucket already read is simply read next time.
fn lookup_batch(
    fd: BorrowedFd<'_>,
    key_size: usize,
    value_size_per_cpu: usize,
    cpus: usize,
    mut batch: usize,
    limit: usize,
    mut each: impl FnMut(&[u8], Count),
) -> Result<(), BatchError> {
    let value_size = cpus * per_cpu_stride(value_size_per_cpu);
    let mut keys = vec![0u8; batch * key_size];
    let mut values = vec![0u8; batch * value_size];
    // The position tokens: a bucket index (u32) for hash maps; room to spare for other types.
    let mut position = [0u64; 4];
    let mut next_position = [0u64; 4];
    let mut started = false;
    let (mut read, mut retries) = (0usize, 0u32);
    while read < limit {
        let mut attr = BatchAttr {
            in_batch: if started { position.as_ptr() as u64 } else { 0 },
            out_batch: next_position.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(batch).unwrap_or(u32::MAX),
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed; the kernel writes at
        // most `count` keys and values into buffers sized for `batch` of each, and one position
        // token (a u32 for hash maps) into `next_position`.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        let error = (ret < 0).then(io::Error::last_os_error);
        let step = next_step(
            error.as_ref().and_then(io::Error::raw_os_error),
            attr.count as usize,
            batch,
        );
        if matches!(step, Next::Continue | Next::Done) {
            let count = (attr.count as usize).min(batch).min(limit - read);
            for i in 0..count {
                each(
                    &keys[i * key_size..(i + 1) * key_size],
                    sum_per_cpu(
                        &values[i * value_size..(i + 1) * value_size],
                        value_size_per_cpu,
                        cpus,
                    ),
                );
            }
            read += count;
            started = true;
            position = next_position;
        }
        match step {
            Next::Continue => retries = 0,
            Next::Done => break,
            Next::Grow(larger) => {
                batch = larger;
                keys.resize(batch * key_size, 0);
                values.resize(batch * value_size, 0);
                // The kernel wrote the position of the bucket that did not fit.
                started = true;
                position = next_position;
            }
            Next::Retry if retries < MAX_RETRIES => retries += 1,
            Next::Retry | Next::Fail => {
                return Err(BatchError::Failed(error.expect("an error")));
            }
            Next::Unsupported => return Err(BatchError::Unsupported(error.expect("an error"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_keys_go_both_ways() {
        for addr in ["192.0.2.10", "2001:db8::7"] {
            let device = DeviceId {
                mac: MacAddr([2, 0, 0, 0, 0, 9]),
                direction: Direction::Ingress,
            };
            let addr: IpAddr = addr.parse().unwrap();
            let key = flow_key(device, addr);
            assert_eq!(flow_of(&key), Some((device, addr)));
        }
    }

    #[test]
    fn flow_keys_decode_to_canonical_addresses() {
        let mut key = FlowKey {
            mac: [0; 6],
            direction: 0,
            family: FAMILY_V4,
            addr: [0; 16],
        };
        key.addr[..4].copy_from_slice(&[192, 0, 2, 10]);
        assert_eq!(remote_address(&key).unwrap().to_string(), "192.0.2.10");
        key.family = FAMILY_V6;
        key.addr = "2001:db8:0:0:0:0:0:10"
            .parse::<Ipv6Addr>()
            .unwrap()
            .octets();
        assert_eq!(remote_address(&key).unwrap().to_string(), "2001:db8::10");
        key.family = 9;
        assert_eq!(remote_address(&key), None);
    }

    /// The bytes of a value as the kernel would hold them (native byte order, repr(C)).
    fn raw<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a padding-free repr(C) value.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn keys_decode_from_their_kernel_layout() {
        let flow = FlowKey {
            mac: [0, 0x16, 0x3e, 0, 0, 7],
            direction: 1,
            family: FAMILY_V6,
            addr: core::array::from_fn(|i| i as u8 + 1),
        };
        assert_eq!(decode_flow_key(&raw(&flow)), flow);
    }

    #[test]
    fn per_cpu_values_sum_over_every_cpu() {
        let per_cpu = [
            Counters {
                bytes: 1500,
                packets: 1,
            },
            Counters {
                bytes: 0,
                packets: 0,
            },
            Counters {
                bytes: 60,
                packets: 2,
            },
        ];
        let buffer: Vec<u8> = per_cpu.iter().flat_map(raw).collect();
        assert_eq!(sum_per_cpu(&buffer, 16, 3), Count::new(1560, 3));
        assert_eq!(sum_per_cpu(&buffer, 16, 1), Count::new(1500, 1));
        // Flow values carry a slot after the counts: 24 bytes a CPU.
        let flows: Vec<u8> = [FlowValue {
            bytes: 100,
            packets: 1,
            device_slot: 9,
            pad: 0,
        }; 2]
            .iter()
            .flat_map(raw)
            .collect();
        assert_eq!(sum_per_cpu(&flows, 24, 2), Count::new(200, 2));
        // Counters wrap like the kernel's do, never panic.
        let wrapping: Vec<u8> = [Counters {
            bytes: u64::MAX,
            packets: 1,
        }; 2]
            .iter()
            .flat_map(raw)
            .collect();
        assert_eq!(sum_per_cpu(&wrapping, 16, 2), Count::new(u64::MAX - 1, 2));
    }

    #[test]
    fn flows_read_twice_keep_their_last_value_in_ledger_order() {
        let key = |mac: u8, direction: u8, family: u8, first: u8| {
            let mut addr = [0; 16];
            addr[0] = first;
            FlowKey {
                mac: [0, 0x16, 0x3e, 0, 0, mac],
                direction,
                family,
                addr,
            }
        };
        let (a, b, c, d) = (
            key(2, 0, FAMILY_V4, 9),
            key(1, 1, FAMILY_V4, 1),
            key(1, 0, FAMILY_V6, 1),
            key(1, 0, FAMILY_V4, 200),
        );
        // A walk that restarted after `b` and `a`, which grew in between.
        let mut flows = vec![
            (b, Count::new(10, 1)),
            (a, Count::new(100, 1)),
            (c, Count::new(5, 1)),
            (b, Count::new(10, 1)),
            (a, Count::new(150, 2)),
            (d, Count::new(7, 1)),
        ];
        dedup_flows(&mut flows);
        assert_eq!(
            flows,
            vec![
                (d, Count::new(7, 1)),
                (c, Count::new(5, 1)),
                (b, Count::new(10, 1)),
                (a, Count::new(150, 2)),
            ]
        );
        // The ledger's order: device, direction, then address (IPv4 before IPv6).
        let ledger_order: Vec<(DeviceId, IpAddr)> = flows
            .iter()
            .map(|(k, _)| {
                let id = DeviceId {
                    mac: MacAddr(k.mac),
                    direction: Direction::from_kernel(k.direction).unwrap(),
                };
                (id, remote_address(k).unwrap())
            })
            .collect();
        let mut sorted = ledger_order.clone();
        sorted.sort();
        assert_eq!(ledger_order, sorted);
    }

    #[test]
    fn values_are_padded_to_eight_bytes_per_cpu() {
        assert_eq!(per_cpu_stride(16), 16);
        assert_eq!(per_cpu_stride(4), 8);
        assert_eq!(per_cpu_stride(12), 16);
        assert_eq!(per_cpu_stride(88), 88);
    }

    #[test]
    fn batches_shrink_with_many_cpus_to_bound_the_buffer() {
        assert_eq!(initial_batch_size(2), 4096);
        assert_eq!(initial_batch_size(0), 4096);
        // 1 MiB of values over 256 CPUs of 24-byte flow values.
        assert_eq!(initial_batch_size(256), 170);
        assert_eq!(initial_batch_size(8192), 64);
    }

    #[test]
    fn what_each_batch_result_leads_to() {
        use Next::*;
        let cases = [
            (None, 4096, Continue),
            (None, 10, Continue),
            (Some(libc::ENOENT), 17, Done),
            (Some(libc::ENOENT), 0, Done),
            (Some(libc::ENOSPC), 0, Grow(8192)),
            (Some(libc::ENOSPC), 3, Continue),
            (Some(libc::EINTR), 0, Retry),
            (Some(libc::EBUSY), 5, Retry),
            (Some(libc::EAGAIN), 0, Retry),
            (Some(libc::EINVAL), 0, Unsupported),
            (Some(libc::EOPNOTSUPP), 0, Unsupported),
            (Some(ENOTSUPP), 0, Unsupported),
            (Some(libc::EFAULT), 0, Fail),
            (Some(libc::EPERM), 0, Fail),
        ];
        for (errno, count, expected) in cases {
            assert_eq!(
                next_step(errno, count, 4096),
                expected,
                "errno {errno:?}, count {count}"
            );
        }
    }
}
