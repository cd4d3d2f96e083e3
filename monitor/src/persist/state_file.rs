//! The state file: per device, when it started learning, its baseline, and when each
//! destination and each country was first and last seen. TOML, so a person can read it (and fix it); written
//! to a temporary file, synced and renamed over the old one, so a crash or a power cut leaves
//! the old or the new file, never half of one.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    io::{self, Write as _},
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::Deserialize;

use crate::enrich::Country;
use crate::policy::Rule;
use crate::types::{Label, MacAddr};

/// The file inside the state directory.
pub const STATE_FILE: &str = "state.toml";
/// The format this agent writes; it reads this one and every older one.
const VERSION: u32 = 1;

/// When a destination was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub first: SystemTime,
    pub last: SystemTime,
}

/// The name a device last reached an address by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RememberedName {
    /// The host name it resolved (or sent in a ClientHello).
    pub host: Box<str>,
    /// The destination label that name gave.
    pub label: Label,
    /// The address's last bytes under that name (or with the name gone).
    pub last: SystemTime,
}

/// What the state keeps about one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device's name when the file was written, for people and for `baseline` commands
    /// run while the agent is stopped.
    pub name: Option<String>,
    /// When the device was first seen under a policy that learns.
    pub learning_since: Option<SystemTime>,
    /// Destinations it may talk to beyond its allow rules: learned or accepted.
    pub baseline: BTreeSet<Rule>,
    /// Every destination (exported label) it was seen talking to.
    pub seen: BTreeMap<Label, Seen>,
    /// Addresses it reached by name: they keep that name once the name is gone (an expired
    /// DNS answer, an agent restart).
    pub names: BTreeMap<IpAddr, RememberedName>,
    /// Every country it was seen talking to (as the country database placed the address).
    /// Files written before countries were kept have none.
    pub countries: BTreeMap<Country, Seen>,
}

/// Why the state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read the state file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "the state file {}{} is invalid: {message}; fix it, or move it away to start with no \
         baseline",
        path.display(),
        line.map(|l| format!(":{l}")).unwrap_or_default()
    )]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

#[derive(Deserialize)]
struct FileState {
    version: u32,
    #[serde(default)]
    devices: BTreeMap<String, FileDevice>,
}

#[derive(Deserialize)]
struct FileDevice {
    name: Option<String>,
    learning_since: Option<toml::value::Datetime>,
    #[serde(default)]
    baseline: Vec<String>,
    #[serde(default)]
    seen: BTreeMap<String, FileSeen>,
    #[serde(default)]
    names: BTreeMap<String, FileName>,
    #[serde(default)]
    countries: BTreeMap<String, FileSeen>,
}

#[derive(Deserialize)]
struct FileName {
    host: String,
    label: String,
    last: toml::value::Datetime,
}

#[derive(Deserialize)]
struct FileSeen {
    first: toml::value::Datetime,
    last: toml::value::Datetime,
}

/// The largest state file read: a device's record is a few KiB at most (bounded destinations
/// and countries), so this holds thousands of devices.
pub const STATE_FILE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Reads the state file in `dir`; a missing file is an empty state.
pub fn load(dir: &Path) -> Result<BTreeMap<MacAddr, DeviceRecord>, StoreError> {
    let path = dir.join(STATE_FILE);
    let text = match crate::regular_file::read_text(&path, STATE_FILE_MAX_BYTES) {
        Ok(text) => text,
        Err(crate::regular_file::FileError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(BTreeMap::new());
        }
        Err(e) => {
            return Err(StoreError::Read {
                path,
                source: e.into(),
            });
        }
    };
    parse(&text).map_err(|(line, message)| StoreError::Invalid {
        path,
        line,
        message,
    })
}

/// Parses the file's text; an error carries its line when known.
pub fn parse(text: &str) -> Result<BTreeMap<MacAddr, DeviceRecord>, (Option<usize>, String)> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let file: FileState = toml::from_str(text).map_err(|e| {
        (
            e.span().map(|s| line_of(s.start)),
            e.message().replace('\n', " "),
        )
    })?;
    if file.version > VERSION {
        return Err((
            None,
            format!(
                "version {} was written by a newer egress-monitor (this one reads up to {VERSION})",
                file.version
            ),
        ));
    }
    let mut devices = BTreeMap::new();
    for (mac_text, device) in file.devices {
        let at = |what: String| (None, format!("devices.\"{mac_text}\": {what}"));
        let mac: MacAddr = mac_text
            .parse()
            .map_err(|e| at(format!("not a MAC address: {e}")))?;
        let mut record = DeviceRecord {
            name: device.name,
            learning_since: device
                .learning_since
                .map(|t| time(&t))
                .transpose()
                .map_err(at)?,
            ..DeviceRecord::default()
        };
        for entry in device.baseline {
            record.baseline.insert(
                entry
                    .parse()
                    .map_err(|e: String| at(format!("baseline: {e}")))?,
            );
        }
        for (label, seen) in device.seen {
            let seen = Seen {
                first: time(&seen.first).map_err(at)?,
                last: time(&seen.last).map_err(at)?,
            };
            record.seen.insert(label_from_text(&label), seen);
        }
        for (addr, name) in device.names {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| at(format!("names: {addr:?} is not an address")))?;
            let remembered = RememberedName {
                host: name.host.into(),
                label: label_from_text(&name.label),
                last: time(&name.last).map_err(at)?,
            };
            record.names.insert(addr, remembered);
        }
        for (code, seen) in device.countries {
            let country = Country::parse(&code).ok_or_else(|| {
                at(format!(
                    "countries: {code:?} is not a country code (two capital letters, like \"DE\")"
                ))
            })?;
            let seen = Seen {
                first: time(&seen.first).map_err(at)?,
                last: time(&seen.last).map_err(at)?,
            };
            record.countries.insert(country, seen);
        }
        devices.insert(mac, record);
    }
    Ok(devices)
}

