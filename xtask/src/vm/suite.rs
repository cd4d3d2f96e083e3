//! What runs in the guests: prebuilt test binaries of the `egress-lab` crate (tests/tests/*.rs),
//! run directly (no cargo in the guest), one after the other, and how their output is read.
//!
//! The default subset is [`DEFAULT`]: the tests that exercise the kernel (the verifier,
//! BPF_PROG_TEST_RUN, TC attach, the sniff ring) rather than the agent's userspace, so that
//! the matrix stays within CI's time budget under TCG. `--all` runs every test binary whole.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context as _, Result, bail};

use super::{console::Markers, initramfs::sh_line};
use crate::{
    cmd::{cargo, display},
    setup::Toolchain,
    test::{AGENT_BIN_VAR, Tally},
};

/// Which tests of one test binary run.
#[derive(Debug, Clone, Copy)]
pub enum Tests {
    All,
    /// These test names, matched exactly.
    Only(&'static [&'static str]),
}

/// One row of the suite: a test binary (the name of its tests/tests/*.rs file), which of its
/// tests run, and how.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub binary: &'a str,
    pub tests: Tests,
    /// libtest flags, e.g. `--include-ignored` for tests the host kernel cannot run.
    pub flags: &'static [&'static str],
    /// Runs with `/sys/kernel/btf` hidden (an empty tmpfs over it), as on kernels built
    /// without BTF.
    pub hide_btf: bool,
}

/// The default subset, run on every kernel by `cargo xtask vm` and `cargo xtask test`.
///
/// To add a test binary, add a row; a row whose binary does not exist is an error, never a
/// silent skip.
pub const DEFAULT: &[Entry<'static>] = &[
    // Crafted frames through BPF_PROG_TEST_RUN, and the sniff ring: the verifier and the
    // parser on each kernel, without a lab.
    Entry {
        binary: "kernel_frames",
        tests: Tests::All,
        flags: &[],
        hide_btf: false,
    },
    // The agent in the lab: attach (TCX or clsact), count, restart, re-attach. Whole: under
    // TCG it takes about 70 s (the five tests below alone, 53 s); should it grow too slow,
    // cut it to `Tests::Only(AGENT_LAB_CORE)`.
    Entry {
        binary: "agent_lab",
        tests: Tests::All,
        flags: &[],
        hide_btf: false,
    },
    // The lab itself (namespaces, bridge, NAT) on this kernel.
    Entry {
        binary: "lab_smoke",
        tests: Tests::Only(&["udp_to_every_server_is_counted_exactly_at_the_wan"]),
        flags: &[],
        hide_btf: false,
    },
    // The local prefixes from the first packet, and a prefix that becomes local later.
    Entry {
        binary: "local_prefixes",
        tests: Tests::All,
        flags: &[],
        hide_btf: false,
    },
    // A bridge counted on its ports: bridged traffic, ports that leave, join, are re-created.
    Entry {
        binary: "bridge_ports",
        tests: Tests::All,
        flags: &[],
        hide_btf: false,
    },
    // OpenWrt's br-lan.1 on a VLAN-filtering bridge: ignored on the host, which has no 802.1Q.
    Entry {
        binary: "bridge_vlan",
        tests: Tests::All,
        flags: &["--include-ignored"],
        hide_btf: false,
    },
    // Software flow offload (nf_flow_table), both layouts, and the hardware offload check:
    // the flowtable tests are ignored on the host, whose kernel lacks nf_flow_table.
    Entry {
        binary: "offload",
        tests: Tests::All,
        flags: &["--include-ignored"],
        hide_btf: false,
    },
    // The agent without kernel BTF. The test hides /sys/kernel/btf from the agent itself (a
    // mount namespace of its own), so the row need not (`hide_btf` would, for the whole
    // binary).
    Entry {
        binary: "no_btf",
        tests: Tests::All,
        flags: &[],
        hide_btf: false,
    },
    // Lossless restarts: a stream across SIGKILL (the next agent swaps its programs into the
    // pinned TCX links, or into the clsact filters before 6.6) and across a restart with
    // other map sizes (the old maps' totals carried over).
    Entry {
        binary: "restarts",
        tests: Tests::Only(&[
            "a_stream_across_sigkill_and_start_is_counted_exactly",
            "a_stream_across_a_restart_with_other_map_sizes_is_counted_exactly",
        ]),
        flags: &[],
        hide_btf: false,
    },
];

