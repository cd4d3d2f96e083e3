//! `cargo xtask vm`: the kernel matrix. Boots Debian's 5.10, 6.1 and 6.12 kernels in QEMU and
//! runs egress-lab's kernel-facing integration tests inside each, because the eBPF programs
//! must pass every verifier from 5.10 on, and the host runs only one kernel.
//!
//! How a guest is made, and why:
//!
//! * The kernel is Debian's own package (`linux-image-<release>-amd64`, not the cloud flavour,
//!   which lacks 9p), fetched with `apt-get download` from a private apt state and unpacked
//!   with `dpkg -x` into the cache ([`kernels`], [`apt`]). Its modules come with it: the
//!   guest's kmod autoloads veth, bridge, sch_ingress, cls_bpf, nf_tables... as on a real
//!   Debian machine.
//! * The guest's root is the host's root filesystem, shared read-only over 9p
//!   (virtio-9p-pci), with a tmpfs overlay on top so that the guest can write (into its own
//!   RAM) without touching the host. So the host's tools (ip, nft, tcpdump, dnsmasq,
//!   conntrack, bpftool, prometheus) and the test binaries run in the guest unchanged, and
//!   there is no userland image to build or keep in sync: what `cargo xtask setup` installed
//!   on the host is what the guest has. The initramfs ([`initramfs`]) holds only a static
//!   busybox, the modules to mount that root, and the scripts that do it.
//! * QEMU runs with TCG by default ([`qemu`]): this project's machines have a nested kvm-pvm
//!   on which stock kernels die. The guest has no network device at all.
//! * The test binaries are built on the host (`cargo test --no-run`) and run in the guest
//!   directly, one at a time, single-threaded ([`suite`]); their libtest output comes back
//!   over the serial console, between marker lines ([`console`]).
//! * `--arch arm64|armhf|s390x` boots Debian's kernel of another architecture instead, with
//!   a cross-built kernel_frames and that architecture's busybox as the whole userland
//!   ([`arch`], [`cross_tests`]).

mod apt;
mod arch;
mod console;
mod cross_tests;
mod initramfs;
mod kernels;
mod qemu;
mod suite;
mod userland;

use std::{
    env,
    ffi::OsString,
    fs::{self, File},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use clap::ValueEnum as _;

use self::{
    apt::AptState,
    console::Markers,
    kernels::{Extracted, Kernel, MATRIX},
    qemu::Accel,
    suite::{Selection, Step, StepResult},
};
use crate::{
    build,
    cmd::Phases,
    setup::{self, Toolchain, cache_home},
    test::Tally,
};

/// The variable that picks the accelerator when `--accel` is not given (`kvm` where
/// /dev/kvm works for stock kernels).
const ACCEL_VAR: &str = "EGRESS_VM_ACCEL";

/// The default time limit per VM, boot to power-off: generous, since the default subset
/// takes a few minutes under TCG and a slow CI machine may take twice as long.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The time limit per foreign-architecture VM in `cargo xtask test`: kernel_frames takes
/// about a minute under TCG.
const ARCH_TIMEOUT: Duration = Duration::from_secs(10 * 60);

pub use arch::run_arches;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kernels to boot (repeatable): 5.10, 6.1, 6.12. All of them if not given.
    #[arg(long = "kernel", value_name = "SERIES")]
    kernels: Vec<String>,

    /// Foreign architectures to boot instead of the amd64 kernels (repeatable): arm64, armhf,
    /// s390x (big-endian). Each runs the cross-built kernel_frames in Debian bookworm's kernel
    /// of that architecture under TCG; `--kernel` does not apply.
    #[arg(long = "arch", value_enum, value_name = "ARCH")]
    arches: Vec<arch::Arch>,

    /// Run every integration test binary of egress-lab whole, not the default subset.
    #[arg(long)]
    all: bool,

    /// Only this test binary of the suite (repeatable), e.g. `--test kernel_frames`.
    #[arg(long = "test", value_name = "BINARY")]
    tests: Vec<String>,

    /// Go on with the next kernels after one could not be fetched, booted or timed out
    /// (failed tests never stop the matrix; every kernel runs and the failures are summed up
    /// at the end).
    #[arg(long)]
    keep_going: bool,

    /// Run the command after `--` in each guest instead of the tests, e.g.
    /// `cargo xtask vm --shell --kernel 6.1 -- sh -c 'uname -r; ip -V'`.
    #[arg(long)]
    shell: bool,

    /// The accelerator; `tcg` works everywhere, `kvm` only where /dev/kvm runs stock kernels
    /// [default: $EGRESS_VM_ACCEL, else tcg]
    #[arg(long, value_enum)]
    accel: Option<Accel>,

    /// Time limit per VM, boot included, e.g. `30m`; QEMU is killed after it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20m")]
    timeout: Duration,

    /// Look for newer kernel packages than the cached ones.
    #[arg(long)]
    update_kernels: bool,

    /// After `--`: libtest arguments for every test binary (e.g. `--nocapture`), or with
    /// `--shell` the command to run.
    #[arg(last = true)]
    args: Vec<OsString>,
}

