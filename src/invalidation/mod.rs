//! Cache invalidation across replicas.
//!
//! Every change to a key or an account is applied to the local cache at once and published on a
//! [`Bus`]; every replica's listener applies what it hears. With the embedded store there is one
//! replica and no bus. With Redis the bus is a pub/sub channel ([`redis`]); because pub/sub
//! delivers at most once, a listener that loses its subscription clears its whole cache when it
//! is back (every entry is re-read from the store before its next use), so a missed revoke is
//! never served from cache once the store answers.

pub mod redis;

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use crate::cache::KeyCache;
use crate::keys::KeyHash;
use crate::metrics::Metrics;
use crate::store::{CredentialReads, StoreError};
use crate::tokens::cutoffs::TokenCutoffs;

/// What changed, so each replica can drop exactly the affected cache entries and tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    Key(KeyHash),
    Account(String),
    /// A user's role or status changed: the cached keys bound to that user.
    User(String),
    All,
    /// Tokens whose subject (a key, user or account id) is this, issued at or before this
    /// millisecond (since the Unix epoch), are refused: how an access token dies with its key
    /// without a store read.
    TokenCutoff(String, i64),
}

/// Applies invalidations here and tells the other replicas: the cache's entries for keys and
/// accounts, and the token cut-offs. Its two callers are the key service (this replica's own
/// writes, [`Invalidator::publish`] and [`Invalidator::cut_tokens`]) and the bus listener (other
/// replicas' writes, [`Invalidator::apply`]).
pub struct Invalidator {
    cache: Arc<KeyCache>,
    cutoffs: Arc<TokenCutoffs>,
    store: Arc<dyn CredentialReads>,
    metrics: Arc<Metrics>,
    bus: OnceLock<Arc<dyn Bus>>,
}

impl Invalidator {
    pub fn new(
        cache: Arc<KeyCache>,
        cutoffs: Arc<TokenCutoffs>,
        store: Arc<dyn CredentialReads>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            cache,
            cutoffs,
            store,
            metrics,
            bus: OnceLock::new(),
        }
    }

    /// Connects to the replicas' bus (once, at startup; without one there is one replica).
    pub fn set_bus(&self, bus: Arc<dyn Bus>) {
        let _ = self.bus.set(bus);
    }

    /// After a committed write: applies `event` here at once, then tells the other replicas.
    pub async fn publish(&self, event: Invalidation) {
        self.apply_here(&event, true).await;
        if let Some(bus) = self.bus.get() {
            if let Err(e) = bus.publish(&event).await {
                // The write is committed; replicas will catch up on TTL or on resubscribe.
                self.metrics.store_error("publish_invalidation");
                tracing::warn!(error = %e, "could not publish invalidation");
            }
        }
    }

    /// An event heard from another replica (no re-publishing).
    pub async fn apply(&self, event: &Invalidation) {
        use crate::metrics::InvalidationKind;
        let (kind, lag) = match event {
            Invalidation::Key(_) => (InvalidationKind::Key, None),
            Invalidation::Account(_) => (InvalidationKind::Account, None),
            Invalidation::User(_) => (InvalidationKind::User, None),
            Invalidation::All => (InvalidationKind::All, None),
            // A cut-off carries the millisecond it was made: the one event that tells its age.
            Invalidation::TokenCutoff(_, at) => {
                let age_ms = crate::tokens::cutoffs::now_ms().saturating_sub(*at).max(0);
                let age = std::time::Duration::from_millis(u64::try_from(age_ms).unwrap_or(0));
                (InvalidationKind::TokenCutoff, Some(age))
            }
        };
        self.metrics.invalidation_received(kind, lag);
        self.apply_here(event, false).await;
    }

    async fn apply_here(&self, event: &Invalidation, own_write: bool) {
        match event {
            Invalidation::TokenCutoff(subject, at) => self.cutoffs.record(subject, *at),
            // A replica's own write also repeats the drop shortly after (see the cache docs).
            _ if own_write => self.cache.invalidate(event).await,
            _ => self.cache.invalidate_local(event).await,
        }
    }

    /// Revokes every token of `subject` issued up to now: here, in the store (for replicas
    /// that start later) and on every other replica.
    pub async fn cut_tokens(&self, subject: &str) -> Result<(), StoreError> {
        let at = crate::tokens::cutoffs::now_ms();
        // Applied here and published even if persisting fails: live replicas must stop the
        // tokens now; only a replica started later depends on the stored cut-off.
        let stored = self.store.set_token_cutoff(subject, at).await;
        self.publish(Invalidation::TokenCutoff(subject.to_string(), at))
            .await;
        stored
    }

    /// Events may have been lost (a dropped subscription): every cached entry is re-read before
    /// its next use, and the stored cut-offs since `since` are read again.
    pub async fn resync(&self, since: i64) {
        self.cache.revalidate_all();
        self.metrics.cache_cleared();
        if let Err(e) = self.cutoffs.reload(self.store.as_ref(), since).await {
            tracing::warn!(error = %e, "could not reload token cut-offs");
        }
    }
}

