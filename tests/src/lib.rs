//! The egress-monitor lab: a virtual router in network namespaces, shared by the integration
//! tests and `cargo xtask lab`.
//!
//! A [`Lab`] is a router namespace (bridge `br-lan`, forwarding, IPv4 masquerade), one namespace
//! per LAN device, and a WAN namespace that plays the internet with servers on documentation
//! prefixes ([`SERVERS`]). Nothing is connected to the host's network, so tests can send real
//! traffic through the router and compare what the agent counts with what nftables counted at
//! the far end of the uplink ([`Lab::wan_counters`]).
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Duration;
//!
//! use egress_lab::{Lab, SERVERS_V4, UDP_SINK_PORT, udp_ip_bytes, udp_send};
//!
//! let lab = Lab::new(); // phone, laptop, camera; removed again on drop
//! let servers = lab.start_servers(1_000_000);
//! let to = SocketAddr::new(SERVERS_V4[0].into(), UDP_SINK_PORT);
//! udp_send(&lab.device("phone").ns, to, 100, 10);
//! servers.udp(to.ip()).wait_for(10, Duration::from_secs(2));
//! assert_eq!(lab.wan_count(to.ip()).rx_bytes, 10 * udp_ip_bytes(true, 100));
//! ```
//!
//! With [`LabBuilder::dnsmasq`] and [`LabBuilder::dhcp`] the lab also names things, as a home
//! router does: devices get their addresses by DHCP and send hostnames, the router resolves the
//! lab zone ([`ZONE`]) for them, and an outside resolver lets a device bypass it
//! ([`dns_query`]); TLS servers and clients ([`Lab::start_tls_server`], [`tls_connect`]) send
//! real ClientHellos with chosen server names.
//!
//! Everything needs root; without it, building a lab panics with a message saying so.

pub mod agent;
pub mod alerting;
#[cfg(feature = "bench")]
pub mod bench;
mod counters;
pub mod demo;
mod dhcp;
pub mod dns;
mod dnsmasq;
pub mod frames;
mod lab;
pub mod mmdb;
pub mod netns;
mod process;
mod scrape;
mod scratch;
mod servers;
mod tls;
mod traffic;

pub use counters::{LinkStats, WAN_TABLE, WanCount, link_stats};
pub use dhcp::DHCP_LEASE_SECS;
pub use dns::{
    DNS_PORT, DnsAnswer, DnsData, DnsRecord, OUTSIDE_RESOLVER_V4, OUTSIDE_RESOLVER_V6, RecordType,
    ResponseCode, SHORT_TTL, SHORT_TTL_NAME, ZONE, ZONE_TTL, ZoneName, dns_burst, dns_lookup,
    dns_query, zone_addresses, zone_chain, zone_name,
};
pub use lab::*;
pub use netns::{
    cleanup_stale, exec, exec_ok, exec_ok_stdin, ip_batch, require_root, run_in, spawn,
};
pub use process::LabChild;
pub use servers::Servers;
pub use tls::{TLS_CONNECT_TIMEOUT, TlsOutcome, TlsServer, tls_connect};
pub use traffic::{
    MAX_UDP_PAYLOAD, TCP_SINK_PORT, TCP_SOURCE_PORT, TcpCount, TcpSink, TcpSource, UDP_SINK_PORT,
    UdpCount, UdpSink, ping, tcp_download, tcp_upload, udp_ip_bytes, udp_send, wait_until,
};
