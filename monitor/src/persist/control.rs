//! The agent's control socket: `egress-monitor baseline ...` requests, one JSON line each.
//! The socket's thread only reads and answers; the request is applied by the state's owner,
//! the poller ([`execute`]), and written to the state file at once by the state writer.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::{
            fs::PermissionsExt as _,
            net::{UnixListener, UnixStream},
        },
    },
    path::{Path, PathBuf},
    time::Duration,
};

use crossbeam_channel::{Receiver, Sender};

use super::{
    baseline,
    protocol::{self, CONTROL_SOCKET, Request, Response},
};
use crate::{ledger::Ledger, naming::Naming, policy::Policy, runtime::shutdown::Shutdown};

/// Longest request line: a device and a destination.
const MAX_REQUEST: u64 = 4096;
/// How long a client may take to send its request, and the agent to answer it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the accept loop looks at the shutdown token.
const WAKE: Duration = Duration::from_millis(200);

/// A request for the state's owner, and where its answer goes.
pub struct ControlRequest {
    pub request: Request,
    pub reply: Sender<ControlReply>,
}

/// The owner's answer: the text for the user, and, when the baseline changed, where the
/// state writer will say whether the file was written.
pub struct ControlReply {
    pub result: Result<String, String>,
    pub written: Option<Receiver<io::Result<()>>>,
}

/// The listening socket; removed when dropped.
pub struct Control {
    path: PathBuf,
    listener: UnixListener,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Control {
    /// Listens on `control.sock` in `dir` (owner-only). The caller holds the directory's
    /// lock, so a socket file left there is a dead agent's.
    pub fn bind(dir: &Path) -> io::Result<Self> {
        let path = dir.join(CONTROL_SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Self { path, listener })
    }

    /// Answers requests until `shutdown`, one at a time, each handed to the state's owner
    /// through `owner` (false when it is gone).
    pub fn serve(self, owner: impl Fn(ControlRequest) -> bool, shutdown: Shutdown) {
        while !shutdown.is_triggered() {
            let mut pollfd = libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&mut pollfd, 1, WAKE.as_millis() as libc::c_int) };
            if ready <= 0 {
                continue;
            }
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = answer(stream, &owner) {
                        tracing::debug!(error = %e, "control request failed");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::warn!(error = %e, "control socket");
                    std::thread::sleep(WAKE);
                }
            }
        }
    }
}

fn answer(stream: UnixStream, owner: &dyn Fn(ControlRequest) -> bool) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let result = protocol::parse_request(&line).and_then(|request| ask(owner, request));
    let response = match result {
        Ok(text) => Response { ok: true, text },
        Err(text) => Response { ok: false, text },
    };
    let mut out = serde_json::to_string(&response).expect("a response serializes");
    out.push('\n');
    (&stream).write_all(out.as_bytes())
}

/// Hands the request to the owner and waits for its answer and the file write.
fn ask(owner: &dyn Fn(ControlRequest) -> bool, request: Request) -> Result<String, String> {
    let (reply, answer) = crossbeam_channel::bounded(1);
    tracing::info!(?request, "baseline request");
    if !owner(ControlRequest { request, reply }) {
        return Err("the agent is stopping".to_owned());
    }
    let ControlReply { result, written } = answer
        .recv_timeout(REQUEST_TIMEOUT)
        .map_err(|_| "the agent did not answer in time".to_owned())?;
    let text = result?;
    match written.map(|w| w.recv_timeout(REQUEST_TIMEOUT)) {
        None | Some(Ok(Ok(()))) => Ok(text),
        Some(Ok(Err(e))) => Err(format!(
            "{text}but the state file could not be written: {e}"
        )),
        Some(Err(_)) => Err(format!("{text}but the state file was not written in time")),
    }
}

/// Applies a request to the state (by its owner). `Ok((text, changed))`.
pub fn execute(
    policy: &mut Policy,
    naming: &Naming,
    ledger: &Ledger,
    request: &Request,
) -> Result<(String, bool), String> {
    let devices = &naming.devices;
    let mut macs: Vec<_> = devices.known().into_iter().collect();
    macs.extend(ledger.devices().map(|(id, _)| id.mac));
    macs.extend(policy.records().keys());
    let candidates = macs
        .into_iter()
        .map(|mac| {
            let name = devices
                .name(mac)
                .map(|(n, _)| n.to_owned())
                .or_else(|| policy.record(mac).and_then(|r| r.name.clone()));
            (mac, name)
        })
        .collect();
    let group = |mac| devices.group(mac).map(str::to_owned);
    baseline::execute(policy, request, candidates, &group)
}
