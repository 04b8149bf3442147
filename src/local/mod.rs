//! Endpoints keygate answers itself, on paths the config names: credit balance and history for a
//! key holder, login, key exchange, self-service key management and the JWKS document. The
//! upstream never sees these requests.
//!
//! The gate has already authenticated the caller as the route demands (a key, a session token,
//! or nobody for login and JWKS); each handler gets that [`Principal`], the request body and
//! parameters, and returns a JSON answer or a [`Rejection`] rendered in the configured format.

mod credits;
mod exchange;
mod keys;
mod login;
pub mod shape;

use std::net::IpAddr;
use std::sync::Arc;

use crate::authz::Rejection;
use crate::cache::KeyCache;
use crate::config::{Config, LocalEndpoint, LocalKind, Route};
use crate::errors::Reason;
use crate::gate::Principal;
use crate::keys::KeyHasher;
use crate::keyservice::KeyService;
use crate::ratelimit::RateLimiter;
use crate::store::Store;
use crate::tokens::Tokens;

pub use credits::DEFAULT_BALANCE_BODY;

/// Bodies of local endpoints are small JSON documents; anything bigger is refused unread.
pub const MAX_BODY: usize = 64 * 1024;

pub struct LocalResponse {
    pub status: u16,
    pub body: String,
}

impl LocalResponse {
    pub fn json(status: u16, value: serde_json::Value) -> Self {
        Self {
            status,
            body: value.to_string(),
        }
    }
}

/// What a local handler needs from the request.
#[derive(Debug, Clone, Copy)]
pub struct LocalRequest<'a> {
    pub method: &'a str,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    /// The `{key_id}` path parameter, where the route has one.
    pub key_id: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
}

/// Everything the handlers share, built once at startup.
#[derive(Clone)]
pub struct LocalContext {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub cache: Arc<KeyCache>,
    pub tokens: Arc<Tokens>,
    pub hasher: KeyHasher,
    pub limiter: Arc<RateLimiter>,
    /// Every self-service key change goes through it (the same one the admin API uses).
    pub keys: Arc<KeyService>,
}

pub async fn answer(
    ctx: &LocalContext,
    route: &Route,
    endpoint: &LocalEndpoint,
    caller: &Principal,
    req: LocalRequest<'_>,
) -> Result<LocalResponse, Rejection> {
    match (endpoint.kind, caller) {
        (
            LocalKind::Balance | LocalKind::Transactions,
            Principal::Key(principal) | Principal::Token(principal),
        ) => credits::answer(endpoint, principal, ctx.store.as_ref(), req.query)
            .await
            .map_err(Rejection::new),
        (LocalKind::Login, _) => login::login(ctx, route, req).await,
        (LocalKind::Exchange, Principal::Key(principal)) => exchange::exchange(ctx, principal),
        (LocalKind::Keys | LocalKind::Key | LocalKind::KeyRotate, Principal::Session(session)) => {
            keys::handle(ctx, endpoint.kind, session, req).await
        }
        (LocalKind::Jwks, _) => Ok(LocalResponse::json(200, ctx.tokens.jwks())),
        // The gate authenticates as the route's auth mode says; config validation ties each
        // kind to its mode, so another combination is a route the caller cannot use.
        _ => Err(Rejection::new(Reason::RouteNotFound)),
    }
}

/// Parses a JSON body into `T`, answering 422 with serde's message (which names the field).
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Rejection> {
    if body.len() > MAX_BODY {
        return Err(Rejection::with_message(
            Reason::InvalidBody,
            "The request body is too large",
        ));
    }
    let text = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(text).map_err(|e| {
        Rejection::with_message(Reason::InvalidBody, format!("Invalid request body: {e}"))
    })
}

pub(crate) fn rfc3339(t: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}
