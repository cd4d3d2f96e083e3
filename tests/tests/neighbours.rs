//! `monitor::kernel::neighbours::dump` against real neighbour tables: two namespaces joined by a veth
//! pair, with static entries and entries learned by a ping, each side dumped from inside.
//!
//! Needs root, like every lab test; without it, it fails saying so.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egress_lab::netns::{self, Namespaces};
use egress_lab::ping;
use monitor::kernel::neighbours::{self, Neighbour};
use monitor::types::MacAddr;

const A_IF: &str = "veth-a";
const B_IF: &str = "veth-b";
/// Fixed interface indexes, unlike the 2 a new namespace's first interface would get, so that
/// the test sees the index of the interface and not a coincidence.
const A_INDEX: u32 = 7;
const B_INDEX: u32 = 9;
const A_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x0a];
const B_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x0b];
const A_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const A_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const B_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// Static entries in namespace a: address, MAC, `nud` state, and whether `dump` reports them
/// (`Some(reachable)`) or leaves them out (`None`).
const STATIC: [(&str, [u8; 6], &str, Option<bool>); 6] = [
    (
        "192.0.2.99",
        [0x00, 0x16, 0x3e, 0xaa, 0xbb, 0xcc],
        "permanent",
        Some(true),
    ),
    (
        "2001:db8::99",
        [0x00, 0x16, 0x3e, 0xaa, 0xbb, 0xdd],
        "permanent",
        Some(true),
    ),
    (
        "192.0.2.98",
        [0x00, 0x16, 0x3e, 0xaa, 0xbb, 0xee],
        "stale",
        Some(false),
    ),
    (
        "192.0.2.97",
        [0x00, 0x16, 0x3e, 0xaa, 0xbb, 0xff],
        "noarp",
        None,
    ),
    (
        "192.0.2.96",
        [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01],
        "permanent",
        None,
    ),
    ("2001:db8::96", [0x00; 6], "permanent", None),
];

fn mac_string(mac: [u8; 6]) -> String {
    MacAddr(mac).to_string()
}

fn neighbour(ifindex: u32, mac: [u8; 6], addr: IpAddr, reachable: bool) -> Neighbour {
    Neighbour {
        ifindex,
        mac: MacAddr(mac),
        addr,
        reachable,
    }
}

/// What `ip neigh` shows in namespace `ns`, for failure messages.
fn ip_neigh(ns: &str) -> String {
    let out = netns::exec(ns, "ip", &["neigh", "show", "nud", "all"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `dump` finds in namespace `ns`, in address order.
fn dump_in(ns: &str) -> Vec<Neighbour> {
    let mut entries = netns::run_in(ns, neighbours::dump)
        .unwrap_or_else(|e| panic!("dumping the neighbours of {ns}: {e}"));
    entries.sort_by_key(|n| n.addr);
    entries
}

#[test]
fn dump_reports_the_static_and_learned_entries_of_its_own_namespace() {
    netns::require_root("the neighbour table test (network namespaces)");
    let namespaces = Namespaces::new(&["a", "b"]);
    let (a, b) = (namespaces.name("a"), namespaces.name("b"));

    netns::ip_batch(
        a,
        &format!(
            "link add {A_IF} index {A_INDEX} address {a_mac} type veth \
               peer name {B_IF} index {B_INDEX} address {b_mac} netns {b}\n",
            a_mac = mac_string(A_MAC),
            b_mac = mac_string(B_MAC),
        ),
    );
    netns::ip_batch(
        b,
        &format!(
            "addr add {B_V4}/24 dev {B_IF}\n\
             addr add {B_V6}/64 dev {B_IF}\n\
             link set {B_IF} up\n"
        ),
    );
    // Static entries only once the link is up: losing the carrier flushes all but permanent ones.
    let mut script = format!(
        "addr add {A_V4}/24 dev {A_IF}\n\
         addr add {A_V6}/64 dev {A_IF}\n\
         link set {A_IF} up\n"
    );
    for (addr, mac, state, _) in STATIC {
        script.push_str(&format!(
            "neigh add {addr} lladdr {} dev {A_IF} nud {state}\n",
            mac_string(mac)
        ));
    }
    netns::ip_batch(a, &script);

    // One echo each way (egress_lab::ping: in-process, 1 s per try, at most 3 tries): a resolves
    // b (reachable: b answered), b learns a from a's request and uses it for its reply (delay).
    for to in [IpAddr::V4(B_V4), IpAddr::V6(B_V6)] {
        assert!(ping(a, to), "no answer from {to} to a ping from {a}");
    }

    let mut expected_a: Vec<Neighbour> = STATIC
        .iter()
        .filter_map(|&(addr, mac, _, reported)| {
            let addr = addr.parse().expect("test address");
            reported.map(|reachable| neighbour(A_INDEX, mac, addr, reachable))
        })
        .chain([
            neighbour(A_INDEX, B_MAC, B_V4.into(), true),
            neighbour(A_INDEX, B_MAC, B_V6.into(), true),
        ])
        .collect();
    expected_a.sort_by_key(|n| n.addr);
    let got_a = dump_in(a);
    assert_eq!(
        got_a,
        expected_a,
        "neighbours of {a}; `ip neigh` says:\n{}",
        ip_neigh(a)
    );

    // b's own table: only what it learned, none of a's static entries.
    let expected_b = vec![
        neighbour(B_INDEX, A_MAC, A_V4.into(), true),
        neighbour(B_INDEX, A_MAC, A_V6.into(), true),
    ];
    let got_b = dump_in(b);
    assert_eq!(
        got_b,
        expected_b,
        "neighbours of {b}; `ip neigh` says:\n{}",
        ip_neigh(b)
    );
}
