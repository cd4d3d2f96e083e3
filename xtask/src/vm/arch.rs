//! `cargo xtask vm --arch arm64|armhf|s390x`: Debian kernels of other architectures in
//! qemu-system-aarch64, -arm and -s390x (TCG), running a cross-built test binary, so that the
//! programs, the maps' layouts and the readers are proven on a 64-bit Arm CPU, a 32-bit one
//! (`usize`, atomics, per-CPU value layout) and a big-endian one (s390x: since Debian packages
//! no big-endian MIPS kernel any more, it is the big-endian CPU at hand; every byte-order
//! mistake in keys, values, ports, parsers and readers shows there).
//!
//! How such a guest differs from the host-architecture matrix ([`super`]):
//!
//! * The host's root cannot serve as the guest's (its programs are x86-64), so the whole
//!   userland is the initramfs: Debian's busybox-static of that architecture (its .deb
//!   unpacked), and the test binaries, static (musl, or glibc with `+crt-static` on s390x),
//!   built on the host by [`super::cross_tests`].
//! * The kernel is Debian bookworm's of that architecture (`linux-image-<release>-arm64`,
//!   `-armmp`, `-s390x`), from a private apt state with `APT::Architecture` set to it.
//! * The suite is [`ARCH_SUITE`]: crafted frames through BPF_PROG_TEST_RUN (exact counts v4
//!   and v6, the sniff ring, the batch reader), and the lab's smoke suite, in which the agent
//!   of that architecture loads, attaches and counts real traffic exactly and holds 5,000
//!   flows. For the lab the initramfs also holds Debian's iproute2, nftables, ethtool and kmod
//!   of that architecture with their libraries, and the kernel's network modules
//!   ([`super::userland`]); the guest never switches root, so the kernel's module requests
//!   find kmod's `/sbin/modprobe` in it.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::{
    GuestRun, KernelRun, Options, Scratch,
    apt::{self, AptState},
    cache_dir,
    console::Markers,
    cross_tests, initramfs,
    qemu::{self, Accel, Machine},
    suite::{self, Step},
    userland,
};
use crate::{
    cmd::{self, is_root},
    setup::Toolchain,
    test::Tally,
};

/// A foreign architecture the VM harness boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// 64-bit Arm, little-endian: qemu-system-aarch64 `-M virt -cpu max,pauth-impdef=on`,
    /// aarch64 musl build.
    Arm64,
    /// 32-bit Arm (ARMv7, hard float): qemu-system-arm `-M virt`, armv7 musl build (nightly
    /// `-Z build-std`: its std cannot be downloaded).
    Armhf,
    /// IBM Z, 64-bit big-endian: qemu-system-s390x `-M s390-ccw-virtio`, s390x glibc static
    /// build, bpfeb object.
    S390x,
}

/// Every foreign architecture, in the order CI runs them.
pub const ALL: &[Arch] = &[Arch::Arm64, Arch::Armhf, Arch::S390x];

/// The test binaries a foreign guest runs, each whole.
pub const ARCH_SUITE: &[&str] = &["kernel_frames", "router_smoke"];

/// Where the guest finds the agent the lab starts (`EGRESS_MONITOR_BIN`).
const GUEST_AGENT: &str = "/tests/egress-monitor";

/// The Debian suite of the kernels and busybox.
const SUITE: &str = "bookworm";

/// How to build for, fetch and boot one architecture.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    /// Debian's name of the architecture.
    pub deb_arch: &'static str,
    /// The kernel flavour: the package is `linux-image-<version>-<flavour>`.
    pub flavour: &'static str,
    /// The kernel series to take, by preference (s390x has no 6.12 in bookworm).
    pub series: &'static [&'static str],
    /// The Rust target of the test binaries.
    pub target: &'static str,
    /// Whether std must be built from source with nightly (`-Z build-std`).
    pub build_std: bool,
    /// The GNU cross toolchain's prefix (`aarch64-linux-gnu`): `<prefix>-gcc` links,
    /// `<prefix>-strip` drops debug info.
    pub gnu_prefix: &'static str,
    /// Extra rustflags for the target, e.g. `+crt-static` for a glibc target.
    pub rustflags: &'static str,
    /// Whether the target's musl comes from Debian's musl-dev of that architecture, because
    /// the Rust target has no self-contained musl without its downloaded std (armv7).
    pub musl_from_debian: bool,
    pub machine: Machine,
    /// Debian packages this architecture needs on the host (QEMU, the cross gcc).
    pub packages: &'static [&'static str],
}

