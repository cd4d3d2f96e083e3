//! `cargo xtask build --release --target <triple>`: the agent for a router (or for s390x, the
//! big-endian CPU the VM tests boot), static, with the eBPF object of the target's byte order.
//!
//! Each target's way, checked on Debian 12 with the stable 1.95 and nightly 1.97 toolchains:
//! * aarch64 musl: rustup's std for the target, Debian's cross gcc as the linker driver (the
//!   musl C library and start files come with rustup's std, "self-contained").
//! * armv7 musl: rustup cannot download its std, so nightly builds it (`-Z build-std`, from
//!   the nightly's rust-src); no musl for ARM in Debian, so zig (from PyPI, with
//!   cargo-zigbuild) compiles and links against its own musl.
//! * mipsel and mips musl: tier 3, the same way as armv7.
//! * s390x glibc: rustup's std, Debian's cross gcc and its glibc, linked statically
//!   (`+crt-static`) so that the binary runs in a bare VM.
//!
//! The eBPF crate is built by monitor's build.rs (aya-build), which takes the byte order of
//! the target cargo builds for: bpfeb for mips and s390x, bpfel for the others.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};

/// Where the target's standard library comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Std {
    /// `rustup target add` for the stable toolchain.
    Rustup,
    /// Built by nightly with `-Z build-std=std,panic_abort` from rust-src.
    BuildStd,
}

/// What links the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linker {
    /// A Debian cross gcc as the linker driver: its command and its package.
    Gcc {
        command: &'static str,
        package: &'static str,
        /// Debian's glibc headers for that architecture: C in crates (ring's) includes
        /// <stdint.h>, which the cross gcc alone takes from the host's /usr/include and fails.
        headers: &'static str,
    },
    /// zig through `cargo zigbuild` (from PyPI; see setup::ensure_zig).
    Zig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossTarget {
    pub triple: &'static str,
    pub std: Std,
    pub linker: Linker,
    /// The CPU is big-endian: the agent embeds the bpfeb object.
    pub big_endian: bool,
    /// Rustflags for the target's crates, beyond what the target does by default.
    pub rustflags: &'static str,
}

/// Static, with zig's musl: without `+crt-static` the mips targets link dynamically (their
/// default, as OpenWrt's own packages do); without `link-self-contained=no` rustc asks for the
/// crt1.o of rustup's std for the target, which does not exist for these targets here, instead
/// of zig's own.
const ZIG_STATIC: &str = "-Ctarget-feature=+crt-static -Clink-self-contained=no";

/// The targets `--target` accepts.
pub const TARGETS: &[CrossTarget] = &[
    CrossTarget {
        triple: "aarch64-unknown-linux-musl",
        std: Std::Rustup,
        linker: Linker::Gcc {
            command: "aarch64-linux-gnu-gcc",
            package: "gcc-aarch64-linux-gnu",
            headers: "libc6-dev-arm64-cross",
        },
        big_endian: false,
        rustflags: "",
    },
    CrossTarget {
        triple: "armv7-unknown-linux-musleabihf",
        std: Std::BuildStd,
        linker: Linker::Zig,
        big_endian: false,
        rustflags: ZIG_STATIC,
    },
    CrossTarget {
        triple: "mipsel-unknown-linux-musl",
        std: Std::BuildStd,
        linker: Linker::Zig,
        big_endian: false,
        rustflags: ZIG_STATIC,
    },
    CrossTarget {
        triple: "mips-unknown-linux-musl",
        std: Std::BuildStd,
        linker: Linker::Zig,
        big_endian: true,
        rustflags: ZIG_STATIC,
    },
    CrossTarget {
        triple: "s390x-unknown-linux-gnu",
        std: Std::Rustup,
        linker: Linker::Gcc {
            command: "s390x-linux-gnu-gcc",
            package: "gcc-s390x-linux-gnu",
            headers: "libc6-dev-s390x-cross",
        },
        big_endian: true,
        // glibc's static libc.a comes with gcc-s390x-linux-gnu's libc6-dev-s390x-cross.
        rustflags: "-Ctarget-feature=+crt-static",
    },
];

