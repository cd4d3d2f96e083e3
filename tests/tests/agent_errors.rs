//! The agent refuses to start, with one clear line and a distinct exit code, when it cannot do
//! its job; and it leaves nothing attached when it does.

use std::{net::TcpListener, time::Duration};

use egress_lab::{
    Lab,
    agent::{AGENT_LISTEN, run_agent_to_exit, write_config},
    run_in,
};

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn nothing_attached(lab: &Lab) {
    let left = egress_lab::agent::lan_programs(lab);
    assert!(
        left.is_empty(),
        "a failed start left programs attached: {left:?}"
    );
}

#[test]
fn a_missing_interface_is_named() {
    let lab = Lab::builder().devices(["phone"]).build();
    let out = run_agent_to_exit(
        &lab,
        &[
            "--lan",
            "br-lan",
            "--lan",
            "nosuch0",
            "--listen",
            AGENT_LISTEN,
        ],
        Duration::from_secs(10),
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("LAN interface `nosuch0` does not exist"),
        "{err}"
    );
    nothing_attached(&lab);
}

#[test]
fn a_bridge_and_its_own_port_would_count_twice() {
    let lab = Lab::builder().devices(["phone"]).build();
    let port = lab.device("phone").router_port.clone();
    let out = run_agent_to_exit(
        &lab,
        &["--lan", "br-lan", "--lan", &port, "--listen", AGENT_LISTEN],
        Duration::from_secs(10),
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("`{port}` is a port of bridge `br-lan`")),
        "{err}"
    );
    nothing_attached(&lab);
}

#[test]
fn a_bad_config_names_the_file_the_line_and_the_key() {
    let lab = Lab::builder().devices(["phone"]).build();
    let path = write_config(&lab, "lan = [\"br-lan\"]\npoll_interval = \"fast\"\n");
    let path_text = path.display().to_string();
    let out = run_agent_to_exit(&lab, &["--config", &path_text], Duration::from_secs(10));
    let _ = std::fs::remove_file(&path);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{path_text}:2:")) && err.contains("poll_interval"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    nothing_attached(&lab);
}

#[test]
fn a_busy_port_is_reported_before_anything_is_attached() {
    let lab = Lab::builder().devices(["phone"]).build();
    let squatter = run_in(lab.router_ns(), || {
        TcpListener::bind(AGENT_LISTEN).expect("bind")
    });
    let out = run_agent_to_exit(
        &lab,
        &["--lan", "br-lan", "--listen", AGENT_LISTEN],
        Duration::from_secs(10),
    );
    drop(squatter);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("already in use"), "{err}");
    nothing_attached(&lab);
}

#[test]
fn without_bpf_permission_the_agent_says_what_it_needs() {
    let lab = Lab::builder().devices(["phone"]).build();
    let bin = egress_lab::agent::agent_binary();
    // Drop to nobody with no capabilities, inside the router namespace.
    let out = run_agent_to_exit_as_nobody(&lab, &bin);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no permission to load eBPF programs"), "{err}");
    assert!(err.contains("CAP_BPF"), "{err}");
    nothing_attached(&lab);
}

fn run_agent_to_exit_as_nobody(lab: &Lab, bin: &std::path::Path) -> std::process::Output {
    let copy = world_readable_copy(lab, bin);
    let bin = copy.as_path();
    let out = egress_lab::exec(
        lab.router_ns(),
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            bin.to_str().unwrap(),
            "--lan",
            "br-lan",
            "--listen",
            "127.0.0.1:9751",
            "--state-dir",
            nobody_state_dir(lab).to_str().unwrap(),
            // Nobody may not write bpffs; this test is about loading.
            "--pin-dir",
            "",
        ],
    );
    let _ = std::fs::remove_file(bin);
    assert!(
        !out.status.success(),
        "the agent started without privileges?\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn runs_as_nobody_with_only_cap_bpf_net_admin_and_perfmon() {
    use std::net::{IpAddr, SocketAddr};

    use egress_lab::{SERVERS_V4, UDP_SINK_PORT, agent::Scrape, udp_send};

    let lab = Lab::builder().devices(["phone"]).build();
    let _servers = lab.start_servers(0);
    let bin = world_readable_copy(&lab, &egress_lab::agent::agent_binary());
    let caps = "-all,+bpf,+net_admin,+perfmon";
    let mut cmd = egress_lab::netns::command(lab.router_ns(), "setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &format!("--inh-caps={caps}"),
        &format!("--ambient-caps={caps}"),
        &format!("--bounding-set={caps}"),
        bin.to_str().unwrap(),
        "--lan",
        "br-lan",
        "--listen",
        AGENT_LISTEN,
        "--poll-interval",
        "200ms",
        "--state-dir",
        nobody_state_dir(&lab).to_str().unwrap(),
        // Pinning needs a pin directory the user may write (see the README's deployment).
        "--pin-dir",
        "",
    ])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let agent = lab.spawn(&mut cmd);
    let listen = AGENT_LISTEN.parse().unwrap();
    let healthy = egress_lab::wait_until(Duration::from_secs(15), || {
        matches!(
            egress_lab::agent::http_get(lab.router_ns(), listen, "/healthz"),
            Some((200, _))
        )
    });
    assert!(
        healthy,
        "not healthy with three capabilities:\n{}",
        agent.log()
    );
    let phone = lab.device("phone");
    udp_send(
        &phone.ns,
        SocketAddr::new(IpAddr::V4(SERVERS_V4[0]), UDP_SINK_PORT),
        100,
        4,
    );
    let settled = egress_lab::wait_until(Duration::from_secs(10), || {
        let body = egress_lab::agent::http_get(lab.router_ns(), listen, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let s = Scrape::parse(&body);
        s.count(
            "egress_device_bytes_total",
            &[("mac", &phone.mac_string()), ("direction", "egress")],
        ) == 4 * 128
    });
    assert!(
        settled,
        "the unprivileged agent did not count:\n{}",
        agent.log()
    );
    let status = agent.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}: {}", agent.log());
    let _ = std::fs::remove_file(&bin);
    nothing_attached(&lab);
}