/// The agent_lab tests that matter most on each kernel (attach modes, restart, re-attach),
/// should the whole binary grow too slow for the matrix.
#[expect(
    dead_code,
    reason = "the fallback subset, for when agent_lab grows too slow"
)]
pub const AGENT_LAB_CORE: &[&str] = &[
    "udp_and_tcp_are_counted_exactly_per_device_destination_and_direction",
    "lan_router_multicast_and_broadcast_traffic_is_not_a_destination",
    "a_restarted_agent_counts_on_and_detach_leaves_nothing_attached",
    "clsact_mode_counts_exactly_and_the_next_agent_takes_over_its_filters",
    "a_rebuilt_bridge_is_attached_again_and_counting_goes_on",
];

/// Which rows run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    Default,
    /// Every test binary of egress-lab, whole (keeping a row's flags and BTF setting).
    All,
}

/// A test binary built on the host.
#[derive(Debug, Clone)]
pub struct TestBinary {
    /// The target's name: `agent_lab` for tests/tests/agent_lab.rs.
    pub name: String,
    pub executable: PathBuf,
    /// The package's directory, where cargo would run it.
    pub dir: PathBuf,
}

/// Builds egress-lab's test binaries (`cargo test --no-run`) as `cargo test` would, and
/// returns the integration tests among them.
pub fn build(toolchain: &Toolchain, agent: &Path) -> Result<Vec<TestBinary>> {
    let mut cmd = cargo();
    cmd.args(["test", "-p", "egress-lab", "--no-run"])
        .arg("--message-format=json-render-diagnostics")
        .env(AGENT_BIN_VAR, agent)
        .envs(toolchain.env()?)
        .stdout(Stdio::piped());
    let shown = display(&cmd);
    eprintln!("$ {AGENT_BIN_VAR}={} {shown}", agent.display());
    let binaries = test_binaries_of(cmd, &shown)?;
    if binaries.is_empty() {
        bail!("`{shown}` reported no integration test executable");
    }
    Ok(binaries)
}

