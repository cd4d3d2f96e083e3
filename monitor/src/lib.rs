//! egress-monitor, the agent: loads the kernel programs, polls their maps into monotonic
//! per-device and per-destination totals, names devices and destinations, and serves them as
//! Prometheus metrics and a JSON API. `ARCHITECTURE.md` at the top of the repository walks the
//! path from a packet to a `/metrics` line.

pub mod cli;
pub mod config;
pub mod enrich;
pub mod http;
pub mod kernel;
pub mod ledger;
pub mod naming;
pub mod parsers;
pub mod persist;
pub mod policy;
pub mod regular_file;
pub mod runtime;
pub mod snapshot;
pub mod types;
