//! The agent's side of the benchmark: its work with large maps, without any packet.
//!
//! For each flow count the real eBPF object is loaded (nothing attached), its flow map filled
//! through the map API with synthetic flows spread over [`DEVICES`] devices, and the device map
//! with their exact totals. Then, each a median of `repetitions`:
//!
//! * reading the maps key by key (`collect::read_per_key`, two syscalls per key) and in batches
//!   (`collect::read_batch`, `BPF_MAP_LOOKUP_BATCH`), which must return identical readings with
//!   exactly the flows written (so must a batch read that starts with room for one key and grows
//!   on `ENOSPC`);
//! * a whole poll as the poller does it: `collect::read` plus `Ledger::apply` with the naming
//!   labels, when every flow grew since the last poll (the worst case: every destination gets
//!   new bytes, every label is looked up) and when nothing changed;
//! * memory: the resident set (VmRSS) of this process before filling the map, after the polls
//!   (with the state for N flows alive) and its peak including one `/metrics` render of that
//!   state. This process is not the agent, but it holds what the agent would (the same state,
//!   the same transient readings and exposition), plus the test harness: its numbers are an upper
//!   bound of the agent's for the same work. The kernel map itself is kernel memory (memcg), not
//!   resident memory of any process; its size is shown separately.
//!
//! `/metrics` is measured on its own: a state whose exposition has about N samples, rendered
//! through `Metrics::render` as the server does.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd},
    time::{Duration, Instant, SystemTime},
};

mod report;

use aya::maps::{IterableMap, PerCpuValues};
use monitor::{
    config::{Config, Overrides},
    http::metrics::Metrics,
    kernel::{
        counters::{self as collect, Collected, CounterMaps},
        device_totals::DeviceTotals,
        loader::{self, MapSizes},
    },
    ledger::Reading,
    runtime::state::State,
    snapshot::{Published, Snapshot},
    types::{Count, DeviceId, Direction, MacAddr},
};
use monitor_common::{
    Counters, DIRECTION_EGRESS, DIRECTION_INGRESS, DeviceKey, FAMILY_V4, FAMILY_V6, FlowKey,
    FlowValue,
};

/// Devices the synthetic flows are spread over (each in both directions).
pub const DEVICES: usize = 500;

/// The targets, on a 2-core machine.
pub const TARGET_FLOWS: usize = 100_000;
/// A whole poll of [`TARGET_FLOWS`] flows.
pub const TARGET_POLL: Duration = Duration::from_millis(50);
/// Samples in `/metrics` for [`TARGET_RENDER`].
pub const TARGET_SERIES: usize = 100_000;
/// Rendering `/metrics` with [`TARGET_SERIES`] samples.
pub const TARGET_RENDER: Duration = Duration::from_millis(100);
/// Resident memory with [`TARGET_FLOWS`] flows.
pub const TARGET_RSS: u64 = 64 << 20;

/// What to measure.
#[derive(Clone, Debug)]
pub struct AgentBenchOptions {
    /// Entries in the flow map, one table row each.
    pub flow_counts: Vec<usize>,
    /// Samples in the `/metrics` exposition, one table row each.
    pub series_counts: Vec<usize>,
    /// Timed runs per measurement; the median is reported.
    pub repetitions: usize,
}

impl AgentBenchOptions {
    /// Every size the targets need, and one beyond.
    pub fn full() -> Self {
        Self {
            flow_counts: vec![1_000, 10_000, 100_000, 1_000_000],
            series_counts: vec![10_000, 100_000],
            repetitions: 5,
        }
    }

    /// A run of seconds that exercises every path.
    pub fn quick() -> Self {
        Self {
            flow_counts: vec![1_000],
            series_counts: vec![1_000],
            repetitions: 3,
        }
    }
}

