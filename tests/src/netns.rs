//! Network namespaces: unique names, creation and removal, and running code or commands inside one.
//!
//! Everything goes through iproute2 (`ip netns ...`), so a namespace made here is visible to
//! `ip netns list` and can be inspected by hand while a test is paused.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

/// Every namespace a lab creates starts with this, followed by the pid of the process that
/// owns it, so that [`cleanup_stale`] can tell a dead run's leftovers from a live one's.
pub const PREFIX: &str = "egl-";

/// Where iproute2 keeps the bind mounts that name namespaces.
const NETNS_DIR: &str = "/var/run/netns";

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// A name prefix no other lab uses, now or in another process: `egl-{pid}-{n}`.
///
/// The pid makes names unique across processes (tests run in several binaries at once), the
/// counter makes them unique within one (tests run on several threads).
pub(crate) fn unique_lab_id() -> String {
    let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}", std::process::id())
}

/// Panics with a clear message unless we are root; `what` says what needed it (e.g.
/// "creating network namespaces").
///
/// A test that cannot do its job must fail loudly rather than pass having checked nothing.
#[track_caller]
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "{what} needs root (euid is {euid}); \
         run the tests as root, e.g. `sudo -E cargo test -p egress-lab`"
    );
}

/// Runs `f` on a fresh thread that has entered namespace `ns`, and returns its result.
///
/// Only the network namespace changes, and only for that thread, so the caller is unaffected.
/// A socket keeps the namespace it was created in: create sockets with `run_in` and use them
/// from any thread afterwards. A panic in `f` is propagated to the caller.
pub fn run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = netns_path(ns);
    let file = File::open(&path)
        .unwrap_or_else(|e| panic!("cannot open namespace {}: {e}", path.display()));
    let joined = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns only reads the descriptor, which `file` keeps open until after
                // the call; it changes this (fresh, scoped) thread's network namespace only.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert!(
                    rc == 0,
                    "setns into {ns} failed: {}",
                    std::io::Error::last_os_error()
                );
                drop(file);
                f()
            })
            .join()
    });
    joined.unwrap_or_else(|payload| std::panic::resume_unwind(payload))
}

/// Writes a sysctl of namespace `ns`, e.g. `("net/ipv4/ip_forward", "1")`.
pub fn sysctl(ns: &str, key: &str, value: &str) {
    sysctls(ns, &[(key.to_owned(), value.to_owned())]);
}

/// Writes sysctls of namespace `ns`, in order, as `(key, value)` with keys relative to
/// `/proc/sys`.
///
/// `/proc/sys/net` shows the namespace of the thread that opens it, so this goes through
/// [`run_in`] (once for all keys) instead of forking `sysctl`.
pub fn sysctls(ns: &str, settings: &[(String, String)]) {
    run_in(ns, || {
        for (key, value) in settings {
            let path = Path::new("/proc/sys").join(key);
            let mut file = File::options()
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("sysctl {key} in {ns}: cannot open: {e}"));
            file.write_all(value.as_bytes())
                .unwrap_or_else(|e| panic!("sysctl {key}={value} in {ns}: {e}"));
        }
    });
}

/// A `Command` that runs `program` inside `ns` (`ip netns exec ns program`).
///
/// Set its arguments and stdio as usual. Use it for anything beyond [`exec`] and [`spawn`].
pub fn command(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

/// Runs `program args` inside `ns` to completion and returns its output, whatever its exit status.
///
/// Panics only if the command cannot be started at all.
pub fn exec<S: AsRef<OsStr>>(ns: &str, program: &str, args: &[S]) -> Output {
    let mut cmd = command(ns, program);
    cmd.args(args).stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&cmd)))
}

/// Runs `program args` inside `ns` and returns its stdout; panics with the command line and its
/// stderr if it fails. Meant for setup steps, where a failure makes the rest meaningless.
pub fn exec_ok<S: AsRef<OsStr>>(ns: &str, program: &str, args: &[S]) -> String {
    let mut cmd = command(ns, program);
    cmd.args(args);
    run_ok(&mut cmd, None)
}

/// Like [`exec_ok`], with `stdin` fed to the command (e.g. `nft -f -` and a ruleset).
pub fn exec_ok_stdin<S: AsRef<OsStr>>(ns: &str, program: &str, args: &[S], stdin: &str) -> String {
    let mut cmd = command(ns, program);
    cmd.args(args);
    run_ok(&mut cmd, Some(stdin))
}

