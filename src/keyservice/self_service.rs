//! Bounds on self-service keys (issue 10 item 9): a user — through a session token — may hold at
//! most `[keys] max_per_user` live keys, and may put on them only the scopes in
//! `[keys] self_service_scopes` (when set). An operator is bound by neither: the admin API is
//! how an operator gives a user more keys or other scopes. (The self-service routes' own
//! `rate_limit` bounds how fast keys are made; the gate applies it.)
//!
//! Both refusals are [`ServiceError`]s the self-service endpoints answer 422 `invalid_body` with
//! the message below, like every other refused self-service body: the local endpoints answer in
//! the upstream's documented error format, whose reasons have no "conflict", and the message
//! says what to do.
//!
//! The count is checked and the key made under one lock per replica, so concurrent creations
//! through one replica cannot all pass it; with several replicas on a shared store, creations
//! racing through different replicas may each pass, so a user can exceed the cap by at most one
//! key per other replica.

use super::{Actor, KeyService, ServiceError, ServiceResult};
use crate::store::{now, KeyStatus, Page};

impl KeyService {
    /// Refuses a scope a user may not grant themselves; an operator may grant any.
    pub(super) fn check_self_service_scopes(
        &self,
        actor: &Actor,
        scopes: &[String],
    ) -> ServiceResult<()> {
        let (Actor::User { .. }, Some(allowed)) = (actor, &self.self_service.scopes) else {
            return Ok(());
        };
        match scopes.iter().find(|s| !allowed.contains(s)) {
            None => Ok(()),
            Some(s) => Err(ServiceError::invalid(
                "scopes",
                format!(
                    "`scopes`: `{s}` is not a scope users may grant themselves (allowed: {})",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ),
            )),
        }
    }

    /// For a user, waits for this replica's creation lock and checks that they hold fewer
    /// than `max_per_user` live keys (not revoked, not expired); the caller keeps the guard
    /// until the new key is stored. `None` for an operator, who is not capped.
    pub(super) async fn room_for_one_more(
        &self,
        actor: &Actor,
    ) -> ServiceResult<Option<tokio::sync::MutexGuard<'_, ()>>> {
        let Actor::User {
            user_id,
            account_id,
        } = actor
        else {
            return Ok(None);
        };
        let guard = self.user_creations.lock().await;
        let max = self.self_service.max_per_user;
        let held = self.live_keys_of(account_id, user_id).await?;
        if held >= max {
            return Err(ServiceError::Conflict(format!(
                "you hold {held} keys, the most a user may hold is {max} keys: revoke one first"
            )));
        }
        Ok(Some(guard))
    }

    /// The user's keys that still work or could again (disabled ones count: they can be
    /// enabled), read from the account's key list a page at a time.
    async fn live_keys_of(&self, account_id: &str, user_id: &str) -> ServiceResult<u64> {
        let at = now();
        let mut held = 0u64;
        let mut page = Page {
            after: None,
            limit: 1000,
        };
        loop {
            let batch = self.store.list_keys(Some(account_id), &page).await?;
            let full = batch.len() as u32 == page.limit();
            page.after = batch.last().map(|k| k.id.clone());
            held += batch
                .iter()
                .filter(|k| {
                    k.user_id.as_deref() == Some(user_id)
                        && k.status != KeyStatus::Revoked
                        && k.expires_at.is_none_or(|e| e > at)
                })
                .count() as u64;
            if !full {
                return Ok(held);
            }
        }
    }
}