impl Arch {
    pub fn spec(self) -> &'static Spec {
        match self {
            Arch::Arm64 => &ARM64,
            Arch::Armhf => &ARMHF,
            Arch::S390x => &S390X,
        }
    }
}

static ARM64: Spec = Spec {
    name: "arm64",
    deb_arch: "arm64",
    flavour: "arm64",
    series: &["6.12", "6.1"],
    target: "aarch64-unknown-linux-musl",
    build_std: false,
    gnu_prefix: "aarch64-linux-gnu",
    rustflags: "",
    musl_from_debian: false,
    machine: Machine {
        qemu: "qemu-system-aarch64",
        // pauth-impdef: QEMU's own pointer-authentication hash instead of QARMA5, which
        // costs much under TCG (Debian's arm64 kernel signs its return addresses).
        tcg_args: &["-M", "virt", "-cpu", "max,pauth-impdef=on"],
        console: "ttyAMA0",
        share_root: false,
    },
    // The glibc headers: C in crates (ring's) includes <stdint.h>, which the cross gcc alone
    // would take from the host's /usr/include (x86-64's bits/) and fail.
    packages: &[
        "qemu-system-arm",
        "gcc-aarch64-linux-gnu",
        "libc6-dev-arm64-cross",
    ],
};

static ARMHF: Spec = Spec {
    name: "armhf",
    deb_arch: "armhf",
    flavour: "armmp",
    series: &["6.12", "6.1"],
    target: "armv7-unknown-linux-musleabihf",
    build_std: true,
    gnu_prefix: "arm-linux-gnueabihf",
    rustflags: "",
    musl_from_debian: true,
    machine: Machine {
        qemu: "qemu-system-arm",
        // highmem=off: the armmp kernel has no LPAE, so nothing may live above 4 GiB.
        tcg_args: &["-M", "virt,highmem=off", "-cpu", "cortex-a15"],
        console: "ttyAMA0",
        share_root: false,
    },
    packages: &[
        "qemu-system-arm",
        "gcc-arm-linux-gnueabihf",
        "libc6-dev-armhf-cross",
    ],
};

static S390X: Spec = Spec {
    name: "s390x",
    deb_arch: "s390x",
    flavour: "s390x",
    series: &["6.12", "6.1"],
    target: "s390x-unknown-linux-gnu",
    build_std: false,
    gnu_prefix: "s390x-linux-gnu",
    // The guest has no libc: link glibc statically (libc6-dev-s390x-cross has libc.a).
    rustflags: "-C target-feature=+crt-static",
    musl_from_debian: false,
    machine: Machine {
        qemu: "qemu-system-s390x",
        tcg_args: &["-M", "s390-ccw-virtio", "-cpu", "max"],
        console: "ttysclp0",
        share_root: false,
    },
    packages: &[
        "qemu-system-misc",
        "gcc-s390x-linux-gnu",
        "libc6-dev-s390x-cross",
    ],
};

/// A kernel of a foreign architecture, unpacked in the cache.
#[derive(Debug)]
pub struct ForeignKernel {
    pub release: String,
    pub root: PathBuf,
}

impl ForeignKernel {
    fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }
}

