//! `/admin/v1/keys`: create (the plaintext is returned once), list, get, update, the status
//! changes disable, enable, revoke, and rotate (a successor key, the old one kept for a grace
//! period or until revoked). Reads go to the store; every write is the [`KeyService`]'s
//! (validation, cache, token cut-offs and audit), with the operator as the actor.
//!
//! [`KeyService`]: crate::keyservice::KeyService

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{present, Body, Id, OptionalBody, Query};
use super::views::{next_cursor, CreatedKey, KeyList, KeyView, RotatedKey};
use crate::app::Shared;
use crate::keyservice::validate::RateLimitBody;
use crate::keyservice::{Actor, KeyChange, NewKeyInput};
use crate::store::{KeyStatus, Page, Permission};

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
    let CreateKey {
        account_id,
        name,
        scopes,
        permission,
        expires_at,
        user_id,
        rate_limit,
        resources,
    } = req;
    let input = NewKeyInput {
        account_id,
        user_id,
        name,
        scopes,
        permission,
        expires_at,
        rate_limit,
        resources,
    };
    let created = shared.keys.create_key(&Actor::Operator, input).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: created.plaintext.expose().to_string(),
            view: created.key.into(),
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
    let UpdateKey {
        name,
        scopes,
        expires_at,
        rate_limit,
        resources,
    } = req;
    let change = KeyChange {
        name,
        scopes,
        expires_at,
        rate_limit,
        resources,
    };
    let key = shared
        .keys
        .update_key(&Actor::Operator, &id, change)
        .await?;
    Ok(Json(key.into()))
}

pub async fn disable(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<KeyView>> {
    set_status(&shared, &id, KeyStatus::Disabled).await
}

pub async fn enable(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<KeyView>> {
    set_status(&shared, &id, KeyStatus::Active).await
}

pub async fn revoke(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<KeyView>> {
    set_status(&shared, &id, KeyStatus::Revoked).await
}

/// Status changes; the store refuses to bring a revoked key back (409). A failed token cut is
/// 503 (the status is written; retrying is safe).
async fn set_status(shared: &Shared, id: &str, status: KeyStatus) -> ApiResult<Json<KeyView>> {
    let key = shared
        .keys
        .set_key_status(&Actor::Operator, id, status)
        .await?;
    Ok(Json(key.into()))
}

/// `POST /keys/{id}/rotate`: a new key with the old one's settings; see
/// [`KeyService::rotate_key`](crate::keyservice::KeyService::rotate_key).
pub async fn rotate(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    OptionalBody(req): OptionalBody<RotateKey>,
) -> ApiResult<(StatusCode, Json<RotatedKey>)> {
    let rotated = shared
        .keys
        .rotate_key(&Actor::Operator, &id, req.grace_seconds)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(RotatedKey {
            key: rotated.plaintext.expose().to_string(),
            view: rotated.key.into(),
            old: rotated.old.into(),
        }),
    ))
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