/// Labels are written as text: an address reads back as an address.
pub fn label_from_text(text: &str) -> Label {
    match text.parse() {
        Ok(addr) => Label::Addr(addr),
        Err(_) => Label::Name(text.into()),
    }
}

fn time(t: &toml::value::Datetime) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(&t.to_string())
        .map_err(|e| format!("invalid time {t}: {e} (expected like 2026-11-27T10:00:00Z)"))
}

/// RFC 3339 in UTC, to the second: a TOML date-time a person can read.
pub fn format_time(t: SystemTime) -> String {
    // Before 1970 cannot happen on a running router; clamp rather than fail a write.
    let t = t.max(SystemTime::UNIX_EPOCH);
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .to_string()
}

/// The file's text.
pub fn render(devices: &BTreeMap<MacAddr, DeviceRecord>) -> String {
    let quoted = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut out = String::with_capacity(256 + devices.len() * 512);
    out.push_str(
        "# egress-monitor state: when each device started learning, its baseline (what it may\n\
         # talk to beyond its allow rules) and when each destination was first and last seen.\n\
         # Written by the agent; change it with `egress-monitor baseline accept|forget`.\n",
    );
    let _ = writeln!(out, "version = {VERSION}");
    for (mac, record) in devices {
        let _ = writeln!(out, "\n[devices.\"{mac}\"]");
        if let Some(name) = &record.name {
            let _ = writeln!(out, "name = {}", quoted(name));
        }
        if let Some(since) = record.learning_since {
            let _ = writeln!(out, "learning_since = {}", format_time(since));
        }
        out.push_str("baseline = [");
        for rule in &record.baseline {
            let _ = write!(out, "\n    {},", quoted(&rule.to_string()));
        }
        out.push_str(if record.baseline.is_empty() {
            "]\n"
        } else {
            "\n]\n"
        });
        if !record.seen.is_empty() {
            let _ = writeln!(out, "\n[devices.\"{mac}\".seen]");
            for (label, seen) in &record.seen {
                let _ = writeln!(
                    out,
                    "{} = {{ first = {}, last = {} }}",
                    quoted(&label.to_string()),
                    format_time(seen.first),
                    format_time(seen.last)
                );
            }
        }
        if !record.names.is_empty() {
            let _ = writeln!(out, "\n[devices.\"{mac}\".names]");
            for (addr, name) in &record.names {
                let _ = writeln!(
                    out,
                    "{} = {{ host = {}, label = {}, last = {} }}",
                    quoted(&addr.to_string()),
                    quoted(&name.host),
                    quoted(&name.label.to_string()),
                    format_time(name.last)
                );
            }
        }
        if !record.countries.is_empty() {
            let _ = writeln!(out, "\n[devices.\"{mac}\".countries]");
            for (country, seen) in &record.countries {
                let _ = writeln!(
                    out,
                    "{country} = {{ first = {}, last = {} }}",
                    format_time(seen.first),
                    format_time(seen.last)
                );
            }
        }
    }
    out
}