/// Installs the Debian packages the architectures need that are missing (as `cargo xtask
/// setup` does for the host's; root only).
pub fn ensure_packages(arches: &[Arch]) -> Result<()> {
    let mut wanted: Vec<&str> = arches
        .iter()
        .flat_map(|a| a.spec().packages.iter().copied())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package}\t${db:Status-Status}\n"])
        .args(&wanted)
        .output()
        .context("failed to run dpkg-query")?;
    let listed = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = listed
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, status)| status.trim() == "installed")
        .map(|(name, _)| name)
        .collect();
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|p| !installed.contains(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root()? {
        bail!(
            "the foreign-architecture VMs need these Debian packages (installing them needs \
             root): {}",
            missing.join(" ")
        );
    }
    println!("vm: installing {}", missing.join(" "));
    let apt = || {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    cmd::run(apt().args(["update", "-q"]))?;
    cmd::run(
        apt()
            .args(["install", "-q", "-y", "--no-install-recommends"])
            .args(&missing),
    )
    .context("cannot install the packages of the foreign-architecture VMs")
}

/// The version part of a kernel image package of `flavour`, when it is a plain one:
/// `linux-image-6.12.117+deb12-arm64` -> `6.12.117+deb12`; None for meta packages, other
/// flavours (`cloud-arm64`, `armmp-lpae`, `rt-armmp`), `-unsigned` and `-dbg`.
fn image_version<'a>(package: &'a str, flavour: &str) -> Option<&'a str> {
    let version = package
        .strip_prefix("linux-image-")?
        .strip_suffix(flavour)?
        .strip_suffix('-')?;
    let plain = version.replace("+deb", "+");
    (plain.contains(['-', '+'])
        && plain
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+')))
    .then_some(version)
}

/// The numbers of a version, for ordering: `6.12.117+deb12` -> [6, 12, 117, 12].
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

/// The newest plain image package of `flavour` in the first series of `series` that has one.
fn newest_image(packages: &[String], flavour: &str, series: &[&str]) -> Option<String> {
    series.iter().find_map(|name| {
        packages
            .iter()
            .filter(|p| {
                image_version(p, flavour).is_some_and(|v| {
                    v.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('.'))
                })
            })
            .max_by_key(|p| version_key(image_version(p, flavour).unwrap_or_default()))
            .cloned()
    })
}

fn apt_state(spec: &Spec, cache: &Path) -> Result<AptState> {
    AptState::for_arch(
        SUITE,
        spec.deb_arch,
        &cache.join("apt").join(format!("{SUITE}-{}", spec.deb_arch)),
    )
}

/// What a foreign guest is made of, fetched once into the cache.
struct Fetched {
    kernel: ForeignKernel,
    busybox: PathBuf,
    /// The root of the lab's programs and libraries ([`userland::ensure_packages`]).
    userland: PathBuf,
    /// The root of the kernel's network modules ([`userland::ensure_modules`]).
    modules: PathBuf,
}

/// Fetches (once) the kernel, the static busybox and the lab's userland of `spec` into the
/// cache.
fn fetch(spec: &Spec, update: bool) -> Result<Fetched> {
    let cache = cache_dir()?;
    let lock_path = cache.join(".lock");
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let dir = cache.join("arch").join(spec.name);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let kernel = ensure_kernel(spec, &cache, &dir, update)?;
    let busybox = ensure_busybox(spec, &cache, &dir)?;
    let userland = userland::ensure_packages(spec, &apt_state(spec, &cache)?, &dir)?;
    let modules = userland::ensure_modules(&kernel.root, &kernel.release, &dir)?;
    Ok(Fetched {
        kernel,
        busybox,
        userland,
        modules,
    })
}