/// What a matrix run does; `cargo xtask test` uses [`Options::for_test`].
#[derive(Debug)]
pub struct Options {
    kernels: Vec<&'static Kernel>,
    /// Foreign architectures (`--arch`); when set, these run instead of `kernels`.
    arches: Vec<arch::Arch>,
    selection: Selection,
    only: Vec<String>,
    extra: Vec<String>,
    accel: Accel,
    timeout: Duration,
    keep_going: bool,
    update_kernels: bool,
}

impl Options {
    /// The default subset on every kernel, as CI runs it after the host's tests; a kernel that
    /// cannot boot does not hide the others' results.
    pub fn for_test() -> Result<Self> {
        Ok(Self {
            kernels: MATRIX.iter().collect(),
            arches: Vec::new(),
            selection: Selection::Default,
            only: Vec::new(),
            extra: Vec::new(),
            accel: accel_from_env()?.unwrap_or(Accel::Tcg),
            timeout: DEFAULT_TIMEOUT,
            keep_going: true,
            update_kernels: false,
        })
    }

    /// The foreign architectures' runs (kernel_frames on arm64, armhf and s390x), as CI runs
    /// them after the amd64 matrix.
    pub fn for_arch_test() -> Result<Self> {
        Ok(Self {
            arches: arch::ALL.to_vec(),
            timeout: ARCH_TIMEOUT,
            ..Self::for_test()?
        })
    }

    fn from_args(args: &Args) -> Result<Self> {
        let kernels = if args.kernels.is_empty() {
            MATRIX.iter().collect()
        } else {
            args.kernels
                .iter()
                .map(|name| kernels::by_name(name))
                .collect::<Result<_>>()?
        };
        let accel = match args.accel {
            Some(accel) => accel,
            None => accel_from_env()?.unwrap_or(Accel::Tcg),
        };
        let extra = if args.shell {
            Vec::new()
        } else {
            args.args
                .iter()
                .map(|arg| {
                    arg.clone()
                        .into_string()
                        .map_err(|arg| anyhow::anyhow!("non-UTF-8 argument {arg:?}"))
                })
                .collect::<Result<_>>()?
        };
        ensure!(
            !args.shell || (!args.all && args.tests.is_empty()),
            "--shell runs a command, not tests: it takes neither --all nor --test"
        );
        ensure!(
            args.arches.is_empty() || (args.kernels.is_empty() && !args.all && !args.shell),
            "--arch boots that architecture's kernel with kernel_frames: it takes neither \
             --kernel, --all nor --shell"
        );
        Ok(Self {
            kernels,
            arches: args.arches.clone(),
            selection: if args.all {
                Selection::All
            } else {
                Selection::Default
            },
            only: args.tests.clone(),
            extra,
            accel,
            timeout: args.timeout,
            keep_going: args.keep_going,
            update_kernels: args.update_kernels,
        })
    }

    /// The guest kills its payload this long before QEMU is killed, so that the exit
    /// marker and the test output before it still come out.
    fn payload_timeout(&self) -> Duration {
        self.timeout
            .saturating_sub(Duration::from_secs(60))
            .max(self.timeout / 2)
    }
}

fn accel_from_env() -> Result<Option<Accel>> {
    match env::var(ACCEL_VAR) {
        Ok(value) if !value.is_empty() => Accel::from_str(&value, true)
            .map(Some)
            .map_err(|err| anyhow::anyhow!("{ACCEL_VAR}={value}: {err}")),
        _ => Ok(None),
    }
}

pub fn run(args: &Args) -> Result<()> {
    let options = Options::from_args(args)?;
    let mut phases = Phases::default();
    let mut tally = Tally::default();
    let result = (|| {
        let toolchain = phases.run("setup", setup::run)?;
        if !options.arches.is_empty() {
            return phases.run("vm (arch)", || run_arches(&toolchain, &options, &mut tally));
        }
        let agent = phases.run("build", || build::build_agent(&toolchain, false))?;
        if args.shell {
            phases.run("vm shell", || shell(&options, &agent, &args.args))
        } else {
            phases.run("vm", || {
                run_matrix(&toolchain, &agent, &options, &mut tally)
            })
        }
    })();
    eprintln!("\n{}", phases.summary());
    if tally.runs > 0 {
        println!("{tally}");
    }
    result
}

