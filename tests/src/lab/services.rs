//! What runs in the lab besides the network: dnsmasq on the router (DNS, and DHCP) and as the
//! outside resolver in the WAN namespace, the TLS servers, and the servers behind
//! [`crate::SERVERS`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::{Lab, ROUTER_LAN_V4, SERVERS};
use crate::dnsmasq;
use crate::process::LabChild;
use crate::servers::Servers;
use crate::tls::{self, TlsServer};

/// The dnsmasq processes of a lab.
pub(super) struct Resolvers {
    /// On the router, for the LAN (and its DHCP server).
    router: LabChild,
    /// In the WAN namespace.
    outside: LabChild,
}

impl Lab {
    /// The router's dnsmasq lease file (`<expiry> <mac> <ip> <hostname> <client-id>` per
    /// line), as an agent on the router would read it. Panics unless the lab has DHCP.
    pub fn lease_file(&self) -> PathBuf {
        assert!(
            self.dhcp,
            "the lab has no lease file: build it with .dhcp(true)"
        );
        dnsmasq::lease_file(self.scratch_dir())
    }

    /// The router's dnsmasq. Panics unless the lab was built with
    /// [`LabBuilder::dnsmasq`](crate::LabBuilder::dnsmasq).
    pub fn dnsmasq(&self) -> &LabChild {
        &self.resolvers().router
    }

    /// What the router's dnsmasq logged so far: every query and answer, and DHCP in detail.
    pub fn dnsmasq_log(&self) -> String {
        self.dns
            .as_ref()
            .map_or_else(|| "(the lab runs no dnsmasq)".into(), |r| r.router.log())
    }

    /// The outside resolver's dnsmasq, in the WAN namespace.
    pub fn outside_resolver(&self) -> &LabChild {
        &self.resolvers().outside
    }

    fn resolvers(&self) -> &Resolvers {
        self.dns
            .as_ref()
            .expect("the lab runs no dnsmasq: build it with .dnsmasq(true)")
    }

    /// Resolves `name` (A) through the router's dnsmasq, from `device`, as its stub resolver
    /// would; its first address. Panics if there is none.
    pub fn resolve(&self, device: &str, name: &str) -> IpAddr {
        let router = IpAddr::V4(ROUTER_LAN_V4);
        let addrs = crate::dns_query(
            &self.device(device).ns,
            router,
            name,
            crate::RecordType::A,
            false,
        );
        *addrs
            .first()
            .unwrap_or_else(|| panic!("{name} resolved to nothing"))
    }

    /// Starts a TLS server ([`TlsServer`], `openssl s_server` with a throwaway self-signed
    /// certificate) on `addr:port` in the WAN namespace. `addr` must be one of the WAN's
    /// addresses: a server in [`SERVERS`], or an outside resolver address (a DNS-over-TLS
    /// look-alike on port 853). Stops when the returned server or the lab is dropped.
    pub fn start_tls_server(&self, addr: IpAddr, port: u16) -> TlsServer {
        let (cert, key) = self
            .tls_cert
            .get_or_init(|| tls::make_certificate(&self.wan, self.scratch_dir()));
        TlsServer::start(self, &self.wan, SocketAddr::new(addr, port), cert, key)
    }

    /// Starts servers on every address of [`SERVERS`] (see [`Servers::start`]); the TCP
    /// sources send `download_bytes` per connection.
    pub fn start_servers(&self, download_bytes: u64) -> Servers {
        Servers::start(&self.wan, &SERVERS, download_bytes)
    }

    /// Starts both dnsmasq instances at once and waits until they serve.
    pub(super) fn start_dnsmasq(&self) -> Resolvers {
        let dir = self.scratch_dir();
        let dhcp_devices = self.dhcp.then_some(self.devices.as_slice());
        let router = dnsmasq::spawn(
            self,
            &self.router,
            "router",
            &dnsmasq::router_config(dir, dhcp_devices),
        );
        let outside = dnsmasq::spawn(self, &self.wan, "outside", &dnsmasq::outside_config(dir));
        dnsmasq::wait_started(&router, "router");
        dnsmasq::wait_started(&outside, "outside");
        Resolvers { router, outside }
    }
}
