//! Each variant in place and gone again: the agent, tcpdump, the nftables set and conntrack
//! accounting started in the router namespace, and at the end the check that it counted.

use std::time::Duration;

use serde_json::Value;

use super::Variant;
use crate::agent::Agent;
use crate::netns::{exec, exec_ok, exec_ok_stdin, sysctl};
use crate::{LAN_BRIDGE, Lab, LabChild};

/// The router's table for [`Variant::NftSet`].
const NFT_SET_TABLE: &str = "egl_bench_flows";

/// A variant while it runs.
pub(super) enum Active {
    None,
    Agent(Agent),
    Tcpdump(LabChild),
    NftSet,
    ConntrackAcct,
}

impl Active {
    /// Starts `variant` and returns once it is in place (and has settled).
    pub(super) fn start(lab: &Lab, variant: Variant, settle: Duration) -> Active {
        let router = lab.router_ns();
        let active = match variant {
            Variant::None => Active::None,
            Variant::EgressMonitor => Active::Agent(Agent::start_with_poll(lab, "", &[], "1s")),
            Variant::Tcpdump => {
                let child = lab.spawn_in(
                    router,
                    "tcpdump",
                    &["-i", LAN_BRIDGE, "-w", "/dev/null", "-s", "0", "-n"],
                );
                assert!(
                    child.wait_for_log("listening on", Duration::from_secs(10)),
                    "tcpdump did not start listening on {LAN_BRIDGE} within 10 s: {}",
                    child.log()
                );
                Active::Tcpdump(child)
            }
            Variant::NftSet => {
                exec_ok_stdin(router, "nft", &["-f", "-"], &nft_set_ruleset());
                Active::NftSet
            }
            Variant::ConntrackAcct => {
                sysctl(router, "net/netfilter/nf_conntrack_acct", "1");
                Active::ConntrackAcct
            }
        };
        std::thread::sleep(settle);
        active
    }

    /// The variant's own process, whose CPU time counts.
    pub(super) fn pid(&self) -> Option<u32> {
        match self {
            Active::Agent(agent) => Some(agent.child().pid()),
            Active::Tcpdump(child) => Some(child.pid()),
            _ => None,
        }
    }

    /// Stops the variant after checking that it counted something; returns what the check
    /// found, or panics if it counted nothing.
    pub(super) fn stop(self, lab: &Lab) -> Option<String> {
        let router = lab.router_ns();
        match self {
            Active::None => None,
            Active::Agent(agent) => {
                let status = agent.stop();
                assert!(status.success(), "the agent exited with {status}");
                None
            }
            Active::Tcpdump(child) => {
                child.terminate(Duration::from_secs(5));
                let log = child.log();
                let stats = parse_tcpdump_stats(&log)
                    .unwrap_or_else(|| panic!("tcpdump printed no capture statistics: {log}"));
                assert!(stats.captured > 0, "tcpdump captured nothing: {log}");
                Some(format!(
                    "tcpdump captured {} packets, {} dropped by the kernel",
                    stats.captured, stats.dropped
                ))
            }
            Active::NftSet => {
                let json = exec_ok(
                    router,
                    "nft",
                    &["-j", "list", "set", "inet", NFT_SET_TABLE, "flows"],
                );
                let (elements, packets) = nft_set_counters(&json);
                exec_ok(router, "nft", &["delete", "table", "inet", NFT_SET_TABLE]);
                assert!(
                    packets > 0,
                    "the nft set counted no packets; `nft -j list set` printed: {json}"
                );
                Some(format!(
                    "nft set: {elements} elements, {packets} packets counted"
                ))
            }
            Active::ConntrackAcct => {
                let listed = exec(router, "conntrack", &["-L"]);
                sysctl(router, "net/netfilter/nf_conntrack_acct", "0");
                let text = String::from_utf8_lossy(&listed.stdout);
                let packets = conntrack_packets(&text);
                assert!(
                    packets > 0,
                    "conntrack entries carry no counters with nf_conntrack_acct=1: {text}"
                );
                Some(format!(
                    "conntrack: {} entries, {packets} packets counted on those still listed",
                    text.lines().count()
                ))
            }
        }
    }
}

