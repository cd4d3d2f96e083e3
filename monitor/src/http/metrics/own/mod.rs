//! The agent's own measurements ([`SelfMetrics`]: poll duration, polls, poll errors) and the
//! process metrics, appended after the state families at each scrape.
//!
//! Two backends, one exposition. Where the target has 64-bit atomics (x86-64, aarch64, armv7,
//! s390x...) these are ordinary metrics of the `prometheus` client library, its
//! `ProcessCollector` included ([`client`]). 32-bit MIPS has no `AtomicU64`/`AtomicI64`, which
//! `prometheus` 0.14 uses in its counters, gauges and histograms, so it does not compile there;
//! there [`portable`] writes the same families (names, help, types, label order, value format)
//! with the text writer of the state families, its counters behind a mutex (a few updates per
//! poll: no contention to speak of) and the process metrics read from /proc as the client
//! library reads them. Why not portable-atomic in prometheus: that takes a fork of the crate
//! under `[patch]`, kept in step by hand; the metrics that need it here are three. The test
//! `both_backends_write_the_same_exposition` fails if the two drift apart.

#[cfg(target_has_atomic = "64")]
mod client;
#[cfg(any(test, not(target_has_atomic = "64")))]
mod portable;

#[cfg(target_has_atomic = "64")]
pub use client::{Registry, SelfMetrics, new};
#[cfg(not(target_has_atomic = "64"))]
pub use portable::{Registry, SelfMetrics, new};

/// The poll duration histogram.
const POLL_DURATION: &str = "egress_monitor_poll_duration_seconds";
const POLL_DURATION_HELP: &str = "Time to read the kernel maps and settle them into totals.";
const POLL_DURATION_BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const POLLS: &str = "egress_monitor_polls_total";
const POLLS_HELP: &str = "Polls of the kernel maps since the agent started.";
const POLL_ERRORS: &str = "egress_monitor_poll_errors_total";
const POLL_ERRORS_HELP: &str =
    "Polls that failed in a stage (read_maps, local_prefixes); the last good totals stay exported.";
/// The label of [`POLL_ERRORS`], and the stages exported from the start (at 0).
const POLL_ERRORS_LABEL: &str = "stage";
const POLL_ERROR_STAGES: [&str; 2] = ["read_maps", "local_prefixes"];

/// The agent's metrics could not be registered (a duplicate or invalid name: a bug).
#[derive(Debug, thiserror::Error)]
#[error("cannot register the agent's own metrics: {0}")]
pub struct MetricsError(String);

#[cfg(test)]
mod tests {
    use super::*;

    /// Both backends after the same updates; process values (which move between two reads)
    /// are masked, everything else must match byte for byte.
    #[test]
    fn both_backends_write_the_same_exposition() {
        let render = |registry: &dyn Fn(&mut String)| {
            let mut out = String::new();
            registry(&mut out);
            out
        };
        let (c_reg, c) = client::new().unwrap();
        let (p_reg, p) = portable::new().unwrap();
        for v in [0.0001, 0.0005, 0.003, 0.7, 2.5, 7.0] {
            c.poll_duration.observe(v);
            p.poll_duration.observe(v);
        }
        for _ in 0..3 {
            c.polls.inc();
            p.polls.inc();
        }
        c.poll_errors.with_label_values(&["read_maps"]).inc();
        p.poll_errors.with_label_values(&["read_maps"]).inc();
        // A stage that is not pre-registered sorts in among the others.
        c.poll_errors.with_label_values(&["other"]).inc();
        p.poll_errors.with_label_values(&["other"]).inc();
        let client_text = render(&|out| c_reg.render(out));
        let portable_text = render(&|out| p_reg.render(out));
        let mask = |text: &str| {
            text.lines()
                .map(|line| match line.split_once(' ') {
                    Some((name, _)) if name.starts_with("process_") => format!("{name} X"),
                    _ => line.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(mask(&portable_text), mask(&client_text));
        // Seven process families, each with HELP, TYPE and one sample.
        assert_eq!(
            client_text.matches("\nprocess_").count(),
            7,
            "{client_text}"
        );
        assert!(
            client_text.contains("egress_monitor_poll_duration_seconds_bucket{le=\"+Inf\"} 6\n")
        );
        // The process values agree too, where they cannot move between two reads.
        for stable in ["process_start_time_seconds", "process_max_fds"] {
            let value = |text: &str| {
                text.lines()
                    .find(|l| l.starts_with(&format!("{stable} ")))
                    .map(str::to_owned)
            };
            assert_eq!(value(&portable_text), value(&client_text));
        }
        // Cloned handles update the same metrics.
        p.clone().polls.inc();
        assert!(render(&|out| p_reg.render(out)).contains("egress_monitor_polls_total 4\n"));
    }
}
