//! "The internet": a UDP sink, a TCP sink and a TCP source on every server address of the WAN
//! namespace, at fixed ports, so tests only have to pick a destination.

use std::net::{IpAddr, SocketAddr};

use crate::traffic::{TCP_SINK_PORT, TCP_SOURCE_PORT, TcpSink, TcpSource, UDP_SINK_PORT, UdpSink};

/// Servers on a set of addresses; each has its own sinks, so counts are per address.
/// Dropping it stops them all.
pub struct Servers {
    servers: Vec<(IpAddr, Server)>,
}

struct Server {
    udp: UdpSink,
    tcp: TcpSink,
    source: TcpSource,
}

impl Servers {
    /// Starts, in namespace `ns` and on each of `addrs`: a [`UdpSink`] on [`UDP_SINK_PORT`], a
    /// [`TcpSink`] on [`TCP_SINK_PORT`] and a [`TcpSource`] sending `download_bytes` to every
    /// client on [`TCP_SOURCE_PORT`].
    pub fn start(ns: &str, addrs: &[IpAddr], download_bytes: u64) -> Servers {
        let servers = addrs
            .iter()
            .map(|&addr| {
                let at = |port| SocketAddr::new(addr, port);
                let server = Server {
                    udp: UdpSink::start(ns, at(UDP_SINK_PORT)),
                    tcp: TcpSink::start(ns, at(TCP_SINK_PORT)),
                    source: TcpSource::start(ns, at(TCP_SOURCE_PORT), download_bytes),
                };
                (addr, server)
            })
            .collect();
        Servers { servers }
    }

    /// The UDP sink on `addr`; panics if no server has that address.
    pub fn udp(&self, addr: IpAddr) -> &UdpSink {
        &self.get(addr).udp
    }

    /// The TCP sink (uploads) on `addr`.
    pub fn tcp(&self, addr: IpAddr) -> &TcpSink {
        &self.get(addr).tcp
    }

    /// The TCP source (downloads) on `addr`.
    pub fn source(&self, addr: IpAddr) -> &TcpSource {
        &self.get(addr).source
    }

    /// The addresses served.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.servers.iter().map(|(addr, _)| *addr)
    }

    fn get(&self, addr: IpAddr) -> &Server {
        self.servers
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, server)| server)
            .unwrap_or_else(|| panic!("no server on {addr}"))
    }
}

impl Drop for Servers {
    /// Signals every sink first, so they wind down together rather than one poll interval each.
    fn drop(&mut self) {
        for (_, server) in &self.servers {
            server.udp.signal_stop();
            server.tcp.signal_stop();
            server.source.signal_stop();
        }
    }
}
