//! The one home of every change to keys, users and accounts: whoever asks (an operator through
//! the admin API, a user through the self-service endpoints), each change runs the same sequence
//! — validate -> store -> invalidate the cache -> cut tokens -> audit — so no door can skip a
//! step. Its callers are thin adapters: they parse their request shape into the typed inputs
//! here and map [`ServiceError`] (which names the refused field) to their response shape.
//!
//! No HTTP framework and no pingora here. This is the only module that publishes invalidations
//! and token cut-offs (`KeyService::invalidate`, `KeyService::cut_tokens`).

mod accounts;
mod audit;
mod error;
mod import;
mod keys;
mod narrowing;
mod self_service;
mod users;
pub mod validate;

use std::sync::Arc;

use crate::config::SelfServiceKeys;
use crate::invalidation::{Invalidation, Invalidator};
use crate::keys::{KeyFormat, KeyHasher};
use crate::store::Store;

pub use audit::OPERATOR;
pub use error::{ServiceError, ServiceResult};
pub use import::{ImportReport, MAX_IMPORT};
pub use keys::{KeyChange, NewKeyInput, Rotated, WithPlaintext};
pub use users::{NewUserInput, UserChange};

/// Who makes a change: written to the audit log, and for a user, what they may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An operator, through the admin token: may change anything.
    Operator,
    /// A user, through a session token: only their own keys, in their own account.
    User { user_id: String, account_id: String },
}

/// Built once at startup and shared by the admin API and the local endpoints.
pub struct KeyService {
    store: Arc<dyn Store>,
    invalidator: Arc<Invalidator>,
    hasher: KeyHasher,
    /// The key format is a restart-only setting (`[keys]`), so the one from startup holds.
    key_format: KeyFormat,
    /// Bounds on what users do to their own keys (`[keys]`, restart-only too).
    self_service: SelfServiceKeys,
    /// Held while a user's key is counted and made, so this replica's concurrent creations
    /// cannot all pass the count (see [`KeyService::room_for_one_more`]).
    user_creations: tokio::sync::Mutex<()>,
}

impl KeyService {
    pub fn new(
        store: Arc<dyn Store>,
        invalidator: Arc<Invalidator>,
        hasher: KeyHasher,
        key_format: KeyFormat,
        self_service: SelfServiceKeys,
    ) -> Self {
        Self {
            store,
            invalidator,
            hasher,
            key_format,
            self_service,
            user_creations: tokio::sync::Mutex::new(()),
        }
    }

    /// Drops the cache entries a committed write made stale, here and on every replica, so the
    /// very next request re-reads them. Called only after the store write succeeded.
    async fn invalidate(&self, event: Invalidation) {
        self.invalidator.publish(event).await;
    }

    /// Kills every token whose subject is `subject` (a key, account or user id) issued until now,
    /// through a cut-off in the store: replicas read cut-offs when they start, so a token dies
    /// even on a replica that was not running when its key, account or user was stopped. The
    /// only call to the cut-off writer. A failure is [`ServiceError::TokenCutFailed`] (the write
    /// it follows has committed; retrying the change is safe).
    async fn cut_tokens(&self, subject: &str) -> ServiceResult<()> {
        self.invalidator
            .cut_tokens(subject)
            .await
            .map_err(|e| ServiceError::TokenCutFailed(e.to_string()))
    }

    /// Appends an audit entry for a change that has committed (also for changes outside this
    /// service, such as credits). `detail` must never hold a secret. A failure is logged, not
    /// returned: the change already happened, and for a new key failing would lose the plaintext
    /// the caller can never see again.
    pub async fn record(&self, actor: &Actor, action: &str, target: &str, detail: String) {
        audit::record(self.store.as_ref(), actor, action, target, detail).await;
    }

    /// [`Self::cut_tokens`], with the audit entry written whether or not the cut succeeded
    /// (the change it describes has committed either way).
    async fn cut_then_record(
        &self,
        subject: &str,
        actor: &Actor,
        action: &str,
        target: &str,
        detail: String,
    ) -> ServiceResult<()> {
        let cut = self.cut_tokens(subject).await;
        self.record(actor, action, target, detail).await;
        cut
    }
}

#[cfg(test)]
mod tests;
