//! Last-used times, recorded off the request path and debounced.
//!
//! Each cached credential remembers when it last queued an update; a request queues one only when
//! that is older than the interval, with a compare-and-swap so concurrent requests queue it once.
//! The queue is bounded and `try_send` never waits: under overload an update is dropped (and
//! counted) rather than slowing a request. A background task writes the queue in batches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::store::Store;

const QUEUE: usize = 4096;
const BATCH: usize = 512;

#[derive(Clone)]
pub struct UsageRecorder {
    tx: mpsc::Sender<(String, i64)>,
    interval_secs: i64,
    metrics: Arc<Metrics>,
}

pub struct UsageWriter {
    rx: mpsc::Receiver<(String, i64)>,
}

pub fn channel(interval: Duration, metrics: Arc<Metrics>) -> (UsageRecorder, UsageWriter) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (
        UsageRecorder {
            tx,
            interval_secs: interval.as_secs() as i64,
            metrics,
        },
        UsageWriter { rx },
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
            return; // another request queued it
        }
        if self.tx.try_send((key_id.to_string(), now)).is_err() {
            self.metrics.last_used_dropped();
        }
    }
}

impl UsageWriter {
    /// Runs until every recorder is dropped; writes what is queued in batches.
    pub async fn run(mut self, store: Arc<dyn Store>) {
        let mut buf = Vec::with_capacity(BATCH);
        while self.rx.recv_many(&mut buf, BATCH).await > 0 {
            // Keep only the latest time per key in this batch.
            let mut latest: HashMap<String, i64> = HashMap::with_capacity(buf.len());
            for (id, at) in buf.drain(..) {
                let slot = latest.entry(id).or_insert(at);
                *slot = (*slot).max(at);
            }
            let batch: Vec<(String, i64)> = latest.into_iter().collect();
            if let Err(e) = store.record_last_used(&batch).await {
                tracing::warn!(error = %e, keys = batch.len(), "could not record last-used times");
            }
        }
    }
}