fn ensure_kernel(spec: &Spec, cache: &Path, dir: &Path, update: bool) -> Result<ForeignKernel> {
    let root = dir.join("kernel");
    let marker = root.join(".release");
    if !update && let Ok(release) = fs::read_to_string(&marker) {
        let kernel = ForeignKernel {
            release: release.trim().to_owned(),
            root,
        };
        println!(
            "vm: {} kernel {} (cached in {})",
            spec.name,
            kernel.release,
            kernel.root.display()
        );
        return Ok(kernel);
    }
    let state = apt_state(spec, cache)?;
    state.update(update)?;
    let names = state.package_names("linux-image-")?;
    let package = newest_image(&names, spec.flavour, spec.series).with_context(|| {
        format!(
            "Debian {SUITE} has no `linux-image-<{}>.*-{}` package for {}",
            spec.series.join("|"),
            spec.flavour,
            spec.deb_arch
        )
    })?;
    let release = package
        .strip_prefix("linux-image-")
        .expect("an image package")
        .to_owned();
    if fs::read_to_string(&marker).is_ok_and(|r| r.trim() == release) {
        return Ok(ForeignKernel { release, root });
    }
    println!(
        "vm: {} kernel: fetching {package} from Debian {SUITE}",
        spec.name
    );
    let download = dir.join(".download");
    let deb = state.download(&format!("{package}:{}", spec.deb_arch), &download)?;
    let partial = dir.join("kernel.partial");
    for path in [&partial, &root] {
        if path.exists() {
            fs::remove_dir_all(path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    apt::extract(&deb, &partial)?;
    let kernel = ForeignKernel {
        release: release.clone(),
        root: partial.clone(),
    };
    if !kernel.vmlinuz().is_file() {
        bail!("{package} has no {}", kernel.vmlinuz().display());
    }
    fs::write(partial.join(".release"), format!("{release}\n"))
        .with_context(|| format!("cannot write the release into {}", partial.display()))?;
    fs::rename(&partial, &root)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), root.display()))?;
    fs::remove_dir_all(&download)
        .with_context(|| format!("cannot remove {}", download.display()))?;
    Ok(ForeignKernel { release, root })
}

/// Debian's musl-dev of `spec`'s architecture, unpacked once into the cache, with a
/// `libunwind.a` that is the cross gcc's `libgcc_eh.a` (std's unwind crate links `-lunwind` on
/// musl); returns the directory of libc.a and the crt objects.
pub fn ensure_musl(spec: &Spec) -> Result<PathBuf> {
    let cache = cache_dir()?;
    let lock_path = cache.join(".lock");
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let dir = cache.join("arch").join(spec.name).join("musl");
    if dir.join("libunwind.a").exists() {
        return Ok(dir);
    }
    println!("vm: {}: fetching musl-dev", spec.name);
    let state = apt_state(spec, &cache)?;
    state.update(false)?;
    let download = cache.join("arch").join(spec.name).join(".download-musl");
    let deb = state.download(&format!("musl-dev:{}", spec.deb_arch), &download)?;
    let unpacked = download.join("root");
    apt::extract(&deb, &unpacked)?;
    let lib = fs::read_dir(unpacked.join("usr/lib"))
        .with_context(|| format!("{} has no usr/lib", deb.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("libc.a").is_file())
        .with_context(|| format!("{} has no usr/lib/*/libc.a", deb.display()))?;
    let gcc = format!("{}-gcc", spec.gnu_prefix);
    let libgcc_eh = cmd::output(Command::new(&gcc).arg("-print-file-name=libgcc_eh.a"))?;
    let libgcc_eh = PathBuf::from(libgcc_eh.trim());
    if !libgcc_eh.is_absolute() {
        bail!("{gcc} has no libgcc_eh.a");
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    fs::rename(&lib, &dir)
        .with_context(|| format!("cannot rename {} to {}", lib.display(), dir.display()))?;
    std::os::unix::fs::symlink(&libgcc_eh, dir.join("libunwind.a"))
        .with_context(|| format!("cannot link libunwind.a in {}", dir.display()))?;
    fs::remove_dir_all(&download)
        .with_context(|| format!("cannot remove {}", download.display()))?;
    Ok(dir)
}

fn ensure_busybox(spec: &Spec, cache: &Path, dir: &Path) -> Result<PathBuf> {
    let path = dir.join("busybox");
    if path.is_file() {
        return Ok(path);
    }
    println!("vm: {}: fetching busybox-static", spec.name);
    let state = apt_state(spec, cache)?;
    state.update(false)?;
    let download = dir.join(".download-busybox");
    let deb = state.download(&format!("busybox-static:{}", spec.deb_arch), &download)?;
    let unpacked = download.join("root");
    apt::extract(&deb, &unpacked)?;
    let elf = fs::read(unpacked.join("bin/busybox"))
        .with_context(|| format!("{} has no bin/busybox", deb.display()))?;
    if elf_interpreter(&elf) != Some(false) {
        bail!(
            "bin/busybox of {} is not a static ELF executable",
            deb.display()
        );
    }
    let partial = dir.join("busybox.partial");
    fs::write(&partial, elf).with_context(|| format!("cannot write {}", partial.display()))?;
    fs::rename(&partial, &path)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))?;
    fs::remove_dir_all(&download)
        .with_context(|| format!("cannot remove {}", download.display()))?;
    Ok(path)
}

