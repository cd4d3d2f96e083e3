//! The kernel matrix: which Debian kernels, how they are fetched (apt, `dpkg -x`, `depmod`)
//! and cached, and which of their modules the guest needs before its root is mounted.
//!
//! The flavour is always the plain `-amd64` one: the `-cloud-amd64` kernels lack 9p
//! (`CONFIG_NET_9P` unset), and the guest's root is the host's, shared over 9p.
//!
//! The exact package is resolved from apt when a kernel is first fetched (the newest
//! `linux-image-6.1.0-N-amd64`, say), since Debian drops old ABI revisions from its mirrors: a
//! hard-coded one would stop downloading some day. Once fetched, a kernel stays in the cache
//! and later runs use it without asking apt (`--update-kernels` looks for newer ones).

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::apt::{self, AptState};
use crate::cmd;

/// One column of the matrix: a kernel series and the Debian suite that packages it.
#[derive(Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The series as users name it on the command line: `5.10`, `6.1`, `6.12`.
    pub name: &'static str,
    /// The Debian suite whose apt sources have it (with its -updates and -security suites).
    pub suite: &'static str,
}

/// The kernels `cargo xtask vm` boots: the oldest the design promises to support (5.10, as in
/// bullseye), Debian 12's own (6.1) and its backport (6.12, the newest Debian packages for
/// Debian 12). 5.15 and 6.6 are not packaged by Debian.
pub const MATRIX: &[Kernel] = &[
    Kernel {
        name: "5.10",
        suite: "bullseye",
    },
    Kernel {
        name: "6.1",
        suite: "bookworm",
    },
    Kernel {
        name: "6.12",
        suite: "bookworm",
    },
];

/// The matrix entry named `name` (`6.1`), or an error listing the known ones.
pub fn by_name(name: &str) -> Result<&'static Kernel> {
    MATRIX.iter().find(|k| k.name == name).with_context(|| {
        let names: Vec<&str> = MATRIX.iter().map(|k| k.name).collect();
        format!(
            "no kernel `{name}` in the matrix; known: {}",
            names.join(", ")
        )
    })
}

/// A kernel package unpacked into the cache: `boot/vmlinuz-<release>`, `boot/config-<release>`
/// and `lib/modules/<release>/` with a fresh `modules.dep`.
#[derive(Debug)]
pub struct Extracted {
    pub kernel: &'static Kernel,
    /// What `uname -r` says in the guest, e.g. `6.1.0-57-amd64`.
    pub release: String,
    pub root: PathBuf,
}

/// Written into an extracted kernel's directory once everything (unpack, depmod) succeeded,
/// so that an interrupted fetch is redone rather than half used.
const COMPLETE_MARKER: &str = ".egress-vm-complete";

impl Extracted {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    fn config(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("config-{}", self.release))
    }

    /// `lib/modules/<release>` on the host; the guest bind-mounts it (seen through the 9p
    /// share at this same path) on its own `/lib/modules/<release>`.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }

    /// The module files to insmod, in dependency order, before the guest can mount its root:
    /// whatever of virtio-pci, 9p and overlayfs this kernel has as modules (not built in),
    /// with every module they depend on (netfs, fscache...), read from its config and
    /// modules.dep.
    pub fn boot_modules(&self) -> Result<Vec<PathBuf>> {
        let config_path = self.config();
        let config = fs::read_to_string(&config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?;
        let mut wanted = Vec::new();
        for (symbol, module) in ROOT_FEATURES {
            match config_value(&config, symbol) {
                Some("y") => {}
                Some("m") => wanted.push(*module),
                _ => bail!(
                    "kernel {} has no {symbol} ({}): the guest mounts the host's root over \
                     9p with an overlay on top (a cloud flavour lacks 9p)",
                    self.release,
                    config_path.display()
                ),
            }
        }
        let dep_path = self.modules_dir().join("modules.dep");
        let text = fs::read_to_string(&dep_path)
            .with_context(|| format!("cannot read {}", dep_path.display()))?;
        let deps = ModulesDep::parse(&text);
        let order = deps
            .load_order(&wanted)
            .with_context(|| format!("in {}", dep_path.display()))?;
        Ok(order
            .into_iter()
            .map(|rel| self.modules_dir().join(rel))
            .collect())
    }
}

