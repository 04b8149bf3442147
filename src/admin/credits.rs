//! `/admin/v1/accounts/{id}/credits` (balance, top up or deduct, set) and
//! `/admin/v1/accounts/{id}/transactions` (the ledger, oldest first). The store makes every change
//! atomic with its ledger entry; the request path reads balances from the store, not the cache,
//! so no invalidation is needed.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::accounts::{live_account, AccountId};
use super::error::ApiResult;
use super::extract::{not_null, Body, Id, Query};
use super::openapi::{self, Always, InvalidBody, InvalidQuery, NotFound};
use super::paging;
use super::views::{next_cursor, Balance, TransactionList, TransactionView};
use crate::app::Shared;
use crate::keyservice::{validate, Actor};
use crate::store::Page;

/// `POST .../credits`: a positive delta tops up, a negative one deducts (never below zero).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Adjust {
    /// Not zero; at most 2^53 - 1 either way.
    #[serde(deserialize_with = "validate::integer")]
    #[schema(schema_with = delta_schema)]
    delta: i64,
    /// For the ledger; absent: `top-up` or `deduction`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(schema_with = openapi::name_schema, required = false)]
    reason: Option<String>,
}

/// `PUT .../credits`: the new balance.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBalance {
    #[serde(deserialize_with = "validate::integer")]
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_i64)]
    balance: i64,
    /// For the ledger; absent: `set`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(schema_with = openapi::name_schema, required = false)]
    reason: Option<String>,
}

/// `delta`: an integer in ±(2^53 - 1), not zero (one of the two ranges either side of it).
fn delta_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    let range = |min: i64, max: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(min))
            .maximum(Some(max))
    };
    OneOfBuilder::new()
        .item(range(1, crate::store::MAX_CREDITS))
        .item(range(-crate::store::MAX_CREDITS, -1))
        .description(Some("positive tops up, negative deducts; never zero"))
        .build()
        .into()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TransactionsQuery {
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` of the previous page: a transaction id.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    after: Option<String>,
}

#[utoipa::path(get, path = "/admin/v1/accounts/{id}/credits", tag = "credits",
    params(AccountId),
    responses((status = 200, description = "the balance", body = Balance), NotFound, Always))]
pub async fn balance(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<Balance>> {
    let account = live_account(&shared, &id).await?;
    Ok(Json(Balance {
        balance: account.credits,
    }))
}

/// A deduction that would take the balance below zero is 409.
#[utoipa::path(post, path = "/admin/v1/accounts/{id}/credits", tag = "credits",
    params(AccountId), request_body = Adjust,
    responses((status = 200, description = "the new balance", body = Balance), NotFound,
        openapi::Conflict, InvalidBody, Always))]
pub async fn adjust(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    Body(req): Body<Adjust>,
) -> ApiResult<Json<Balance>> {
    let delta = validate::delta("delta", req.delta)?;
    let default = if delta > 0 { "top-up" } else { "deduction" };
    let reason = reason(req.reason, default)?;
    // Checked first so a deleted account answers 404; a deletion racing this write can still
    // let one adjustment land on it (the record is kept, so nothing breaks).
    live_account(&shared, &id).await?;
    let balance = shared
        .store
        .adjust_credits(&id, delta, None, &reason)
        .await?;
    shared
        .keys
        .record(
            &Actor::Operator,
            "credits.adjust",
            &id,
            format!("delta={delta:+} balance={balance} reason={reason:?}"),
        )
        .await;
    Ok(Json(Balance { balance }))
}

#[utoipa::path(put, path = "/admin/v1/accounts/{id}/credits", tag = "credits",
    params(AccountId), request_body = SetBalance,
    responses((status = 200, description = "the new balance", body = Balance), NotFound,
        InvalidBody, Always))]
pub async fn set(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    Body(req): Body<SetBalance>,
) -> ApiResult<Json<Balance>> {
    let balance = validate::balance("balance", req.balance)?;
    let reason = reason(req.reason, "set")?;
    live_account(&shared, &id).await?;
    let balance = shared.store.set_credits(&id, balance, &reason).await?;
    shared
        .keys
        .record(
            &Actor::Operator,
            "credits.set",
            &id,
            format!("balance={balance} reason={reason:?}"),
        )
        .await;
    Ok(Json(Balance { balance }))
}

/// The ledger, oldest first.
#[utoipa::path(get, path = "/admin/v1/accounts/{id}/transactions", tag = "credits",
    params(AccountId, TransactionsQuery),
    responses((status = 200, description = "a page", body = TransactionList), NotFound,
        InvalidQuery, Always))]
pub async fn transactions(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    Query(q): Query<TransactionsQuery>,
) -> ApiResult<Json<TransactionList>> {
    let page = Page {
        after: paging::transaction_cursor(q.after)?,
        limit: paging::limit(q.limit)?,
    };
    live_account(&shared, &id).await?;
    let entries = shared.store.list_ledger(&id, &page).await?;
    let last = entries.last().map(|e| e.id.to_string());
    let next = next_cursor(&page, entries.len(), last.as_deref());
    Ok(Json(TransactionList {
        transactions: entries.into_iter().map(TransactionView::from).collect(),
        next,
    }))
}

/// The given reason (a checked display text), or the default.
fn reason(given: Option<String>, default: &str) -> ApiResult<String> {
    match given {
        Some(r) => Ok(validate::name("reason", &r)?),
        None => Ok(default.to_string()),
    }
}
