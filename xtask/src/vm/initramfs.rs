//! The guest's initramfs: a static busybox, the few modules needed to mount the root, and two
//! scripts. Written per run (a few MB, milliseconds), as a cpio "newc" archive made here in
//! Rust, so that no cpio tool is needed.
//!
//! `/init` (PID 1 in the initramfs) loads the modules, mounts the host's root over 9p
//! read-only with a tmpfs overlay on top at `/newroot`, bind-mounts this kernel's extracted
//! `lib/modules/<release>` over the overlay's, mounts the API filesystems inside, and then
//! `switch_root`s into it. `switch_root` rather than a `chroot` child: PID 1 shares its
//! fs_struct with the kernel's threads, so only when PID 1 itself changes root do the kernel's
//! module requests (`/sbin/modprobe`, the host's kmod) resolve in the new root; from a child's
//! chroot, autoloading veth, bridge or nf_tables would look for modprobe in the initramfs.
//!
//! `stage2` (PID 1 in the new root) brings up `lo`, runs the payload under a time limit,
//! prints the exit marker and powers off.

use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::{console::Markers, kernels::Extracted};
use crate::cmd::{display, output};

/// The 9p mount tag of the host's root (QEMU's `mount_tag`).
pub const ROOT_TAG: &str = "hostroot";

/// Where the overlay (the guest's future root) is mounted in the initramfs.
const NEWROOT: &str = "/newroot";

/// Where the guest keeps its busybox, stage2 and payload: on the new root's /run tmpfs.
const GUEST_DIR: &str = "/run/egress-vm";

/// What the guest runs and with which kernel.
pub struct Guest<'a> {
    pub kernel: &'a Extracted,
    /// The static busybox binary (from Debian's busybox-static .deb).
    pub busybox: &'a Path,
    pub markers: &'a Markers,
    /// The guest kills the payload after this long (before the host kills QEMU), so that
    /// the exit marker still comes out.
    pub payload_timeout: Duration,
    /// A script for the host's `/bin/sh`, run in the new root with `/` as its working
    /// directory. Not busybox's sh: that one runs its own applets (its `ip`, which cannot
    /// make veth pairs) before the host's programs on PATH.
    pub payload: String,
    /// Host directories the guest must see as they are (the workspace, the target directory),
    /// also where the guest mounts a fresh tmpfs: a checkout under /tmp is bind-mounted back.
    pub host_dirs: Vec<PathBuf>,
}

/// The guest's fresh tmpfs mounts, which hide what the host has at those paths.
const GUEST_TMPFS: [&str; 3] = ["/tmp", "/run", "/dev/shm"];

/// Those of `dirs` that a guest tmpfs would hide, without ones inside another listed.
fn hidden_by_guest_tmpfs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut hidden: Vec<PathBuf> = dirs
        .iter()
        .filter(|d| {
            GUEST_TMPFS
                .iter()
                .any(|t| d.starts_with(t) && d.as_path() != Path::new(t))
        })
        .cloned()
        .collect();
    hidden.sort();
    hidden.dedup();
    let all = hidden.clone();
    hidden.retain(|d| !all.iter().any(|other| other != d && d.starts_with(other)));
    hidden
}

