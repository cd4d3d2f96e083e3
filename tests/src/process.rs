//! Processes started in a lab (the agent, dnsmasq, ...), which the lab kills when it is dropped.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A handle on a process the lab tracks.
///
/// Dropping the handle does not stop the process (so `let _ = lab.spawn_in(..)` keeps it
/// running); dropping the [`Lab`](crate::Lab) does. Output that was piped when the process was
/// started is read continuously into a log, so a chatty process never blocks on a full pipe.
#[derive(Clone)]
pub struct LabChild {
    shared: Arc<Shared>,
}

struct Shared {
    /// What was started, for messages.
    description: String,
    pid: u32,
    /// Held only briefly (try_wait, kill), so `Lab::drop` never waits on a caller.
    child: Mutex<Child>,
    /// Piped stdout and stderr, interleaved by line as they arrive.
    log: Mutex<String>,
}

impl LabChild {
    /// Wraps `child`, and starts draining whichever of its stdout and stderr are piped.
    pub(crate) fn new(mut child: Child, description: String) -> LabChild {
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let shared = Arc::new(Shared {
            description,
            pid: child.id(),
            child: Mutex::new(child),
            log: Mutex::new(String::new()),
        });
        if let Some(out) = stdout {
            drain(out, &shared);
        }
        if let Some(err) = stderr {
            drain(err, &shared);
        }
        LabChild { shared }
    }

    /// The process id (the program itself: `ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// Piped stdout and stderr so far.
    pub fn log(&self) -> String {
        lock(&self.shared.log).clone()
    }

    /// Waits until the log contains `needle`; false on timeout or if the process exits first
    /// without printing it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if lock(&self.shared.log).contains(needle) {
                return true;
            }
            if !self.is_running() {
                // Give the drain threads a moment to pass on the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return lock(&self.shared.log).contains(needle);
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running (it has not exited, or been reaped).
    pub fn is_running(&self) -> bool {
        matches!(lock(&self.shared.child).try_wait(), Ok(None))
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        lock(&self.shared.child).try_wait().ok().flatten()
    }

    /// Sends `signal` (e.g. SIGSTOP to stall the process, SIGCONT to resume it) if it still runs.
    pub fn signal(&self, signal: libc::c_int) {
        if self.is_running() {
            // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet, so
            // its pid cannot have been reused.
            unsafe { libc::kill(self.shared.pid as i32, signal) };
        }
    }

    /// Sends SIGTERM and waits up to `grace` for a clean exit, then SIGKILLs; returns how it
    /// ended. Use it to test a graceful shutdown.
    pub fn terminate(&self, grace: Duration) -> ExitStatus {
        if self.is_running() {
            // SAFETY: kill has no memory-safety preconditions. The child is not reaped yet
            // (is_running), so its pid cannot have been reused.
            unsafe { libc::kill(self.shared.pid as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill()
    }

    /// SIGKILLs the process (if still running) and reaps it.
    pub fn kill(&self) -> ExitStatus {
        let mut child = lock(&self.shared.child);
        // std skips the signal when the child was already reaped, so no stray pid is hit.
        let _ = child.kill();
        child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for `{}`: {e}", self.shared.description))
    }
}

impl LabChild {
    /// [`LabChild::kill`] for `Drop`: never panics, only reports.
    pub(crate) fn kill_quietly(&self) {
        let mut child = lock(&self.shared.child);
        let _ = child.kill();
        if let Err(e) = child.wait() {
            eprintln!("egress-lab: waiting for `{}`: {e}", self.shared.description);
        }
    }
}

impl std::fmt::Debug for LabChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabChild")
            .field("pid", &self.shared.pid)
            .field("command", &self.shared.description)
            .finish()
    }
}

/// Appends lines from `pipe` to the shared log until the process closes it.
fn drain(pipe: impl Read + Send + 'static, shared: &Arc<Shared>) {
    let shared = Arc::clone(shared);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            lock(&shared.log).push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
    });
}

/// Locks `m`, ignoring poisoning: a panic elsewhere must not stop the cleanup in `Lab::drop`.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