fn nft_set_ruleset() -> String {
    format!(
        "table inet {NFT_SET_TABLE} {{\n\
         \x20 set flows {{\n\
         \x20   type ether_addr . ipv4_addr\n\
         \x20   flags dynamic\n\
         \x20   size 65536\n\
         \x20   counter\n\
         \x20 }}\n\
         \x20 chain count_flows {{\n\
         \x20   type filter hook forward priority filter - 10; policy accept;\n\
         \x20   iifname \"{LAN_BRIDGE}\" update @flows {{ ether saddr . ip daddr }}\n\
         \x20 }}\n\
         }}\n"
    )
}

/// Elements and the sum of their packet counters in `nft -j list set` output.
fn nft_set_counters(json: &str) -> (u64, u64) {
    let doc: Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("nft printed invalid JSON ({e}): {json}"));
    let mut elements = 0;
    let mut packets = 0;
    let sets = doc["nftables"].as_array().into_iter().flatten();
    for set in sets.filter_map(|item| item.get("set")) {
        for elem in set["elem"].as_array().into_iter().flatten() {
            elements += 1;
            packets += elem["elem"]["counter"]["packets"].as_u64().unwrap_or(0);
        }
    }
    (elements, packets)
}

/// The sum of `packets=` fields in `conntrack -L` output.
fn conntrack_packets(text: &str) -> u64 {
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix("packets="))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// tcpdump's statistics at exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpdumpStats {
    captured: u64,
    dropped: u64,
}

fn parse_tcpdump_stats(log: &str) -> Option<TcpdumpStats> {
    let find = |suffix: &str| {
        log.lines()
            .find_map(|l| l.trim().strip_suffix(suffix)?.trim().parse::<u64>().ok())
    };
    Some(TcpdumpStats {
        captured: find("packets captured")?,
        dropped: find("packets dropped by kernel")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcpdump_statistics() {
        let log = "tcpdump: listening on br-lan, link-type EN10MB (Ethernet), snapshot length \
                   262144 bytes\n120 packets captured\n121 packets received by filter\n\
                   1 packets dropped by kernel\n";
        assert_eq!(
            parse_tcpdump_stats(log),
            Some(TcpdumpStats {
                captured: 120,
                dropped: 1
            })
        );
        assert_eq!(parse_tcpdump_stats("tcpdump: listening on br-lan\n"), None);
    }

    #[test]
    fn parses_nft_set_counters() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet",
            "name": "flows", "table": "egl_bench_flows", "type": ["ether_addr", "ipv4_addr"],
            "handle": 2, "size": 65536, "flags": ["dynamic"], "elem": [
            {"elem": {"val": {"concat": ["00:16:3e:00:00:01", "192.0.2.10"]},
                      "counter": {"packets": 7, "bytes": 644}}},
            {"elem": {"val": {"concat": ["00:16:3e:00:00:02", "192.0.2.20"]},
                      "counter": {"packets": 3, "bytes": 276}}}]}}]}"#;
        assert_eq!(nft_set_counters(json), (2, 10));
    }

    #[test]
    fn parses_conntrack_counters() {
        let text = "udp      17 29 src=192.168.50.11 dst=192.0.2.10 sport=40000 dport=9000 \
                    packets=5 bytes=460 [UNREPLIED] src=192.0.2.10 dst=198.51.100.1 \
                    sport=9000 dport=40000 packets=0 bytes=0 mark=0 use=1\n";
        assert_eq!(conntrack_packets(text), 5);
        assert_eq!(conntrack_packets("udp 17 29 src=1.2.3.4 dport=9000\n"), 0);
    }
}
