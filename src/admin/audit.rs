//! The audit log: every admin write appends one entry; `GET /audit` reads them back.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::Query;
use super::views::{AuditList, AuditView};
use crate::app::Shared;
use crate::store::NewAudit;

/// The only actor the admin token represents.
pub const ACTOR: &str = "admin";

/// Appends an entry after a write has committed. `detail` must never hold a secret.
///
/// A failure here is logged, not returned: the write it describes already happened (and for a
/// new key, failing would lose the plaintext the client can never see again).
pub async fn record(shared: &Shared, action: &str, target: &str, detail: String) {
    let entry = NewAudit {
        actor: ACTOR.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        detail,
    };
    if let Err(e) = shared.store.append_audit(entry).await {
        tracing::error!(error = %e, action, target, "admin audit entry was not written");
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    target: Option<String>,
    #[serde(default)]
    limit: u32,
}

pub async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditList>> {
    let entries = shared
        .store
        .list_audit(q.target.as_deref().filter(|t| !t.is_empty()), q.limit)
        .await?;
    Ok(Json(AuditList {
        entries: entries.into_iter().map(AuditView::from).collect(),
    }))
}
