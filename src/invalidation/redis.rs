//! Invalidation over Redis pub/sub: a publisher sharing the store's multiplexed connection, and a
//! listener task with its own subscription that reconnects with backoff and clears the local
//! cache every time it resubscribes (events published while it was away are lost).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;

use super::{decode, encode, Bus, Invalidation, Invalidator, CHANNEL};
use crate::metrics::Metrics;
use crate::redis_conn::RedisConn;

pub struct RedisBus {
    conn: RedisConn,
}

impl RedisBus {
    /// Publishes on the store's connection (in a cluster, PUBLISH reaches every node).
    pub fn new(conn: RedisConn) -> Self {
        Self { conn }
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, event: &Invalidation) -> Result<(), String> {
        let mut conn = self.conn.clone();
        ::redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(encode(event))
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Listens until the process stops. `nodes` are Redis URLs; in a cluster PUBLISH reaches every
/// node, so any one will do, and the listener moves on to the next when one cannot be reached.
pub async fn listen(nodes: Vec<String>, invalidator: Arc<Invalidator>, metrics: Arc<Metrics>) {
    let clients: Vec<::redis::Client> = nodes
        .iter()
        .filter_map(|url| match ::redis::Client::open(url.as_str()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "invalid Redis URL for the invalidation listener");
                None
            }
        })
        .collect();
    if clients.is_empty() {
        return;
    }
    let mut next = 0usize;
    let mut backoff = Duration::from_millis(50);
    let mut subscribed_before = false;
    loop {
        let client = &clients[next % clients.len()];
        next = next.wrapping_add(1);
        let pubsub = match client.get_async_pubsub().await {
            Ok(mut p) => match p.subscribe(CHANNEL).await {
                Ok(()) => Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to invalidations");
                    None
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "invalidation listener cannot reach Redis");
                None
            }
        };
        let Some(pubsub) = pubsub else {
            metrics.set_invalidation_connected(false);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        backoff = Duration::from_millis(50);
        if subscribed_before {
            // Anything published while we were away is lost: trust nothing cached. Entries are
            // re-read before their next use rather than dropped, so if the store is still
            // failing they remain the stale-if-error fallback instead of turning into 503s.
            // Token cut-offs published meanwhile are in the store too.
            let since = crate::store::now() - crate::tokens::MAX_TTL.as_secs() as i64;
            invalidator.resync(since).await;
            tracing::warn!("invalidation subscription restored; cache cleared");
        }
        metrics.set_invalidation_connected(true);
        subscribed_before = true;
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            match decode(&payload) {
                Some(event) => invalidator.apply(&event).await,
                None => tracing::warn!("ignoring malformed invalidation message"),
            }
        }
        metrics.set_invalidation_connected(false);
        tracing::warn!("invalidation subscription lost; reconnecting");
    }
}
