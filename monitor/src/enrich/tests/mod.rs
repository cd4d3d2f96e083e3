//! Enrichment from real files, written by the lab's MMDB writer in each vendor's layout; here
//! the helpers the themes share.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use egress_lab::mmdb::{self, MmdbWriter, Value, net};

use super::*;

mod errors;
mod vendors;
mod watch;

/// A directory of its own per test, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("egress-enrich-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const COUNTRY: Roles = Roles {
    country: true,
    asn: false,
};
const ASN: Roles = Roles {
    country: false,
    asn: true,
};
const BOTH: Roles = Roles {
    country: true,
    asn: true,
};

fn write(dir: &Dir, name: &str, db: &MmdbWriter) -> PathBuf {
    let path = dir.path(name);
    db.write(&path).unwrap();
    path
}

fn open(path: &Path, roles: Roles) -> Arc<Database> {
    Arc::new(Database::open(path, LayoutSetting::Auto, roles).unwrap_or_else(|e| panic!("{e}")))
}

fn enrichment(country: Option<&str>, asn: Option<u32>, org: Option<&str>) -> Enrichment {
    Enrichment {
        country: country.and_then(Country::parse),
        asn: asn.and_then(Asn::from_number),
        org: org.map(Arc::from),
    }
}

fn country_networks() -> [(mmdb::Network, &'static str); 3] {
    [
        (net("192.0.2.0/24"), "DE"),
        (net("198.51.100.0/24"), "CN"),
        (net("2001:db8::/32"), "NL"),
    ]
}

fn asn_networks() -> [(mmdb::Network, u32, &'static str); 2] {
    [
        (net("198.51.100.0/24"), 64_501, "Vendor Cloud\tLtd\u{7}"),
        (net("2001:db8::/32"), 64_500, "Example Hosting GmbH"),
    ]
}
