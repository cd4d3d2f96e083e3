//! TLS between a device and "the internet", with the openssl command-line tools: a real
//! ClientHello (with the server name a test chooses) for the agent to read names from.
//!
//! The server is `openssl s_server` in the WAN namespace with a throwaway self-signed
//! certificate; the client is `openssl s_client` in a device's namespace, which does not verify
//! it (the lab only needs the handshake to happen, not to be trusted).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lab::Lab;
use crate::netns::{self, exec_ok};
use crate::process::LabChild;

/// How long [`tls_connect`] may take in all: connect, handshake, sending, closing.
pub const TLS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `s_server` may take to listen.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(5);
/// What `s_server` prints for every completed handshake (when not `-quiet`).
const SERVER_HANDSHAKE_MARK: &str = "CIPHER is ";
/// What `s_client -brief` prints once the handshake has completed.
const CLIENT_HANDSHAKE_MARK: &str = "CONNECTION ESTABLISHED";

/// A self-signed P-256 certificate and its key, `CN=lab`, valid for a day, made in namespace `ns`
/// (openssl needs no network for it) into the lab directory `dir`. Returns (certificate, key).
pub(crate) fn make_certificate(ns: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("tls-cert.pem");
    let key = dir.join("tls-key.pem");
    let (cert_arg, key_arg) = (cert.to_string_lossy(), key.to_string_lossy());
    exec_ok(
        ns,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=lab",
            "-keyout",
            key_arg.as_ref(),
            "-out",
            cert_arg.as_ref(),
        ],
    );
    (cert, key)
}

/// `openssl s_server` on one address and port of the WAN namespace; see
/// [`Lab::start_tls_server`]. It serves connections one after the other, for as long as it
/// runs; dropping it (or the lab) stops it.
///
/// Whatever a client sends is written to the server's log; nothing is sent back but the
/// handshake and TLS 1.3 session tickets.
#[derive(Debug)]
pub struct TlsServer {
    addr: SocketAddr,
    child: LabChild,
}

impl TlsServer {
    /// Starts `s_server` in namespace `ns` on `addr`, with `cert` and `key`, tracked by `lab`, and
    /// waits until it listens.
    pub(crate) fn start(lab: &Lab, ns: &str, addr: SocketAddr, cert: &Path, key: &Path) -> Self {
        let mut cmd = netns::command(ns, "openssl");
        cmd.arg("s_server")
            .args(["-accept", &addr.to_string()])
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            // Its stdin stays open (the pipe lives as long as the child): at end of input
            // s_server would shut down.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = lab.spawn(&mut cmd);
        let server = TlsServer { addr, child };
        if !server.child.wait_for_log("ACCEPT", SERVER_START_TIMEOUT) {
            panic!(
                "openssl s_server on {addr} in {ns} did not start ({:?}); its output:\n{}",
                server.child.try_wait(),
                server.child.log()
            );
        }
        server
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.child.log().matches(SERVER_HANDSHAKE_MARK).count()
    }

    /// Waits until `n` handshakes have completed or `timeout` passes; returns the count.
    pub fn wait_for_handshakes(&self, n: usize, timeout: Duration) -> usize {
        crate::traffic::wait_until(timeout, || self.handshakes() >= n);
        self.handshakes()
    }

    /// Everything `s_server` printed, including what clients sent.
    pub fn log(&self) -> String {
        self.child.log()
    }

    /// The process, e.g. to check that it runs.
    pub fn child(&self) -> &LabChild {
        &self.child
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.child.kill_quietly();
    }
}

/// What [`tls_connect`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOutcome {
    /// The handshake completed (the client printed "CONNECTION ESTABLISHED").
    pub handshake: bool,
    /// The negotiated protocol, e.g. "TLSv1.3", if the handshake completed.
    pub protocol: Option<String>,
    /// The client had not finished after [`TLS_CONNECT_TIMEOUT`] and was killed.
    pub timed_out: bool,
    /// `s_client`'s stdout and stderr.
    pub output: String,
}

/// Runs `openssl s_client` in namespace `ns` against `addr:port`: a real OpenSSL ClientHello
/// with SNI `server_name` (none if it is empty), then, once the handshake has completed,
/// `send_bytes` bytes of printable text as application data, then a TLS close and a TCP close.
///
/// Never hangs: after [`TLS_CONNECT_TIMEOUT`] the client is killed. Does not panic when the
/// handshake fails; look at [`TlsOutcome::handshake`].
pub fn tls_connect(
    ns: &str,
    addr: IpAddr,
    port: u16,
    server_name: &str,
    send_bytes: usize,
) -> TlsOutcome {
    let to = SocketAddr::new(addr, port);
    let mut cmd = netns::command(ns, "openssl");
    cmd.args(["s_client", "-connect", &to.to_string()])
        // -brief: a short summary, and unlike -quiet it still ends the connection at the end
        // of stdin; -nocommands: lines starting with Q or R are data, not commands.
        .args(["-brief", "-nocommands"]);
    if server_name.is_empty() {
        cmd.arg("-noservername");
    } else {
        cmd.args(["-servername", server_name]);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let description = netns::describe(&cmd);
    let mut child = KillOnDrop(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start `{description}`: {e}")),
    );
    let mut stdin = child.0.stdin.take().expect("stdin is piped");
    // s_client reads stdin only after the handshake; a failed write means it has gone.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&payload(send_bytes));
    });
    let stdout = collect(child.0.stdout.take().expect("stdout is piped"));
    let stderr = collect(child.0.stderr.take().expect("stderr is piped"));

    let deadline = Instant::now() + TLS_CONNECT_TIMEOUT;
    let mut timed_out = false;
    loop {
        match child.0.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => {
                timed_out = true;
                let _ = child.0.kill();
                let _ = child.0.wait();
                break;
            }
        }
    }
    let _ = writer.join();
    let output = joined(stdout) + &joined(stderr);
    let handshake = output.contains(CLIENT_HANDSHAKE_MARK);
    let protocol = output
        .lines()
        .find_map(|line| line.strip_prefix("Protocol version: "))
        .map(|p| p.trim().to_owned());
    TlsOutcome {
        handshake,
        protocol,
        timed_out,
        output,
    }
}

/// A child process killed (and reaped) when dropped, also when the caller panics.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `pipe` to its end on a thread of its own.
fn collect(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn joined(handle: JoinHandle<String>) -> String {
    handle.join().unwrap_or_default()
}

/// `len` bytes of readable lines, so that the server's log stays legible.
fn payload(len: usize) -> Vec<u8> {
    const LINE: &[u8] = b"egress-lab TLS payload 0123456789abcdefghijklmnopqrstuvwxyz\n";
    LINE.iter().copied().cycle().take(len).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_asked_length() {
        assert!(payload(0).is_empty());
        assert_eq!(payload(1000).len(), 1000);
        assert!(payload(200).is_ascii());
    }
}