/// The pub/sub channel every replica listens on.
pub const CHANNEL: &str = "kg:invalidate";

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, event: &Invalidation) -> Result<(), String>;
}

/// Wire format: `k:<hex hash>`, `a:<account id>`, `u:<user id>`, `*` or `c:<time>:<subject>`. Short and
/// unambiguous, since ids and hex never contain `:`-prefixed ambiguity after the first two
/// characters. A cut-off's time is decimal seconds with three fraction digits
/// ([`cutoffs::to_text`](crate::tokens::cutoffs::to_text)); a whole number of seconds, as
/// replicas before milliseconds publish it, cuts that whole second.
pub fn encode(event: &Invalidation) -> String {
    match event {
        Invalidation::Key(hash) => format!("k:{}", hex::encode(hash)),
        Invalidation::Account(id) => format!("a:{id}"),
        Invalidation::User(id) => format!("u:{id}"),
        Invalidation::All => "*".to_string(),
        Invalidation::TokenCutoff(subject, at) => {
            format!("c:{}:{subject}", crate::tokens::cutoffs::to_text(*at))
        }
    }
}

pub fn decode(message: &str) -> Option<Invalidation> {
    if message == "*" {
        return Some(Invalidation::All);
    }
    if let Some(hex_hash) = message.strip_prefix("k:") {
        let bytes = hex::decode(hex_hash).ok()?;
        return Some(Invalidation::Key(bytes.try_into().ok()?));
    }
    if let Some(rest) = message.strip_prefix("c:") {
        let (at, subject) = rest.split_once(':')?;
        if subject.is_empty() {
            return None;
        }
        return Some(Invalidation::TokenCutoff(
            subject.to_string(),
            crate::tokens::cutoffs::parse_text(at)?,
        ));
    }
    if let Some(id) = message.strip_prefix("u:") {
        return (!id.is_empty()).then(|| Invalidation::User(id.to_string()));
    }
    message
        .strip_prefix("a:")
        .filter(|id| !id.is_empty())
        .map(|id| Invalidation::Account(id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        for e in [
            Invalidation::Key([7u8; 32]),
            Invalidation::Account("acc_x".into()),
            Invalidation::User("usr_x".into()),
            Invalidation::All,
            Invalidation::TokenCutoff("key_x".into(), 1_700_000_000_123),
            Invalidation::TokenCutoff("usr_x:odd".into(), 1_700_000_000_000),
        ] {
            assert_eq!(decode(&encode(&e)), Some(e));
        }
        assert_eq!(
            encode(&Invalidation::TokenCutoff(
                "key_x".into(),
                1_700_000_000_123
            )),
            "c:1700000000.123:key_x"
        );
        // From a replica that publishes whole seconds: the end of that second.
        assert_eq!(
            decode("c:1700000000:key_x"),
            Some(Invalidation::TokenCutoff("key_x".into(), 1_700_000_000_999))
        );
        assert_eq!(decode("c:17x:key_x"), None);
        assert_eq!(decode("c:1700000000.123:"), None);
        assert_eq!(decode("k:zz"), None);
        assert_eq!(decode("k:00"), None);
        assert_eq!(decode("a:"), None);
        assert_eq!(decode("u:"), None);
        assert_eq!(decode("hello"), None);
    }
}
