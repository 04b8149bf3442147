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
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use super::extract::{not_null, present, Body, Id, OptionalBody, Query};
use super::openapi::{self, Always, Conflict, InvalidBody, InvalidQuery, NotFound};
use super::paging;
use super::views::{next_cursor, CreatedKey, KeyList, KeyView, RotatedKey};
use crate::app::Shared;
use crate::keyservice::validate::{self, RateLimitBody};
use crate::keyservice::{Actor, KeyChange, NewKeyInput};
use crate::store::{KeyStatus, Metadata, Page, Permission};

/// `POST /keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// The account the key belongs to (`acc_...`).
    account_id: String,
    #[schema(schema_with = openapi::name_schema)]
    name: String,
    #[serde(default)]
    #[schema(schema_with = openapi::scopes_schema, required = false)]
    scopes: Vec<String>,
    #[serde(default = "default_permission")]
    #[schema(default = "read_write", required = false)]
    permission: Permission,
    /// RFC 3339, in the future (a past time is 409); absent or null: never expires.
    #[serde(default)]
    #[schema(schema_with = openapi::optional_time_schema, required = false)]
    expires_at: Option<String>,
    /// A user of the same account (`usr_...`); absent or null: none.
    #[serde(default)]
    #[schema(schema_with = openapi::optional_name_schema, required = false)]
    user_id: Option<String>,
    /// The key's own limit; absent or null: its account's plan or the route decides.
    #[serde(default)]
    rate_limit: Option<RateLimitBody>,
    /// Absent or null: unrestricted.
    #[serde(default)]
    #[schema(schema_with = openapi::resources_schema, required = false)]
    resources: Option<BTreeMap<String, Vec<String>>>,
    /// Any JSON object (at most 16 KiB) the operator keeps with the key; keygate returns it
    /// and decides nothing by it. Absent: `{}`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Object, required = false)]
    metadata: Option<Metadata>,
}

fn default_permission() -> Permission {
    Permission::ReadWrite
}

/// `PATCH /keys/{id}`: at least one field; an absent field is left as it is; `null` clears the
/// expiry, the key's own limit or its resource restriction; `metadata` replaces the metadata
/// whole (`{}` clears it).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[serde(default, deserialize_with = "not_null")]
    #[schema(schema_with = openapi::name_schema, required = false)]
    name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(schema_with = openapi::scopes_schema, required = false)]
    scopes: Option<Vec<String>>,
    /// RFC 3339 (a past time expires the key now); null: never expires.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = openapi::optional_time_schema, required = false)]
    expires_at: Option<Option<String>>,
    /// null: the account's plan or the route decides.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RateLimitBody>, required = false)]
    rate_limit: Option<Option<RateLimitBody>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = openapi::resources_schema, required = false)]
    resources: Option<Option<BTreeMap<String, Vec<String>>>>,
    /// Replaces the metadata: any JSON object (at most 16 KiB); `{}` clears it.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Object, required = false)]
    metadata: Option<Metadata>,
}

/// The longest grace a rotation takes (the schema's `maximum`, 2^53 - 1 so that every JSON
/// number up to it is exact): any later end is "never" anyway.
const MAX_GRACE_SECONDS: u64 = (1 << 53) - 1;

/// `POST /keys/{id}/rotate`; the body may be left out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old key keeps working; absent: until it is revoked.
    #[serde(default, deserialize_with = "validate::some_integer")]
    #[schema(value_type = u64, minimum = 0, maximum = 9_007_199_254_740_991_u64,
        required = false)]
    grace_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this account's keys.
    account_id: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// The `{id}` of a key.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Describes the path; `Id` reads it.
pub struct KeyId {
    /// `key_...`
    id: String,
}

/// A new key; its plaintext is in this answer only. 404 if the account or user does not exist,
/// 409 if the account is deleted or `expires_at` is past.
#[utoipa::path(post, path = "/admin/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, description = "created", body = CreatedKey), NotFound, Conflict,
        InvalidBody, Always))]
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
        metadata,
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
        metadata: metadata.unwrap_or_default(),
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

#[utoipa::path(get, path = "/admin/v1/keys", tag = "keys", params(ListQuery),
    responses((status = 200, description = "a page", body = KeyList), InvalidQuery, Always))]
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<KeyList>> {
    let page = Page {
        after: q.after.filter(|a| !a.is_empty()),
        limit: paging::limit(q.limit)?,
    };
    let account = q.account_id.as_deref().filter(|a| !a.is_empty());
    let keys = shared.store.list_keys(account, &page).await?;
    let next = next_cursor(&page, keys.len(), keys.last().map(|k| k.id.as_str()));
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
        next,
    }))
}

