//! The real `egress-monitor` binary, run in a lab's router namespace, and its `/metrics`
//! ([`Scrape`], parsed and read in `crate::scrape`, re-exported here).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{ExitStatus, Output},
    time::{Duration, Instant},
};

pub use crate::scrape::{DeviceLabel, Mac, Sample, Scrape, promtool_check_metrics};
use crate::{Lab, LabChild, netns, traffic::wait_until};

/// Where the agent listens inside the router namespace: its loopback, unreachable from
/// anywhere else.
pub const AGENT_LISTEN: &str = "127.0.0.1:10100";
/// A short poll interval keeps the tests quick; the ledger settles in two polls.
pub const TEST_POLL_INTERVAL: &str = "200ms";

/// The agent binary: `$EGRESS_MONITOR_BIN` (set by `cargo xtask test`), else the workspace's
/// debug build. Panics with a clear message when it does not exist.
pub fn agent_binary() -> PathBuf {
    let path = std::env::var_os("EGRESS_MONITOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/egress-monitor")
        });
    assert!(
        path.is_file(),
        "the agent binary {} does not exist: run the tests with `cargo xtask test`, which builds \
         it, or set EGRESS_MONITOR_BIN",
        path.display()
    );
    path
}

/// A running agent. Stopped (SIGTERM) when dropped, and killed with the lab in any case.
pub struct Agent {
    child: LabChild,
    ns: String,
    listen: SocketAddr,
    config: Option<PathBuf>,
}

impl Agent {
    /// Starts the agent on the lab's br-lan with `config` (TOML, may be empty) and extra
    /// flags, and waits until it serves a successful poll.
    pub fn start(lab: &Lab, config: &str, extra_args: &[&str]) -> Agent {
        Self::start_with_poll(lab, config, extra_args, TEST_POLL_INTERVAL)
    }

    /// [`Agent::start`] with another poll interval.
    pub fn start_with_poll(lab: &Lab, config: &str, extra_args: &[&str], poll: &str) -> Agent {
        Self::launch(lab, config, extra_args, poll, &[])
    }

