//! A real Prometheus and a real Alertmanager on the lab's router, scraping the agent and
//! delivering alerts to a webhook, so that tests and the demo see an alert travel the whole way
//! a deployment's would: agent -> scrape -> rule -> Alertmanager -> receiver.
//!
//! ```text
//!  router namespace, loopback only
//!  agent 127.0.0.1:10100 <-scrape- Prometheus 127.0.0.1:9090 -alerts-> Alertmanager 127.0.0.1:9093
//!                                  (rules: the caller's file)           -POST-> webhook 127.0.0.1:<n>
//! ```
//!
//! Everything listens on the router namespace's loopback, so nothing is reachable from, or
//! sends to, anywhere else. Prometheus and Alertmanager are [`LabChild`]ren (killed with the lab
//! even if a test panics) and keep their configuration and data in the lab's scratch directory
//! (removed with the lab). The webhook is a thread of the test process whose listening socket
//! was made inside the namespace; it stops when the [`Alerting`] is dropped.
//!
//! Intervals are short (1 s scrape and evaluation, no group wait), so an alert reaches the
//! webhook within a few seconds of the agent exporting the series that raises it.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{AGENT_LISTEN, http_get};
use crate::{Lab, LabChild, netns};

/// The Prometheus server of Debian 12's `prometheus` package (2.42).
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
/// Debian 12's `prometheus-alertmanager` (0.25).
pub const ALERTMANAGER_BIN: &str = "/usr/bin/prometheus-alertmanager";
/// Where Prometheus listens, on the router namespace's loopback.
pub const PROMETHEUS_LISTEN: &str = "127.0.0.1:9090";
/// Where Alertmanager listens, on the router namespace's loopback.
pub const ALERTMANAGER_LISTEN: &str = "127.0.0.1:9093";
/// Prometheus's scrape and rule evaluation interval: short, so that alerts come in seconds.
pub const EVALUATION_INTERVAL: Duration = Duration::from_secs(1);
/// The Alertmanager receiver that posts to the webhook.
pub const RECEIVER: &str = "lab-webhook";

/// How long Prometheus and Alertmanager may take to answer `/-/ready` (TSDB and WAL set-up on a
/// loaded 2-core machine take a second or two).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the wait helpers ask again.
const POLL: Duration = Duration::from_millis(100);
/// How long a webhook request may stall before it is dropped.
const WEBHOOK_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest webhook body accepted; Alertmanager's notifications for a lab are a few kilobytes.
const MAX_BODY: usize = 1 << 20;

/// Where the project's alert rules live, relative to the workspace root.
pub const SHIPPED_RULES: &str = "deploy/prometheus/alerts.yml";

/// The project's alert rules ([`SHIPPED_RULES`]) in this workspace; it may not exist.
pub fn shipped_rules() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the lab crate is a directory of the workspace");
    workspace.join(SHIPPED_RULES)
}

/// The binaries that are not installed, of [`PROMETHEUS_BIN`] and [`ALERTMANAGER_BIN`]; `cargo
/// xtask setup` installs both.
pub fn missing_binaries() -> Vec<&'static str> {
    [PROMETHEUS_BIN, ALERTMANAGER_BIN]
        .into_iter()
        .filter(|bin| !Path::new(bin).is_file())
        .collect()
}

/// An alert as Alertmanager's API v2 (`GET /api/v2/alerts`) shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    /// `active`, `suppressed` or `unprocessed`.
    pub state: String,
    /// RFC 3339, as Prometheus set it: when the rule began to fire.
    pub starts_at: String,
    /// Names of the receivers the alert is routed to.
    pub receivers: Vec<String>,
}

impl Alert {
    /// Whether every `(name, value)` of `labels` is one of the alert's labels.
    pub fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        has_labels(&self.labels, labels)
    }

    /// The value of label `name`, or "" when it has none.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// One POST that Alertmanager made to the webhook.
#[derive(Debug, Clone)]
pub struct Notification {
    /// When the request had arrived in full.
    pub received: Instant,
    /// The body as sent (Alertmanager's webhook JSON, version 4).
    pub body: String,
    /// `firing` or `resolved` (of the group), "" if the body is not the expected JSON.
    pub status: String,
    /// The receiver named in the body.
    pub receiver: String,
    /// Each alert of the group: its own status and its labels.
    pub alerts: Vec<(String, BTreeMap<String, String>)>,
}

