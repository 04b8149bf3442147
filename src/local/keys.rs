//! Self-service keys for the user of a session token (Encrata's step 2): create a named key
//! (plaintext shown once), list, rename, revoke and rotate one's own keys. A user only ever sees
//! and touches keys whose `user_id` is theirs; another user's key answers 404 like a missing one.
//!
//! Every change is the [`KeyService`]'s, with the user as the actor: validated like an
//! operator's (the same field-naming messages), audited, and answered 503 when the token cut-off
//! that must follow a revocation could not be written. This file only maps bodies in and
//! [`ServiceError`]s out, in the configured error format.
//!
//! [`KeyService`]: crate::keyservice::KeyService

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_body, rfc3339, LocalContext, LocalRequest, LocalResponse};
use crate::authz::{self, Rejection};
use crate::config::LocalKind;
use crate::errors::Reason;
use crate::keyservice::{Actor, KeyChange, NewKeyInput, ServiceError};
use crate::store::{KeyRecord, KeyStatus, Page, Permission, StoreError};
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

/// The service's refusals in the local endpoints' format. A missing key and another user's key
/// read alike; a failed token cut (after the change committed) is 503, as in the admin API.
fn refused(e: ServiceError) -> Rejection {
    match e {
        ServiceError::Invalid { message, .. } => {
            invalid(format!("Invalid request body: {message}"))
        }
        ServiceError::NotFound(_) => Rejection::new(Reason::RouteNotFound),
        ServiceError::Conflict(m) => invalid(m),
        ServiceError::StoreUnavailable(_) => Rejection::new(Reason::StoreUnavailable),
        ServiceError::Overloaded => Rejection::new(Reason::Overloaded),
        ServiceError::TokenCutFailed(_) | ServiceError::Internal(_) => {
            tracing::warn!(error = %e, "self-service key change");
            Rejection::new(Reason::StoreUnavailable)
        }
    }
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

fn actor(session: &Claims) -> Actor {
    Actor::User {
        user_id: session.sub.clone(),
        account_id: session.acc.clone(),
    }
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
    ctx.keys.key_for(&actor(session), id).await.map_err(refused)
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
    let CreateBody {
        name,
        scopes,
        permission,
        expires_at,
        resources,
    } = parse_body(body)?;
    let permission = permission_for(session, permission.as_deref())?;
    let input = NewKeyInput {
        account_id: session.acc.clone(),
        user_id: Some(session.sub.clone()),
        name,
        scopes,
        permission,
        expires_at,
        rate_limit: None,
        resources,
        // The operator's, like the limit.
        metadata: Default::default(),
    };
    let created = ctx
        .keys
        .create_key(&actor(session), input)
        .await
        .map_err(refused)?;
    let mut v = view(&created.key);
    v["key"] = json!(created.plaintext.expose());
    Ok(LocalResponse::json(201, v))
}

async fn rename(
    ctx: &LocalContext,
    session: &Claims,
    req: LocalRequest<'_>,
) -> Result<LocalResponse, Rejection> {
    let id = req
        .key_id
        .ok_or_else(|| Rejection::new(Reason::RouteNotFound))?;
    let RenameBody { name } = parse_body(req.body)?;
    let change = KeyChange {
        name: Some(name),
        ..KeyChange::default()
    };
    let key = ctx
        .keys
        .update_key(&actor(session), id, change)
        .await
        .map_err(refused)?;
    Ok(LocalResponse::json(200, view(&key)))
}

async fn revoke(
    ctx: &LocalContext,
    session: &Claims,
    key_id: Option<&str>,
) -> Result<LocalResponse, Rejection> {
    let id = key_id.ok_or_else(|| Rejection::new(Reason::RouteNotFound))?;
    let key = ctx
        .keys
        .set_key_status(&actor(session), id, KeyStatus::Revoked)
        .await
        .map_err(refused)?;
    Ok(LocalResponse::json(200, view(&key)))
}

async fn rotate(
    ctx: &LocalContext,
    session: &Claims,
    req: LocalRequest<'_>,
) -> Result<LocalResponse, Rejection> {
    let id = req
        .key_id
        .ok_or_else(|| Rejection::new(Reason::RouteNotFound))?;
    let RotateBody { grace_seconds } = parse_body(req.body)?;
    let rotated = ctx
        .keys
        .rotate_key(&actor(session), id, grace_seconds)
        .await
        .map_err(refused)?;
    let mut v = view(&rotated.key);
    v["key"] = json!(rotated.plaintext.expose());
    v["old"] = view(&rotated.old);
    Ok(LocalResponse::json(201, v))
}