/// Writes the initramfs for `guest` to `path`.
pub fn write(guest: &Guest, path: &Path) -> Result<()> {
    let mut cpio = Cpio::default();
    for dir in [
        "bin", "dev", "proc", "sys", "modules", "lower", "rw", "newroot",
    ] {
        cpio.dir(dir);
    }
    // The kernel opens /dev/console for PID 1's stdio before /init could mount devtmpfs.
    cpio.char_device("dev/console", 0o600, 5, 1);
    let busybox = fs::read(guest.busybox)
        .with_context(|| format!("cannot read {}", guest.busybox.display()))?;
    cpio.file("bin/busybox", 0o755, &busybox);

    let mut names = Vec::new();
    for module in guest.kernel.boot_modules()? {
        let (name, data) = read_module(&module)?;
        cpio.file(&format!("modules/{name}"), 0o644, &data);
        names.push(name);
    }
    let init = init_script(
        &names,
        &guest.kernel.modules_dir(),
        &guest.kernel.release,
        guest.markers,
        &guest.host_dirs,
    );
    cpio.file("init", 0o755, init.as_bytes());
    cpio.file(
        "stage2",
        0o755,
        stage2_script(guest.markers, guest.payload_timeout).as_bytes(),
    );
    cpio.file("payload", 0o644, guest.payload.as_bytes());
    let bytes = cpio.finish();
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// A module's file name in the initramfs and its uncompressed contents: busybox's insmod
/// passes the file to init_module(2) as it is, and the kernel takes only plain ELF there.
fn read_module(path: &Path) -> Result<(String, Vec<u8>)> {
    let file = path
        .file_name()
        .and_then(OsStr::to_str)
        .with_context(|| format!("module path without a name: {}", path.display()))?;
    let (stem, tool) = if let Some(stem) = file.strip_suffix(".xz") {
        (stem, Some("xz"))
    } else if let Some(stem) = file.strip_suffix(".zst") {
        (stem, Some("zstd"))
    } else if let Some(stem) = file.strip_suffix(".gz") {
        (stem, Some("gzip"))
    } else {
        (file, None)
    };
    let data = match tool {
        None => fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        Some(tool) => {
            let mut cmd = Command::new(tool);
            cmd.args(["-d", "-c"]).arg(path);
            let shown = display(&cmd);
            let out = cmd
                .output()
                .with_context(|| format!("failed to start `{shown}` (to decompress a module)"))?;
            if !out.status.success() {
                bail!(
                    "`{shown}` failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            out.stdout
        }
    };
    if !data.starts_with(b"\x7fELF") {
        bail!("{} is not an ELF module once decompressed", path.display());
    }
    Ok((stem.to_owned(), data))
}

/// One shell command line: `program` as it is (say `$B`), each argument quoted as needed.
pub fn sh_line<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    display(Command::new(program).args(args))
}

/// The initramfs's /init.
fn init_script(
    modules: &[String],
    modules_dir: &Path,
    release: &str,
    markers: &Markers,
    host_dirs: &[PathBuf],
) -> String {
    let mut s = String::new();
    let mut line = |text: String| {
        s.push_str(&text);
        s.push('\n');
    };
    line("#!/bin/busybox sh".into());
    line(
        "# /init of the initramfs that `cargo xtask vm` writes (xtask/src/vm/initramfs.rs).".into(),
    );
    line("B=/bin/busybox".into());
    line("fail() {".into());
    line("    echo \"egress-vm init: $*\"".into());
    line(format!("    echo \"{}\"", markers.exit("125")));
    line("    $B poweroff -f".into());
    line("}".into());
    for (fs, dir) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        line(sh_line("$B", ["mount", "-t", fs, fs, dir]));
    }
    for name in modules {
        let path = format!("/modules/{name}");
        line(format!(
            "{} || fail {}",
            sh_line("$B", ["insmod", &path]),
            sh_line("insmod", [&path])
        ));
    }
    // ro, and cache=loose: the host's root is read-only to the guest and does not change
    // during a run (the test binaries were built before); loose caching saves a round trip
    // through the emulated virtio queue on every lookup, which dominates under TCG.
    line(format!(
        "{} || fail \"cannot mount the host's root over 9p\"",
        sh_line(
            "$B",
            [
                "mount",
                "-t",
                "9p",
                "-o",
                "trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose",
                ROOT_TAG,
                "/lower",
            ]
        )
    ));
    line(format!(
        "{} || fail \"cannot mount the overlay's tmpfs\"",
        sh_line(
            "$B",
            ["mount", "-t", "tmpfs", "-o", "mode=0755", "rw", "/rw"]
        )
    ));
    line(sh_line("$B", ["mkdir", "-p", "/rw/upper", "/rw/work"]));
    line(format!(
        "{} || fail \"cannot mount the overlay on the host's root\"",
        sh_line(
            "$B",
            [
                "mount",
                "-t",
                "overlay",
                "-o",
                "lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work",
                "overlay",
                NEWROOT,
            ]
        )
    ));
    // This kernel's modules where its modprobe looks: the host has none for it, or others.
    let guest_modules = format!("{NEWROOT}/lib/modules/{release}");
    let host_modules = format!("/lower{}", modules_dir.display());
    line(sh_line("$B", ["mkdir", "-p", &guest_modules]));
    line(format!(
        "{} || fail \"cannot bind-mount this kernel's modules\"",
        sh_line("$B", ["mount", "--bind", &host_modules, &guest_modules])
    ));
    // The API filesystems of the new root. /run and /tmp are fresh tmpfs (ip netns keeps its
    // namespaces in /run/netns; /var/run is a link to /run on Debian).
    for (fs, dir, options) in [
        ("proc", "proc", ""),
        ("sysfs", "sys", ""),
        ("devtmpfs", "dev", ""),
        ("devpts", "dev/pts", "gid=5,mode=620,ptmxmode=666"),
        ("tmpfs", "dev/shm", "mode=1777"),
        ("tmpfs", "run", "mode=0755"),
        ("tmpfs", "tmp", "mode=1777"),
        ("bpf", "sys/fs/bpf", "mode=0700"),
        ("cgroup2", "sys/fs/cgroup", ""),
        ("debugfs", "sys/kernel/debug", ""),
        ("tracefs", "sys/kernel/tracing", ""),
    ] {
        let target = format!("{NEWROOT}/{dir}");
        let mut mount = vec!["mount", "-t", fs];
        if !options.is_empty() {
            mount.extend(["-o", options]);
        }
        mount.extend([fs, &target]);
        let cmd = format!(
            "{} && {}",
            sh_line("$B", ["mkdir", "-p", &target]),
            sh_line("$B", &mount)
        );
        // Tracing and cgroups are for debugging (`--shell`); the tests need none of them.
        if matches!(fs, "debugfs" | "tracefs" | "cgroup2") {
            line(format!(
                "{cmd} || echo \"egress-vm init: no {fs} at /{dir}\""
            ));
        } else {
            line(format!("{cmd} || fail \"cannot mount {fs} at /{dir}\""));
        }
    }
    // A workspace under /tmp (a CI clone, say) would be hidden by the guest's own /tmp.
    for dir in hidden_by_guest_tmpfs(host_dirs) {
        let target = format!("{NEWROOT}{}", dir.display());
        let source = format!("/lower{}", dir.display());
        line(format!(
            "{} && {} || fail \"cannot bind-mount {} from the host\"",
            sh_line("$B", ["mkdir", "-p", &target]),
            sh_line("$B", ["mount", "--bind", &source, &target]),
            dir.display()
        ));
    }
    line(format!("$B mkdir -p {NEWROOT}{GUEST_DIR}"));
    line(format!(
        "$B cp /bin/busybox /stage2 /payload {NEWROOT}{GUEST_DIR}/ || fail \"cannot copy to {GUEST_DIR}\""
    ));
    // The initramfs's own API mounts go; the new root has its own.
    line("$B umount /proc /sys".into());
    line("$B umount -l /dev".into());
    line(format!(
        "exec $B switch_root {NEWROOT} {GUEST_DIR}/busybox sh {GUEST_DIR}/stage2"
    ));
    line("fail \"switch_root failed\"".into());
    s
}

/// PID 1 in the new root: the payload, bounded in time, then the exit marker and power-off.
fn stage2_script(markers: &Markers, timeout: Duration) -> String {
    format!(
        r#"#!{GUEST_DIR}/busybox sh
# PID 1 after switch_root (xtask/src/vm/initramfs.rs).
B={GUEST_DIR}/busybox
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb
cd /
"#
    ) + &run_payload(markers, timeout, &format!("/bin/sh {GUEST_DIR}/payload"))
}

/// The end of every guest's PID 1: a host name, loopback, the ready marker, `payload` under a
/// time limit, the exit marker with its status, and power-off (sysrq if that fails).
pub(super) fn run_payload(markers: &Markers, timeout: Duration, payload: &str) -> String {
    format!(
        r#"$B hostname egress-vm
$B ip link set lo up || echo "egress-vm: cannot bring up lo"
echo "{ready} $($B cut -d' ' -f1 /proc/uptime)"
$B timeout -s KILL {secs} {payload} </dev/null
st=$?
echo
echo "{exit}"
$B sync
$B poweroff -f
$B sleep 5
echo o >/proc/sysrq-trigger
"#,
        ready = markers.ready(),
        secs = timeout.as_secs().max(1),
        exit = markers.exit("$st"),
    )
}

/// A cpio archive in the "newc" format the kernel unpacks for an initramfs.
#[derive(Default)]
pub(super) struct Cpio {
    out: Vec<u8>,
    next_ino: u32,
}

impl Cpio {
    pub(super) fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, 2, (0, 0), &[]);
    }

    pub(super) fn file(&mut self, name: &str, permissions: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | permissions, 1, (0, 0), data);
    }

    pub(super) fn symlink(&mut self, name: &str, target: &[u8]) {
        self.entry(name, 0o120_777, 1, (0, 0), target);
    }

    /// Adds the directory tree at `host` (directories, regular files with their permissions,
    /// symbolic links as they are) under `prefix` in the archive, parents before children.
    pub(super) fn tree(&mut self, host: &Path, prefix: &str) -> Result<()> {
        use std::os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _};
        let mut entries: Vec<_> = fs::read_dir(host)
            .with_context(|| format!("cannot list {}", host.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot list {}", host.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                bail!("{} is not a UTF-8 name", path.display());
            };
            let inside = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}/{name}")
            };
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("cannot stat {}", path.display()))?;
            let kind = meta.file_type();
            if kind.is_symlink() {
                let target = fs::read_link(&path)
                    .with_context(|| format!("cannot read the link {}", path.display()))?;
                self.symlink(&inside, target.as_os_str().as_bytes());
            } else if kind.is_dir() {
                self.entry(&inside, 0o040_755, 2, (0, 0), &[]);
                self.tree(&path, &inside)?;
            } else if kind.is_file() {
                let data =
                    fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                self.file(&inside, meta.permissions().mode() & 0o7777, &data);
            }
        }
        Ok(())
    }

    pub(super) fn char_device(&mut self, name: &str, permissions: u32, major: u32, minor: u32) {
        self.entry(name, 0o020_000 | permissions, 1, (major, minor), &[]);
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let size = u32::try_from(data.len()).expect("initramfs files are far below 4 GiB");
        let name_size = u32::try_from(name.len() + 1).expect("short names");
        let fields = [
            self.next_ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            size,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name_size,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.out
    }
}

