//! `cargo xtask build`: builds the agent, eBPF programs included.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::Stdio,
};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use crate::{
    cmd::{Phases, cargo, display},
    setup::{self, Toolchain},
};

/// The agent's binary target in the `monitor` package.
pub const AGENT_BIN: &str = "egress-monitor";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Build with the release profile.
    #[arg(long)]
    release: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let mut phases = Phases::default();
    let result = setup_and_build(args, &mut phases);
    eprintln!("{}", phases.summary());
    result
}

fn setup_and_build(args: &Args, phases: &mut Phases) -> Result<()> {
    let toolchain = phases.run("setup", setup::run)?;
    let bin = phases.run("build", || build_agent(&toolchain, args.release))?;
    println!("built {}", bin.display());
    Ok(())
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
    // Diagnostics still go to the terminal (stderr); stdout carries JSON messages, one of which
    // names the executable.
    cmd.arg("--message-format=json-render-diagnostics")
        .envs(toolchain.env()?)
        .stdout(Stdio::piped());
    let shown = display(&cmd);
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
