//! `cargo xtask build`: builds the agent, eBPF programs included.

use std::{
    ffi::OsString,
    fs,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use crate::{
    cmd::{Phases, cargo, display, workspace_root},
    cross::CrossTarget,
    setup::{self, Toolchain},
};

/// The agent's binary target in the `monitor` package.
pub const AGENT_BIN: &str = "egress-monitor";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Build with the release profile (with `--target`: the router profile, the binary then
    /// copied to `target/<triple>/release/egress-monitor`).
    #[arg(long)]
    release: bool,

    /// Cross-build, static, for one of aarch64-unknown-linux-musl,
    /// armv7-unknown-linux-musleabihf, mipsel-unknown-linux-musl, mips-unknown-linux-musl,
    /// s390x-unknown-linux-gnu; setup then installs the target's std and linker.
    #[arg(long, value_name = "TRIPLE")]
    target: Option<String>,
}

pub fn run(args: &Args) -> Result<()> {
    let mut phases = Phases::default();
    let result = setup_and_build(args, &mut phases);
    eprintln!("{}", phases.summary());
    result
}

fn setup_and_build(args: &Args, phases: &mut Phases) -> Result<()> {
    // An unknown triple fails before any setup.
    let cross = args.target.as_deref().map(CrossTarget::find).transpose()?;
    let toolchain = phases.run("setup", setup::run)?;
    let bin = match cross {
        None => phases.run("build", || build_agent(&toolchain, args.release))?,
        Some(target) => {
            let env = phases.run("setup (cross)", || setup::cross(&toolchain, target))?;
            phases.run("build", || build_cross(target, &env, args.release))?
        }
    };
    println!("built {}", bin.display());
    Ok(())
}

/// Cross-builds the agent for `target` (see [`crate::cross`]) with the environment
/// [`setup::cross`] returned; returns where the binary is (for a release build, copied from the
/// router profile's directory to `target/<triple>/release/`).
fn build_cross(target: &CrossTarget, env: &[(String, OsString)], release: bool) -> Result<PathBuf> {
    let argv = target.cargo_command();
    let mut cmd = Command::new(&argv[0]);
    cmd.current_dir(workspace_root())
        .args(&argv[1..])
        .args(target.cargo_args(release))
        .envs(target.cargo_env())
        .envs(env.iter().map(|(k, v)| (k, v)));
    let built = executable_of(&mut cmd)?;
    if !release {
        return Ok(built);
    }
    let kept = CrossTarget::release_path(&built)
        .with_context(|| format!("no target directory above {}", built.display()))?;
    let dir = kept.parent().expect("a path built from a directory");
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Replaced, not written over: a copy being run would make writing fail (ETXTBSY).
    if kept.symlink_metadata().is_ok() {
        fs::remove_file(&kept).with_context(|| format!("cannot replace {}", kept.display()))?;
    }
    fs::copy(&built, &kept)
        .with_context(|| format!("cannot copy {} to {}", built.display(), kept.display()))?;
    Ok(kept)
}

/// Builds the agent (`cargo build -p monitor --bins`) and returns the absolute path of its
/// binary, as cargo reports it (so a custom target dir is honoured).
///
/// The eBPF crate is built by the agent's build.rs through aya-build, which runs bpf-linker:
/// hence the toolchain's `PATH`.
pub fn build_agent(toolchain: &Toolchain, release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "monitor", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    cmd.envs(toolchain.env()?);
    executable_of(&mut cmd)
}

/// Runs a cargo build command and returns the agent's executable, as cargo reports it.
fn executable_of(cmd: &mut Command) -> Result<PathBuf> {
    // Diagnostics still go to the terminal (stderr); stdout carries JSON messages, one of which
    // names the executable.
    cmd.arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let shown = display(cmd);
    eprintln!("$ {shown}");
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to start `{shown}`"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut executable = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.with_context(|| format!("cannot read the output of `{shown}`"))?;
        if let Some(path) = agent_executable(&line) {
            executable = Some(path);
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("failed to wait for `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    executable.with_context(|| format!("`{shown}` reported no `{AGENT_BIN}` executable"))
}

/// A `compiler-artifact` line of cargo's `--message-format=json`: what the build and the VM
/// suite read from it.
#[derive(Deserialize)]
pub struct Artifact {
    pub target: ArtifactTarget,
    #[serde(default)]
    pub profile: ArtifactProfile,
    pub executable: Option<PathBuf>,
    pub manifest_path: Option<PathBuf>,
}

#[derive(Deserialize)]
pub struct ArtifactTarget {
    pub name: String,
    #[serde(default)]
    pub kind: Vec<String>,
}

#[derive(Default, Deserialize)]
pub struct ArtifactProfile {
    /// Built with the test harness (`cargo test`).
    #[serde(default)]
    pub test: bool,
}

/// The artifact `line` announces; None for any other line.
pub fn artifact(line: &str) -> Option<Artifact> {
    #[derive(Deserialize)]
    struct Reason {
        reason: String,
    }
    let reason: Reason = serde_json::from_str(line).ok()?;
    if reason.reason != "compiler-artifact" {
        return None;
    }
    serde_json::from_str(line).ok()
}

/// The agent binary's path if `line` is the compiler-artifact message for it.
fn agent_executable(line: &str) -> Option<PathBuf> {
    let artifact = artifact(line)?;
    if artifact.target.name == AGENT_BIN {
        artifact.executable
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_agent_executable_from_cargo_messages() {
        let agent = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["bin"],"name":"egress-monitor"},"filenames":["/w/target/debug/egress-monitor"],"executable":"/w/target/debug/egress-monitor","fresh":true}"#;
        assert_eq!(
            agent_executable(agent),
            Some(PathBuf::from("/w/target/debug/egress-monitor"))
        );
        let lib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"monitor"},"executable":null}"#;
        assert_eq!(agent_executable(lib), None);
        assert_eq!(
            agent_executable(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(agent_executable("not json"), None);
    }
}
