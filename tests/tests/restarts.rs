//! Counting goes on across restarts: the maps and links are pinned, the programs count while
//! no agent runs, and the next agent adopts them. A steady stream crosses a SIGTERM, a SIGKILL
//! and a restart with other map sizes: every byte is counted once, exactly, and no counter
//! ever goes back. Pins of an unknown layout are replaced, never read; `egress-monitor detach`
//! removes everything.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use egress_lab::{
    Lab, SERVERS_V4, UDP_SINK_PORT,
    agent::{Agent, Scrape, lan_programs, run_agent_to_exit, state_dir},
    udp_ip_bytes, udp_send,
};

const CONFIG: &str = r#"
[devices]
"00:16:3e:00:00:01" = "phone"
"#;
const PAYLOAD: usize = 100;
/// Datagrams per burst, and bursts: 3,000 datagrams over about 3 s.
const BURST: u32 = 25;
const BURSTS: u32 = 120;
const BURST_PAUSE: Duration = Duration::from_millis(25);

/// A stream of UDP datagrams from the phone, in the background; how many were sent so far.
struct Stream {
    sent: Arc<AtomicU64>,
    sender: Option<thread::JoinHandle<()>>,
}

impl Stream {
    fn start(lab: &Lab) -> Stream {
        let ns = lab.device("phone").ns.clone();
        let to = SocketAddr::new(IpAddr::V4(SERVERS_V4[0]), UDP_SINK_PORT);
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let sender = thread::spawn(move || {
            for _ in 0..BURSTS {
                udp_send(&ns, to, PAYLOAD, BURST);
                counter.fetch_add(u64::from(BURST), Ordering::SeqCst);
                thread::sleep(BURST_PAUSE);
            }
        });
        Stream {
            sent,
            sender: Some(sender),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Waits for the last datagram; the number sent.
    fn finish(mut self) -> u64 {
        self.sender.take().unwrap().join().expect("the sender");
        self.sent()
    }
}

/// The phone's egress total and its one destination, as `agent` exports them now; None
/// before its first poll is published.
fn counts(agent: &Agent) -> Option<[(u64, u64); 2]> {
    let s = agent.scrape();
    let labels = [("device", "phone"), ("direction", "egress")];
    s.value("egress_device_bytes_total", &labels)?;
    Some(phone_counts(&s))
}

fn phone_counts(s: &Scrape) -> [(u64, u64); 2] {
    [
        s.device_total("phone", "egress"),
        s.destination("phone", "egress", &SERVERS_V4[0].to_string()),
    ]
}

fn start_kind(agent: &Agent) -> Vec<String> {
    let s = agent.scrape();
    ["fresh", "adopted", "resized", "replaced", "unpinned"]
        .into_iter()
        .filter(|k| s.value("egress_monitor_kernel_start_info", &[("start", k)]) == Some(1.0))
        .map(str::to_owned)
        .collect()
}

/// Scrapes until `until` passes, checking no counter goes back; the samples.
fn sample(agent: &Agent, until: Instant, last: &mut [(u64, u64); 2], samples: &mut usize) {
    while Instant::now() < until {
        let Some(now) = counts(agent) else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        for (i, (n, l)) in now.iter().zip(last.iter()).enumerate() {
            assert!(
                n.0 >= l.0 && n.1 >= l.1,
                "counter {i} went back from {l:?} to {n:?}\n{}",
                agent.log()
            );
        }
        *last = now;
        *samples += 1;
        thread::sleep(Duration::from_millis(50));
    }
}

/// How the first agent goes.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Term,
    Kill,
}

/// A stream across a restart of the agent: exact at the end, monotonic throughout.
fn across_a_restart(stop: Stop, first_config: &str, second_config: &str, second_start: &str) {
    let lab = Lab::new();
    let _servers = lab.start_servers(0);
    let first = Agent::start(&lab, first_config, &[]);
    assert_eq!(start_kind(&first), ["fresh"], "{}", first.log());
    let stream = Stream::start(&lab);
    let mut last = [(0, 0); 2];
    let mut samples = 0;
    sample(
        &first,
        Instant::now() + Duration::from_millis(700),
        &mut last,
        &mut samples,
    );
    assert!(stream.sent() > 0, "the stream started");
    match stop {
        Stop::Term => assert!(first.stop().success(), "a clean stop"),
        Stop::Kill => {
            first.child().kill();
        }
    }
    // No agent for a while: the pinned programs count on.
    let during_gap = stream.sent();
    thread::sleep(Duration::from_millis(400));
    let after_gap = stream.sent();
    assert!(
        after_gap > during_gap,
        "the stream went on while no agent ran"
    );
    let second = Agent::start(&lab, second_config, &[]);
    assert_eq!(start_kind(&second), [second_start], "{}", second.log());
    sample(
        &second,
        Instant::now() + Duration::from_millis(300),
        &mut last,
        &mut samples,
    );
    let sent = stream.finish();
    assert_eq!(sent, u64::from(BURST * BURSTS));
    let expected = (sent * udp_ip_bytes(true, PAYLOAD), sent);
    let settled = second.settled();
    let now = phone_counts(&settled);
    for (n, l) in now.iter().zip(last.iter()) {
        assert!(n.0 >= l.0 && n.1 >= l.1, "went back from {l:?} to {n:?}");
    }
    assert_eq!(
        now,
        [expected, expected],
        "{stop:?}: the device total and its destination hold every byte once ({samples} scrapes)\n{}",
        second.log()
    );
    println!(
        "{stop:?} then a {second_start} start: {} datagrams, {} bytes, lost {} bytes, {samples} scrapes, none went back",
        sent,
        expected.0,
        expected.0 - now[0].0
    );
}

#[test]
fn a_stream_across_sigterm_and_start_is_counted_exactly() {
    across_a_restart(Stop::Term, CONFIG, CONFIG, "adopted");
}

#[test]
fn a_stream_across_sigkill_and_start_is_counted_exactly() {
    across_a_restart(Stop::Kill, CONFIG, CONFIG, "adopted");
}

/// clsact filters (kernels before 6.6): the next agent swaps its program into each filter.
#[test]
fn a_stream_across_sigkill_and_start_with_clsact_filters_is_counted_exactly() {
    let clsact = format!("attach = \"clsact\"\n{CONFIG}");
    across_a_restart(Stop::Kill, &clsact, &clsact, "adopted");
}

#[test]
fn a_stream_across_a_restart_with_other_map_sizes_is_counted_exactly() {
    let resized = format!("flow_map_entries = 8192\ndevice_map_entries = 512\n{CONFIG}");
    across_a_restart(Stop::Term, CONFIG, &resized, "resized");
}

#[test]
fn pins_of_an_unknown_layout_are_replaced_not_read() {
    let lab = Lab::new();
    let _servers = lab.start_servers(0);
    let to = SocketAddr::new(IpAddr::V4(SERVERS_V4[0]), UDP_SINK_PORT);
    let phone = lab.device("phone");
    let first = Agent::start(&lab, CONFIG, &[]);
    udp_send(&phone.ns, to, PAYLOAD, 10);
    assert_eq!(
        first.settled().device_total("phone", "egress").1,
        10,
        "counted"
    );
    assert!(first.stop().success());

    // Another version's layout record: the same maps, but numbers this agent would misread.
    let layout = lab.pin_dir().join("maps/LAYOUT");
    let data = aya::maps::MapData::from_pin(&layout).expect("the layout record is pinned");
    let mut record: aya::maps::Array<_, [u32; 6]> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
    let mut value = record.get(&0, 0).unwrap();
    value[0] = 999;
    record.set(0, value, 0).unwrap();
    drop(record);

    let second = Agent::start(&lab, CONFIG, &[]);
    assert_eq!(start_kind(&second), ["replaced"]);
    assert!(
        second
            .log()
            .contains("map layout version 999, this agent reads version"),
        "one line says why:\n{}",
        second.log()
    );
    udp_send(&phone.ns, to, PAYLOAD, 3);
    assert_eq!(
        second.settled().device_total("phone", "egress"),
        (3 * udp_ip_bytes(true, PAYLOAD), 3),
        "the old maps' counts are not read"
    );
}

#[test]
fn detach_removes_the_programs_and_the_pins_and_refuses_while_an_agent_runs() {
    let lab = Lab::new();
    let agent = Agent::start(&lab, CONFIG, &[]);
    let detach = ["detach", "--lan", "br-lan"];
    let refused = run_agent_to_exit(&lab, &detach, Duration::from_secs(10));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("another egress-monitor uses the state directory"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(agent.stop().success());
    assert!(
        !lan_programs(&lab).is_empty(),
        "a stopped agent's programs count on"
    );
    assert!(lab.pin_dir().join("maps/FLOWS").exists());

    let out = run_agent_to_exit(&lab, &detach, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = lan_programs(&lab);
    assert!(left.is_empty(), "programs left after detach: {left:?}");
    assert!(!lab.pin_dir().exists(), "pins left after detach");
    assert!(state_dir(&lab).exists(), "the state is the user's: kept");
}
