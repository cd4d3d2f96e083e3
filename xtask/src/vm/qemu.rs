//! Booting one guest in QEMU: the command line, the console streamed live and captured, a hard
//! time limit, and QEMU killed (ours only, by pid) on every way out.
//!
//! The guest has no network device at all (`-nodefaults`, `-nic none`): whatever the tests
//! send stays in the network namespaces they create inside it. Its only links to the host are
//! the serial console (out) and the host's root over 9p, read-only.

use std::{
    ffi::OsString,
    io::{self, Read as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, Once,
        atomic::{AtomicI32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    console::{Marker, Markers},
    initramfs::ROOT_TAG,
};
use crate::cmd::display;

pub const QEMU: &str = "qemu-system-x86_64";

/// The emulated machine: the host's own (x86-64, with the host's root over 9p), or a foreign
/// architecture's ([`super::arch`]), whose whole userland is in the initramfs.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    /// The QEMU program, e.g. `qemu-system-aarch64`.
    pub qemu: &'static str,
    /// `-M ...` and `-cpu ...` under TCG (a foreign guest always runs under TCG).
    pub tcg_args: &'static [&'static str],
    /// The kernel's console device (`ttyS0`, `ttyAMA0`, `ttysclp0`).
    pub console: &'static str,
    /// Whether the host's root is shared over 9p (only a guest of the host's architecture can
    /// run the host's programs).
    pub share_root: bool,
}

/// The host's architecture: Debian's amd64 kernels with the host's root.
pub const HOST: Machine = Machine {
    qemu: QEMU,
    tcg_args: &["-cpu", "max"],
    console: "ttyS0",
    share_root: true,
};

/// How the guest's CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// QEMU's emulator: slow but works everywhere. The default, because this project's
    /// machines have a nested kvm-pvm `/dev/kvm` on which stock Debian kernels die.
    Tcg,
    /// Hardware virtualization, where /dev/kvm works for stock kernels.
    Kvm,
}

/// What to boot and for how long.
pub struct Boot<'a> {
    pub machine: &'a Machine,
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub accel: Accel,
    /// QEMU is killed after this long, boot included.
    pub timeout: Duration,
    pub markers: &'a Markers,
    /// Put before each console line streamed to stdout, e.g. `[6.12] `.
    pub prefix: String,
}

/// What the guest printed, and when.
pub struct Console {
    /// Every console line (carriage returns removed), with its time since QEMU started.
    pub lines: Vec<(Duration, String)>,
    /// When the guest's root was up (the ready marker).
    pub ready_at: Option<Duration>,
    /// When the payload ended, and its exit status (the exit marker).
    pub exit: Option<(Duration, i32)>,
}

impl Console {
    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let start = self.lines.len().saturating_sub(n);
        self.lines[start..]
            .iter()
            .map(|(_, line)| line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// How long QEMU may take to power off after the exit marker before it is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

/// The QEMU command line for `boot`.
fn args(boot: &Boot) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    match boot.accel {
        Accel::Tcg => {
            push(&["-accel", "tcg,thread=multi"]);
            push(boot.machine.tcg_args);
        }
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
    }
    // A foreign guest runs one test binary from its initramfs: 1 GiB is plenty (and the most
    // a 32-bit guest without LPAE uses well).
    push(&[
        "-smp",
        "2",
        "-m",
        if boot.machine.share_root { "2G" } else { "1G" },
    ]);
    // No default devices (no NIC, no VGA...), no network at all, no monitor; the serial
    // console on stdio (not a terminal: stdin is /dev/null, so QEMU never puts ours in raw
    // mode and Ctrl-C reaches us).
    push(&[
        "-nodefaults",
        "-nic",
        "none",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ]);
    // The host's root, read-only; `multidevs=remap` because / spans several filesystems
    // (/proc, /sys...), whose inode numbers would otherwise collide in the guest.
    if boot.machine.share_root {
        push(&[
            "-fsdev",
            &format!("local,id={ROOT_TAG},path=/,security_model=none,readonly=on,multidevs=remap"),
            "-device",
            &format!("virtio-9p-pci,fsdev={ROOT_TAG},mount_tag={ROOT_TAG}"),
        ]);
    }
    push(&["-kernel"]);
    args.push(boot.vmlinuz.into());
    args.push("-initrd".into());
    args.push(boot.initrd.into());
    // panic=-1: a panic reboots, which -no-reboot turns into QEMU exiting.
    args.push("-append".into());
    args.push(
        format!(
            "console={} panic=-1 quiet rdinit=/init",
            boot.machine.console
        )
        .into(),
    );
    args
}

/// The pid of the QEMU running now (0: none), for the Ctrl-C handler.
static RUNNING: AtomicI32 = AtomicI32::new(0);

/// On Ctrl-C or SIGTERM, kills the QEMU we started (by its pid) and exits: QEMU shares our
/// process group, but a SIGTERM sent to xtask alone would otherwise leave it running.
fn install_interrupt_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let result = ctrlc::set_handler(|| {
            let pid = RUNNING.load(Ordering::SeqCst);
            if pid > 0 {
                // SAFETY: kill(2) touches no memory of ours; the pid is QEMU's, which we
                // have not reaped yet (it is reaped only after RUNNING is reset).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                eprintln!("\nvm: interrupted: killed QEMU (pid {pid})");
            }
            std::process::exit(130);
        });
        if let Err(err) = result {
            eprintln!("vm: warning: no Ctrl-C handler ({err}); QEMU may outlive an interrupt");
        }
    });
}

