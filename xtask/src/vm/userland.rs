//! The userland of a foreign-architecture guest that runs the lab: Debian's own iproute2,
//! nftables, ethtool and kmod of that architecture with every library they link (apt resolves
//! them against an empty dpkg status), and the kernel's network modules with a fresh
//! `modules.dep`. Both are unpacked once into the cache and put into the guest's initramfs by
//! [`super::arch`], so that the lab tests run there as they do on the host: veth pairs,
//! bridges and namespaces made by the real `ip`, the router's ruleset loaded by the real
//! `nft`, and modules loaded on demand by the real `modprobe`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::{apt, arch::Spec};
use crate::cmd;

/// What the lab runs in a guest, as Debian packages (their dependencies come along).
pub const PACKAGES: &[&str] = &["iproute2", "nftables", "ethtool", "kmod", "netbase"];

/// Parts of the unpacked packages a guest never reads: left out of the initramfs, which the
/// guest's kernel unpacks byte by byte under TCG.
const UNUSED: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/bash-completion",
    "usr/share/zsh",
];

/// The module directories of the kernel the lab needs (veth, bridge, 802.1Q, nf_tables,
/// sch_ingress and cls_bpf, nf_flow_table, and what they depend on), relative to
/// `lib/modules/<release>`.
const MODULE_TREES: &[&str] = &["kernel/net", "kernel/lib", "kernel/crypto"];

/// Single modules outside [`MODULE_TREES`], without their compression suffix.
const MODULE_FILES: &[&str] = &["kernel/drivers/net/veth.ko"];

/// The files of the kernel's module directory depmod reads besides the modules.
const MODULE_INDEXES: &[&str] = &[
    "modules.builtin",
    "modules.builtin.modinfo",
    "modules.order",
];

/// The userland of `spec`'s architecture under `dir` (fetched and unpacked once): a root
/// directory holding [`PACKAGES`] and their libraries.
pub fn ensure_packages(spec: &Spec, state: &apt::AptState, dir: &Path) -> Result<PathBuf> {
    let root = dir.join("userland");
    let marker = root.join(".egress-packages");
    let wanted = PACKAGES.join(" ");
    if fs::read_to_string(&marker).is_ok_and(|m| m.trim() == wanted) {
        return Ok(root);
    }
    println!("vm: {}: fetching the lab's userland ({wanted})", spec.name);
    state.update(false)?;
    let download = dir.join(".download-userland");
    let debs = state.download_closure(PACKAGES, &download)?;
    let partial = dir.join("userland.partial");
    for path in [&partial, &root] {
        if path.exists() {
            fs::remove_dir_all(path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    for deb in &debs {
        apt::extract(deb, &partial)?;
    }
    for unused in UNUSED {
        let path = partial.join(unused);
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    for program in [
        "bin/ip",
        "sbin/tc",
        "usr/sbin/nft",
        "sbin/ethtool",
        "bin/kmod",
    ] {
        if fs::symlink_metadata(partial.join(program)).is_err() {
            bail!(
                "the {} userland has no {program} after unpacking {} packages",
                spec.name,
                debs.len()
            );
        }
    }
    fs::write(partial.join(".egress-packages"), format!("{wanted}\n"))
        .with_context(|| format!("cannot write the marker into {}", partial.display()))?;
    fs::rename(&partial, &root)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), root.display()))?;
    fs::remove_dir_all(&download)
        .with_context(|| format!("cannot remove {}", download.display()))?;
    Ok(root)
}

/// The network modules of the kernel unpacked at `kernel_root` (release `release`), copied
/// under `dir` with a `modules.dep` and aliases of their own (`depmod -b`); returns the root
/// that holds `lib/modules/<release>`.
pub fn ensure_modules(kernel_root: &Path, release: &str, dir: &Path) -> Result<PathBuf> {
    let root = dir.join("lab-modules");
    let marker = root.join(".release");
    if fs::read_to_string(&marker).is_ok_and(|r| r.trim() == release) {
        return Ok(root);
    }
    apt::ensure_program("depmod", "kmod")?;
    let source = kernel_root.join("lib/modules").join(release);
    let partial = dir.join("lab-modules.partial");
    for path in [&partial, &root] {
        if path.exists() {
            fs::remove_dir_all(path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    let target = partial.join("lib/modules").join(release);
    for tree in MODULE_TREES {
        copy_tree(&source.join(tree), &target.join(tree))?;
    }
    for file in MODULE_FILES {
        let found = ["", ".xz", ".zst"]
            .iter()
            .map(|suffix| PathBuf::from(format!("{file}{suffix}")))
            .find(|rel| source.join(rel).is_file())
            .with_context(|| format!("kernel {release} has no {file} (or .xz, .zst)"))?;
        copy_file(&source.join(&found), &target.join(&found))?;
    }
    for index in MODULE_INDEXES {
        copy_file(&source.join(index), &target.join(index))?;
    }
    cmd::run(Command::new("depmod").arg("-b").arg(&partial).arg(release))
        .with_context(|| format!("depmod of kernel {release}'s network modules"))?;
    fs::write(partial.join(".release"), format!("{release}\n"))
        .with_context(|| format!("cannot write {}", partial.join(".release").display()))?;
    fs::rename(&partial, &root)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), root.display()))?;
    Ok(root)
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", from.display()))?;
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&path, &dest)?;
        } else {
            copy_file(&path, &dest)?;
        }
    }
    Ok(())
}
