//! Cache invalidation across replicas.
//!
//! Every change to a key or an account is applied to the local cache at once and published on a
//! [`Bus`]; every replica's listener applies what it hears. With the embedded store there is one
//! replica and no bus. With Redis the bus is a pub/sub channel ([`redis`]); because pub/sub
//! delivers at most once, a listener that loses its subscription clears its whole cache when it
//! is back (every entry is re-read from the store before its next use), so a missed revoke is
//! never served from cache once the store answers.

pub mod redis;

use async_trait::async_trait;

use crate::cache::Invalidation;

/// The pub/sub channel every replica listens on.
pub const CHANNEL: &str = "kg:invalidate";

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, event: &Invalidation) -> Result<(), String>;
}

/// Wire format: `k:<hex hash>`, `a:<account id>` or `*`. Short and unambiguous, since ids and
/// hex never contain `:`-prefixed ambiguity after the first two characters.
pub fn encode(event: &Invalidation) -> String {
    match event {
        Invalidation::Key(hash) => format!("k:{}", hex::encode(hash)),
        Invalidation::Account(id) => format!("a:{id}"),
        Invalidation::All => "*".to_string(),
        Invalidation::TokenCutoff(subject, at) => format!("c:{at}:{subject}"),
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
            at.parse().ok()?,
        ));
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
            Invalidation::All,
            Invalidation::TokenCutoff("key_x".into(), 1_700_000_000),
        ] {
            assert_eq!(decode(&encode(&e)), Some(e));
        }
        assert_eq!(decode("k:zz"), None);
        assert_eq!(decode("k:00"), None);
        assert_eq!(decode("a:"), None);
        assert_eq!(decode("hello"), None);
    }
}
