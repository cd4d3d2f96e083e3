//! `cargo xtask bench`: what counting costs, measured on the machine it runs on. Each part has
//! a `run` returning a report that prints as plain text and renders a section of
//! `docs/benchmarks.md`.
//!
//! * [`kernel`]: the programs per packet under BPF_PROG_TEST_RUN, beside an empty classifier.
//! * [`agent`]: the agent's own work with large maps, without packets: reading the kernel maps
//!   (key by key and in batches), a whole poll into the ledger, `/metrics` rendering, memory.
//! * [`e2e`]: the CPU a lab router spends per forwarded packet with egress-monitor and with the
//!   alternatives (tcpdump, an nftables dynamic set, conntrack accounting).
//! * [`alert`]: how long an alert takes, from the first unexpected packet to Alertmanager.

pub mod agent;
pub mod alert;
pub mod e2e;
pub mod kernel;
