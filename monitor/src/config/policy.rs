//! The `[policy]` table: what each device, group, or any other device may talk to, and how
//! long to learn a baseline. Sections are keyed by MAC address or by a device or group name
//! from `[devices]`, so names are resolved once the whole file is read.

use std::{collections::BTreeMap, ops::Range, time::Duration};

use serde::{Deserialize, Deserializer};

use super::file::{EXPECT_DURATION, de_str, de_u32};
use super::model::DeviceConfig;
use super::validate::{check_duration, parse_duration};
use crate::{policy::Rule, types::MacAddr};

/// Unexpected destinations exported per device before the rest fold into `other`.
pub const DEFAULT_MAX_UNEXPECTED_DESTINATIONS: u32 = 20;
pub const MAX_UNEXPECTED_DESTINATIONS_RANGE: std::ops::RangeInclusive<u32> = 1..=10_000;
/// Learning periods: from a second (tests, demos) to ten years.
pub const LEARN_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3650 * 86_400);

const EXPECT_RULE: &str = "a domain like \"vendor.example\", an address, a prefix like \
     \"192.0.2.0/24\", a country like \"country:DE\" or an autonomous system like \"asn:64500\"";

/// The effective policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Per device: distinct unexpected destinations exported before the rest are folded into
    /// `destination="other"`.
    pub max_unexpected_destinations: u32,
    /// For devices that neither `devices` nor `groups` mention; `None`: they are only counted.
    pub default: Option<PolicySection>,
    /// By group name.
    pub groups: BTreeMap<String, PolicySection>,
    /// By MAC address (names are resolved to every MAC that bears them).
    pub devices: BTreeMap<MacAddr, PolicySection>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            max_unexpected_destinations: DEFAULT_MAX_UNEXPECTED_DESTINATIONS,
            default: None,
            groups: BTreeMap::new(),
            devices: BTreeMap::new(),
        }
    }
}

/// What one device, group or the default may talk to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySection {
    /// Always allowed.
    pub allow: Vec<Rule>,
    /// Always unexpected, even while learning; wins over `allow`.
    pub deny: Vec<Rule>,
    /// Learn a baseline for this long from the device's first sight.
    pub learn: Option<Duration>,
}

/// Which section applies to a device: the most specific one, entirely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies<'a> {
    Device(&'a PolicySection),
    Group(&'a str, &'a PolicySection),
    Default(&'a PolicySection),
    None,
}

impl Applies<'_> {
    pub fn section(&self) -> Option<&PolicySection> {
        match *self {
            Applies::Device(s) | Applies::Group(_, s) | Applies::Default(s) => Some(s),
            Applies::None => None,
        }
    }

    /// The `policy` label of `egress_device_policy_info`.
    pub fn label(&self) -> String {
        match self {
            Applies::Device(_) => "device".to_owned(),
            Applies::Group(name, _) => format!("group:{name}"),
            Applies::Default(_) => "default".to_owned(),
            Applies::None => "none".to_owned(),
        }
    }
}

impl PolicyConfig {
    /// The section for a device of `group`.
    pub fn applies(&self, mac: MacAddr, group: Option<&str>) -> Applies<'_> {
        if let Some(section) = self.devices.get(&mac) {
            return Applies::Device(section);
        }
        if let Some((name, section)) = group.and_then(|g| self.groups.get_key_value(g)) {
            return Applies::Group(name, section);
        }
        match &self.default {
            Some(section) => Applies::Default(section),
            None => Applies::None,
        }
    }

    /// Any section at all: without one the agent only counts.
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.groups.is_empty() && self.devices.is_empty()
    }

    /// The `[policy]` part of the effective configuration, as TOML.
    pub fn to_toml(&self, lines: &mut Vec<String>) {
        fn section(lines: &mut Vec<String>, header: String, s: &PolicySection) {
            let list = |rules: &[Rule]| {
                let items: Vec<String> = rules
                    .iter()
                    .map(|r| toml::Value::String(r.to_string()).to_string())
                    .collect();
                format!("[{}]", items.join(", "))
            };
            lines.extend([String::new(), header]);
            lines.push(format!("allow = {}", list(&s.allow)));
            lines.push(format!("deny = {}", list(&s.deny)));
            if let Some(learn) = s.learn {
                let text = humantime::format_duration(learn).to_string();
                lines.push(format!("learn = {}", toml::Value::String(text)));
            }
        }
        let key = |k: &str| toml::Value::String(k.to_owned()).to_string();
        lines.extend([
            String::new(),
            "[policy]".to_owned(),
            format!(
                "max_unexpected_destinations = {}",
                self.max_unexpected_destinations
            ),
        ]);
        if let Some(s) = &self.default {
            section(lines, "[policy.default]".to_owned(), s);
        }
        for (name, s) in &self.groups {
            section(lines, format!("[policy.groups.{}]", key(name)), s);
        }
        for (mac, s) in &self.devices {
            section(lines, format!("[policy.devices.\"{mac}\"]"), s);
        }
    }
}

