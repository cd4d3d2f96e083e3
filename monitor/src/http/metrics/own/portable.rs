//! The agent's own metrics without the client library, for targets without 64-bit atomics
//! (32-bit MIPS), written as the client library writes them: families sorted by name, a
//! vector's series by label value, values in Rust's shortest `f64` form, the histogram's
//! buckets cumulative with `+Inf`, `_sum` and `_count`, and the seven families of its
//! `ProcessCollector` read from /proc the same way (integral seconds, pages times page size).

use std::{
    collections::BTreeMap,
    fs,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use super::{
    MetricsError, POLL_DURATION, POLL_DURATION_BUCKETS, POLL_DURATION_HELP, POLL_ERROR_STAGES,
    POLL_ERRORS, POLL_ERRORS_HELP, POLL_ERRORS_LABEL, POLLS, POLLS_HELP,
};
use crate::http::metrics::{write_family, write_sample};

/// A value only updated and read under its lock; a panic elsewhere cannot poison a number.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A counter of whole events.
#[derive(Clone, Default)]
pub struct IntCounter(Arc<Mutex<u64>>);

impl IntCounter {
    pub fn inc(&self) {
        *lock(&self.0) += 1;
    }

    fn get(&self) -> u64 {
        *lock(&self.0)
    }
}

/// Counters by the value of one label.
#[derive(Clone)]
pub struct IntCounterVec(Arc<Mutex<BTreeMap<String, IntCounter>>>);

impl IntCounterVec {
    /// The counter of `values[0]`, created at 0 the first time.
    pub fn with_label_values(&self, values: &[&str]) -> IntCounter {
        let [value] = values else {
            panic!("{POLL_ERRORS} has one label, given {values:?}");
        };
        lock(&self.0)
            .entry((*value).to_owned())
            .or_default()
            .clone()
    }
}

/// Observations in the buckets of [`POLL_DURATION_BUCKETS`] (each counted in the first bucket
/// whose bound it does not exceed), their sum and their number.
#[derive(Clone, Default)]
pub struct Histogram(Arc<Mutex<HistogramState>>);

#[derive(Default)]
struct HistogramState {
    /// Per bucket, not cumulative; one more for the observations above the last bound.
    counts: [u64; POLL_DURATION_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn observe(&self, value: f64) {
        let bucket = POLL_DURATION_BUCKETS
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(POLL_DURATION_BUCKETS.len());
        let mut state = lock(&self.0);
        state.counts[bucket] += 1;
        state.sum += value;
        state.count += 1;
    }
}

/// Measurements of the agent itself, updated by the poller.
#[derive(Clone)]
pub struct SelfMetrics {
    pub poll_duration: Histogram,
    pub polls: IntCounter,
    pub poll_errors: IntCounterVec,
}

/// What a scrape writes of them.
pub struct Registry {
    metrics: SelfMetrics,
    /// The process's start, in Unix seconds, read once (it does not change).
    start_time: Option<u64>,
}

pub fn new() -> Result<(Registry, SelfMetrics), MetricsError> {
    let metrics = SelfMetrics {
        poll_duration: Histogram::default(),
        polls: IntCounter::default(),
        poll_errors: IntCounterVec(Arc::default()),
    };
    for stage in POLL_ERROR_STAGES {
        metrics.poll_errors.with_label_values(&[stage]);
    }
    let start_time = ProcStat::read().and_then(|stat| {
        let boot = boot_time()?;
        Some(stat.starttime / clock_ticks()? + boot)
    });
    Ok((
        Registry {
            metrics: metrics.clone(),
            start_time,
        },
        metrics,
    ))
}

impl Registry {
    /// Appends the families in the text format, sorted by name.
    pub fn render(&self, out: &mut String) {
        let SelfMetrics {
            poll_duration,
            polls,
            poll_errors,
        } = &self.metrics;
        {
            let h = lock(&poll_duration.0);
            header(out, POLL_DURATION, POLL_DURATION_HELP, "histogram");
            let bucket = format!("{POLL_DURATION}_bucket");
            let mut cumulative = 0;
            for (bound, n) in POLL_DURATION_BUCKETS.iter().zip(h.counts) {
                cumulative += n;
                let le = bound.to_string();
                write_sample(out, &bucket, &[("le", &le)], cumulative as f64);
            }
            write_sample(out, &bucket, &[("le", "+Inf")], h.count as f64);
            write_sample(out, &format!("{POLL_DURATION}_sum"), &[], h.sum);
            write_sample(out, &format!("{POLL_DURATION}_count"), &[], h.count as f64);
        }
        write_family(out, POLL_ERRORS, POLL_ERRORS_HELP, "counter", |push| {
            for (value, counter) in lock(&poll_errors.0).iter() {
                push(&[(POLL_ERRORS_LABEL, value)], counter.get() as f64);
            }
        });
        header(out, POLLS, POLLS_HELP, "counter");
        write_sample(out, POLLS, &[], polls.get() as f64);
        self.render_process(out);
    }

    /// The families of the client library's `ProcessCollector`, in its order (by name).
    fn render_process(&self, out: &mut String) {
        // No /proc/self: no process families (as the client library does).
        let Ok(fds) = fs::read_dir("/proc/self/fd") else {
            return;
        };
        let open_fds = fds.count();
        let stat = ProcStat::read();
        if let (Some(stat), Some(ticks)) = (&stat, clock_ticks()) {
            header(
                out,
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                "counter",
            );
            let seconds = (stat.utime + stat.stime) / ticks;
            write_sample(out, "process_cpu_seconds_total", &[], seconds as f64);
        }
        let mut gauge = |name: &str, help: &str, value: f64| {
            header(out, name, help, "gauge");
            write_sample(out, name, &[], value);
        };
        gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            max_fds().unwrap_or(0) as f64,
        );
        gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            open_fds as f64,
        );
        let page = page_size().unwrap_or(0);
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            stat.as_ref().map_or(0, |s| s.rss * page) as f64,
        );
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            self.start_time.unwrap_or(0) as f64,
        );
        gauge(
            "process_threads",
            "Number of OS threads in the process.",
            stat.as_ref().map_or(0, |s| s.num_threads) as f64,
        );
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            stat.as_ref().map_or(0, |s| s.vsize) as f64,
        );
    }
}

