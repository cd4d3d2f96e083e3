//! `cargo xtask package --target <triple>`: an OpenWrt package (`.ipk`, for OpenWrt 23.05 and
//! 24.10) of a cross-built agent, with the init script, the UCI configuration and its renderer
//! from `deploy/openwrt/files/`, as the feed's Makefile (`deploy/openwrt/Makefile`) installs them.
//!
//! An `.ipk` as OpenWrt's `ipkg-build` writes it and its opkg reads it: a gzip'd tar holding
//! `./debian-binary` ("2.0\n"), `./data.tar.gz` (the files, from `/`) and `./control.tar.gz`
//! (`./control`, `./conffiles`, `./postinst`, `./prerm`), every entry owned by root.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use flate2::{Compression, write::GzEncoder};

use crate::{build::AGENT_BIN, cmd::workspace_root};

/// The package's name, as in `deploy/openwrt/Makefile`.
pub const PACKAGE: &str = "egress-monitor";
/// `PKG_RELEASE` of `deploy/openwrt/Makefile`.
const RELEASE: u32 = 1;
/// What the agent needs besides libc (a static musl binary needs none at run time, but every
/// OpenWrt package lists it): the clsact qdisc and the BPF classifier, for kernels before 6.6.
const DEPENDS: &str = "libc, kmod-sched-core, kmod-sched-bpf";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Rust target triple the agent was built for, e.g. aarch64-unknown-linux-musl.
    #[arg(long)]
    target: String,
    /// The agent binary; default target/<triple>/release/egress-monitor (`cargo xtask build
    /// --release --target <triple>`).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// OpenWrt's package architecture, when the default for the triple is not the router's
    /// (`opkg print-architecture` on the router names it), e.g. aarch64_generic.
    #[arg(long)]
    arch: Option<String>,
    /// Where the .ipk goes; default target/openwrt/.
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    let root = workspace_root();
    let binary = args.binary.clone().unwrap_or_else(|| {
        root.join("target")
            .join(&args.target)
            .join("release")
            .join(AGENT_BIN)
    });
    let arch = match &args.arch {
        Some(arch) => arch.clone(),
        None => openwrt_arch(&args.target)?.to_owned(),
    };
    let out_dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| root.join("target/openwrt"));
    let ipk = build_ipk(&Inputs {
        binary: &binary,
        files: &root.join("deploy/openwrt/files"),
        version: env!("CARGO_PKG_VERSION"),
        arch: &arch,
        out_dir: &out_dir,
    })?;
    println!("built {}", ipk.display());
    Ok(())
}

/// OpenWrt's package architecture for a Rust target triple. The binary is static musl and uses
/// no CPU feature beyond the triple's baseline, so it runs on every CPU of the architecture; the
/// name is the one most routers of that architecture report, since opkg refuses a package whose
/// architecture its configuration does not list (`--arch` names another).
pub fn openwrt_arch(triple: &str) -> Result<&'static str> {
    Ok(match triple {
        // mediatek/filogic, mediatek/mt7622, qualcommax, bcm27xx/bcm2710: the common routers.
        // rockchip, armsr and others are aarch64_generic.
        "aarch64-unknown-linux-musl" => "aarch64_cortex-a53",
        // ipq40xx, ipq806x (cortex-a15: arm_cortex-a15_neon-vfpv4), mvebu (arm_cortex-a9_vfpv3-d16)
        // differ: use --arch.
        "armv7-unknown-linux-musleabihf" => "arm_cortex-a7_neon-vfpv4",
        // ramips/mt7621 and ath79 (mips_24kc) routers.
        "mipsel-unknown-linux-musl" => "mipsel_24kc",
        "mips-unknown-linux-musl" => "mips_24kc",
        "x86_64-unknown-linux-musl" => "x86_64",
        other => bail!(
            "no OpenWrt architecture known for the target {other}: one of \
             aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf, \
             mipsel-unknown-linux-musl, mips-unknown-linux-musl, x86_64-unknown-linux-musl, or \
             give --arch"
        ),
    })
}

