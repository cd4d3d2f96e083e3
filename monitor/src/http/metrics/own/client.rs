//! The agent's own metrics as metrics of the `prometheus` client library (targets with 64-bit
//! atomics).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, TextEncoder};

use super::{
    MetricsError, POLL_DURATION, POLL_DURATION_BUCKETS, POLL_DURATION_HELP, POLL_ERROR_STAGES,
    POLL_ERRORS, POLL_ERRORS_HELP, POLL_ERRORS_LABEL, POLLS, POLLS_HELP,
};

/// Measurements of the agent itself, updated by the poller.
#[derive(Clone)]
pub struct SelfMetrics {
    pub poll_duration: Histogram,
    pub polls: IntCounter,
    pub poll_errors: IntCounterVec,
}

/// What a scrape writes of them.
pub struct Registry(prometheus::Registry);

impl Registry {
    /// Appends the families in the text format (sorted by name, as `gather` returns them).
    pub fn render(&self, out: &mut String) {
        TextEncoder::new()
            .encode_utf8(&self.0.gather(), out)
            .expect("encoding to memory cannot fail");
    }
}

pub fn new() -> Result<(Registry, SelfMetrics), MetricsError> {
    let error = |e: prometheus::Error| MetricsError(e.to_string());
    let registry = prometheus::Registry::new();
    let poll_duration = Histogram::with_opts(
        HistogramOpts::new(POLL_DURATION, POLL_DURATION_HELP)
            .buckets(POLL_DURATION_BUCKETS.to_vec()),
    )
    .map_err(error)?;
    let polls = IntCounter::new(POLLS, POLLS_HELP).map_err(error)?;
    let poll_errors = IntCounterVec::new(
        Opts::new(POLL_ERRORS, POLL_ERRORS_HELP),
        &[POLL_ERRORS_LABEL],
    )
    .map_err(error)?;
    for stage in POLL_ERROR_STAGES {
        poll_errors.with_label_values(&[stage]);
    }
    registry
        .register(Box::new(poll_duration.clone()))
        .map_err(error)?;
    registry.register(Box::new(polls.clone())).map_err(error)?;
    registry
        .register(Box::new(poll_errors.clone()))
        .map_err(error)?;
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .map_err(error)?;
    Ok((
        Registry(registry),
        SelfMetrics {
            poll_duration,
            polls,
            poll_errors,
        },
    ))
}
