//! The bounded map under the cache: quick_cache, with the owner indexes kept exact.
//!
//! quick_cache costs tens of bytes per entry (moka took several hundred: its entries carry
//! deque and timer nodes and per-entry metadata), has no background work, and joins concurrent
//! misses for one key on a placeholder (single flight). It has no TTL: entries carry their load
//! time and [`super::KeyCache`] judges their age when it reads them.
//!
//! Every found entry was added to the owner indexes by its load ([`Owners::facts`]); every way
//! out of the map takes that add back — removal, eviction (the [`Lifecycle`] hook, under the
//! shard's lock), replacement (done through `entry_async`, which hands back the value it
//! replaces), a clear, and a load whose value never got in.

use std::sync::Arc;
use std::time::Instant;

use quick_cache::sync::{Cache, EntryAction, EntryResult, PlaceholderGuard};
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};

use super::credential::CachedCredential;
use super::index::Owners;
use crate::keys::KeyHash;
use crate::metrics::{Eviction, Metrics};
use crate::store::StoreError;

/// What the map holds for a hash.
#[derive(Debug, Clone)]
pub enum Entry {
    Found(Arc<CachedCredential>),
    /// No such key, as the store said at this time.
    Unknown(Instant),
    /// The store read failed: handed to the callers that waited on it, then taken out.
    Failed(Arc<StoreError>),
}

/// Takes an evicted entry out of the indexes and counts it.
#[derive(Clone)]
pub struct Evictions {
    owners: Arc<Owners>,
    metrics: Arc<Metrics>,
}

impl Lifecycle<KeyHash, Entry> for Evictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _: &mut Self::RequestState, hash: KeyHash, entry: Entry) {
        self.metrics.cache_evicted(Eviction::Size);
        forget(&self.owners, &hash, &entry);
    }
}

/// A failed read weighs nothing: it is in the map only for the callers waiting on it, and must
/// not push a cached key out (during a store outage those are the stale-if-error fallback).
#[derive(Clone)]
pub struct Weights;

impl Weighter<KeyHash, Entry> for Weights {
    fn weight(&self, _: &KeyHash, entry: &Entry) -> u64 {
        match entry {
            Entry::Failed(_) => 0,
            Entry::Found(_) | Entry::Unknown(_) => 1,
        }
    }
}

fn forget(owners: &Owners, hash: &KeyHash, entry: &Entry) {
    if let Entry::Found(c) = entry {
        owners.forget(&c.credential, hash);
    }
}

type Map = Cache<KeyHash, Entry, Weights, DefaultHashBuilder, Evictions>;

/// A slot a miss fills: other misses for the hash wait on it until it is filled or dropped.
pub type Loading<'a> = PlaceholderGuard<'a, KeyHash, Entry, Weights, DefaultHashBuilder, Evictions>;

pub struct Entries {
    map: Map,
    owners: Arc<Owners>,
}

impl Entries {
    pub fn new(capacity: u64, owners: Arc<Owners>, metrics: Arc<Metrics>) -> Self {
        let capacity = capacity.max(1);
        let lifecycle = Evictions {
            owners: owners.clone(),
            metrics,
        };
        let map = Map::with(
            usize::try_from(capacity).unwrap_or(usize::MAX),
            capacity,
            Weights,
            DefaultHashBuilder::default(),
            lifecycle,
        );
        Self { map, owners }
    }

    /// The request path's read: a shard read lock and an `Arc` clone.
    pub fn get(&self, hash: &KeyHash) -> Option<Entry> {
        self.map.get(hash)
    }

    /// The entry, or the slot to fill when the caller is the first to miss (the others wait
    /// here for it).
    pub async fn get_or_loading(&self, hash: &KeyHash) -> Result<Entry, Loading<'_>> {
        self.map.get_value_or_guard_async(hash).await
    }

    /// Fills a slot with a loaded entry.
    pub fn fill(&self, hash: &KeyHash, slot: Loading<'_>, entry: Entry) {
        // Refused when the slot was taken away meanwhile (a clear): the entry never got in.
        if let Err(entry) = slot.insert(entry) {
            forget(&self.owners, hash, &entry);
        }
    }

    /// Puts `entry` in place of whatever is cached for `hash`.
    pub async fn put(&self, hash: &KeyHash, entry: Entry) {
        let mut new = Some(entry);
        let result = self
            .map
            .entry_async(hash, |_, cached| match new.take() {
                Some(new) => EntryAction::Retain(Some(std::mem::replace(cached, new))),
                None => EntryAction::Retain(None),
            })
            .await;
        match result {
            EntryResult::Retained(Some(old)) | EntryResult::Removed(_, old) => {
                forget(&self.owners, hash, &old);
            }
            EntryResult::Replaced(slot, old) => {
                forget(&self.owners, hash, &old);
                if let Some(new) = new.take() {
                    self.fill(hash, slot, new);
                }
            }
            EntryResult::Vacant(slot) => {
                if let Some(new) = new.take() {
                    self.fill(hash, slot, new);
                }
            }
            EntryResult::Retained(None) | EntryResult::Timeout => {}
        }
        // Not put (cannot happen: the callback runs once, or a slot is handed back).
        if let Some(Entry::Found(c)) = new {
            self.owners.forget(&c.credential, hash);
        }
    }

    pub fn remove(&self, hash: &KeyHash) {
        if let Some((hash, old)) = self.map.remove(hash) {
            forget(&self.owners, &hash, &old);
        }
    }

    /// Removes the entry for `hash` if `stale` says so (judged under the shard's lock, so an
    /// entry put meanwhile is not the one removed).
    pub fn remove_if(&self, hash: &KeyHash, stale: impl FnOnce(&Entry) -> bool) -> bool {
        match self.map.remove_if(hash, stale) {
            Some((hash, old)) => {
                forget(&self.owners, &hash, &old);
                true
            }
            None => false,
        }
    }

    /// Drops every entry (a pass over the map: for the rare "forget everything").
    pub fn clear(&self) {
        for (hash, old) in self.map.drain() {
            forget(&self.owners, &hash, &old);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}
