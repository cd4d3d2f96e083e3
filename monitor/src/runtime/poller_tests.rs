//! The poller's stages against a fake kernel: what a poll reads is settled exactly, published,
//! and shown; failures are counted and keep the last totals; messages are applied; and a
//! scrape of 100k series, however long it renders, does not hold up a poll.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use monitor_common::KernelStats;

use super::*;
use crate::{
    config::{Config, Overrides},
    http::metrics::Metrics,
    kernel::{
        counters::{CollectError, Collected},
        hooks::Attachment,
        loader::AttachMode,
        neighbours::Neighbour,
    },
    ledger::Reading,
    persist::protocol::Request,
    types::{Count, DeviceId, Direction, MacAddr},
};

const PHONE: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);

/// A kernel whose maps hold what the test puts there.
#[derive(Clone, Default)]
struct FakeKernel {
    inner: Arc<Mutex<Fake>>,
}

#[derive(Default)]
struct Fake {
    reading: Vec<(DeviceId, IpAddr, Count)>,
    devices: Vec<(DeviceId, Count)>,
    fail_reads: bool,
    attachments: Vec<Attachment>,
    new_attachments: Option<Vec<Attachment>>,
    neighbours: Vec<Neighbour>,
    /// When each read of the counter maps happened.
    reads: Vec<Instant>,
}

impl KernelSource for FakeKernel {
    fn follow_interfaces(&mut self) -> Option<Vec<Attachment>> {
        let mut fake = self.inner.lock().unwrap();
        let new = fake.new_attachments.take()?;
        fake.attachments = new.clone();
        Some(new)
    }

    fn attachments(&self) -> Vec<Attachment> {
        self.inner.lock().unwrap().attachments.clone()
    }

    fn sync_local_prefixes(&mut self) -> anyhow::Result<(usize, usize)> {
        Ok((1, 1))
    }

    fn read_counters(&mut self) -> Result<Collected, CollectError> {
        let mut fake = self.inner.lock().unwrap();
        fake.reads.push(Instant::now());
        if fake.fail_reads {
            return Err(CollectError::Cpus {
                path: "/sys/devices/system/cpu/possible",
                source: std::io::Error::other("the test says no"),
            });
        }
        Ok(Collected {
            reading: Reading {
                flows: fake.reading.clone(),
                devices: fake.devices.clone(),
            },
            kernel: [KernelStats::default(); 2],
            flow_entries: fake.reading.len() as u64,
            device_entries: fake.devices.len() as u64,
            device_maps: Default::default(),
        })
    }

    fn lan_neighbours(&mut self) -> std::io::Result<Vec<Neighbour>> {
        Ok(self.inner.lock().unwrap().neighbours.clone())
    }

    fn hardware_offload(&mut self) -> Vec<(String, bool)> {
        vec![("lan1".into(), false)]
    }

    fn flush_log(&mut self) {}
}

fn config(extra: &str) -> Config {
    Config::from_toml_str(
        &format!("lan = [\"br-lan\"]\n{extra}"),
        None,
        &Overrides::default(),
    )
    .unwrap()
}

struct Rig {
    poller: Poller<FakeKernel>,
    kernel: FakeKernel,
    metrics: Metrics,
    jobs: Receiver<WriteJob>,
}

fn rig(config: &Config, interval: Duration) -> Rig {
    let kernel = FakeKernel::default();
    let published = Published::default();
    let metrics = Metrics::new(published.clone()).unwrap();
    let (writer, jobs) = crossbeam_channel::unbounded();
    let poller = Poller::new(
        kernel.clone(),
        State::new(config),
        PollerConfig {
            interval,
            flow_capacity: 1 << 20,
            device_capacity: 1024,
        },
        published,
        metrics.self_metrics.clone(),
        writer,
    );
    Rig {
        poller,
        kernel,
        metrics,
        jobs,
    }
}

fn egress(mac: MacAddr) -> DeviceId {
    DeviceId {
        mac,
        direction: Direction::Egress,
    }
}

fn server(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i))
}

