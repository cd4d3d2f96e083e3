//! How long an alert takes: from a device's first unexpected packet to the alert in
//! Alertmanager (its API) and at a webhook receiver, with the real agent, Prometheus and
//! Alertmanager on the lab router and the shipped rules (`deploy/prometheus/alerts.yml`).
//!
//! The camera may only talk to `updates.vendor.example`; each repetition it sends three
//! datagrams to a server it never used (a new one each time, so each is a new alert), at a
//! different phase of Prometheus's scrape cycle.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use crate::{
    Lab, SERVERS_V4, SERVERS_V6, UDP_SINK_PORT,
    agent::Agent,
    alerting::{Alerting, shipped_rules},
    udp_send,
};

/// The alert of the shipped rules for traffic outside a device's policy.
const ALERT: &str = "EgressUnexpectedDestination";

/// One configuration to measure.
#[derive(Clone, Debug)]
pub struct AlertCase {
    /// Prometheus's scrape and evaluation interval.
    pub interval: Duration,
    /// The agent's poll interval.
    pub poll: &'static str,
    /// Alerts to measure (at most 7: one per unused server).
    pub repetitions: usize,
}

#[derive(Clone, Debug)]
pub struct AlertOptions {
    pub cases: Vec<AlertCase>,
}

impl AlertOptions {
    /// The lab's fast setting (the tests'), and a production-like one (the agent's default
    /// poll, the example prometheus.yml's 15 s).
    pub fn full() -> Self {
        Self {
            cases: vec![
                AlertCase {
                    interval: Duration::from_secs(1),
                    poll: "1s",
                    repetitions: 7,
                },
                AlertCase {
                    interval: Duration::from_secs(15),
                    poll: "1s",
                    repetitions: 4,
                },
            ],
        }
    }

    /// One alert, to check that the measurement runs.
    pub fn quick() -> Self {
        Self {
            cases: vec![AlertCase {
                interval: Duration::from_secs(1),
                poll: "200ms",
                repetitions: 1,
            }],
        }
    }
}

/// The measured latencies of one case.
#[derive(Debug)]
pub struct AlertRow {
    pub case: AlertCase,
    pub to_alertmanager: Vec<Duration>,
    pub to_webhook: Vec<Duration>,
}

#[derive(Debug)]
pub struct AlertReport {
    pub rows: Vec<AlertRow>,
}

/// Servers the camera has not talked to: each repetition's new destination.
fn unused_servers() -> Vec<IpAddr> {
    SERVERS_V4[1..]
        .iter()
        .copied()
        .map(IpAddr::V4)
        .chain(SERVERS_V6.iter().copied().map(IpAddr::V6))
        .collect()
}

/// Measures every case; panics with the reason if a part cannot run or an alert never comes.
pub fn run(options: &AlertOptions) -> AlertReport {
    let rows = options.cases.iter().map(measure).collect();
    AlertReport { rows }
}

