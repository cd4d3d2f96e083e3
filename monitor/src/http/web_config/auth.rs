//! `basic_auth_users`: HTTP basic authentication against bcrypt hashes, with the work bounded.
//!
//! bcrypt is slow on purpose (cost 10 is about 50 ms of CPU), so a burst of wrong passwords
//! could keep the two HTTP workers busy and stall every scrape. Three bounds keep it cheap:
//!
//! * a (user, hash, password) that was right once is remembered, by its SHA-256, so a correct
//!   Prometheus costs one bcrypt per process lifetime (as the toolkit's cache);
//! * at most [`BCRYPT_THREADS`] checks run at once, on blocking threads, never on the async
//!   workers; at most [`QUEUED_CHECKS`] wait, and the next is refused at once (429) without
//!   any bcrypt;
//! * an unknown user is checked against a fixed hash, so the answer's timing does not tell
//!   which users exist; bcrypt's own comparison is constant-time.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

/// bcrypt checks at once.
pub const BCRYPT_THREADS: usize = 2;
/// Checks running or waiting, beyond which a request is refused without one.
pub const QUEUED_CHECKS: usize = 8;
/// Remembered successes; the set is emptied when full (only right passwords get in, so only
/// a change of users or passwords fills it).
const CACHE_ENTRIES: usize = 256;
/// bcrypt (cost 10) of a password nobody has, checked for unknown users.
const DECOY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// What a request's credentials come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No credentials, or wrong ones: 401 with `WWW-Authenticate: Basic`.
    Denied,
    /// Too many checks already running or waiting: 429, no bcrypt spent.
    Busy,
}

/// Checks that every user's hash is one bcrypt can read (the toolkit's `validateUsers`).
pub fn check_users(users: &BTreeMap<String, String>) -> Result<(), String> {
    for (user, hash) in users {
        hash.parse::<bcrypt::HashParts>().map_err(|e| {
            format!("basic_auth_users: the hash of user {user:?} is not a bcrypt hash: {e}")
        })?;
    }
    Ok(())
}

/// The checker shared by every request: the cache and the bounds.
pub struct Checker {
    /// SHA-256 of the (user, hash, password) triples that were right. Held for a lookup or
    /// an insert, never during bcrypt.
    cache: Mutex<HashSet<[u8; 32]>>,
    permits: Arc<Semaphore>,
    in_flight: AtomicUsize,
}

impl Default for Checker {
    fn default() -> Self {
        Self {
            cache: Mutex::new(HashSet::new()),
            permits: Arc::new(Semaphore::new(BCRYPT_THREADS)),
            in_flight: AtomicUsize::new(0),
        }
    }
}

/// Decrements the count of checks when a check ends, also when its request is dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Checker {
    /// Judges an `Authorization` header's value against `users`.
    pub async fn check(&self, users: &BTreeMap<String, String>, header: Option<&[u8]>) -> Verdict {
        let Some((user, password)) = header.and_then(parse_basic) else {
            return Verdict::Denied;
        };
        let known = users.get(&user);
        let hash = known.map_or(DECOY_HASH, String::as_str).to_owned();
        let key = cache_key(&user, &hash, &password);
        if known.is_some()
            && self
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key)
        {
            return Verdict::Allowed;
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= QUEUED_CHECKS {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Verdict::Busy;
        }
        let _in_flight = InFlight(&self.in_flight);
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return Verdict::Denied;
        };
        let checked = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            bcrypt::verify(password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if checked && known.is_some() {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(key);
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }
}