/// Whether an ELF executable (either class, either byte order) names a program interpreter,
/// i.e. is dynamically linked; None if it is not ELF.
fn elf_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..4)? != b"\x7fELF" {
        return None;
    }
    let wide = match elf.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let big = match elf.get(5)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let uint = |at: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(at..at + len)?;
        let mut value = 0u64;
        for i in 0..len {
            let byte = if big { bytes[i] } else { bytes[len - 1 - i] };
            value = value << 8 | u64::from(byte);
        }
        Some(value)
    };
    let (phoff, phentsize, phnum) = if wide {
        (uint(0x20, 8)?, uint(0x36, 2)?, uint(0x38, 2)?)
    } else {
        (uint(0x1c, 4)?, uint(0x2a, 2)?, uint(0x2c, 2)?)
    };
    for i in 0..phnum {
        let at = usize::try_from(phoff.checked_add(i.checked_mul(phentsize)?)?).ok()?;
        if uint(at, 4)? == u64::from(PT_INTERP) {
            return Some(true);
        }
    }
    Some(false)
}

/// Where a test binary is in the guest.
fn guest_path(name: &str) -> String {
    format!("/tests/{name}")
}

/// The initramfs's /init of a foreign guest: the API filesystems, busybox's applets, the
/// payload under a time limit, the exit marker, power-off.
fn init_script(markers: &Markers, timeout: Duration) -> String {
    String::from(
        r#"#!/bin/busybox sh
# /init of a foreign-architecture guest (xtask/src/vm/arch.rs).
B=/bin/busybox
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
$B mount -t tmpfs -o mode=1777 tmpfs /tmp
$B mount -t tmpfs -o mode=0755 tmpfs /run
$B mount -t bpf -o mode=0700 bpf /sys/fs/bpf || echo "egress-vm init: no bpffs"
# Busybox's applets only where Debian's programs are not (its ip cannot make veth pairs).
$B --install -s /bin
# ip netns keeps its namespaces in /var/run/netns; on Debian /var/run is /run.
$B mkdir -p /var && $B ln -sfn /run /var/run
$B mkdir -p /run/egress-vm && $B ln -s /bin/busybox /run/egress-vm/busybox
"#,
    ) + &super::initramfs::run_payload(markers, timeout, "$B sh /payload")
}

/// Writes the initramfs of a foreign guest: the lab's userland and modules, busybox, the test
/// binaries and the agent (debug info stripped: the guest unpacks every byte under TCG),
/// `init` ([`init_script`]) and the payload.
fn write_initramfs(
    spec: &Spec,
    fetched: &Fetched,
    binaries: &[(String, PathBuf)],
    init: &str,
    payload: &str,
    scratch: &Path,
    out: &Path,
) -> Result<()> {
    let mut cpio = initramfs::Cpio::default();
    cpio.tree(&fetched.userland, "")?;
    cpio.tree(&fetched.modules, "")?;
    for dir in ["bin", "dev", "proc", "sys", "tmp", "run", "root", "tests"] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 0o600, 5, 1);
    let data = fs::read(&fetched.busybox)
        .with_context(|| format!("cannot read {}", fetched.busybox.display()))?;
    cpio.file("bin/busybox", 0o755, &data);
    for (name, executable) in binaries {
        let stripped = scratch.join(name);
        let strip = format!("{}-strip", spec.gnu_prefix);
        cmd::run(
            Command::new(&strip)
                .arg("--strip-debug")
                .arg("-o")
                .arg(&stripped)
                .arg(executable),
        )
        .with_context(|| format!("cannot strip {}", executable.display()))?;
        let data =
            fs::read(&stripped).with_context(|| format!("cannot read {}", stripped.display()))?;
        if elf_interpreter(&data) != Some(false) {
            bail!(
                "{} is not a static executable: the test binaries and the agent run as they \
                 are in the {} guest, without its libraries",
                executable.display(),
                spec.name
            );
        }
        cpio.file(&guest_path(name)[1..], 0o755, &data);
    }
    cpio.file("init", 0o755, init.as_bytes());
    cpio.file("payload", 0o644, payload.as_bytes());
    fs::write(out, cpio.finish()).with_context(|| format!("cannot write {}", out.display()))
}