pub struct Inputs<'a> {
    pub binary: &'a Path,
    /// `deploy/openwrt/files`.
    pub files: &'a Path,
    pub version: &'a str,
    pub arch: &'a str,
    pub out_dir: &'a Path,
}

/// A file of the package: its path on the router, mode, and contents.
struct Entry {
    path: &'static str,
    mode: u32,
    data: Vec<u8>,
}

/// Directories of the data archive, parents first, with their modes. The state directory is
/// owner-only, as the agent makes it when it is missing: baselines name the devices.
const DIRS: &[(&str, u32)] = &[
    ("etc", 0o755),
    ("etc/config", 0o755),
    ("etc/egress-monitor", 0o700),
    ("etc/init.d", 0o755),
    ("usr", 0o755),
    ("usr/sbin", 0o755),
    ("usr/share", 0o755),
    ("usr/share/egress-monitor", 0o755),
];

/// OpenWrt's own maintainer scripts for packages with init scripts (include/package-ipkg.mk):
/// `default_postinst` enables and starts the init scripts the package installed, `default_prerm`
/// stops and disables them.
const POSTINST: &str = "#!/bin/sh\n[ \"${IPKG_NO_SCRIPT}\" = \"1\" ] && exit 0\n\
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0\n\
. ${IPKG_INSTROOT}/lib/functions.sh\ndefault_postinst $0 $@\n";
const PRERM: &str = "#!/bin/sh\n[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0\n\
. ${IPKG_INSTROOT}/lib/functions.sh\ndefault_prerm $0 $@\n";

/// Writes `<out_dir>/egress-monitor_<version>-r<release>_<arch>.ipk`; returns its path.
pub fn build_ipk(inputs: &Inputs) -> Result<PathBuf> {
    let read = |path: &Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    if !inputs.binary.is_file() {
        bail!(
            "the agent binary {} does not exist: build it with `cargo xtask build --release \
             --target <triple>`, or give --binary",
            inputs.binary.display()
        );
    }
    let files = [
        Entry {
            path: "usr/sbin/egress-monitor",
            mode: 0o755,
            data: read(inputs.binary)?,
        },
        Entry {
            path: "etc/init.d/egress-monitor",
            mode: 0o755,
            data: read(&inputs.files.join("egress-monitor.init"))?,
        },
        Entry {
            path: "etc/config/egress-monitor",
            mode: 0o600,
            data: read(&inputs.files.join("egress-monitor.config"))?,
        },
        Entry {
            path: "usr/share/egress-monitor/render.sh",
            mode: 0o644,
            data: read(&inputs.files.join("egress-monitor-render.sh"))?,
        },
    ];
    let version = format!("{}-r{RELEASE}", inputs.version);
    let installed_size: usize = files.iter().map(|f| f.data.len()).sum();
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Depends: {DEPENDS}\n\
         Source: deploy/openwrt\n\
         SourceName: {PACKAGE}\n\
         License: MIT OR Apache-2.0\n\
         Section: net\n\
         URL: https://github.com/egress-monitor/egress-monitor\n\
         Architecture: {arch}\n\
         Installed-Size: {installed_size}\n\
         Description: Per-device, per-destination traffic accounting in eBPF, for Prometheus.\n  \
         Configured with UCI: /etc/config/egress-monitor.\n",
        arch = inputs.arch,
    );
    let control_files = [
        Entry {
            path: "control",
            mode: 0o644,
            data: control.into_bytes(),
        },
        Entry {
            path: "conffiles",
            mode: 0o644,
            data: b"/etc/config/egress-monitor\n".to_vec(),
        },
        Entry {
            path: "postinst",
            mode: 0o755,
            data: POSTINST.as_bytes().to_vec(),
        },
        Entry {
            path: "prerm",
            mode: 0o755,
            data: PRERM.as_bytes().to_vec(),
        },
    ];
    let data = tar_gz(DIRS, &files)?;
    let control = tar_gz(&[], &control_files)?;
    let outer = [
        Entry {
            path: "debian-binary",
            mode: 0o644,
            data: b"2.0\n".to_vec(),
        },
        Entry {
            path: "data.tar.gz",
            mode: 0o644,
            data,
        },
        Entry {
            path: "control.tar.gz",
            mode: 0o644,
            data: control,
        },
    ];
    let ipk = tar_gz_flat(&outer)?;
    std::fs::create_dir_all(inputs.out_dir)
        .with_context(|| format!("cannot create {}", inputs.out_dir.display()))?;
    let path = inputs
        .out_dir
        .join(format!("{PACKAGE}_{version}_{}.ipk", inputs.arch));
    std::fs::write(&path, ipk).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// A gzip'd tar (GNU format, as ipkg-build writes) of `./`, the directories and the files, all
