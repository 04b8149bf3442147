//! The validation cache: key hash -> the key and its account, so the common request touches no
//! store and no network.
//!
//! - Compact entries ([`credential`]): a million cached keys fit in a few hundred megabytes.
//! - Indexes ([`index`]): an account's or a user's change drops exactly its keys' entries, with
//!   no scan and no predicate left behind for requests to pay for.
//!
//! - Bounded ([`entries`], quick_cache), with a lifetime per entry: found keys live `ttl` (then
//!   stale-if-error, below), unknown hashes `negative_ttl` (a short negative TTL stops a flood of
//!   one bad key from reaching the store).
//! - Single-flight: N concurrent misses for one hash make one store read; a store error is
//!   handed to the callers waiting on that read, and not cached.
//! - Invalidation from outside: key writes call [`KeyCache::invalidate`] right after the store
//!   commit, so the very next request re-reads.
//!
//! - Stale-if-error: an entry older than `ttl` is refreshed by one request while the others keep
//!   using it; if the store fails, the entry keeps working until `ttl + max_stale`. Unknown keys
//!   get the store error (503): never fail open.
//! - Replicas: [`crate::invalidation::Invalidator`] calls [`KeyCache::invalidate`] for this
//!   replica's writes and publishes them; other replicas' events arrive through it as
//!   [`KeyCache::invalidate_local`].
//!
//! Known window: a load that read the store just before a write commits can insert the old
//! record just after the write's invalidation. Two guards narrow it: the loader re-reads when
//! an invalidation happened while it was reading, and every invalidation is repeated once
//! [`REPEAT_INVALIDATION_AFTER`] later, which bounds the window to that delay instead of the TTL.

mod credential;
mod entries;
mod index;
mod scopes;
mod text;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use credential::{AccountFacts, CachedCredential, Facts, KeyFacts, UserFacts};
pub use scopes::ScopeSet;
pub use text::Text;

use crate::invalidation::Invalidation;
use crate::keys::KeyHash;
use crate::metrics::{CacheResult, Eviction, Metrics};
use crate::store::{Credential, CredentialReads, StoreError};

use entries::{Entries, Entry};
use index::Owners;

pub const REPEAT_INVALIDATION_AFTER: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Arc<CachedCredential>),
    Unknown,
}

impl Entry {
    fn lookup(self) -> Result<Lookup, Arc<StoreError>> {
        match self {
            Entry::Found(c) => Ok(Lookup::Found(c)),
            Entry::Unknown(_) => Ok(Lookup::Unknown),
            Entry::Failed(e) => Err(e),
        }
    }
}

pub struct KeyCache {
    entries: Entries,
    /// Only the reads the request path makes (an `Arc<dyn Store>` coerces to it).
    store: Arc<dyn CredentialReads>,
    metrics: Arc<Metrics>,
    /// Bumped on every invalidation; a loader that sees it move re-reads.
    generation: AtomicU64,
    /// Entries whose load began before this generation must be re-read before use (set when
    /// events may have been lost). Unlike dropping them, this keeps them as the stale-if-error
    /// fallback if the store is still failing.
    revalidate_before: AtomicU64,
    ttl: Duration,
    negative_ttl: Duration,
    max_stale: Duration,
    /// Which cached hashes belong to which account and which user (so a change to one drops
    /// exactly its entries), and the facts entries share. Kept in step by the load path (adds)
    /// and [`Entries`] (removes).
    owners: Arc<Owners>,
}

impl KeyCache {
    /// A cache sized and timed as `[cache]` says.
    pub fn configured(
        store: Arc<dyn CredentialReads>,
        metrics: Arc<Metrics>,
        settings: &crate::config::CacheSettings,
    ) -> Self {
        Self::new(
            store,
            metrics,
            settings.ttl,
            settings.negative_ttl,
            settings.max_stale,
            settings.max_entries,
        )
    }

    pub fn new(
        store: Arc<dyn CredentialReads>,
        metrics: Arc<Metrics>,
        ttl: Duration,
        negative_ttl: Duration,
        max_stale: Duration,
        max_entries: u64,
    ) -> Self {
        let owners = Arc::new(Owners::default());
        Self {
            entries: Entries::new(max_entries, owners.clone(), metrics.clone()),
            store,
            metrics,
            generation: AtomicU64::new(0),
            revalidate_before: AtomicU64::new(0),
            ttl,
            negative_ttl,
            max_stale,
            owners,
        }
    }

