//! Where a destination is and whose network it is: country, autonomous system and its
//! organisation, looked up in MMDB files the user provides (MaxMind GeoLite2/GeoIP2, DB-IP
//! Lite, IPinfo Lite), configured in `[enrich]` ([`crate::config::EnrichConfig`]).
//!
//! Who does what:
//! * the file watcher's thread owns [`DatabaseFiles`]: it opens the files, and re-opens one
//!   when it is replaced ([`DatabaseFiles::check`]); that is the only file I/O here, and it
//!   hands the result on as a [`Databases`], a cheap clone of `Arc`s;
//! * the poller owns an [`Enricher`]: the current [`Databases`] and a bounded [`Cache`] by
//!   address, so a lookup in a database happens once per address, not per flow and poll;
//!   [`Enricher::replace`] swaps the databases and empties the cache.
//!
//! Its parts: the label values and their checks (`label`), the vendors' layouts (`layout`),
//! one open file (`database`), record decoding (`lookup`), the cache (`cache`) and the
//! watcher's side (`watch`).

use std::net::IpAddr;
use std::sync::Arc;

mod cache;
mod database;
mod label;
mod layout;
mod lookup;
mod watch;

#[cfg(test)]
mod tests;

pub use cache::Cache;
pub use database::{Database, DatabaseError, FileIdentity, LookupError, MAX_DATABASE_BYTES, Roles};
pub use label::{Asn, Country, ORG_MAX_CHARS, sanitize_org};
pub use layout::{Layout, LayoutSetting, LayoutSource, detect as detect_layout};
pub use lookup::Found;
pub use watch::{Check, DatabaseFiles};

/// What the databases say about one address; each part `None` where none knows (exported
/// as `unknown`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enrichment {
    pub country: Option<Country>,
    pub asn: Option<Asn>,
    /// The AS's organisation, fit for a label ([`sanitize_org`]); shared, so a copy is a
    /// reference count.
    pub org: Option<Arc<str>>,
}

/// The databases open now: one for countries, one for AS numbers and organisations, either
/// missing, or both the same file (IPinfo Lite holds both).
#[derive(Debug, Clone, Default)]
pub struct Databases {
    country: Option<Arc<Database>>,
    asn: Option<Arc<Database>>,
}

impl Databases {
    pub fn new(country: Option<Arc<Database>>, asn: Option<Arc<Database>>) -> Databases {
        Databases { country, asn }
    }

    pub fn country(&self) -> Option<&Arc<Database>> {
        self.country.as_ref()
    }

    pub fn asn(&self) -> Option<&Arc<Database>> {
        self.asn.as_ref()
    }

    /// No database at all: every address is unknown.
    pub fn is_empty(&self) -> bool {
        self.country.is_none() && self.asn.is_none()
    }

    /// Bytes the open databases hold in memory (a file serving both counted once).
    pub fn memory_bytes(&self) -> u64 {
        let country = self.country.as_ref().map_or(0, |db| db.memory_bytes());
        let asn = match (&self.country, &self.asn) {
            (Some(c), Some(a)) if Arc::ptr_eq(c, a) => 0,
            (_, asn) => asn.as_ref().map_or(0, |db| db.memory_bytes()),
        };
        country + asn
    }

    /// Looks `addr` up in each database (once in a file that serves both). A record that
    /// fails to decode leaves its parts unknown and is returned as the error, the first if
    /// both fail.
    pub fn lookup(&self, addr: IpAddr) -> (Enrichment, Option<LookupError>) {
        let addr = addr.to_canonical();
        let mut error = None;
        let mut look = |db: &Database| {
            db.lookup(addr).unwrap_or_else(|e| {
                error.get_or_insert(e);
                Found::default()
            })
        };
        let shared = matches!((&self.country, &self.asn), (Some(c), Some(a)) if Arc::ptr_eq(c, a));
        let country = self.country.as_deref().map(&mut look).unwrap_or_default();
        let asn = if shared {
            country.clone()
        } else {
            self.asn.as_deref().map(&mut look).unwrap_or_default()
        };
        let enrichment = Enrichment {
            country: country.country,
            asn: asn.asn,
            org: asn.org,
        };
        (enrichment, error)
    }
}

/// Counts since the agent started, for the agent's own metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnrichStats {
    /// Addresses asked for.
    pub lookups: u64,
    /// Of those, answered from the cache.
    pub cache_hits: u64,
    /// Records that failed to decode (a damaged file).
    pub lookup_errors: u64,
}

/// The databases and the cache in front of them, owned by the poller.
#[derive(Debug)]
pub struct Enricher {
    databases: Databases,
    cache: Cache,
    stats: EnrichStats,
    /// A lookup error was logged for these databases: the next ones are only counted.
    logged_error: bool,
    generation: u64,
}

impl Enricher {
    /// `cache_entries`: the `[enrich]` key of that name.
    pub fn new(databases: Databases, cache_entries: u32) -> Enricher {
        Enricher {
            databases,
            cache: Cache::new(cache_entries as usize),
            stats: EnrichStats::default(),
            logged_error: false,
            generation: 0,
        }
    }

    /// What the databases say about `addr` (IPv4-mapped IPv6 addresses as IPv4), from the
    /// cache when it was asked before.
    pub fn lookup(&mut self, addr: IpAddr) -> Enrichment {
        let addr = addr.to_canonical();
        self.stats.lookups += 1;
        if self.databases.is_empty() {
            return Enrichment::default();
        }
        if let Some(hit) = self.cache.get(&addr) {
            self.stats.cache_hits += 1;
            return hit;
        }
        let (enrichment, error) = self.databases.lookup(addr);
        if let Some(e) = error {
            self.stats.lookup_errors += 1;
            if !self.logged_error {
                self.logged_error = true;
                tracing::warn!("{e}; further lookup errors are only counted");
            }
        }
        self.cache.insert(addr, enrichment.clone());
        enrichment
    }

    /// Takes new databases (one was re-opened): what the cache knew may be wrong now.
    pub fn replace(&mut self, databases: Databases) {
        self.databases = databases;
        self.cache.clear();
        self.logged_error = false;
        self.generation += 1;
    }

    /// Bumped by every [`Enricher::replace`]: what was looked up under another generation may
    /// be out of date.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn databases(&self) -> &Databases {
        &self.databases
    }

    pub fn stats(&self) -> EnrichStats {
        self.stats
    }

    /// Entries in the cache now.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}