impl Notification {
    fn parse(received: Instant, body: String) -> Notification {
        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let alerts = json["alerts"]
            .as_array()
            .map(|alerts| {
                alerts
                    .iter()
                    .map(|a| (text(&a["status"]), string_map(&a["labels"])))
                    .collect()
            })
            .unwrap_or_default();
        Notification {
            received,
            status: text(&json["status"]),
            receiver: text(&json["receiver"]),
            alerts,
            body,
        }
    }

    /// The labels of the first firing alert of this notification that has all of `labels`.
    pub fn firing(&self, labels: &[(&str, &str)]) -> Option<&BTreeMap<String, String>> {
        self.alerts
            .iter()
            .find(|(status, l)| status == "firing" && has_labels(l, labels))
            .map(|(_, l)| l)
    }
}

/// A rule as Prometheus's `GET /api/v1/rules` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleState {
    /// `ok`, `err` or `unknown` (not evaluated yet).
    pub health: String,
    /// Why the last evaluation failed; "" when it did not.
    pub last_error: String,
    /// For an alerting rule: `inactive`, `pending` or `firing`.
    pub state: String,
    /// The rule's expression as Prometheus parsed it.
    pub query: String,
    /// Its `for`: how long the expression must hold before the alert fires.
    pub for_duration: Duration,
}

/// Prometheus and Alertmanager running in a lab's router namespace, and the webhook that
/// Alertmanager notifies. Stopped when dropped; killed with the lab in any case.
pub struct Alerting {
    ns: String,
    prometheus: LabChild,
    alertmanager: LabChild,
    webhook: Webhook,
}

impl Alerting {
    /// Starts Prometheus (scraping the agent at [`AGENT_LISTEN`], with the alerting rules of the
    /// file `rules`) and Alertmanager (routing every alert, one group per alert, to the
    /// webhook) in `lab`'s router namespace, and waits until both are ready. The agent need not
    /// run yet: Prometheus scrapes it whenever it answers.
    ///
    /// Panics with the reason, and the programs' logs, if anything fails: see
    /// [`Alerting::try_start`].
    #[track_caller]
    pub fn start(lab: &Lab, rules: &Path) -> Alerting {
        // A match, not a closure: the panic then points at the caller.
        match Self::try_start(lab, rules) {
            Ok(alerting) => alerting,
            Err(message) => panic!("{message}"),
        }
    }

    /// [`Alerting::start`], with an error message instead of a panic: the binaries are missing,
    /// the rules file does not exist, or a program exited or did not become ready (Prometheus
    /// exits on rules it cannot load; its log says why).
    pub fn try_start(lab: &Lab, rules: &Path) -> Result<Alerting, String> {
        Self::try_start_with(lab, rules, EVALUATION_INTERVAL)
    }

    /// [`Alerting::try_start`] with another scrape and evaluation interval (whole seconds), e.g.
    /// a production-like 15 s to measure how long alerts take there.
    pub fn try_start_with(lab: &Lab, rules: &Path, interval: Duration) -> Result<Alerting, String> {
        Self::try_start_scraping(lab, rules, interval, "")
    }

    /// [`Alerting::try_start_with`], with more keys for the agent's scrape job (YAML at the
    /// job's indentation, four spaces), e.g. `scheme: https`, `basic_auth` and `tls_config`.
    pub fn try_start_scraping(
        lab: &Lab,
        rules: &Path,
        interval: Duration,
        job: &str,
    ) -> Result<Alerting, String> {
        let missing = missing_binaries();
        if !missing.is_empty() {
            return Err(format!(
                "{} not installed: run `cargo xtask setup` (Debian packages prometheus and \
                 prometheus-alertmanager)",
                missing.join(" and ")
            ));
        }
        // Absolute, because Prometheus reads rule_files relative to its configuration file.
        let rules = rules
            .canonicalize()
            .map_err(|e| format!("the alert rules file {}: {e}", rules.display()))?;
        let dir = alerting_dir(lab);
        let ns = lab.router_ns().to_owned();

        // The webhook first: Alertmanager's configuration names its port.
        let webhook = Webhook::start(&ns)?;
        let am_config = dir.join("alertmanager.yml");
        write(&am_config, &alertmanager_config(webhook.port))?;
        let prometheus_config = dir.join("prometheus.yml");
        write(
            &prometheus_config,
            &(prometheus_config_text(&rules, interval) + job),
        )?;

        let alertmanager = lab.spawn_in_router(
            ALERTMANAGER_BIN,
            &[
                format!("--config.file={}", am_config.display()),
                format!("--storage.path={}", dir.join("alertmanager-data").display()),
                format!("--web.listen-address={ALERTMANAGER_LISTEN}"),
                // No HA cluster: it would listen on 0.0.0.0:9094 and gossip.
                "--cluster.listen-address=".to_owned(),
            ],
        );
        let prometheus = lab.spawn_in_router(
            PROMETHEUS_BIN,
            &[
                format!("--config.file={}", prometheus_config.display()),
                format!(
                    "--storage.tsdb.path={}",
                    dir.join("prometheus-data").display()
                ),
                format!("--web.listen-address={PROMETHEUS_LISTEN}"),
            ],
        );
        let alerting = Alerting {
            ns,
            prometheus,
            alertmanager,
            webhook,
        };
        alerting.wait_ready("Alertmanager", &alerting.alertmanager, ALERTMANAGER_LISTEN)?;
        alerting.wait_ready("Prometheus", &alerting.prometheus, PROMETHEUS_LISTEN)?;
        Ok(alerting)
    }

