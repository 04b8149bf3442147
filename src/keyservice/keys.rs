//! Keys: create (the plaintext exists only in the answer), update, the status changes (disable,
//! enable, revoke) and rotate. Every write drops the key's cache entry after it commits; a status
//! change away from active, and an update that narrows the key (`super::narrowing`), also cut
//! off the key's tokens.

use std::collections::BTreeMap;

use super::audit::{
    key_status_str, limit_str, metadata_str, permission_str, resources_str, time_str,
};
use super::narrowing;
use super::validate::{self, RateLimitBody};
use super::{Actor, KeyService, ServiceError, ServiceResult};
use crate::invalidation::Invalidation;
use crate::secret::Secret;
use crate::store::{
    now, AccountStatus, KeyPatch, KeyRecord, KeyStatus, Metadata, NewKey, Permission,
};

/// A new key as a caller asks for it; the service checks every field.
#[derive(Debug)]
pub struct NewKeyInput {
    pub account_id: String,
    pub user_id: Option<String>,
    pub name: String,
    pub scopes: Vec<String>,
    pub permission: Permission,
    /// RFC 3339, in the future (a past time is a conflict).
    pub expires_at: Option<String>,
    pub rate_limit: Option<RateLimitBody>,
    /// Resource kind -> allowed ids; `None`: unrestricted.
    pub resources: Option<BTreeMap<String, Vec<String>>>,
    /// The operator's JSON object about the key (empty: none); set by an operator only.
    pub metadata: Metadata,
}

/// A change to a key: an absent field is left as it is; `Some(None)` clears the expiry, the
/// key's own limit or its resource restriction.
#[derive(Debug, Default)]
pub struct KeyChange {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<Option<String>>,
    pub rate_limit: Option<Option<RateLimitBody>>,
    pub resources: Option<Option<BTreeMap<String, Vec<String>>>>,
    /// Replaces the metadata whole; `{}` clears it. An operator's only.
    pub metadata: Option<Metadata>,
}

/// A key just made, with its plaintext (shown once, never stored).
#[derive(Debug)]
pub struct WithPlaintext {
    pub key: KeyRecord,
    pub plaintext: Secret,
}

/// A rotation's outcome: the successor (with its plaintext) and the old key as it is now.
#[derive(Debug)]
pub struct Rotated {
    pub key: KeyRecord,
    pub plaintext: Secret,
    pub old: KeyRecord,
}

fn key_not_found() -> ServiceError {
    ServiceError::NotFound("key not found".to_string())
}

/// Users manage their keys' names, scopes, resources and expiry; limits and metadata are an
/// operator's call.
fn operator_only(actor: &Actor, field: &str, set: bool) -> ServiceResult<()> {
    if set && matches!(actor, Actor::User { .. }) {
        return Err(ServiceError::invalid(
            field,
            format!("`{field}` is set by an operator, not by the key's user"),
        ));
    }
    Ok(())
}

impl KeyService {
    /// A key the actor may change: any for an operator; for a user, only a key of theirs in
    /// their account (another's answers like a missing one).
    pub async fn key_for(&self, actor: &Actor, id: &str) -> ServiceResult<KeyRecord> {
        let key = self.store.get_key(id).await?.ok_or_else(key_not_found)?;
        match actor {
            Actor::Operator => Ok(key),
            Actor::User {
                user_id,
                account_id,
            } if key.user_id.as_deref() == Some(user_id.as_str())
                && key.account_id == *account_id =>
            {
                Ok(key)
            }
            Actor::User { .. } => Err(key_not_found()),
        }
    }