    /// One cache lookup on a hit; on a miss, one shared store read for all concurrent callers.
    pub async fn get_or_load(&self, hash: &KeyHash) -> Result<Lookup, Arc<StoreError>> {
        match self.entries.get(hash) {
            Some(Entry::Found(c))
                if c.loaded_at.elapsed() > self.ttl
                    || c.load_generation < self.revalidate_before.load(Ordering::Acquire) =>
            {
                return self.refresh(hash, c).await;
            }
            Some(Entry::Found(c)) => {
                self.metrics.cache(CacheResult::Hit);
                return Ok(Lookup::Found(c));
            }
            Some(Entry::Unknown(at)) if at.elapsed() <= self.negative_ttl => {
                self.metrics.cache(CacheResult::NegativeHit);
                return Ok(Lookup::Unknown);
            }
            Some(Entry::Unknown(at)) => {
                // Past its lifetime: gone, unless a fresher answer took its place meanwhile.
                let expired = |e: &Entry| matches!(e, Entry::Unknown(t) if *t == at);
                if self.entries.remove_if(hash, expired) {
                    self.metrics.cache_evicted(Eviction::Expired);
                }
            }
            // A failed read is handed to its waiters only; not an answer for later callers.
            Some(Entry::Failed(_)) | None => {}
        }
        self.metrics.cache(CacheResult::Miss);
        self.load_shared(hash).await
    }

    /// The first caller to miss reads the store; the others wait for its answer, a failure
    /// included (which is then taken out, so the next request tries again).
    async fn load_shared(&self, hash: &KeyHash) -> Result<Lookup, Arc<StoreError>> {
        let slot = match self.entries.get_or_loading(hash).await {
            Ok(entry) => return entry.lookup(),
            Err(slot) => slot,
        };
        let entry = match self.load(*hash).await {
            Ok(lookup) => match lookup {
                Lookup::Found(c) => Entry::Found(c),
                Lookup::Unknown => Entry::Unknown(Instant::now()),
            },
            Err(e) => Entry::Failed(Arc::new(e)),
        };
        self.entries.fill(hash, slot, entry.clone());
        if let Entry::Failed(e) = &entry {
            self.entries.remove_if(
                hash,
                |cached| matches!(cached, Entry::Failed(f) if Arc::ptr_eq(f, e)),
            );
        }
        entry.lookup()
    }

    /// An entry past its TTL: one caller re-reads the store; the rest, and the reader itself
    /// when the store fails, use the old entry until `ttl + max_stale`.
    async fn refresh(
        &self,
        hash: &KeyHash,
        stale: Arc<CachedCredential>,
    ) -> Result<Lookup, Arc<StoreError>> {
        let within_stale = stale.loaded_at.elapsed() <= self.ttl + self.max_stale;
        if !within_stale {
            self.metrics.cache_evicted(Eviction::Expired);
        }
        if stale.refreshing.swap(true, Ordering::AcqRel) {
            // Someone else is refreshing it right now.
            if within_stale {
                self.metrics.cache(CacheResult::Hit);
                return Ok(Lookup::Found(stale));
            }
        }
        self.metrics.cache(CacheResult::Miss);
        match self.load(*hash).await {
            Ok(fresh) => {
                let entry = match &fresh {
                    Lookup::Found(c) => Entry::Found(c.clone()),
                    Lookup::Unknown => Entry::Unknown(Instant::now()),
                };
                self.entries.put(hash, entry).await;
                Ok(fresh)
            }
            Err(e) => {
                stale.refreshing.store(false, Ordering::Release);
                if within_stale {
                    self.metrics.stale_served();
                    Ok(Lookup::Found(stale))
                } else {
                    Err(Arc::new(e))
                }
            }
        }
    }

