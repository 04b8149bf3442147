//! A key holder's own credit balance and transaction history, on paths the config names
//! (`/account/info`, `/v1/wallet/balance`, ...), so an upstream that knows nothing of credits still
//! serves the documented account endpoints.

use serde_json::json;

use super::shape::Values;
use super::LocalResponse;
use crate::cache::CachedCredential;
use crate::config::{LocalEndpoint, LocalKind};
use crate::errors::Reason;
use crate::store::{Account, Page, Store};

/// Default balance body, Enrow's `/account/info` shape.
pub const DEFAULT_BALANCE_BODY: &str = r#"{"credits":{balance}}"#;

pub async fn answer(
    endpoint: &LocalEndpoint,
    principal: &CachedCredential,
    store: &dyn Store,
    query: Option<&str>,
) -> Result<LocalResponse, Reason> {
    let account_id = &principal.credential.account.id;
    match endpoint.kind {
        LocalKind::Balance => {
            // Read fresh: the cached account snapshot does not follow charges (nor metadata).
            let account = fresh_account(store, account_id).await?;
            let body = match &endpoint.body {
                Some(template) => template.render(&Values {
                    balance: Some(account.credits),
                    metadata: Some(&account.metadata),
                    ..Values::default()
                }),
                None => DEFAULT_BALANCE_BODY.replace("{balance}", &account.credits.to_string()),
            };
            Ok(LocalResponse { status: 200, body })
        }
        LocalKind::Transactions => {
            let page = page_from_query(query)?;
            let entries = store
                .list_ledger(account_id, &page)
                .await
                .map_err(|_| Reason::StoreUnavailable)?;
            let next = (entries.len() as u32 == page.limit())
                .then(|| entries.last().map(|e| e.id.to_string()))
                .flatten();
            let items: Vec<_> = entries
                .iter()
                .map(|e| {
                    json!({
                        "id": e.id,
                        "delta": e.delta,
                        "reason": e.reason,
                        "balance_after": e.balance_after,
                        "created_at": chrono::DateTime::from_timestamp(e.at, 0)
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    })
                })
                .collect();
            let Some(template) = &endpoint.body else {
                return Ok(LocalResponse {
                    status: 200,
                    body: json!({ "transactions": items, "next": next }).to_string(),
                });
            };
            let account = match template.needs_account() {
                true => Some(fresh_account(store, account_id).await?),
                false => None,
            };
            let body = template.render(&Values {
                balance: account.as_ref().map(|a| a.credits),
                metadata: account.as_ref().map(|a| &a.metadata),
                items: Some(serde_json::Value::Array(items)),
                has_more: next.is_some(),
                cursor: next,
            });
            Ok(LocalResponse { status: 200, body })
        }
        _ => Err(Reason::RouteNotFound),
    }
}

async fn fresh_account(store: &dyn Store, id: &str) -> Result<Account, Reason> {
    store
        .get_account(id)
        .await
        .map_err(|_| Reason::StoreUnavailable)?
        .ok_or(Reason::AccountMissing)
}

/// `?after=<id>&limit=<n>`; anything else in the query is ignored, a bad value is 422.
fn page_from_query(query: Option<&str>) -> Result<Page, Reason> {
    let mut page = Page {
        after: None,
        limit: 50,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "after" => {
                v.parse::<i64>().map_err(|_| Reason::InvalidBody)?;
                page.after = Some(v.to_string());
            }
            "limit" => {
                page.limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or(Reason::InvalidBody)?;
            }
            _ => {}
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_query() {
        let p = page_from_query(Some("after=12&limit=5&x=y")).unwrap_or_default();
        assert_eq!(p.after.as_deref(), Some("12"));
        assert_eq!(p.limit, 5);
        assert_eq!(page_from_query(None).map(|p| p.limit), Ok(50));
        assert!(page_from_query(Some("limit=0")).is_err());
        assert!(page_from_query(Some("after=abc")).is_err());
    }
}