/// The vm cache dir: `~/.cache/egress-monitor/vm`, beside bpf-linker's.
fn cache_dir() -> Result<PathBuf> {
    let dir = cache_home()?.join("egress-monitor").join("vm");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Fetches the kernels (and busybox) under a lock on the cache, so that two runs at once do
/// not download into the same directories.
fn fetch(options: &Options) -> Result<(PathBuf, Vec<Extracted>)> {
    let cache = cache_dir()?;
    let lock_path = cache.join(".lock");
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let busybox = ensure_busybox(&cache)?;
    let kernels = options
        .kernels
        .iter()
        .map(|kernel| kernels::ensure(kernel, &cache, options.update_kernels))
        .collect::<Result<_>>()?;
    Ok((busybox, kernels))
}

/// The suite whose busybox-static goes into the initramfs (any release's would do).
const BUSYBOX_SUITE: &str = "bookworm";

/// The static busybox from Debian's busybox-static .deb, unpacked once into the cache.
fn ensure_busybox(cache: &Path) -> Result<PathBuf> {
    let path = initramfs::busybox_path(cache);
    if path.is_file() {
        return Ok(path);
    }
    println!("vm: fetching busybox-static (unpacked, not installed: it conflicts with busybox)");
    let state = AptState::new(BUSYBOX_SUITE, &cache.join("apt").join(BUSYBOX_SUITE))?;
    state.update(false)?;
    let dir = path.parent().expect("busybox_path has a parent");
    let download = dir.join(".download");
    let deb = state.download("busybox-static", &download)?;
    let unpacked = download.join("root");
    apt::extract(&deb, &unpacked)?;
    let partial = dir.join("busybox.partial");
    fs::copy(unpacked.join("bin/busybox"), &partial).with_context(|| {
        format!(
            "cannot copy bin/busybox out of {} (unpacked in {})",
            deb.display(),
            unpacked.display()
        )
    })?;
    initramfs::check_static(&partial)?;
    // The rename is what marks it complete: an interrupted fetch leaves no `busybox`.
    fs::rename(&partial, &path)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))?;
    fs::remove_dir_all(&download)
        .with_context(|| format!("cannot remove {}", download.display()))?;
    Ok(path)
}

/// A scratch directory for one guest's initramfs, removed when dropped.
///
/// It lives in the cache (`vm/run/<pid>-<nonce>`), and directories of processes that are gone
/// (killed by SIGKILL, say, when no Drop runs) are removed by the next run.
struct Scratch(PathBuf);

impl Scratch {
    fn new(markers: &Markers) -> Result<Self> {
        let runs = cache_dir()?.join("run");
        if let Ok(entries) = fs::read_dir(&runs) {
            for entry in entries.filter_map(|e| e.ok()) {
                let name = entry.file_name();
                let pid = name.to_str().and_then(|n| n.split('-').next());
                if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = runs.join(format!("{}-{}", std::process::id(), markers.nonce()));
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The host directories the guest runs from: the workspace, and the target directory that holds
/// xtask, the agent and the test binaries (elsewhere with `CARGO_TARGET_DIR`).
fn host_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![crate::cmd::workspace_root().to_owned()];
    if let Some(target) = env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.to_owned()))
    {
        dirs.push(target);
    }
    dirs
}

/// Boots `kernel` with `payload` and returns its console.
fn boot(
    kernel: &Extracted,
    busybox: &Path,
    options: &Options,
    markers: &Markers,
    payload: String,
) -> Result<qemu::Console> {
    let scratch = Scratch::new(markers)?;
    let initrd = scratch.0.join("initrd.cpio");
    initramfs::write(
        &initramfs::Guest {
            kernel,
            busybox,
            markers,
            payload_timeout: options.payload_timeout(),
            payload,
            host_dirs: host_dirs(),
        },
        &initrd,
    )
    .with_context(|| format!("cannot write the initramfs for {}", kernel.release))?;
    let console = qemu::run(&qemu::Boot {
        machine: &qemu::HOST,
        vmlinuz: &kernel.vmlinuz(),
        initrd: &initrd,
        accel: options.accel,
        timeout: options.timeout,
        markers,
        prefix: format!("[{}] ", kernel.kernel.name),
    })
    .with_context(|| format!("kernel {} ({})", kernel.kernel.name, kernel.release))?;
    Ok(console)
}

/// What one kernel's guest did.
struct KernelRun {
    name: &'static str,
    release: String,
    outcome: Result<GuestRun>,
}

struct GuestRun {
    /// From QEMU's start to the guest's ready marker.
    boot: Duration,
    /// From the ready marker to the exit marker.
    tests: Duration,
    steps: Vec<StepResult>,
}

impl GuestRun {
    fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        for step in &self.steps {
            tally.add(&step.tally);
        }
        tally
    }