    pub async fn create_key(
        &self,
        actor: &Actor,
        req: NewKeyInput,
    ) -> ServiceResult<WithPlaintext> {
        let NewKeyInput {
            account_id,
            user_id,
            name,
            scopes,
            permission,
            expires_at,
            rate_limit,
            resources,
            metadata,
        } = req;
        let name = validate::name("name", &name)?;
        let scopes = validate::scopes(scopes)?;
        self.check_self_service_scopes(actor, &scopes)?;
        let user_id = user_id.map(|u| validate::name("user_id", &u)).transpose()?;
        let expires_at = match expires_at.as_deref() {
            None => None,
            Some(t) => {
                let at = validate::time("expires_at", t)?;
                // A conflict with the clock, not a malformed value: a schema cannot say "after
                // now", so a well-formed time in the past is 409 (PATCH may set one: that
                // expires the key at once).
                if at <= now() {
                    return Err(ServiceError::Conflict(
                        "`expires_at` must be in the future".to_string(),
                    ));
                }
                Some(at)
            }
        };
        operator_only(actor, "rate_limit", rate_limit.is_some())?;
        let rate_limit = rate_limit
            .map(|l| validate::rate_limit("rate_limit", l))
            .transpose()?;
        let resources = resources.map(validate::resources).transpose()?;
        operator_only(actor, "metadata", !metadata.is_empty())?;
        let metadata = validate::metadata(metadata)?;
        if let Actor::User {
            user_id: me,
            account_id: mine,
        } = actor
        {
            // A user mints keys for themselves only.
            if account_id != *mine || user_id.as_deref() != Some(me.as_str()) {
                return Err(ServiceError::NotFound("account not found".to_string()));
            }
        }
        let account = self
            .store
            .get_account(&account_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("account not found".to_string()))?;
        if account.status == AccountStatus::Deleted {
            return Err(ServiceError::Conflict(
                "the account is deleted; it cannot get new keys".to_string(),
            ));
        }
        if let Some(user_id) = &user_id {
            let user = self
                .store
                .get_user(user_id)
                .await?
                .ok_or_else(|| ServiceError::NotFound("user not found".to_string()))?;
            if user.account_id != account.id {
                return Err(ServiceError::invalid(
                    "user_id",
                    "`user_id`: the user belongs to another account",
                ));
            }
        }

        let room = self.room_for_one_more(actor).await?;
        let plaintext = self.key_format.generate();
        let key = self
            .store
            .create_key(NewKey {
                account_id: account.id,
                user_id,
                name,
                display_prefix: self.key_format.display_prefix(plaintext.expose()),
                hash: self.hasher.hash(plaintext.expose()),
                scopes,
                permission,
                expires_at,
                rate_limit,
                resources,
                rotated_from: None,
                metadata,
            })
            .await?;
        drop(room);
        // Drops a cached "unknown key" answer for this hash, should one exist.
        self.invalidate(Invalidation::Key(key.hash)).await;
        self.record(
            actor,
            "key.create",
            &key.id,
            format!(
                "account={} user={} name={:?} prefix={} permission={} scopes=[{}] expires_at={} \
                 rate_limit={} resources={} metadata={}",
                key.account_id,
                key.user_id.as_deref().unwrap_or("none"),
                key.name,
                key.display_prefix,
                permission_str(key.permission),
                key.scopes.join(","),
                time_str(key.expires_at),
                limit_str(key.rate_limit),
                resources_str(key.resources.as_ref()),
                metadata_str(&key.metadata),
            ),
        )
        .await;
        Ok(WithPlaintext { key, plaintext })
    }

    pub async fn update_key(
        &self,
        actor: &Actor,
        id: &str,
        change: KeyChange,
    ) -> ServiceResult<KeyRecord> {
        let KeyChange {
            name,
            scopes,
            expires_at,
            rate_limit,
            resources,
            metadata,
        } = change;
        let mut patch = KeyPatch::default();
        let mut changes = Vec::new();
        if let Some(name) = name {
            let name = validate::name("name", &name)?;
            changes.push(format!("name={name:?}"));
            patch.name = Some(name);
        }
        if let Some(scopes) = scopes {
            let scopes = validate::scopes(scopes)?;
            self.check_self_service_scopes(actor, &scopes)?;
            changes.push(format!("scopes=[{}]", scopes.join(",")));
            patch.scopes = Some(scopes);
        }
        if let Some(expires_at) = expires_at {
            let at = expires_at
                .map(|t| validate::time("expires_at", &t))
                .transpose()?;
            changes.push(format!("expires_at={}", time_str(at)));
            patch.expires_at = Some(at);
        }
        operator_only(actor, "rate_limit", rate_limit.is_some())?;
        if let Some(limit) = rate_limit {
            let limit = limit
                .map(|l| validate::rate_limit("rate_limit", l))
                .transpose()?;
            changes.push(format!("rate_limit={}", limit_str(limit)));
            patch.rate_limit = Some(limit);
        }
        if let Some(resources) = resources {
            let resources = resources.map(validate::resources).transpose()?;
            changes.push(format!("resources={}", resources_str(resources.as_ref())));
            patch.resources = Some(resources);
        }
        operator_only(actor, "metadata", metadata.is_some())?;
        if let Some(metadata) = metadata {
            let metadata = validate::metadata(metadata)?;
            changes.push(format!("metadata={}", metadata_str(&metadata)));
            patch.metadata = Some(metadata);
        }
        if changes.is_empty() {
            return Err(ServiceError::invalid(
                "body",
                "nothing to change: set `name`, `scopes`, `expires_at`, `rate_limit`, \
                 `resources` or `metadata`",
            ));
        }
        // Tokens carry what the key allowed when they were issued: taking anything away cuts
        // them (see `narrowing`); a rename or a widening leaves them working.
        let before = self.key_for(actor, id).await?;
        let narrows = narrowing::key_narrows(&before, &patch);
        let key = self.write(id, patch).await?;
        if narrows {
            changes.push("tokens=cut".into());
            self.cut_then_record(&key.id, actor, "key.update", &key.id, changes.join(" "))
                .await?;
        } else {
            self.record(actor, "key.update", &key.id, changes.join(" "))
                .await;
        }
        Ok(key)
    }