    fn wait_ready(&self, what: &str, child: &LabChild, listen: &str) -> Result<(), String> {
        let addr: SocketAddr = listen.parse().expect("a valid listen address");
        let ready = poll_until(READY_TIMEOUT, || {
            !child.is_running() || matches!(http_get(&self.ns, addr, "/-/ready"), Some((200, _)))
        });
        if ready && child.is_running() {
            return Ok(());
        }
        let how = match child.try_wait() {
            Some(status) => format!("exited ({status})"),
            None => format!("was not ready within {} s", READY_TIMEOUT.as_secs()),
        };
        Err(format!("{what} {how}; its log:\n{}", child.log()))
    }

    /// What Prometheus logged so far.
    pub fn prometheus_log(&self) -> String {
        self.prometheus.log()
    }

    /// What Alertmanager logged so far.
    pub fn alertmanager_log(&self) -> String {
        self.alertmanager.log()
    }

    /// Both logs and the webhook's notifications, for a failure message.
    pub fn diagnostics(&self) -> String {
        let notifications: Vec<String> = self.notifications().into_iter().map(|n| n.body).collect();
        format!(
            "Prometheus log:\n{}\nAlertmanager log:\n{}\nwebhook notifications:\n{}",
            self.prometheus_log(),
            self.alertmanager_log(),
            notifications.join("\n")
        )
    }

    /// The alerts Alertmanager holds now (`GET /api/v2/alerts`: active, silenced, inhibited
    /// and unprocessed). Panics if it does not answer with JSON.
    pub fn alerts(&self) -> Vec<Alert> {
        self.try_alerts()
            .unwrap_or_else(|message| panic!("{message}\n{}", self.diagnostics()))
    }

