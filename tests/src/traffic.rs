//! Traffic generators and sinks that run inside lab namespaces.
//!
//! Everything here is bounded: a fixed number of datagrams or bytes, and every socket operation
//! has a timeout of a few seconds, so a broken lab makes a test fail, not hang. Sockets are
//! created inside the namespace with [`run_in`] and then used from ordinary threads.

use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::run_in;

/// Port of the UDP sink on every server address.
pub const UDP_SINK_PORT: u16 = 9000;
/// Port of the TCP sink (uploads) on every server address.
pub const TCP_SINK_PORT: u16 = 9001;
/// Port of the TCP source (downloads) on every server address.
pub const TCP_SOURCE_PORT: u16 = 9002;

/// Largest UDP payload [`udp_send`] accepts: it fits a 1500-byte MTU with an IPv6 header, so no
/// datagram is fragmented and each one is exactly one packet.
pub const MAX_UDP_PAYLOAD: usize = 1400;

/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long any read or write may make no progress.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often sink threads look at their stop flag.
const POLL: Duration = Duration::from_millis(100);
/// Concurrent connections a TCP server handles; more are refused (closed at once).
const MAX_CONNECTIONS: usize = 64;
/// Linux TCP state numbers (include/net/tcp_states.h).
const TCP_CLOSE: u8 = 7;

/// IP-layer size of one UDP datagram: IPv4 (20) or IPv6 (40) header, UDP header (8), payload.
/// The agent and the WAN counters both count this.
pub fn udp_ip_bytes(v4: bool, payload_len: usize) -> u64 {
    let ip_header = if v4 { 20 } else { 40 };
    ip_header + 8 + payload_len as u64
}

/// Polls `done` every 10 ms until it returns true (then true) or `timeout` passes (then false).
pub fn wait_until(timeout: Duration, done: impl FnMut() -> bool) -> bool {
    wait_until_every(timeout, Duration::from_millis(10), done)
}

/// [`wait_until`] at another pace, for checks that cost more (an HTTP request each).
pub fn wait_until_every(
    timeout: Duration,
    every: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Datagrams and payload bytes a [`UdpSink`] received.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UdpCount {
    pub datagrams: u64,
    /// UDP payload bytes (not IP bytes; see [`udp_ip_bytes`]).
    pub bytes: u64,
}

/// Completed connections and payload bytes of a [`TcpSink`] or [`TcpSource`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TcpCount {
    pub connections: u64,
    /// TCP payload bytes received (sink) or sent (source).
    pub bytes: u64,
}

/// Threads that run until asked to stop; stopping (or dropping) joins them.
struct Workers {
    stop: Arc<AtomicBool>,
    main: Option<JoinHandle<()>>,
}

