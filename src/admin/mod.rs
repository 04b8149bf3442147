//! The admin API: REST JSON under `/admin/v1`, on its own listener (127.0.0.1 by default),
//! behind a Bearer admin token. The only module (with `ops`) that imports axum.
//!
//! One concern per file: `auth` (the token), `error` (the JSON error type), `extract`
//! (extractors that answer 422 JSON), `views` (what is returned), and the handlers in
//! `accounts`, `credits`, `keys`, `users`, `audit`; `openapi` describes them all. The handlers
//! that change keys, users and accounts are adapters over the [`KeyService`], which validates,
//! writes, invalidates, cuts tokens and audits.
//!
//! [`KeyService`]: crate::keyservice::KeyService

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod credits;
pub mod error;
pub mod extract;
pub mod keys;
pub mod openapi;
pub mod ops;
pub mod users;
pub mod views;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;

use crate::app::Shared;
use crate::keyservice::ServiceError;
use error::ApiError;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/admin/v1/accounts",
            post(accounts::create).get(accounts::list),
        )
        .route(
            "/admin/v1/accounts/{id}",
            get(accounts::get)
                .patch(accounts::update)
                .delete(accounts::delete),
        )
        .route(
            "/admin/v1/accounts/{id}/credits",
            get(credits::balance)
                .post(credits::adjust)
                .put(credits::set),
        )
        .route(
            "/admin/v1/accounts/{id}/transactions",
            get(credits::transactions),
        )
        .route("/admin/v1/accounts/{id}/suspend", post(accounts::suspend))
        .route(
            "/admin/v1/accounts/{id}/reactivate",
            post(accounts::reactivate),
        )
        .route("/admin/v1/keys", post(keys::create).get(keys::list))
        .route("/admin/v1/keys/{id}", get(keys::get).patch(keys::update))
        .route("/admin/v1/keys/{id}/disable", post(keys::disable))
        .route("/admin/v1/keys/{id}/enable", post(keys::enable))
        .route("/admin/v1/keys/{id}/revoke", post(keys::revoke))
        .route("/admin/v1/keys/{id}/rotate", post(keys::rotate))
        .route("/admin/v1/users", post(users::create).get(users::list))
        .route("/admin/v1/users/{id}", get(users::get).patch(users::update))
        .route("/admin/v1/users/{id}/password", post(users::set_password))
        .route("/admin/v1/audit", get(audit::list))
        .route("/admin/v1/openapi.json", get(openapi::document))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        // Outermost: runs before routing, so unknown paths also need the token.
        .layer(from_fn_with_state(shared.clone(), auth::require_admin))
        .with_state(shared)
}

/// The service's refusals in the admin API's shape: a refused field is 422 `invalid_body` with
/// the message naming it; a token cut that failed after the write committed is 503, like any
/// store failure (retrying the change is safe).
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid { message, .. } => Self::InvalidBody(message),
            ServiceError::NotFound(m) => Self::NotFound(m),
            ServiceError::Conflict(m) => Self::Conflict(m),
            ServiceError::StoreUnavailable(detail) | ServiceError::TokenCutFailed(detail) => {
                Self::StoreUnavailable(detail)
            }
            ServiceError::Internal(detail) => Self::Internal(detail),
            ServiceError::Overloaded => Self::Overloaded,
        }
    }
}

pub fn serve_admin(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    serve("admin", router(shared), listener, shutdown)
}

/// Serves an axum app on a listener until `shutdown` resolves (used by the admin and ops
/// listeners alike).
pub(crate) fn serve(
    name: &'static str,
    app: Router,
    listener: tokio::net::TcpListener,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, listener = name, "listener stopped");
        }
    })
}
