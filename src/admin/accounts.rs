//! `/admin/v1/accounts`: create, list, get, set the plan, suspend, reactivate, delete (soft).
//! Every write is the [`KeyService`]'s (cache, token cut-offs, audit), with the operator as the
//! actor.
//!
//! [`KeyService`]: crate::keyservice::KeyService

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{present, Body, Id, Query};
use super::views::{next_cursor, AccountList, AccountView};
use crate::app::Shared;
use crate::keyservice::Actor;
use crate::store::{AccountStatus, Page};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    name: String,
}

/// `PATCH /accounts/{id}`: `{"plan": "pro"}` puts the account on a configured plan, `null`
/// takes it off (the routes' own limits apply).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    #[serde(default, deserialize_with = "present")]
    plan: Option<Option<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    limit: u32,
    after: Option<String>,
}

pub async fn create(
    State(shared): State<Arc<Shared>>,
    Body(req): Body<CreateAccount>,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    let account = shared
        .keys
        .create_account(&Actor::Operator, &req.name)
        .await?;
    Ok((StatusCode::CREATED, Json(account.into())))
}

pub async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<AccountList>> {
    let page = Page {
        after: q.after.filter(|a| !a.is_empty()),
        limit: q.limit,
    };
    let accounts = shared.store.list_accounts(&page).await?;
    let next = next_cursor(
        &page,
        accounts.len(),
        accounts.last().map(|a| a.id.as_str()),
    );
    Ok(Json(AccountList {
        accounts: accounts.into_iter().map(AccountView::from).collect(),
        next,
    }))
}

pub async fn get(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<AccountView>> {
    let account = shared.store.get_account(&id).await?.ok_or_else(not_found)?;
    Ok(Json(account.into()))
}

pub async fn update(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    Body(req): Body<UpdateAccount>,
) -> ApiResult<Json<AccountView>> {
    let Some(plan) = req.plan else {
        return Err(ApiError::invalid("nothing to change: set `plan`"));
    };
    // Plans change on reload: validated against the configuration serving now.
    let config = shared.config.load();
    let account = shared
        .keys
        .set_account_plan(&Actor::Operator, &id, plan, &config.plans)
        .await?;
    Ok(Json(account.into()))
}

pub async fn suspend(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
) -> ApiResult<Json<AccountView>> {
    set_status(&shared, &id, AccountStatus::Suspended).await
}

pub async fn reactivate(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
) -> ApiResult<Json<AccountView>> {
    set_status(&shared, &id, AccountStatus::Active).await
}

pub async fn delete(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<AccountView>> {
    set_status(&shared, &id, AccountStatus::Deleted).await
}

/// A deleted account stays deleted (deleting it again is a no-op success); stopping an account
/// cuts off its tokens (503 if that fails; the status is written and retrying is safe).
async fn set_status(shared: &Shared, id: &str, to: AccountStatus) -> ApiResult<Json<AccountView>> {
    let account = shared
        .keys
        .set_account_status(&Actor::Operator, id, to)
        .await?;
    Ok(Json(account.into()))
}

pub(super) fn not_found() -> ApiError {
    ApiError::NotFound("account not found".to_string())
}