    /// Trust nothing cached: every entry is re-read before its next use (after a lost
    /// invalidation subscription). Entries stay as the stale-if-error fallback.
    pub fn revalidate_all(&self) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.revalidate_before.store(generation, Ordering::Release);
    }

    async fn load(&self, hash: KeyHash) -> Result<Lookup, StoreError> {
        // Bounded: after a few re-reads the last answer is as fresh as any.
        for _ in 0..3 {
            let before = self.generation.load(Ordering::Acquire);
            let found = match self.store.find_credential(&hash).await {
                Ok(found) => found,
                Err(StoreError::TimedOut) => return Err(StoreError::TimedOut),
                // One immediate retry: a pooled connection that died with its server fails the
                // first call after the server is back, and reconnects for the next.
                Err(_) => self.store.find_credential(&hash).await?,
            };
            if self.generation.load(Ordering::Acquire) == before {
                return Ok(self.to_lookup(hash, found, before));
            }
        }
        let before = self.generation.load(Ordering::Acquire);
        let found = self.store.find_credential(&hash).await?;
        Ok(self.to_lookup(hash, found, before))
    }

    /// The entry for a store read: the found key's compact facts, indexed under its account
    /// and user before it enters the cache, so a change racing this load finds it (and the
    /// generation check re-reads it).
    fn to_lookup(&self, hash: KeyHash, found: Option<Credential>, generation: u64) -> Lookup {
        match found {
            Some(c) => Lookup::Found(Arc::new(CachedCredential::loaded(
                self.owners.facts(&c, hash),
                c.key.last_used_at.unwrap_or(0),
                generation,
            ))),
            None => Lookup::Unknown,
        }
    }

    /// Drops the affected entries now and once more shortly after (see the module docs): for
    /// this replica's own writes. Token cut-offs are not the cache's and are ignored here.
    pub async fn invalidate(self: &Arc<Self>, event: &Invalidation) {
        self.invalidate_now(event).await;
        let generation = self.generation.load(Ordering::Acquire);
        let this = self.clone();
        let event = event.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REPEAT_INVALIDATION_AFTER).await;
            this.invalidate_loaded_before(&event, generation).await;
        });
    }

    /// The repeat: drops only the affected entries whose load began before the invalidation,
    /// so a fresh entry (which stale-if-error may need during an outage) survives it. Looks up
    /// exactly those entries; never a scan of the cache.
    async fn invalidate_loaded_before(&self, event: &Invalidation, generation: u64) {
        match event {
            Invalidation::Key(hash) => self.drop_if_loaded_before(hash, generation).await,
            Invalidation::Account(_) | Invalidation::User(_) => {
                for hash in self.hashes_of(event) {
                    self.drop_if_loaded_before(&hash, generation).await;
                }
            }
            // Re-read before next use rather than dropped: the same guarantee, no scan.
            Invalidation::All => {
                self.revalidate_before
                    .fetch_max(generation, Ordering::AcqRel);
            }
            Invalidation::TokenCutoff(..) => {}
        }
    }

    async fn drop_if_loaded_before(&self, hash: &KeyHash, generation: u64) {
        self.entries.remove_if(hash, |cached| match cached {
            Entry::Found(c) => c.load_generation < generation,
            Entry::Unknown(_) => true,
            Entry::Failed(_) => false,
        });
    }

    /// Applies an event heard from another replica (no re-publishing).
    pub async fn invalidate_local(&self, event: &Invalidation) {
        self.invalidate_now(event).await;
    }

    async fn invalidate_now(&self, event: &Invalidation) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        match event {
            Invalidation::Key(hash) => self.entries.remove(hash),
            Invalidation::Account(_) | Invalidation::User(_) => {
                for hash in self.hashes_of(event) {
                    self.entries.remove(&hash);
                }
            }
            Invalidation::All => self.entries.clear(),
            Invalidation::TokenCutoff(..) => {}
        }
    }

    /// The cached keys of the account or user an event names.
    fn hashes_of(&self, event: &Invalidation) -> Vec<KeyHash> {
        match event {
            Invalidation::Account(id) => self.owners.accounts.of(id),
            Invalidation::User(id) => self.owners.users.of(id),
            _ => Vec::new(),
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Removals apply at once here (the index's included); kept so tests say where a cache
    /// that defers them would need to catch up.
    #[cfg(test)]
    async fn settle(&self) {}
}

#[cfg(test)]
mod tests;
