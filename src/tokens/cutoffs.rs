//! Token cut-offs: how a token dies with its key, user or account without a store read.
//!
//! A cut-off says "tokens whose subject (a key, user or account id) is this, issued at or before
//! this time, are dead". Cut-offs arrive as invalidation events (this replica's own writes and
//! other replicas' through the bus) and are read from the store at start, so a replica started
//! after a revocation refuses the revoked key's tokens too. They live in memory, sharded (no
//! global lock on the request path), and are forgotten once every token they could stop has
//! expired on its own.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::{CredentialReads, StoreError};

#[derive(Debug, Default)]
pub struct TokenCutoffs {
    by_subject: dashmap::DashMap<String, i64>,
    /// Whether the stored cut-offs have been read since start. Until then a token cannot be
    /// checked against revocations made before this process started, so none is accepted.
    loaded: AtomicBool,
}

impl TokenCutoffs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a token of `subject` issued at `issued_at` has been cut.
    pub fn is_cut(&self, subject: &str, issued_at: i64) -> bool {
        self.by_subject
            .get(subject)
            .is_some_and(|cut| *cut >= issued_at)
    }

    /// Records a cut-off; a later one replaces an earlier one, never the other way round.
    pub fn record(&self, subject: &str, at: i64) {
        let mut slot = self.by_subject.entry(subject.to_string()).or_insert(at);
        if *slot < at {
            *slot = at;
        }
    }

    /// Whether tokens can be checked: the stored cut-offs have been loaded at least once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Loads the cut-offs recorded since `since` (at startup, and when events may have been
    /// lost). Returns how many were read.
    pub async fn reload(
        &self,
        store: &dyn CredentialReads,
        since: i64,
    ) -> Result<usize, StoreError> {
        let all = store.token_cutoffs(since).await?;
        let n = all.len();
        for (subject, at) in all {
            self.record(&subject, at);
        }
        self.loaded.store(true, Ordering::Release);
        Ok(n)
    }

    /// Forgets cut-offs made before `before`: once every token issued up to a cut-off has
    /// expired on its own, the cut-off stops nothing, so memory follows recent revocations
    /// rather than every revocation ever made. Returns how many were dropped.
    pub fn prune(&self, before: i64) -> usize {
        let was = self.by_subject.len();
        self.by_subject.retain(|_, at| *at >= before);
        was.saturating_sub(self.by_subject.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_stops_tokens_issued_up_to_it_and_only_grows() {
        let c = TokenCutoffs::new();
        assert!(!c.is_cut("key_a", 100));
        c.record("key_a", 100);
        assert!(c.is_cut("key_a", 100) && c.is_cut("key_a", 99));
        assert!(!c.is_cut("key_a", 101), "a token made after the cut lives");
        assert!(!c.is_cut("key_b", 1), "other subjects are untouched");
        c.record("key_a", 50);
        assert!(
            c.is_cut("key_a", 100),
            "an earlier cut never replaces a later one"
        );
        c.record("key_a", 200);
        assert!(c.is_cut("key_a", 150));
    }

    #[test]
    fn old_cutoffs_are_forgotten_and_recent_ones_kept() {
        let c = TokenCutoffs::new();
        let now = crate::store::now();
        c.record("key_old", now);
        c.record("key_new", now);
        // Nothing is older than a minute ago: both stay.
        assert_eq!(c.prune(now - 60), 0);
        assert!(c.is_cut("key_old", now - 5) && c.is_cut("key_new", now - 5));
        // Everything made before a minute from now goes, and stops nothing any more.
        assert_eq!(c.prune(now + 60), 2);
        assert!(!c.is_cut("key_old", now - 5));
        assert!(!c.is_cut("key_new", now - 5));
    }
}
