//! The plumbing of a netlink dump over a blocking socket, shared by the neighbour table
//! (rtnetlink) and the nftables flowtables (nfnetlink): a fresh socket per dump, and receives
//! bounded by a deadline, so that a dump the kernel never finishes is an error, not a hang.

use std::{io, time::Instant};

use netlink_sys::{Socket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
use nix::sys::time::{TimeVal, TimeValLike};

/// Room for the largest datagram the kernel sends in a dump (it caps them at 32 KiB); a larger
/// one is detected (`MSG_TRUNC`) and reported rather than silently cut.
pub const RECEIVE_BUFFER: usize = 64 * 1024;

/// One dump's socket; `what` names the dump in every error ("netlink neighbour dump").
pub struct DumpSocket {
    socket: Socket,
    what: &'static str,
}

impl DumpSocket {
    /// Opens a socket of `protocol`, connected to the kernel, and sends `request` on it.
    pub fn send(protocol: isize, request: &[u8], what: &'static str) -> io::Result<Self> {
        let fail = |step: &str, e: io::Error| failed(what, step, e);
        let mut socket = Socket::new(protocol).map_err(|e| fail("opening the socket", e))?;
        socket
            .bind_auto()
            .map_err(|e| fail("binding the socket", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| fail("connecting to the kernel", e))?;
        socket
            .send(request, 0)
            .map_err(|e| fail("sending the request", e))?;
        Ok(Self { socket, what })
    }

    /// Receives one datagram into `buf`, waiting until `deadline` at most; returns its length.
    pub fn receive(
        &self,
        buf: &mut [u8],
        deadline: Instant,
        timeout_text: &str,
    ) -> io::Result<usize> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timed_out(timeout_text));
            }
            // At least 1 µs: a zero timeout would mean "wait for ever".
            let micros = i64::try_from(left.as_micros()).unwrap_or(i64::MAX).max(1);
            setsockopt(&self.socket, ReceiveTimeout, &TimeVal::microseconds(micros))
                .map_err(|e| failed(self.what, "setting the receive timeout", e.into()))?;
            // MSG_TRUNC: the result is the datagram's full length even if it did not fit.
            match self.socket.recv(&mut &mut buf[..], libc::MSG_TRUNC) {
                Ok(len) if len > buf.len() => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: a {len}-byte datagram does not fit the {}-byte receive buffer",
                            self.what,
                            buf.len()
                        ),
                    ));
                }
                Ok(len) => return Ok(len),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(self.timed_out(timeout_text));
                }
                Err(e) => return Err(failed(self.what, "receiving", e)),
            }
        }
    }

    fn timed_out(&self, within: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{}: no complete answer from the kernel within {within}",
                self.what
            ),
        )
    }
}

/// `error` while doing `step` of dump `what`, keeping its kind.
pub fn failed(what: &str, step: &str, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {step}: {error}"))
}