/// Runs `cmd` (a `cargo test --no-run` with JSON messages, stdout piped; `shown` for errors)
/// and returns the integration test binaries it announced.
pub(super) fn test_binaries_of(
    mut cmd: std::process::Command,
    shown: &str,
) -> Result<Vec<TestBinary>> {
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to start `{shown}`"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut binaries = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.with_context(|| format!("cannot read the output of `{shown}`"))?;
        if let Some(binary) = test_binary(&line) {
            binaries.push(binary);
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("failed to wait for `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(binaries)
}

/// The integration test binary (target kind `test`) that a cargo JSON line announces, if any.
pub(super) fn test_binary(line: &str) -> Option<TestBinary> {
    let artifact = crate::build::artifact(line)?;
    let is_test = artifact.profile.test && artifact.target.kind.iter().any(|k| k == "test");
    if !is_test {
        return None;
    }
    Some(TestBinary {
        name: artifact.target.name,
        executable: artifact.executable?,
        dir: artifact.manifest_path?.parent()?.to_owned(),
    })
}

/// One test binary run in the guest.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub executable: PathBuf,
    pub dir: PathBuf,
    pub args: Vec<String>,
    pub hide_btf: bool,
}

/// The steps of `selection`, restricted to the binaries named in `only` if any, with `extra`
/// libtest arguments after each binary's own.
pub fn steps(
    selection: Selection,
    only: &[String],
    binaries: &[TestBinary],
    extra: &[String],
) -> Result<Vec<Step>> {
    let built: BTreeMap<&str, &TestBinary> =
        binaries.iter().map(|b| (b.name.as_str(), b)).collect();
    let rows: Vec<Entry<'_>> = match selection {
        Selection::Default => DEFAULT.to_vec(),
        Selection::All => built
            .keys()
            .map(|name| {
                let row = DEFAULT.iter().find(|e| e.binary == *name);
                Entry {
                    binary: name,
                    tests: Tests::All,
                    flags: row.map_or(&[], |e| e.flags),
                    hide_btf: row.is_some_and(|e| e.hide_btf),
                }
            })
            .collect(),
    };
    for name in only {
        if !rows.iter().any(|row| row.binary == name) {
            let names: Vec<&str> = rows.iter().map(|row| row.binary).collect();
            bail!(
                "--test {name}: not a test binary of this suite (it has: {})",
                names.join(", ")
            );
        }
    }
    let mut steps = Vec::new();
    for entry in rows {
        let name = entry.binary;
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let binary = built.get(name).with_context(|| {
            format!(
                "the VM suite (xtask/src/vm/suite.rs) names the test binary `{name}`, but \
                 `cargo test -p egress-lab --no-run` built none by that name (built: {})",
                built.keys().copied().collect::<Vec<_>>().join(", ")
            )
        })?;
        let mut args = vec!["--test-threads=1".to_owned()];
        args.extend(entry.flags.iter().map(|f| (*f).to_owned()));
        if let Tests::Only(tests) = entry.tests {
            args.push("--exact".to_owned());
            args.extend(tests.iter().map(|t| (*t).to_owned()));
        }
        args.extend(extra.iter().cloned());
        steps.push(Step {
            name: name.to_owned(),
            executable: binary.executable.clone(),
            dir: binary.dir.clone(),
            args,
            hide_btf: entry.hide_btf,
        });
    }
    Ok(steps)
}

/// The environment of everything run in the guest: the agent binary for the tests (as
/// `cargo xtask test` sets it on the host), backtraces, and the kernel release, so that a
/// test can tell it runs in the matrix.
pub fn exports(agent: &Path, release: &str) -> String {
    let agent_var = format!("{AGENT_BIN_VAR}={}", agent.display());
    let kernel_var = format!("EGRESS_VM_KERNEL={release}");
    sh_line(
        "export",
        [agent_var.as_str(), "RUST_BACKTRACE=1", &kernel_var],
    )
}

/// The guest's payload for `steps`: each binary with its begin and end markers; the exit
/// status is 1 if any failed.
pub fn payload(steps: &[Step], exports: &str, markers: &Markers) -> String {
    let mut s = String::from("# The test binaries (xtask/src/vm/suite.rs).\n");
    s.push_str("B=/run/egress-vm/busybox\n");
    s.push_str(exports);
    s.push_str("\nfailed=0\n");
    for step in steps {
        s.push_str(&format!("echo \"{}\"\n", markers.step_begin(&step.name)));
        s.push_str("st=0\n");
        if step.hide_btf {
            s.push_str(
                "if [ -d /sys/kernel/btf ]; then\n    $B mount -t tmpfs -o mode=0555 egress-no-btf \
                 /sys/kernel/btf || { echo 'egress-vm: cannot hide /sys/kernel/btf'; st=125; }\nfi\n",
            );
        }
        let run = sh_line(
            "exec",
            std::iter::once(step.executable.as_os_str())
                .chain(step.args.iter().map(std::ffi::OsStr::new)),
        );
        s.push_str(&format!(
            "if [ $st -eq 0 ]; then\n    ({} && {run})\n    st=$?\nfi\n",
            sh_line("cd", [step.dir.as_os_str()])
        ));
        if step.hide_btf {
            s.push_str("[ -d /sys/kernel/btf ] && $B umount /sys/kernel/btf\n");
        }
        s.push_str(&format!(
            "echo\necho \"{}\"\n",
            markers.step_end(&step.name, "$st")
        ));
        s.push_str("[ $st -eq 0 ] || failed=1\n");
    }
    s.push_str("exit $failed\n");
    s
}