impl CrossTarget {
    /// The target named `triple`, or an error that lists those supported.
    pub fn find(triple: &str) -> Result<&'static Self> {
        match TARGETS.iter().find(|t| t.triple == triple) {
            Some(target) => Ok(target),
            None => bail!(
                "no cross build for `{triple}`; supported: {}",
                TARGETS
                    .iter()
                    .map(|t| t.triple)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// `aarch64-unknown-linux-musl` -> `AARCH64_UNKNOWN_LINUX_MUSL`, as in cargo's
    /// `CARGO_TARGET_<TRIPLE>_LINKER`.
    fn env_name(&self) -> String {
        self.triple.to_ascii_uppercase().replace(['-', '.'], "_")
    }

    /// The program and leading arguments of the cargo command: stable `cargo` (the one that
    /// runs xtask) or `rustup run nightly cargo`, then `build` or `zigbuild`.
    pub fn cargo_command(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = match self.std {
            Std::Rustup => vec![std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())],
            Std::BuildStd => ["rustup", "run", "nightly", "cargo"]
                .map(OsString::from)
                .to_vec(),
        };
        argv.push(
            match self.linker {
                Linker::Gcc { .. } => "build",
                Linker::Zig => "zigbuild",
            }
            .into(),
        );
        argv
    }

    /// Arguments after `build`: package, target, profile and the build of std.
    pub fn cargo_args(&self, release: bool) -> Vec<String> {
        let mut args: Vec<String> = ["-p", "monitor", "--bins", "--target", self.triple]
            .map(str::to_owned)
            .to_vec();
        if release {
            args.extend(["--profile".into(), ROUTER_PROFILE.into()]);
        }
        if self.std == Std::BuildStd {
            // panic_abort: the router profile aborts on panic, and its std must offer that.
            args.extend(["-Z".into(), "build-std=std,panic_abort".into()]);
        }
        args
    }

    /// Environment for the build: the linker, the target's rustflags. (Given per target, so
    /// none of it reaches the eBPF build that aya-build runs for bpfel/bpfeb.)
    pub fn cargo_env(&self) -> Vec<(String, OsString)> {
        let mut env = Vec::new();
        if let Linker::Gcc { command, .. } = self.linker {
            env.push((
                format!("CARGO_TARGET_{}_LINKER", self.env_name()),
                command.into(),
            ));
        }
        if !self.rustflags.is_empty() {
            env.push((
                format!("CARGO_TARGET_{}_RUSTFLAGS", self.env_name()),
                self.rustflags.into(),
            ));
        }
        env
    }

    /// Where `--release` promises the binary, given where cargo left it (under the router
    /// profile's directory): `<target dir>/<triple>/release/egress-monitor`.
    pub fn release_path(built: &Path) -> Option<PathBuf> {
        let triple_dir = built.parent()?.parent()?;
        Some(triple_dir.join("release").join(crate::build::AGENT_BIN))
    }
}

/// The profile in the workspace's Cargo.toml for routers (size first, LTO, abort, stripped).
pub const ROUTER_PROFILE: &str = "router";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mips_builds_std_with_nightly_and_links_with_zig() {
        let mips = CrossTarget::find("mips-unknown-linux-musl").unwrap();
        assert!(mips.big_endian);
        assert_eq!(
            mips.cargo_command(),
            ["rustup", "run", "nightly", "cargo", "zigbuild"].map(OsString::from)
        );
        let args = mips.cargo_args(true);
        assert!(args.windows(2).any(|w| w == ["--profile", "router"]));
        assert!(args.contains(&"build-std=std,panic_abort".to_owned()));
        assert_eq!(
            mips.cargo_env(),
            [(
                "CARGO_TARGET_MIPS_UNKNOWN_LINUX_MUSL_RUSTFLAGS".to_owned(),
                OsString::from("-Ctarget-feature=+crt-static -Clink-self-contained=no")
            )]
        );
    }

    #[test]
    fn aarch64_links_with_debian_gcc_and_lands_in_release() {
        let a = CrossTarget::find("aarch64-unknown-linux-musl").unwrap();
        assert_eq!(
            a.cargo_env(),
            [(
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER".to_owned(),
                OsString::from("aarch64-linux-gnu-gcc")
            )]
        );
        assert!(!a.cargo_args(true).iter().any(|a| a == "-Z"));
        let built = Path::new("/w/target/aarch64-unknown-linux-musl/router/egress-monitor");
        assert_eq!(
            CrossTarget::release_path(built),
            Some(PathBuf::from(
                "/w/target/aarch64-unknown-linux-musl/release/egress-monitor"
            ))
        );
    }

    #[test]
    fn s390x_is_static_and_unknown_targets_are_refused() {
        let s = CrossTarget::find("s390x-unknown-linux-gnu").unwrap();
        assert!(s.big_endian);
        assert!(s.cargo_env().iter().any(|(k, v)| {
            k == "CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_RUSTFLAGS"
                && v == "-Ctarget-feature=+crt-static"
        }));
        let err = CrossTarget::find("riscv64gc-unknown-linux-musl").unwrap_err();
        assert!(err.to_string().contains("mipsel-unknown-linux-musl"));
    }
}
