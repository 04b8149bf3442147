//! `/admin/v1/users`: create, list, get, change role or status, set the password.
//!
//! Passwords arrive as [`Secret`]s, are hashed with argon2id on the blocking pool, and never
//! reach a response, an audit entry or a log line. A role or status change drops the cached
//! credentials of the user's account (they carry the user) and cuts off the user's tokens.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::audit;
use super::error::{ApiError, ApiResult};
use super::extract::{secret, Body, Id, Query};
use super::validate;
use super::views::{next_cursor, UserList, UserView};
use crate::app::Shared;
use crate::cache::Invalidation;
use crate::passwords;
use crate::secret::Secret;
use crate::store::{AccountStatus, NewUser, Page, Role, UserPatch, UserStatus};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    account_id: String,
    email: String,
    #[serde(deserialize_with = "secret")]
    password: Secret,
    #[serde(default = "default_role")]
    role: Role,
}

fn default_role() -> Role {
    Role::Member
}

/// `PATCH /users/{id}`: an absent field is left as it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    status: Option<UserStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    #[serde(deserialize_with = "secret")]
    password: Secret,
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
    Body(req): Body<CreateUser>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let email = validate::email(&req.email)?;
    passwords::validate_new(req.password.expose()).map_err(ApiError::InvalidBody)?;
    let account = shared
        .store
        .get_account(&req.account_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("account not found".to_string()))?;
    if account.status == AccountStatus::Deleted {
        return Err(ApiError::Conflict(
            "the account is deleted; it cannot get new users".to_string(),
        ));
    }
    // Cheap before the expensive hash; the store checks again, atomically.
    if shared.store.find_user_by_email(&email).await?.is_some() {
        return Err(duplicate_email());
    }
    let password_hash = hash(req.password).await?;
    let user = shared
        .store
        .create_user(NewUser {
            account_id: account.id,
            email,
            password_hash,
            role: req.role,
        })
        .await?;
    audit::record(
        &shared,
        "user.create",
        &user.id,
        format!(
            "account={} email={:?} role={}",
            user.account_id,
            user.email,
            role_str(user.role)
        ),
    )
    .await;
    Ok((StatusCode::CREATED, Json(user.into())))
}

pub async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<UserList>> {
    let page = Page {
        after: q.after.filter(|a| !a.is_empty()),
        limit: q.limit,
    };
    let account = q.account_id.as_deref().filter(|a| !a.is_empty());
    let users = shared.store.list_users(account, &page).await?;
    let next = next_cursor(&page, users.len(), users.last().map(|u| u.id.as_str()));
    Ok(Json(UserList {
        users: users.into_iter().map(UserView::from).collect(),
        next,
    }))
}

pub async fn get(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<UserView>> {
    let user = shared.store.get_user(&id).await?.ok_or_else(not_found)?;
    Ok(Json(user.into()))
}

pub async fn update(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    Body(req): Body<UpdateUser>,
) -> ApiResult<Json<UserView>> {
    if req.role.is_none() && req.status.is_none() {
        return Err(ApiError::invalid(
            "nothing to change: set `role` or `status`",
        ));
    }
    let current = shared.store.get_user(&id).await?.ok_or_else(not_found)?;
    let user = shared
        .store
        .update_user(
            &id,
            UserPatch {
                role: req.role,
                status: req.status,
                password_hash: None,
            },
        )
        .await?;
    // Cached credentials carry the user (role and status); tokens issued to the user carry the
    // old role, so they die too.
    shared
        .cache
        .invalidate(Invalidation::Account(user.account_id.clone()))
        .await;
    let mut changes = Vec::new();
    if req.role.is_some() {
        changes.push(format!(
            "role {} -> {}",
            role_str(current.role),
            role_str(user.role)
        ));
    }
    if req.status.is_some() {
        changes.push(format!(
            "status {} -> {}",
            status_str(current.status),
            status_str(user.status)
        ));
    }
    audit::record(&shared, "user.update", &user.id, changes.join(" ")).await;
    super::cut_tokens(&shared, &user.id).await?;
    Ok(Json(user.into()))
}

/// `POST /users/{id}/password`: sets a new password; the user's existing sessions end.
pub async fn set_password(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    Body(req): Body<SetPassword>,
) -> ApiResult<Json<UserView>> {
    passwords::validate_new(req.password.expose()).map_err(ApiError::InvalidBody)?;
    // 404 before spending a hash on a user that does not exist.
    shared.store.get_user(&id).await?.ok_or_else(not_found)?;
    let password_hash = hash(req.password).await?;
    let user = shared
        .store
        .update_user(
            &id,
            UserPatch {
                password_hash: Some(password_hash),
                ..UserPatch::default()
            },
        )
        .await?;
    audit::record(&shared, "user.password", &user.id, "password set".into()).await;
    super::cut_tokens(&shared, &user.id).await?;
    Ok(Json(user.into()))
}

/// argon2id on the blocking pool (tens of milliseconds of CPU).
async fn hash(password: Secret) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || passwords::hash(&password))
        .await
        .map_err(|e| ApiError::Internal(format!("password hashing task failed: {e}")))?
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn duplicate_email() -> ApiError {
    ApiError::Conflict("a user with this email exists".to_string())
}

fn not_found() -> ApiError {
    ApiError::NotFound("user not found".to_string())
}

fn role_str(r: Role) -> &'static str {
    match r {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Member => "member",
        Role::ReadOnly => "read_only",
    }
}

fn status_str(s: UserStatus) -> &'static str {
    match s {
        UserStatus::Active => "active",
        UserStatus::Disabled => "disabled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_defaults_to_member_and_hides_the_password() {
        let u: CreateUser = serde_json::from_str(
            r#"{"account_id":"acc_1","email":"a@b.c","password":"hunter2hunter2"}"#,
        )
        .unwrap();
        assert_eq!(u.role, Role::Member);
        assert_eq!(u.password.expose(), "hunter2hunter2");
        assert!(!format!("{u:?}").contains("hunter2"));
        let u: CreateUser = serde_json::from_str(
            r#"{"account_id":"a","email":"a@b.c","password":"p","role":"read_only"}"#,
        )
        .unwrap();
        assert_eq!(u.role, Role::ReadOnly);
    }

    #[test]
    fn bad_fields_are_named_without_echoing_the_password() {
        let e = serde_json::from_str::<CreateUser>(
            r#"{"account_id":"a","email":"a@b.c","password":12345678}"#,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.contains("expected a string") && !e.contains("12345678"),
            "{e}"
        );
        let e = serde_json::from_str::<CreateUser>(
            r#"{"account_id":"a","email":"a@b.c","password":"x","role":"boss"}"#,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("boss"), "{e}");
        assert!(serde_json::from_str::<UpdateUser>(r#"{"status":"gone"}"#).is_err());
        assert!(serde_json::from_str::<UpdateUser>(r#"{"email":"x@y.z"}"#).is_err());
        let p: SetPassword = serde_json::from_str(r#"{"password":"abcdefgh"}"#).unwrap();
        assert_eq!(p.password.expose(), "abcdefgh");
    }
}
