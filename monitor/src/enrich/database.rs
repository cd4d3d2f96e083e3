//! Opening one MMDB file: checked before it is read (a regular file, not too large), read
//! into memory, its layout chosen, and probed for the fields it is meant to provide.
//!
//! Why read the file rather than map it: updaters replace it by rename, which a mapping
//! would survive, but a plain `cp` over it truncates the mapped inode in place, and the next
//! lookup would die of SIGBUS; a copy in memory cannot be changed under the agent, so a bad
//! file is an error and never a crash. The cost is RSS: the file's size while it is open
//! (about 8 MiB for GeoLite2-ASN or -Country, 30 to 60 MiB for IPinfo Lite or a City file),
//! twice that for a moment while a replacement is read, and no sharing with the page cache
//! (on a router's tmpfs `/tmp` the file itself is in RAM too).

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use maxminddb::{Reader, WithinOptions};

use super::layout::{Layout, LayoutSetting, LayoutSource};
use super::lookup::{Found, Record};

/// Largest database the agent reads: GeoIP2 City, the largest common file, is about 130 MiB.
pub const MAX_DATABASE_BYTES: u64 = 512 * 1024 * 1024;

/// Records probed at open for the fields the database should provide.
const PROBE_RECORDS: usize = 256;

/// Which file a path named when it was read: a replacement (a rename over it, or a rewrite)
/// changes at least one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> FileIdentity {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }

    /// The file `path` names now (following symbolic links, as opening does).
    pub fn of_path(path: &Path) -> std::io::Result<FileIdentity> {
        std::fs::metadata(path).map(|meta| FileIdentity::of(&meta))
    }
}

/// What a database is opened for; a file configured as both is opened once, for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub country: bool,
    pub asn: bool,
}

/// Why a database could not be opened or read. Each displays as one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("MMDB database {}: no such file", path.display())]
    Missing { path: PathBuf },
    #[error("MMDB database {}: cannot read: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("MMDB database {}: not a regular file ({kind})", path.display())]
    NotRegularFile { path: PathBuf, kind: &'static str },
    #[error(
        "MMDB database {}: {size} bytes, larger than the limit of {limit} bytes",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("MMDB database {}: not a valid MMDB file: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "MMDB database {} ({database_type}): no {what} found in its records; \
         is it the right file, or does it need country_layout/asn_layout?",
        path.display()
    )]
    NoUsableFields {
        path: PathBuf,
        database_type: String,
        /// `country`, `AS number`.
        what: &'static str,
    },
}

impl DatabaseError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DatabaseError::Missing { path }
            | DatabaseError::Unreadable { path, .. }
            | DatabaseError::NotRegularFile { path, .. }
            | DatabaseError::TooLarge { path, .. }
            | DatabaseError::Invalid { path, .. }
            | DatabaseError::NoUsableFields { path, .. } => path,
        }
    }
}

/// A record that could not be decoded: the file is damaged there.
#[derive(Debug, thiserror::Error)]
#[error("MMDB database {}: lookup of {addr} failed: {reason}", path.display())]
pub struct LookupError {
    pub path: PathBuf,
    pub addr: IpAddr,
    pub reason: String,
}

