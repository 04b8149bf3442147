//! The audit log: every change (by an operator or a user) appends one entry, written by the
//! [`KeyService`](crate::keyservice::KeyService); `GET /audit` reads them back.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiResult;
use super::extract::Query;
use super::openapi::{Always, InvalidQuery};
use super::paging;
use super::views::{AuditList, AuditView};
use crate::app::Shared;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries about this key, user or account id.
    target: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/admin/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "entries", body = AuditList), InvalidQuery, Always))]
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditList>> {
    let limit = paging::limit(q.limit)?;
    let entries = shared
        .store
        .list_audit(q.target.as_deref().filter(|t| !t.is_empty()), limit)
        .await?;
    Ok(Json(AuditList {
        entries: entries.into_iter().map(AuditView::from).collect(),
    }))
}