/// Measurements at one flow count.
#[derive(Clone, Debug)]
pub struct PollRow {
    pub flows: usize,
    /// Reading flows, devices and statistics one key at a time.
    pub per_key: Duration,
    /// The same with `BPF_MAP_LOOKUP_BATCH`.
    pub batch: Duration,
    /// The first poll of an empty ledger: every flow is new to it.
    pub first_poll: Duration,
    /// A whole poll (read and settle) when every flow grew since the last one.
    pub poll_all_grew: Duration,
    /// A whole poll when nothing changed.
    pub poll_idle: Duration,
    /// [`PollRow::poll_all_grew`] with `[enrich]` on: every exported step placed in a country
    /// and an AS (through the cache, with the default `cache_entries`).
    pub poll_all_grew_enriched: Duration,
    /// [`PollRow::poll_idle`] with enrichment on.
    pub poll_idle_enriched: Duration,
    /// Bytes the two databases hold in memory.
    pub enrich_db_bytes: u64,
    /// Resident memory the enriched state added over the plain one (databases, cache, places).
    pub enrich_rss_growth: u64,
    /// Resident memory before the map was filled.
    pub rss_before: u64,
    /// Resident memory after the polls, with the state for all flows alive.
    pub rss_after: u64,
    /// Peak resident memory from before filling to after one `/metrics` render of the state.
    pub rss_peak: u64,
    /// Samples in that `/metrics` render.
    pub scrape_samples: usize,
    /// Kernel memory of the flow map (`memlock` in its fdinfo).
    pub map_kernel_bytes: u64,
}

/// Measurements at one exposition size.
#[derive(Clone, Debug)]
pub struct RenderRow {
    /// Samples asked for.
    pub series: usize,
    /// Samples in the body (lines that are not comments).
    pub samples: usize,
    pub render: Duration,
    pub body_bytes: usize,
    /// Peak resident memory during the renders, above what it was before them.
    pub rss_peak_growth: u64,
}

/// Everything measured, with what it ran on.
#[derive(Clone, Debug)]
pub struct AgentReport {
    pub polls: Vec<PollRow>,
    pub renders: Vec<RenderRow>,
    pub repetitions: usize,
    /// Possible CPUs (the size of per-CPU values) and online CPUs.
    pub cpus: (usize, usize),
    pub kernel: String,
    /// "release" or "debug": debug numbers say nothing about the targets.
    pub profile: &'static str,
}

/// Runs the benchmark; panics with a message saying what failed.
pub fn run(o: &AgentBenchOptions) -> AgentReport {
    crate::require_root("the agent benchmark (loading eBPF maps)");
    assert!(o.repetitions > 0, "repetitions must be at least 1");
    raise_memlock_limit();
    let cpus = aya::util::nr_cpus().unwrap_or_else(|(path, e)| panic!("reading {path}: {e}"));
    let online = aya::util::online_cpus().map_or(0, |c| c.len());
    let mut counts = o.flow_counts.clone();
    counts.sort_unstable();
    let polls = counts
        .iter()
        .map(|&n| bench_flows(n, o.repetitions, cpus))
        .collect();
    let mut series = o.series_counts.clone();
    series.sort_unstable();
    let renders = series
        .iter()
        .map(|&n| bench_render(n, o.repetitions))
        .collect();
    AgentReport {
        polls,
        renders,
        repetitions: o.repetitions,
        cpus: (cpus, online),
        kernel: kernel_release(),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    }
}

/// The configuration of an agent with defaults everywhere.
fn default_config() -> Config {
    // Every flow its own series: the bench measures the work of N flows, not the bound.
    Config::from_toml_str(
        "lan = [\"br-lan\"]\nmax_series = 16777216",
        None,
        &Overrides::default(),
    )
    .expect("the default configuration parses")
}

/// Synthetic flow `i`: device `i % DEVICES`, both directions, a distinct remote address (one in
/// four IPv6).
fn flow_key(i: usize) -> FlowKey {
    let device = i % DEVICES;
    let direction = if (i / DEVICES).is_multiple_of(2) {
        DIRECTION_EGRESS
    } else {
        DIRECTION_INGRESS
    };
    let mut addr = [0u8; 16];
    let family = if i % 4 == 3 {
        addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16).octets();
        FAMILY_V6
    } else {
        let v4 = Ipv4Addr::from(0x0b00_0000u32 + i as u32);
        addr[..4].copy_from_slice(&v4.octets());
        FAMILY_V4
    };
    FlowKey {
        mac: device_mac(device),
        direction,
        family,
        addr,
    }
}

