//! `cargo xtask setup`: makes this machine ready to build and test egress-monitor.
//!
//! A new machine has only rustup (stable and nightly), cargo and gcc; everything else the
//! build and the tests need is brought in here, so that the README's commands are all a user
//! (or CI) runs. Every step checks before it acts, so a second run takes well under a second
//! and the other subcommands can run setup every time.

use std::{
    env,
    ffi::OsString,
    fs::{self, File},
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    cmd::{self, cargo, is_root, on_path, output},
    cross::{CrossTarget, Linker, Std},
};

/// bpf-linker 0.13 is the newest that builds with rustc 1.95 and speaks LLVM 22.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages whose tools the integration tests call: ip, nft, ethtool, tcpdump, dnsmasq
/// (DHCP and DNS in the lab), prometheus (promtool, and the server that evaluates the alert
/// rules in the lab) and prometheus-alertmanager, bpftool, busybox (udhcpc), iperf3, conntrack
/// and openssl (TLS servers and clients in the lab, whose ClientHellos name destinations).
///
/// For `cargo xtask vm`: qemu-system-x86 boots the matrix's Debian kernels, and kmod gives
/// `depmod` (modules.dep of each extracted kernel) and the `/sbin/modprobe` that those kernels
/// call, through the host's root shared into the guest, to autoload veth, bridge, nf_tables...
/// (busybox-static is not installed: it conflicts with busybox; `vm` unpacks its .deb instead.)
pub const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "nftables",
    "ethtool",
    "tcpdump",
    "dnsmasq-base",
    "prometheus",
    "prometheus-alertmanager",
    "bpftool",
    "busybox",
    "iperf3",
    "conntrack",
    "openssl",
    "qemu-system-x86",
    "kmod",
];

/// Where the agent pins its maps and links; tests and bpftool expect bpffs here.
const BPFFS: &str = "/sys/fs/bpf";

/// The bpf-linker built for the installed nightly, ready to put on `PATH`.
///
/// aya-build runs `bpf-linker` when the agent's build.rs builds the eBPF crate, so every cargo
/// command that builds the agent needs [`Toolchain::env`].
#[derive(Debug)]
pub struct Toolchain {
    /// The install root: `bin/bpf-linker` and `llvm/lib/` (symlinks to the nightly's libLLVM).
    root: PathBuf,
}

impl Toolchain {
    /// The cache directory for this nightly: named after the bpf-linker version, the LLVM major
    /// version and the nightly's commit, because the binary links against that exact libLLVM.
    fn for_nightly(nightly: &Nightly) -> Result<Self> {
        let name = format!(
            "bpf-linker-{BPF_LINKER_VERSION}-llvm{}-{}",
            nightly.llvm_major, nightly.commit
        );
        Ok(Self {
            root: cache_home()?.join("egress-monitor").join(name),
        })
    }

    fn bin_dir(&self) -> PathBuf {
        self.root.join("bin")
    }

    fn bpf_linker(&self) -> PathBuf {
        self.bin_dir().join("bpf-linker")
    }

    /// `LLVM_PREFIX` for bpf-linker's build; its `lib/` holds the libLLVM symlinks, and the
    /// binary keeps it as its runpath.
    fn llvm_prefix(&self) -> PathBuf {
        self.root.join("llvm")
    }

    /// The environment to run cargo with: `PATH` with the bpf-linker directory first.
    pub fn env(&self) -> Result<Vec<(String, OsString)>> {
        let old = env::var_os("PATH").unwrap_or_default();
        let path = env::join_paths(std::iter::once(self.bin_dir()).chain(env::split_paths(&old)))
            .context("cannot put the bpf-linker directory on PATH")?;
        Ok(vec![("PATH".to_owned(), path)])
    }

    /// `bpf-linker --version`, checked to be the version we build: a binary that does not run
    /// (say its libLLVM went away) or is another version counts as missing.
    fn check(&self) -> Result<String> {
        let linker = self.bpf_linker();
        let version = output(Command::new(&linker).arg("--version"))?;
        let version = version.trim().to_owned();
        ensure!(
            version == format!("bpf-linker {BPF_LINKER_VERSION}"),
            "{} is `{version}`, expected {BPF_LINKER_VERSION}",
            linker.display()
        );
        Ok(version)
    }
}

