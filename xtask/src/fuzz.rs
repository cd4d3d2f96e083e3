//! `cargo xtask fuzz`: the fuzz targets of `fuzz/` (cargo-fuzz, libFuzzer), each run for a
//! bounded time. `cargo xtask test` runs it too, shorter (unless `--no-fuzz`).
//!
//! Each target starts from its seeds (`fuzz/corpus/<target>/`, committed) and a scratch corpus
//! kept under `target/fuzz/corpus/<target>/` (not committed, so later runs go on from what
//! earlier ones found). An input that panics, runs longer than [`TIMEOUT_SECS`] or takes more
//! than [`RSS_LIMIT_MB`] is written to `fuzz/artifacts/<target>/` and fails the run, naming
//! the file; libFuzzer's output goes to `target/fuzz/logs/<target>.log`.
//!
//! The instrumented build (every dependency of the agent's library, with sanitizer coverage)
//! takes minutes on two cores, so its target directory lives in the cache,
//! `~/.cache/egress-monitor/fuzz-target/`, where CI's fresh clones find the dependencies built.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{self, workspace_root},
    setup::{self, Toolchain},
};

/// The cargo-fuzz that `cargo xtask` installs (with `--locked`) when none is there.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every target in `fuzz/Cargo.toml`, cheapest to reach deep first.
pub const TARGETS: &[&str] = &[
    "dns",
    "tls_client_hello",
    "dhcp",
    "leases",
    "records",
    "config",
    "control_protocol",
    "web_config",
];

/// Seconds one input may take before it counts as a hang. Generous, for a loaded CI machine:
/// every parser here takes microseconds on inputs of a few kilobytes.
pub const TIMEOUT_SECS: u32 = 10;

/// Memory the fuzzing process may use before the input counts as a memory blow-up (ASan and
/// libFuzzer's own corpus included), and the largest single allocation.
pub const RSS_LIMIT_MB: u32 = 1024;
pub const MALLOC_LIMIT_MB: u32 = 256;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 20)]
    seconds: u32,

    /// Run only this target (may be repeated); every target by default.
    #[arg(long = "target", value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    targets: Vec<String>,
}

pub fn run(args: &Args) -> Result<()> {
    let toolchain = setup::run()?;
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    run_targets(&toolchain, &targets, args.seconds)
}

