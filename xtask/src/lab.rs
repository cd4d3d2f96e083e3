//! `cargo xtask lab`: the demo. Runs setup (which installs Prometheus and Alertmanager), builds
//! the agent, then hands over to `egress_lab::demo`, which creates the lab, starts the agent,
//! Prometheus and Alertmanager on its router, drives the devices and prints a table and each
//! alert (the camera phones home, against its policy), until Ctrl-C or `--duration`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};

use crate::{build, setup};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long to run before tearing the lab down, e.g. `90s` or `5m`; until Ctrl-C if not
    /// given.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// Loopback address of this machine where the agent's /metrics is relayed, for a browser
    /// or a Prometheus on this machine.
    #[arg(long, default_value = "127.0.0.1:10100")]
    pub listen: SocketAddr,

    /// How often to print the per-device table.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub every: Duration,
}

pub fn run(args: &Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    ensure!(
        euid == 0,
        "the lab needs root (network namespaces, eBPF); run `sudo -E cargo xtask lab`"
    );
    let toolchain = setup::run()?;
    let binary = build::build_agent(&toolchain, false)?;
    // The lab's agent harness finds the binary through this variable, as in the tests.
    // SAFETY: single-threaded here; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("EGRESS_MONITOR_BIN", &binary) };

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C handler")?;
    }
    egress_lab::demo::run(
        &egress_lab::demo::DemoOptions {
            listen: args.listen,
            duration: args.duration,
            table_every: args.every,
        },
        stop,
    )
    .context("the demo failed")
}