#[utoipa::path(get, path = "/admin/v1/keys/{id}", tag = "keys", params(KeyId),
    responses((status = 200, description = "the key", body = KeyView), NotFound, Always))]
pub async fn get(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<KeyView>> {
    let key = shared
        .store
        .get_key(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound("key not found".to_string()))?;
    Ok(Json(key.into()))
}

/// Rename a key, set its scopes, expiry, limit, resources or metadata; narrowing it cuts off its
/// tokens.
#[utoipa::path(patch, path = "/admin/v1/keys/{id}", tag = "keys", params(KeyId),
    request_body = UpdateKey,
    responses((status = 200, description = "the key", body = KeyView), NotFound, InvalidBody,
        Always))]
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
        metadata,
    } = req;
    let change = KeyChange {
        name,
        scopes,
        expires_at,
        rate_limit,
        resources,
        metadata,
    };
    let key = shared
        .keys
        .update_key(&Actor::Operator, &id, change)
        .await?;
    Ok(Json(key.into()))
}

#[utoipa::path(post, path = "/admin/v1/keys/{id}/disable", tag = "keys", params(KeyId),
    responses((status = 200, description = "disabled; its tokens are cut off", body = KeyView),
        NotFound, Conflict, Always))]
pub async fn disable(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<KeyView>> {
    set_status(&shared, &id, KeyStatus::Disabled).await
}

#[utoipa::path(post, path = "/admin/v1/keys/{id}/enable", tag = "keys", params(KeyId),
    responses((status = 200, description = "active again", body = KeyView), NotFound,
        Conflict, Always))]
pub async fn enable(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<KeyView>> {
    set_status(&shared, &id, KeyStatus::Active).await
}

#[utoipa::path(post, path = "/admin/v1/keys/{id}/revoke", tag = "keys", params(KeyId),
    responses((status = 200, description = "revoked for good; its tokens are cut off",
        body = KeyView), NotFound, Conflict, Always))]
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
/// [`KeyService::rotate_key`](crate::keyservice::KeyService::rotate_key). 409 for a revoked key
/// or one whose account is deleted.
#[utoipa::path(post, path = "/admin/v1/keys/{id}/rotate", tag = "keys", params(KeyId),
    request_body(content = RotateKey, description = "may be left out"),
    responses((status = 201, description = "the successor (its plaintext shown once) and the \
        old key", body = RotatedKey), NotFound, Conflict, InvalidBody, Always))]
pub async fn rotate(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    OptionalBody(req): OptionalBody<RotateKey>,
) -> ApiResult<(StatusCode, Json<RotatedKey>)> {
    if req.grace_seconds.is_some_and(|g| g > MAX_GRACE_SECONDS) {
        return Err(ApiError::invalid(format!(
            "`grace_seconds` must be at most {MAX_GRACE_SECONDS}"
        )));
    }
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
        assert!(serde_json::from_str::<RotateKey>(r#"{"grace_seconds":null}"#).is_err());
    }

    #[test]
    fn create_defaults_and_rejections() {
        let k: CreateKey = serde_json::from_str(r#"{"account_id":"a","name":"n"}"#).unwrap();
        assert_eq!(k.permission, Permission::ReadWrite);
        assert!(k.scopes.is_empty());
        let e = serde_json::from_str::<CreateKey>(r#"{"account_id":"a","name":"n","x":1}"#);
        assert!(e.is_err_and(|e| e.to_string().contains("unknown field `x`")));
        for body in [
            r#"{"account_id":"a","name":null}"#,
            r#"{"account_id":"a","name":"n","permission":null}"#,
            r#"{"account_id":"a","name":"n","scopes":null}"#,
            r#"{"account_id":"a","name":"n","metadata":null}"#,
            r#"{"account_id":"a","name":"n","metadata":[1]}"#,
        ] {
            assert!(serde_json::from_str::<CreateKey>(body).is_err(), "{body}");
        }
        for null in ["name", "scopes", "metadata"] {
            let body = format!(r#"{{"{null}":null}}"#);
            assert!(serde_json::from_str::<UpdateKey>(&body).is_err(), "{body}");
        }
    }
}