/// What one test binary did in the guest.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StepResult {
    pub name: String,
    /// Its exit status; None if it never ended (the guest's time limit, a crash).
    pub status: Option<i32>,
    pub started: bool,
    pub tally: Tally,
    /// Names of the tests that failed (`test NAME ... FAILED`).
    pub failed: Vec<String>,
    /// Each failed test's captured output (`---- NAME stdout ----`), line by line.
    pub failure_output: Vec<(String, Vec<String>)>,
}

impl StepResult {
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }

    /// What failed, for a summary: the failed tests, or how the binary ended.
    pub fn describe_failure(&self) -> String {
        if !self.failed.is_empty() {
            return self
                .failed
                .iter()
                .map(|test| format!("{}::{test}", self.name))
                .collect::<Vec<_>>()
                .join(", ");
        }
        match self.status {
            _ if !self.started => format!("{} (did not start)", self.name),
            None => format!("{} (did not finish)", self.name),
            Some(status) => format!("{} (exit status {status})", self.name),
        }
    }
}

/// A failed test's output without its backtraces (`RUST_BACKTRACE=1` in the guest makes them
/// the bulk of it), for the per-kernel report; the live log has them.
pub fn without_backtraces(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skipped: Option<usize> = None;
    for line in lines {
        if let Some(n) = skipped.as_mut() {
            let frame = line.starts_with(' ') || line.starts_with("note: Some details are omitted");
            if frame {
                *n += 1;
                continue;
            }
            out.push(format!("(a backtrace of {n} lines: see the log above)"));
            skipped = None;
        }
        if line.trim() == "stack backtrace:" {
            skipped = Some(0);
        } else {
            out.push(line.clone());
        }
    }
    if let Some(n) = skipped {
        out.push(format!("(a backtrace of {n} lines: see the log above)"));
    }
    out
}