/// Where the static busybox is cached: taken out of Debian's busybox-static package with
/// `apt-get download` and `dpkg -x`, because installing it would remove the `busybox` package
/// the lab needs (the two conflict).
pub fn busybox_path(cache: &Path) -> PathBuf {
    cache.join("busybox-static").join("busybox")
}

/// Checks that `busybox` is static: the guest runs it before any library is reachable.
pub fn check_static(busybox: &Path) -> Result<()> {
    let text = output(Command::new(busybox).arg("--help")).unwrap_or_default();
    if !text.contains("BusyBox") {
        bail!("{} does not run as busybox", busybox.display());
    }
    let elf = fs::read(busybox).with_context(|| format!("cannot read {}", busybox.display()))?;
    match has_interpreter(&elf) {
        Some(false) => Ok(()),
        Some(true) => bail!("{} is not statically linked", busybox.display()),
        None => bail!(
            "{} is not a 64-bit little-endian ELF file",
            busybox.display()
        ),
    }
}

/// Whether a 64-bit little-endian ELF executable names a program interpreter (`PT_INTERP`,
/// the dynamic loader), i.e. is dynamically linked. None if it is not such an ELF file.
fn has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let phoff = usize::try_from(u64::from_le_bytes(elf.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?);
        if p_type == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let mut cpio = Cpio::default();
        cpio.file("init", 0o755, b"#!x\n");
        let bytes = cpio.finish();
        let header = std::str::from_utf8(&bytes[..110]).unwrap();
        // ino 1, mode 0100755, uid, gid, nlink 1, mtime, size 4, dev, rdev, namesize 5, check.
        let fields: String = [1, 0o100_755, 0, 0, 1, 0, 4, 0, 0, 0, 0, 5, 0]
            .iter()
            .map(|f| format!("{f:08x}"))
            .collect();
        assert_eq!(header, format!("070701{fields}"));
        assert_eq!(&header[6..14], "00000001");
        assert_eq!(&header[14..22], "000081ed");
        // Header (110) + "init\0" (5) padded to 116, then 4 bytes of data.
        assert_eq!(&bytes[110..116], b"init\0\0");
        assert_eq!(&bytes[116..120], b"#!x\n");
        assert_eq!(&bytes[120..126], b"070701");
        assert!(bytes.len().is_multiple_of(4));
        let trailer = &bytes[120 + 110..120 + 110 + 11];
        assert_eq!(trailer, b"TRAILER!!!\0");
    }

    #[test]
    fn a_tree_keeps_its_links_modes_and_order() {
        let dir = std::env::temp_dir().join(format!("egress-cpio-tree-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("lib/x")).unwrap();
        fs::write(dir.join("lib/x/libz.so.1.2"), b"elf").unwrap();
        std::os::unix::fs::symlink("x/libz.so.1.2", dir.join("lib/libz.so.1")).unwrap();
        let mut cpio = Cpio::default();
        cpio.tree(&dir, "").unwrap();
        let out = cpio.finish();
        fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8_lossy(&out);
        let at = |name: &str| {
            text.find(&format!("{name}\0"))
                .unwrap_or_else(|| panic!("{name}"))
        };
        assert!(at("lib") < at("lib/libz.so.1") && at("lib/x") < at("lib/x/libz.so.1.2"));
        // The link's mode is a symlink's and its data is the target, as written.
        assert!(text.contains("x/libz.so.1.2\0") || text.contains("lib/libz.so.1"));
        assert!(text.contains(&format!("{:08x}", 0o120_777)));
        assert!(text.contains("x/libz.so.1.2"));
    }

    #[test]
    fn tells_static_from_dynamic_executables() {
        // An ELF header with two program headers at 0x40: PT_LOAD (1), then PT_INTERP or PT_NOTE.
        let elf = |second: u32| {
            let mut elf = vec![0u8; 0x40 + 2 * 56];
            elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
            elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
            elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
            elf[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
            elf[0x40..0x44].copy_from_slice(&1u32.to_le_bytes());
            elf[0x40 + 56..0x40 + 60].copy_from_slice(&second.to_le_bytes());
            elf
        };
        assert_eq!(has_interpreter(&elf(3)), Some(true));
        assert_eq!(has_interpreter(&elf(4)), Some(false));
        assert_eq!(has_interpreter(b"#!/bin/sh\n"), None);
        assert_eq!(has_interpreter(&elf(3)[..0x50]), None);
        // This machine's own tools are dynamic.
        assert_eq!(has_interpreter(&fs::read("/bin/sh").unwrap()), Some(true));
    }

    #[test]
    fn only_directories_a_guest_tmpfs_hides_are_bound_again() {
        let dirs = [
            "/tmp/ci-clone",
            "/tmp/ci-clone/target/debug",
            "/work/main",
            "/run/x",
            "/tmp",
            "/tmpfoo/y",
        ]
        .map(PathBuf::from);
        assert_eq!(
            hidden_by_guest_tmpfs(&dirs),
            [PathBuf::from("/run/x"), PathBuf::from("/tmp/ci-clone")]
        );
    }

    #[test]
    fn init_loads_modules_in_order_and_switches_root() {
        let markers = Markers::with_nonce("feedf00d");
        let init = init_script(
            &["netfs.ko".into(), "9pnet.ko".into()],
            Path::new("/cache/vm/kernels/6.12.1+deb12-amd64/lib/modules/6.12.1+deb12-amd64"),
            "6.12.1+deb12-amd64",
            &markers,
            &[PathBuf::from("/tmp/ci/clone"), PathBuf::from("/work/main")],
        );
        assert!(
            init.contains(
                "$B mkdir -p /newroot/tmp/ci/clone && $B mount --bind /lower/tmp/ci/clone \
                 /newroot/tmp/ci/clone || fail"
            ),
            "{init}"
        );
        assert!(!init.contains("/newroot/work/main"), "{init}");
        let netfs = init.find("insmod /modules/netfs.ko").unwrap();
        let p9 = init.find("insmod /modules/9pnet.ko").unwrap();
        let mount9p = init.find("-t 9p").unwrap();
        assert!(netfs < p9 && p9 < mount9p);
        assert!(
            init.contains(
                "$B mount --bind /lower/cache/vm/kernels/6.12.1+deb12-amd64/lib/modules/6.12.1+deb12-amd64 \
                 /newroot/lib/modules/6.12.1+deb12-amd64 || fail"
            ),
            "{init}"
        );
        assert!(init.contains("$B mount -t bpf -o mode=0700 bpf /newroot/sys/fs/bpf || fail"));
        assert!(init.contains("EGRESS-VM-EXIT feedf00d 125"));
        assert!(init.contains(
            "exec $B switch_root /newroot /run/egress-vm/busybox sh /run/egress-vm/stage2"
        ));
    }

    #[test]
    fn stage2_bounds_the_payload_and_reports_its_status() {
        let markers = Markers::with_nonce("feedf00d");
        let stage2 = stage2_script(&markers, Duration::from_secs(1140));
        assert!(stage2.contains("$B timeout -s KILL 1140 /bin/sh /run/egress-vm/payload"));
        assert!(stage2.contains("echo \"EGRESS-VM-EXIT feedf00d $st\""));
        assert!(stage2.contains("poweroff -f"));
    }
}
