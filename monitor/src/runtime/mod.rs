//! The agent's run: check, bind, load, attach, start the threads, serve, and on SIGINT or
//! SIGTERM (or when any thread ends) stop them all and detach.
//!
//! Threads and what they own: the poller owns the state and the kernel side (see `poller`);
//! the sniff thread reads the ring of copied packets; the file watcher reads lease files and
//! the configuration; the state writer writes the state file; the control thread answers
//! `baseline` requests; the HTTP server runs on a small tokio runtime. They talk through
//! channels, and share one [`shutdown::Shutdown`] token that any of them pulls when it ends.

pub mod fault;
pub mod files;
pub mod poller;
pub mod reload;
pub mod shutdown;
pub mod state;
pub mod threads;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::{Config, Overrides},
    http::{
        metrics::Metrics,
        web_config::{self, WebConfig, watch},
    },
    kernel::{
        Live,
        loader::{self, LoadError, MapSizes},
    },
    naming::lease_files::LeaseReader,
    persist::{control::Control, state_file as store},
    policy::Policy,
    runtime::{
        poller::{Inbox, Message, Poller, PollerConfig},
        reload::Reloader,
        shutdown::Shutdown,
        state::State,
        threads::{Ended, ThreadPanic, Worker},
    },
    snapshot::Published,
};

/// How long a stop waits for the threads, all together, once the HTTP server is closed (which
/// takes at most `http::server::SHUTDOWN_GRACE`): SIGTERM ends the agent within 5 s whatever
/// its clients or files do.
const STOP_DEADLINE: Duration = Duration::from_millis(2500);

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

impl From<ThreadPanic> for RunError {
    fn from(p: ThreadPanic) -> Self {
        RunError::Panicked {
            thread: p.thread,
            message: p.message,
        }
    }
}