/// A started QEMU, killed and reaped when dropped unless it exited by itself.
struct Running {
    child: Child,
}

impl Running {
    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        // Before the reaping, after which the pid may belong to another process.
        RUNNING.store(0, Ordering::SeqCst);
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Boots the guest and waits for it to power off; fails if QEMU could not run, timed out or
/// ended without the exit marker (the error carries the console's last lines).
pub fn run(boot: &Boot) -> Result<Console> {
    install_interrupt_handler();
    let mut cmd = Command::new(boot.machine.qemu);
    cmd.args(args(boot))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = display(&cmd);
    eprintln!("$ {shown}");
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("failed to start `{shown}`"))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    RUNNING.store(pid, Ordering::SeqCst);
    let mut running = Running { child };

    let shared = Arc::new(Mutex::new(Capture::new(boot.markers.clone(), start)));
    let stdout = running.child.stdout.take().expect("stdout is piped");
    let stderr = running.child.stderr.take().expect("stderr is piped");
    let out_thread = {
        let shared = shared.clone();
        let prefix = boot.prefix.clone();
        thread::spawn(move || forward(stdout, &prefix, &shared, &mut io::stdout()))
    };
    let err_thread = thread::spawn(move || {
        let mut text = Vec::new();
        let mut stderr = stderr;
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });

    let deadline = start + boot.timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = running
            .child
            .try_wait()
            .with_context(|| format!("failed to wait for `{shown}`"))?
        {
            break Some(status);
        }
        let exit_seen = shared.lock().expect("capture lock").exit_seen;
        if Instant::now() >= deadline {
            timed_out = true;
            break None;
        }
        if exit_seen.is_some_and(|at| at.elapsed() > POWEROFF_GRACE) {
            eprintln!("vm: the guest did not power off after its exit marker: killing QEMU");
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    running.kill();
    let _ = out_thread.join();
    let qemu_stderr = err_thread.join().unwrap_or_default();
    let capture = Arc::try_unwrap(shared)
        .ok()
        .expect("the reader thread has ended")
        .into_inner()
        .expect("capture lock");
    let console = capture.console;

    if timed_out {
        bail!(
            "the guest did not finish within {} (QEMU killed); the console's last lines:\n{}",
            humantime::format_duration(boot.timeout),
            console.tail(40)
        );
    }
    if console.exit.is_none() {
        let status = status.map_or("killed".to_owned(), |s| s.to_string());
        bail!(
            "QEMU ended ({status}) without the guest's exit marker; QEMU said: {}\nthe \
             console's last lines:\n{}",
            qemu_stderr.trim(),
            console.tail(40)
        );
    }
    if !qemu_stderr.trim().is_empty() {
        eprintln!("vm: QEMU said: {}", qemu_stderr.trim());
    }
    Ok(console)
}

/// The console as it is read, shared with the main thread (which watches for the exit marker).
struct Capture {
    markers: Markers,
    start: Instant,
    partial: Vec<u8>,
    exit_seen: Option<Instant>,
    console: Console,
}

impl Capture {
    fn new(markers: Markers, start: Instant) -> Self {
        Self {
            markers,
            start,
            partial: Vec::new(),
            exit_seen: None,
            console: Console {
                lines: Vec::new(),
                ready_at: None,
                exit: None,
            },
        }
    }

    fn add(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.partial.drain(..=end).collect();
            self.line(&raw);
        }
    }

    fn line(&mut self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw).replace('\r', "");
        let text = text.trim_end_matches('\n').to_owned();
        let at = self.start.elapsed();
        match self.markers.parse(&text) {
            Some(Marker::Ready) => self.console.ready_at = Some(at),
            Some(Marker::Exit(status)) => {
                self.console.exit = Some((at, status));
                self.exit_seen = Some(Instant::now());
            }
            _ => {}
        }
        self.console.lines.push((at, text));
    }

    fn flush(&mut self) {
        if !self.partial.is_empty() {
            let raw = std::mem::take(&mut self.partial);
            self.line(&raw);
        }
    }
}