fn device_mac(device: usize) -> [u8; 6] {
    [0x00, 0x16, 0x3e, 0x01, (device >> 8) as u8, device as u8]
}

/// Index of a flow's (device, direction) in the device totals.
fn device_slot(key: &FlowKey) -> usize {
    let device = (usize::from(key.mac[4]) << 8) | usize::from(key.mac[5]);
    device * 2 + usize::from(key.direction)
}

/// What flow `i` holds on `cpu` after `generation` rounds of growth.
fn flow_value(i: usize, cpu: usize, generation: u64) -> FlowValue {
    let i = i as u64;
    FlowValue {
        bytes: generation * (1_000 + i % 997 + cpu as u64),
        packets: generation * (1 + i % 7),
        device_slot: 0,
        pad: 0,
    }
}

/// The loaded object and its maps; nothing attached, so only this process writes them.
struct Kernel {
    _ebpf: aya::Ebpf,
    flows: collect::Flows,
    devices: DeviceTotals,
    stats: collect::Stats,
    capacity: u32,
    cpus: usize,
}

impl Kernel {
    fn load(flows: usize, cpus: usize) -> Self {
        // An LRU map starts evicting before it is full (free entries are handed to CPUs in
        // batches), so leave room: the benchmark must read exactly the flows it wrote.
        let capacity = u32::try_from(flows + flows / 8 + 1_024).expect("flow count fits in u32");
        let mut ebpf = loader::load(&MapSizes {
            flows: capacity,
            devices: monitor_common::DEFAULT_DEVICE_ENTRIES,
            sniff_ring_bytes: monitor_common::DEFAULT_SNIFF_RING_BYTES,
        })
        .unwrap_or_else(|e| panic!("loading the eBPF object with {capacity} flow entries: {e}"));
        let maps = loader::take_maps(&mut ebpf).unwrap_or_else(|e| panic!("taking the maps: {e}"));
        let devices = DeviceTotals::new(
            maps.devices,
            maps.device_slots,
            maps.device_totals,
            monitor_common::DEFAULT_DEVICE_ENTRIES,
        );
        Self {
            _ebpf: ebpf,
            flows: maps.flows,
            devices,
            stats: maps.stats,
            capacity,
            cpus,
        }
    }