/// Runs every setup step and returns the toolchain for the other subcommands.
///
/// Steps that need root (apt, mounting bpffs) only warn when run as another user, so that
/// `cargo xtask build` works unprivileged.
pub fn run() -> Result<Toolchain> {
    let nightly = Nightly::detect()?;
    ensure_rust_src(&nightly)?;
    let toolchain = ensure_bpf_linker(&nightly)?;
    ensure_apt_packages()?;
    ensure_bpffs()?;
    Ok(toolchain)
}

/// zig (its PyPI package) and cargo-zigbuild (also on PyPI, as a prebuilt binary): they link the
/// musl targets whose C library neither rustup nor Debian provides (armv7, mips, mipsel).
pub const ZIGLANG_VERSION: &str = "0.17.0";
pub const CARGO_ZIGBUILD_VERSION: &str = "0.24.0";

/// Makes this machine ready to cross-build for `target` (only run for `build --target`):
/// rustup's std for the target where rustup has one (nightly's rust-src is there otherwise,
/// from [`run`]), and the linker: a Debian cross gcc, or zig with cargo-zigbuild in a virtual
/// environment of our cache. Returns the environment for the build: [`Toolchain::env`]'s
/// `PATH`, with zig's directory in front when it is used.
pub fn cross(toolchain: &Toolchain, target: &CrossTarget) -> Result<Vec<(String, OsString)>> {
    match target.std {
        Std::Rustup => ensure_rustup_target(target.triple)?,
        Std::BuildStd => println!(
            "setup: std for {}: built by nightly from rust-src (-Z build-std)",
            target.triple
        ),
    }
    let mut front = Vec::new();
    match target.linker {
        Linker::Gcc {
            command,
            package,
            headers,
        } => ensure_cross_gcc(command, &[package, headers])?,
        Linker::Zig => front.push(ensure_zig()?),
    }
    let mut env = toolchain.env()?;
    for (key, value) in &mut env {
        if key == "PATH" {
            let old: Vec<PathBuf> = env::split_paths(value).collect();
            *value = env::join_paths(front.iter().cloned().chain(old))
                .context("cannot put zig's directory on PATH")?;
        }
    }
    Ok(env)
}

/// `rustup target add` for the toolchain that runs us, unless the target is there.
fn ensure_rustup_target(triple: &str) -> Result<()> {
    let installed = output(
        Command::new("rustup")
            .current_dir(cmd::workspace_root())
            .args(["target", "list", "--installed"]),
    )?;
    if installed.lines().any(|line| line.trim() == triple) {
        println!("setup: std for {triple}: installed");
        return Ok(());
    }
    cmd::run(
        Command::new("rustup")
            .current_dir(cmd::workspace_root())
            .args(["target", "add", triple]),
    )
    .with_context(|| format!("cannot add the standard library for {triple}"))
}

/// A Debian cross gcc as the linker driver: installed with apt when missing (root only).
fn ensure_cross_gcc(command: &str, packages: &[&str]) -> Result<()> {
    // The gcc's own sysroot has the headers once its libc6-dev-*-cross is there.
    let headers = std::path::Path::new("/usr")
        .join(command.trim_end_matches("-gcc"))
        .join("include/stdint.h");
    if on_path(command) && headers.is_file() {
        println!("setup: linker {command}: present");
        return Ok(());
    }
    let package = packages.join(" ");
    if !on_path("apt-get") || !is_root()? {
        bail!(
            "{command} or its C headers are missing: install Debian's {package} (as root: \
             apt-get install {package})"
        );
    }
    println!("setup: installing {package} (the linker and its headers)");
    apt_install(packages)?;
    ensure!(
        on_path(command),
        "{package} was installed but {command} is not on PATH"
    );
    Ok(())
}

