//! Wiring: check, bind, load, attach, poll, serve, and detach on SIGINT or SIGTERM.

pub mod fault;
pub mod poller;
pub mod reload;
pub mod state;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
};

use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::{Config, Overrides},
    http::metrics::Metrics,
    kernel::loader::{self, LoadError, MapSizes},
    persist::baseline,
    persist::state_file as store,
    policy::Policy,
    runtime::poller::PollerConfig,
    runtime::reload::Reloader,
    runtime::state::State,
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
    #[error(transparent)]
    State(#[from] store::StoreError),
    #[error(
        "another egress-monitor uses the state directory {}: one agent per state directory (set state_dir or --state-dir)",
        .0.display()
    )]
    StateDirInUse(PathBuf),
    #[error("cannot use the state directory {}: {source}", dir.display())]
    StateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
    #[error("the {thread} thread panicked: {message}")]
    Panicked {
        thread: &'static str,
        message: String,
    },
}

/// A thread that died by panicking, and what it said.
#[derive(Debug)]
pub struct ThreadPanic {
    pub thread: &'static str,
    pub message: String,
}

impl From<ThreadPanic> for RunError {
    fn from(p: ThreadPanic) -> Self {
        RunError::Panicked {
            thread: p.thread,
            message: p.message,
        }
    }
}

/// Runs the agent until SIGINT or SIGTERM. `config_path` and `overrides` are read again on
/// SIGHUP or when the file changes.
pub fn run(
    config: Config,
    config_path: Option<PathBuf>,
    overrides: Overrides,
) -> Result<(), RunError> {
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
    let local = crate::kernel::prefixes::wanted(&config.lan, &config.local_prefixes)
        .map_err(|e| RunError::Runtime(format!("cannot list the interfaces' addresses: {e}")))?;
    let loaded = loader::load_and_attach(
        &config.lan,
        &MapSizes {
            flows: config.flow_map_entries,
            devices: config.device_map_entries,
            sniff_ring_bytes: config.sniff_ring_bytes,
        },
        config.attach,
        &local,
    )?;
    for a in loaded.hooks.attachments() {
        tracing::info!(
            interface = a.interface,
            lan = a.lan,
            mode = a.mode.map_or("none", |m| m.as_str()),
            "attached"
        );
    }

    let state_dir_error = |source| RunError::StateDir {
        dir: config.state_dir.clone(),
        source,
    };
    // Held until the agent exits: one agent per state directory, and `baseline` commands know
    // to ask it rather than edit the file.
    let _state_lock = baseline::try_lock(&config.state_dir)
        .map_err(state_dir_error)?
        .ok_or_else(|| RunError::StateDirInUse(config.state_dir.clone()))?;
    let records = store::load(&config.state_dir)?;
    tracing::info!(
        dir = %config.state_dir.display(),
        devices = records.len(),
        "state read"
    );
    let mut state = State::new(&config);
    state.policy = Policy::new(config.policy.clone(), records);
    let shared = Arc::new(RwLock::new(state));
    let _control = crate::persist::control::serve(&config.state_dir, shared.clone())
        .map_err(state_dir_error)?;
    let reload_requested = Arc::new(AtomicBool::new(false));
    let metrics =
        Arc::new(Metrics::new(shared.clone()).map_err(|e| RunError::Runtime(e.to_string()))?);
    let (stop_tx, stop_rx) = mpsc::channel();
    let poller_config = PollerConfig {
        interval: config.poll_interval,
        lan: config.lan.clone(),
        extra_local: config.local_prefixes.clone(),
        flow_capacity: config.flow_map_entries,
        device_capacity: config.device_map_entries,
        reloader: Reloader::new(
            config_path,
            overrides,
            config.clone(),
            reload_requested.clone(),
        ),
        state_dir: config.state_dir.clone(),
    };
    // Wakes the server when the poller ends for any reason, panics included.
    let poller_ended = Arc::new(tokio::sync::Notify::new());
    let poller = {
        let shared = shared.clone();
        let self_metrics = metrics.self_metrics.clone();
        let on_exit = OnExit(poller_ended.clone());
        std::thread::Builder::new()
            .name("poller".into())
            .spawn(move || {
                let _on_exit = on_exit;
                poller::run(loaded, poller_config, shared, self_metrics, stop_rx)
            })
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
        let stop = async move {
            tokio::select! {
                () = shutdown_signal(reload_requested) => {}
                () = poller_ended.notified() => {
                    tracing::error!("the poller stopped: shutting down");
                }
            }
        };
        crate::http::server::serve(listener, metrics, shared, config.poll_interval, stop).await
    });
    // Blocking renders still running are not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    // Stop the poller whatever happened to the server: it owns the links and detaches them.
    let _ = stop_tx.send(());
    let polled = match poller.join() {
        Ok(result) => result.map_err(RunError::from),
        Err(payload) => Err(RunError::Panicked {
            thread: "poller",
            message: panic_message(payload.as_ref()),
        }),
    };
    polled?;
    served.map_err(|e| RunError::Runtime(format!("HTTP server failed: {e}")))
}

/// Notifies when dropped: at the end of the thread that owns it, also when it unwinds.
struct OnExit(Arc<tokio::sync::Notify>);

impl Drop for OnExit {
    fn drop(&mut self) {
        // A stored permit: the server may not be waiting yet.
        self.0.notify_one();
    }
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Completes on SIGINT or SIGTERM. SIGHUP asks the poller to read the configuration again.
async fn shutdown_signal(reload: Arc<AtomicBool>) {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => return tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => return tracing::info!("SIGINT: shutting down"),
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reading the configuration again at the next poll");
                reload.store(true, Ordering::Relaxed);
            }
        }
    }
}
