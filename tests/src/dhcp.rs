//! DHCPv4 for the lab's devices: each runs busybox's `udhcpc` once, against the router's
//! dnsmasq, sending its hostname, so that dnsmasq's lease file names the devices as a real
//! router's would.
//!
//! Addresses do not change: dnsmasq hands each MAC its usual address ([`crate::device_ipv4`]).
//! IPv6 stays static.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::lab::{DEVICE_IF, Device, Lab};
use crate::process::LabChild;
use crate::traffic::wait_until;

/// Lease time dnsmasq grants (10 minutes): long enough that no lease expires during a test,
/// while the expiry column still moves on every renewal.
pub const DHCP_LEASE_SECS: u64 = 600;

/// How long one udhcpc run may take: it sends up to 5 discovers a second apart (`-t 5 -T 1`).
const UDHCPC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dnsmasq may take to write a lease after its ACK.
const LEASE_FILE_TIMEOUT: Duration = Duration::from_secs(3);

/// Applies what udhcpc obtained. Debian's busybox ships no default script.
///
/// `deconfig` (sent before every request, renewals included) does nothing: the address is
/// fixed, and flushing it would cut the device's connections while it renews. `replace` makes
/// `bound` and `renew` idempotent. udhcpc passes the prefix length in `$mask`, and `$router`
/// may list several gateways.
const UDHCPC_SCRIPT: &str = "#!/bin/sh
# Written by egress-lab for busybox udhcpc.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
case \"$1\" in
bound|renew)
    ip addr replace \"$ip/$mask\" dev \"$interface\" || exit 1
    if [ -n \"$router\" ]; then
        set -- $router
        ip route replace default via \"$1\" dev \"$interface\" || exit 1
    fi
    ;;
esac
exit 0
";

/// Writes the udhcpc script into the lab directory `dir` (once) and returns its path.
pub(crate) fn script(dir: &Path) -> PathBuf {
    let path = dir.join("udhcpc.sh");
    if !path.exists() {
        std::fs::write(&path, UDHCPC_SCRIPT)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("cannot make {} executable: {e}", path.display()));
    }
    path
}

/// Panics unless `hostname` can be sent as udhcpc's `-x hostname:...` and stored whole in a
/// dnsmasq lease line (space-separated): 1-63 printable ASCII characters, no spaces.
pub(crate) fn validate_hostname(device: &str, hostname: &str) {
    let ok = !hostname.is_empty()
        && hostname.len() <= 63
        && hostname.bytes().all(|b| b.is_ascii_graphic());
    assert!(
        ok,
        "DHCP hostname {hostname:?} of {device:?}: use 1-63 printable ASCII characters, no spaces"
    );
}

/// One line of a dnsmasq lease file: `<expiry> <mac> <ip> <hostname> <client-id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    /// Unix time the lease ends.
    pub(crate) expiry: u64,
    pub(crate) mac: String,
    pub(crate) ip: Ipv4Addr,
    /// `*` when the client sent none (or dnsmasq refused it).
    pub(crate) hostname: String,
}

/// The IPv4 leases in `text`; other lines (IPv6 leases, `duid`) are skipped.
pub(crate) fn parse_leases(text: &str) -> Vec<Lease> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some(Lease {
                expiry: fields.next()?.parse().ok()?,
                mac: fields.next()?.to_ascii_lowercase(),
                ip: fields.next()?.parse().ok()?,
                hostname: fields.next()?.to_owned(),
            })
        })
        .collect()
}