    fn failures(&self) -> Vec<&StepResult> {
        self.steps.iter().filter(|s| !s.ok()).collect()
    }

    /// The failed steps, described and joined by commas.
    fn failure_list(&self) -> String {
        self.failures()
            .iter()
            .map(|s| s.describe_failure())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Runs the suite on each kernel of `options`, after building the test binaries; adds the
/// guests' test counts to `tally`. Fails, after every kernel ran, if any test failed.
pub fn run_matrix(
    toolchain: &Toolchain,
    agent: &Path,
    options: &Options,
    tally: &mut Tally,
) -> Result<()> {
    qemu::check_available(options.accel)?;
    let binaries = suite::build(toolchain, agent)?;
    let steps = suite::steps(options.selection, &options.only, &binaries, &options.extra)?;
    let (busybox, kernels) = fetch(options)?;

    let mut runs = Vec::new();
    for kernel in &kernels {
        eprintln!(
            "\n==> vm {} ({}): {} test binaries",
            kernel.kernel.name,
            kernel.release,
            steps.len()
        );
        let outcome = run_suite(kernel, &busybox, &steps, agent, options);
        let run = KernelRun {
            name: kernel.kernel.name,
            release: kernel.release.clone(),
            outcome,
        };
        print_details(&run);
        if let Ok(guest) = &run.outcome {
            tally.add(&guest.tally());
        }
        let stop = run.outcome.is_err() && !options.keep_going;
        runs.push(run);
        if stop {
            break;
        }
    }

    let failed = report(&runs);
    if runs.len() < kernels.len() {
        let run = runs.last().expect("stopped after a run");
        let err = run.outcome.as_ref().err().expect("stopped on an error");
        bail!(
            "kernel {} failed, the rest of the matrix did not run (--keep-going goes on): {err:#}",
            run.name
        );
    }
    if !failed.is_empty() {
        bail!("tests failed in the VMs: {}", failed.join("; "));
    }
    Ok(())
}

/// Boots one kernel with the suite as its payload and reads the results.
fn run_suite(
    kernel: &Extracted,
    busybox: &Path,
    steps: &[Step],
    agent: &Path,
    options: &Options,
) -> Result<GuestRun> {
    let markers = Markers::new();
    let payload = suite::payload(steps, &suite::exports(agent, &kernel.release), &markers);
    let console = boot(kernel, busybox, options, &markers, payload)?;
    let lines: Vec<&str> = console.lines.iter().map(|(_, l)| l.as_str()).collect();
    let ready = console.ready_at.with_context(|| {
        format!(
            "kernel {}: the guest's root never came up; the console's last lines:\n{}",
            kernel.release,
            console.tail(40)
        )
    })?;
    let (exit_at, _status) = console
        .exit
        .expect("qemu::run fails without an exit marker");
    Ok(GuestRun {
        boot: ready,
        tests: exit_at.saturating_sub(ready),
        steps: suite::results(&lines, steps, &markers),
    })
}

/// How many lines of a failed test's output the per-kernel report repeats (all of it was
/// streamed live already).
const FAILURE_EXCERPT: usize = 40;

/// After each kernel: its failures, each with the start of its output.
fn print_details(run: &KernelRun) {
    let guest = match &run.outcome {
        Ok(guest) => guest,
        Err(err) => {
            eprintln!("vm {}: ERROR: {err:#}", run.name);
            return;
        }
    };
    for step in guest.failures() {
        eprintln!("vm {}: FAILED {}", run.name, step.describe_failure());
        for (test, output) in &step.failure_output {
            eprintln!("---- {} {test} on {} ----", step.name, run.release);
            let output = suite::without_backtraces(output);
            for line in output.iter().take(FAILURE_EXCERPT) {
                eprintln!("    {line}");
            }
            if output.len() > FAILURE_EXCERPT {
                eprintln!(
                    "    ... ({} more lines in the log above)",
                    output.len() - FAILURE_EXCERPT
                );
            }
        }
    }
}

/// `vm 6.12 (6.12.117+deb12-amd64): ok, boot 5.1s, tests 93.0s, tests: 9 passed, ...`.
/// Prints a summary line per run; the runs that failed, each with why.
fn report(runs: &[KernelRun]) -> Vec<String> {
    eprintln!();
    for run in runs {
        println!("{}", summary_line(run));
    }
    runs.iter()
        .filter_map(|run| match &run.outcome {
            Ok(guest) if guest.failures().is_empty() => None,
            Ok(guest) => Some(format!("{} ({})", run.name, guest.failure_list())),
            Err(err) => Some(format!(
                "{} (no result: {})",
                run.name,
                format!("{err:#}").lines().next().unwrap_or_default()
            )),
        })
        .collect()
}

fn summary_line(run: &KernelRun) -> String {
    match &run.outcome {
        Ok(guest) => {
            let verdict = if guest.failures().is_empty() {
                "ok".to_owned()
            } else {
                format!("FAILED ({})", guest.failure_list())
            };
            format!(
                "vm {} ({}): {verdict}, boot {:.1}s, tests {:.1}s, {}",
                run.name,
                run.release,
                guest.boot.as_secs_f64(),
                guest.tests.as_secs_f64(),
                guest.tally()
            )
        }
        Err(err) => format!(
            "vm {} ({}): ERROR: {}",
            run.name,
            run.release,
            format!("{err:#}").lines().next().unwrap_or_default()
        ),
    }
}

/// `--shell`: runs `command` in each kernel's guest, from the current directory (seen at the
/// same path through the shared root), with the tests' environment.
fn shell(options: &Options, agent: &Path, command: &[OsString]) -> Result<()> {
    ensure!(
        !command.is_empty(),
        "--shell needs a command after `--`, e.g. `cargo xtask vm --shell --kernel 6.1 -- uname -a` \
         (the console is not a terminal: no interactive shell)"
    );
    qemu::check_available(options.accel)?;
    let (busybox, kernels) = fetch(options)?;
    let cwd = env::current_dir().context("cannot read the current directory")?;
    let mut failed = Vec::new();
    for kernel in &kernels {
        let markers = Markers::new();
        let payload = format!(
            "{}\n{}\n{}\n",
            suite::exports(agent, &kernel.release),
            initramfs::sh_line("cd", [cwd.as_os_str()]),
            initramfs::sh_line("exec", command)
        );
        let console = boot(kernel, &busybox, options, &markers, payload)?;
        let (_, status) = console
            .exit
            .expect("qemu::run fails without an exit marker");
        let boot = console.ready_at.unwrap_or_default();
        println!(
            "vm {} ({}): exit status {status}, boot {:.1}s",
            kernel.kernel.name,
            kernel.release,
            boot.as_secs_f64()
        );
        if status != 0 {
            failed.push(format!("{} (exit status {status})", kernel.kernel.name));
        }
    }
    if !failed.is_empty() {
        bail!("the command failed in the guest: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_stops_its_payload_before_the_host_kills_qemu() {
        let mut options = Options::for_test().unwrap();
        assert_eq!(options.timeout, Duration::from_secs(1200));
        assert_eq!(options.payload_timeout(), Duration::from_secs(1140));
        options.timeout = Duration::from_secs(60);
        assert_eq!(options.payload_timeout(), Duration::from_secs(30));
        assert_eq!(options.kernels.len(), MATRIX.len());
    }

    #[test]
    fn summary_lines_name_the_kernel_and_its_failures() {
        let markers = Markers::with_nonce("00000001");
        let step = StepResult {
            name: "kernel_frames".into(),
            status: Some(101),
            started: true,
            failed: vec!["a".into()],
            ..StepResult::default()
        };
        let _ = markers;
        let run = KernelRun {
            name: "6.1",
            release: "6.1.0-57-amd64".into(),
            outcome: Ok(GuestRun {
                boot: Duration::from_millis(5100),
                tests: Duration::from_secs(93),
                steps: vec![step],
            }),
        };
        assert_eq!(
            summary_line(&run),
            "vm 6.1 (6.1.0-57-amd64): FAILED (kernel_frames::a), boot 5.1s, tests 93.0s, \
             tests: 0 passed, 0 failed, 0 skipped"
        );
        let broken = KernelRun {
            name: "5.10",
            release: "5.10.0-46-amd64".into(),
            outcome: Err(anyhow::anyhow!("the guest did not finish\nconsole...")),
        };
        assert_eq!(
            summary_line(&broken),
            "vm 5.10 (5.10.0-46-amd64): ERROR: the guest did not finish"
        );
    }
}
