//! The test binaries of egress-lab built for a foreign architecture (`cargo test --no-run
//! --target ...`), for the guests of [`super::arch`].
//!
//! Linked by Debian's GNU cross gcc of that architecture (`CARGO_TARGET_<TRIPLE>_LINKER`),
//! static: a musl target links musl statically by itself; a glibc target (s390x) gets
//! `+crt-static`. A target whose std rustup cannot download (armv7 musl) builds it with
//! nightly `-Z build-std`. The eBPF object comes along as on the host: monitor's build.rs
//! (aya-build) builds it for bpfel or, for a big-endian target, bpfeb.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::{
    arch::Spec,
    suite::{self, TestBinary},
};
use crate::{
    cmd::{cargo, display, workspace_root},
    setup::Toolchain,
};

/// The variables a `cargo` run by `cargo xtask` inherits that would pin the child to the
/// stable toolchain: a nightly child must not see them.
const TOOLCHAIN_VARS: &[&str] = &[
    "RUSTC",
    "RUSTDOC",
    "RUSTC_WRAPPER",
    "CARGO",
    "RUSTUP_TOOLCHAIN",
    "CARGO_ENCODED_RUSTFLAGS",
];

/// What a cross build makes.
#[derive(Debug, Clone, Copy)]
pub enum Build<'a> {
    /// egress-lab's test binaries of these names (`cargo test --no-run`).
    Tests(&'a [&'a str]),
    /// The agent, `egress-monitor`, in the same (debug) profile: it shares the test build's
    /// compiled crates, so it costs a link.
    Agent,
}

/// The cargo command that makes `what` for `spec`'s target.
/// `env` is the toolchain's (bpf-linker on PATH); `musl` the directory of Debian's musl for a
/// target without a self-contained one ([`Spec::musl_from_debian`]).
pub fn command(
    env: Vec<(String, OsString)>,
    spec: &Spec,
    what: Build<'_>,
    musl: Option<&Path>,
) -> Command {
    let mut cmd = if spec.build_std {
        let mut cmd = Command::new("rustup");
        cmd.args(["run", "nightly", "cargo"])
            .current_dir(workspace_root());
        for var in TOOLCHAIN_VARS {
            cmd.env_remove(var);
        }
        cmd
    } else {
        cargo()
    };
    match what {
        Build::Tests(names) => {
            cmd.args(["test", "-p", "egress-lab", "--no-run"]);
            for name in names {
                cmd.args(["--test", name]);
            }
        }
        Build::Agent => {
            cmd.args(["build", "-p", "monitor", "--bin", "egress-monitor"]);
        }
    }
    cmd.args(["--target", spec.target]);
    if spec.build_std {
        cmd.arg("-Zbuild-std");
    }
    cmd.arg("--message-format=json-render-diagnostics");
    let upper = spec.target.to_uppercase().replace('-', "_");
    let lower = spec.target.replace('-', "_");
    cmd.env(
        format!("CARGO_TARGET_{upper}_LINKER"),
        format!("{}-gcc", spec.gnu_prefix),
    )
    .env(format!("CC_{lower}"), format!("{}-gcc", spec.gnu_prefix))
    .env(format!("AR_{lower}"), format!("{}-ar", spec.gnu_prefix));
    let mut rustflags = spec.rustflags.to_owned();
    if let Some(musl) = musl {
        // gcc takes crt1.o, crti.o and crtn.o from -B, libc.a and libunwind.a from -L; its own
        // crtbegin/crtend and libgcc complete the link.
        let dir = musl.display();
        rustflags =
            format!("{rustflags} -C link-self-contained=no -C link-arg=-B{dir} -L native={dir}")
                .trim()
                .to_owned();
    }
    if !rustflags.is_empty() {
        cmd.env(format!("CARGO_TARGET_{upper}_RUSTFLAGS"), rustflags);
    }
    cmd.envs(env);
    cmd
}

/// The cross build for one guest: its test binaries and the agent.
pub struct Built {
    pub tests: Vec<TestBinary>,
    pub agent: PathBuf,
}

/// Builds the test binaries `names` and the agent for `spec`'s target.
pub fn build(toolchain: &Toolchain, spec: &Spec, names: &[&str]) -> Result<Built> {
    ensure_target(spec)?;
    let musl = if spec.musl_from_debian {
        Some(super::arch::ensure_musl(spec)?)
    } else {
        None
    };
    let mut cmd = command(toolchain.env()?, spec, Build::Tests(names), musl.as_deref());
    cmd.stdout(Stdio::piped());
    let shown = display(&cmd);
    eprintln!("$ {shown}");
    let tests = suite::test_binaries_of(cmd, &shown)?;
    let mut cmd = command(toolchain.env()?, spec, Build::Agent, musl.as_deref());
    crate::cmd::run(&mut cmd)
        .with_context(|| format!("cannot build the agent for {}", spec.target))?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let agent = target_dir.join(spec.target).join("debug/egress-monitor");
    if !agent.is_file() {
        bail!("the cross build left no agent at {}", agent.display());
    }
    Ok(Built { tests, agent })
}

/// `rustup target add` for a target whose std is downloaded (idempotent, fast when present).
fn ensure_target(spec: &Spec) -> Result<()> {
    if spec.build_std {
        // std comes from rust-src, which `cargo xtask setup` adds to nightly for the eBPF crate.
        return Ok(());
    }
    let installed =
        crate::cmd::output(Command::new("rustup").args(["target", "list", "--installed"]))
            .unwrap_or_default();
    if installed.lines().any(|line| line.trim() == spec.target) {
        return Ok(());
    }
    crate::cmd::run(Command::new("rustup").args(["target", "add", spec.target]))
        .with_context(|| format!("cannot add the Rust target {}", spec.target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::arch::Arch;

    fn env_of(cmd: &Command, name: &str) -> Option<String> {
        cmd.get_envs()
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| value.map(|v| v.to_string_lossy().into_owned()))
    }

    #[test]
    fn a_cross_build_names_its_linker_and_static_flags() {
        let s390x = command(
            Vec::new(),
            Arch::S390x.spec(),
            Build::Tests(&["kernel_frames"]),
            None,
        );
        let shown = display(&s390x);
        assert!(
            shown.contains(
                "test -p egress-lab --no-run --test kernel_frames --target s390x-unknown-linux-gnu"
            ),
            "{shown}"
        );
        assert_eq!(
            env_of(&s390x, "CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_LINKER").as_deref(),
            Some("s390x-linux-gnu-gcc")
        );
        assert_eq!(
            env_of(&s390x, "CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_RUSTFLAGS").as_deref(),
            Some("-C target-feature=+crt-static")
        );
        let agent = display(&command(Vec::new(), Arch::Arm64.spec(), Build::Agent, None));
        assert!(
            agent.contains(
                "build -p monitor --bin egress-monitor --target aarch64-unknown-linux-musl"
            ),
            "{agent}"
        );
        let armhf = command(
            Vec::new(),
            Arch::Armhf.spec(),
            Build::Tests(&["kernel_frames"]),
            Some(Path::new("/m")),
        );
        let shown = display(&armhf);
        assert!(
            shown.starts_with("rustup run nightly cargo test"),
            "{shown}"
        );
        assert!(shown.contains("-Zbuild-std"), "{shown}");
        assert_eq!(
            env_of(
                &armhf,
                "CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUSTFLAGS"
            )
            .as_deref(),
            Some("-C link-self-contained=no -C link-arg=-B/m -L native=/m")
        );
    }
}