    /// Disable, enable or revoke; the store refuses to bring a revoked key back (conflict).
    /// Leaving active cuts off the key's tokens: they die with it, on every replica.
    pub async fn set_key_status(
        &self,
        actor: &Actor,
        id: &str,
        status: KeyStatus,
    ) -> ServiceResult<KeyRecord> {
        let patch = KeyPatch {
            status: Some(status),
            ..KeyPatch::default()
        };
        if matches!(actor, Actor::User { .. }) {
            self.key_for(actor, id).await?;
        }
        let key = self.write(id, patch).await?;
        let action = match status {
            KeyStatus::Active => "key.enable",
            KeyStatus::Disabled => "key.disable",
            KeyStatus::Revoked => "key.revoke",
        };
        let detail = format!("status={}", key_status_str(key.status));
        if status == KeyStatus::Active {
            self.record(actor, action, &key.id, detail).await;
        } else {
            self.cut_then_record(&key.id, actor, action, &key.id, detail)
                .await?;
        }
        Ok(key)
    }

    /// A new key with the old one's account, user, name, scopes, permission, expiry, limit,
    /// resources and metadata. With `grace_seconds` the old key expires that much later (or at its own
    /// expiry, if sooner); without, it works until revoked.
    pub async fn rotate_key(
        &self,
        actor: &Actor,
        id: &str,
        grace_seconds: Option<u64>,
    ) -> ServiceResult<Rotated> {
        let old = self.key_for(actor, id).await?;
        if old.status == KeyStatus::Revoked {
            return Err(ServiceError::Conflict(
                "the key is revoked; it cannot be rotated".to_string(),
            ));
        }
        let account = self.store.get_account(&old.account_id).await?;
        if account.is_none_or(|a| a.status == AccountStatus::Deleted) {
            return Err(ServiceError::Conflict(
                "the key's account is deleted; it cannot get new keys".to_string(),
            ));
        }
        let grace_end =
            grace_seconds.map(|g| now().saturating_add(i64::try_from(g).unwrap_or(i64::MAX)));
        // The successor is one more key until the old one is revoked or its grace ends.
        let room = self.room_for_one_more(actor).await?;
        let plaintext = self.key_format.generate();
        let (key, old) = self
            .store
            .rotate_key(
                &old.id,
                NewKey {
                    account_id: old.account_id.clone(),
                    user_id: old.user_id.clone(),
                    name: old.name.clone(),
                    display_prefix: self.key_format.display_prefix(plaintext.expose()),
                    hash: self.hasher.hash(plaintext.expose()),
                    scopes: old.scopes.clone(),
                    permission: old.permission,
                    expires_at: old.expires_at,
                    rate_limit: old.rate_limit,
                    resources: old.resources.clone(),
                    rotated_from: Some(old.id.clone()),
                    metadata: old.metadata.clone(),
                },
                grace_end,
            )
            .await?;
        drop(room);
        // The new hash may be cached as unknown; the old key's expiry may have moved.
        self.invalidate(Invalidation::Key(key.hash)).await;
        self.invalidate(Invalidation::Key(old.hash)).await;
        self.record(
            actor,
            "key.rotate",
            &old.id,
            format!(
                "new={} grace_seconds={} old_expires_at={}",
                key.id,
                grace_seconds
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "none".into()),
                time_str(old.expires_at),
            ),
        )
        .await;
        self.record(
            actor,
            "key.create",
            &key.id,
            format!(
                "rotated_from={} account={} prefix={}",
                old.id, key.account_id, key.display_prefix
            ),
        )
        .await;
        Ok(Rotated {
            key,
            plaintext,
            old,
        })
    }

    /// The store write, then the invalidation, so the very next request re-reads the key. The
    /// caller has checked that the actor may change the key ([`Self::key_for`]).
    async fn write(&self, id: &str, patch: KeyPatch) -> ServiceResult<KeyRecord> {
        let key = self.store.update_key(id, patch).await?;
        self.invalidate(Invalidation::Key(key.hash)).await;
        Ok(key)
    }
}
