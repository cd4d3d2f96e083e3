//! The file watcher's side: the configured files, opened when they appear and re-opened when
//! they are replaced, each failure reported once per file version.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Databases;
use super::database::{Database, DatabaseError, FileIdentity, Roles};
use super::layout::LayoutSetting;
use crate::config::EnrichConfig;

/// One configured file.
#[derive(Debug)]
struct Slot {
    path: PathBuf,
    setting: LayoutSetting,
    roles: Roles,
    open: Option<Arc<Database>>,
    /// The file version whose failure was reported (`None`: the path named nothing), so that
    /// it is not tried and reported again until the path names another file.
    failed: Option<Option<FileIdentity>>,
}

/// What [`DatabaseFiles::check`] found.
#[derive(Debug, Default)]
pub struct Check {
    /// Some database was opened or re-opened: hand [`DatabaseFiles::databases`] to the
    /// poller.
    pub changed: bool,
    /// Those opened, to log (path, type, layout, build date, size).
    pub opened: Vec<Arc<Database>>,
    /// New failures, each to log once and count. A database that was open stays in use.
    pub errors: Vec<DatabaseError>,
}

/// The databases the configuration names, and what became of each file.
#[derive(Debug, Default)]
pub struct DatabaseFiles {
    slots: Vec<Slot>,
    /// Index of the slot for countries and for AS numbers (the same one for one file).
    country: Option<usize>,
    asn: Option<usize>,
    /// What they were made from, to tell a reload that names other files.
    config: EnrichConfig,
}

impl DatabaseFiles {
    /// The files `config` names, none opened yet: the first [`DatabaseFiles::check`] opens
    /// them. The same path for both is one file, opened once.
    pub fn new(config: &EnrichConfig) -> DatabaseFiles {
        let mut files = DatabaseFiles {
            config: config.clone(),
            ..DatabaseFiles::default()
        };
        if let Some(path) = &config.country_db {
            files.country = Some(files.slot(path, config.country_layout, true, false));
        }
        if let Some(path) = &config.asn_db {
            files.asn = Some(files.slot(path, config.asn_layout, false, true));
        }
        files
    }

    fn slot(&mut self, path: &Path, setting: LayoutSetting, country: bool, asn: bool) -> usize {
        if let Some(i) = self.slots.iter().position(|s| s.path == path) {
            let slot = &mut self.slots[i];
            slot.roles.country |= country;
            slot.roles.asn |= asn;
            if slot.setting == LayoutSetting::Auto {
                slot.setting = setting;
            }
            return i;
        }
        self.slots.push(Slot {
            path: path.to_owned(),
            setting,
            roles: Roles { country, asn },
            open: None,
            failed: None,
        });
        self.slots.len() - 1
    }

    /// Opens what is not open and re-opens what was replaced. Blocking file I/O: for the
    /// file watcher's thread.
    pub fn check(&mut self) -> Check {
        let mut check = Check::default();
        for slot in &mut self.slots {
            // A file that failed is not read again until the path names another one.
            let now = FileIdentity::of_path(&slot.path).ok();
            if slot.failed == Some(now) {
                continue;
            }
            let attempt = match &slot.open {
                Some(db) => db.reopen_if_replaced(),
                None => Database::open(&slot.path, slot.setting, slot.roles).map(Some),
            };
            match attempt {
                // The open file is still the one the path names: any failure is past.
                Ok(None) => slot.failed = None,
                Ok(Some(db)) => {
                    let db = Arc::new(db);
                    slot.open = Some(db.clone());
                    slot.failed = None;
                    check.opened.push(db);
                    check.changed = true;
                }
                Err(e) => {
                    // The version read may be newer than the one looked at above.
                    slot.failed = Some(FileIdentity::of_path(&slot.path).ok());
                    check.errors.push(e);
                }
            }
        }
        check
    }

    /// The configuration these files come from.
    pub fn config(&self) -> &EnrichConfig {
        &self.config
    }

    /// The databases open now.
    pub fn databases(&self) -> Databases {
        let open = |i: Option<usize>| i.and_then(|i| self.slots[i].open.clone());
        Databases::new(open(self.country), open(self.asn))
    }
}
