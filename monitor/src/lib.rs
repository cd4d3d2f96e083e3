//! egress-monitor, the agent: loads the kernel programs, polls their maps into monotonic
//! per-device and per-destination totals, names devices and destinations, and serves them as
//! Prometheus metrics and a JSON API.

pub mod api;
pub mod app;
pub mod baseline;
pub mod cli;
pub mod collect;
pub mod config;
pub mod control;
pub mod device_totals;
pub mod devices;
pub mod fault;
pub mod hooks;
pub mod ledger;
pub mod loader;
pub mod mac;
pub mod metrics;
pub mod names;
pub mod naming;
pub mod neighbours;
pub mod netlink;
pub mod offload;
pub mod parsers;
pub mod policy;
pub mod poller;
pub mod prefixes;
pub mod reload;
pub mod server;
pub mod sniff;
pub mod state;