/// The kernel options the guest's root needs, and the module of each when it is `=m`.
const ROOT_FEATURES: &[(&str, &str)] = &[
    ("CONFIG_VIRTIO_PCI", "virtio_pci"),
    ("CONFIG_NET_9P", "9pnet"),
    ("CONFIG_NET_9P_VIRTIO", "9pnet_virtio"),
    ("CONFIG_9P_FS", "9p"),
    ("CONFIG_OVERLAY_FS", "overlay"),
];

/// The value of `symbol` in a kernel .config (`y`, `m`, a number...), None when unset.
fn config_value<'a>(config: &'a str, symbol: &str) -> Option<&'a str> {
    config
        .lines()
        .find_map(|line| line.strip_prefix(symbol)?.strip_prefix('='))
        .map(str::trim)
}

/// Fetches `kernel` into `cache` (once) and returns where it is.
///
/// `update` asks apt for a newer package even when one is cached.
pub fn ensure(kernel: &'static Kernel, cache: &Path, update: bool) -> Result<Extracted> {
    let kernels_dir = cache.join("kernels");
    if !update && let Some(release) = newest_cached(&kernels_dir, kernel.name)? {
        let extracted = Extracted {
            kernel,
            root: kernels_dir.join(&release),
            release,
        };
        println!(
            "vm: kernel {}: {} (cached in {})",
            kernel.name,
            extracted.release,
            extracted.root.display()
        );
        return Ok(extracted);
    }

    let state = AptState::new(kernel.suite, &cache.join("apt").join(kernel.suite))?;
    state.update(update)?;
    let prefix = format!("linux-image-{}.", kernel.name);
    let mut package = newest_package(&state.package_names(&prefix)?, kernel.name);
    if package.is_none() && !update {
        // Lists from an earlier run may predate a new ABI and miss the packages that replaced
        // the ones they name.
        state.update(true)?;
        package = newest_package(&state.package_names(&prefix)?, kernel.name);
    }
    let package = package.with_context(|| {
        format!(
            "Debian {} has no `{prefix}*-amd64` kernel package (apt-cache pkgnames {prefix})",
            kernel.suite
        )
    })?;
    let release = release_of(&package).expect("newest_package returns kernel packages");
    let root = kernels_dir.join(&release);
    let extracted = Extracted {
        kernel,
        release: release.clone(),
        root: root.clone(),
    };
    if root.join(COMPLETE_MARKER).exists() {
        println!("vm: kernel {}: {release} (cached)", kernel.name);
        return Ok(extracted);
    }

    println!(
        "vm: kernel {}: fetching {package} from Debian {}",
        kernel.name, kernel.suite
    );
    apt::ensure_program("depmod", "kmod")?;
    let download = kernels_dir.join(".download");
    let deb = state.download(&package, &download)?;
    let partial = kernels_dir.join(format!("{release}.partial"));
    for dir in [&partial, &root] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    apt::extract(&deb, &partial)?;
    move_usr_lib_modules(&partial, &release)?;
    cmd::run(Command::new("depmod").arg("-b").arg(&partial).arg(&release))
        .with_context(|| format!("cannot index the modules of {release}"))?;
    fs::rename(&partial, &root)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), root.display()))?;
    for file in [extracted.vmlinuz(), extracted.config()] {
        if !file.is_file() {
            bail!("{package} has no {}", file.display());
        }
    }
    let marker = root.join(COMPLETE_MARKER);
    fs::write(&marker, format!("{package}\n"))
        .with_context(|| format!("cannot write {}", marker.display()))?;
    fs::remove_dir_all(&download)
        .with_context(|| format!("cannot remove {}", download.display()))?;
    remove_older(&kernels_dir, kernel.name, &release)?;
    Ok(extracted)
}

/// Newer packages install modules under `usr/lib/modules` (merged /usr); depmod -b and the
/// guest's bind mount expect `lib/modules`.
fn move_usr_lib_modules(root: &Path, release: &str) -> Result<()> {
    let lib = root.join("lib/modules").join(release);
    let usr = root.join("usr/lib/modules").join(release);
    if lib.exists() || !usr.exists() {
        return Ok(());
    }
    fs::create_dir_all(root.join("lib/modules"))
        .with_context(|| format!("cannot create {}/lib/modules", root.display()))?;
    fs::rename(&usr, &lib)
        .with_context(|| format!("cannot move {} to {}", usr.display(), lib.display()))
}