/// Now, in Unix seconds, as dnsmasq's `time()` counts.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Runs udhcpc in every device of `clients` (device, hostname) at once, waits for all to get
/// their lease, then until `lease_file` shows a lease granted by this run for each, at the
/// device's own address. Panics, with udhcpc's and dnsmasq's output, if any of that fails.
///
/// dnsmasq writes the lease file before it sends its ACK (60 renewals in a row, each read the
/// moment udhcpc exited, all showed the new hostname), so once udhcpc is done the file is
/// current; the wait on the file is a safety net.
pub(crate) fn obtain_leases(lab: &Lab, clients: &[(&Device, String)], lease_file: &Path) {
    let script = script(lab.scratch_dir());
    let started = unix_now();
    let runs: Vec<(&Device, LabChild)> = clients
        .iter()
        .map(|(device, hostname)| (*device, spawn_udhcpc(lab, device, hostname, &script)))
        .collect();
    for (device, child) in &runs {
        wait_for_exit(device, child, lab);
    }
    let mut leases = Vec::new();
    let complete = wait_until(LEASE_FILE_TIMEOUT, || {
        leases = parse_leases(&std::fs::read_to_string(lease_file).unwrap_or_default());
        clients.iter().all(|(device, _)| {
            leases
                .iter()
                .any(|l| l.mac == device.mac_string() && l.expiry >= started + DHCP_LEASE_SECS)
        })
    });
    assert!(
        complete,
        "dnsmasq's lease file {} lacks a new lease for some of {:?}: {leases:?}\ndnsmasq log:\n{}",
        lease_file.display(),
        clients.iter().map(|(d, _)| &d.name).collect::<Vec<_>>(),
        lab.dnsmasq_log()
    );
    for (device, _) in clients {
        let lease = leases
            .iter()
            .find(|l| l.mac == device.mac_string())
            .expect("checked above");
        assert_eq!(
            lease.ip, device.ipv4,
            "dnsmasq leased {} another address than its fixed one",
            device.name
        );
    }
}

fn spawn_udhcpc(lab: &Lab, device: &Device, hostname: &str, script: &Path) -> LabChild {
    let hostname_option = format!("hostname:{hostname}");
    let script = script.to_string_lossy();
    lab.spawn_in(
        &device.ns,
        "busybox",
        &[
            "udhcpc",
            "-i",
            DEVICE_IF,
            "-n", // give up (exit 1) rather than retry forever
            "-q", // exit once bound
            "-t",
            "5",
            "-T",
            "1",
            "-x",
            hostname_option.as_str(),
            "-s",
            script.as_ref(),
        ],
    )
}

fn wait_for_exit(device: &Device, child: &LabChild, lab: &Lab) {
    let deadline = Instant::now() + UDHCPC_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill();
            panic!(
                "udhcpc in {} did not finish within {UDHCPC_TIMEOUT:?}; its output:\n{}",
                device.name,
                child.log()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        status.success(),
        "udhcpc in {} failed ({status}); its output:\n{}\ndnsmasq log:\n{}",
        device.name,
        child.log(),
        lab.dnsmasq_log()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dnsmasq_leases() {
        let text = "1795770651 00:16:3E:00:00:01 192.168.50.11 phone 01:00:16:3e:00:00:01\n\
                    1795770652 00:16:3e:00:00:02 192.168.50.12 * *\n\
                    duid 00:01:00:01:2c:ad:be:ef\n\
                    1795770653 1234 2001:db8:50::99 v6host 00:01\n";
        let leases = parse_leases(text);
        assert_eq!(
            leases,
            [
                Lease {
                    expiry: 1_795_770_651,
                    mac: "00:16:3e:00:00:01".into(),
                    ip: Ipv4Addr::new(192, 168, 50, 11),
                    hostname: "phone".into(),
                },
                Lease {
                    expiry: 1_795_770_652,
                    mac: "00:16:3e:00:00:02".into(),
                    ip: Ipv4Addr::new(192, 168, 50, 12),
                    hostname: "*".into(),
                },
            ]
        );
    }

    #[test]
    fn hostnames() {
        validate_hostname("d", "Living_Room-TV.local");
    }

    #[test]
    #[should_panic(expected = "no spaces")]
    fn hostnames_with_spaces_are_refused() {
        validate_hostname("d", "Living Room");
    }
}
