//! Wiring: check, bind, load, attach, poll, serve, and detach on SIGINT or SIGTERM.

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock, mpsc},
};

use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::Config,
    loader::{self, LoadError, MapSizes},
    metrics::Metrics,
    poller::{self, PollerConfig},
    state::State,
};

/// Why the agent could not start or stopped with an error. One line each.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(
        "cannot listen on {addr}: the address is already in use (another egress-monitor, or another exporter on that port?)"
    )]
    PortInUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
}

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(config: Config) -> Result<(), RunError> {
    // Cheap checks first, so that a typo fails before anything touches the kernel.
    loader::check_interfaces(&config.lan)?;
    let listener = std::net::TcpListener::bind(config.listen).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            RunError::PortInUse {
                addr: config.listen,
            }
        } else {
            RunError::Listen {
                addr: config.listen,
                source,
            }
        }
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| RunError::Runtime(e.to_string()))?;
    let loaded = loader::load_and_attach(
        &config.lan,
        &MapSizes {
            flows: config.flow_map_entries,
            devices: config.device_map_entries,
            sniff_ring_bytes: config.sniff_ring_bytes,
        },
        config.attach,
    )?;
    for a in &loaded.attachments {
        tracing::info!(
            interface = a.interface,
            mode = a.mode.map_or("none", |m| m.as_str()),
            "attached"
        );
    }

    let shared = Arc::new(RwLock::new(State::new(&config)));
    let metrics =
        Arc::new(Metrics::new(shared.clone()).map_err(|e| RunError::Runtime(e.to_string()))?);
    let (stop_tx, stop_rx) = mpsc::channel();
    let poller_config = PollerConfig {
        interval: config.poll_interval,
        lan: config.lan.clone(),
        extra_local: config.local_prefixes.clone(),
        flow_capacity: config.flow_map_entries,
        device_capacity: config.device_map_entries,
        attach: config.attach,
    };
    let poller = {
        let shared = shared.clone();
        let self_metrics = metrics.self_metrics.clone();
        std::thread::Builder::new()
            .name("poller".into())
            .spawn(move || poller::run(loaded, poller_config, shared, self_metrics, stop_rx))
            .map_err(|e| RunError::Runtime(format!("cannot start the poller: {e}")))?
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| RunError::Runtime(e.to_string()))?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tracing::info!(listen = %config.listen, "serving /metrics");
        crate::server::serve(
            listener,
            metrics,
            shared,
            config.poll_interval,
            shutdown_signal(),
        )
        .await
    });
    // Stop the poller whatever happened to the server: it owns the links and detaches them.
    let _ = stop_tx.send(());
    let _ = poller.join();
    served.map_err(|e| RunError::Runtime(format!("HTTP server failed: {e}")))
}

/// Completes on SIGINT or SIGTERM. SIGHUP, whose default action would kill the agent (a
/// closed terminal, a careless `reload`), is logged and ignored.
async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => return tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => return tracing::info!("SIGINT: shutting down"),
            _ = hup.recv() => tracing::info!("SIGHUP ignored: the configuration is read at start"),
        }
    }
}