/// zig and cargo-zigbuild from PyPI in a virtual environment under the cache (no system
/// Python package is touched); returns its `bin` directory, which holds `cargo-zigbuild` and
/// the `python3` that `python3 -m ziglang` (how cargo-zigbuild finds zig) needs.
fn ensure_zig() -> Result<PathBuf> {
    let root = cache_home()?.join("egress-monitor").join(format!(
        "zig-{ZIGLANG_VERSION}-zigbuild-{CARGO_ZIGBUILD_VERSION}"
    ));
    let bin = root.join("bin");
    let check = || -> Result<()> {
        let zigbuild = output(Command::new(bin.join("cargo-zigbuild")).arg("--version"))?;
        ensure!(
            zigbuild.trim() == format!("cargo-zigbuild {CARGO_ZIGBUILD_VERSION}"),
            "cargo-zigbuild is `{}`",
            zigbuild.trim()
        );
        let zig = output(Command::new(bin.join("python3")).args(["-m", "ziglang", "version"]))?;
        ensure!(zig.trim() == ZIGLANG_VERSION, "zig is `{}`", zig.trim());
        Ok(())
    };
    if check().is_ok() {
        println!(
            "setup: zig {ZIGLANG_VERSION}, cargo-zigbuild {CARGO_ZIGBUILD_VERSION}: {}",
            bin.display()
        );
        return Ok(bin);
    }
    let parent = root.parent().expect("the cache root has a parent");
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let lock_path = parent.join(format!(
        "{}.lock",
        root.file_name().unwrap_or_default().display()
    ));
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    if check().is_ok() {
        return Ok(bin);
    }
    println!(
        "setup: installing zig {ZIGLANG_VERSION} and cargo-zigbuild {CARGO_ZIGBUILD_VERSION} from PyPI into {}",
        root.display()
    );
    cmd::run(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&root),
    )
    .context(
        "cannot create a Python virtual environment for zig (Debian: apt-get install python3-venv)",
    )?;
    cmd::run(
        Command::new(bin.join("python3"))
            .args(["-m", "pip", "install", "--quiet"])
            .arg(format!("ziglang=={ZIGLANG_VERSION}"))
            .arg(format!("cargo-zigbuild=={CARGO_ZIGBUILD_VERSION}")),
    )
    .context("cannot install zig and cargo-zigbuild from PyPI")?;
    check().context("zig and cargo-zigbuild were installed but do not run")?;
    Ok(bin)
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}`; a relative XDG_CACHE_HOME is ignored, as the XDG spec
/// says.
pub(crate) fn cache_home() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("XDG_CACHE_HOME").map(PathBuf::from)
        && dir.is_absolute()
    {
        return Ok(dir);
    }
    let home = env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache"))
}

/// What setup needs to know about the nightly toolchain, which builds the eBPF crate.
#[derive(Debug)]
struct Nightly {
    sysroot: PathBuf,
    /// "22" from "LLVM version: 22.1.4": bpf-linker must use the same LLVM major version.
    llvm_major: String,
    /// The first 12 characters of the commit hash, enough to tell nightlies apart.
    commit: String,
}

impl Nightly {
    fn detect() -> Result<Self> {
        let nightly = || {
            let mut cmd = Command::new("rustc");
            cmd.arg("+nightly");
            cmd
        };
        let context = "the nightly toolchain builds the eBPF crate: is it installed \
                       (`rustup toolchain list`)?";
        let verbose = output(nightly().arg("-vV")).context(context)?;
        let (llvm_major, commit) = parse_version_verbose(&verbose)?;
        let sysroot = output(nightly().args(["--print", "sysroot"])).context(context)?;
        Ok(Self {
            sysroot: PathBuf::from(sysroot.trim()),
            llvm_major,
            commit,
        })
    }
}

/// Reads the LLVM major version and the short commit hash from `rustc -vV`.
fn parse_version_verbose(text: &str) -> Result<(String, String)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .with_context(|| format!("no `{name}` in `rustc +nightly -vV`:\n{text}"))
    };
    let llvm = field("LLVM version")?;
    let major = llvm.split('.').next().unwrap_or_default();
    ensure!(
        !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()),
        "cannot read the LLVM major version from `{llvm}`"
    );
    let commit = field("commit-hash")?;
    ensure!(
        commit.len() >= 12 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "the nightly's commit hash `{commit}` is not a git hash; bpf-linker's cache is keyed by it"
    );
    Ok((major.to_owned(), commit[..12].to_owned()))
}

/// `-Z build-std=core` compiles `core` for the BPF target from the nightly's `rust-src`.
fn ensure_rust_src(nightly: &Nightly) -> Result<()> {
    if nightly.sysroot.join("lib/rustlib/src").is_dir() {
        println!("setup: rust-src for nightly: present");
        return Ok(());
    }
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
    .context("cannot add rust-src to the nightly toolchain (needed for -Z build-std=core)")
}

/// Finds bpf-linker in the cache, or builds it against the nightly's own libLLVM (Debian 12
/// has no LLVM 22; every Rust toolchain ships one that exports the C API, BPF target included).
fn ensure_bpf_linker(nightly: &Nightly) -> Result<Toolchain> {
    let toolchain = Toolchain::for_nightly(nightly)?;
    let report = |version: &str| {
        println!(
            "setup: {version} (LLVM {}): {}",
            nightly.llvm_major,
            toolchain.bpf_linker().display()
        );
    };
    if let Ok(version) = toolchain.check() {
        report(&version);
        return Ok(toolchain);
    }

    // Two setups at once (say `cargo xtask build` in two terminals) must not both build into
    // the same root; the second waits and then finds the first one's result.
    let parent = toolchain
        .root
        .parent()
        .expect("the cache root has a parent");
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let lock_path = parent.join(format!(
        "{}.lock",
        toolchain.root.file_name().unwrap_or_default().display()
    ));
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;

    // The binary may be intact with only its libLLVM links gone (a moved RUSTUP_HOME):
    // relinking is enough then.
    link_libllvm(nightly, &toolchain.llvm_prefix().join("lib"))?;
    if let Ok(version) = toolchain.check() {
        report(&version);
        return Ok(toolchain);
    }

    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {} \
         (about a minute, once per nightly)",
        nightly.llvm_major
    );
    let mut install = cargo();
    install
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{}", nightly.llvm_major))
        // Replaces a broken earlier install in the same root instead of refusing.
        .arg("--force")
        .arg("--root")
        .arg(&toolchain.root)
        .env("LLVM_PREFIX", toolchain.llvm_prefix());
    cmd::run(&mut install).with_context(|| {
        format!(
            "cannot build bpf-linker {BPF_LINKER_VERSION} for LLVM {} (bpf-linker supports 21 to 23)",
            nightly.llvm_major
        )
    })?;
    let version = toolchain
        .check()
        .context("bpf-linker was built but does not run")?;
    report(&version);
    Ok(toolchain)
}

/// Links the nightly's `libLLVM.so.<version>` into `lib_dir` under its soname (what the binary
/// asks for at run time) and as `libLLVM.so` (what `-lLLVM` looks for at build time).
fn link_libllvm(nightly: &Nightly, lib_dir: &Path) -> Result<()> {
    let sysroot_lib = nightly.sysroot.join("lib");
    let libs: Vec<PathBuf> = fs::read_dir(&sysroot_lib)
        .with_context(|| format!("cannot list {}", sysroot_lib.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("libLLVM.so."))
        })
        .collect();
    let libllvm = match libs.as_slice() {
        [one] => one,
        [] => bail!(
            "no libLLVM.so.* in {}: bpf-linker is built against the nightly's own LLVM",
            sysroot_lib.display()
        ),
        many => bail!(
            "several libLLVM.so.* in {}: {many:?}",
            sysroot_lib.display()
        ),
    };
    fs::create_dir_all(lib_dir).with_context(|| format!("cannot create {}", lib_dir.display()))?;
    let soname = libllvm.file_name().expect("a listed file has a name");
    for link in [lib_dir.join(soname), lib_dir.join("libLLVM.so")] {
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).with_context(|| format!("cannot replace {}", link.display()))?;
        }
        symlink(libllvm, &link).with_context(|| format!("cannot create {}", link.display()))?;
    }
    Ok(())
}

/// Installs the missing [`APT_PACKAGES`] (root only: others get a warning and the list).
fn ensure_apt_packages() -> Result<()> {
    if !on_path("dpkg-query") {
        eprintln!(
            "setup: warning: not a Debian system; the tests need the tools of these Debian \
             packages: {}",
            APT_PACKAGES.join(" ")
        );
        return Ok(());
    }
    let missing = missing_packages(APT_PACKAGES)?;
    if missing.is_empty() {
        println!("setup: test packages: all {} installed", APT_PACKAGES.len());
        return Ok(());
    }
    if !is_root()? {
        eprintln!(
            "setup: warning: the integration tests need these packages, and installing them \
             needs root: {}",
            missing.join(" ")
        );
        return Ok(());
    }
    println!("setup: installing {}", missing.join(" "));
    apt_install(&missing)?;
    let still = missing_packages(&missing)?;
    ensure!(
        still.is_empty(),
        "apt-get install succeeded but these are still not installed: {}",
        still.join(" ")
    );
    Ok(())
}

/// The packages of `wanted` that dpkg does not list as installed.
fn missing_packages<'a>(wanted: &[&'a str]) -> Result<Vec<&'a str>> {
    // dpkg-query exits 1 when a package is unknown to it, which just means "missing": read
    // stdout whatever the status.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package}\t${db:Status-Status}\n"])
        .args(wanted)
        .output()
        .context("failed to run dpkg-query")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let installed = installed_packages(&stdout);
    Ok(wanted
        .iter()
        .copied()
        .filter(|name| !installed.contains(name))
        .collect())
}

/// Names whose status is "installed" in `dpkg-query -W -f '${Package}\t${db:Status-Status}\n'`
/// output (removed packages whose config files remain show up as "config-files").
fn installed_packages(dpkg_query: &str) -> Vec<&str> {
    dpkg_query
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, status)| status.trim() == "installed")
        .map(|(name, _)| name)
        .collect()
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let apt = || {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    let before = prometheus_pids();
    let result = {
        let _no_services = NoServiceStarts::install()?;
        cmd::run(apt().args(["update", "-q"])).and_then(|()| {
            cmd::run(
                apt()
                    .args(["install", "-q", "-y", "--no-install-recommends"])
                    .args(packages),
            )
        })
    };
    // Stopped even when the install failed half-way, after the package's postinst ran.
    stop_new_prometheus(&before)?;
    result.context("cannot install the packages the tests need")
}

/// Keeps apt from starting the services of the packages it installs (both prometheus packages
/// ship one): a `policy-rc.d` that denies every start, for the duration of the install.
///
/// There is no systemd here, so `invoke-rc.d` would run the SysV init script. An existing
/// policy-rc.d (Docker images ship one) is left alone.
struct NoServiceStarts {
    written: Option<PathBuf>,
}

impl NoServiceStarts {
    const PATH: &str = "/usr/sbin/policy-rc.d";

    fn install() -> Result<Self> {
        let path = Path::new(Self::PATH);
        if path.exists() {
            return Ok(Self { written: None });
        }
        fs::write(
            path,
            "#!/bin/sh\n# Written by `cargo xtask setup` while apt-get runs: start no service.\nexit 101\n",
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", path.display()))?;
        Ok(Self {
            written: Some(path.to_owned()),
        })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(path) = &self.written
            && let Err(err) = fs::remove_file(path)
        {
            eprintln!("setup: warning: cannot remove {}: {err}", path.display());
        }
    }
}

/// Names (`/proc/<pid>/comm`, at most 15 bytes) of the servers the prometheus packages ship.
const PROMETHEUS_SERVERS: &[&str] = &["prometheus", "prometheus-aler"];

/// Pids of Prometheus and Alertmanager servers (what `pgrep -x prometheus` lists, and the same
/// for `prometheus-alertmanager`), read from /proc so that it works without procps.
fn prometheus_pids() -> Vec<u32> {
    let Ok(proc) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| PROMETHEUS_SERVERS.contains(&comm.trim()))
        })
        .collect()
}

/// Stops any Prometheus or Alertmanager server that the install started despite
/// [`NoServiceStarts`]: the tests start their own, and a stray one would hold port 9090, or 9093
/// and Alertmanager's cluster port 9094 on every address.
fn stop_new_prometheus(before: &[u32]) -> Result<()> {
    let started: Vec<u32> = prometheus_pids()
        .into_iter()
        .filter(|pid| !before.contains(pid))
        .collect();
    if started.is_empty() {
        return Ok(());
    }
    eprintln!("setup: stopping the prometheus servers that apt started: pids {started:?}");
    for &pid in &started {
        let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
        // SAFETY: kill(2) only sends a signal; it touches no memory of ours. A process that
        // exited meanwhile makes it fail with ESRCH, which is fine.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !prometheus_pids().iter().any(|pid| started.contains(pid)) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("prometheus servers (pids {started:?}) started by apt-get did not stop on SIGTERM")
}

/// Mounts bpffs at /sys/fs/bpf if it is not there (root only).
fn ensure_bpffs() -> Result<()> {
    let mounts =
        fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    if is_bpffs_mounted(&mounts) {
        println!("setup: bpffs: mounted at {BPFFS}");
        return Ok(());
    }
    if !is_root()? {
        eprintln!("setup: warning: no bpffs at {BPFFS}, and mounting it needs root");
        return Ok(());
    }
    cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
        .with_context(|| format!("cannot mount bpffs at {BPFFS}"))
}

/// Whether `/proc/self/mounts` has a bpf filesystem at [`BPFFS`].
fn is_bpffs_mounted(mounts: &str) -> bool {
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(BPFFS) && fields.next() == Some("bpf")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llvm_major_and_short_commit_from_rustc_vv() {
        let text = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\n\
                    commit-hash: e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a\n\
                    commit-date: 2026-05-19\nhost: x86_64-unknown-linux-gnu\n\
                    release: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        let (major, commit) = parse_version_verbose(text).unwrap();
        assert_eq!(major, "22");
        assert_eq!(commit, "e50aa6fba4e6");
    }

    #[test]
    fn rejects_rustc_vv_without_a_usable_commit_or_llvm() {
        let unknown = "commit-hash: unknown\nLLVM version: 22.1.4\n";
        assert!(parse_version_verbose(unknown).is_err());
        let no_llvm = "commit-hash: e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a\n";
        assert!(parse_version_verbose(no_llvm).is_err());
    }

    #[test]
    fn cache_dir_name_has_version_llvm_major_and_commit() {
        let nightly = Nightly {
            sysroot: PathBuf::new(),
            llvm_major: "22".into(),
            commit: "e50aa6fba4e6".into(),
        };
        let toolchain = Toolchain::for_nightly(&nightly).unwrap();
        assert!(
            toolchain
                .root
                .ends_with("egress-monitor/bpf-linker-0.13.0-llvm22-e50aa6fba4e6")
        );
        assert!(toolchain.bpf_linker().ends_with("bin/bpf-linker"));
    }

    #[test]
    fn only_installed_packages_count() {
        let out = "iproute2\tinstalled\nprometheus\tconfig-files\nbusybox\tinstalled\n";
        assert_eq!(installed_packages(out), ["iproute2", "busybox"]);
    }

    #[test]
    fn finds_bpffs_only_at_sys_fs_bpf() {
        let mounts = "proc /proc proc rw 0 0\nbpf /sys/fs/bpf bpf rw,relatime 0 0\n";
        assert!(is_bpffs_mounted(mounts));
        assert!(!is_bpffs_mounted("bpf /mnt/bpf bpf rw 0 0\n"));
        assert!(!is_bpffs_mounted("tmpfs /sys/fs/bpf tmpfs rw 0 0\n"));
    }
}
