//! `cargo xtask bench`: how egress-monitor measures up against the targets of its issue on the
//! machine it runs on. Each part lives in its own module, whose `run` returns a report that
//! prints as plain text or as markdown.
//!
//! * [`agent`]: the agent's own work with large maps, without packets: reading the kernel maps
//!   (key by key and in batches), a whole poll into the ledger, `/metrics` rendering, memory.

pub mod agent;
