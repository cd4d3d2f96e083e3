//! The marker lines the guest prints on its serial console, the only channel out of it (it has
//! no network device, and its root is read-only to the host).
//!
//! Each run gets a fresh nonce in its markers, so that no test output (which may well print
//! text about VMs) and no leftover of another run can pass for the guest's exit status.

use std::time::{SystemTime, UNIX_EPOCH};

/// What a marker line says.
#[derive(Debug, PartialEq, Eq)]
pub enum Marker {
    /// The guest's root is up; the payload starts. The boot time ends here.
    Ready,
    /// A test binary (suite step) starts.
    StepBegin(String),
    /// A test binary ended with this exit status.
    StepEnd(String, i32),
    /// The payload ended with this exit status; the guest powers off next.
    Exit(i32),
}

/// The markers of one run.
#[derive(Debug, Clone)]
pub struct Markers {
    nonce: String,
}

const PREFIX: &str = "EGRESS-VM-";

impl Markers {
    /// Markers with a nonce made of the time and the pid: unique enough for a console.
    pub fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
        Self::with_nonce(&format!(
            "{:08x}",
            nanos ^ std::process::id().rotate_left(16)
        ))
    }

    pub fn with_nonce(nonce: &str) -> Self {
        Self {
            nonce: nonce.to_owned(),
        }
    }

    /// This run's nonce (also names its scratch directory).
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// Shell text for the line that says the guest is ready.
    pub fn ready(&self) -> String {
        format!("{PREFIX}READY {}", self.nonce)
    }

    /// Shell text (for `echo`) of the exit line; `status` is a shell word such as `$st`.
    pub fn exit(&self, status: &str) -> String {
        format!("{PREFIX}EXIT {} {status}", self.nonce)
    }

    pub fn step_begin(&self, name: &str) -> String {
        format!("{PREFIX}STEP {} begin {name}", self.nonce)
    }

    pub fn step_end(&self, name: &str, status: &str) -> String {
        format!("{PREFIX}STEP {} end {name} {status}", self.nonce)
    }

    /// The marker on a console line, if it carries one of this run. Kernel messages may
    /// precede it on the same line, so it is looked for anywhere in the line.
    pub fn parse(&self, line: &str) -> Option<Marker> {
        let start = line.find(PREFIX)?;
        let mut words = line[start + PREFIX.len()..].split_whitespace();
        let kind = words.next()?;
        if words.next()? != self.nonce {
            return None;
        }
        let status = |word: Option<&str>| word?.parse::<i32>().ok();
        match kind {
            "READY" => Some(Marker::Ready),
            "EXIT" => Some(Marker::Exit(status(words.next())?)),
            "STEP" => match words.next()? {
                "begin" => Some(Marker::StepBegin(words.next()?.to_owned())),
                "end" => {
                    let name = words.next()?.to_owned();
                    Some(Marker::StepEnd(name, status(words.next())?))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_need_this_runs_nonce() {
        let m = Markers::with_nonce("0badcafe");
        assert_eq!(m.parse(&m.ready()), Some(Marker::Ready));
        assert_eq!(m.parse(&m.exit("0")), Some(Marker::Exit(0)));
        assert_eq!(
            m.parse(&format!("[   12.5] oops {}\r", m.exit("101"))),
            Some(Marker::Exit(101))
        );
        assert_eq!(
            m.parse(&m.step_begin("agent_lab")),
            Some(Marker::StepBegin("agent_lab".into()))
        );
        assert_eq!(
            m.parse(&m.step_end("agent_lab", "101")),
            Some(Marker::StepEnd("agent_lab".into(), 101))
        );
        let other = Markers::with_nonce("12345678");
        assert_eq!(other.parse(&m.exit("0")), None);
        assert_eq!(m.parse("EGRESS-VM-EXIT 0"), None);
        assert_eq!(m.parse(&m.exit("$st")), None);
        assert_eq!(m.parse("test a ... ok"), None);
    }

    #[test]
    fn fresh_markers_differ() {
        let a = Markers::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = Markers::new();
        assert_ne!(a.ready(), b.ready());
    }
}
