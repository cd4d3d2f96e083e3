//! CPU time before and after a run: this process's, the variant's process's and the
//! `ksoftirqd` threads' (the lab's share), and the whole machine's from `/proc/stat`.

use std::time::Duration;

/// CPU time, taken before and after a run.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuSnapshot {
    /// This process + helpers + ksoftirqd, in ns.
    lab_ns: u64,
    /// The helpers alone, in ns.
    process_ns: u64,
    /// `/proc/stat`'s first line.
    machine: MachineTicks,
}

/// CPU time of the whole machine in clock ticks (`/proc/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MachineTicks {
    /// user + nice.
    user: u64,
    /// system + irq + softirq.
    kernel: u64,
}

/// The difference of two snapshots.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuUsed {
    pub(super) lab: Duration,
    pub(super) process: Duration,
    pub(super) machine_kernel: Duration,
    pub(super) machine_user: Duration,
}

impl CpuSnapshot {
    pub(super) fn take(helpers: &[u32], ksoftirqd: &[u32]) -> CpuSnapshot {
        let process_ns = helpers
            .iter()
            .map(|&pid| process_tasks_ns(pid))
            .sum::<u64>();
        let lab_ns =
            process_cpu_ns() + process_ns + ksoftirqd.iter().map(|&pid| task_ns(pid)).sum::<u64>();
        let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
        CpuSnapshot {
            lab_ns,
            process_ns,
            machine: parse_proc_stat(&stat).expect("/proc/stat has a `cpu` line"),
        }
    }

    pub(super) fn since(&self, before: &CpuSnapshot) -> CpuUsed {
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let ticks = |t: u64| Duration::from_nanos(t * 1_000_000_000 / hz);
        CpuUsed {
            lab: Duration::from_nanos(self.lab_ns.saturating_sub(before.lab_ns)),
            process: Duration::from_nanos(self.process_ns.saturating_sub(before.process_ns)),
            machine_kernel: ticks(self.machine.kernel.saturating_sub(before.machine.kernel)),
            machine_user: ticks(self.machine.user.saturating_sub(before.machine.user)),
        }
    }
}

/// The `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq ...
fn parse_proc_stat(text: &str) -> Option<MachineTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    (f.len() >= 7).then(|| MachineTicks {
        user: f[0] + f[1],
        kernel: f[2] + f[5] + f[6],
    })
}

/// This process's CPU time in ns, all threads, exited ones included.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec that outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time of every live thread of process `pid`, in ns (0 once it is gone).
fn process_tasks_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| parse_schedstat(&s))
        .sum()
}

/// CPU time of task `pid` in ns.
fn task_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| parse_schedstat(&s))
        .unwrap_or(0)
}

/// The first field of `/proc/<pid>/schedstat`: time spent on the CPU, in ns.
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The pids of the `ksoftirqd` threads, whose CPU time counts in the lab's share.
pub(super) fn ksoftirqd_pids() -> Vec<u32> {
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .collect()
}

/// `/proc/loadavg`'s 1-minute average, or `?`.
pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let text = "cpu  100 5 30 1000 7 2 11 4 0 0\ncpu0 50 2 15 500 3 1 5 2 0 0\n";
        assert_eq!(
            parse_proc_stat(text),
            Some(MachineTicks {
                user: 105,
                kernel: 43
            })
        );
        assert_eq!(parse_proc_stat("intr 1 2\n"), None);
        assert_eq!(parse_schedstat("123456 789 10\n"), Some(123_456));
    }
}