    /// [`Agent::start`] with the kernel's BTF hidden from the agent, as on a kernel built
    /// without it (stock OpenWrt): an empty tmpfs over `/sys/kernel/btf` in a mount namespace
    /// of its own. The wrapper refuses to start the agent if the file is still visible.
    pub fn start_without_btf(lab: &Lab, config: &str) -> Agent {
        const HIDE_BTF: &str = "mount -t tmpfs egl-no-btf /sys/kernel/btf && \
             test ! -e /sys/kernel/btf/vmlinux && exec \"$0\" \"$@\"";
        let wrapper = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            HIDE_BTF,
        ];
        Self::launch(lab, config, &[], TEST_POLL_INTERVAL, &wrapper)
    }

    /// [`Agent::start`] with variables added to the agent's environment (the test hooks
    /// `EGRESS_MONITOR_TEST_PANIC` and `EGRESS_MONITOR_TEST_STALL`).
    pub fn start_with_env(lab: &Lab, config: &str, env: &[(&str, &str)]) -> Agent {
        let assignments: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut wrapper = vec!["env"];
        wrapper.extend(assignments.iter().map(String::as_str));
        Self::launch(lab, config, &[], TEST_POLL_INTERVAL, &wrapper)
    }

    /// Starts `wrapper... agent args...` in the router namespace and waits until it is healthy.
    fn launch(lab: &Lab, config: &str, extra_args: &[&str], poll: &str, wrapper: &[&str]) -> Agent {
        Self::launch_checked(lab, config, extra_args, poll, wrapper, |agent| {
            matches!(agent.get("/healthz"), Some((200, _)))
        })
    }

    /// [`Agent::start`] with another test of health than a plain `GET /healthz` (an agent that
    /// serves TLS, or asks for a password): `healthy` is asked until it says yes.
    pub fn start_checked(
        lab: &Lab,
        config: &str,
        extra_args: &[&str],
        healthy: impl Fn(&Agent) -> bool,
    ) -> Agent {
        Self::launch_checked(lab, config, extra_args, TEST_POLL_INTERVAL, &[], healthy)
    }

    fn launch_checked(
        lab: &Lab,
        config: &str,
        extra_args: &[&str],
        poll: &str,
        wrapper: &[&str],
        healthy: impl Fn(&Agent) -> bool,
    ) -> Agent {
        let config_path = write_config(lab, config);
        let mut args: Vec<String> = vec![
            "--config".into(),
            config_path.display().to_string(),
            "--poll-interval".into(),
            poll.into(),
        ];
        // `--web.listen-address` is `--listen` by its Prometheus name: one or the other.
        if !extra_args.contains(&"--web.listen-address") {
            args.extend(["--listen".into(), AGENT_LISTEN.into()]);
        }
        if !extra_args.contains(&"--lan") {
            args.extend(["--lan".into(), crate::LAN_BRIDGE.into()]);
        }
        if !extra_args.contains(&"--state-dir") && !config.contains("state_dir") {
            args.extend(["--state-dir".into(), state_dir(lab).display().to_string()]);
        }
        // Never the host's pins: every agent a test starts pins in the lab's own directory.
        if !extra_args.contains(&"--pin-dir") && !config.contains("pin_dir") {
            args.extend(["--pin-dir".into(), lab.pin_dir().display().to_string()]);
        }
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let binary = agent_binary();
        let binary = binary.to_str().expect("UTF-8 path");
        let child = match wrapper.split_first() {
            None => lab.spawn_in_router(binary, &args),
            Some((program, wrapper_args)) => {
                let all: Vec<String> = wrapper_args
                    .iter()
                    .map(|s| s.to_string())
                    .chain(std::iter::once(binary.to_owned()))
                    .chain(args)
                    .collect();
                lab.spawn_in_router(program, &all)
            }
        };
        let agent = Agent {
            child,
            ns: lab.router_ns().to_owned(),
            listen: AGENT_LISTEN.parse().expect("valid address"),
            config: Some(config_path),
        };
        let healthy = wait_until(Duration::from_secs(15), || {
            if !agent.child.is_running() {
                return true;
            }
            healthy(&agent)
        });
        assert!(
            healthy && agent.child.is_running(),
            "the agent did not become healthy within 15 s; its log:\n{}",
            agent.child.log()
        );
        agent
    }

    /// The router namespace the agent runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The agent's stderr so far.
    pub fn log(&self) -> String {
        self.child.log()
    }

    /// The configuration file the agent was started with; rewrite it to test reloads.
    pub fn config_path(&self) -> &std::path::Path {
        self.config
            .as_deref()
            .expect("the agent's configuration file")
    }

    pub fn child(&self) -> &LabChild {
        &self.child
    }

    /// GET `path` from the agent; None when it does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.ns, self.listen, path)
    }

    /// The current `/metrics`, parsed. Panics if the agent does not answer 200 within 30 s
    /// (a debug build rendering thousands of series under TCG on a foreign CPU takes seconds).
    pub fn scrape(&self) -> Scrape {
        match http_get_within(&self.ns, self.listen, "/metrics", SCRAPE_TIMEOUT) {
            Some((200, body)) => Scrape::parse(&body),
            other => panic!(
                "GET /metrics failed: {other:?}; agent log:\n{}",
                self.child.log()
            ),
        }
    }

    /// Waits until `n` more polls have completed, so everything sent before the call is
    /// settled (two polls suffice; see the ledger).
    pub fn wait_polls(&self, n: u64) {
        self.wait_polls_within(n, Duration::from_secs(20));
    }

    /// [`Agent::wait_polls`] with a limit of its own: under emulation (a foreign CPU's guest)
    /// a scrape of thousands of series takes seconds.
    pub fn wait_polls_within(&self, n: u64, limit: Duration) {
        let polls = |s: &Scrape| s.value("egress_monitor_polls_total", &[]).unwrap_or(0.0) as u64;
        let start = polls(&self.scrape());
        let done = wait_until(limit, || polls(&self.scrape()) >= start + n);
        assert!(done, "the agent did not poll {n} times within {limit:?}");
    }

    /// Waits for the ledger to settle and returns the metrics.
    pub fn settled(&self) -> Scrape {
        self.wait_polls(3);
        self.scrape()
    }

    /// SIGTERM; asserts the agent exits 0 within `limit`, and returns how long it took.
    pub fn terminate_within(&self, limit: Duration) -> Duration {
        let started = std::time::Instant::now();
        let status = self.child.terminate(limit);
        let took = started.elapsed();
        assert!(
            status.success(),
            "SIGTERM did not end the agent within {limit:?} ({status} after {took:?}); log:\n{}",
            self.child.log()
        );
        took
    }

    /// SIGTERM, and wait for the exit.
    pub fn stop(mut self) -> ExitStatus {
        let status = self.child.terminate(Duration::from_secs(10));
        self.cleanup();
        status
    }

    fn cleanup(&mut self) {
        if let Some(path) = self.config.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_running() {
            self.child.terminate(Duration::from_secs(10));
        }
        self.cleanup();
    }
}

/// Runs the agent to completion in the router namespace (for runs that must fail), with a
/// timeout after which it is killed. Returns its output.
pub fn run_agent_to_exit(lab: &Lab, args: &[&str], timeout: Duration) -> Output {
    run_agent_to_exit_with_env(lab, args, &[], timeout)
}

