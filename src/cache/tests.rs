//! Unit tests for [`crate::cache`] over a real SQLite store wrapped to count (and slow down)
//! `find_credential` calls.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::keys::{KeyFormat, KeyHasher};
use crate::secret::Secret;
use crate::store::sqlite::SqliteStore;
use crate::store::{
    AccountStatus, CredentialReads, Directory, KeyPatch, KeyStatus, NewAccount, StoreResult,
};

/// Delegates to SQLite; counts credential reads, can slow them down, and can fail them.
struct Counting {
    inner: SqliteStore,
    reads: AtomicUsize,
    /// Reads that got their answer from SQLite (before `hold_after`).
    answered: AtomicUsize,
    delay: Duration,
    /// Waits after reading until `release` gives it a permit, so a write can commit between
    /// the read and the cache insert. A gate, not a sleep: the store's own threads are outside
    /// tokio's paused clock, which would let a sleep pass before the write commits.
    hold_after: bool,
    release: tokio::sync::Semaphore,
    fail: AtomicBool,
}

impl Counting {
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

/// The cache only reads, so writes go straight to SQLite (`f.store.create_key(..)` derefs).
impl std::ops::Deref for Counting {
    type Target = SqliteStore;
    fn deref(&self) -> &SqliteStore {
        &self.inner
    }
}

#[async_trait]
impl CredentialReads for Counting {
    async fn find_credential(&self, hash: &KeyHash) -> StoreResult<Option<Credential>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("test: store down".into()));
        }
        let found = self.inner.find_credential(hash).await;
        self.answered.fetch_add(1, Ordering::SeqCst);
        if self.hold_after {
            if let Ok(permit) = self.release.acquire().await {
                permit.forget();
            }
        }
        found
    }
    async fn set_token_cutoff(&self, subject: &str, at: i64) -> StoreResult<()> {
        self.inner.set_token_cutoff(subject, at).await
    }
    async fn token_cutoffs(&self, since: i64) -> StoreResult<Vec<(String, i64)>> {
        self.inner.token_cutoffs(since).await
    }
}

struct Fixture {
    store: Arc<Counting>,
    cache: Arc<KeyCache>,
    metrics: Arc<Metrics>,
    hasher: KeyHasher,
    format: KeyFormat,
    _dir: tempfile::TempDir,
}

struct Opts {
    delay: Duration,
    hold_after: bool,
    ttl: Duration,
    max_stale: Duration,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            hold_after: false,
            ttl: Duration::from_secs(60),
            max_stale: Duration::from_secs(60),
        }
    }
}

fn fixture(opts: Opts) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = SqliteStore::open(&dir.path().join("cache.db")).expect("sqlite");
    let store = Arc::new(Counting {
        inner,
        reads: AtomicUsize::new(0),
        answered: AtomicUsize::new(0),
        delay: opts.delay,
        hold_after: opts.hold_after,
        release: tokio::sync::Semaphore::new(0),
        fail: AtomicBool::new(false),
    });
    let metrics = Arc::new(Metrics::new(&[]));
    let cache = Arc::new(KeyCache::new(
        store.clone(),
        metrics.clone(),
        opts.ttl,
        Duration::from_secs(60),
        opts.max_stale,
        10_000,
    ));
    Fixture {
        store,
        cache,
        metrics,
        hasher: KeyHasher::new(&Secret::new("cache-test-pepper")),
        format: KeyFormat::new("kg_cache_", 32),
        _dir: dir,
    }
}

impl Fixture {
    /// A new account with one active key; returns (account id, key id, hash).
    async fn key(&self) -> (String, String, KeyHash) {
        let account = self
            .store
            .create_account(NewAccount {
                name: "a".into(),
                metadata: Default::default(),
            })
            .await
            .expect("account");
        let (key_id, hash) = self.key_in(&account.id).await;
        (account.id, key_id, hash)
    }

    async fn key_in(&self, account_id: &str) -> (String, KeyHash) {
        let (new, _) =
            crate::test_util::new_key(&self.format, &self.hasher, account_id, &["leads:read"]);
        let hash = new.hash;
        let rec = self.store.create_key(new).await.expect("key");
        (rec.id, hash)
    }

