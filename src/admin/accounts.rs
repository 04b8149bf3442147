//! `/admin/v1/accounts`: create, list, get, set the plan, suspend, reactivate, delete (soft).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::audit;
use super::error::{ApiError, ApiResult};
use super::extract::{present, Body, Id, Query};
use super::validate;
use super::views::{next_cursor, AccountList, AccountView};
use crate::app::Shared;
use crate::cache::Invalidation;
use crate::store::{AccountStatus, NewAccount, Page};

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
    let name = validate::name("name", &req.name)?;
    let account = shared.store.create_account(NewAccount { name }).await?;
    audit::record(
        &shared,
        "account.create",
        &account.id,
        format!("name={:?}", account.name),
    )
    .await;
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
    let plan = plan
        .map(|p| validate::plan(&shared.config.load().plans, &p))
        .transpose()?;
    let current = shared.store.get_account(&id).await?.ok_or_else(not_found)?;
    let account = shared.store.set_account_plan(&id, plan).await?;
    // Cached credentials carry the account, plan included.
    shared
        .cache
        .invalidate(Invalidation::Account(account.id.clone()))
        .await;
    audit::record(
        &shared,
        "account.plan",
        &account.id,
        format!(
            "plan {} -> {}",
            current.plan.as_deref().unwrap_or("none"),
            account.plan.as_deref().unwrap_or("none")
        ),
    )
    .await;
    Ok(Json(account.into()))
}

pub async fn suspend(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
) -> ApiResult<Json<AccountView>> {
    set_status(&shared, &id, AccountStatus::Suspended, "account.suspend").await
}

pub async fn reactivate(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
) -> ApiResult<Json<AccountView>> {
    set_status(&shared, &id, AccountStatus::Active, "account.reactivate").await
}

pub async fn delete(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<AccountView>> {
    set_status(&shared, &id, AccountStatus::Deleted, "account.delete").await
}

/// Writes the status, then drops the account's cached credentials so the next proxied request
/// sees it. A deleted account stays deleted (deleting it again is a no-op success).
async fn set_status(
    shared: &Arc<Shared>,
    id: &str,
    to: AccountStatus,
    action: &str,
) -> ApiResult<Json<AccountView>> {
    let current = shared.store.get_account(id).await?.ok_or_else(not_found)?;
    if current.status == AccountStatus::Deleted {
        if to == AccountStatus::Deleted {
            return Ok(Json(current.into()));
        }
        return Err(ApiError::Conflict(
            "the account is deleted; it cannot be suspended or reactivated".to_string(),
        ));
    }
    let account = shared.store.set_account_status(id, to).await?;
    shared
        .cache
        .invalidate(Invalidation::Account(account.id.clone()))
        .await;
    audit::record(
        shared,
        action,
        &account.id,
        format!(
            "status {} -> {}",
            status_str(current.status),
            status_str(account.status)
        ),
    )
    .await;
    if to != AccountStatus::Active {
        // Every token of the account dies (keys' exchange tokens and users' sessions alike).
        super::cut_tokens(shared, &account.id).await?;
    }
    Ok(Json(account.into()))
}

fn status_str(s: AccountStatus) -> &'static str {
    match s {
        AccountStatus::Active => "active",
        AccountStatus::Suspended => "suspended",
        AccountStatus::Deleted => "deleted",
    }
}

pub(super) fn not_found() -> ApiError {
    ApiError::NotFound("account not found".to_string())
}
