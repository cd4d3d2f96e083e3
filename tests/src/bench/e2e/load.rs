//! The UDP load: small datagrams at a fixed rate from every device, paced by one thread. (The
//! TCP workload is one upload to the lab's sink, [`crate::tcp_upload`].)

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use super::E2eOptions;
use crate::netns::run_in;
use crate::{Lab, SERVERS_V4, UDP_SINK_PORT};

/// What the UDP sender did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sent {
    pub(super) offered: u64,
    pub(super) sent: u64,
    pub(super) errors: u64,
}

/// How often the UDP sender wakes up to send what is due. One thread for all devices, waking
/// once per slot, keeps the load generator's own cost (a timer and a context switch per
/// wake-up, expensive in a virtual machine) small next to the forwarding it causes.
const SLOT: Duration = Duration::from_millis(1);

/// Most datagrams sent in one burst, as slots' worth: a sender that is later than that (it did
/// not get the CPU) drops the debt instead of flooding; those count as offered, not sent.
pub(super) const MAX_BURST_SLOTS: u64 = 10;

/// The UDP load: `udp_pps` datagrams per second for `duration`, from every device to every
/// IPv4 server in turn, sent by one thread in a burst per [`SLOT`].
pub(super) fn udp_load(lab: &Lab, options: &E2eOptions) -> Sent {
    // Socket i belongs to device i % devices and sends to server (i / devices) % servers, so
    // consecutive datagrams come from different devices.
    let mut sockets = Vec::new();
    for server in SERVERS_V4 {
        for device in lab.devices() {
            let ns = &device.ns;
            let socket = run_in(ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
                .unwrap_or_else(|e| panic!("UDP load: bind in {ns}: {e}"));
            socket
                .connect((server, UDP_SINK_PORT))
                .unwrap_or_else(|e| panic!("UDP load: connect from {ns} to {server}: {e}"));
            socket
                .set_write_timeout(Some(Duration::from_secs(1)))
                .expect("set timeout");
            sockets.push(socket);
        }
    }
    paced_send(
        &sockets,
        options.udp_pps,
        options.udp_payload,
        options.duration,
    )
}

/// Sends `pps` datagrams per second for `duration`, over `sockets` in turn.
fn paced_send(sockets: &[UdpSocket], pps: u64, payload_len: usize, duration: Duration) -> Sent {
    let max_burst = datagrams_due(pps, SLOT * MAX_BURST_SLOTS as u32).max(1);
    let payload = vec![0x5a_u8; payload_len];
    let start = Instant::now();
    let mut attempted = 0u64;
    let mut skipped = 0u64;
    let mut errors = 0u64;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = datagrams_due(pps, elapsed);
        let mut owed = due.saturating_sub(attempted + skipped);
        if owed > max_burst {
            skipped += owed - max_burst;
            owed = max_burst;
        }
        for _ in 0..owed {
            let socket = &sockets[(attempted % sockets.len() as u64) as usize];
            if socket.send(&payload).is_err() {
                errors += 1;
            }
            attempted += 1;
        }
        std::thread::sleep(SLOT.min(duration.saturating_sub(start.elapsed())));
    }
    Sent {
        offered: datagrams_due(pps, duration),
        sent: attempted - errors,
        errors,
    }
}

/// Datagrams a sender of `pps` per second should have sent after `elapsed`.
fn datagrams_due(pps: u64, elapsed: Duration) -> u64 {
    (u128::from(pps) * elapsed.as_nanos() / 1_000_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_schedule() {
        assert_eq!(datagrams_due(20_000, Duration::from_millis(1)), 20);
        assert_eq!(datagrams_due(5_000, Duration::from_secs(5)), 25_000);
        assert_eq!(datagrams_due(3, Duration::from_millis(999)), 2);
    }
}
