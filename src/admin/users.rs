//! `/admin/v1/users`: create, list, get, change role or status, set the password.
//!
//! Passwords arrive as [`Secret`]s and never reach a response, an audit entry or a log line.
//! Every write is the [`KeyService`]'s (hashing, cache, token cut-offs, audit), with the
//! operator as the actor.
//!
//! [`KeyService`]: crate::keyservice::KeyService

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use super::extract::{not_null, secret, Body, Id, Query};
use super::openapi::{self, Always, Conflict, Hashing, InvalidBody, InvalidQuery, NotFound};
use super::paging;
use super::views::{next_cursor, UserList, UserView};
use crate::app::Shared;
use crate::keyservice::{Actor, NewUserInput, UserChange};
use crate::secret::Secret;
use crate::store::{Page, Role, UserStatus};

/// `POST /users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// The user's account (`acc_...`).
    account_id: String,
    #[schema(schema_with = openapi::email_schema)]
    email: String,
    #[serde(deserialize_with = "secret")]
    #[schema(schema_with = openapi::password_schema)]
    password: Secret,
    #[serde(default = "default_role")]
    #[schema(default = "member", required = false)]
    role: Role,
}

fn default_role() -> Role {
    Role::Member
}

/// `PATCH /users/{id}`: at least one field; an absent field is left as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Role, required = false)]
    role: Option<Role>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = UserStatus, required = false)]
    status: Option<UserStatus>,
}

/// `POST /users/{id}/password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    #[serde(deserialize_with = "secret")]
    #[schema(schema_with = openapi::password_schema)]
    password: Secret,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this account's users.
    account_id: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// The `{id}` of a user.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Describes the path; `Id` reads it.
pub struct UserId {
    /// `usr_...`
    id: String,
}

/// 404 if the account does not exist; 409 if it is deleted or the email is taken (in any
/// account).
#[utoipa::path(post, path = "/admin/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, description = "created", body = UserView), NotFound, Conflict,
        InvalidBody, Hashing, Always))]
pub async fn create(
    State(shared): State<Arc<Shared>>,
    Body(req): Body<CreateUser>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let CreateUser {
        account_id,
        email,
        password,
        role,
    } = req;
    let input = NewUserInput {
        account_id,
        email,
        password,
        role,
    };
    let user = shared.keys.create_user(&Actor::Operator, input).await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

#[utoipa::path(get, path = "/admin/v1/users", tag = "users", params(ListQuery),
    responses((status = 200, description = "a page", body = UserList), InvalidQuery, Always))]
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<UserList>> {
    let page = Page {
        after: q.after.filter(|a| !a.is_empty()),
        limit: paging::limit(q.limit)?,
    };
    let account = q.account_id.as_deref().filter(|a| !a.is_empty());
    let users = shared.store.list_users(account, &page).await?;
    let next = next_cursor(&page, users.len(), users.last().map(|u| u.id.as_str()));
    Ok(Json(UserList {
        users: users.into_iter().map(UserView::from).collect(),
        next,
    }))
}

#[utoipa::path(get, path = "/admin/v1/users/{id}", tag = "users", params(UserId),
    responses((status = 200, description = "the user", body = UserView), NotFound, Always))]
pub async fn get(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<UserView>> {
    let user = shared
        .store
        .get_user(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound("user not found".to_string()))?;
    Ok(Json(user.into()))
}

/// A role or status change; the user's tokens are cut off (503 if that fails; the change is
/// written and retrying is safe).
#[utoipa::path(patch, path = "/admin/v1/users/{id}", tag = "users", params(UserId),
    request_body = UpdateUser,
    responses((status = 200, description = "the user", body = UserView), NotFound, InvalidBody,
        Always))]
pub async fn update(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    Body(req): Body<UpdateUser>,
) -> ApiResult<Json<UserView>> {
    let UpdateUser { role, status } = req;
    let user = shared
        .keys
        .update_user(&Actor::Operator, &id, UserChange { role, status })
        .await?;
    Ok(Json(user.into()))
}

/// `POST /users/{id}/password`: sets a new password; the user's existing sessions end.
#[utoipa::path(post, path = "/admin/v1/users/{id}/password", tag = "users", params(UserId),
    request_body = SetPassword,
    responses((status = 200, description = "the user; their sessions have ended",
        body = UserView), NotFound, InvalidBody, Hashing, Always))]
pub async fn set_password(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    Body(req): Body<SetPassword>,
) -> ApiResult<Json<UserView>> {
    let user = shared
        .keys
        .set_password(&Actor::Operator, &id, req.password)
        .await?;
    Ok(Json(user.into()))
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
        assert!(serde_json::from_str::<UpdateUser>(r#"{"role":null}"#).is_err());
        assert!(serde_json::from_str::<UpdateUser>(r#"{"status":null}"#).is_err());
        let p: SetPassword = serde_json::from_str(r#"{"password":"abcdefgh"}"#).unwrap();
        assert_eq!(p.password.expose(), "abcdefgh");
    }
}
