//! The agent's control socket: `egress-monitor baseline ...` requests, one JSON line each.
//! The socket's thread only reads and answers; the request is applied by the state's owner,
//! the poller ([`execute`]), and written to the state file at once by the state writer.

use std::{
    io::{self, Read as _, Write as _},
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
/// How long a client may take to send its whole request (a deadline, not a timeout per read:
/// a client that trickles a byte a second is cut off too), and the agent to answer it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients served at once, each on a thread of its own; beyond, a client is told the agent is
/// busy. One slow client never holds up another.
const MAX_CLIENTS: usize = 8;
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

    /// Answers requests until `shutdown`, up to [`MAX_CLIENTS`] at once, each handed to the
    /// state's owner through `owner` (false when it is gone).
    pub fn serve(
        self,
        owner: impl Fn(ControlRequest) -> bool + Send + Sync + 'static,
        shutdown: Shutdown,
    ) {
        let owner = std::sync::Arc::new(owner);
        let clients = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
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
                    use std::sync::atomic::Ordering;
                    if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                        clients.fetch_sub(1, Ordering::AcqRel);
                        let _ = refuse(stream, "the agent is busy with other control clients");
                        continue;
                    }
                    let (owner, mine) = (owner.clone(), clients.clone());
                    let spawned = std::thread::Builder::new()
                        .name("control-client".into())
                        .spawn(move || {
                            // A panic here is one request's: logged, and the socket goes on.
                            let served =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    answer(stream, &*owner)
                                }));
                            match served {
                                Ok(Err(e)) => tracing::debug!(error = %e, "control request failed"),
                                Err(_) => tracing::error!("a control request panicked"),
                                Ok(Ok(())) => {}
                            }
                            mine.fetch_sub(1, Ordering::AcqRel);
                        });
                    if let Err(e) = spawned {
                        clients.fetch_sub(1, Ordering::AcqRel);
                        tracing::warn!(error = %e, "cannot start a thread for a control client");
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
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    let result = match read_request(&stream, deadline) {
        Err(e) => Err(e),
        Ok(line) => protocol::parse_request(&line).and_then(|request| ask(owner, request)),
    };
    send(&stream, result)
}

/// Answers `stream` with an error at once.
fn refuse(stream: UnixStream, why: &str) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(Duration::from_millis(200)))?;
    send(&stream, Err(why.to_owned()))
}

fn send(stream: &UnixStream, result: Result<String, String>) -> io::Result<()> {
    let response = match result {
        Ok(text) => Response { ok: true, text },
        Err(text) => Response { ok: false, text },
    };
    let mut out = serde_json::to_string(&response).expect("a response serializes");
    out.push('\n');
    let mut writer = stream;
    writer.write_all(out.as_bytes())
}

/// The request line, read by `deadline` whatever the client's pace, at most [`MAX_REQUEST`]
/// bytes. The error is the text for the client.
fn read_request(stream: &UnixStream, deadline: std::time::Instant) -> Result<String, String> {
    let mut line = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no whole request within {} s",
                REQUEST_TIMEOUT.as_secs()
            ));
        }
        // The timeout of one read is what is left of the deadline.
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = match (&*stream).read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read the request: {e}")),
        };
        line.extend_from_slice(&chunk[..n]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            break;
        }
        if line.len() as u64 > MAX_REQUEST {
            return Err(format!("request longer than {MAX_REQUEST} bytes"));
        }
    }
    String::from_utf8(line).map_err(|_| "the request is not UTF-8".to_owned())
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

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader},
        time::Instant,
    };

    use super::*;

    /// A socket whose owner answers every request with its operation's name.
    fn serving(dir: &Path) -> (Shutdown, std::thread::JoinHandle<()>) {
        let control = Control::bind(dir).unwrap();
        let shutdown = Shutdown::new();
        let token = shutdown.clone();
        let thread = std::thread::spawn(move || {
            control.serve(
                |ControlRequest { request, reply }| {
                    let text = format!("{request:?}");
                    reply
                        .send(ControlReply {
                            result: Ok(text),
                            written: None,
                        })
                        .is_ok()
                },
                token,
            )
        });
        (shutdown, thread)
    }

    fn ask_raw(dir: &Path, request: &[u8]) -> Response {
        let mut stream = UnixStream::connect(dir.join(CONTROL_SOCKET)).unwrap();
        stream.write_all(request).unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn a_trickling_client_holds_up_nobody_and_is_cut_off_at_the_deadline() {
        let dir = std::env::temp_dir().join(format!("egress-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (shutdown, thread) = serving(&dir);

        // One byte now and then, never a whole line.
        let slow_dir = dir.clone();
        let slow = std::thread::spawn(move || {
            let mut stream = UnixStream::connect(slow_dir.join(CONTROL_SOCKET)).unwrap();
            let started = Instant::now();
            for byte in b"{\"op\":" {
                if stream.write_all(&[*byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(900));
                if started.elapsed() > REQUEST_TIMEOUT + Duration::from_secs(2) {
                    break;
                }
            }
            let mut line = String::new();
            let _ = BufReader::new(stream).read_line(&mut line);
            (started.elapsed(), line)
        });
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let answer = ask_raw(&dir, b"{\"op\":\"show\",\"device\":\"phone\"}\n");
        assert!(answer.ok, "{}", answer.text);
        assert!(answer.text.contains("phone"), "{}", answer.text);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a second client waited {:?} behind a trickling one",
            started.elapsed()
        );
        let (took, line) = slow.join().unwrap();
        assert!(line.contains("no whole request within 5 s"), "{line:?}");
        assert!(took < REQUEST_TIMEOUT + Duration::from_secs(2), "{took:?}");

        // An over-long request is refused without being quoted back.
        let long = format!("{{\"op\":\"{}\"}}\n", "x".repeat(3000));
        let answer = ask_raw(&dir, long.as_bytes());
        assert!(!answer.ok);
        assert!(answer.text.len() < 300, "{}", answer.text);

        shutdown.trigger();
        thread.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
