//! The agent's threads and its stop: a thread that dies stops the agent with a non-zero exit
//! (never a process that serves frozen numbers and exits 0), and no HTTP client, however slow
//! or silent, holds up SIGTERM.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use egress_lab::{
    Lab,
    agent::{AGENT_LISTEN, Agent, lan_programs, run_agent_to_exit_with_env},
    run_in,
};

fn dies_with(thread: &str) {
    let lab = Lab::builder().devices(["phone"]).build();
    let out = run_agent_to_exit_with_env(
        &lab,
        &["--lan", "br-lan", "--listen", AGENT_LISTEN],
        &[("EGRESS_MONITOR_TEST_PANIC", thread)],
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status {}: {err}",
        out.status
    );
    assert!(
        err.contains(&format!(
            "egress-monitor: the {thread} thread panicked: EGRESS_MONITOR_TEST_PANIC={thread}"
        )),
        "{err}"
    );
    // Pinned, the programs count on for the agent the service manager starts next.
    assert_eq!(
        lan_programs(&lab),
        egress_lab::agent::expected_lan_programs(&lab),
        "the programs stay attached, pinned"
    );
}

#[test]
fn a_poller_panic_stops_the_agent_with_a_non_zero_exit() {
    dies_with("poller");
}

#[test]
fn a_sniff_thread_panic_stops_the_agent_with_a_non_zero_exit() {
    // The poller notices the sniff thread is gone and stops; the error names the sniff thread.
    dies_with("sniff");
}

#[test]
fn silent_and_half_sent_http_clients_do_not_hold_up_sigterm() {
    let lab = Lab::builder().devices(["phone"]).build();
    let agent = Agent::start(&lab, "", &[]);
    let listen: SocketAddr = AGENT_LISTEN.parse().expect("address");
    let clients = run_in(lab.router_ns(), move || {
        let silent = TcpStream::connect(listen).expect("connect");
        let mut half = TcpStream::connect(listen).expect("connect");
        half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .expect("write");
        (silent, half)
    });
    // Let the agent take both connections in.
    std::thread::sleep(Duration::from_millis(300));
    let took = agent.terminate_within(Duration::from_secs(5));
    eprintln!("SIGTERM with a silent and a half-sent client: exit after {took:?}");
    drop(clients);
}
