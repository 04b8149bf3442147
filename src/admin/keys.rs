//! `/admin/v1/keys`: create (the plaintext is returned once), list, get, update, the status
//! changes disable, enable, revoke, and rotate (a successor key, the old one kept for a grace
//! period or until revoked). Every write drops the key's cache entry after it commits; disable
//! and revoke also cut off the key's tokens.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::audit;
use super::error::{ApiError, ApiResult};
use super::extract::{present, Body, Id, OptionalBody, Query};
use super::validate::{self, RateLimitBody};
use super::views::{next_cursor, rfc3339, CreatedKey, KeyList, KeyView, RotatedKey};
use crate::app::Shared;
use crate::cache::Invalidation;
use crate::store::{
    now, AccountStatus, KeyPatch, KeyRecord, KeyStatus, NewKey, Page, Permission, RateLimit,
    Resources,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    account_id: String,
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default = "default_permission")]
    permission: Permission,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    /// The key's own limit; absent or null: its account's plan or the route decides.
    #[serde(default)]
    rate_limit: Option<RateLimitBody>,
    /// Resource kind -> allowed ids; absent or null: unrestricted.
    #[serde(default)]
    resources: Option<BTreeMap<String, Vec<String>>>,
}

fn default_permission() -> Permission {
    Permission::ReadWrite
}

/// `PATCH /keys/{id}`: an absent field is left as it is; `"expires_at": null` clears the expiry
/// and `"rate_limit": null` the key's own limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<RateLimitBody>>,
    #[serde(default, deserialize_with = "present")]
    resources: Option<Option<BTreeMap<String, Vec<String>>>>,
}

/// `POST /keys/{id}/rotate`; the body may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old key keeps working; absent: until it is revoked.
    #[serde(default)]
    grace_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    account_id: Option<String>,
    #[serde(default)]
    limit: u32,
    after: Option<String>,
}

pub async fn create(
    State(shared): State<Arc<Shared>>,
    Body(req): Body<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let name = validate::name("name", &req.name)?;
    let scopes = validate::scopes(req.scopes)?;
    let user_id = req
        .user_id
        .map(|u| validate::name("user_id", &u))
        .transpose()?;
    let expires_at = match req.expires_at.as_deref() {
        None => None,
        Some(t) => {
            let at = validate::time("expires_at", t)?;
            if at <= now() {
                return Err(ApiError::invalid("`expires_at` must be in the future"));
            }
            Some(at)
        }
    };
    let rate_limit = req
        .rate_limit
        .map(|l| validate::rate_limit("rate_limit", l))
        .transpose()?;
    let resources = req.resources.map(validate::resources).transpose()?;
    let account = shared
        .store
        .get_account(&req.account_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("account not found".to_string()))?;
    if account.status == AccountStatus::Deleted {
        return Err(ApiError::Conflict(
            "the account is deleted; it cannot get new keys".to_string(),
        ));
    }
    if let Some(user_id) = &user_id {
        let user = shared
            .store
            .get_user(user_id)
            .await?
            .ok_or_else(|| ApiError::NotFound("user not found".to_string()))?;
        if user.account_id != account.id {
            return Err(ApiError::invalid(
                "`user_id`: the user belongs to another account",
            ));
        }
    }

    let config = shared.config.load();
    let format = &config.key_format;
    let plaintext = format.generate();
    let hash = shared.hasher.hash(plaintext.expose());
    let key = shared
        .store
        .create_key(NewKey {
            account_id: account.id,
            user_id,
            name,
            display_prefix: format.display_prefix(plaintext.expose()),
            hash,
            scopes,
            permission: req.permission,
            expires_at,
            rate_limit,
            resources,
            rotated_from: None,
        })
        .await?;
    // Drops a cached "unknown key" answer for this hash, should one exist.
    shared.cache.invalidate(Invalidation::Key(key.hash)).await;
    audit::record(
        &shared,
        "key.create",
        &key.id,
        format!(
            "account={} user={} name={:?} prefix={} permission={} scopes=[{}] expires_at={} \
             rate_limit={} resources={}",
            key.account_id,
            key.user_id.as_deref().unwrap_or("none"),
            key.name,
            key.display_prefix,
            permission_str(key.permission),
            key.scopes.join(","),
            key.expires_at
                .and_then(rfc3339)
                .unwrap_or_else(|| "never".into()),
            limit_str(key.rate_limit),
            resources_str(key.resources.as_ref()),
        ),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: plaintext.expose().to_string(),
            view: key.into(),
        }),
    ))
}

pub async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<KeyList>> {
    let page = Page {
        after: q.after.filter(|a| !a.is_empty()),
        limit: q.limit,
    };
    let account = q.account_id.as_deref().filter(|a| !a.is_empty());
    let keys = shared.store.list_keys(account, &page).await?;
    let next = next_cursor(&page, keys.len(), keys.last().map(|k| k.id.as_str()));
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
        next,
    }))
}

