//! egress-monitor, the agent: loads the kernel programs, polls their maps into monotonic
//! per-device and per-destination totals, and serves them as Prometheus metrics.

pub mod app;
pub mod cli;
pub mod config;
pub mod ledger;
pub mod loader;
pub mod mac;
pub mod metrics;
pub mod neighbours;
pub mod poller;
pub mod prefixes;
pub mod server;
pub mod state;