/// Replaces the state file in `dir` with `text`, atomically, creating `dir` if needed.
pub fn write(dir: &Path, text: &str) -> io::Result<()> {
    create_dir(dir)?;
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let result = (|| {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        // Owner-only from the first byte, and also when a temporary file of another umask was
        // left behind (create_new would refuse it; truncating it keeps its old mode).
        let mut file = fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        // The rename is durable once the directory is synced.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates the state directory, readable by its owner only: the baseline says who talks to
/// whom. A directory that exists already is made owner-only too, whatever mode it had (an
/// install script's `mkdir` leaves 755); a path that is not a directory is an error.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        // Something else by that name: said below.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        other => other?,
    }
    // Followed: a state directory may be a link to flash.
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a directory ({})",
                dir.display(),
                crate::regular_file::describe(meta.file_type())
            ),
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 + secs)
    }

    fn sample() -> BTreeMap<MacAddr, DeviceRecord> {
        let mut camera = DeviceRecord {
            name: Some("camera \"front\"".into()),
            learning_since: Some(at(0)),
            ..DeviceRecord::default()
        };
        camera.baseline.insert("vendor.example".parse().unwrap());
        camera.baseline.insert("192.0.2.0/24".parse().unwrap());
        camera.baseline.insert("country:DE".parse().unwrap());
        camera.baseline.insert("asn:64500".parse().unwrap());
        camera.seen.insert(
            Label::Name("vendor.example".into()),
            Seen {
                first: at(5),
                last: at(3600),
            },
        );
        camera.seen.insert(
            Label::Addr("2001:db8::7".parse().unwrap()),
            Seen {
                first: at(7),
                last: at(8),
            },
        );
        camera.names.insert(
            "192.0.2.10".parse().unwrap(),
            RememberedName {
                host: "updates.vendor.example".into(),
                label: Label::Name("vendor.example".into()),
                last: at(3600),
            },
        );
        for (code, first, last) in [("DE", 5, 3600), ("CN", 9, 10)] {
            camera.countries.insert(
                Country::parse(code).unwrap(),
                Seen {
                    first: at(first),
                    last: at(last),
                },
            );
        }
        let mut devices = BTreeMap::new();
        devices.insert("02:00:00:00:00:05".parse().unwrap(), camera);
        devices.insert(
            "02:00:00:00:00:06".parse().unwrap(),
            DeviceRecord::default(),
        );
        devices
    }

    #[test]
    fn state_reads_back_to_the_same_and_is_readable() {
        let devices = sample();
        let text = render(&devices);
        assert_eq!(parse(&text).unwrap(), devices, "{text}");
        assert!(text.contains("learning_since = 2026-11-18T"), "{text}");
        assert!(text.contains("    \"vendor.example\",\n"), "{text}");
        assert!(text.contains("\"2001:db8::7\" = { first = "), "{text}");
        assert!(
            text.contains("[devices.\"02:00:00:00:00:05\".countries]\nCN = { first = "),
            "{text}"
        );
    }

    #[test]
    fn a_file_written_before_countries_were_kept_loads_without_them() {
        let text = "version = 1\n\n[devices.\"02:00:00:00:00:05\"]\nname = \"camera\"\n\
                    learning_since = 2026-11-18T00:00:00Z\nbaseline = [\"vendor.example\"]\n\n\
                    [devices.\"02:00:00:00:00:05\".seen]\n\
                    \"vendor.example\" = { first = 2026-11-18T00:00:05Z, last = 2026-11-18T01:00:00Z }\n";
        let devices = parse(text).unwrap();
        let camera = &devices[&"02:00:00:00:00:05".parse().unwrap()];
        assert_eq!(camera.seen.len(), 1);
        assert_eq!(camera.baseline.len(), 1);
        assert!(camera.countries.is_empty());
    }

    #[test]
    fn write_replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("egress-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert!(
            load(&dir).unwrap().is_empty(),
            "a missing file is an empty state"
        );
        write(&dir, &render(&sample())).unwrap();
        write(&dir, &render(&BTreeMap::new())).unwrap();
        assert!(load(&dir).unwrap().is_empty());
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [STATE_FILE]);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_world_readable_directory_and_state_file_become_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("egress-state-modes-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join(STATE_FILE);
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        // A stale temporary file of a looser umask, too.
        let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
        fs::write(&tmp, "old").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o666)).unwrap();
        write(&dir, &render(&sample())).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert!(!tmp.exists());
        // A state directory that is a file is refused, naming it.
        let file = dir.join("not-a-dir");
        fs::write(&file, "").unwrap();
        let err = create_dir(&file).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_name_the_line_and_what_is_wrong() {
        let cases = [
            ("version = 1\n[devices.\"x\"]\n", "not a MAC address"),
            ("version = 2\n", "newer egress-monitor"),
            ("version = 1\n\n[devices\n", "unclosed table"),
            (
                "version = 1\n[devices.\"02:00:00:00:00:01\"]\nbaseline = [\"*.x\"]\n",
                "baseline: invalid rule",
            ),
            (
                "version = 1\n[devices.\"02:00:00:00:00:01\".countries]\nde = { first = 2026-11-18T00:00:05Z, last = 2026-11-18T00:00:05Z }\n",
                "countries: \"de\" is not a country code",
            ),
            (
                "version = 1\n[devices.\"02:00:00:00:00:01\".seen]\n\"a\" = { first = 1, last = 2 }\n",
                "",
            ),
        ];
        for (text, expected) in cases {
            let (line, message) = parse(text).unwrap_err();
            assert!(message.contains(expected), "{text:?}: {message}");
            if expected == "unclosed table" {
                assert_eq!(line, Some(3), "{text:?}: {message}");
            }
        }
        let err = StoreError::Invalid {
            path: "/var/lib/egress-monitor/state.toml".into(),
            line: Some(3),
            message: "x".into(),
        };
        assert!(
            err.to_string()
                .starts_with("the state file /var/lib/egress-monitor/state.toml:3 is invalid: x")
        );
    }
}