pub async fn get(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<KeyView>> {
    let key = shared
        .store
        .get_key(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound("key not found".to_string()))?;
    Ok(Json(key.into()))
}

pub async fn update(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    Body(req): Body<UpdateKey>,
) -> ApiResult<Json<KeyView>> {
    let mut patch = KeyPatch::default();
    let mut changes = Vec::new();
    if let Some(name) = req.name {
        let name = validate::name("name", &name)?;
        changes.push(format!("name={name:?}"));
        patch.name = Some(name);
    }
    if let Some(scopes) = req.scopes {
        let scopes = validate::scopes(scopes)?;
        changes.push(format!("scopes=[{}]", scopes.join(",")));
        patch.scopes = Some(scopes);
    }
    if let Some(expires_at) = req.expires_at {
        let at = expires_at
            .map(|t| validate::time("expires_at", &t))
            .transpose()?;
        changes.push(format!(
            "expires_at={}",
            at.and_then(rfc3339).unwrap_or_else(|| "never".into())
        ));
        patch.expires_at = Some(at);
    }
    if let Some(limit) = req.rate_limit {
        let limit = limit
            .map(|l| validate::rate_limit("rate_limit", l))
            .transpose()?;
        changes.push(format!("rate_limit={}", limit_str(limit)));
        patch.rate_limit = Some(limit);
    }
    if let Some(resources) = req.resources {
        let resources = resources.map(validate::resources).transpose()?;
        changes.push(format!("resources={}", resources_str(resources.as_ref())));
        patch.resources = Some(resources);
    }
    if changes.is_empty() {
        return Err(ApiError::invalid(
            "nothing to change: set `name`, `scopes`, `expires_at`, `rate_limit` or `resources`",
        ));
    }
    let key = write(&shared, &id, patch).await?;
    audit::record(&shared, "key.update", &key.id, changes.join(" ")).await;
    Ok(Json(key.into()))
}

pub async fn disable(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<KeyView>> {
    set_status(&shared, &id, KeyStatus::Disabled, "key.disable").await
}

pub async fn enable(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<KeyView>> {
    set_status(&shared, &id, KeyStatus::Active, "key.enable").await
}

pub async fn revoke(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<KeyView>> {
    set_status(&shared, &id, KeyStatus::Revoked, "key.revoke").await
}

/// Status changes; the store refuses to bring a revoked key back (409).
async fn set_status(
    shared: &Arc<Shared>,
    id: &str,
    status: KeyStatus,
    action: &str,
) -> ApiResult<Json<KeyView>> {
    let patch = KeyPatch {
        status: Some(status),
        ..KeyPatch::default()
    };
    let key = write(shared, id, patch).await?;
    audit::record(
        shared,
        action,
        &key.id,
        format!("status={}", status_str(key.status)),
    )
    .await;
    if status != KeyStatus::Active {
        // Tokens exchanged for the key die with it, on every replica (also ones started later).
        super::cut_tokens(shared, &key.id).await?;
    }
    Ok(Json(key.into()))
}

/// `POST /keys/{id}/rotate`: a new key with the old one's account, user, name, scopes,
/// permission, expiry, limit and resources. With `grace_seconds` the old key expires that much
/// later (or at its own expiry, if sooner); without, it works until revoked.
pub async fn rotate(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    OptionalBody(req): OptionalBody<RotateKey>,
) -> ApiResult<(StatusCode, Json<RotatedKey>)> {
    let old = shared
        .store
        .get_key(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound("key not found".to_string()))?;
    if old.status == KeyStatus::Revoked {
        return Err(ApiError::Conflict(
            "the key is revoked; it cannot be rotated".to_string(),
        ));
    }
    let account = shared.store.get_account(&old.account_id).await?;
    if account.is_none_or(|a| a.status == AccountStatus::Deleted) {
        return Err(ApiError::Conflict(
            "the key's account is deleted; it cannot get new keys".to_string(),
        ));
    }
    let grace_end = req
        .grace_seconds
        .map(|g| now().saturating_add(i64::try_from(g).unwrap_or(i64::MAX)));
    let config = shared.config.load();
    let format = &config.key_format;
    let plaintext = format.generate();
    let hash = shared.hasher.hash(plaintext.expose());
    let (key, old) = shared
        .store
        .rotate_key(
            &old.id,
            NewKey {
                account_id: old.account_id.clone(),
                user_id: old.user_id.clone(),
                name: old.name.clone(),
                display_prefix: format.display_prefix(plaintext.expose()),
                hash,
                scopes: old.scopes.clone(),
                permission: old.permission,
                expires_at: old.expires_at,
                rate_limit: old.rate_limit,
                resources: old.resources.clone(),
                rotated_from: Some(old.id.clone()),
            },
            grace_end,
        )
        .await?;
    // The new hash may be cached as unknown; the old key's expiry may have moved.
    shared.cache.invalidate(Invalidation::Key(key.hash)).await;
    shared.cache.invalidate(Invalidation::Key(old.hash)).await;
    let old_expiry = old
        .expires_at
        .and_then(rfc3339)
        .unwrap_or_else(|| "never".into());
    audit::record(
        &shared,
        "key.rotate",
        &old.id,
        format!(
            "new={} grace_seconds={} old_expires_at={old_expiry}",
            key.id,
            req.grace_seconds
                .map(|g| g.to_string())
                .unwrap_or_else(|| "none".into()),
        ),
    )
    .await;
    audit::record(
        &shared,
        "key.create",
        &key.id,
        format!(
            "rotated_from={} account={} prefix={}",
            old.id, key.account_id, key.display_prefix
        ),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(RotatedKey {
            key: plaintext.expose().to_string(),
            view: key.into(),
            old: old.into(),
        }),
    ))
}

/// The store write, then the invalidation, so the very next request re-reads the key.
async fn write(shared: &Arc<Shared>, id: &str, patch: KeyPatch) -> ApiResult<KeyRecord> {
    let key = shared.store.update_key(id, patch).await?;
    shared.cache.invalidate(Invalidation::Key(key.hash)).await;
    Ok(key)
}

fn status_str(s: KeyStatus) -> &'static str {
    match s {
        KeyStatus::Active => "active",
        KeyStatus::Disabled => "disabled",
        KeyStatus::Revoked => "revoked",
    }
}

/// `10/60s burst=20`, or `none` (for audit details).
fn limit_str(l: Option<RateLimit>) -> String {
    match l {
        Some(l) => format!("{}/{}s burst={}", l.requests, l.per_seconds, l.burst),
        None => "none".to_string(),
    }
}

/// `projects=[p1,p2] envs=[]`, or `none` (for audit details).
fn resources_str(r: Option<&Resources>) -> String {
    match r {
        Some(r) if r.is_empty() => "{}".to_string(),
        Some(r) => r
            .iter()
            .map(|(kind, ids)| format!("{kind}=[{}]", ids.join(",")))
            .collect::<Vec<_>>()
            .join(" "),
        None => "none".to_string(),
    }
}

fn permission_str(p: Permission) -> &'static str {
    match p {
        Permission::Read => "read",
        Permission::ReadWrite => "read_write",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_tells_null_from_absent() {
        let absent: UpdateKey = serde_json::from_str(r#"{"name":"x"}"#).unwrap();
        assert_eq!(absent.expires_at, None);
        let null: UpdateKey = serde_json::from_str(r#"{"expires_at":null}"#).unwrap();
        assert_eq!(null.expires_at, Some(None));
        let set: UpdateKey =
            serde_json::from_str(r#"{"expires_at":"2030-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(
            set.expires_at,
            Some(Some("2030-01-01T00:00:00Z".to_string()))
        );
        let cleared: UpdateKey = serde_json::from_str(r#"{"rate_limit":null}"#).unwrap();
        assert_eq!(cleared.rate_limit, Some(None));
        assert_eq!(absent.rate_limit, None);
        let e = serde_json::from_str::<UpdateKey>(r#"{"rate_limit":{"requests":1}}"#);
        assert!(e.is_err_and(|e| e.to_string().contains("per_seconds")));
        let null: UpdateKey = serde_json::from_str(r#"{"resources":null}"#).unwrap();
        assert_eq!(null.resources, Some(None));
        assert_eq!(absent.resources, None);
        let set: UpdateKey = serde_json::from_str(r#"{"resources":{"projects":["p1"]}}"#).unwrap();
        assert_eq!(
            set.resources.flatten().map(|r| r["projects"].clone()),
            Some(vec!["p1".to_string()])
        );
    }

    #[test]
    fn rotate_body_is_optional_and_strict() {
        let r: RotateKey = serde_json::from_str("{}").unwrap();
        assert_eq!(r.grace_seconds, None);
        let r: RotateKey = serde_json::from_str(r#"{"grace_seconds":30}"#).unwrap();
        assert_eq!(r.grace_seconds, Some(30));
        assert!(serde_json::from_str::<RotateKey>(r#"{"grace_seconds":-1}"#).is_err());
        assert!(serde_json::from_str::<RotateKey>(r#"{"grace":1}"#).is_err());
        assert_eq!(
            resources_str(Some(&Resources::from([(
                "projects".to_string(),
                vec!["a".to_string(), "b".to_string()]
            )]))),
            "projects=[a,b]"
        );
    }

    #[test]
    fn create_defaults_and_rejections() {
        let k: CreateKey = serde_json::from_str(r#"{"account_id":"a","name":"n"}"#).unwrap();
        assert_eq!(k.permission, Permission::ReadWrite);
        assert!(k.scopes.is_empty());
        let e = serde_json::from_str::<CreateKey>(r#"{"account_id":"a","name":"n","x":1}"#);
        assert!(e.is_err_and(|e| e.to_string().contains("unknown field `x`")));
    }
}