/// The user and password of `Basic <base64(user:password)>`; the scheme's case does not
/// matter (RFC 7617).
pub fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Each part with its length first, so that no two triples share a key.
fn cache_key(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut sha = Sha256::new();
    for part in [user, hash, password] {
        sha.update((part.len() as u64).to_be_bytes());
        sha.update(part.as_bytes());
    }
    sha.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> Vec<u8> {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}").into_bytes()
    }

    fn users() -> BTreeMap<String, String> {
        // Cost 4: the tests check the logic, not bcrypt's speed.
        BTreeMap::from([
            ("dave".to_owned(), bcrypt::hash("dave123", 4).unwrap()),
            ("carol".to_owned(), bcrypt::hash("carol123", 4).unwrap()),
        ])
    }

    #[test]
    fn basic_headers_are_parsed_strictly() {
        assert_eq!(
            parse_basic(&header("dave", "a:b")),
            Some(("dave".into(), "a:b".into()))
        );
        assert_eq!(
            parse_basic(b"basic ZGF2ZTpkYXZlMTIz"),
            Some(("dave".into(), "dave123".into()))
        );
        for bad in [
            &b"Bearer abc"[..],
            b"Basic !!!",
            b"Basic",
            b"Basic ZGF2ZQ==",
            b"\xff",
        ] {
            assert_eq!(parse_basic(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hashes_must_be_bcrypt() {
        assert!(check_users(&users()).is_ok());
        let bad = BTreeMap::from([("alice".to_owned(), "$2y$10$short".to_owned())]);
        let e = check_users(&bad).unwrap_err();
        assert!(
            e.contains("basic_auth_users") && e.contains("\"alice\""),
            "{e}"
        );
        let plain = BTreeMap::from([("bob".to_owned(), "hunter2".to_owned())]);
        assert!(check_users(&plain).is_err());
    }

    #[tokio::test]
    async fn users_as_the_toolkit_judges_them() {
        let checker = Checker::default();
        let users = users();
        // (user, password, verdict): the toolkit's TestUsers cases.
        let cases = [
            ("dave", "dave123", Verdict::Allowed),
            ("carol", "carol123", Verdict::Allowed),
            ("dave", "bad", Verdict::Denied),
            ("nonexistent", "nonexistent", Verdict::Denied),
            // The decoy hash's own password opens nothing.
            ("nobody", "fakepassword", Verdict::Denied),
            ("carol", "dave123", Verdict::Denied),
        ];
        for (user, password, expected) in cases {
            let verdict = checker.check(&users, Some(&header(user, password))).await;
            assert_eq!(verdict, expected, "{user}:{password}");
        }
        assert_eq!(checker.check(&users, None).await, Verdict::Denied);
        // Two right pairs remembered, no wrong one.
        assert_eq!(checker.cache.lock().unwrap().len(), 2);
        // A new hash for the same user: the old pair is no longer enough.
        let mut changed = users.clone();
        changed.insert("dave".into(), bcrypt::hash("new", 4).unwrap());
        let verdict = checker
            .check(&changed, Some(&header("dave", "dave123")))
            .await;
        assert_eq!(verdict, Verdict::Denied);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_is_refused_beyond_the_queue_and_a_known_pair_still_passes() {
        let checker = Arc::new(Checker::default());
        // Cost 12: each check takes long enough for the burst to pile up.
        let users = Arc::new(BTreeMap::from([(
            "prometheus".to_owned(),
            bcrypt::hash("right", 12).unwrap(),
        )]));
        assert_eq!(
            checker
                .check(&users, Some(&header("prometheus", "right")))
                .await,
            Verdict::Allowed
        );
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..40 {
            let (checker, users) = (checker.clone(), users.clone());
            burst.spawn(async move {
                checker
                    .check(&users, Some(&header("prometheus", &format!("wrong{i}"))))
                    .await
            });
        }
        tokio::task::yield_now().await;
        let started = std::time::Instant::now();
        let verdict = checker
            .check(&users, Some(&header("prometheus", "right")))
            .await;
        assert_eq!(verdict, Verdict::Allowed);
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        let verdicts = burst.join_all().await;
        let busy = verdicts.iter().filter(|v| **v == Verdict::Busy).count();
        let denied = verdicts.iter().filter(|v| **v == Verdict::Denied).count();
        assert_eq!(busy + denied, 40);
        assert!(
            denied <= QUEUED_CHECKS + 2 * BCRYPT_THREADS,
            "{denied} checked"
        );
        assert!(
            busy >= 40 - QUEUED_CHECKS - 2 * BCRYPT_THREADS,
            "{busy} refused"
        );
    }
}