#[test]
fn a_poll_settles_the_reading_exactly_and_publishes_it() {
    let mut rig = rig(&config(""), Duration::from_secs(1));
    {
        let mut fake = rig.kernel.inner.lock().unwrap();
        fake.reading = vec![
            (egress(PHONE), server(1), Count::new(1500, 3)),
            (egress(PHONE), server(2), Count::new(600, 2)),
        ];
        fake.devices = vec![(egress(PHONE), Count::new(2100, 5))];
    }
    // The device total of one poll is settled at the next (see the ledger).
    for _ in 0..2 {
        rig.poller.poll(SystemTime::now());
    }
    let text = rig.metrics.render();
    for line in [
        "egress_device_bytes_total{device=\"02:00:00:00:00:01\",mac=\"02:00:00:00:00:01\",direction=\"egress\"} 2100\n",
        "egress_destination_bytes_total{device=\"02:00:00:00:00:01\",mac=\"02:00:00:00:00:01\",direction=\"egress\",destination=\"11.0.0.1\"} 1500\n",
        "egress_destination_packets_total{device=\"02:00:00:00:00:01\",mac=\"02:00:00:00:00:01\",direction=\"egress\",destination=\"11.0.0.2\"} 2\n",
        "egress_monitor_map_entries{map=\"flows\"} 2\n",
        "egress_monitor_local_prefixes{family=\"ipv4\"} 1\n",
        "egress_monitor_hardware_offload{interface=\"lan1\"} 0\n",
        "egress_monitor_polls_total 2\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn a_failed_read_is_counted_and_the_last_totals_stay() {
    let mut rig = rig(&config(""), Duration::from_secs(1));
    {
        let mut fake = rig.kernel.inner.lock().unwrap();
        fake.reading = vec![(egress(PHONE), server(1), Count::new(700, 1))];
        fake.devices = vec![(egress(PHONE), Count::new(700, 1))];
    }
    rig.poller.poll(SystemTime::now());
    rig.poller.poll(SystemTime::now());
    rig.kernel.inner.lock().unwrap().fail_reads = true;
    rig.poller.poll(SystemTime::now());
    let text = rig.metrics.render();
    assert!(text.contains("egress_monitor_poll_errors_total{stage=\"read_maps\"} 1\n"));
    assert!(text.contains(
        "egress_device_bytes_total{device=\"02:00:00:00:00:01\",mac=\"02:00:00:00:00:01\",direction=\"egress\"} 700\n"
    ));
}

#[test]
fn attachments_and_neighbours_follow_the_kernel() {
    let mut rig = rig(&config(""), Duration::from_secs(1));
    let attached = |interface: &str| Attachment {
        interface: interface.into(),
        lan: "br-lan".into(),
        ifindex: Some(7),
        mode: Some(AttachMode::Clsact),
    };
    {
        let mut fake = rig.kernel.inner.lock().unwrap();
        fake.new_attachments = Some(vec![attached("lan1"), attached("lan2")]);
        fake.neighbours = vec![Neighbour {
            ifindex: 7,
            mac: PHONE,
            addr: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)),
            reachable: true,
        }];
    }
    rig.poller.poll(SystemTime::now());
    let text = rig.metrics.render();
    for interface in ["lan1", "lan2"] {
        let line = format!(
            "egress_monitor_interface_attached{{interface=\"{interface}\",lan=\"br-lan\",mode=\"clsact\"}} 1\n"
        );
        assert!(text.contains(&line), "{text}");
    }
    // A neighbour is a known device, with its address in the API.
    assert!(
        text.contains("egress_device_info{device=\"02:00:00:00:00:01\""),
        "{text}"
    );
    let devices = crate::http::api::devices(&rig.poller.published.latest());
    assert_eq!(devices["devices"][0]["addresses"][0], "192.168.1.20");
}

