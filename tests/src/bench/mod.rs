//! `cargo xtask bench`: what counting costs, measured. Each part returns a report that prints
//! to the terminal and renders a section of `docs/benchmarks.md`.

pub mod kernel;