    fn counter_maps(&self) -> CounterMaps<'_> {
        CounterMaps {
            flows: &self.flows,
            devices: &self.devices,
            stats: &self.stats,
        }
    }

    /// Writes flows `0..n` at `generation` and the devices' exact totals; returns the sum of
    /// all flows. The first generation creates the entries, later ones update them in place.
    fn fill(&mut self, n: usize, generation: u64) -> Count {
        // Only in place: an LRU map's update of any other kind may evict to make room first.
        let flags = if generation == 1 { 0 } else { BPF_EXIST };
        let mut devices = vec![Count::default(); DEVICES * 2];
        let mut total = Count::default();
        on_one_cpu(|| {
            for i in 0..n {
                let key = flow_key(i);
                let values: Vec<FlowValue> = (0..self.cpus)
                    .map(|cpu| flow_value(i, cpu, generation))
                    .collect();
                let sum = values.iter().fold(Count::default(), |s, c| {
                    Count::new(s.bytes + c.bytes, s.packets + c.packets)
                });
                let slot = &mut devices[device_slot(&key)];
                *slot = Count::new(slot.bytes + sum.bytes, slot.packets + sum.packets);
                total = Count::new(total.bytes + sum.bytes, total.packets + sum.packets);
                let values = PerCpuValues::try_from(values).expect("one value per CPU");
                self.flows
                    .insert(key, values, flags)
                    .unwrap_or_else(|e| panic!("writing flow {i} of {n}: {e}"));
            }
        });
        for (slot, count) in devices.iter().enumerate() {
            if *count == Count::default() {
                continue;
            }
            let key = DeviceKey {
                mac: device_mac(slot / 2),
                direction: (slot % 2) as u8,
                pad: 0,
            };
            let mut values = vec![Counters::default(); self.cpus];
            values[0] = Counters {
                bytes: count.bytes,
                packets: count.packets,
            };
            let values = PerCpuValues::try_from(values).expect("one value per CPU");
            self.devices
                .hash_mut()
                .insert(key, values, 0)
                .unwrap_or_else(|e| panic!("writing device total {slot}: {e}"));
        }
        total
    }

    /// Kernel memory the flow map takes, from its fdinfo.
    fn flow_map_bytes(&self) -> u64 {
        let fd = IterableMap::map(&self.flows).fd().as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// `BPF_EXIST`: update only an existing entry.
const BPF_EXIST: u64 = 2;

/// Runs `f` `repetitions` times; the median of the times it returns.
fn median_of(repetitions: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..repetitions).map(|_| f()).collect();
    times.sort_unstable();
    times[times.len() / 2]
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

/// A poll as the poller does it: read, settle into the ledger with the names of now, and
/// publish the snapshot scrapes read.
fn poll(
    maps: &CounterMaps<'_>,
    capacity: u32,
    state: &mut State,
    published: &Published,
) -> Duration {
    timed(|| {
        let Collected {
            reading,
            kernel,
            flow_entries,
            device_entries,
            ..
        } = collect::read(maps, capacity).unwrap_or_else(|e| panic!("reading the maps: {e}"));
        let now = SystemTime::now();
        state.settle(&reading, kernel, now);
        state.agent.flows.entries = flow_entries;
        state.agent.devices.entries = device_entries;
        let snapshot = state.snapshot(&published.latest(), now);
        published.publish(snapshot);
    })
    .0
}

fn bench_flows(n: usize, repetitions: usize, cpus: usize) -> PollRow {
    trim_heap();
    let rss_before = rss().0;
    let mut kernel = Kernel::load(n, cpus);
    let capacity = kernel.capacity;
    let mut generation = 1;
    let expected = kernel.fill(n, generation);

    // The two ways of reading must agree with each other and with what was written.
    {
        let maps = kernel.counter_maps();
        let per_key = collect::read_per_key(&maps, capacity)
            .unwrap_or_else(|e| panic!("reading {n} flows key by key: {e}"));
        let batch = collect::read_batch(&maps, capacity)
            .unwrap_or_else(|e| panic!("reading {n} flows in batches: {e}"));
        // Room for one key at first: the kernel answers ENOSPC at every bucket holding more.
        let growing = collect::read_batch_sized(&maps, capacity, Some(1))
            .unwrap_or_else(|e| panic!("reading {n} flows in batches from one key: {e}"));
        check_reading(n, expected, &per_key, "key by key");
        check_reading(n, expected, &batch, "in batches");
        check_reading(n, expected, &growing, "in batches grown from one key");
        let per_key = sorted(&per_key.reading);
        assert!(
            per_key == sorted(&batch.reading),
            "{n} flows: the batch read and the key-by-key read differ"
        );
        assert!(
            per_key == sorted(&growing.reading),
            "{n} flows: the batch read grown from one key and the key-by-key read differ"
        );
    }
    // From here on, the peak is what the agent's own work takes.
    trim_heap();
    reset_peak_rss();

    let maps = kernel.counter_maps();
    let time_read =
        |read: fn(&CounterMaps<'_>, u32) -> Result<Collected, collect::CollectError>| {
            median_of(repetitions, || {
                timed(|| read(&maps, capacity).unwrap_or_else(|e| panic!("reading {n} flows: {e}")))
                    .0
            })
        };
    let per_key = time_read(collect::read_per_key);
    let batch = time_read(collect::read_batch);

    let mut state = State::new(&default_config());
    let published = Published::default();
    let first_poll = poll(&maps, capacity, &mut state, &published);
    // The device totals read now settle at the next poll: after it, every flow is exported.
    poll(&maps, capacity, &mut state, &published);
    let mut grew = Vec::with_capacity(repetitions);
    for _ in 0..repetitions {
        generation += 1;
        kernel.fill(n, generation);
        grew.push(poll(
            &kernel.counter_maps(),
            capacity,
            &mut state,
            &published,
        ));
    }
    let poll_all_grew = median_of(repetitions, || grew.pop().expect("one per repetition"));
    let maps = kernel.counter_maps();
    // Settles the last growth; after that nothing changes.
    poll(&maps, capacity, &mut state, &published);
    let poll_idle = median_of(repetitions, || {
        poll(&maps, capacity, &mut state, &published)
    });
    check_settled(n, generation, cpus, &state);

    let rss_after = rss().0;
    let metrics = Metrics::new(published.clone()).expect("registering the metrics");
    let body = metrics.render();
    let scrape_samples = count_samples(&body);
    drop(body);
    let rss_peak = rss().1;
    // The same with enrichment on, the plain state gone first.
    drop(metrics);
    drop(state);
    drop(published);
    trim_heap();
    let enriched = bench_enriched(n, repetitions, &mut kernel, &mut generation, cpus);
    PollRow {
        flows: n,
        per_key,
        batch,
        first_poll,
        poll_all_grew,
        poll_idle,
        poll_all_grew_enriched: enriched.all_grew,
        poll_idle_enriched: enriched.idle,
        enrich_db_bytes: enriched.db_bytes,
        enrich_rss_growth: enriched.rss_growth,
        rss_before,
        rss_after,
        rss_peak,
        scrape_samples,
        map_kernel_bytes: kernel.flow_map_bytes(),
    }
}

/// What [`bench_enriched`] measured.
struct Enriched {
    all_grew: Duration,
    idle: Duration,
    db_bytes: u64,
    rss_growth: u64,
}

/// Networks in each synthetic database: /24s over the synthetic IPv4 flows' addresses (one in
/// three left out, so some are `unknown`) and /112s over the IPv6 ones, in 40 countries and
/// 2,000 ASes.
fn synthetic_databases(
    n: usize,
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf) {
    use crate::mmdb::{Network, geolite2_asn, geolite2_country};
    const COUNTRIES: [&str; 40] = [
        "DE", "FR", "NL", "GB", "US", "CN", "JP", "KR", "IN", "BR", "RU", "SG", "HK", "TW", "AU",
        "CA", "SE", "NO", "FI", "DK", "PL", "CZ", "AT", "CH", "IT", "ES", "PT", "IE", "BE", "LU",
        "IL", "TR", "ZA", "MX", "AR", "CL", "VN", "TH", "ID", "MY",
    ];
    let mut countries: Vec<(Network, &str)> = Vec::new();
    let mut ases: Vec<(Network, u32, String)> = Vec::new();
    for block in 0..n.div_ceil(256) as u32 {
        if block % 3 == 2 {
            continue;
        }
        let net = Network::new(Ipv4Addr::from(0x0b00_0000u32 + (block << 8)).into(), 24);
        countries.push((net, COUNTRIES[block as usize % COUNTRIES.len()]));
        ases.push((
            net,
            64_512 + block % 2000,
            format!("Synthetic Hosting {}", block % 2000),
        ));
    }
    for block in 0..(n >> 16) as u16 + 1 {
        let net = Network::new(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, block, 0).into(),
            112,
        );
        countries.push((net, "NL"));
        ases.push((net, 65_000, "Synthetic Six BV".to_owned()));
    }
    let (country_db, asn_db) = (dir.join("country.mmdb"), dir.join("asn.mmdb"));
    geolite2_country(&countries)
        .write(&country_db)
        .unwrap_or_else(|e| panic!("writing {}: {e}", country_db.display()));
    let ases: Vec<(Network, u32, &str)> =
        ases.iter().map(|(n, a, o)| (*n, *a, o.as_str())).collect();
    geolite2_asn(&ases)
        .write(&asn_db)
        .unwrap_or_else(|e| panic!("writing {}: {e}", asn_db.display()));
    (country_db, asn_db)
}

