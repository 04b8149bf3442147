//! The audit log: every change (by an operator or a user) appends one entry, written by the
//! [`KeyService`](crate::keyservice::KeyService); `GET /audit` reads them back.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::Query;
use super::views::{AuditList, AuditView};
use crate::app::Shared;

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
