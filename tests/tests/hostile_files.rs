//! Files that are not what a configuration or lease path should be: the agent refuses each at
//! once with an error naming the path and what it is, and never hangs or reads without bound.
//! A FIFO used to hang `--check-config` and the agent; `--config /dev/zero` grew past 1 GiB.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use egress_lab::agent::agent_binary;

/// Runs `egress-monitor --config <path> --check-config`; (exit code, stderr). Killed and failed
/// if it does not end within a few seconds.
fn check_config(path: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(agent_binary())
        .arg("--config")
        .arg(path)
        .arg("--check-config")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "--check-config of {} did not end within 10 s",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("the agent's output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("egress-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

#[test]
fn a_fifo_a_device_a_directory_and_a_huge_file_are_refused_with_their_kind() {
    let dir = scratch("config");
    let fifo = dir.join("config.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let huge = dir.join("huge.toml");
    std::fs::write(&huge, format!("# {}\n", "x".repeat(2 * 1024 * 1024))).unwrap();
    for (path, expect) in [
        (fifo.as_path(), "not a regular file (a FIFO)"),
        (Path::new("/dev/zero"), "not a regular file (a device)"),
        (dir.as_path(), "not a regular file (a directory)"),
        (huge.as_path(), "too large"),
    ] {
        let (code, stderr) = check_config(path);
        assert_ne!(code, Some(0), "{} was accepted", path.display());
        assert!(
            stderr.contains(expect) && stderr.contains(&path.display().to_string()),
            "{}: expected {expect:?} naming the path, got:\n{stderr}",
            path.display()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