/// `# HELP` and `# TYPE` of a family that always has samples.
fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {}", super::super::escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The fields of /proc/self/stat the process families use (proc(5)).
struct ProcStat {
    utime: u64,
    stime: u64,
    num_threads: u64,
    starttime: u64,
    vsize: u64,
    rss: u64,
}

impl ProcStat {
    fn read() -> Option<Self> {
        Self::parse(&fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// Fields after the command name, which is in parentheses and may hold any byte: the
    /// fields start after the last `)`, with field 3 (state).
    fn parse(text: &str) -> Option<Self> {
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            num_threads: field(20)?,
            starttime: field(22)?,
            vsize: field(23)?,
            // Signed in the kernel's output, never negative for a live process.
            rss: field(24)?,
        })
    }
}

/// `btime` of /proc/stat: the boot time in Unix seconds.
fn boot_time() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn clock_ticks() -> Option<u64> {
    // SAFETY: sysconf reads a constant of the C library; no memory of ours is involved.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&t| t > 0)
}

fn page_size() -> Option<u64> {
    // SAFETY: as above.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()
}

/// The soft limit on open files; None when unlimited (the client library then reports 0).
#[allow(
    clippy::useless_conversion,
    reason = "rlim_t is u64 on the host, not on every target"
)]
fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    u64::try_from(limit.rlim_cur).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_stat_fields_after_a_command_with_parentheses() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 7 0 \
                    123456 9000000 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0\n";
        let stat = ProcStat::parse(line).unwrap();
        assert_eq!((stat.utime, stat.stime), (250, 150));
        assert_eq!(stat.num_threads, 7);
        assert_eq!(stat.starttime, 123_456);
        assert_eq!((stat.vsize, stat.rss), (9_000_000, 300));
        assert!(ProcStat::parse("42 (x) S 1").is_none());
    }
}
