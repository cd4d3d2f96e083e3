//! The file's format: exporter-toolkit's web configuration (`docs/web-configuration.md` of
//! prometheus/exporter-toolkit), read strictly as the toolkit reads it (`yaml.UnmarshalStrict`):
//! an unknown key, a duplicate key or a value of the wrong type is an error naming the key.
//!
//! This module only reads and checks the YAML; what the values mean (certificates, suites,
//! users) is built by the sibling modules.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Deserializer, de};

/// Larger than any web configuration (inline certificates included): a bigger file is refused
/// rather than read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The whole file. Every section may be left out.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileFormat {
    #[serde(deserialize_with = "null_is_default")]
    pub tls_server_config: TlsServerConfig,
    #[serde(deserialize_with = "null_is_default")]
    pub http_server_config: HttpServerConfig,
    /// User name to bcrypt hash.
    #[serde(deserialize_with = "unique_map")]
    pub basic_auth_users: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_is_default")]
    pub rate_limit: RateLimitConfig,
}

/// `tls_server_config`. Strings left empty are unset, as in the toolkit (Go's zero value).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsServerConfig {
    pub cert: String,
    pub key: String,
    pub client_ca: String,
    pub cert_file: String,
    pub key_file: String,
    pub client_auth_type: String,
    pub client_ca_file: String,
    /// `None` when the key is absent: the toolkit tells an absent list from an empty one.
    pub client_allowed_sans: Option<Vec<String>>,
    #[serde(deserialize_with = "tls_version")]
    pub min_version: Option<TlsVersion>,
    #[serde(deserialize_with = "tls_version")]
    pub max_version: Option<TlsVersion>,
    pub cipher_suites: Vec<String>,
    pub curve_preferences: Vec<String>,
    /// Accepted and without effect, as in Go 1.18 and later (the server's order is used).
    pub prefer_server_cipher_suites: Option<bool>,
}

impl TlsServerConfig {
    /// Whether the file asks for TLS: any of the certificate, key, client CA or client auth
    /// type set (the toolkit's `TLSConfig.IsEnabled`). Versions alone do not.
    pub fn is_enabled(&self) -> bool {
        [
            &self.cert_file,
            &self.cert,
            &self.key_file,
            &self.key,
            &self.client_ca_file,
            &self.client_ca,
            &self.client_auth_type,
        ]
        .iter()
        .any(|s| !s.is_empty())
    }
}

/// The versions the toolkit names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls10 => "TLS10",
            TlsVersion::Tls11 => "TLS11",
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        }
    }
}

/// `http_server_config`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpServerConfig {
    /// Accepted; the agent serves HTTP/1.1 only, which Prometheus uses anyway.
    pub http2: bool,
    #[serde(deserialize_with = "unique_map")]
    pub headers: BTreeMap<String, String>,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        Self {
            http2: true,
            headers: BTreeMap::new(),
        }
    }
}

/// `rate_limit`: a token bucket of `burst` requests refilled one per `interval`; an interval
/// of 0 (the default) turns it off.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    #[serde(deserialize_with = "go_duration")]
    pub interval: Duration,
    pub burst: u32,
}

/// Why the file could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    #[error("larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    #[error("not UTF-8")]
    NotUtf8,
    #[error("{0}")]
    Yaml(String),
}

/// Reads a file that must be regular and small, without blocking on a FIFO or a device
/// (the agent's one reader of user-named files, `regular_file`).
pub fn read_small_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    use crate::regular_file::{self, FileError};
    match regular_file::read(path, MAX_FILE_BYTES) {
        Ok((bytes, _)) => Ok(bytes),
        Err(FileError::Io(e)) => Err(ReadError::Io(e)),
        Err(FileError::NotRegular(kind)) => Err(ReadError::NotRegular(kind)),
        Err(FileError::TooLarge { .. }) => Err(ReadError::TooLarge),
    }
}

/// Parses the YAML text. An empty file (or one of comments only) is a valid, empty
/// configuration, as in the toolkit.
pub fn parse(text: &str) -> Result<FileFormat, ReadError> {
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        return Ok(FileFormat::default());
    }
    serde_norway::from_str(text).map_err(|e| ReadError::Yaml(e.to_string()))
}

/// A path of the file joined to the directory of the web configuration file, as the toolkit
/// does (`SetDirectory`): relative paths are relative to the file that names them.
pub fn resolve(config_path: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        return path.to_owned();
    }
    config_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(path)
}

fn null_is_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A map of strings in which a key given twice is an error (yaml.v2's strict mode), not the
/// last value silently.
fn unique_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Unique;
    impl<'de> de::Visitor<'de> for Unique {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map of strings")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }

        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format!("duplicate key {key:?}")));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Unique)
}

fn tls_version<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TlsVersion>, D::Error> {
    let Some(name) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let version = match name.as_str() {
        "TLS10" => TlsVersion::Tls10,
        "TLS11" => TlsVersion::Tls11,
        "TLS12" => TlsVersion::Tls12,
        "TLS13" => TlsVersion::Tls13,
        _ => {
            return Err(de::Error::custom(format!(
                "unknown TLS version: {name} (expected TLS10, TLS11, TLS12 or TLS13)"
            )));
        }
    };
    Ok(Some(version))
}

/// A Go duration: a string such as `1s`, `500ms` or `1m30s`, or an integer of nanoseconds
/// (how yaml.v2 reads a `time.Duration`).
fn go_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Nanos(u64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(Duration::ZERO),
        Some(Raw::Nanos(n)) => Ok(Duration::from_nanos(n)),
        Some(Raw::Text(t)) if t.trim() == "0" => Ok(Duration::ZERO),
        Some(Raw::Text(t)) => humantime::parse_duration(t.trim()).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration {t:?}: {e} (expected e.g. \"1s\" or \"500ms\")"
            ))
        }),
    }
}
