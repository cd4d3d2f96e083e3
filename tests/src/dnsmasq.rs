//! The two dnsmasq instances of a lab: the router's resolver and DHCP server on `br-lan`, and the
//! outside resolver in the WAN namespace. Both serve [`crate::ZONE`] and nothing else.
//!
//! Each gets a configuration file of its own in the lab directory and nothing else: naming a
//! `--conf-file` stops dnsmasq from reading `/etc/dnsmasq.conf`, `no-resolv` and `no-hosts` keep
//! it from `/etc/resolv.conf` and `/etc/hosts`, there is no `server=` line, and `local=/#/`
//! makes every name outside the zone a local NXDOMAIN, so no query is ever forwarded. The lease
//! and pid files are in the lab directory too.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dhcp::DHCP_LEASE_SECS;
use crate::dns::{OUTSIDE_RESOLVER_V4, OUTSIDE_RESOLVER_V6, dnsmasq_zone_lines};
use crate::lab::{Device, Lab, ROUTER_LAN_V4, ROUTER_LAN_V6};
use crate::process::LabChild;

/// Debian's dnsmasq-base puts it here, outside a normal user's PATH.
const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// How long dnsmasq may take to start (it reads no zone file; it is ready in milliseconds).
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// The lease file of the router's dnsmasq, in the lab directory `dir`.
pub(crate) fn lease_file(dir: &Path) -> PathBuf {
    dir.join("dnsmasq.leases")
}

/// Options both instances share: where to listen, what never to read, what to log.
fn common_config(dir: &Path, name: &str, listen: [IpAddr; 2]) -> String {
    let mut conf = format!(
        "# egress-lab: {name} dnsmasq. Answers from the lab zone only and forwards nothing.\n\
         port=53\n\
         bind-interfaces\n\
         no-resolv\n\
         no-hosts\n\
         local=/#/\n\
         pid-file={pid}\n\
         log-queries\n",
        pid = dir.join(format!("{name}-dnsmasq.pid")).display(),
    );
    for addr in listen {
        writeln!(conf, "listen-address={addr}").expect("writing to a String");
    }
    conf += &dnsmasq_zone_lines();
    conf
}

/// The router's configuration: DNS on `br-lan`'s addresses, and with `dhcp_devices` DHCPv4 that
/// only hands out the fixed address of each of those devices (`static` range, one `dhcp-host`
/// per MAC), advertising the router as gateway and resolver.
pub(crate) fn router_config(dir: &Path, dhcp_devices: Option<&[Device]>) -> String {
    let mut conf = common_config(dir, "router", [ROUTER_LAN_V4.into(), ROUTER_LAN_V6.into()]);
    // Set even without DHCP, so that dnsmasq never touches the system's lease file.
    writeln!(conf, "dhcp-leasefile={}", lease_file(dir).display()).expect("writing to a String");
    let Some(devices) = dhcp_devices else {
        return conf;
    };
    let minutes = DHCP_LEASE_SECS / 60;
    write!(
        conf,
        "log-dhcp\n\
         dhcp-authoritative\n\
         no-ping\n\
         dhcp-range={network},static,255.255.255.0,{minutes}m\n\
         dhcp-option=option:router,{ROUTER_LAN_V4}\n\
         dhcp-option=option:dns-server,{ROUTER_LAN_V4}\n",
        network = crate::lab::lan_v4_network(),
    )
    .expect("writing to a String");
    for d in devices {
        writeln!(conf, "dhcp-host={},{}", d.mac_string(), d.ipv4).expect("writing to a String");
    }
    conf
}

/// The outside resolver's configuration: DNS only, on its addresses in the WAN namespace.
pub(crate) fn outside_config(dir: &Path) -> String {
    common_config(
        dir,
        "outside",
        [OUTSIDE_RESOLVER_V4.into(), OUTSIDE_RESOLVER_V6.into()],
    )
}

/// Writes `config` to `{dir}/{name}-dnsmasq.conf` and starts dnsmasq with it in namespace `ns`,
/// tracked by `lab`, logging to its [`LabChild::log`]. Does not wait; see [`wait_started`].
pub(crate) fn spawn(lab: &Lab, ns: &str, name: &str, config: &str) -> LabChild {
    let path = lab.scratch_dir().join(format!("{name}-dnsmasq.conf"));
    std::fs::write(&path, config)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    let conf_file = format!("--conf-file={}", path.display());
    lab.spawn_in(
        ns,
        DNSMASQ,
        &[
            "--keep-in-foreground",
            "--log-facility=-",
            // Also in the file; repeated here so that they hold whatever the file says.
            "--no-resolv",
            "--no-hosts",
            conf_file.as_str(),
        ],
    )
}

/// Waits until dnsmasq has bound its sockets (it logs "started" after binding, and exits with a
/// message if it cannot); panics with its log otherwise.
pub(crate) fn wait_started(child: &LabChild, name: &str) {
    if !child.wait_for_log("started, version", START_TIMEOUT) || !child.is_running() {
        panic!(
            "the {name} dnsmasq did not start ({:?}); its log:\n{}",
            child.try_wait(),
            child.log()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{device_ipv4, device_ipv6, device_mac};

    fn device(index: u8) -> Device {
        Device {
            index,
            name: format!("d{index}"),
            ns: String::new(),
            router_port: String::new(),
            mac: device_mac(index),
            ipv4: device_ipv4(index),
            ipv6: device_ipv6(index),
        }
    }

    #[test]
    fn router_config_pins_every_device_and_forwards_nothing() {
        let dir = Path::new("/tmp/egl-1-0");
        let conf = router_config(dir, Some(&[device(1), device(2)]));
        for line in [
            "listen-address=192.168.50.1",
            "listen-address=2001:db8:50::1",
            "no-resolv",
            "local=/#/",
            "dhcp-leasefile=/tmp/egl-1-0/dnsmasq.leases",
            "dhcp-range=192.168.50.0,static,255.255.255.0,10m",
            "dhcp-host=00:16:3e:00:00:01,192.168.50.11",
            "dhcp-host=00:16:3e:00:00:02,192.168.50.12",
            "cname=cdn.vendor.example,edge.cdn-provider.example,300",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "{line:?} missing in\n{conf}"
            );
        }
        assert!(!conf.contains("server="), "{conf}");
        let dns_only = router_config(dir, None);
        assert!(!dns_only.contains("dhcp-range"), "{dns_only}");
    }

    #[test]
    fn outside_config_listens_on_its_own_addresses() {
        let conf = outside_config(Path::new("/tmp/egl-1-0"));
        assert!(conf.contains("listen-address=203.0.113.53\n"), "{conf}");
        assert!(conf.contains("listen-address=2001:db8:2::53\n"), "{conf}");
        assert!(!conf.contains("dhcp"), "{conf}");
    }
}
