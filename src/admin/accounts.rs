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
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use super::extract::{not_null, present, Body, Id, OptionalBody, Query};
use super::openapi::{self, Always, InvalidBody, InvalidQuery, NotFound};
use super::paging;
use super::views::{next_cursor, AccountList, AccountView};
use crate::app::Shared;
use crate::keyservice::Actor;
use crate::store::{Account, AccountStatus, Metadata, Page};

/// `POST /accounts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    #[schema(schema_with = openapi::name_schema)]
    name: String,
    /// Any JSON object (at most 16 KiB), placed by local endpoints' body templates
    /// (`{metadata.webhooks}`); absent: `{}`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Object, required = false)]
    metadata: Option<Metadata>,
}

/// `PATCH /accounts/{id}`: `{"plan": "pro"}` puts the account on a configured plan, `null`
/// takes it off (the routes' own limits apply). The document lists the configured plans.
/// `{"metadata": {...}}` replaces the account's metadata. At least one of them is set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    /// A plan from the config's `[plans.*]`; null: none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    plan: Option<Option<String>>,
    /// Replaces the metadata: any JSON object (at most 16 KiB).
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Object, required = false)]
    metadata: Option<Metadata>,
}

/// `POST /accounts/{id}/suspend`; the body may be left out (a plain, reversible suspension).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendAccount {
    /// Also revoke every key of the account (for good: reactivating the account brings none
    /// back). Its tokens are cut off either way.
    #[serde(default)]
    #[schema(required = false)]
    revoke_keys: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// The `{id}` of an account.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Describes the path; `Id` reads it.
pub struct AccountId {
    /// `acc_...`
    id: String,
}

#[utoipa::path(post, path = "/admin/v1/accounts", tag = "accounts",
    request_body = CreateAccount,
    responses((status = 201, description = "created", body = AccountView), InvalidBody, Always))]
pub async fn create(
    State(shared): State<Arc<Shared>>,
    Body(req): Body<CreateAccount>,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    let account = shared
        .keys
        .create_account(
            &Actor::Operator,
            &req.name,
            req.metadata.unwrap_or_default(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(account.into())))
}

/// Accounts in id order; deleted ones are left out (a page may then be short while `next` is
/// set).
#[utoipa::path(get, path = "/admin/v1/accounts", tag = "accounts", params(ListQuery),
    responses((status = 200, description = "a page", body = AccountList), InvalidQuery, Always))]
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<AccountList>> {
    let page = Page {
        after: q.after.filter(|a| !a.is_empty()),
        limit: paging::limit(q.limit)?,
    };
    let accounts = shared.store.list_accounts(&page).await?;
    let next = next_cursor(
        &page,
        accounts.len(),
        accounts.last().map(|a| a.id.as_str()),
    );
    Ok(Json(AccountList {
        accounts: accounts
            .into_iter()
            .filter(|a| a.status != AccountStatus::Deleted)
            .map(AccountView::from)
            .collect(),
        next,
    }))
}

#[utoipa::path(get, path = "/admin/v1/accounts/{id}", tag = "accounts", params(AccountId),
    responses((status = 200, description = "the account", body = AccountView), NotFound, Always))]
pub async fn get(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<AccountView>> {
    Ok(Json(live_account(&shared, &id).await?.into()))
}

#[utoipa::path(patch, path = "/admin/v1/accounts/{id}", tag = "accounts", params(AccountId),
    request_body = UpdateAccount,
    responses((status = 200, description = "the account", body = AccountView), NotFound,
        InvalidBody, Always))]
pub async fn update(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    Body(req): Body<UpdateAccount>,
) -> ApiResult<Json<AccountView>> {
    if req.plan.is_none() && req.metadata.is_none() {
        return Err(ApiError::invalid(
            "nothing to change: set `plan` or `metadata`",
        ));
    }
    // Checked before anything changes, so a bad one leaves the plan as it was too.
    let metadata = req
        .metadata
        .map(crate::keyservice::validate::metadata)
        .transpose()?;
    let mut account = None;
    if let Some(plan) = req.plan {
        // Plans change on reload: validated against the configuration serving now.
        let config = shared.config.load();
        account = Some(
            shared
                .keys
                .set_account_plan(&Actor::Operator, &id, plan, &config.plans)
                .await?,
        );
    }
    if let Some(metadata) = metadata {
        account = Some(
            shared
                .keys
                .set_account_metadata(&Actor::Operator, &id, metadata)
                .await?,
        );
    }
    match account {
        Some(account) => Ok(Json(account.into())),
        None => Err(ApiError::invalid("nothing to change")),
    }
}

#[utoipa::path(post, path = "/admin/v1/accounts/{id}/suspend", tag = "accounts",
    params(AccountId),
    request_body(content = SuspendAccount, description = "may be left out"),
    responses((status = 200, description = "suspended; its tokens are cut off (and its keys \
        revoked with `revoke_keys`)", body = AccountView), NotFound, InvalidBody, Always))]
pub async fn suspend(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    OptionalBody(req): OptionalBody<SuspendAccount>,
) -> ApiResult<Json<AccountView>> {
    let account = shared
        .keys
        .suspend_account(&Actor::Operator, &id, req.revoke_keys)
        .await?;
    Ok(Json(account.into()))
}

#[utoipa::path(post, path = "/admin/v1/accounts/{id}/reactivate", tag = "accounts",
    params(AccountId),
    responses((status = 200, description = "active again", body = AccountView), NotFound,
        Always))]
pub async fn reactivate(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
) -> ApiResult<Json<AccountView>> {
    set_status(&shared, &id, AccountStatus::Active).await
}

/// Soft delete: the account is gone from this API (404 from then on, deleting it again too);
/// its keys answer `account_missing` on the proxy.
#[utoipa::path(delete, path = "/admin/v1/accounts/{id}", tag = "accounts", params(AccountId),
    responses((status = 200, description = "deleted (its last state)", body = AccountView),
        NotFound, Always))]
pub async fn delete(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<AccountView>> {
    set_status(&shared, &id, AccountStatus::Deleted).await
}

/// Stopping an account cuts off its tokens (503 if that fails; the status is written and
/// retrying is safe).
async fn set_status(shared: &Shared, id: &str, to: AccountStatus) -> ApiResult<Json<AccountView>> {
    let account = shared
        .keys
        .set_account_status(&Actor::Operator, id, to)
        .await?;
    Ok(Json(account.into()))
}

/// The account, unless it does not exist or is deleted (both 404 here).
pub(super) async fn live_account(shared: &Shared, id: &str) -> ApiResult<Account> {
    match shared.store.get_account(id).await? {
        Some(a) if a.status != AccountStatus::Deleted => Ok(a),
        _ => Err(ApiError::NotFound("account not found".to_string())),
    }
}