/// Copies the console to `out` as it comes (chunks, not lines, so that libtest's `test x ...`
/// shows before its verdict), `prefix` at each line's start, and into the capture.
fn forward(
    mut from: impl io::Read,
    prefix: &str,
    shared: &Mutex<Capture>,
    out: &mut impl io::Write,
) {
    let mut buf = [0; 8192];
    let mut at_line_start = true;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        let mut shown = Vec::with_capacity(n + prefix.len());
        for &byte in chunk {
            if byte == b'\r' {
                continue;
            }
            if at_line_start {
                shown.extend_from_slice(prefix.as_bytes());
            }
            shown.push(byte);
            at_line_start = byte == b'\n';
        }
        // A closed stdout (`| head`) must not stop the capture.
        let _ = out.write_all(&shown).and_then(|()| out.flush());
        shared.lock().expect("capture lock").add(chunk);
    }
    shared.lock().expect("capture lock").flush();
}

/// Fails with a clear message when QEMU or KVM is missing.
pub fn check_available(accel: Accel) -> Result<PathBuf> {
    super::apt::ensure_program(QEMU, "qemu-system-x86")?;
    if accel == Accel::Kvm && !Path::new("/dev/kvm").exists() {
        bail!("--accel kvm (or EGRESS_VM_ACCEL=kvm) needs /dev/kvm, which this machine lacks");
    }
    Ok(PathBuf::from(QEMU))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_args(accel: Accel) -> Vec<String> {
        let markers = Markers::with_nonce("00000000");
        let boot = Boot {
            machine: &HOST,
            vmlinuz: Path::new("/k/vmlinuz"),
            initrd: Path::new("/tmp/initrd"),
            accel,
            timeout: Duration::from_secs(60),
            markers: &markers,
            prefix: String::new(),
        };
        args(&boot)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn the_guest_has_no_network_and_a_read_only_root() {
        let args = boot_args(Accel::Tcg);
        let joined = args.join(" ");
        assert!(joined.contains("-nodefaults -nic none"));
        assert!(!joined.contains("user"), "{joined}");
        assert!(!joined.contains("netdev"), "{joined}");
        assert!(joined.contains("path=/,security_model=none,readonly=on"));
        assert!(joined.contains("-accel tcg,thread=multi -cpu max -smp 2 -m 2G"));
        assert!(joined.contains("-kernel /k/vmlinuz -initrd /tmp/initrd"));
        assert!(args.last().unwrap().contains("console=ttyS0 panic=-1"));
        assert!(
            boot_args(Accel::Kvm)
                .join(" ")
                .contains("-accel kvm -cpu host")
        );
    }

    #[test]
    fn a_foreign_guest_gets_its_machine_and_console_and_no_host_root() {
        let markers = Markers::with_nonce("00000000");
        let machine = Machine {
            qemu: "qemu-system-s390x",
            tcg_args: &["-M", "s390-ccw-virtio", "-cpu", "max"],
            console: "ttysclp0",
            share_root: false,
        };
        let boot = Boot {
            machine: &machine,
            vmlinuz: Path::new("/k/vmlinuz"),
            initrd: Path::new("/tmp/initrd"),
            accel: Accel::Tcg,
            timeout: Duration::from_secs(60),
            markers: &markers,
            prefix: String::new(),
        };
        let joined: Vec<String> = args(&boot)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = joined.join(" ");
        assert!(
            joined.contains("-accel tcg,thread=multi -M s390-ccw-virtio -cpu max -smp 2 -m 1G")
        );
        assert!(!joined.contains("9p"), "{joined}");
        assert!(joined.contains("console=ttysclp0 panic=-1"));
    }

    #[test]
    fn the_console_is_prefixed_per_line_and_captured_with_markers() {
        let markers = Markers::with_nonce("abcdef01");
        let shared = Mutex::new(Capture::new(markers.clone(), Instant::now()));
        let text = format!(
            "boot\r\n{}\r\ntest a ... ok\r\n{}\r\nno newline",
            markers.ready(),
            markers.exit("3")
        );
        let mut out = Vec::new();
        forward(text.as_bytes(), "[6.1] ", &shared, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("[6.1] boot\n[6.1] EGRESS-VM-READY abcdef01\n"));
        assert!(out.ends_with("[6.1] no newline"));
        let capture = shared.into_inner().unwrap();
        let console = capture.console;
        assert_eq!(console.lines.len(), 5);
        assert_eq!(console.lines[2].1, "test a ... ok");
        assert!(console.ready_at.is_some());
        assert_eq!(console.exit.map(|(_, status)| status), Some(3));
        assert_eq!(
            console.tail(2),
            format!("{}\nno newline", markers.exit("3"))
        );
    }
}
