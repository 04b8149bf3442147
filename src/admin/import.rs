//! `POST /admin/v1/keys/import`: keys made elsewhere brought in as they are (see
//! [`crate::keyservice`]'s import). The body is one JSON object whose `keys` array holds the
//! entries — the admin API takes JSON objects only, and an array keeps each entry's number —
//! and the answer lists, by entry number, the stored keys and the refused entries.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::extract::Body;
use super::openapi::{Always, InvalidBody};
use crate::app::Shared;
use crate::keyservice::{Actor, MAX_IMPORT};

/// The entries to import.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportKeys {
    /// 1 to 10,000 entries, each an object: `key` (the plaintext) or `sha256` (its digest, hex
    /// or base64), `account_id`, and optionally `name`, `scopes`, `permission`, `expires_at`,
    /// `user_id`, `rate_limit`, `resources`, `metadata` as in a created key. An entry that is
    /// refused is reported by its number (the first is 1); the others are stored.
    #[schema(min_items = 1, max_items = 10000)]
    keys: Vec<Map<String, Value>>,
}

/// One stored (or already stored) key.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportedKey {
    pub line: u64,
    /// `key_...`
    pub id: String,
    /// `created` now, or `existing` (the same key was imported before).
    pub status: String,
}

/// One refused entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportError {
    pub line: u64,
    /// Why; never holds the key.
    pub error: String,
}

/// What the import came to.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResult {
    pub created: u64,
    pub existing: u64,
    pub refused: u64,
    pub keys: Vec<ImportedKey>,
    pub errors: Vec<ImportError>,
}

/// Imports keys made elsewhere; idempotent (a key imported twice is one key). 200 even when
/// some entries are refused: `errors` lists them by number.
#[utoipa::path(post, path = "/admin/v1/keys/import", tag = "keys", request_body = ImportKeys,
    responses((status = 200, description = "imported", body = ImportResult), InvalidBody,
        Always))]
pub async fn import(
    State(shared): State<Arc<Shared>>,
    Body(req): Body<ImportKeys>,
) -> ApiResult<Json<ImportResult>> {
    if req.keys.is_empty() || req.keys.len() > MAX_IMPORT {
        return Err(ApiError::invalid(format!(
            "`keys`: 1 to {MAX_IMPORT} entries"
        )));
    }
    let report = shared
        .keys
        .import_keys(&Actor::Operator, req.keys, 1)
        .await?;
    let created = report.created() as u64;
    let keys: Vec<ImportedKey> = report
        .keys
        .into_iter()
        .map(|(line, id, new)| ImportedKey {
            line: line as u64,
            id,
            status: if new { "created" } else { "existing" }.to_string(),
        })
        .collect();
    Ok(Json(ImportResult {
        created,
        existing: keys.len() as u64 - created,
        refused: report.errors.len() as u64,
        keys,
        errors: report
            .errors
            .into_iter()
            .map(|(line, error)| ImportError {
                line: line as u64,
                error,
            })
            .collect(),
    }))
}