/// Starts `program args` inside `ns` and returns the child; stdio is inherited.
///
/// `ip netns exec` execs the program in place, so the child's pid is the program's own and
/// signals reach it directly. The caller owns the child; see `Lab::spawn_in` for one that the
/// lab kills when it is dropped.
pub fn spawn<S: AsRef<OsStr>>(ns: &str, program: &str, args: &[S]) -> Child {
    let mut cmd = command(ns, program);
    cmd.args(args).stdin(Stdio::null());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&cmd)))
}

/// Runs `script`, one `ip` command per line without the leading `ip`, in namespace `ns` with a
/// single `ip -batch` process (each `ip` process costs milliseconds). Panics with ip's error,
/// which names the failing line, and the numbered script.
pub fn ip_batch(ns: &str, script: &str) {
    let mut cmd = Command::new("ip");
    cmd.args(["-n", ns, "-batch", "-"]);
    if let Err(message) = try_run(&mut cmd, Some(script)) {
        let numbered: Vec<String> = script
            .lines()
            .enumerate()
            .map(|(i, line)| format!("{:3}: {line}", i + 1))
            .collect();
        panic!("{message}\nscript:\n{}", numbered.join("\n"));
    }
}

/// Runs `cmd`, panicking with its command line, status and stderr unless it succeeds.
fn run_ok(cmd: &mut Command, stdin: Option<&str>) -> String {
    try_run(cmd, stdin).unwrap_or_else(|message| panic!("{message}"))
}

/// Runs `cmd` (feeding it `stdin`); its stdout, or a message with the command line, exit status
/// and stderr.
fn try_run(cmd: &mut Command, stdin: Option<&str>) -> Result<String, String> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(cmd)))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // A failed write shows up as the command's own error below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`{}`: {e}", describe(cmd)))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The command line of `cmd`, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn netns_path(ns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(ns)
}

/// Creates the namespaces `names` with one `ip` process; panics if one exists already or cannot
/// be made (those made before it remain, for the caller to remove).
pub(crate) fn create(names: &[String]) {
    let script: String = names.iter().map(|ns| format!("netns add {ns}\n")).collect();
    run_ok(Command::new("ip").args(["-batch", "-"]), Some(&script));
}

/// Kills every process in the namespaces `names` and removes them; best effort, never panics
/// (it runs in `Drop`).
///
/// Removing the name drops the last reference iproute2 holds; the kernel then destroys the
/// namespace, and with it its veth pairs, once no process or socket uses it any more.
pub(crate) fn destroy(names: &[String]) {
    if names.is_empty() {
        return;
    }
    kill_all_in(names);
    let script: String = names
        .iter()
        .map(|ns| format!("netns delete {ns}\n"))
        .collect();
    // -force: go on after a failure, so that one missing namespace does not keep the rest.
    if let Err(message) = try_run(
        Command::new("ip").args(["-force", "-batch", "-"]),
        Some(&script),
    ) {
        eprintln!("egress-lab: removing namespaces: {message}");
    }
}

