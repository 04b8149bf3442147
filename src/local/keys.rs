//! Self-service keys for the user of a session token (Encrata's step 2): create a named key
//! (plaintext shown once), list, rename, revoke and rotate one's own keys. A user only ever sees
//! and touches keys whose `user_id` is theirs; another user's key answers 404 like a missing one.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_body, rfc3339, LocalContext, LocalRequest, LocalResponse};
use crate::authz::{self, Rejection};
use crate::cache::Invalidation;
use crate::config::{valid_scope, LocalKind};
use crate::errors::Reason;
use crate::store::{KeyPatch, KeyRecord, KeyStatus, NewKey, Page, Permission, StoreError};
use crate::tokens::Claims;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    permission: Option<String>,
    expires_at: Option<String>,
    resources: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameBody {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    grace_seconds: Option<u64>,
}

fn invalid(message: impl Into<String>) -> Rejection {
    Rejection::with_message(Reason::InvalidBody, message)
}

fn store_err(e: StoreError) -> Rejection {
    match e {
        StoreError::NotFound(_) => Rejection::new(Reason::RouteNotFound),
        StoreError::Conflict(m) => invalid(m),
        StoreError::Unavailable(_) | StoreError::TimedOut => {
            Rejection::new(Reason::StoreUnavailable)
        }
    }
}

pub fn view(k: &KeyRecord) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "display_prefix": k.display_prefix,
        "scopes": k.scopes,
        "permission": authz::permission_name(k.permission),
        "resources": k.resources,
        "status": k.status,
        "created_at": rfc3339(k.created_at),
        "expires_at": k.expires_at.and_then(rfc3339),
        "last_used_at": k.last_used_at.and_then(rfc3339),
        "rotated_from": k.rotated_from,
    })
}

fn check_name(name: &str) -> Result<String, Rejection> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(invalid(
            "Invalid request body: `name` must be 1-200 printable characters",
        ));
    }
    Ok(name.to_string())
}

pub async fn handle(
    ctx: &LocalContext,
    kind: LocalKind,
    session: &Claims,
    req: LocalRequest<'_>,
) -> Result<LocalResponse, Rejection> {
    match (kind, req.method) {
        (LocalKind::Keys, "GET") => list(ctx, session).await,
        (LocalKind::Keys, "POST") => create(ctx, session, req.body).await,
        (LocalKind::Key, "GET") => Ok(LocalResponse::json(
            200,
            view(&own_key(ctx, session, req.key_id).await?),
        )),
        (LocalKind::Key, "PATCH") => rename(ctx, session, req).await,
        (LocalKind::Key, "DELETE") => revoke(ctx, session, req.key_id).await,
        (LocalKind::KeyRotate, "POST") => rotate(ctx, session, req).await,
        _ => Err(Rejection::new(Reason::RouteNotFound)),
    }
}

async fn own_key(
    ctx: &LocalContext,
    session: &Claims,
    key_id: Option<&str>,
) -> Result<KeyRecord, Rejection> {
    let id = key_id.ok_or_else(|| Rejection::new(Reason::RouteNotFound))?;
    let key = ctx.store.get_key(id).await.map_err(store_err)?;
    match key {
        Some(k)
            if k.user_id.as_deref() == Some(session.sub.as_str())
                && k.account_id == session.acc =>
        {
            Ok(k)
        }
        _ => Err(Rejection::new(Reason::RouteNotFound)),
    }
}

async fn list(ctx: &LocalContext, session: &Claims) -> Result<LocalResponse, Rejection> {
    let mut keys = Vec::new();
    let mut page = Page {
        after: None,
        limit: 1000,
    };
    loop {
        let batch = ctx
            .store
            .list_keys(Some(&session.acc), &page)
            .await
            .map_err(store_err)?;
        let full = batch.len() as u32 == page.limit();
        page.after = batch.last().map(|k| k.id.clone());
        keys.extend(
            batch
                .iter()
                .filter(|k| k.user_id.as_deref() == Some(session.sub.as_str()))
                .map(view),
        );
        if !full {
            break;
        }
    }
    Ok(LocalResponse::json(200, json!({ "keys": keys })))
}

/// A user's role bounds what they can mint: a read-only user gets only read keys.
fn permission_for(session: &Claims, requested: Option<&str>) -> Result<Permission, Rejection> {
    let wanted = match requested {
        None => None,
        Some(p) => Some(authz::parse_permission(p).ok_or_else(|| {
            invalid("Invalid request body: `permission` must be \"read\" or \"read_write\"")
        })?),
    };
    let read_only_user = session.perm == "read_only";
    match (wanted, read_only_user) {
        (Some(Permission::ReadWrite), true) => Err(Rejection::with_message(
            Reason::ReadOnlyKey,
            "A read-only user cannot create a read-write key",
        )),
        (Some(p), _) => Ok(p),
        (None, true) => Ok(Permission::Read),
        (None, false) => Ok(Permission::ReadWrite),
    }
}