/// owned by root with a fixed time, so the same inputs give the same bytes.
fn tar_gz(dirs: &[(&str, u32)], files: &[Entry]) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::best()));
    append(&mut tar, "./", 0o755, tar::EntryType::Directory, &[])?;
    for (dir, mode) in dirs {
        append(
            &mut tar,
            &format!("./{dir}/"),
            *mode,
            tar::EntryType::Directory,
            &[],
        )?;
    }
    for file in files {
        append(
            &mut tar,
            &format!("./{}", file.path),
            file.mode,
            tar::EntryType::Regular,
            &file.data,
        )?;
    }
    finish(tar)
}

/// The outer archive: its members only, no `./` entry, as ipkg-build writes it.
fn tar_gz_flat(files: &[Entry]) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::best()));
    for file in files {
        append(
            &mut tar,
            &format!("./{}", file.path),
            file.mode,
            tar::EntryType::Regular,
            &file.data,
        )?;
    }
    finish(tar)
}

fn append(
    tar: &mut tar::Builder<GzEncoder<Vec<u8>>>,
    path: &str,
    mode: u32,
    kind: tar::EntryType,
    data: &[u8],
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_username("root")?;
    header.set_groupname("root")?;
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    // Written by hand: `set_path` would drop the leading "./" that ipkg-build's entries carry.
    let name = &mut header.as_old_mut().name;
    if path.len() >= name.len() {
        bail!("tar path {path} is too long");
    }
    name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_cksum();
    tar.append(&header, data)
        .with_context(|| format!("cannot add {path} to the archive"))
}