/// SIGKILLs every process whose network namespace is one of `names` (as `ip netns pids` finds
/// them, but with one pass over /proc), except this process. Catches whatever was started there
/// without being tracked, including children of tracked processes.
fn kill_all_in(names: &[String]) {
    let inodes: Vec<(u64, u64)> = names
        .iter()
        .filter_map(|ns| std::fs::metadata(netns_path(ns)).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for entry in proc.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(net) = std::fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if inodes.contains(&(net.dev(), net.ino())) {
            // SAFETY: kill has no memory-safety preconditions; a pid that has just exited
            // makes it fail with ESRCH.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Sysctls that make a namespace quiet and immediate:
/// * no duplicate address detection: addresses, link-local ones included, are usable at once
///   instead of after a second or so of "tentative";
/// * no router solicitations: there is no router advertiser, they would only be noise;
/// * MLD and IGMP reports, which every interface sends (twice) when it comes up, repeated after
///   10 ms instead of up to a second, so they are over when `Lab::build` returns;
/// * unprivileged ICMP sockets allowed, for [`crate::ping`].
///
/// Set on `all` and `default` before any interface exists, so every interface created in the
/// namespace inherits them.
pub(crate) fn quiet_settings() -> Vec<(String, String)> {
    let mut settings = Vec::new();
    for conf in ["all", "default"] {
        for (key, value) in [
            ("accept_dad", "0"),
            ("router_solicitations", "0"),
            ("mldv1_unsolicited_report_interval", "10"),
            ("mldv2_unsolicited_report_interval", "10"),
        ] {
            settings.push((format!("net/ipv6/conf/{conf}/{key}"), value.to_owned()));
        }
        for (key, value) in [
            ("igmpv2_unsolicited_report_interval", "10"),
            ("igmpv3_unsolicited_report_interval", "10"),
        ] {
            settings.push((format!("net/ipv4/conf/{conf}/{key}"), value.to_owned()));
        }
    }
    settings.push(("net/ipv4/ping_group_range".into(), "0 2147483647".into()));
    settings
}

/// Bare namespaces for a test that needs a few linked namespaces rather than a whole
/// [`crate::Lab`]: created empty (only `lo`, down) with [`quiet_settings`], and removed on drop,
/// with whatever runs in them, also when the test panics.
///
/// Their names are `egl-{pid}-{n}-{name}`, so that [`cleanup_stale`] also finds them.
#[derive(Debug)]
pub struct Namespaces {
    /// `egl-{pid}-{n}`, the prefix of the names.
    id: String,
    names: Vec<String>,
}

impl Namespaces {
    /// Creates one namespace per entry of `names` (short words such as "a", "b"); panics, after
    /// removing those it made, if one cannot be made, or if not root.
    #[track_caller]
    pub fn new(names: &[&str]) -> Namespaces {
        require_root("creating network namespaces");
        cleanup_stale_once();
        let id = unique_lab_id();
        // Made before the namespaces exist: if creation fails halfway, `Drop` removes those that
        // were made (and only complains about the others).
        let namespaces = Namespaces {
            names: names.iter().map(|name| format!("{id}-{name}")).collect(),
            id,
        };
        create(&namespaces.names);
        for ns in &namespaces.names {
            sysctls(ns, &quiet_settings());
        }
        namespaces
    }

    /// The full name of the namespace created as `name`; panics if there is none.
    pub fn name(&self, name: &str) -> &str {
        let full = format!("{}-{name}", self.id);
        self.names
            .iter()
            .find(|n| **n == full)
            .unwrap_or_else(|| panic!("no namespace {name:?} among {:?}", self.names))
    }
}

impl Drop for Namespaces {
    /// Never panics: it also runs while a failed test unwinds.
    fn drop(&mut self) {
        destroy(&self.names);
    }
}

/// The names of all namespaces `ip netns list` shows.
pub fn list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run `ip netns list`");
    parse_netns_list(&String::from_utf8_lossy(&out.stdout))
}

/// `ip netns list` prints `name` or `name (id: N)` per line.
fn parse_netns_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The pid embedded in a lab namespace name (`egl-{pid}-...`), if `name` is one.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Deletes lab namespaces (and lab directories) left behind by processes that no longer exist (a
/// test run killed with SIGKILL, say), and returns the namespaces' names. Best effort: failures are printed, not raised.
///
/// Namespaces of live processes, including other test binaries running right now, are left
/// alone. A pid that has since been reused by an unrelated process keeps its leftovers until
/// that process ends.
pub fn cleanup_stale() -> Vec<String> {
    remove_stale(false)
}

/// Removes namespaces whose owner is dead, and with `own_too` those named with our own pid:
/// before this process has made any, those are a dead process's whose pid we now have (common
/// in containers, where runs get the same pids), and would make our names clash.
///
/// The lab directories in `$TMPDIR` of the same owners go too (see [`crate::scratch`]).
fn remove_stale(own_too: bool) -> Vec<String> {
    let me = std::process::id();
    let is_stale =
        |pid: u32| (own_too && pid == me) || !Path::new(&format!("/proc/{pid}")).exists();
    let stale: Vec<String> = list()
        .into_iter()
        .filter(|name| owner_pid(name).is_some_and(is_stale))
        .collect();
    destroy(&stale);
    let dirs = crate::scratch::remove_stale(is_stale);
    if !dirs.is_empty() {
        eprintln!("egress-lab: removed stale lab directories {dirs:?}");
    }
    stale
}

/// Removes stale namespaces once per process, before its first lab is made.
pub(crate) fn cleanup_stale_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let removed = remove_stale(true);
        if !removed.is_empty() {
            eprintln!("egress-lab: removed stale namespaces {removed:?}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_netns_list() {
        let text = "egl-12-0-router (id: 3)\negl-12-0-wan\n\nother (id: 0)\n";
        assert_eq!(
            parse_netns_list(text),
            ["egl-12-0-router", "egl-12-0-wan", "other"]
        );
    }

    #[test]
    fn finds_owner_pid() {
        assert_eq!(owner_pid("egl-4242-7-dev-phone"), Some(4242));
        assert_eq!(owner_pid("egl-x-7-router"), None);
        assert_eq!(owner_pid("other-4242"), None);
    }

    #[test]
    fn lab_ids_are_unique_and_carry_the_pid() {
        let a = unique_lab_id();
        let b = unique_lab_id();
        assert_ne!(a, b);
        assert_eq!(owner_pid(&a), Some(std::process::id()));
    }
}