async fn create(
    ctx: &LocalContext,
    session: &Claims,
    body: &[u8],
) -> Result<LocalResponse, Rejection> {
    let body: CreateBody = parse_body(body)?;
    let name = check_name(&body.name)?;
    if let Some(bad) = body.scopes.iter().find(|s| !valid_scope(s)) {
        return Err(invalid(format!(
            "Invalid request body: `scopes`: `{bad}` is not a scope"
        )));
    }
    let permission = permission_for(session, body.permission.as_deref())?;
    let expires_at = match body.expires_at.as_deref() {
        None => None,
        Some(t) => {
            let at = chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| {
                    invalid("Invalid request body: `expires_at` must be an RFC 3339 time")
                })?
                .timestamp();
            if at <= crate::store::now() {
                return Err(invalid("Invalid request body: `expires_at` is in the past"));
            }
            Some(at)
        }
    };
    let plaintext = ctx.config.key_format.generate();
    let hash = ctx.hasher.hash(plaintext.expose());
    let new = NewKey {
        account_id: session.acc.clone(),
        user_id: Some(session.sub.clone()),
        name,
        display_prefix: ctx.config.key_format.display_prefix(plaintext.expose()),
        hash,
        scopes: body.scopes,
        permission,
        expires_at,
        rate_limit: None,
        resources: body.resources,
        rotated_from: None,
    };
    let key = ctx.store.create_key(new).await.map_err(store_err)?;
    ctx.cache.invalidate(Invalidation::Key(hash)).await;
    let mut v = view(&key);
    v["key"] = json!(plaintext.expose());
    Ok(LocalResponse::json(201, v))
}

async fn rename(
    ctx: &LocalContext,
    session: &Claims,
    req: LocalRequest<'_>,
) -> Result<LocalResponse, Rejection> {
    let key = own_key(ctx, session, req.key_id).await?;
    let body: RenameBody = parse_body(req.body)?;
    let patch = KeyPatch {
        name: Some(check_name(&body.name)?),
        ..Default::default()
    };
    let key = ctx
        .store
        .update_key(&key.id, patch)
        .await
        .map_err(store_err)?;
    ctx.cache.invalidate(Invalidation::Key(key.hash)).await;
    Ok(LocalResponse::json(200, view(&key)))
}

async fn revoke(
    ctx: &LocalContext,
    session: &Claims,
    key_id: Option<&str>,
) -> Result<LocalResponse, Rejection> {
    let key = own_key(ctx, session, key_id).await?;
    let patch = KeyPatch {
        status: Some(KeyStatus::Revoked),
        ..Default::default()
    };
    let key = ctx
        .store
        .update_key(&key.id, patch)
        .await
        .map_err(store_err)?;
    ctx.cache.invalidate(Invalidation::Key(key.hash)).await;
    if let Err(e) = ctx.cache.cut_tokens(&key.id).await {
        tracing::warn!(error = %e, "could not persist a token cut-off");
    }
    Ok(LocalResponse::json(200, view(&key)))
}

async fn rotate(
    ctx: &LocalContext,
    session: &Claims,
    req: LocalRequest<'_>,
) -> Result<LocalResponse, Rejection> {
    let old = own_key(ctx, session, req.key_id).await?;
    if old.status == KeyStatus::Revoked {
        return Err(invalid("A revoked key cannot be rotated"));
    }
    let body: RotateBody = parse_body(req.body)?;
    let plaintext = ctx.config.key_format.generate();
    let hash = ctx.hasher.hash(plaintext.expose());
    let new = NewKey {
        account_id: old.account_id.clone(),
        user_id: old.user_id.clone(),
        name: old.name.clone(),
        display_prefix: ctx.config.key_format.display_prefix(plaintext.expose()),
        hash,
        scopes: old.scopes.clone(),
        permission: old.permission,
        expires_at: old.expires_at,
        rate_limit: old.rate_limit,
        resources: old.resources.clone(),
        rotated_from: Some(old.id.clone()),
    };
    let old_expires = body
        .grace_seconds
        .map(|g| crate::store::now().saturating_add(i64::try_from(g).unwrap_or(i64::MAX)));
    let (new_key, old_after) = ctx
        .store
        .rotate_key(&old.id, new, old_expires)
        .await
        .map_err(store_err)?;
    ctx.cache.invalidate(Invalidation::Key(hash)).await;
    ctx.cache
        .invalidate(Invalidation::Key(old_after.hash))
        .await;
    let mut v = view(&new_key);
    v["key"] = json!(plaintext.expose());
    v["old"] = view(&old_after);
    Ok(LocalResponse::json(201, v))
}