/// The polls of [`bench_flows`] again with `[enrich]` on, the same flows growing the same way.
fn bench_enriched(
    n: usize,
    repetitions: usize,
    kernel: &mut Kernel,
    generation: &mut u64,
    cpus: usize,
) -> Enriched {
    let dir = std::env::temp_dir().join(format!("egress-bench-enrich-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let (country_db, asn_db) = synthetic_databases(n, &dir);
    let config = Config::from_toml_str(
        &format!(
            "lan = [\"br-lan\"]\nmax_series = 16777216\n[enrich]\ncountry_db = \"{}\"\nasn_db = \"{}\"\n",
            country_db.display(),
            asn_db.display()
        ),
        None,
        &Overrides::default(),
    )
    .expect("the enriched configuration parses");
    let rss_before = rss().0;
    let mut files = monitor::enrich::DatabaseFiles::new(&config.enrich);
    let check = files.check();
    assert!(
        check.errors.is_empty() && check.opened.len() == 2,
        "the synthetic databases open: {:?}",
        check.errors
    );
    let databases = files.databases();
    let db_bytes = databases.memory_bytes();
    let mut state = State::new(&config);
    state.places.enricher.replace(databases);
    let published = Published::default();
    let capacity = kernel.capacity;
    for _ in 0..2 {
        poll(&kernel.counter_maps(), capacity, &mut state, &published);
    }
    let mut grew = Vec::with_capacity(repetitions);
    for _ in 0..repetitions {
        *generation += 1;
        kernel.fill(n, *generation);
        grew.push(poll(
            &kernel.counter_maps(),
            capacity,
            &mut state,
            &published,
        ));
    }
    let all_grew = median_of(repetitions, || grew.pop().expect("one per repetition"));
    let maps = kernel.counter_maps();
    poll(&maps, capacity, &mut state, &published);
    let idle = median_of(repetitions, || {
        poll(&maps, capacity, &mut state, &published)
    });
    check_settled(n, *generation, cpus, &state);
    let rss_growth = rss().0.saturating_sub(rss_before);
    drop(state);
    let _ = std::fs::remove_dir_all(&dir);
    Enriched {
        all_grew,
        idle,
        db_bytes,
        rss_growth,
    }
}

/// Fails unless a reading holds exactly the `n` flows written, with their exact sums.
fn check_reading(n: usize, expected: Count, c: &Collected, how: &str) {
    assert_eq!(
        c.flow_entries, n as u64,
        "{n} flows written, {} read {how}: the map evicted some or the read missed some",
        c.flow_entries
    );
    assert_eq!(c.reading.flows.len(), n, "{n} flows written, read {how}");
    let sum = c
        .reading
        .flows
        .iter()
        .fold(Count::default(), |s, (_, _, c)| {
            Count::new(s.bytes + c.bytes, s.packets + c.packets)
        });
    assert_eq!(sum, expected, "the sum of {n} flows read {how}");
    let devices = n.min(DEVICES * 2);
    assert_eq!(
        c.device_entries, devices as u64,
        "device totals read {how} for {n} flows"
    );
}

/// Fails unless the ledger exported every byte written: the polls lost nothing.
fn check_settled(n: usize, generation: u64, cpus: usize, state: &State) {
    let written = (0..n).fold(Count::default(), |s, i| {
        (0..cpus).fold(s, |s, cpu| {
            let v = flow_value(i, cpu, generation);
            Count::new(s.bytes + v.bytes, s.packets + v.packets)
        })
    });
    let (mut exported, mut unattributed) = (Count::default(), Count::default());
    for (_, device) in state.ledger.devices() {
        for (_, d) in device.destinations() {
            exported = Count::new(
                exported.bytes + d.count.bytes,
                exported.packets + d.count.packets,
            );
        }
        let u = device.unattributed();
        unattributed = Count::new(
            unattributed.bytes + u.bytes,
            unattributed.packets + u.packets,
        );
    }
    assert_eq!(
        exported, written,
        "{n} flows: the ledger exported other totals than were written (unattributed {unattributed:?})"
    );
}

fn sorted(reading: &Reading) -> Vec<(DeviceId, IpAddr, Count)> {
    let mut flows = reading.flows.clone();
    flows.sort_unstable_by_key(|(device, addr, _)| (*device, *addr));
    flows
}

/// Samples in an exposition: every line that is not a comment.
fn count_samples(body: &str) -> usize {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// A state whose `/metrics` has about `series` samples: address destinations spread over
/// devices in both directions, two samples each (bytes, packets), besides each device's own.
fn state_with_series(series: usize) -> State {
    let macs = (series / 200).clamp(1, DEVICES);
    let ids: Vec<DeviceId> = (0..macs)
        .flat_map(|d| {
            Direction::ALL.map(|direction| DeviceId {
                mac: MacAddr(device_mac(d)),
                direction,
            })
        })
        .collect();
    // Per device and direction: bytes, packets, and unattributed bytes and packets; per MAC
    // an info series; and about 40 series of the agent itself.
    let overhead = ids.len() * 4 + macs + 40;
    let destinations = series.saturating_sub(overhead) / 2;
    let mut reading = Reading::default();
    let mut totals = vec![Count::default(); ids.len()];
    for i in 0..destinations {
        let slot = i % ids.len();
        let addr = IpAddr::V4(Ipv4Addr::from(0x0b00_0000u32 + i as u32));
        let count = Count::new(1_000 + i as u64 % 997, 1 + i as u64 % 7);
        reading.flows.push((ids[slot], addr, count));
        totals[slot] = Count::new(
            totals[slot].bytes + count.bytes,
            totals[slot].packets + count.packets,
        );
    }
    reading.devices = ids.iter().copied().zip(totals).collect();
    let mut state = State::new(&default_config());
    let now = SystemTime::now();
    for _ in 0..2 {
        let State { ledger, naming, .. } = &mut state;
        ledger.apply(&reading, now, &mut |mac, addr| naming.label(mac, addr, now));
    }
    state
}

fn bench_render(series: usize, repetitions: usize) -> RenderRow {
    trim_heap();
    let published = Published::default();
    published.publish(state_with_series(series).snapshot(&Snapshot::default(), SystemTime::now()));
    let metrics = Metrics::new(published).expect("registering the metrics");
    let (samples, body_bytes) = {
        let body = metrics.render();
        (count_samples(&body), body.len())
    };
    trim_heap();
    reset_peak_rss();
    let before = rss().0;
    let render = median_of(repetitions, || {
        let (t, body) = timed(|| metrics.render());
        drop(body);
        t
    });
    RenderRow {
        series,
        samples,
        render,
        body_bytes,
        rss_peak_growth: rss().1.saturating_sub(before),
    }
}

/// Runs `f` pinned to the CPU this thread is on, then restores its affinity: filling an LRU
/// map from one CPU keeps its free entries on that CPU, so none are evicted early.
fn on_one_cpu<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: cpu_set_t is plain data; sched_{get,set}affinity(0, ..) act on this thread.
    unsafe {
        let mut saved: libc::cpu_set_t = std::mem::zeroed();
        let size = size_of::<libc::cpu_set_t>();
        let have_saved = libc::sched_getaffinity(0, size, &mut saved) == 0;
        let cpu = libc::sched_getcpu();
        if have_saved && cpu >= 0 {
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            libc::sched_setaffinity(0, size, &one);
        }
        let out = f();
        if have_saved {
            libc::sched_setaffinity(0, size, &saved);
        }
        out
    }
}

/// Kernels before 5.11 charge map memory to RLIMIT_MEMLOCK; a million entries need more than
/// the usual 8 MiB.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit; failure leaves the limit as it was (6.x does not use it).
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// Returns freed heap memory to the kernel, so a measurement does not start with what the
/// previous one left in the allocator.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resets VmHWM (peak RSS) to the current RSS.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// (VmRSS, VmHWM) of this process in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::{report::count, *};

    #[test]
    fn synthetic_flows_are_distinct_and_spread_over_devices() {
        let keys: HashSet<FlowKey> = (0..20_000).map(flow_key).collect();
        assert_eq!(keys.len(), 20_000);
        let slots: HashSet<usize> = keys.iter().map(device_slot).collect();
        assert_eq!(slots.len(), DEVICES * 2);
    }

    #[test]
    fn counts_print_short() {
        assert_eq!(count(1_000_000), "1M");
        assert_eq!(count(100_000), "100k");
        assert_eq!(count(1_500), "1500");
    }
}
