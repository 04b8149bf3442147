//! `/admin/v1/accounts/{id}/credits` (balance, top up or deduct, set) and
//! `/admin/v1/accounts/{id}/transactions` (the ledger, oldest first). The store makes every change
//! atomic with its ledger entry; the request path reads balances from the store, not the cache,
//! so no invalidation is needed.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::accounts::not_found;
use super::error::{ApiError, ApiResult};
use super::extract::{Body, Id, Query};
use super::views::{next_cursor, Balance, TransactionList, TransactionView};
use crate::app::Shared;
use crate::keyservice::{validate, Actor};
use crate::store::Page;

/// `POST .../credits`: a positive delta tops up, a negative one deducts (never below zero).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adjust {
    delta: i64,
    #[serde(default)]
    reason: Option<String>,
}

/// `PUT .../credits`: the new balance.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBalance {
    balance: i64,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionsQuery {
    #[serde(default)]
    limit: u32,
    after: Option<String>,
}

pub async fn balance(State(shared): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<Balance>> {
    let account = shared.store.get_account(&id).await?.ok_or_else(not_found)?;
    Ok(Json(Balance {
        balance: account.credits,
    }))
}

pub async fn adjust(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    Body(req): Body<Adjust>,
) -> ApiResult<Json<Balance>> {
    if req.delta == 0 {
        return Err(ApiError::invalid("`delta` must not be zero"));
    }
    let default = if req.delta > 0 { "top-up" } else { "deduction" };
    let reason = reason(req.reason, default)?;
    let balance = shared
        .store
        .adjust_credits(&id, req.delta, None, &reason)
        .await?;
    shared
        .keys
        .record(
            &Actor::Operator,
            "credits.adjust",
            &id,
            format!("delta={:+} balance={balance} reason={reason:?}", req.delta),
        )
        .await;
    Ok(Json(Balance { balance }))
}

pub async fn set(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    Body(req): Body<SetBalance>,
) -> ApiResult<Json<Balance>> {
    let balance = validate::balance("balance", req.balance)?;
    let reason = reason(req.reason, "set")?;
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

pub async fn transactions(
    State(shared): State<Arc<Shared>>,
    Id(id): Id,
    Query(q): Query<TransactionsQuery>,
) -> ApiResult<Json<TransactionList>> {
    let after = match q.after.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => match a.parse::<i64>() {
            Ok(n) if n > 0 => Some(n.to_string()),
            _ => {
                return Err(ApiError::invalid(format!(
                    "`after`: `{}` is not a transaction id",
                    a.escape_debug()
                )))
            }
        },
    };
    let page = Page {
        after,
        limit: q.limit,
    };
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
