//! The `[enrich]` table: the MMDB files that place destinations in countries and autonomous
//! systems, how to read them, and how many addresses to remember.
//!
//! ```toml
//! [enrich]
//! country_db = "/usr/share/GeoIP/GeoLite2-Country.mmdb"   # absolute; need not exist yet
//! asn_db = "/usr/share/GeoIP/GeoLite2-ASN.mmdb"           # may be the same file as country_db
//! country_layout = "auto"     # auto (from the file's database_type), maxmind or ipinfo
//! asn_layout = "auto"         # the same, for asn_db
//! cache_entries = 65536       # addresses whose enrichment is remembered, 16 to 16777216
//! max_as_per_device = 32      # AS series per device and direction (the rest: asn="other")
//! ```
//!
//! A layout key per file, not one for both, because the two files may come from different
//! vendors (DB-IP's countries, MaxMind's ASN). When both keys name the same file, they must
//! not contradict each other: `auto` and one layout is that layout.

use std::ops::Range;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::defaults::{
    DEFAULT_ENRICH_CACHE_ENTRIES, DEFAULT_MAX_AS_PER_DEVICE, ENRICH_CACHE_ENTRIES_RANGE,
    MAX_AS_PER_DEVICE_RANGE,
};
use super::file::{de_str, de_u32};
use super::validate::{check_database_path, check_entries};
use crate::enrich::LayoutSetting;

const EXPECT_DATABASE_PATH: &str = "an absolute path like \"/usr/share/GeoIP/GeoLite2-ASN.mmdb\"";

/// The effective `[enrich]` table. Without a database, nothing is enriched: every address is
/// `unknown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrichConfig {
    /// The MMDB file for countries: MaxMind GeoLite2/GeoIP2 Country or City, DB-IP Lite
    /// country or city, IPinfo Lite.
    pub country_db: Option<PathBuf>,
    /// The MMDB file for AS numbers and organisations: GeoLite2-ASN, DB-IP ASN Lite, IPinfo
    /// Lite. The same path as `country_db` is one file, opened once.
    pub asn_db: Option<PathBuf>,
    /// How `country_db`'s records are laid out.
    pub country_layout: LayoutSetting,
    /// How `asn_db`'s records are laid out.
    pub asn_layout: LayoutSetting,
    /// Bound on the addresses whose enrichment is cached.
    pub cache_entries: u32,
    /// AS series per device and direction; beyond it, the smallest fold into `other`.
    pub max_as_per_device: u32,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            country_db: None,
            asn_db: None,
            country_layout: LayoutSetting::Auto,
            asn_layout: LayoutSetting::Auto,
            cache_entries: DEFAULT_ENRICH_CACHE_ENTRIES,
            max_as_per_device: DEFAULT_MAX_AS_PER_DEVICE,
        }
    }
}

impl EnrichConfig {
    /// Any database configured.
    pub fn is_enabled(&self) -> bool {
        self.country_db.is_some() || self.asn_db.is_some()
    }

    /// The `[enrich]` part of the effective configuration, as TOML.
    pub(super) fn to_toml(&self, lines: &mut Vec<String>) {
        let quoted = |s: &str| toml::Value::String(s.to_owned()).to_string();
        lines.extend([String::new(), "[enrich]".to_owned()]);
        if let Some(path) = &self.country_db {
            lines.push(format!(
                "country_db = {}",
                quoted(&path.display().to_string())
            ));
        }
        if let Some(path) = &self.asn_db {
            lines.push(format!("asn_db = {}", quoted(&path.display().to_string())));
        }
        lines.extend([
            format!("country_layout = {}", quoted(self.country_layout.as_str())),
            format!("asn_layout = {}", quoted(self.asn_layout.as_str())),
            format!("cache_entries = {}", self.cache_entries),
            format!("max_as_per_device = {}", self.max_as_per_device),
        ]);
    }
}

/// The `[enrich]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of enrichment settings, like [enrich]"
)]
pub(super) struct FileEnrich {
    #[serde(default, deserialize_with = "de_database_path")]
    country_db: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_database_path")]
    asn_db: Option<PathBuf>,
    #[serde(default)]
    country_layout: Option<LayoutSetting>,
    #[serde(default)]
    asn_layout: Option<LayoutSetting>,
    #[serde(default, deserialize_with = "de_cache_entries")]
    cache_entries: Option<u32>,
    #[serde(default, deserialize_with = "de_max_as")]
    max_as_per_device: Option<u32>,
}

fn de_database_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    de_str(d, EXPECT_DATABASE_PATH, check_database_path).map(Some)
}

fn de_cache_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let range = &ENRICH_CACHE_ENTRIES_RANGE;
    let expecting = format!("a number from {} to {}", range.start(), range.end());
    de_u32(d, expecting, |n| check_entries(n, range)).map(Some)
}

fn de_max_as<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let range = &MAX_AS_PER_DEVICE_RANGE;
    let expecting = format!("a number from {} to {}", range.start(), range.end());
    de_u32(d, expecting, |n| check_entries(n, range)).map(Some)
}

/// An error found once the whole table is read.
#[derive(Debug)]
pub(super) struct ResolveError {
    pub key: String,
    pub message: String,
    pub span: Option<Range<usize>>,
}

/// The table with defaults filled in, and its keys checked against each other.
pub(super) fn resolve(src: &str, file: FileEnrich) -> Result<EnrichConfig, ResolveError> {
    let config = EnrichConfig {
        country_layout: file.country_layout.unwrap_or_default(),
        asn_layout: file.asn_layout.unwrap_or_default(),
        cache_entries: file.cache_entries.unwrap_or(DEFAULT_ENRICH_CACHE_ENTRIES),
        max_as_per_device: file.max_as_per_device.unwrap_or(DEFAULT_MAX_AS_PER_DEVICE),
        country_db: file.country_db,
        asn_db: file.asn_db,
    };
    let (country, asn) = (config.country_layout, config.asn_layout);
    let one_file = config.country_db.is_some() && config.country_db == config.asn_db;
    if one_file && country != asn && country != LayoutSetting::Auto && asn != LayoutSetting::Auto {
        return Err(ResolveError {
            key: "enrich.asn_layout".to_owned(),
            message: format!(
                "{:?} contradicts country_layout = {:?}: asn_db and country_db are the same \
                 file, read with one layout",
                asn.as_str(),
                country.as_str()
            ),
            span: locate(src, "asn_layout"),
        });
    }
    Ok(config)
}

/// Where the value of `enrich.<key>` is written.
fn locate(src: &str, key: &str) -> Option<Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(src).ok()?;
    let (_, enrich) = doc
        .get_ref()
        .iter()
        .find(|(name, _)| name.get_ref().as_ref() == "enrich")?;
    let DeValue::Table(enrich) = enrich.get_ref() else {
        return None;
    };
    enrich
        .iter()
        .find(|(name, _)| name.get_ref().as_ref() == key)
        .map(|(_, value)| value.span())
}