/// [`run_agent_to_exit`] with extra environment variables for the agent.
pub fn run_agent_to_exit_with_env(
    lab: &Lab,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Output {
    let binary = agent_binary();
    let mut cmd = netns::command(lab.router_ns(), binary.to_str().expect("UTF-8 path"));
    cmd.args(args).envs(env.iter().copied());
    // Never the host's /var/lib: every agent a test starts keeps its state in the lab.
    if !args.contains(&"--state-dir") {
        cmd.arg("--state-dir").arg(state_dir(lab));
    }
    if !args.contains(&"--pin-dir") {
        cmd.arg("--pin-dir").arg(lab.pin_dir());
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = lab.spawn(&mut cmd);
    let deadline = Instant::now() + timeout;
    while child.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = if child.is_running() {
        child.kill()
    } else {
        child.try_wait().expect("exited")
    };
    Output {
        status,
        stdout: Vec::new(),
        stderr: child.log().into_bytes(),
    }
}

/// Names of the programs attached to `interface` in namespace `ns`, on both TC hooks: TCX
/// programs (asked from the kernel, as bpftool 7.1 cannot list them) and clsact filters.
pub fn attached_programs(ns: &str, interface: &str) -> Vec<String> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let interface_owned = interface.to_owned();
    // Kernels before 6.6 have no TCX to ask about: only clsact filters.
    let tcx = kernel_at_least(
        &std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release"),
        (6, 6),
    );
    let mut names: Vec<String> = netns::run_in(ns, move || {
        [TcAttachType::Ingress, TcAttachType::Egress]
            .into_iter()
            .filter(|_| tcx)
            .flat_map(|hook| {
                let (_, programs) = SchedClassifier::query_tcx(&interface_owned, hook)
                    .unwrap_or_else(|e| panic!("query TCX programs of {interface_owned}: {e}"));
                programs
            })
            .map(|p| p.name_as_str().unwrap_or("?").to_owned())
            .collect()
    });
    for hook in ["ingress", "egress"] {
        let shown = netns::exec_ok(ns, "tc", &["filter", "show", "dev", interface, hook]);
        // One line per filter: `... handle 0x1 lan_ingress direct-action ... name lan_ingress ...`.
        let words: Vec<&str> = shown.split_whitespace().collect();
        names.extend(
            words
                .windows(2)
                .filter(|w| w[0] == "name")
                .map(|w| w[1].to_owned()),
        );
    }
    names
}

/// The mode `attach = "auto"` must pick on the running kernel: TCX from Linux 6.6, clsact
/// below (as `egress_monitor_interface_attached{mode}` reports it).
pub fn auto_attach_mode() -> &'static str {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    if kernel_at_least(&release, (6, 6)) {
        "tcx"
    } else {
        "clsact"
    }
}

/// Whether a kernel release like `6.1.0-57-amd64` is at least `major.minor`.
pub fn kernel_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// The programs attached to the lab's LAN, as `device:program`, sorted: on br-lan itself and
/// on each of its ports (where the agent counts a bridge).
pub fn lan_programs(lab: &Lab) -> Vec<String> {
    let ns = lab.router_ns();
    let mut out: Vec<String> = std::iter::once(crate::LAN_BRIDGE)
        .chain(lab.devices().iter().map(|d| d.router_port.as_str()))
        .flat_map(|device| {
            attached_programs(ns, device)
                .into_iter()
                .map(move |program| format!("{device}:{program}"))
        })
        .collect();
    out.sort();
    out
}

/// [`lan_programs`] while an agent counts the lab's br-lan: both programs on every port, none
/// on the bridge device.
pub fn expected_lan_programs(lab: &Lab) -> Vec<String> {
    let mut out: Vec<String> = lab
        .devices()
        .iter()
        .flat_map(|d| {
            ["lan_egress", "lan_ingress"].map(|program| format!("{}:{program}", d.router_port))
        })
        .collect();
    out.sort();
    out
}

/// The lab's state directory for its agents (baselines, control socket): in the lab's scratch
/// directory, so it goes with the lab, and shared by the agents one lab starts in turn, so a
/// restarted agent finds what the previous one learned.
pub fn state_dir(lab: &Lab) -> PathBuf {
    lab.scratch_dir().join("state")
}

/// Writes a configuration file for one agent of this lab.
pub fn write_config(lab: &Lab, config: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("{}-agent-{n}.toml", lab.id()));
    std::fs::write(&path, config).expect("write the agent's configuration");
    path
}

/// A minimal HTTP/1.0 GET inside namespace `ns`; None when nothing answers.
pub fn http_get(ns: &str, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_get_within(ns, addr, path, Duration::from_secs(5))
}

/// How long [`Agent::scrape`] waits for each read of the answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);

/// [`http_get`] waiting up to `read_timeout` for each read of the answer.
pub fn http_get_within(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    read_timeout: Duration,
) -> Option<(u16, String)> {
    let path = path.to_owned();
    netns::run_in(ns, move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(read_timeout)).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split(' ').nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b)?.to_owned();
        Some((status, body))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(kernel_at_least("6.6.0", (6, 6)));
        assert!(kernel_at_least("6.12.117+deb12-amd64", (6, 6)));
        assert!(kernel_at_least("6.18.44-fc-v857\n", (6, 6)));
        assert!(!kernel_at_least("6.1.0-57-amd64", (6, 6)));
        assert!(!kernel_at_least("5.10.0-46-amd64", (6, 6)));
        assert!(kernel_at_least("10.0", (6, 6)));
    }
}