/// The checkout may sit where nobody cannot reach (/root): a world-readable copy of `bin`.
/// A state directory the unprivileged agent may write, inside the lab's scratch directory
/// (which it may traverse), removed with the lab.
fn nobody_state_dir(lab: &Lab) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = lab.scratch_dir().join("nobody-state");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(lab.scratch_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn world_readable_copy(lab: &Lab, bin: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let copy = std::env::temp_dir().join(format!("{}-egress-monitor", lab.id()));
    std::fs::copy(bin, &copy).expect("copy the agent binary");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

#[test]
fn a_full_device_map_is_counted_and_said_once() {
    use std::net::{IpAddr, SocketAddr};

    use egress_lab::{SERVERS_V4, UDP_SINK_PORT, agent::Agent, udp_send};

    // 16 entries hold 16 (device, direction) totals; the 17th device finds the map full.
    // Servers listen, so no ICMP error comes back to take ingress entries.
    let lab = Lab::builder().device_count(17).build();
    let _servers = lab.start_servers(0);
    let agent = Agent::start(&lab, "device_map_entries = 16\n", &[]);
    let to = SocketAddr::new(IpAddr::V4(SERVERS_V4[0]), UDP_SINK_PORT);
    for device in lab.devices() {
        udp_send(&device.ns, to, 100, 1);
    }
    udp_send(&lab.devices()[16].ns, to, 100, 2);
    let s = agent.settled();
    let totals: Vec<u64> = s
        .matching("egress_device_bytes_total", &[("direction", "egress")])
        .map(|sample| sample.value as u64)
        .collect();
    assert_eq!(
        totals,
        vec![128; 16],
        "16 devices fit in the map, each exact"
    );
    assert_eq!(
        s.count(
            "egress_monitor_kernel_frames_total",
            &[("direction", "egress"), ("result", "device_map_full")]
        ),
        3,
        "the 17th device's 3 datagrams were not counted, and said so"
    );
    let said = agent
        .child()
        .wait_for_log("device map full", Duration::from_secs(5));
    assert!(
        said,
        "the kernel's warning reached the agent's log:\n{}",
        agent.log()
    );
    // Said once per CPU that met the full map, never per frame.
    let times = agent.log().matches("device map full").count();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!((1..=cpus).contains(&times), "said {times} times");
}

#[test]
fn a_log_that_is_not_a_terminal_has_no_colour_codes() {
    // The agent's stderr is a pipe here, as under systemd or procd.
    let lab = Lab::builder().devices(["phone"]).build();
    let agent = egress_lab::agent::Agent::start(&lab, "", &[]);
    let log = agent.log();
    assert!(log.contains("attached"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape sequences in the log:\n{log:?}"
    );
    assert!(agent.stop().success());
}

#[test]
fn a_lease_file_that_is_a_fifo_is_an_error_not_a_hang() {
    // Opening a FIFO for reading waits for a writer: the agent must not.
    let lab = Lab::builder().devices(["phone"]).build();
    let fifo = lab.scratch_dir().join("leases.fifo");
    let path = std::ffi::CString::new(fifo.to_str().expect("UTF-8 path")).expect("no NUL");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    let config = format!(
        "[[leases]]\nformat = \"dnsmasq\"\npath = \"{}\"\n",
        fifo.display()
    );
    let agent = egress_lab::agent::Agent::start(&lab, &config, &[]);
    agent.wait_polls(2);
    assert!(matches!(agent.get("/healthz"), Some((200, _))));
    let s = agent.scrape();
    let errors = s.count(
        "egress_monitor_lease_file_read_errors_total",
        &[("path", fifo.to_str().expect("UTF-8"))],
    );
    assert!(errors >= 1, "no read error counted for the FIFO");
    assert!(
        agent.log().contains("not a regular file (a FIFO)"),
        "{}",
        agent.log()
    );
    let started = std::time::Instant::now();
    let status = agent.child().terminate(Duration::from_secs(5));
    assert!(status.success(), "SIGTERM took {:?}", started.elapsed());
}
