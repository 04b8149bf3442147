//! Last-used times, recorded off the request path, debounced and coalesced.
//!
//! Each cached credential remembers when it last recorded an update; a request records one only
//! when that is older than the interval, with a compare-and-swap so concurrent requests record it
//! once. Recorded times go into a sharded map with one slot per key id (the latest time wins), so
//! spread traffic over a million keys costs one small map insert per key per interval, not one
//! queued message, and a burst on one key costs nothing. A background task drains the map in one
//! store call per flush (one transaction on SQLite), every [`FLUSH_EVERY`] or sooner once
//! [`FLUSH_AT`] ids are pending.
//!
//! Nothing is dropped silently: when the map holds [`CAPACITY`] ids a new id is refused, counted
//! in `keygate_last_used_dropped_total`, and its debounce slot is put back, so the key's next
//! request records it again once the flush has made room. A failed flush puts its batch back.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::store::Store;

/// Shards of the pending map: enough that request threads rarely meet on one lock.
const SHARDS: usize = 32;
/// Pending ids at most (a few tens of MB at the limit); past it updates are refused and counted.
const CAPACITY: usize = 1 << 20;
/// Flush early once this many ids are pending, so one flush stays a modest transaction.
const FLUSH_AT: usize = 8192;
/// Flush at least this often while anything is pending.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The pending map, shared by every recorder and the writer.
///
/// Hand-written over `dashmap` (already a dependency) because the writer needs to take a whole
/// shard at once (`mem::take` under its lock), which dashmap offers only behind its raw API.
struct Pending {
    shards: Vec<Mutex<HashMap<Box<str>, i64>>>,
    hasher: RandomState,
    len: AtomicUsize,
    wake: Notify,
}

impl Pending {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            len: AtomicUsize::new(0),
            wake: Notify::new(),
        }
    }

    fn shard(&self, key_id: &str) -> &Mutex<HashMap<Box<str>, i64>> {
        let i = (self.hasher.hash_one(key_id) as usize) % SHARDS;
        &self.shards[i]
    }

    /// Records `at` for `key_id` (keeping the later time); false when full and `key_id` is new.
    fn put(&self, key_id: &str, at: i64) -> bool {
        let Ok(mut shard) = self.shard(key_id).lock() else {
            return false;
        };
        if let Some(slot) = shard.get_mut(key_id) {
            *slot = (*slot).max(at);
            return true;
        }
        if self.len.load(Ordering::Relaxed) >= CAPACITY {
            return false;
        }
        shard.insert(key_id.into(), at);
        drop(shard);
        if self.len.fetch_add(1, Ordering::Relaxed) + 1 == FLUSH_AT {
            self.wake.notify_one();
        }
        true
    }

    /// Takes everything pending.
    fn drain(&self) -> Vec<(String, i64)> {
        let mut out = Vec::with_capacity(self.len.load(Ordering::Relaxed));
        for shard in &self.shards {
            let taken = match shard.lock() {
                Ok(mut s) => std::mem::take(&mut *s),
                Err(_) => continue,
            };
            self.len.fetch_sub(taken.len(), Ordering::Relaxed);
            out.extend(taken.into_iter().map(|(id, at)| (String::from(id), at)));
        }
        out
    }

    /// Puts a batch whose write failed back, merged with anything recorded since.
    fn restore(&self, batch: Vec<(String, i64)>) {
        for (id, at) in batch {
            let Ok(mut shard) = self.shard(&id).lock() else {
                continue;
            };
            let slot = shard.entry(id.into_boxed_str()).or_insert_with(|| {
                self.len.fetch_add(1, Ordering::Relaxed);
                at
            });
            *slot = (*slot).max(at);
        }
    }
}

#[derive(Clone)]
pub struct UsageRecorder {
    pending: Arc<Pending>,
    interval_secs: i64,
    metrics: Arc<Metrics>,
}

pub struct UsageWriter {
    pending: Arc<Pending>,
}

pub fn channel(interval: Duration, metrics: Arc<Metrics>) -> (UsageRecorder, UsageWriter) {
    let pending = Arc::new(Pending::new());
    (
        UsageRecorder {
            pending: pending.clone(),
            interval_secs: interval.as_secs() as i64,
            metrics,
        },
        UsageWriter { pending },
    )
}

impl UsageRecorder {
    /// `last_sent` is the per-credential debounce slot.
    pub fn touch(&self, key_id: &str, last_sent: &AtomicI64, now: i64) {
        let prev = last_sent.load(Ordering::Relaxed);
        if prev != 0 && now - prev < self.interval_secs {
            return;
        }
        if last_sent
            .compare_exchange(prev, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return; // another request recorded it
        }
        if !self.pending.put(key_id, now) {
            // Counted, and the slot goes back so this key's next request records it again.
            self.metrics.last_used_dropped();
            let _ = last_sent.compare_exchange(now, prev, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

impl UsageWriter {
    /// Runs until every recorder is dropped or `stop` completes, then writes what is pending.
    pub async fn run(self, store: Arc<dyn Store>, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                _ = self.pending.wake.notified() => {}
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
                _ = &mut stop => {
                    self.flush(store.as_ref()).await;
                    return;
                }
            }
            let last = Arc::strong_count(&self.pending) == 1;
            self.flush(store.as_ref()).await;
            if last {
                return;
            }
        }
    }

    /// One store call for everything pending; on failure the batch waits for the next flush.
    async fn flush(&self, store: &dyn Store) {
        let batch = self.pending.drain();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.record_last_used(&batch).await {
            tracing::warn!(error = %e, keys = batch.len(), "could not record last-used times");
            self.pending.restore(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slot_per_key_keeps_the_latest_time() {
        let p = Pending::new();
        assert!(p.put("key_a", 10));
        assert!(p.put("key_a", 30));
        assert!(p.put("key_a", 20));
        assert!(p.put("key_b", 5));
        let mut batch = p.drain();
        batch.sort();
        assert_eq!(batch, vec![("key_a".into(), 30), ("key_b".into(), 5)]);
        assert!(p.drain().is_empty());
    }

    #[test]
    fn a_failed_batch_comes_back_merged_with_newer_times() {
        let p = Pending::new();
        p.put("key_a", 10);
        p.put("key_b", 10);
        let batch = p.drain();
        p.put("key_a", 40);
        p.restore(batch);
        let mut again = p.drain();
        again.sort();
        assert_eq!(again, vec![("key_a".into(), 40), ("key_b".into(), 10)]);
    }

    #[test]
    fn a_full_map_refuses_new_ids_and_the_slot_is_put_back() {
        let p = Pending::new();
        p.len.store(CAPACITY, Ordering::Relaxed);
        assert!(!p.put("key_new", 10));
        let metrics = Arc::new(Metrics::new(&[]));
        let recorder = UsageRecorder {
            pending: Arc::new(p),
            interval_secs: 60,
            metrics: metrics.clone(),
        };
        let slot = AtomicI64::new(0);
        recorder.touch("key_new", &slot, 1000);
        assert_eq!(
            slot.load(Ordering::Relaxed),
            0,
            "retried by the next request"
        );
        recorder.pending.len.store(0, Ordering::Relaxed);
        recorder.touch("key_new", &slot, 1001);
        assert_eq!(slot.load(Ordering::Relaxed), 1001);
        assert_eq!(recorder.pending.drain(), vec![("key_new".into(), 1001)]);
    }
}