/// Reads each step's results out of the console lines.
pub fn results(lines: &[&str], steps: &[Step], markers: &Markers) -> Vec<StepResult> {
    let mut results: Vec<StepResult> = steps
        .iter()
        .map(|step| StepResult {
            name: step.name.clone(),
            ..StepResult::default()
        })
        .collect();
    let mut current: Option<usize> = None;
    let mut section: Option<usize> = None;
    for line in lines {
        match markers.parse(line) {
            Some(super::console::Marker::StepBegin(name)) => {
                current = results.iter().position(|r| r.name == name && !r.started);
                if let Some(i) = current {
                    results[i].started = true;
                }
                section = None;
                continue;
            }
            Some(super::console::Marker::StepEnd(name, status)) => {
                if let Some(result) = results.iter_mut().find(|r| r.name == name && r.started) {
                    result.status = Some(status);
                }
                current = None;
                section = None;
                continue;
            }
            _ => {}
        }
        let Some(i) = current else {
            continue;
        };
        let result = &mut results[i];
        result.tally.add_line(line);
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            result.failed.push(name.to_owned());
        }
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|rest| rest.strip_suffix(" stdout ----"))
        {
            result.failure_output.push((name.to_owned(), Vec::new()));
            section = Some(result.failure_output.len() - 1);
        } else if line.trim() == "failures:" {
            section = None;
        } else if let Some(s) = section {
            result.failure_output[s].1.push((*line).to_owned());
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILT: &[&str] = &[
        "agent_lab",
        "kernel_frames",
        "lab_smoke",
        "local_prefixes",
        "bridge_ports",
        "bridge_vlan",
        "offload",
        "no_btf",
        "restarts",
        "deploy",
    ];

    fn binaries(names: &[&str]) -> Vec<TestBinary> {
        names
            .iter()
            .map(|name| TestBinary {
                name: (*name).to_owned(),
                executable: PathBuf::from(format!("/w/target/debug/deps/{name}-0123abcd")),
                dir: PathBuf::from("/w/tests"),
            })
            .collect()
    }

    #[test]
    fn picks_integration_test_executables_from_cargo_messages() {
        let test = r#"{"reason":"compiler-artifact","package_id":"x","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"agent_lab","src_path":"/w/tests/tests/agent_lab.rs"},"profile":{"opt_level":"0","test":true},"executable":"/w/target/debug/deps/agent_lab-0123abcd","fresh":true}"#;
        let binary = test_binary(test).unwrap();
        assert_eq!(binary.name, "agent_lab");
        assert_eq!(
            binary.executable,
            Path::new("/w/target/debug/deps/agent_lab-0123abcd")
        );
        assert_eq!(binary.dir, Path::new("/w/tests"));
        let lib_tests = r#"{"reason":"compiler-artifact","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["lib"],"name":"egress_lab"},"profile":{"test":true},"executable":"/w/target/debug/deps/egress_lab-1"}"#;
        assert!(test_binary(lib_tests).is_none());
        let lib = r#"{"reason":"compiler-artifact","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["lib"],"name":"egress_lab"},"profile":{"test":false},"executable":null}"#;
        assert!(test_binary(lib).is_none());
        assert!(test_binary(r#"{"reason":"build-finished","success":true}"#).is_none());
    }

    #[test]
    fn the_default_subset_runs_single_threaded_with_exact_filters() {
        let built = binaries(BUILT);
        let steps = steps(Selection::Default, &[], &built, &["--nocapture".into()]).unwrap();
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "kernel_frames",
                "agent_lab",
                "lab_smoke",
                "local_prefixes",
                "bridge_ports",
                "bridge_vlan",
                "offload",
                "no_btf",
                "restarts"
            ]
        );
        assert_eq!(steps[0].args, ["--test-threads=1", "--nocapture"]);
        for ignored_on_the_host in [5, 6] {
            assert_eq!(
                steps[ignored_on_the_host].args,
                ["--test-threads=1", "--include-ignored", "--nocapture"]
            );
        }
        assert_eq!(
            steps[2].args,
            [
                "--test-threads=1",
                "--exact",
                "udp_to_every_server_is_counted_exactly_at_the_wan",
                "--nocapture"
            ]
        );
    }

    #[test]
    fn all_runs_every_binary_whole_and_a_missing_one_is_an_error() {
        let built = binaries(BUILT);
        let all = steps(Selection::All, &[], &built, &[]).unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "agent_lab",
                "bridge_ports",
                "bridge_vlan",
                "deploy",
                "kernel_frames",
                "lab_smoke",
                "local_prefixes",
                "no_btf",
                "offload",
                "restarts"
            ]
        );
        // Whole binaries, with a row's own flags kept.
        for step in &all {
            let expected: &[&str] = if step.name == "offload" || step.name == "bridge_vlan" {
                &["--test-threads=1", "--include-ignored"]
            } else {
                &["--test-threads=1"]
            };
            assert_eq!(step.args, expected, "{}", step.name);
        }

        let only = steps(Selection::Default, &["lab_smoke".into()], &built, &[]).unwrap();
        assert_eq!(only.len(), 1);
        assert!(steps(Selection::Default, &["nope".into()], &built, &[]).is_err());

        let err = steps(Selection::Default, &[], &binaries(&["agent_lab"]), &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("names the test binary `kernel_frames`"),
            "{err}"
        );
    }

    #[test]
    fn the_payload_runs_each_binary_between_markers() {
        let markers = Markers::with_nonce("cafe0001");
        let built = binaries(BUILT);
        let mut steps = steps(Selection::Default, &["lab_smoke".into()], &built, &[]).unwrap();
        steps[0].hide_btf = true;
        let payload = payload(
            &steps,
            &exports(
                Path::new("/w/target/debug/egress-monitor"),
                "6.1.0-57-amd64",
            ),
            &markers,
        );
        assert!(payload.contains(
            "export EGRESS_MONITOR_BIN=/w/target/debug/egress-monitor RUST_BACKTRACE=1 EGRESS_VM_KERNEL=6.1.0-57-amd64\n"
        ));
        assert!(payload.contains(
            "(cd /w/tests && exec /w/target/debug/deps/lab_smoke-0123abcd --test-threads=1 --exact \
             udp_to_every_server_is_counted_exactly_at_the_wan)"
        ), "{payload}");
        assert!(payload.contains("echo \"EGRESS-VM-STEP cafe0001 begin lab_smoke\""));
        assert!(payload.contains("echo \"EGRESS-VM-STEP cafe0001 end lab_smoke $st\""));
        assert!(payload.contains("egress-no-btf /sys/kernel/btf"));
        assert!(payload.ends_with("exit $failed\n"));
    }

    #[test]
    fn backtraces_are_left_out_of_failure_excerpts() {
        let output: Vec<String> = [
            "",
            "thread 't' (7) panicked at tests/src/agent.rs:240:41:",
            "query TCX programs of br-lan: `bpf_prog_query` failed",
            "stack backtrace:",
            "   0: __rustc::rust_begin_unwind",
            "             at /rustc/library/std/src/panicking.rs:689:5",
            "note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.",
            "agent log:",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            without_backtraces(&output),
            [
                "",
                "thread 't' (7) panicked at tests/src/agent.rs:240:41:",
                "query TCX programs of br-lan: `bpf_prog_query` failed",
                "(a backtrace of 3 lines: see the log above)",
                "agent log:",
            ]
        );
    }

    #[test]
    fn results_name_the_failed_tests_and_keep_their_output() {
        let markers = Markers::with_nonce("cafe0001");
        let built = binaries(BUILT);
        let steps = steps(Selection::Default, &[], &built, &[]).unwrap();
        let console = [
            "booting".to_owned(),
            markers.step_begin("kernel_frames"),
            "running 2 tests".into(),
            "test a ... ok".into(),
            "test b ... FAILED".into(),
            "".into(),
            "failures:".into(),
            "".into(),
            "---- b stdout ----".into(),
            "loading the eBPF programs failed".into(),
            "Verifier output: invalid access to packet".into(),
            "".into(),
            "failures:".into(),
            "    b".into(),
            "".into(),
            "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s".into(),
            markers.step_end("kernel_frames", "101"),
            markers.step_begin("agent_lab"),
            "test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 3 filtered out; finished in 9.00s".into(),
            markers.step_end("agent_lab", "0"),
            markers.step_begin("lab_smoke"),
            "running 1 test".into(),
        ];
        let lines: Vec<&str> = console.iter().map(String::as_str).collect();
        let results = results(&lines, &steps, &markers);
        assert_eq!(results[0].status, Some(101));
        assert_eq!(results[0].failed, ["b"]);
        assert_eq!(
            results[0].tally.to_string(),
            "tests: 1 passed, 1 failed, 0 skipped"
        );
        assert_eq!(
            results[0].failure_output,
            [(
                "b".to_owned(),
                vec![
                    "loading the eBPF programs failed".to_owned(),
                    "Verifier output: invalid access to packet".to_owned(),
                    String::new()
                ]
            )]
        );
        assert_eq!(results[0].describe_failure(), "kernel_frames::b");
        assert!(results[1].ok());
        assert_eq!(results[2].status, None);
        assert_eq!(results[2].describe_failure(), "lab_smoke (did not finish)");
    }
}
