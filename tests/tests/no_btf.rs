//! Stock OpenWrt kernels are built without BTF (`/sys/kernel/btf/vmlinux` is absent). The
//! programs use no CO-RE and no BTF-only feature, so the agent loads, attaches and counts
//! exactly without it. Here the file is hidden from the agent by an empty tmpfs in a mount
//! namespace of its own; `cargo xtask vm` runs this on every kernel of the matrix.

use std::net::{IpAddr, SocketAddr};

use egress_lab::{
    Lab, SERVERS_V4, SERVERS_V6, TCP_SINK_PORT, UDP_SINK_PORT, agent::Agent, tcp_upload,
    udp_ip_bytes, udp_send,
};

const DEVICES_CONFIG: &str = r#"
[devices]
"00:16:3e:00:00:01" = "phone"
"#;

#[test]
fn without_kernel_btf_the_agent_loads_and_counts_exactly() {
    let lab = Lab::new();
    let _servers = lab.start_servers(0);
    let agent = Agent::start_without_btf(&lab, DEVICES_CONFIG);
    let phone = lab.device("phone");
    let v4 = IpAddr::V4(SERVERS_V4[0]);
    let v6 = IpAddr::V6(SERVERS_V6[0]);
    udp_send(&phone.ns, SocketAddr::new(v4, UDP_SINK_PORT), 200, 10);
    udp_send(&phone.ns, SocketAddr::new(v6, UDP_SINK_PORT), 300, 10);
    let tcp = IpAddr::V4(SERVERS_V4[1]);
    tcp_upload(&phone.ns, SocketAddr::new(tcp, TCP_SINK_PORT), 200_000);
    let s = agent.settled();
    let wan = lab.wan_count(tcp);
    for (dest, bytes, packets) in [
        (v4, 10 * udp_ip_bytes(true, 200), 10),
        (v6, 10 * udp_ip_bytes(false, 300), 10),
        (tcp, wan.rx_bytes, wan.rx_packets),
    ] {
        assert_eq!(
            s.destination("phone", "egress", &dest.to_string()),
            (bytes, packets),
            "phone -> {dest}"
        );
    }
    assert!(wan.rx_packets > 100, "the upload crossed the uplink");
    assert!(agent.stop().success());
}