/// The complete extracted kernels of the series `name` in `dir`, newest first.
fn cached_releases(dir: &Path, name: &str) -> Result<Vec<String>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut releases: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(COMPLETE_MARKER).exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|release| in_series(release.strip_suffix("-amd64").unwrap_or(""), name))
        .collect();
    releases.sort_by_key(|release| std::cmp::Reverse(version_key(release)));
    Ok(releases)
}

fn newest_cached(dir: &Path, name: &str) -> Result<Option<String>> {
    Ok(cached_releases(dir, name)?.into_iter().next())
}

/// Removes the cached kernels of series `name` other than `keep` (each is ~500 MB).
fn remove_older(dir: &Path, name: &str, keep: &str) -> Result<()> {
    for release in cached_releases(dir, name)? {
        if release != keep {
            let path = dir.join(&release);
            println!("vm: removing the older kernel {}", path.display());
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// The kernel release of a plain amd64 image package: `linux-image-6.1.0-57-amd64` ->
/// `6.1.0-57-amd64`. None for meta packages, other flavours (cloud, rt), -dbg and -unsigned.
fn release_of(package: &str) -> Option<String> {
    let release = package.strip_prefix("linux-image-")?;
    let version = release.strip_suffix("-amd64")?;
    // Digits, dots, dashes and Debian's `+debNN`: anything else is a flavour or a variant.
    // An ABI (`-57`, `+deb12`) is required: `linux-image-6.12-amd64` is a meta package.
    let plain = version.replace("+deb", "+");
    (plain.contains(['-', '+'])
        && plain
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+')))
    .then(|| release.to_owned())
}

/// Whether the version part of a release (`6.12.117+deb12`) belongs to series `name` (`6.12`,
/// and not `6.1`).
fn in_series(version: &str, name: &str) -> bool {
    version
        .strip_prefix(name)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// The newest plain amd64 kernel of series `name` among package names.
fn newest_package(packages: &[String], name: &str) -> Option<String> {
    packages
        .iter()
        .filter(|package| {
            release_of(package).is_some_and(|release| {
                in_series(release.strip_suffix("-amd64").unwrap_or(""), name)
            })
        })
        .max_by_key(|package| version_key(package))
        .cloned()
}

/// The numbers in a release or package name, for ordering within a series:
/// `6.1.0-57-amd64` -> [6, 1, 0, 57] (the `-amd64` flavour suffix is not a number of it).
fn version_key(name: &str) -> Vec<u64> {
    let name = name.strip_suffix("-amd64").unwrap_or(name);
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

/// `modules.dep` as depmod writes it: `kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz ...`.
struct ModulesDep {
    /// Module name -> (its path relative to lib/modules/<release>, its dependencies' names).
    modules: HashMap<String, (String, Vec<String>)>,
}

impl ModulesDep {
    fn parse(text: &str) -> Self {
        let modules = text
            .lines()
            .filter_map(|line| {
                let (path, deps) = line.split_once(':')?;
                let path = path.trim();
                let deps = deps.split_whitespace().map(module_name).collect();
                Some((module_name(path), (path.to_owned(), deps)))
            })
            .collect();
        Self { modules }
    }

    /// The paths of `wanted` and everything they depend on, each after its dependencies.
    fn load_order(&self, wanted: &[&str]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in wanted {
            self.visit(&module_name(name), &mut seen, &mut order)?;
        }
        Ok(order)
    }

    fn visit(&self, name: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) -> Result<()> {
        if !seen.insert(name.to_owned()) {
            return Ok(());
        }
        let (path, deps) = self
            .modules
            .get(name)
            .with_context(|| format!("no module `{name}`"))?;
        for dep in deps {
            self.visit(dep, seen, order)?;
        }
        order.push(path.clone());
        Ok(())
    }
}

/// The name the kernel knows a module by: `kernel/net/9p/9pnet_virtio.ko.xz` ->
/// `9pnet_virtio` (dashes and underscores are the same to the kernel).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_amd64_images_are_kernels() {
        assert_eq!(
            release_of("linux-image-6.1.0-57-amd64").as_deref(),
            Some("6.1.0-57-amd64")
        );
        assert_eq!(
            release_of("linux-image-6.12.117+deb12-amd64").as_deref(),
            Some("6.12.117+deb12-amd64")
        );
        for other in [
            "linux-image-6.1.0-57-cloud-amd64",
            "linux-image-6.1.0-49-rt-amd64",
            "linux-image-6.12-amd64",
            "linux-image-6.1.0-57-amd64-dbg",
            "linux-image-5.10.0-46-amd64-unsigned",
            "linux-image-amd64",
            "linux-headers-6.1.0-57-amd64",
        ] {
            assert_eq!(release_of(other), None, "{other}");
        }
    }

    #[test]
    fn picks_the_newest_package_of_a_series_only() {
        let names: Vec<String> = [
            "linux-image-6.1.0-9-amd64",
            "linux-image-6.1.0-57-amd64",
            "linux-image-6.1.0-57-cloud-amd64",
            "linux-image-6.12.100+deb12-amd64",
            "linux-image-6.12.117+deb12-amd64",
            "linux-image-6.12.99+deb12-amd64",
            "linux-image-6.12-amd64",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            newest_package(&names, "6.1").as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(
            newest_package(&names, "6.12").as_deref(),
            Some("linux-image-6.12.117+deb12-amd64")
        );
        assert_eq!(newest_package(&names, "5.10"), None);
    }

    #[test]
    fn version_keys_order_numerically() {
        assert_eq!(version_key("6.1.0-57-amd64"), [6, 1, 0, 57]);
        assert_eq!(version_key("6.12.117+deb12-amd64"), [6, 12, 117, 12]);
        assert!(version_key("5.10.0-46-amd64") > version_key("5.10.0-9-amd64"));
    }

    #[test]
    fn reads_config_values() {
        let config = "# CONFIG_FOO is not set\nCONFIG_NET_9P=m\nCONFIG_NET_9P_VIRTIO=m\nCONFIG_VIRTIO_PCI=y\n";
        assert_eq!(config_value(config, "CONFIG_NET_9P"), Some("m"));
        assert_eq!(config_value(config, "CONFIG_NET_9P_VIRTIO"), Some("m"));
        assert_eq!(config_value(config, "CONFIG_VIRTIO_PCI"), Some("y"));
        assert_eq!(config_value(config, "CONFIG_FOO"), None);
        assert_eq!(config_value(config, "CONFIG_9P_FS"), None);
    }

    #[test]
    fn modules_load_after_their_dependencies_once_each() {
        let dep = "kernel/fs/netfs/netfs.ko.xz:\n\
                   kernel/fs/overlayfs/overlay.ko.xz:\n\
                   kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n\
                   kernel/net/9p/9pnet.ko.xz: kernel/fs/netfs/netfs.ko.xz\n\
                   kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n\
                   kernel/drivers/virtio/virtio_ring.ko:\n\
                   kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio-pci-modern-dev.ko\n\
                   kernel/drivers/virtio/virtio-pci-modern-dev.ko:\n";
        let deps = ModulesDep::parse(dep);
        let order = deps
            .load_order(&["9pnet_virtio", "9p", "overlay", "virtio-pci"])
            .unwrap();
        assert_eq!(
            order,
            [
                "kernel/fs/netfs/netfs.ko.xz",
                "kernel/net/9p/9pnet.ko.xz",
                "kernel/net/9p/9pnet_virtio.ko.xz",
                "kernel/fs/9p/9p.ko.xz",
                "kernel/fs/overlayfs/overlay.ko.xz",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio-pci-modern-dev.ko",
                "kernel/drivers/virtio/virtio_pci.ko",
            ]
        );
        let missing = deps.load_order(&["bridge"]).unwrap_err();
        assert_eq!(missing.to_string(), "no module `bridge`");
    }

    #[test]
    fn series_do_not_match_by_prefix_alone() {
        assert!(in_series("6.1.0-57", "6.1"));
        assert!(!in_series("6.12.117+deb12", "6.1"));
        assert!(in_series("6.12.117+deb12", "6.12"));
        assert!(by_name("6.12").is_ok());
        assert!(
            by_name("5.15")
                .unwrap_err()
                .to_string()
                .contains("5.10, 6.1, 6.12")
        );
    }
}