impl Workers {
    /// Asks the threads to stop without waiting, so that many sinks can stop in parallel.
    fn signal(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stop(&mut self) {
        self.signal();
        if let Some(main) = self.main.take() {
            // A panic in a sink thread has already been printed; the counts say the rest.
            let _ = main.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Receives UDP datagrams on one address and counts them.
pub struct UdpSink {
    local: SocketAddr,
    datagrams: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    workers: Workers,
}

impl UdpSink {
    /// Asks the threads to stop, without waiting for them (dropping waits).
    pub(crate) fn signal_stop(&self) {
        self.workers.signal();
    }

    /// Binds `bind` in namespace `ns` (port 0 picks one; see [`UdpSink::local_addr`]) and starts
    /// counting. Panics if the address cannot be bound.
    pub fn start(ns: &str, bind: SocketAddr) -> UdpSink {
        let socket = run_in(ns, || UdpSocket::bind(bind))
            .unwrap_or_else(|e| panic!("UDP sink: bind {bind} in {ns}: {e}"));
        // A large buffer so that a burst is not dropped before this thread reads it; as root,
        // SO_RCVBUFFORCE may exceed rmem_max. Failure only makes drops more likely.
        force_rcvbuf(&socket, 4 << 20);
        socket.set_read_timeout(Some(POLL)).expect("set timeout");
        let local = socket.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let datagrams = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let main = {
            let (stop, datagrams, bytes) = (stop.clone(), datagrams.clone(), bytes.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    match socket.recv_from(&mut buf) {
                        Ok((n, _)) => {
                            bytes.fetch_add(n as u64, Ordering::Relaxed);
                            datagrams.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if is_timeout(&e) => {}
                        Err(e) => panic!("UDP sink {local}: {e}"),
                    }
                }
            })
        };
        UdpSink {
            local,
            datagrams,
            bytes,
            workers: Workers {
                stop,
                main: Some(main),
            },
        }
    }

    /// The bound address (with the actual port if 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// What has been received so far.
    pub fn count(&self) -> UdpCount {
        UdpCount {
            datagrams: self.datagrams.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// Waits until at least `datagrams` have arrived or `timeout` passes; returns the count.
    pub fn wait_for(&self, datagrams: u64, timeout: Duration) -> UdpCount {
        wait_until(timeout, || self.count().datagrams >= datagrams);
        self.count()
    }

    /// Stops receiving and returns the final count.
    pub fn stop(mut self) -> UdpCount {
        self.workers.stop();
        self.count()
    }
}

/// Accepts TCP connections on one address, reads and discards everything, and counts bytes.
///
/// Each connection is closed in an orderly way once the client has shut down its side: the sink
/// shuts down its own and waits for the client's last ACK before counting the connection as
/// completed, so [`TcpSink::connections`] only counts exchanges with no packet left in flight.
pub struct TcpSink {
    server: TcpServer,
}

impl TcpSink {
    /// Asks the threads to stop, without waiting for them (dropping waits).
    pub(crate) fn signal_stop(&self) {
        self.server.workers.signal();
    }

    /// Listens on `bind` in namespace `ns`. Panics if the address cannot be bound.
    pub fn start(ns: &str, bind: SocketAddr) -> TcpSink {
        TcpSink {
            server: TcpServer::start(ns, bind, "TCP sink", sink_connection),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local
    }

    /// Payload bytes received so far, on all connections.
    pub fn bytes(&self) -> u64 {
        self.server.bytes.load(Ordering::Relaxed)
    }

    /// Connections completed so far.
    pub fn connections(&self) -> u64 {
        self.server.connections.load(Ordering::Relaxed)
    }

    /// Waits until `n` connections have completed or `timeout` passes; returns the count.
    pub fn wait_for_connections(&self, n: u64, timeout: Duration) -> TcpCount {
        wait_until(timeout, || self.connections() >= n);
        self.count()
    }

    /// Connections and bytes so far.
    pub fn count(&self) -> TcpCount {
        self.server.count()
    }

    /// Stops accepting, waits for open connections to end, returns the final count.
    pub fn stop(mut self) -> TcpCount {
        self.server.workers.stop();
        self.count()
    }
}

/// Accepts TCP connections on one address and sends each client a fixed number of bytes, then
/// closes (the client sees EOF).
pub struct TcpSource {
    server: TcpServer,
}

impl TcpSource {
    /// Asks the threads to stop, without waiting for them (dropping waits).
    pub(crate) fn signal_stop(&self) {
        self.server.workers.signal();
    }

    /// Listens on `bind` in namespace `ns`; every client gets `bytes_per_connection` bytes.
    pub fn start(ns: &str, bind: SocketAddr, bytes_per_connection: u64) -> TcpSource {
        let serve = move |stream, counters: &Counters| {
            source_connection(stream, counters, bytes_per_connection);
        };
        TcpSource {
            server: TcpServer::start(ns, bind, "TCP source", serve),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local
    }

    /// Payload bytes sent so far, on all connections.
    pub fn bytes_sent(&self) -> u64 {
        self.server.bytes.load(Ordering::Relaxed)
    }

    /// Connections completed (all bytes sent and the client closed) so far. This may trail
    /// [`tcp_download`] returning by a moment: use [`TcpSource::wait_for_connections`].
    pub fn connections(&self) -> u64 {
        self.server.connections.load(Ordering::Relaxed)
    }

    /// Waits until `n` connections have completed or `timeout` passes; returns the count.
    pub fn wait_for_connections(&self, n: u64, timeout: Duration) -> TcpCount {
        wait_until(timeout, || self.connections() >= n);
        self.count()
    }

    /// Connections and bytes so far.
    pub fn count(&self) -> TcpCount {
        self.server.count()
    }

    /// Stops accepting, waits for open connections to end, returns the final count.
    pub fn stop(mut self) -> TcpCount {
        self.server.workers.stop();
        self.count()
    }
}

/// What connection handlers report to their server.
struct Counters {
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
}

/// A listener thread that hands each connection to `serve` on a thread of its own.
struct TcpServer {
    local: SocketAddr,
    bytes: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    workers: Workers,
}

impl TcpServer {
    fn start(
        ns: &str,
        bind: SocketAddr,
        what: &'static str,
        serve: impl Fn(TcpStream, &Counters) + Send + Sync + 'static,
    ) -> TcpServer {
        let listener = run_in(ns, || TcpListener::bind(bind))
            .unwrap_or_else(|e| panic!("{what}: bind {bind} in {ns}: {e}"));
        let local = listener.local_addr().expect("local_addr");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let counters = Arc::new(Counters {
            stop: Arc::new(AtomicBool::new(false)),
            bytes: Arc::new(AtomicU64::new(0)),
            connections: Arc::new(AtomicU64::new(0)),
        });
        let serve = Arc::new(serve);
        let main = {
            let counters = counters.clone();
            std::thread::spawn(move || {
                let mut handlers: Vec<JoinHandle<()>> = Vec::new();
                while !counters.stop.load(Ordering::Relaxed) {
                    if !wait_readable(&listener, POLL) {
                        continue;
                    }
                    let stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                        Err(e) => panic!("{what} {local}: accept: {e}"),
                    };
                    handlers.retain(|h| !h.is_finished());
                    if handlers.len() >= MAX_CONNECTIONS {
                        continue; // dropping the stream closes it
                    }
                    let (serve, counters) = (serve.clone(), counters.clone());
                    handlers.push(std::thread::spawn(move || {
                        stream.set_nonblocking(false).expect("set_nonblocking");
                        serve(stream, &counters);
                    }));
                }
                for handler in handlers {
                    let _ = handler.join();
                }
            })
        };
        TcpServer {
            local,
            bytes: counters.bytes.clone(),
            connections: counters.connections.clone(),
            workers: Workers {
                stop: counters.stop.clone(),
                main: Some(main),
            },
        }
    }

    fn count(&self) -> TcpCount {
        TcpCount {
            connections: self.connections.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// Reads until EOF, then closes in order (see [`TcpSink`]).
fn sink_connection(mut stream: TcpStream, counters: &Counters) {
    stream.set_read_timeout(Some(POLL)).expect("set timeout");
    let mut buf = vec![0u8; 65536];
    let mut idle_since = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                idle_since = Instant::now();
            }
            Err(e) if is_timeout(&e) => {
                if counters.stop.load(Ordering::Relaxed) || idle_since.elapsed() > IO_TIMEOUT {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    // Our FIN goes out; the client's ACK of it is the last packet of the exchange.
    let _ = stream.shutdown(Shutdown::Write);
    if wait_until(IO_TIMEOUT, || tcp_state(&stream) == Some(TCP_CLOSE)) {
        counters.connections.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes `total` bytes, closes our side, and waits for the client to close its own.
fn source_connection(mut stream: TcpStream, counters: &Counters, total: u64) {
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set timeout");
    stream.set_read_timeout(Some(POLL)).expect("set timeout");
    let chunk = pattern(64 * 1024);
    let mut left = total;
    while left > 0 {
        if counters.stop.load(Ordering::Relaxed) {
            return;
        }
        let n = left.min(chunk.len() as u64) as usize;
        match stream.write(&chunk[..n]) {
            Ok(written) => {
                counters.bytes.fetch_add(written as u64, Ordering::Relaxed);
                left -= written as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if is_timeout(&e) && Instant::now() < deadline => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    counters.connections.fetch_add(1, Ordering::Relaxed);
}

/// Sends `count` UDP datagrams of `payload_len` bytes from namespace `ns` to `to`, pausing
/// briefly every few datagrams so that no queue on the way overflows; returns once all are sent.
///
/// Sending is asynchronous: the last datagrams may still be crossing the veths when this
/// returns. Wait on a sink or on the counters before comparing.
pub fn udp_send(ns: &str, to: SocketAddr, payload_len: usize, count: u32) {
    assert!(
        payload_len <= MAX_UDP_PAYLOAD,
        "udp_send: payload {payload_len} > {MAX_UDP_PAYLOAD} would fragment"
    );
    let any: SocketAddr = match to {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = run_in(ns, || UdpSocket::bind(any))
        .unwrap_or_else(|e| panic!("udp_send: bind in {ns}: {e}"));
    socket
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set timeout");
    let payload = pattern(payload_len);
    for i in 0..count {
        socket
            .send_to(&payload, to)
            .unwrap_or_else(|e| panic!("udp_send from {ns} to {to}: datagram {i}: {e}"));
        if i % 16 == 15 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Connects from namespace `ns` to `to`, writes exactly `bytes`, shuts down writing and waits
/// for the server to close (so every byte was read by it) before returning.
///
/// Against a [`TcpSink`] the only packet that can still be in flight after that is our ACK of
/// its FIN; a short pause lets it land, so counters are final when this returns.
pub fn tcp_upload(ns: &str, to: SocketAddr, bytes: u64) {
    let mut stream = connect(ns, to);
    let chunk = pattern(64 * 1024);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream
            .write_all(&chunk[..n])
            .unwrap_or_else(|e| panic!("tcp_upload {ns} -> {to}: {e} with {left} bytes left"));
        left -= n as u64;
    }
    stream
        .shutdown(Shutdown::Write)
        .unwrap_or_else(|e| panic!("tcp_upload {ns} -> {to}: shutdown: {e}"));
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .unwrap_or_else(|e| panic!("tcp_upload {ns} -> {to}: waiting for close: {e}"));
    std::thread::sleep(Duration::from_millis(20));
}

/// Connects from namespace `ns` to `from`, reads until EOF, asserts that exactly
/// `expect_bytes` arrived, and closes; returns once the server has acknowledged our close, so no
/// packet of the exchange is still in flight.
pub fn tcp_download(ns: &str, from: SocketAddr, expect_bytes: u64) {
    let mut stream = connect(ns, from);
    let mut buf = vec![0u8; 65536];
    let mut got = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("tcp_download {ns} <- {from}: {e} after {got} bytes"),
        }
    }
    assert_eq!(got, expect_bytes, "tcp_download {ns} <- {from}: byte count");
    stream
        .shutdown(Shutdown::Write)
        .unwrap_or_else(|e| panic!("tcp_download {ns} <- {from}: shutdown: {e}"));
    assert!(
        wait_until(IO_TIMEOUT, || tcp_state(&stream) == Some(TCP_CLOSE)),
        "tcp_download {ns} <- {from}: the server never acknowledged our FIN"
    );
}

/// Sends ICMP echo requests from namespace `ns` to `to` (up to 3, one second each) and returns
/// whether a reply came back. Returns false rather than panicking, so isolation can be tested.
///
/// Uses an unprivileged ICMP socket, which the lab enables in each of its namespaces
/// (`net.ipv4.ping_group_range`); the kernel then fills in the identifier and checksum and
/// delivers only our replies.
pub fn ping(ns: &str, to: IpAddr) -> bool {
    let (domain, protocol, request, reply) = match to {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8),
    };
    let socket: UdpSocket = run_in(ns, || Socket::new(domain, Type::DGRAM, Some(protocol)))
        .unwrap_or_else(|e| panic!("ping: ICMP socket in {ns}: {e}"))
        .into();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("set timeout");
    for seq in 1..=3u8 {
        let echo = [request, 0, 0, 0, 0, 0, 0, seq, b'e', b'g', b'l', 0];
        if socket.send_to(&echo, (to, 0)).is_err() {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            match socket.recv(&mut buf) {
                Ok(n) if n >= 8 && buf[0] == reply && buf[7] == seq => return true,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    false
}

fn connect(ns: &str, to: SocketAddr) -> TcpStream {
    let stream = run_in(ns, || TcpStream::connect_timeout(&to, CONNECT_TIMEOUT))
        .unwrap_or_else(|e| panic!("connect from {ns} to {to}: {e}"));
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set timeout");
    stream
}

/// A recognisable, non-compressible-looking payload.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// The kernel's TCP state of `stream` (TCP_INFO), if it can be read.
fn tcp_state(stream: &TcpStream) -> Option<u8> {
    // SAFETY: tcp_info is plain data, for which all-zero bytes are valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info.tcpi_state)
}

/// Whether `listener` has a connection to accept within `timeout`.
fn wait_readable(listener: &TcpListener, timeout: Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().try_into().unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, which outlives the call.
    unsafe { libc::poll(&mut fds, 1, ms) > 0 }
}

/// SO_RCVBUFFORCE (root may exceed rmem_max); best effort.
pub(crate) fn force_rcvbuf(socket: &UdpSocket, bytes: libc::c_int) {
    // SAFETY: the pointer and length describe `bytes`, which outlives the call.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_sizes() {
        assert_eq!(udp_ip_bytes(true, 100), 128);
        assert_eq!(udp_ip_bytes(false, 100), 148);
        assert_eq!(udp_ip_bytes(false, MAX_UDP_PAYLOAD), 1448);
    }

    #[test]
    fn wait_until_times_out() {
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(30), || false));
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert!(wait_until(Duration::ZERO, || true));
    }
}