/// Runs the agent until SIGINT or SIGTERM. `config_path` and `overrides` are read again on
/// SIGHUP or when the file changes; so is the web configuration file `web` (its path and its
/// configuration as read at start), when it changes.
pub fn run(
    config: Config,
    config_path: Option<PathBuf>,
    overrides: Overrides,
    web: Option<(PathBuf, WebConfig)>,
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
    let state_dir_error = |source| RunError::StateDir {
        dir: config.state_dir.clone(),
        source,
    };
    // Held until the agent exits: one agent per state directory, and `baseline` commands know
    // to ask it rather than edit the file. Taken before the programs are loaded: a second
    // agent must not swap its programs into the first one's links.
    let _state_lock = crate::persist::lock::try_lock(&config.state_dir)
        .map_err(state_dir_error)?
        .ok_or_else(|| RunError::StateDirInUse(config.state_dir.clone()))?;
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
        config.pin_dir.as_deref(),
    )?;
    tracing::info!(
        start = loaded.start.as_str(),
        pin_dir = %config.pin_dir.as_ref().map_or("(none)".into(), |d| d.display().to_string()),
        "kernel side ready"
    );
    for a in loaded.hooks.attachments() {
        tracing::info!(
            interface = a.interface,
            lan = a.lan,
            mode = a.mode.map_or("none", |m| m.as_str()),
            "attached"
        );
    }

    let records = store::load(&config.state_dir)?;
    tracing::info!(
        dir = %config.state_dir.display(),
        devices = records.len(),
        "state read"
    );
    let mut state = State::new(&config);
    state.policy = Policy::new(config.policy.clone(), records);
    state.policy.set_write_interval(config.state_write_interval);
    let control = Control::bind(&config.state_dir).map_err(state_dir_error)?;
    let published = Published::default();
    let metrics =
        Arc::new(Metrics::new(published.clone()).map_err(|e| RunError::Runtime(e.to_string()))?);
    let reload_requested = Arc::new(AtomicBool::new(false));
    let shutdown = Shutdown::new();
    let (kernel, ring) = Live::new(
        loaded,
        config.lan.clone(),
        config.local_prefixes.clone(),
        config.flow_map_entries,
        config.device_map_entries,
    );

    let (messages_tx, messages) = crossbeam_channel::unbounded::<Message>();
    let (sniffed_tx, sniffed) =
        crossbeam_channel::bounded(crate::kernel::sniff_ring::QUEUED_BATCHES);
    let (jobs_tx, jobs) = crossbeam_channel::unbounded();
    let spawn_error = |e: std::io::Error| RunError::Runtime(format!("cannot start a thread: {e}"));
    let mut workers: Vec<Worker<()>> = Vec::new();
    let poller = Poller::new(
        kernel,
        state,
        PollerConfig {
            interval: config.poll_interval,
            flow_capacity: config.flow_map_entries,
            device_capacity: config.device_map_entries,
        },
        published.clone(),
        metrics.self_metrics.clone(),
        jobs_tx,
    );
    let token = shutdown.clone();
    let inbox = Inbox { messages, sniffed };
    let polling = threads::spawn("poller", &shutdown, move || poller.run(inbox, &token));
    workers.push(polling.map_err(spawn_error)?);
    let token = shutdown.clone();
    let sniffing = threads::spawn("sniff", &shutdown, move || {
        crate::kernel::sniff_ring::run(ring, sniffed_tx, token)
    });
    workers.push(sniffing.map_err(spawn_error)?);
    let (dir, wrote) = (config.state_dir.clone(), messages_tx.clone());
    let writing = threads::spawn("state writer", &shutdown, move || {
        crate::persist::writer::run(dir, jobs, |ok| {
            let _ = wrote.send(Message::Wrote(ok));
        })
    });
    workers.push(writing.map_err(spawn_error)?);
    let reloader = Reloader::new(
        config_path,
        overrides,
        config.clone(),
        reload_requested.clone(),
    );
    let leases = LeaseReader::new(&config.leases);
    let databases = crate::enrich::DatabaseFiles::new(&config.enrich);
    let (interval, to_poller, token) =
        (config.poll_interval, messages_tx.clone(), shutdown.clone());
    let watching = threads::spawn("files", &shutdown, move || {
        files::run(leases, databases, reloader, interval, to_poller, token)
    });
    workers.push(watching.map_err(spawn_error)?);
    let (to_poller, token) = (messages_tx, shutdown.clone());
    let controlling = threads::spawn("control", &shutdown, move || {
        fault::panic_if_requested("control");
        let forward = move |request| to_poller.send(Message::Control(request)).is_ok();
        control.serve(forward, token)
    });
    workers.push(controlling.map_err(spawn_error)?);
    let web = match web {
        Some((path, web)) => {
            tracing::info!(
                path = %path.display(),
                tls = web.tls.is_some(),
                basic_auth = !web.users.is_empty(),
                "web configuration read"
            );
            if web.tls.is_none() && !web.users.is_empty() {
                tracing::warn!(
                    "basic authentication without TLS: passwords cross the network in clear"
                );
            }
            let live = web_config::Live::new(web);
            let watcher = watch::Watcher::new(path, live.clone(), metrics.web_reloads.clone());
            let token = shutdown.clone();
            let watching =
                threads::spawn("web config", &shutdown, move || watch::run(watcher, token));
            workers.push(watching.map_err(spawn_error)?);
            Some(live)
        }
        None => None,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| RunError::Runtime(e.to_string()))?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tracing::info!(listen = %config.listen, "serving /metrics");
        let token = shutdown.clone();
        let stop = async move {
            tokio::select! {
                () = shutdown_signal(reload_requested) => {}
                () = token.wait() => {}
            }
            // The threads stop while the server lets its requests finish.
            token.trigger();
        };
        crate::http::server::serve(
            listener,
            metrics,
            published,
            config.poll_interval,
            web,
            stop,
        )
        .await
    });
    // Whatever stopped the server stops every thread.
    shutdown.trigger();
    let deadline = Instant::now() + STOP_DEADLINE;
    // Blocking renders still running are not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let mut panicked: Option<ThreadPanic> = None;
    for worker in workers {
        match worker.join_by(deadline) {
            Ended::Returned(()) => {}
            Ended::Panicked(p) => {
                tracing::error!(thread = p.thread, "the thread panicked: {}", p.message);
                panicked.get_or_insert(p);
            }
            Ended::Running(name) => {
                tracing::warn!(thread = name, "a thread did not stop in time; leaving it");
            }
        }
    }
    if let Some(p) = panicked {
        return Err(p.into());
    }
    served.map_err(|e| RunError::Runtime(format!("HTTP server failed: {e}")))
}

/// `egress-monitor detach`: refuses while an agent runs (it holds the state directory), then
/// detaches and removes the pins. Returns what to print.
pub fn detach(config: &Config) -> Result<String, RunError> {
    let state_dir_error = |source| RunError::StateDir {
        dir: config.state_dir.clone(),
        source,
    };
    let _lock = if config.state_dir.exists() {
        Some(
            crate::persist::lock::try_lock(&config.state_dir)
                .map_err(state_dir_error)?
                .ok_or_else(|| RunError::StateDirInUse(config.state_dir.clone()))?,
        )
    } else {
        None
    };
    let done = crate::kernel::detach::detach(&config.lan, config.pin_dir.as_deref())
        .map_err(RunError::Runtime)?;
    Ok(format!(
        "detached: {} pinned links and {} clsact filters removed; pins under {} removed\n",
        done.links,
        done.filters,
        config
            .pin_dir
            .as_ref()
            .map_or("(none)".to_owned(), |d| d.display().to_string())
    ))
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