/// Builds, fetches and boots each architecture of `options` in turn, adding the guests' test
/// counts to `tally`; fails, after every architecture ran, if any did not pass.
pub fn run_arches(toolchain: &Toolchain, options: &Options, tally: &mut Tally) -> Result<()> {
    ensure_packages(&options.arches)?;
    for spec in options.arches.iter().map(|a| a.spec()) {
        apt::ensure_program(spec.machine.qemu, spec.packages[0])?;
    }
    for name in &options.only {
        if !ARCH_SUITE.contains(&name.as_str()) {
            bail!(
                "--test {name}: the foreign-architecture guests run only {}",
                ARCH_SUITE.join(", ")
            );
        }
    }
    let names: Vec<&str> = if options.only.is_empty() {
        ARCH_SUITE.to_vec()
    } else {
        options.only.iter().map(String::as_str).collect()
    };
    let mut runs = Vec::new();
    for arch in &options.arches {
        let spec = arch.spec();
        eprintln!("\n==> vm {}: {}", spec.name, names.join(", "));
        let (release, outcome) = match run_one(toolchain, spec, &names, options) {
            Ok((release, guest)) => (release, Ok(guest)),
            Err(err) => (String::from("?"), Err(err)),
        };
        let run = KernelRun {
            name: spec.name,
            release,
            outcome,
        };
        super::print_details(&run);
        if let Ok(guest) = &run.outcome {
            tally.add(&guest.tally());
        }
        let stop = run.outcome.is_err() && !options.keep_going;
        runs.push(run);
        if stop {
            break;
        }
    }
    let failed = super::report(&runs);
    if !failed.is_empty() {
        bail!("the foreign-architecture VMs failed: {}", failed.join("; "));
    }
    Ok(())
}