/// Builds the fuzz targets and runs each of `targets` for `seconds`; fails naming each target
/// that failed and the input that made it fail.
pub fn run_targets(toolchain: &Toolchain, targets: &[&str], seconds: u32) -> Result<()> {
    ensure_cargo_fuzz()?;
    let start = Instant::now();
    let mut build = cargo_fuzz(toolchain, "build")?;
    if let [one] = targets {
        build.arg(one);
    }
    cmd::run(&mut build).context("cannot build the fuzz targets")?;
    println!("fuzz: built in {:.1}s", start.elapsed().as_secs_f64());

    let mut failures = Vec::new();
    for target in targets {
        match run_target(toolchain, target, seconds)? {
            Outcome::Passed(summary) => println!("fuzz: {target}: {summary}"),
            Outcome::Failed(why) => {
                eprintln!("fuzz: {target}: FAILED: {why}");
                failures.push(format!("{target}: {why}"));
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} fuzz target(s) failed (reproduce with `cargo +nightly fuzz run TARGET FILE` in \
             fuzz/):\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

enum Outcome {
    /// How many inputs ran, how fast, and the corpus it ended with.
    Passed(String),
    /// What went wrong, with the crash file when libFuzzer wrote one.
    Failed(String),
}

fn run_target(toolchain: &Toolchain, target: &str, seconds: u32) -> Result<Outcome> {
    let fuzz_dir = workspace_root().join("fuzz");
    let work = workspace_root().join("target/fuzz");
    let scratch = work.join("corpus").join(target);
    let seeds = fuzz_dir.join("corpus").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let logs = work.join("logs");
    for dir in [&scratch, &artifacts, &logs] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log =
        File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;

    let mut run = cargo_fuzz(toolchain, "run")?;
    run.arg(target)
        // New inputs go to the first directory; the seeds are only read.
        .arg(&scratch)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={TIMEOUT_SECS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    println!(
        "fuzz: {target} for {seconds}s ({})",
        Path::new("target/fuzz/logs")
            .join(format!("{target}.log"))
            .display()
    );
    let shown = cmd::display(&run);
    let status = run
        .status()
        .with_context(|| format!("failed to start `{shown}`"))?;
    let output = fs::read_to_string(&log_path)
        .with_context(|| format!("cannot read {}", log_path.display()))?;
    let stats = Stats::parse(&output);
    if status.success() {
        return Ok(Outcome::Passed(stats.summary()));
    }
    // What libFuzzer said went wrong, for the log of whoever runs this.
    let tail: Vec<&str> = output.lines().rev().take(40).collect();
    eprintln!("--- last lines of {} ---", log_path.display());
    for line in tail.iter().rev() {
        eprintln!("{line}");
    }
    eprintln!("---");
    let why = match (&stats.reason, &stats.artifact) {
        (Some(reason), Some(file)) => format!("{reason}; input: {}", file.display()),
        (None, Some(file)) => format!("input: {}", file.display()),
        (Some(reason), None) => format!("{reason} ({status})"),
        (None, None) => format!("`{shown}` failed ({status}); see {}", log_path.display()),
    };
    Ok(Outcome::Failed(why))
}

/// What a libFuzzer run printed that matters here.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    /// `stat::number_of_executed_units`.
    runs: Option<u64>,
    /// `stat::average_exec_per_sec`.
    exec_per_sec: Option<u64>,
    /// The `cov:` and `corp:` of the last status line, e.g. `cov: 1234 ft: 2345 corp: 56/1234b`.
    coverage: Option<String>,
    /// `==N== ERROR: libFuzzer: timeout after 10 seconds`, or a panic's message.
    reason: Option<String>,
    /// The file from `Test unit written to FILE`.
    artifact: Option<PathBuf>,
}

impl Stats {
    fn parse(output: &str) -> Stats {
        let mut stats = Stats::default();
        let mut lines = output.lines();
        while let Some(line) = lines.next() {
            let line = line.trim();
            if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
                stats.runs = n.trim().parse().ok();
            } else if let Some(n) = line.strip_prefix("stat::average_exec_per_sec:") {
                stats.exec_per_sec = n.trim().parse().ok();
            } else if let Some(file) = line
                .split_once("Test unit written to ")
                .map(|(_, file)| file.trim())
            {
                stats.artifact = Some(PathBuf::from(file));
            } else if let Some((_, error)) = line.split_once("ERROR: libFuzzer: ") {
                stats.reason.get_or_insert_with(|| error.trim().to_owned());
            } else if line.starts_with("thread '") && line.contains("panicked at") {
                // The message is on the next line.
                let message = lines.next().unwrap_or_default().trim();
                stats.reason = Some(format!("{line} {message}"));
            } else if line.starts_with('#')
                && let Some(at) = line.find("cov: ")
            {
                let rest = &line[at..];
                let end = rest.find(" exec/s").unwrap_or(rest.len());
                stats.coverage = Some(rest[..end].to_owned());
            }
        }
        stats
    }

    /// `1234567 runs, 82304 exec/s, cov: 1234 ft: 2345 corp: 56/1234b`.
    fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(runs) = self.runs {
            parts.push(format!("{runs} runs"));
        }
        if let Some(rate) = self.exec_per_sec {
            parts.push(format!("{rate} exec/s"));
        }
        if let Some(coverage) = &self.coverage {
            parts.push(coverage.clone());
        }
        if parts.is_empty() {
            "ok".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// `cargo fuzz` with the nightly toolchain (libFuzzer needs `-Z sanitizer`), from `fuzz/`'s
/// parent, with bpf-linker on `PATH`: the targets link the agent's library, whose build script
/// builds the eBPF programs.
fn cargo_fuzz(toolchain: &Toolchain, subcommand: &str) -> Result<Command> {
    let target_dir = setup::cache_home()?.join("egress-monitor/fuzz-target");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(workspace_root())
        .args(["run", "nightly", "cargo", "fuzz", subcommand])
        // No AddressSanitizer: the code under test is safe Rust, whose bounds checks catch
        // what ASan would, and without it the build (every crate of the agent, instrumented)
        // and each run are much faster, which a bounded CI run needs.
        .args(["--sanitizer", "none"])
        .arg("--target-dir")
        .arg(target_dir)
        // `cargo xtask` runs under the stable cargo, which sets these; the nightly's own
        // cargo and rustc must be the ones cargo-fuzz and the build scripts find.
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .envs(toolchain.env()?);
    Ok(cmd)
}

/// Installs cargo-fuzz (into `~/.cargo/bin`, once) unless `cargo fuzz` already runs.
fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .env_remove("CARGO")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    if let Some(version) = installed {
        println!("fuzz: {version}");
        return Ok(());
    }
    println!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} (a minute or two, once)");
    cmd::run(cmd::cargo().args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
    .context("cannot install cargo-fuzz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let output = "\
INFO: Seed: 1234
#2\tINITED cov: 310 ft: 311 corp: 1/1b exec/s: 0 rss: 40Mb
#1048576\tpulse  cov: 912 ft: 2740 corp: 201/9876b lim: 4096 exec/s: 104857 rss: 310Mb
Done 2200001 runs in 21 second(s)
stat::number_of_executed_units: 2200001
stat::average_exec_per_sec:     104761
stat::new_units_added:          250
";
        let stats = Stats::parse(output);
        assert_eq!(stats.runs, Some(2_200_001));
        assert_eq!(stats.exec_per_sec, Some(104_761));
        assert_eq!(
            stats.summary(),
            "2200001 runs, 104761 exec/s, cov: 912 ft: 2740 corp: 201/9876b lim: 4096"
        );
        assert_eq!(stats.reason, None);
        assert_eq!(stats.artifact, None);
    }

    #[test]
    fn finds_the_crash_and_its_reason() {
        let output = "\
thread '<unnamed>' panicked at monitor/src/parsers/dns.rs:10:5:
index out of bounds: the len is 3 but the index is 7
==4242== ERROR: libFuzzer: deadly signal
MS: 1 ChangeByte-; base unit: 0000
artifact_prefix='/w/fuzz/artifacts/dns/'; Test unit written to /w/fuzz/artifacts/dns/crash-0123abcd
";
        let stats = Stats::parse(output);
        assert_eq!(
            stats.reason.as_deref(),
            Some(
                "thread '<unnamed>' panicked at monitor/src/parsers/dns.rs:10:5: \
                 index out of bounds: the len is 3 but the index is 7"
            )
        );
        assert_eq!(
            stats.artifact,
            Some(PathBuf::from("/w/fuzz/artifacts/dns/crash-0123abcd"))
        );

        let timeout = "==7== ERROR: libFuzzer: timeout after 10 seconds\n\
                       artifact_prefix='a/'; Test unit written to a/timeout-99\n";
        let stats = Stats::parse(timeout);
        assert_eq!(stats.reason.as_deref(), Some("timeout after 10 seconds"));
        assert_eq!(stats.artifact, Some(PathBuf::from("a/timeout-99")));
    }

    #[test]
    fn every_target_has_seeds_and_a_source() {
        let fuzz = workspace_root().join("fuzz");
        let manifest = fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
        for target in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{target}\"")),
                "{target} is not in fuzz/Cargo.toml"
            );
            assert!(fuzz.join(format!("fuzz_targets/{target}.rs")).is_file());
            let seeds = fs::read_dir(fuzz.join("corpus").join(target))
                .unwrap()
                .count();
            assert!(seeds > 0, "no seeds for {target}");
        }
        let declared = manifest.matches("[[bin]]").count();
        assert_eq!(
            declared,
            TARGETS.len(),
            "a target of fuzz/Cargo.toml is not in TARGETS"
        );
    }
}