#[test]
fn a_reload_and_a_baseline_request_take_effect_and_are_published() {
    let mut rig = rig(&config(""), Duration::from_secs(1));
    rig.poller.poll(SystemTime::now());
    let reloaded = config(
        "[devices]\n\"02:00:00:00:00:01\" = \"phone\"\n[policy.devices.phone]\nallow = [\"vendor.example\"]\n",
    );
    rig.poller
        .handle(Message::Reload(Reload::Accepted(Box::new(reloaded))));
    let (reply, answer) = crossbeam_channel::bounded(1);
    rig.poller.handle(Message::Control(ControlRequest {
        request: Request::Accept {
            device: "phone".into(),
            destination: "cdn.example".into(),
        },
        reply,
    }));
    let ControlReply { result, written } = answer.try_recv().expect("answered at once");
    assert!(result.is_ok(), "{result:?}");
    // The change goes to the state writer at once, and the reply waits for it.
    let job = rig.jobs.try_recv().expect("a write was asked for");
    assert!(job.text.contains("cdn.example"), "{}", job.text);
    job.done.expect("the caller waits").send(Ok(())).unwrap();
    assert!(written.expect("a write").try_recv().unwrap().is_ok());
    let text = rig.metrics.render();
    for line in [
        "egress_monitor_policy_reloads_total{result=\"success\"} 1\n",
        "egress_device_policy_info{device=\"phone\",mac=\"02:00:00:00:00:01\",policy=\"device\"} 1\n",
        "egress_device_baseline_destinations{device=\"phone\",mac=\"02:00:00:00:00:01\"} 1\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    rig.poller.handle(Message::Reload(Reload::Rejected));
    let text = rig.metrics.render();
    assert!(text.contains("egress_monitor_policy_last_reload_success 0\n"));
}

#[test]
fn the_device_table_is_built_again_only_when_something_it_shows_changed() {
    let mut rig = rig(&config(""), Duration::from_secs(1));
    rig.poller.poll(SystemTime::now());
    let before = rig.poller.published.latest();
    rig.poller.poll(SystemTime::now());
    let same = rig.poller.published.latest();
    assert!(
        Arc::ptr_eq(&before.devices, &same.devices),
        "nothing changed"
    );
    {
        let mut fake = rig.kernel.inner.lock().unwrap();
        fake.reading = vec![(egress(PHONE), server(1), Count::new(100, 1))];
        fake.devices = vec![(egress(PHONE), Count::new(100, 1))];
    }
    rig.poller.poll(SystemTime::now());
    let changed = rig.poller.published.latest();
    assert!(
        !Arc::ptr_eq(&same.devices, &changed.devices),
        "a new device"
    );
    assert!(changed.devices.row(PHONE).is_some());
}

/// About `series` samples: address destinations over 250 devices, two samples each.
fn big_reading(series: usize) -> Reading {
    let devices: Vec<DeviceId> = (0..250u8)
        .map(|d| egress(MacAddr([2, 0, 0, 1, 0, d])))
        .collect();
    let mut totals = vec![Count::default(); devices.len()];
    let flows = (0..series / 2)
        .map(|i| {
            let slot = i % devices.len();
            let count = Count::new(1000 + i as u64 % 997, 1);
            totals[slot] = Count::new(totals[slot].bytes + count.bytes, totals[slot].packets + 1);
            (devices[slot], server(i as u32), count)
        })
        .collect();
    Reading {
        flows,
        devices: devices.into_iter().zip(totals).collect(),
    }
}

#[test]
fn a_scrape_of_100k_series_does_not_delay_a_poll() {
    // Long enough that a poll of this state (debug build) fits in it many times over, even
    // when other tests share the CPUs.
    let interval = Duration::from_millis(800);
    let mut rig = rig(&config(""), interval);
    {
        let Reading { flows, devices } = big_reading(100_000);
        let mut fake = rig.kernel.inner.lock().unwrap();
        fake.reading = flows;
        fake.devices = devices;
    }
    // Settled before the clock starts: what follows are the polls of a quiet network.
    rig.poller.poll(SystemTime::now());
    rig.poller.poll(SystemTime::now());
    let samples = rig
        .metrics
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    assert!(samples >= 100_000, "{samples} samples");
    let Rig {
        poller,
        kernel,
        metrics,
        ..
    } = rig;
    kernel.inner.lock().unwrap().reads.clear();
    let shutdown = Shutdown::new();
    let (_messages, messages) = crossbeam_channel::unbounded();
    let (_sniffed, sniffed) = crossbeam_channel::unbounded();
    let polling = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || poller.run(Inbox { messages, sniffed }, &shutdown))
    };
    // Renders back to back for the whole run, on this thread, at the lowest priority: with
    // CPUs to spare or not, a render can then delay a poll only through something they share
    // (a lock), which is what this test is about.
    // SAFETY: setpriority on the calling thread (its tid); no memory is involved.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
    let started = Instant::now();
    let mut renders = Vec::new();
    while started.elapsed() < interval * 6 {
        let t = Instant::now();
        let body = metrics.render();
        renders.push(t.elapsed());
        drop(body);
    }
    shutdown.trigger();
    polling.join().unwrap();
    let reads = kernel.inner.lock().unwrap().reads.clone();
    let gaps: Vec<Duration> = reads.windows(2).map(|w| w[1] - w[0]).collect();
    let longest_render = renders.iter().max().copied().unwrap_or_default();
    eprintln!(
        "polls every {gaps:?} while {} renders ran (longest {longest_render:?})",
        renders.len()
    );
    assert!(
        reads.len() >= 7,
        "{} polls in {:?}",
        reads.len(),
        interval * 8
    );
    for gap in &gaps {
        assert!(
            *gap < interval + interval / 4,
            "a poll came {gap:?} after the one before, at an interval of {interval:?}: {gaps:?}"
        );
    }
}