fn run_one(
    toolchain: &Toolchain,
    spec: &Spec,
    names: &[&str],
    options: &Options,
) -> Result<(String, GuestRun)> {
    let built = cross_tests::build(toolchain, spec, names)?;
    let fetched = fetch(spec, options.update_kernels)?;
    let kernel = &fetched.kernel;
    let mut binaries = vec![(
        GUEST_AGENT.trim_start_matches("/tests/").to_owned(),
        built.agent.clone(),
    )];
    let mut steps = Vec::new();
    for name in names {
        let binary = built
            .tests
            .iter()
            .find(|b| b.name == *name)
            .with_context(|| format!("the cross build made no test binary `{name}`"))?;
        binaries.push((binary.name.clone(), binary.executable.clone()));
        let mut args = vec!["--test-threads=1".to_owned()];
        args.extend(options.extra.iter().cloned());
        steps.push(Step {
            name: binary.name.clone(),
            executable: guest_path(name).into(),
            dir: "/".into(),
            args,
            hide_btf: false,
        });
    }
    let markers = Markers::new();
    let exports = initramfs::sh_line(
        "export",
        [
            "RUST_BACKTRACE=1",
            &format!("EGRESS_VM_KERNEL={}", kernel.release),
            &format!("EGRESS_VM_ARCH={}", spec.name),
            &format!("EGRESS_MONITOR_BIN={GUEST_AGENT}"),
        ],
    );
    let payload = suite::payload(&steps, &exports, &markers);
    let scratch = Scratch::new(&markers)?;
    let initrd = scratch.0.join("initrd.cpio");
    write_initramfs(
        spec,
        &fetched,
        &binaries,
        &init_script(&markers, options.payload_timeout()),
        &payload,
        &scratch.0,
        &initrd,
    )?;
    let console = qemu::run(&qemu::Boot {
        machine: &spec.machine,
        vmlinuz: &kernel.vmlinuz(),
        initrd: &initrd,
        accel: Accel::Tcg,
        timeout: options.timeout,
        markers: &markers,
        prefix: format!("[{}] ", spec.name),
    })
    .with_context(|| format!("{} kernel {}", spec.name, kernel.release))?;
    let lines: Vec<&str> = console.lines.iter().map(|(_, l)| l.as_str()).collect();
    let ready = console.ready_at.with_context(|| {
        format!(
            "{} kernel {}: the guest never came up; the console's last lines:\n{}",
            spec.name,
            kernel.release,
            console.tail(40)
        )
    })?;
    let (exit_at, _) = console
        .exit
        .expect("qemu::run fails without an exit marker");
    Ok((
        kernel.release.clone(),
        GuestRun {
            boot: ready,
            tests: exit_at.saturating_sub(ready),
            steps: suite::results(&lines, &steps, &markers),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_plain_image_of_the_first_series_that_has_one() {
        let names: Vec<String> = [
            "linux-image-6.1.0-57-arm64",
            "linux-image-6.12.117+deb12-arm64",
            "linux-image-6.12.99+deb12-arm64",
            "linux-image-6.12.117+deb12-cloud-arm64",
            "linux-image-6.12.117+deb12-arm64-16k",
            "linux-image-6.12.117+deb12-arm64-unsigned",
            "linux-image-6.12-arm64",
            "linux-image-6.12.117+deb12-armmp-lpae",
            "linux-image-6.12.117+deb12-rt-armmp",
            "linux-image-6.12.111+deb12-armmp",
            "linux-image-6.1.0-50-s390x",
            "linux-image-6.1.0-9-s390x",
        ]
        .map(String::from)
        .into();
        let series = &["6.12", "6.1"];
        assert_eq!(
            newest_image(&names, "arm64", series).as_deref(),
            Some("linux-image-6.12.117+deb12-arm64")
        );
        assert_eq!(
            newest_image(&names, "armmp", series).as_deref(),
            Some("linux-image-6.12.111+deb12-armmp")
        );
        assert_eq!(
            newest_image(&names, "s390x", series).as_deref(),
            Some("linux-image-6.1.0-50-s390x")
        );
        assert_eq!(newest_image(&names, "amd64", series), None);
    }

    #[test]
    fn reads_the_interpreter_of_either_elf_class_and_byte_order() {
        // A 32-bit big-endian header with one PT_INTERP program header right after it.
        let mut elf = vec![0u8; 0x34 + 0x20];
        elf[..6].copy_from_slice(b"\x7fELF\x01\x02");
        elf[0x1c..0x20].copy_from_slice(&0x34u32.to_be_bytes());
        elf[0x2a..0x2c].copy_from_slice(&0x20u16.to_be_bytes());
        elf[0x2c..0x2e].copy_from_slice(&1u16.to_be_bytes());
        elf[0x34..0x38].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(elf_interpreter(&elf), Some(true));
        elf[0x34..0x38].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(elf_interpreter(&elf), Some(false));
        assert_eq!(elf_interpreter(b"#!/bin/sh\n"), None);
        let host = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(elf_interpreter(&host).is_some());
    }

    #[test]
    fn every_arch_has_its_console_and_no_host_root() {
        for arch in ALL {
            let spec = arch.spec();
            assert!(!spec.machine.share_root, "{}", spec.name);
            assert!(spec.packages.iter().any(|p| p.starts_with("qemu-system-")));
        }
        assert_eq!(Arch::S390x.spec().machine.console, "ttysclp0");
        let init = init_script(&Markers::with_nonce("feedf00d"), Duration::from_secs(540));
        assert!(init.contains("$B timeout -s KILL 540 $B sh /payload"));
        assert!(init.contains("echo \"EGRESS-VM-EXIT feedf00d $st\""));
    }
}