fn finish(tar: tar::Builder<GzEncoder<Vec<u8>>>) -> Result<Vec<u8>> {
    let mut gz = tar.into_inner().context("cannot finish the tar archive")?;
    gz.flush()?;
    Ok(gz.finish()?)
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, io::Read as _, process::Command};

    use flate2::read::GzDecoder;

    use super::*;

    /// (path, mode, contents) of every entry of a gzip'd tar, in order.
    fn entries(gz: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut archive = tar::Archive::new(GzDecoder::new(gz));
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let header = entry.header();
                assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
                let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
                let mode = header.mode().unwrap();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                (path, mode, data)
            })
            .collect()
    }

    fn build(dir: &Path) -> PathBuf {
        let binary = dir.join("egress-monitor");
        std::fs::write(&binary, b"\x7fELF not really").unwrap();
        build_ipk(&Inputs {
            binary: &binary,
            files: &workspace_root().join("deploy/openwrt/files"),
            version: "0.1.0",
            arch: openwrt_arch("mipsel-unknown-linux-musl").unwrap(),
            out_dir: &dir.join("out"),
        })
        .unwrap()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-package-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_ipk_holds_what_opkg_reads() {
        let dir = scratch("layout");
        let ipk = build(&dir);
        assert_eq!(
            ipk.file_name().unwrap(),
            "egress-monitor_0.1.0-r1_mipsel_24kc.ipk"
        );
        let outer = entries(&std::fs::read(&ipk).unwrap());
        let names: Vec<&str> = outer.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            names,
            ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]
        );
        assert_eq!(outer[0].2, b"2.0\n");

        let data = entries(&outer[1].2);
        let files: BTreeMap<&str, u32> = data.iter().map(|(p, m, _)| (p.as_str(), *m)).collect();
        let expected: BTreeMap<&str, u32> = [
            ("./", 0o755),
            ("./etc/", 0o755),
            ("./etc/config/", 0o755),
            ("./etc/config/egress-monitor", 0o600),
            ("./etc/egress-monitor/", 0o700),
            ("./etc/init.d/", 0o755),
            ("./etc/init.d/egress-monitor", 0o755),
            ("./usr/", 0o755),
            ("./usr/sbin/", 0o755),
            ("./usr/sbin/egress-monitor", 0o755),
            ("./usr/share/", 0o755),
            ("./usr/share/egress-monitor/", 0o755),
            ("./usr/share/egress-monitor/render.sh", 0o644),
        ]
        .into();
        assert_eq!(files, expected);
        let init = &data
            .iter()
            .find(|(p, _, _)| p == "./etc/init.d/egress-monitor")
            .unwrap()
            .2;
        assert!(init.starts_with(b"#!/bin/sh /etc/rc.common\n"));

        let control = entries(&outer[2].2);
        let get = |name: &str| {
            let (_, mode, data) = control.iter().find(|(p, _, _)| p == name).unwrap();
            (*mode, String::from_utf8(data.clone()).unwrap())
        };
        let (_, fields) = get("./control");
        let fields: BTreeMap<&str, &str> = fields
            .lines()
            .filter_map(|line| line.split_once(": "))
            .collect();
        assert_eq!(fields["Package"], "egress-monitor");
        assert_eq!(fields["Version"], "0.1.0-r1");
        assert_eq!(fields["Architecture"], "mipsel_24kc");
        assert_eq!(fields["Depends"], "libc, kmod-sched-core, kmod-sched-bpf");
        let size: usize = data.iter().map(|(_, _, d)| d.len()).sum();
        assert_eq!(fields["Installed-Size"], size.to_string());
        assert!(fields.contains_key("Description"));
        assert_eq!(get("./conffiles").1, "/etc/config/egress-monitor\n");
        let (mode, postinst) = get("./postinst");
        assert_eq!(mode, 0o755);
        assert!(postinst.contains("default_postinst $0 $@"));
        let (mode, prerm) = get("./prerm");
        assert_eq!(mode, 0o755);
        assert!(prerm.contains("default_prerm $0 $@"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// GNU tar, a reader that is not ours, unpacks all three levels to the same files.
    #[test]
    fn gnu_tar_unpacks_the_ipk() {
        let dir = scratch("gnu-tar");
        let ipk = build(&dir);
        let tar = |archive: &Path, into: &Path| {
            std::fs::create_dir_all(into).unwrap();
            let status = Command::new("tar")
                .arg("-xzf")
                .arg(archive)
                .arg("-C")
                .arg(into)
                .status()
                .unwrap();
            assert!(status.success());
        };
        let outer = dir.join("outer");
        tar(&ipk, &outer);
        tar(&outer.join("data.tar.gz"), &dir.join("data"));
        tar(&outer.join("control.tar.gz"), &dir.join("control"));
        assert_eq!(
            std::fs::read(outer.join("debian-binary")).unwrap(),
            b"2.0\n"
        );
        assert!(dir.join("data/usr/sbin/egress-monitor").is_file());
        assert!(dir.join("data/etc/egress-monitor").is_dir());
        assert!(dir.join("control/control").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_cross_target_has_an_architecture() {
        for (triple, arch) in [
            ("aarch64-unknown-linux-musl", "aarch64_cortex-a53"),
            ("armv7-unknown-linux-musleabihf", "arm_cortex-a7_neon-vfpv4"),
            ("mipsel-unknown-linux-musl", "mipsel_24kc"),
            ("mips-unknown-linux-musl", "mips_24kc"),
            ("x86_64-unknown-linux-musl", "x86_64"),
        ] {
            assert_eq!(openwrt_arch(triple).unwrap(), arch);
        }
        let err = openwrt_arch("riscv64gc-unknown-linux-gnu").unwrap_err();
        assert!(err.to_string().contains("--arch"), "{err}");
    }
}
