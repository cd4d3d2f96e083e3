//! `egress-monitor baseline show|accept|forget`: look at and change what a device learned.
//!
//! The running agent owns the state: the command sends its request over the agent's control
//! socket (`control.sock` in the state directory, owner-only), and the agent applies it and
//! rewrites the state file at once. When no agent runs (nobody holds the directory's lock),
//! the command edits the file itself, under the same lock.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, SystemTime},
};

use super::{
    lock::try_lock,
    protocol::{CONTROL_SOCKET, Request, Response},
};
use crate::{
    config::Config,
    persist::state_file::{self as store, DeviceRecord, format_time},
    policy::{DeviceStatus, Policy, Rule},
    types::MacAddr,
};

/// Finds a device by MAC address or by name among `(mac, name)` candidates.
pub fn resolve_device(
    query: &str,
    candidates: impl IntoIterator<Item = (MacAddr, Option<String>)>,
) -> Result<MacAddr, String> {
    if let Ok(mac) = query.parse::<MacAddr>() {
        return Ok(mac);
    }
    let mut found: Vec<MacAddr> = candidates
        .into_iter()
        .filter(|(_, name)| name.as_deref() == Some(query))
        .map(|(mac, _)| mac)
        .collect();
    found.sort_unstable();
    found.dedup();
    match found.as_slice() {
        [mac] => Ok(*mac),
        [] => Err(format!(
            "no device is named {query:?}; give its MAC address, or see /api/devices"
        )),
        many => Err(format!(
            "{} devices are named {query:?} ({}); give a MAC address",
            many.len(),
            many.iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Carries out a request on the policy; `candidates` names the devices. Returns the text to
/// print, and whether the state changed.
pub fn execute(
    policy: &mut Policy,
    request: &Request,
    candidates: Vec<(MacAddr, Option<String>)>,
    group: &dyn Fn(MacAddr) -> Option<String>,
) -> Result<(String, bool), String> {
    let name_of = |mac: MacAddr| {
        candidates
            .iter()
            .find(|(m, n)| *m == mac && n.is_some())
            .and_then(|(_, n)| n.clone())
    };
    match request {
        Request::Show { device } => {
            let mac = resolve_device(device, candidates.clone())?;
            let status = policy.status(mac, group(mac).as_deref());
            Ok((
                show(
                    mac,
                    name_of(mac),
                    &status,
                    policy.record(mac),
                    SystemTime::now(),
                ),
                false,
            ))
        }
        Request::Accept {
            device,
            destination,
        } => {
            let mac = resolve_device(device, candidates.clone())?;
            let rule: Rule = destination.parse()?;
            let who = display(mac, name_of(mac));
            Ok(if policy.accept(mac, rule.clone()) {
                (
                    format!("accepted {rule} into the baseline of {who}\n"),
                    true,
                )
            } else {
                (
                    format!("{rule} was already in the baseline of {who}\n"),
                    false,
                )
            })
        }
        Request::Forget { device } => {
            let mac = resolve_device(device, candidates.clone())?;
            let who = display(mac, name_of(mac));
            Ok(if policy.forget(mac) {
                (
                    format!(
                        "forgot {who}: its baseline and first-seen times are gone; it learns again \
                         from its next traffic if its policy learns\n"
                    ),
                    true,
                )
            } else {
                (format!("nothing was known about {who}\n"), false)
            })
        }
    }
}

fn display(mac: MacAddr, name: Option<String>) -> String {
    match name {
        Some(name) if name != mac.to_string() => format!("{name} ({mac})"),
        _ => mac.to_string(),
    }
}

/// The text of `baseline show`.
pub fn show(
    mac: MacAddr,
    name: Option<String>,
    status: &DeviceStatus,
    record: Option<&DeviceRecord>,
    now: SystemTime,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "device:   {}", display(mac, name));
    let _ = writeln!(out, "policy:   {}", status.policy);
    let learning = match status.learning {
        None => "not configured".to_owned(),
        Some(learning) => match (learning.since, learning.until()) {
            (Some(since), Some(until)) if now < until => format!(
                "since {}, until {} ({} left)",
                format_time(since),
                format_time(until),
                humantime::format_duration(Duration::from_secs(
                    until.duration_since(now).unwrap_or_default().as_secs()
                ))
            ),
            (Some(since), Some(until)) => format!(
                "done (from {} to {})",
                format_time(since),
                format_time(until)
            ),
            _ => format!(
                "for {}, from the device's next traffic",
                humantime::format_duration(learning.period)
            ),
        },
    };
    let _ = writeln!(out, "learning: {learning}");
    let empty = DeviceRecord::default();
    let record = record.unwrap_or(&empty);
    let _ = writeln!(out, "baseline: {} entries", record.baseline.len());
    for rule in &record.baseline {
        let _ = writeln!(out, "  {rule}");
    }
    let _ = writeln!(out, "seen:     {} destinations", record.seen.len());
    let width = record
        .seen
        .keys()
        .map(|l| l.to_string().len())
        .max()
        .unwrap_or(0);
    for (label, seen) in &record.seen {
        let _ = writeln!(
            out,
            "  {:width$}  first {}  last {}",
            label.to_string(),
            format_time(seen.first),
            format_time(seen.last)
        );
    }
    out
}

/// Runs a command: through the agent when it runs, else on the file.
pub fn run(config: &Config, request: &Request) -> Result<String, String> {
    let dir = &config.state_dir;
    let lock = try_lock(dir)
        .map_err(|e| format!("cannot open the state directory {}: {e}", dir.display()))?;
    match lock {
        None => ask_agent(dir, request),
        Some(_held) => offline(config, request),
    }
}

/// Sends the request to the running agent.
fn ask_agent(dir: &Path, request: &Request) -> Result<String, String> {
    let path = dir.join(CONTROL_SOCKET);
    let io_error = |e: io::Error| {
        format!(
            "an agent holds {} but its control socket {} does not answer: {e}",
            dir.display(),
            path.display()
        )
    };
    let mut stream = UnixStream::connect(&path).map_err(io_error)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io_error)?;
    let mut line = serde_json::to_string(request).expect("a request serializes");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io_error)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(io_error)?;
    let response: Response = serde_json::from_str(&answer)
        .map_err(|e| format!("the agent's answer is not understood: {e}"))?;
    if response.ok {
        Ok(response.text)
    } else {
        Err(response.text)
    }
}

/// Edits the state file directly; the caller holds the lock.
fn offline(config: &Config, request: &Request) -> Result<String, String> {
    let dir = &config.state_dir;
    let records = store::load(dir).map_err(|e| e.to_string())?;
    let candidates = offline_candidates(config, &records);
    let mut policy = Policy::new(config.policy.clone(), records);
    let group = |mac: MacAddr| config.devices.get(&mac).and_then(|d| d.group.clone());
    let (text, changed) = execute(&mut policy, request, candidates, &group)?;
    if changed {
        let text = store::render(policy.records());
        store::write(dir, &text)
            .map_err(|e| format!("cannot write the state file in {}: {e}", dir.display()))?;
    }
    Ok(text)
}

/// Names known without the agent: the configuration's, then the state file's.
fn offline_candidates(
    config: &Config,
    records: &BTreeMap<MacAddr, DeviceRecord>,
) -> Vec<(MacAddr, Option<String>)> {
    let mut out: Vec<(MacAddr, Option<String>)> = config
        .devices
        .iter()
        .map(|(mac, d)| (*mac, Some(d.name.clone())))
        .collect();
    out.extend(
        records
            .iter()
            .filter(|(mac, _)| !config.devices.contains_key(mac))
            .map(|(mac, r)| (*mac, r.name.clone())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::PolicySection,
        policy::Target,
        types::{Count, DeviceId, Direction, Label},
    };

    const CAMERA: MacAddr = MacAddr([2, 0, 0, 0, 0, 5]);
    const TWIN: MacAddr = MacAddr([2, 0, 0, 0, 0, 6]);

    fn candidates() -> Vec<(MacAddr, Option<String>)> {
        vec![
            (CAMERA, Some("camera".into())),
            (TWIN, Some("laptop".into())),
            (MacAddr([2, 0, 0, 0, 0, 7]), Some("laptop".into())),
        ]
    }

    #[test]
    fn devices_are_found_by_mac_or_unique_name() {
        assert_eq!(resolve_device("camera", candidates()), Ok(CAMERA));
        assert_eq!(resolve_device("02:00:00:00:00:06", candidates()), Ok(TWIN));
        assert!(
            resolve_device("laptop", candidates())
                .unwrap_err()
                .contains("2 devices are named \"laptop\"")
        );
        assert!(
            resolve_device("tv", candidates())
                .unwrap_err()
                .contains("no device is named \"tv\"")
        );
    }

    #[test]
    fn requests_change_the_policy_and_say_what_they_did() {
        let mut config = crate::config::PolicyConfig::default();
        config.devices.insert(
            CAMERA,
            PolicySection {
                learn: Some(Duration::from_secs(60)),
                ..PolicySection::default()
            },
        );
        let mut policy = Policy::new(config, BTreeMap::new());
        let label = Label::Name("vendor.example".into());
        let start = SystemTime::now() - Duration::from_secs(600);
        policy.observe(
            DeviceId {
                mac: CAMERA,
                direction: Direction::Egress,
            },
            None,
            &Target {
                addr: "192.0.2.10".parse().unwrap(),
                host: Some("updates.vendor.example"),
                label: &label,
                enrichment: &Default::default(),
            },
            Count::new(1, 1),
            start,
        );
        let no_group = |_| None;
        let run = |policy: &mut Policy, r: Request| execute(policy, &r, candidates(), &no_group);
        let (text, changed) = run(
            &mut policy,
            Request::Show {
                device: "camera".into(),
            },
        )
        .unwrap();
        assert!(!changed);
        assert!(
            text.contains("device:   camera (02:00:00:00:00:05)"),
            "{text}"
        );
        assert!(text.contains("learning: done (from "), "{text}");
        assert!(
            text.contains("baseline: 1 entries\n  vendor.example\n"),
            "{text}"
        );
        assert!(
            text.contains("seen:     1 destinations\n  vendor.example  first "),
            "{text}"
        );
        let accept = Request::Accept {
            device: "camera".into(),
            destination: "198.51.100.0/24".into(),
        };
        let (text, changed) = run(&mut policy, accept.clone()).unwrap();
        assert!(changed);
        assert_eq!(
            text,
            "accepted 198.51.100.0/24 into the baseline of camera (02:00:00:00:00:05)\n"
        );
        assert!(!run(&mut policy, accept).unwrap().1, "already there");
        let bad = Request::Accept {
            device: "camera".into(),
            destination: "*.evil.example".into(),
        };
        assert!(run(&mut policy, bad).unwrap_err().contains("invalid rule"));
        let (_, changed) = run(
            &mut policy,
            Request::Forget {
                device: "camera".into(),
            },
        )
        .unwrap();
        assert!(changed);
        assert!(policy.record(CAMERA).is_none());
        let (text, _) = run(
            &mut policy,
            Request::Show {
                device: "camera".into(),
            },
        )
        .unwrap();
        assert!(
            text.contains("learning: for 1m, from the device's next traffic"),
            "{text}"
        );
    }

    #[test]
    fn requests_are_one_json_line() {
        let r = Request::Accept {
            device: "camera".into(),
            destination: "vendor.example".into(),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"op":"accept","device":"camera","destination":"vendor.example"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
    }

    #[test]
    fn the_lock_is_exclusive() {
        let dir = std::env::temp_dir().join(format!("egress-lock-{}", std::process::id()));
        let held = try_lock(&dir).unwrap().expect("free");
        // flock locks belong to the open file description: a second open is a second owner.
        assert!(try_lock(&dir).unwrap().is_none());
        drop(held);
        assert!(try_lock(&dir).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