fn measure(case: &AlertCase) -> AlertRow {
    let servers = unused_servers();
    assert!(
        case.repetitions <= servers.len(),
        "at most {} repetitions",
        servers.len()
    );
    let lab = Lab::builder().dhcp(true).build();
    let _sinks = lab.start_servers(0);
    let camera = lab.device("camera");
    let config = format!(
        "[devices]\n\"{}\" = \"camera\"\n\n[policy.devices.camera]\nallow = [\"updates.vendor.example\"]\n",
        camera.mac_string()
    );
    let _agent = Agent::start_with_poll(&lab, &config, &[], case.poll);
    let alerting = Alerting::try_start_with(&lab, &shipped_rules(), case.interval)
        .unwrap_or_else(|e| panic!("alert latency: {e}"));
    let scraped = alerting.wait_for_query(
        "up{job=\"egress-monitor\"} == 1",
        case.interval * 3 + Duration::from_secs(30),
    );
    assert!(!scraped.is_empty(), "Prometheus never scraped the agent");
    let timeout = case.interval * 4 + Duration::from_secs(60);
    let mut row = AlertRow {
        case: case.clone(),
        to_alertmanager: Vec::new(),
        to_webhook: Vec::new(),
    };
    for (i, server) in servers.into_iter().take(case.repetitions).enumerate() {
        // A different phase of the scrape cycle each time (a fraction of the interval).
        std::thread::sleep(case.interval.mul_f64((i as f64 * 0.37).fract()));
        let destination = server.to_string();
        let labels = [
            ("alertname", ALERT),
            ("device", "camera"),
            ("destination", destination.as_str()),
        ];
        let first_packet = Instant::now();
        udp_send(&camera.ns, SocketAddr::new(server, UDP_SINK_PORT), 100, 3);
        let (_, seen) = alerting
            .wait_for_alert(&labels, timeout)
            .unwrap_or_else(|| {
                panic!(
                    "no {ALERT} for {destination} within {timeout:?}\n{}",
                    alerting.diagnostics()
                )
            });
        let notification = alerting
            .wait_for_notification(&labels, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no notification for {destination}"));
        row.to_alertmanager.push(seen - first_packet);
        row.to_webhook.push(
            notification
                .received
                .saturating_duration_since(first_packet),
        );
    }
    row
}

/// (min, median, max) in seconds.
fn spread(values: &[Duration]) -> (f64, f64, f64) {
    let mut secs: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
    secs.sort_by(f64::total_cmp);
    match secs.as_slice() {
        [] => (f64::NAN, f64::NAN, f64::NAN),
        s => (s[0], s[s.len() / 2], s[s.len() - 1]),
    }
}

impl AlertReport {
    fn lines(&self) -> Vec<[String; 5]> {
        self.rows
            .iter()
            .map(|r| {
                let (a_min, a_med, a_max) = spread(&r.to_alertmanager);
                let (w_min, w_med, w_max) = spread(&r.to_webhook);
                [
                    format!("{} s", r.case.interval.as_secs()),
                    r.case.poll.to_owned(),
                    r.to_alertmanager.len().to_string(),
                    format!("{a_min:.1} / {a_med:.1} / {a_max:.1}"),
                    format!("{w_min:.1} / {w_med:.1} / {w_max:.1}"),
                ]
            })
            .collect()
    }

    pub fn text(&self) -> String {
        let mut out = format!(
            "{:<22} {:>6} {:>7} {:>26} {:>26}\n",
            "scrape = evaluation", "poll", "alerts", "to Alertmanager (s)", "to webhook (s)"
        );
        for [interval, poll, n, am, wh] in self.lines() {
            out.push_str(&format!(
                "{interval:<22} {poll:>6} {n:>7} {am:>26} {wh:>26}\n"
            ));
        }
        out.push_str("(min / median / max, from the first unexpected packet)\n");
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "From a device's first unexpected packet to `EgressUnexpectedDestination` in Alertmanager (polled through its API every 100 ms) and at a webhook receiver, with the real agent, Prometheus and Alertmanager (`group_wait: 0s`) on the lab router and the shipped rules. Each alert is a new destination, sent at a different phase of the scrape cycle. The agent exports a byte one to two polls after it crossed the router; Prometheus sees it at its next scrape and fires at its next evaluation.\n\n| scrape and evaluation interval | agent poll | alerts | to Alertmanager, s (min / median / max) | to the webhook, s |\n|---|---|---|---|---|\n",
        );
        for [interval, poll, n, am, wh] in self.lines() {
            out.push_str(&format!("| {interval} | {poll} | {n} | {am} | {wh} |\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_min_median_max() {
        let d = |ms| Duration::from_millis(ms);
        assert_eq!(spread(&[d(3000), d(1000), d(2000)]), (1.0, 2.0, 3.0));
        assert!(spread(&[]).0.is_nan());
    }

    #[test]
    fn there_is_an_unused_server_for_every_repetition() {
        let servers = unused_servers();
        assert!(
            !servers.contains(&IpAddr::V4(SERVERS_V4[0])),
            "updates.vendor.example's"
        );
        assert!(
            AlertOptions::full()
                .cases
                .iter()
                .all(|c| c.repetitions <= servers.len())
        );
    }
}