    /// [`Alerting::alerts`], with an error message instead of a panic.
    pub fn try_alerts(&self) -> Result<Vec<Alert>, String> {
        let json = self.try_get_json(ALERTMANAGER_LISTEN, "/api/v2/alerts")?;
        let alerts = json
            .as_array()
            .ok_or_else(|| format!("GET /api/v2/alerts: not a list: {json}"))?;
        Ok(alerts
            .iter()
            .map(|a| Alert {
                labels: string_map(&a["labels"]),
                state: a["status"]["state"].as_str().unwrap_or_default().to_owned(),
                starts_at: a["startsAt"].as_str().unwrap_or_default().to_owned(),
                receivers: a["receivers"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .filter_map(|r| r["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// The alerts Alertmanager holds now that have all of `labels`.
    pub fn alerts_with(&self, labels: &[(&str, &str)]) -> Vec<Alert> {
        self.alerts()
            .into_iter()
            .filter(|a| a.has_labels(labels))
            .collect()
    }

    /// Polls Alertmanager until it holds an alert with all of `labels`, for at most `timeout`;
    /// returns the alert and when it was first seen, or None.
    pub fn wait_for_alert(
        &self,
        labels: &[(&str, &str)],
        timeout: Duration,
    ) -> Option<(Alert, Instant)> {
        let mut found = None;
        poll_until(timeout, || {
            found = self
                .alerts_with(labels)
                .into_iter()
                .next()
                .map(|a| (a, Instant::now()));
            found.is_some()
        });
        found
    }

    /// Every notification the webhook has received, oldest first.
    pub fn notifications(&self) -> Vec<Notification> {
        lock(&self.webhook.received).clone()
    }

    /// Waits (at most `timeout`) until the webhook has received a notification in which an alert
    /// with all of `labels` fires; returns the first such notification.
    pub fn wait_for_notification(
        &self,
        labels: &[(&str, &str)],
        timeout: Duration,
    ) -> Option<Notification> {
        let mut found = None;
        poll_until(timeout, || {
            found = self
                .notifications()
                .into_iter()
                .find(|n| n.firing(labels).is_some());
            found.is_some()
        });
        found
    }

    /// Evaluates the PromQL `expr` now (`GET /api/v1/query`); the labels and value of each
    /// series of the resulting vector. Panics if Prometheus rejects the query.
    pub fn query(&self, expr: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let json = self.get_json(
            PROMETHEUS_LISTEN,
            &format!("/api/v1/query?query={}", percent_encode(expr)),
        );
        assert_eq!(json["status"], "success", "query {expr:?}: {json}");
        let result = json["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("query {expr:?}: no vector: {json}"));
        result
            .iter()
            .map(|series| {
                let value = series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (string_map(&series["metric"]), value)
            })
            .collect()
    }

    /// Polls `expr` until it returns at least one series, for at most `timeout`; the last
    /// result (empty on timeout).
    pub fn wait_for_query(
        &self,
        expr: &str,
        timeout: Duration,
    ) -> Vec<(BTreeMap<String, String>, f64)> {
        let mut result = Vec::new();
        poll_until(timeout, || {
            result = self.query(expr);
            !result.is_empty()
        });
        result
    }

    /// The alerting rule called `name`, as Prometheus loaded it; None if no rule file has it.
    pub fn alert_rule(&self, name: &str) -> Option<RuleState> {
        let json = self.get_json(PROMETHEUS_LISTEN, "/api/v1/rules?type=alert");
        let groups = json["data"]["groups"].as_array()?;
        let rule = groups
            .iter()
            .filter_map(|g| g["rules"].as_array())
            .flatten()
            .find(|r| r["name"] == name)?;
        let text = |key: &str| rule[key].as_str().unwrap_or_default().to_owned();
        Some(RuleState {
            health: text("health"),
            last_error: text("lastError"),
            state: text("state"),
            query: text("query"),
            for_duration: Duration::from_secs_f64(rule["duration"].as_f64().unwrap_or(0.0)),
        })
    }

    /// GETs `path` from the server at `listen` in the router namespace and parses the JSON
    /// body; panics, with both logs, when it does not answer 200 with JSON.
    fn get_json(&self, listen: &str, path: &str) -> Value {
        self.try_get_json(listen, path)
            .unwrap_or_else(|message| panic!("{message}\n{}", self.diagnostics()))
    }

    fn try_get_json(&self, listen: &str, path: &str) -> Result<Value, String> {
        let addr: SocketAddr = listen.parse().expect("a valid listen address");
        match http_get(&self.ns, addr, path) {
            Some((200, body)) => serde_json::from_str(&body)
                .map_err(|e| format!("GET {path} on {listen}: not JSON ({e}): {body}")),
            other => Err(format!("GET {path} on {listen} failed: {other:?}")),
        }
    }
}

impl Drop for Alerting {
    /// Stops Prometheus and Alertmanager before the lab removes their directory (a server still
    /// writing there would make the removal fail), then the webhook. Never panics.
    fn drop(&mut self) {
        for child in [&self.prometheus, &self.alertmanager] {
            child.terminate(Duration::from_secs(5));
        }
        self.webhook.stop();
    }
}

/// A fresh directory for one [`Alerting`] in the lab's scratch directory (a lab may start
/// several in turn).
fn alerting_dir(lab: &Lab) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = lab
        .scratch_dir()
        .join(format!("alerting-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Prometheus's configuration: scrape the agent and evaluate `rules` every `interval`, send
/// alerts to the Alertmanager at [`ALERTMANAGER_LISTEN`].
fn prometheus_config_text(rules: &Path, interval: Duration) -> String {
    let secs = interval.as_secs().max(1);
    // A JSON string is a YAML double-quoted string: any path is quoted correctly.
    let rules = Value::from(rules.display().to_string());
    format!(
        "global:\n  scrape_interval: {secs}s\n  scrape_timeout: {secs}s\n  evaluation_interval: {secs}s\n\
         rule_files:\n  - {rules}\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{ALERTMANAGER_LISTEN}\"]\n\
         scrape_configs:\n  - job_name: egress-monitor\n    static_configs:\n      - targets: [\"{AGENT_LISTEN}\"]\n"
    )
}

/// Alertmanager's configuration: every alert in a group of its own (`group_by: ['...']`),
/// notified at once (`group_wait: 0s`), to the webhook on `port`.
fn alertmanager_config(port: u16) -> String {
    format!(
        "route:\n  receiver: {RECEIVER}\n  group_by: ['...']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: {RECEIVER}\n    webhook_configs:\n      - url: http://127.0.0.1:{port}/\n        send_resolved: true\n"
    )
}

/// The HTTP server Alertmanager posts its notifications to: records every POST body.
struct Webhook {
    port: u16,
    received: Arc<Mutex<Vec<Notification>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Webhook {
    /// Listens on a free port of `ns`'s loopback. The socket is made inside the namespace (a
    /// socket stays in the namespace it was created in), then served by an ordinary thread.
    fn start(ns: &str) -> Result<Webhook, String> {
        let listener = netns::run_in(ns, || TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| format!("webhook: cannot listen in {ns}: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("webhook: {e}"))?
            .port();
        // Non-blocking, so that the thread sees the stop flag while nothing comes in.
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("webhook: {e}"))?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let received = Arc::clone(&received);
            let stop = Arc::clone(&stop);
            move || serve(&listener, &received, &stop)
        });
        Ok(Webhook {
            port,
            received,
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, received: &Mutex<Vec<Notification>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                // One request at a time: Alertmanager retries a failed or slow one.
                if let Some(body) = handle(stream) {
                    lock(received).push(Notification::parse(Instant::now(), body));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL / 5),
            Err(_) => std::thread::sleep(POLL / 5),
        }
    }
}

/// Reads one request, answers it and closes; the body of a POST, else None.
fn handle(mut stream: TcpStream) -> Option<String> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(WEBHOOK_IO_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(WEBHOOK_IO_TIMEOUT)).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&data, b"\r\n\r\n") {
            break i + 4;
        }
        if data.len() > MAX_BODY {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let is_post = head.starts_with("POST ");
    let length = content_length(&head).unwrap_or(0).min(MAX_BODY);
    while data.len() < head_end + length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    // Connection: close, so that every notification comes on a connection of its own.
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let body = &data[head_end..head_end + length];
    is_post.then(|| String::from_utf8_lossy(body).into_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The Content-Length of a request head, if it has one.
fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a query string.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A JSON object of strings (labels) as a map; other values are left out.
fn string_map(json: &Value) -> BTreeMap<String, String> {
    json.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn has_labels(have: &BTreeMap<String, String>, want: &[(&str, &str)]) -> bool {
    want.iter()
        .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
}

/// [`crate::wait_until`] at the pace of [`POLL`]: each check is an HTTP request to a server.
fn poll_until(timeout: Duration, done: impl FnMut() -> bool) -> bool {
    crate::traffic::wait_until_every(timeout, POLL, done)
}

/// Locks `m`, ignoring poisoning: a panic in a test must not stop the webhook's cleanup.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_promql_for_a_query_string() {
        assert_eq!(
            percent_encode("up{job=\"a b\"} > 0"),
            "up%7Bjob%3D%22a%20b%22%7D%20%3E%200"
        );
    }

    #[test]
    fn reads_content_length_in_any_case() {
        let head = "POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 42\r\n\r\n";
        assert_eq!(content_length(head), Some(42));
        assert_eq!(content_length("GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn parses_a_webhook_notification() {
        let body = r#"{"version":"4","status":"firing","receiver":"lab-webhook",
            "alerts":[{"status":"firing","labels":{"alertname":"A","device":"camera"}},
                      {"status":"resolved","labels":{"alertname":"A","device":"tv"}}]}"#;
        let n = Notification::parse(Instant::now(), body.to_owned());
        assert_eq!(
            (n.status.as_str(), n.receiver.as_str()),
            ("firing", RECEIVER)
        );
        assert_eq!(
            n.firing(&[("device", "camera")])
                .map(|l| l["alertname"].as_str()),
            Some("A")
        );
        assert_eq!(n.firing(&[("device", "tv")]), None, "resolved, not firing");
    }

    #[test]
    fn quotes_the_rules_path_in_the_prometheus_config() {
        let text = prometheus_config_text(
            Path::new("/tmp/a \"b\"/alerts.yml"),
            Duration::from_secs(15),
        );
        assert!(
            text.contains("rule_files:\n  - \"/tmp/a \\\"b\\\"/alerts.yml\"\n"),
            "{text}"
        );
        assert!(text.contains("  scrape_interval: 15s\n"), "{text}");
        assert!(text.contains("  evaluation_interval: 15s\n"), "{text}");
    }
}