    async fn found(&self, hash: &KeyHash) -> Arc<CachedCredential> {
        match self.cache.get_or_load(hash).await.expect("lookup") {
            Lookup::Found(c) => c,
            Lookup::Unknown => panic!("expected a found key"),
        }
    }
}

/// Paused time: the first load's 50 ms store delay ends only once every other caller is waiting,
/// however slow the machine, so all 50 are sure to arrive while it is in flight.
#[tokio::test(start_paused = true)]
async fn concurrent_misses_make_one_store_read() {
    let f = fixture(Opts {
        delay: Duration::from_millis(50),
        ..Opts::default()
    });
    let (_, key_id, hash) = f.key().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let cache = f.cache.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            cache.get_or_load(&hash).await
        });
    }
    let mut found = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task").expect("lookup") {
            Lookup::Found(c) => {
                assert_eq!(c.credential.key.id, key_id);
                found += 1;
            }
            Lookup::Unknown => panic!("a concurrent caller saw Unknown"),
        }
    }
    assert_eq!(found, 50);
    assert_eq!(f.store.reads(), 1, "single-flight: one store read");
    // And later lookups are hits.
    f.found(&hash).await;
    assert_eq!(f.store.reads(), 1);
}

#[tokio::test]
async fn found_entries_are_cached() {
    let f = fixture(Opts::default());
    let (account_id, key_id, hash) = f.key().await;
    let c = f.found(&hash).await;
    assert_eq!(c.credential.key.id, key_id);
    assert_eq!(c.credential.account.id, account_id);
    assert_eq!(f.store.reads(), 1);
    let again = f.found(&hash).await;
    assert!(Arc::ptr_eq(&c, &again), "the same cached record");
    assert_eq!(f.store.reads(), 1);
    let text = f.metrics.render();
    assert!(
        text.contains(r#"keygate_cache_lookups_total{result="hit"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"keygate_cache_lookups_total{result="miss"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_hashes_are_cached_negatively() {
    let f = fixture(Opts::default());
    let hash = f.hasher.hash(f.format.generate().expose());
    assert!(matches!(
        f.cache.get_or_load(&hash).await.expect("lookup"),
        Lookup::Unknown
    ));
    assert_eq!(f.store.reads(), 1);
    assert!(matches!(
        f.cache.get_or_load(&hash).await.expect("lookup"),
        Lookup::Unknown
    ));
    assert_eq!(
        f.store.reads(),
        1,
        "the second lookup must not read the store"
    );
    let text = f.metrics.render();
    assert!(
        text.contains(r#"keygate_cache_lookups_total{result="negative_hit"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn invalidating_a_key_makes_the_next_lookup_read_the_store() {
    let f = fixture(Opts::default());
    let (_, key_id, hash) = f.key().await;
    assert_eq!(
        f.found(&hash).await.credential.key.status,
        KeyStatus::Active
    );
    f.store
        .update_key(
            &key_id,
            KeyPatch {
                status: Some(KeyStatus::Revoked),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("revoke");
    // Without an invalidation the cache still answers (proves the entry was cached).
    assert_eq!(
        f.found(&hash).await.credential.key.status,
        KeyStatus::Active
    );
    assert_eq!(f.store.reads(), 1);

    f.cache.invalidate_local(&Invalidation::Key(hash)).await;
    assert_eq!(
        f.found(&hash).await.credential.key.status,
        KeyStatus::Revoked
    );
    assert_eq!(f.store.reads(), 2);
}

#[tokio::test]
async fn invalidating_a_key_drops_a_negative_entry() {
    let f = fixture(Opts::default());
    let account = f
        .store
        .create_account(NewAccount {
            name: "a".into(),
            metadata: Default::default(),
        })
        .await
        .expect("account");
    let (mut new, _) = crate::test_util::new_key(&f.format, &f.hasher, &account.id, &[]);
    new.name = "late".into();
    let hash = new.hash;
    assert!(matches!(
        f.cache.get_or_load(&hash).await.expect("lookup"),
        Lookup::Unknown
    ));
    f.store.create_key(new).await.expect("key");
    f.cache.invalidate_local(&Invalidation::Key(hash)).await;
    assert_eq!(f.found(&hash).await.credential.key.name, "late");
}

#[tokio::test]
async fn invalidating_an_account_drops_exactly_its_keys() {
    let f = fixture(Opts::default());
    let (account_id, _, hash_a) = f.key().await;
    let (_, hash_a2) = f.key_in(&account_id).await;
    let (_, _, hash_other) = f.key().await;
    for h in [&hash_a, &hash_a2, &hash_other] {
        assert_eq!(
            f.found(h).await.credential.account.status,
            AccountStatus::Active
        );
    }
    assert_eq!(f.store.reads(), 3);

    f.store
        .set_account_status(&account_id, AccountStatus::Suspended)
        .await
        .expect("suspend");
    assert_eq!(
        f.found(&hash_a).await.credential.account.status,
        AccountStatus::Active,
        "cached until invalidated"
    );
    assert_eq!(f.store.reads(), 3);

    f.cache
        .invalidate_local(&Invalidation::Account(account_id.clone()))
        .await;
    assert_eq!(
        f.found(&hash_a).await.credential.account.status,
        AccountStatus::Suspended
    );
    assert_eq!(
        f.found(&hash_a2).await.credential.account.status,
        AccountStatus::Suspended
    );
    assert_eq!(f.store.reads(), 5);
    // The other account's entry was kept.
    assert_eq!(
        f.found(&hash_other).await.credential.account.status,
        AccountStatus::Active
    );
    assert_eq!(f.store.reads(), 5);
}

#[tokio::test]
async fn invalidate_all_drops_everything() {
    let f = fixture(Opts::default());
    let (_, _, a) = f.key().await;
    let (_, _, b) = f.key().await;
    f.found(&a).await;
    f.found(&b).await;
    assert_eq!(f.store.reads(), 2);
    f.cache.invalidate_local(&Invalidation::All).await;
    f.found(&a).await;
    f.found(&b).await;
    assert_eq!(f.store.reads(), 4);
}

/// A write that commits while a load is between its store read and its cache insert: the
/// loader notices the invalidation and re-reads, so the old record is never cached. The loader
/// holds after its read until the write has committed and invalidated.
#[tokio::test(start_paused = true)]
async fn a_load_racing_a_write_does_not_cache_the_old_record() {
    let f = fixture(Opts {
        hold_after: true,
        ..Opts::default()
    });
    let (_, key_id, hash) = f.key().await;
    let cache = f.cache.clone();
    let load = tokio::spawn(async move { cache.get_or_load(&hash).await });
    // Wait until the loader has read the (still active) key.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while f.store.answered.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "the load never read");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    f.store
        .update_key(
            &key_id,
            KeyPatch {
                status: Some(KeyStatus::Revoked),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("revoke");
    f.cache.invalidate_local(&Invalidation::Key(hash)).await;
    f.store.release.add_permits(8);
    match load.await.expect("task").expect("lookup") {
        Lookup::Found(c) => assert_eq!(c.credential.key.status, KeyStatus::Revoked),
        Lookup::Unknown => panic!("key vanished"),
    }
    assert_eq!(f.store.reads(), 2, "the loader re-read once");
    // The invalidation also took the load's slot, so its answer was not cached: the next
    // lookup reads again, and sees the revoked record.
    assert_eq!(
        f.found(&hash).await.credential.key.status,
        KeyStatus::Revoked
    );
    assert!(f.store.reads() <= 3);
    f.found(&hash).await;
    assert!(f.store.reads() <= 3, "cached from then on");
}

/// `invalidate` (what admin writes call) drops the entry at once; its delayed repeat only drops
/// entries loaded before the invalidation, so a fresh entry survives it. Paused time: the wait
/// for the repeat passes at once.
#[tokio::test(start_paused = true)]
async fn invalidate_drops_at_once_and_keeps_fresh_entries() {
    let f = fixture(Opts::default());
    let (_, key_id, hash) = f.key().await;
    f.found(&hash).await;
    f.store
        .update_key(
            &key_id,
            KeyPatch {
                status: Some(KeyStatus::Disabled),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("disable");
    f.cache.invalidate(&Invalidation::Key(hash)).await;
    assert_eq!(
        f.found(&hash).await.credential.key.status,
        KeyStatus::Disabled
    );
    assert_eq!(f.store.reads(), 2);
    // Past the repeat: the fresh entry is still cached.
    tokio::time::sleep(REPEAT_INVALIDATION_AFTER * 2).await;
    assert_eq!(
        f.found(&hash).await.credential.key.status,
        KeyStatus::Disabled
    );
    assert_eq!(f.store.reads(), 2, "a fresh entry survives the repeat");
}

/// After a lost invalidation subscription every entry is re-read before its next use, and kept
/// as the stale-if-error fallback meanwhile.
#[tokio::test]
async fn revalidate_all_rereads_before_next_use() {
    let f = fixture(Opts::default());
    let (_, key_a, a) = f.key().await;
    let (_, _, b) = f.key().await;
    f.found(&a).await;
    f.found(&b).await;
    assert_eq!(f.store.reads(), 2);
    f.store
        .update_key(
            &key_a,
            KeyPatch {
                status: Some(KeyStatus::Revoked),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("revoke");

    f.cache.revalidate_all();
    assert_eq!(f.found(&a).await.credential.key.status, KeyStatus::Revoked);
    assert_eq!(f.store.reads(), 3);
    // Re-read once, then cached again.
    f.found(&a).await;
    assert_eq!(f.store.reads(), 3);

    // With the store down, the entry not yet re-read is served stale rather than failing.
    f.store.fail.store(true, Ordering::SeqCst);
    assert_eq!(f.found(&b).await.credential.key.status, KeyStatus::Active);
    assert!(f.store.reads() > 3, "a re-read was attempted");
    assert!(
        f.metrics
            .render()
            .contains("keygate_cache_stale_served_total 1"),
        "{}",
        f.metrics.render()
    );
}

#[tokio::test]
async fn store_errors_are_not_cached() {
    let f = fixture(Opts::default());
    let (_, key_id, hash) = f.key().await;
    f.store.fail.store(true, Ordering::SeqCst);
    assert!(f.cache.get_or_load(&hash).await.is_err(), "never fail open");
    let failed_reads = f.store.reads();
    assert!(failed_reads >= 1);
    f.store.fail.store(false, Ordering::SeqCst);
    assert_eq!(f.found(&hash).await.credential.key.id, key_id);
    assert_eq!(
        f.store.reads(),
        failed_reads + 1,
        "the error was not cached: the next lookup read the store"
    );
}

#[tokio::test]
async fn unknown_key_with_store_down_is_an_error() {
    let f = fixture(Opts::default());
    let hash = f.hasher.hash(f.format.generate().expose());
    f.store.fail.store(true, Ordering::SeqCst);
    assert!(f.cache.get_or_load(&hash).await.is_err());
}

#[tokio::test]
async fn stale_entry_is_served_while_the_store_fails() {
    let f = fixture(Opts {
        ttl: Duration::from_millis(20),
        max_stale: Duration::from_secs(60),
        ..Opts::default()
    });
    let (_, key_id, hash) = f.key().await;
    f.found(&hash).await;
    // Past the TTL, a lookup refreshes from the store.
    until_a_lookup_reads(&f, &hash, &key_id).await;
    // Past the TTL again, with the store down: the stale entry keeps working.
    f.store.fail.store(true, Ordering::SeqCst);
    until_a_lookup_reads(&f, &hash, &key_id).await;
    assert!(
        f.metrics
            .render()
            .contains("keygate_cache_stale_served_total 1"),
        "{}",
        f.metrics.render()
    );
}

/// Looks `hash` up every few milliseconds, each answer being `key_id`, until a lookup tries the
/// store: the entry has passed its TTL. The TTL runs on the wall clock (`std::time::Instant`,
/// which tokio's paused time does not move), so this polls rather than sleeping for it.
async fn until_a_lookup_reads(f: &Fixture, hash: &KeyHash, key_id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reads = f.store.reads();
        assert_eq!(f.found(hash).await.credential.key.id, key_id);
        if f.store.reads() > reads {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no lookup tried the store"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The account index follows the cache: a key dropped by its own invalidation, by its
/// account's, or by eviction leaves the index, so it never outgrows what is cached.
#[tokio::test]
async fn the_account_index_follows_the_cache() {
    let f = fixture(Opts::default());
    let (account_id, _, first) = f.key().await;
    let (_, second) = f.key_in(&account_id).await;
    f.found(&first).await;
    f.found(&second).await;
    let accounts = &f.cache.owners.accounts;
    let mut indexed = accounts.of(&account_id);
    indexed.sort();
    let mut both = vec![first, second];
    both.sort();
    assert_eq!(indexed, both);

    f.cache.invalidate_local(&Invalidation::Key(first)).await;
    f.cache.settle().await;
    assert_eq!(accounts.of(&account_id), vec![second]);

    f.cache
        .invalidate_local(&Invalidation::Account(account_id.clone()))
        .await;
    f.cache.settle().await;
    assert!(accounts.of(&account_id).is_empty());
    assert!(accounts.is_empty(), "no empty slot is kept");
    // Both are read again, and indexed again.
    f.found(&first).await;
    assert_eq!(accounts.of(&account_id), vec![first]);
}

/// A revoke and the key's next request: the entry is dropped and loaded again before the
/// drop's index removal lands. The key must stay indexed, or its account's suspension would
/// miss it.
#[tokio::test]
async fn a_key_dropped_and_loaded_again_stays_indexed() {
    let f = fixture(Opts::default());
    let (account_id, _, hash) = f.key().await;
    f.found(&hash).await;
    f.cache.invalidate_local(&Invalidation::Key(hash)).await;
    f.found(&hash).await;
    f.cache.settle().await;
    assert_eq!(f.cache.owners.accounts.of(&account_id), vec![hash]);
    assert_eq!(f.store.reads(), 2);

    f.store
        .set_account_status(&account_id, AccountStatus::Suspended)
        .await
        .expect("suspend");
    f.cache
        .invalidate_local(&Invalidation::Account(account_id.clone()))
        .await;
    assert_eq!(
        f.found(&hash).await.credential.account.status,
        AccountStatus::Suspended
    );
    assert_eq!(f.store.reads(), 3);
}

/// A user's change drops the cached keys bound to that user, and no other key of its account.
#[tokio::test]
async fn invalidating_a_user_drops_exactly_its_keys() {
    let f = fixture(Opts::default());
    let (account_id, _, unbound) = f.key().await;
    let user = f
        .store
        .create_user(crate::store::NewUser {
            account_id: account_id.clone(),
            email: "u@example.com".into(),
            password_hash: "not-a-hash".into(),
            role: crate::store::Role::Member,
        })
        .await
        .expect("user");
    let (mut new, _) =
        crate::test_util::new_key(&f.format, &f.hasher, &account_id, &["leads:read"]);
    new.user_id = Some(user.id.clone());
    let bound = new.hash;
    f.store.create_key(new).await.expect("key");

    let c = f.found(&bound).await;
    let cached_user = c.credential.user.as_ref().expect("the key's user");
    assert_eq!(cached_user.id, user.id);
    assert_eq!(cached_user.role(), Some(crate::store::Role::Member));
    f.found(&unbound).await;
    assert_eq!(f.store.reads(), 2);

    f.store
        .update_user(
            &user.id,
            crate::store::UserPatch {
                role: Some(crate::store::Role::ReadOnly),
                ..Default::default()
            },
        )
        .await
        .expect("role");
    f.cache
        .invalidate_local(&Invalidation::User(user.id.clone()))
        .await;
    let c = f.found(&bound).await;
    assert_eq!(
        c.credential.user.as_ref().and_then(|u| u.role()),
        Some(crate::store::Role::ReadOnly)
    );
    assert_eq!(f.store.reads(), 3);
    f.found(&unbound).await;
    assert_eq!(f.store.reads(), 3, "the account's other key stayed cached");
}

/// Keys of one account share its facts, and keys with one scope list share one set: what a
/// cached key costs is mostly its own id and name.
#[tokio::test]
async fn cached_keys_share_their_account_and_scopes() {
    let f = fixture(Opts::default());
    let (account_id, _, first) = f.key().await;
    let (_, second) = f.key_in(&account_id).await;
    let (a, b) = (f.found(&first).await, f.found(&second).await);
    assert!(Arc::ptr_eq(&a.credential.account, &b.credential.account));
    assert!(Arc::ptr_eq(
        &a.credential.key.scopes,
        &b.credential.key.scopes
    ));
    assert_eq!(a.credential.account.id, account_id);
    let identity = a.identity();
    assert_eq!(
        identity.account_id,
        Some(http::HeaderValue::from_str(&account_id).expect("header"))
    );
    assert_eq!(
        identity.scopes,
        Some(http::HeaderValue::from_static("leads:read"))
    );
    assert_eq!(identity.user_id, None);
}
