//! Invalidation over Redis pub/sub: a publisher sharing the store's multiplexed connection, and a
//! listener task with its own subscription that reconnects with backoff and clears the local
//! cache every time it resubscribes (events published while it was away are lost).

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use async_trait::async_trait;
use futures_util::StreamExt;

use super::{decode, encode, Bus, CHANNEL};
use crate::cache::{Invalidation, KeyCache};
use crate::metrics::Metrics;

pub struct RedisBus {
    conn: ConnectionManager,
}

impl RedisBus {
    pub async fn connect(url: &str) -> Result<Self, String> {
        let client = ::redis::Client::open(url).map_err(|e| e.to_string())?;
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(1))
            .set_number_of_retries(1)
            .set_max_delay(500);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { conn })
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

/// Listens until the process stops. `url` is one Redis node (in a cluster, PUBLISH reaches every
/// node, so any one will do).
pub async fn listen(url: String, cache: Arc<KeyCache>, metrics: Arc<Metrics>) {
    let client = match ::redis::Client::open(url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid Redis URL for invalidation listener");
            return;
        }
    };
    let mut backoff = Duration::from_millis(50);
    let mut subscribed_before = false;
    loop {
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
            cache.revalidate_all();
            metrics.cache_cleared();
            tracing::warn!("invalidation subscription restored; cache cleared");
            // Token cut-offs published meanwhile are in the store too.
            let since = crate::store::now() - crate::tokens::MAX_TTL.as_secs() as i64;
            if let Err(e) = cache.reload_cutoffs(since).await {
                tracing::warn!(error = %e, "could not reload token cut-offs");
            }
        }
        metrics.set_invalidation_connected(true);
        subscribed_before = true;
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            match decode(&payload) {
                Some(event) => cache.invalidate_local(&event).await,
                None => tracing::warn!("ignoring malformed invalidation message"),
            }
        }
        metrics.set_invalidation_connected(false);
        tracing::warn!("invalidation subscription lost; reconnecting");
    }
}