/// The `[policy]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of policy settings, like [policy]"
)]
pub(super) struct FilePolicy {
    #[serde(default, deserialize_with = "de_max_unexpected")]
    max_unexpected_destinations: Option<u32>,
    #[serde(default)]
    default: Option<FileSection>,
    #[serde(default)]
    groups: BTreeMap<String, FileSection>,
    #[serde(default)]
    devices: BTreeMap<String, FileSection>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with allow, deny and learn, like { allow = [\"vendor.example\"] }"
)]
struct FileSection {
    #[serde(default)]
    allow: Vec<FileRule>,
    #[serde(default)]
    deny: Vec<FileRule>,
    #[serde(default, deserialize_with = "de_learn")]
    learn: Option<Duration>,
}

impl FileSection {
    fn into_section(self) -> PolicySection {
        let rules = |list: Vec<FileRule>| {
            let mut out: Vec<Rule> = Vec::with_capacity(list.len());
            for FileRule(rule) in list {
                if !out.contains(&rule) {
                    out.push(rule);
                }
            }
            out
        };
        PolicySection {
            allow: rules(self.allow),
            deny: rules(self.deny),
            learn: self.learn,
        }
    }
}

#[derive(Debug)]
struct FileRule(Rule);

impl<'de> Deserialize<'de> for FileRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, EXPECT_RULE, str::parse).map(FileRule)
    }
}

fn de_max_unexpected<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let range = &MAX_UNEXPECTED_DESTINATIONS_RANGE;
    de_u32(
        d,
        format!("a number from {} to {}", range.start(), range.end()),
        |n| {
            u32::try_from(n)
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    format!(
                        "{n} is out of range: from {} to {}",
                        range.start(),
                        range.end()
                    )
                })
        },
    )
    .map(Some)
}

fn de_learn<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_str(d, EXPECT_DURATION, |s| {
        parse_duration(s).and_then(|d| check_duration(d, &LEARN_RANGE))
    })
    .map(Some)
}

/// An error found once the whole file is read: the key and where it is written.
#[derive(Debug)]
pub(super) struct ResolveError {
    pub key: String,
    pub message: String,
    pub span: Option<Range<usize>>,
}

/// Where the key `policy.<table>.<key>` is written (a `[policy.devices.x]` header or a dotted
/// key), for errors found after deserialization.
fn locate(src: &str, table: &str, key: &str) -> Option<Range<usize>> {
    use toml::de::{DeTable, DeValue};
    fn find<'a, 'i>(t: &'a DeTable<'i>, k: &str) -> Option<(Range<usize>, &'a DeValue<'i>)> {
        t.iter()
            .find(|(name, _)| name.get_ref().as_ref() == k)
            .map(|(name, value)| (name.span(), value.get_ref()))
    }
    let doc = DeTable::parse(src).ok()?;
    let (_, DeValue::Table(policy)) = find(doc.get_ref(), "policy")? else {
        return None;
    };
    let (_, DeValue::Table(sections)) = find(policy, table)? else {
        return None;
    };
    find(sections, key).map(|(span, _)| span)
}

/// Resolves section keys (MAC addresses, device and group names) against `[devices]`.
pub(super) fn resolve(
    src: &str,
    file: FilePolicy,
    devices: &BTreeMap<MacAddr, DeviceConfig>,
) -> Result<PolicyConfig, ResolveError> {
    let quoted = |k: &str| {
        let bare = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if bare {
            k.to_owned()
        } else {
            toml::Value::String(k.to_owned()).to_string()
        }
    };
    let mut groups = BTreeMap::new();
    for (name, section) in file.groups {
        if !devices
            .values()
            .any(|d| d.group.as_deref() == Some(name.as_str()))
        {
            let known: Vec<&str> = devices
                .values()
                .filter_map(|d| d.group.as_deref())
                .collect();
            return Err(ResolveError {
                key: format!("policy.groups.{}", quoted(&name)),
                message: format!(
                    "no device in [devices] has group {:?} (groups: {})",
                    name,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
                span: locate(src, "groups", &name),
            });
        }
        groups.insert(name, section.into_section());
    }
    let mut by_mac: BTreeMap<MacAddr, PolicySection> = BTreeMap::new();
    for (key, section) in file.devices {
        let error = |message: String| ResolveError {
            key: format!("policy.devices.{}", quoted(&key)),
            message,
            span: locate(src, "devices", &key),
        };
        let macs: Vec<MacAddr> = match key.parse::<MacAddr>() {
            Ok(mac) if mac.is_multicast() => {
                return Err(error(format!(
                    "{mac} is a multicast address, which never names a device"
                )));
            }
            Ok(mac) => vec![mac],
            Err(_) => {
                let macs: Vec<MacAddr> = devices
                    .iter()
                    .filter(|(_, d)| d.name == key)
                    .map(|(mac, _)| *mac)
                    .collect();
                if macs.is_empty() {
                    return Err(error(format!(
                        "{key:?} is neither a MAC address nor the name of a device in [devices]"
                    )));
                }
                macs
            }
        };
        let section = section.into_section();
        for mac in macs {
            if by_mac.insert(mac, section.clone()).is_some() {
                return Err(error(format!(
                    "{mac} has two policy sections (by MAC address and by name?)"
                )));
            }
        }
    }
    Ok(PolicyConfig {
        max_unexpected_destinations: file
            .max_unexpected_destinations
            .unwrap_or(DEFAULT_MAX_UNEXPECTED_DESTINATIONS),
        default: file.default.map(FileSection::into_section),
        groups,
        devices: by_mac,
    })
}
