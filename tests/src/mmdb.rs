//! A small MMDB writer, so that the tests make their own MaxMind-format databases: country and
//! AS data for the lab's documentation prefixes, in the layouts of GeoLite2, DB-IP Lite and
//! IPinfo Lite ([`geolite2_country`], [`geolite2_asn`], [`dbip_country_lite`],
//! [`dbip_asn_lite`], [`ipinfo_lite`]), plus broken files for the error paths ([`garbage`],
//! [`truncated`], [`corrupt_data_section`]).
//!
//! The files are MaxMind DB format 2.0: an IPv6 search tree (IPv4 networks at `::/96`, so
//! IPv4 and IPv6 lookups both work), 24-, 28- or 32-bit records (28 by default, the size
//! whose odd middle byte a reader is most likely to get wrong), the 16 zero bytes, a data
//! section with one copy of each distinct record, and the metadata. No pointers, no aliases
//! of `::ffff:0:0/96` or `2002::/16`: look IPv4 addresses up as IPv4.
//!
//! ```no_run
//! use egress_lab::mmdb::{geolite2_asn, net};
//!
//! geolite2_asn(&[(net("203.0.113.0/24"), 64500, "Example Hosting GmbH")])
//!     .write(std::path::Path::new("/tmp/asn.mmdb"))
//!     .unwrap();
//! ```

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

mod encode;
mod format;
mod tree;
mod vendors;

#[cfg(test)]
mod tests;

pub use encode::Value;
pub use format::METADATA_MARKER;
pub use vendors::{
    dbip_asn_lite, dbip_country_lite, geoip2_country, geolite2_asn, geolite2_city,
    geolite2_country, ipinfo_lite,
};

/// A network: an address and a prefix length (host bits are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub addr: IpAddr,
    pub len: u8,
}

impl Network {
    /// Panics on a length longer than the address.
    pub fn new(addr: IpAddr, len: u8) -> Network {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        assert!(
            (1..=max).contains(&len),
            "{addr}/{len}: length out of 1..={max}"
        );
        Network { addr, len }
    }

    /// The network's bits in the IPv6 tree, and its length there.
    fn bits(&self) -> (u128, u8) {
        tree::bits_of(self.addr, self.len)
    }
}

impl From<(IpAddr, u8)> for Network {
    fn from((addr, len): (IpAddr, u8)) -> Network {
        Network::new(addr, len)
    }
}

impl FromStr for Network {
    type Err = String;

    /// `ADDRESS/LENGTH`, or a bare address for a single host.
    fn from_str(s: &str) -> Result<Network, String> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let len = match len {
            Some(len) => len.parse().map_err(|e| format!("{s:?}: {e}"))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Ok(Network::new(addr, len))
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Parses a network, panicking on a typo: for tables in tests.
pub fn net(s: &str) -> Network {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// Bits per search-tree record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordSize {
    Bits24,
    Bits28,
    Bits32,
}

impl RecordSize {
    pub fn bits(self) -> u16 {
        match self {
            RecordSize::Bits24 => 24,
            RecordSize::Bits28 => 28,
            RecordSize::Bits32 => 32,
        }
    }
}

/// A database being put together: metadata, and a record for each network.
#[derive(Debug, Clone)]
pub struct MmdbWriter {
    database_type: String,
    description: Vec<(String, String)>,
    languages: Vec<String>,
    build_epoch: u64,
    record_size: RecordSize,
    networks: Vec<(Network, Value)>,
}

impl MmdbWriter {
    /// An empty database of this `database_type` (the metadata field readers use to tell
    /// vendors apart): English description, languages `["en"]`, 28-bit records.
    pub fn new(database_type: &str) -> MmdbWriter {
        MmdbWriter {
            database_type: database_type.to_owned(),
            description: vec![("en".to_owned(), format!("{database_type} for tests"))],
            languages: vec!["en".to_owned()],
            build_epoch: 1_700_000_000,
            record_size: RecordSize::Bits28,
            networks: Vec::new(),
        }
    }

    pub fn record_size(mut self, size: RecordSize) -> MmdbWriter {
        self.record_size = size;
        self
    }

    pub fn build_epoch(mut self, epoch: u64) -> MmdbWriter {
        self.build_epoch = epoch;
        self
    }

    pub fn database_type(mut self, database_type: &str) -> MmdbWriter {
        self.database_type = database_type.to_owned();
        self
    }

    /// Maps every address of `network` to `record` (a map, as every vendor's records are).
    /// Nested networks may be given in any order: the longest prefix wins.
    pub fn insert(mut self, network: impl Into<Network>, record: Value) -> MmdbWriter {
        self.networks.push((network.into(), record));
        self
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        format::to_bytes(self)
    }

    /// Writes the file atomically: a temporary file beside it, then a rename over `path`, as
    /// database updaters do; a reader that has the old file open keeps it.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        write_atomic(path, &self.to_bytes())
    }
}

/// Writes `bytes` to a temporary file in `path`'s directory and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Bytes that are no MMDB file at all (no metadata marker).
pub fn garbage() -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// A database cut short: the end, metadata and all, is lost, as after an interrupted copy.
pub fn truncated(db: &[u8]) -> Vec<u8> {
    db[..db.len() / 2].to_vec()
}

/// A database whose metadata is intact but whose data section is overwritten with bytes
/// that decode as nothing valid: it opens, and its lookups fail.
pub fn corrupt_data_section(db: &[u8]) -> Vec<u8> {
    let metadata = db
        .windows(METADATA_MARKER.len())
        .rposition(|w| w == METADATA_MARKER)
        .expect("not an MMDB file");
    // The tree ends at the 16 zero bytes (no record of this writer's is zero: node 0 is the
    // root, which nothing points at); the data section follows them.
    let mut data_start = 0;
    while data_start + 16 <= metadata && db[data_start..data_start + 16] != [0; 16] {
        data_start += 1;
    }
    let mut out = db.to_vec();
    // 0x0f 0x0f: an extended type of 15 + 7 = 22, which the format does not have.
    for byte in &mut out[data_start + 16..metadata] {
        *byte = 0x0f;
    }
    out
}