/// An open database, in memory.
pub struct Database {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
    layout: Layout,
    layout_source: LayoutSource,
    setting: LayoutSetting,
    roles: Roles,
    identity: FileIdentity,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .field("database_type", &self.database_type())
            .field("layout", &self.layout)
            .field("layout_source", &self.layout_source)
            .field("roles", &self.roles)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens `path` for `roles`. Blocking file I/O: call it on the file watcher's thread.
    pub fn open(
        path: &Path,
        setting: LayoutSetting,
        roles: Roles,
    ) -> Result<Database, DatabaseError> {
        let (bytes, identity) = read_file(path)?;
        let reader = Reader::from_source(bytes).map_err(|e| DatabaseError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let (layout, layout_source) = setting.resolve(&reader.metadata().database_type);
        let database = Database {
            path: path.to_owned(),
            reader,
            layout,
            layout_source,
            setting,
            roles,
            identity,
        };
        database.probe()?;
        Ok(database)
    }

    /// Opens the file `path` names now if it is not the one this database was read from:
    /// `Ok(None)` when it is the same file. A replacement that fails to open is an error, and
    /// this database stays as it is, for the caller to keep using.
    pub fn reopen_if_replaced(&self) -> Result<Option<Database>, DatabaseError> {
        let now = FileIdentity::of_path(&self.path).map_err(|e| io_error(&self.path, e))?;
        if now == self.identity {
            return Ok(None);
        }
        Database::open(&self.path, self.setting, self.roles).map(Some)
    }

    /// What the database says about `addr`; nothing where it has no record.
    pub fn lookup(&self, addr: IpAddr) -> Result<Found, LookupError> {
        let fail = |reason: String| LookupError {
            path: self.path.clone(),
            addr,
            reason,
        };
        if addr.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return Ok(Found::default());
        }
        let result = self.reader.lookup(addr).map_err(|e| fail(e.to_string()))?;
        let record: Option<Record<'_>> = result.decode().map_err(|e| fail(e.to_string()))?;
        Ok(record.map_or_else(Found::default, |r| r.found(self.layout)))
    }

    /// Some records should hold what the database is for; one that holds none of it is the
    /// wrong file (a City file configured as `asn_db`) or needs a layout setting.
    fn probe(&self) -> Result<(), DatabaseError> {
        let invalid = |e: maxminddb::MaxMindDbError| DatabaseError::Invalid {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let mut country = !self.roles.country;
        let mut asn = !self.roles.asn;
        let networks = self
            .reader
            .networks(WithinOptions::default())
            .map_err(invalid)?;
        for result in networks.take(PROBE_RECORDS) {
            let record: Option<Record<'_>> = result.map_err(invalid)?.decode().map_err(invalid)?;
            let found = record.map_or_else(Found::default, |r| r.found(self.layout));
            country |= found.country.is_some();
            asn |= found.asn.is_some();
            if country && asn {
                return Ok(());
            }
        }
        Err(DatabaseError::NoUsableFields {
            path: self.path.clone(),
            database_type: self.database_type().to_owned(),
            what: if country { "AS number" } else { "country" },
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata's `database_type`, such as `GeoLite2-Country`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// When the vendor built it, in seconds since the epoch.
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn layout_source(&self) -> LayoutSource {
        self.layout_source
    }

    pub fn roles(&self) -> Roles {
        self.roles
    }

    /// The file this was read from.
    pub fn identity(&self) -> FileIdentity {
        self.identity
    }

    /// Bytes held in memory: the file's size.
    pub fn memory_bytes(&self) -> u64 {
        self.identity.size
    }
}

fn io_error(path: &Path, e: std::io::Error) -> DatabaseError {
    if e.kind() == std::io::ErrorKind::NotFound {
        DatabaseError::Missing {
            path: path.to_owned(),
        }
    } else {
        DatabaseError::Unreadable {
            path: path.to_owned(),
            source: e,
        }
    }
}

/// Reads a regular file of at most [`MAX_DATABASE_BYTES`], and says which file it was.
fn read_file(path: &Path) -> Result<(Vec<u8>, FileIdentity), DatabaseError> {
    use crate::regular_file::{self, FileError};
    let (bytes, meta) = regular_file::read(path, MAX_DATABASE_BYTES).map_err(|e| match e {
        FileError::Io(e) => io_error(path, e),
        FileError::NotRegular(kind) => DatabaseError::NotRegularFile {
            path: path.to_owned(),
            kind,
        },
        FileError::TooLarge { size, limit } => DatabaseError::TooLarge {
            path: path.to_owned(),
            size,
            limit,
        },
    })?;
    let mut identity = FileIdentity::of(&meta);
    // What was read is what counts, if the file changed meanwhile (the next look reopens it).
    identity.size = bytes.len() as u64;
    Ok((bytes, identity))
}
