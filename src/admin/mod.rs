//! The admin API: REST JSON under `/admin/v1`, on its own listener (127.0.0.1 by default),
//! behind a Bearer admin token. The only module (with `ops`) that imports axum.
//!
//! One concern per file: `auth` (the token), `error` (the JSON error type), `extract`
//! (extractors that answer 422 / 400 JSON), `paging` (list parameters), `views` (what is
//! returned), and the handlers in `accounts`, `credits`, `keys`, `users`, `audit`; `openapi`
//! holds the document's fixed parts, derived from the handlers by utoipa. The handlers
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
pub mod import;
pub mod keys;
pub mod openapi;
pub mod ops;
pub mod paging;
pub mod users;
pub mod views;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use axum::{Extension, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::Shared;
use crate::keyservice::ServiceError;
use error::ApiError;

/// Every admin route with its description: `routes!` takes handlers that carry
/// `#[utoipa::path]`, so a handler cannot be served without being in the document (and the
/// document names no route that is not served). Add routes here only through `routes!`.
pub fn api() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(accounts::create, accounts::list))
        .routes(routes!(accounts::get, accounts::update, accounts::delete))
        .routes(routes!(credits::balance, credits::adjust, credits::set))
        .routes(routes!(credits::transactions))
        .routes(routes!(accounts::suspend))
        .routes(routes!(accounts::reactivate))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::get, keys::update))
        .routes(routes!(keys::disable))
        .routes(routes!(keys::enable))
        .routes(routes!(keys::revoke))
        .routes(routes!(keys::rotate))
        .routes(routes!(import::import))
        .routes(routes!(users::create, users::list))
        .routes(routes!(users::get, users::update))
        .routes(routes!(users::set_password))
        .routes(routes!(audit::list))
        .routes(routes!(openapi::document))
}

/// The admin API's OpenAPI document as [`api`] describes it (plans not filled in).
pub fn openapi_document() -> serde_json::Value {
    openapi::finish(api().into_openapi())
}

pub fn router(shared: Arc<Shared>) -> Router {
    let (routes, doc) = api().split_for_parts();
    let doc = openapi::Document(openapi::finish(doc));
    routes
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(Extension(Arc::new(doc)))
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

#[cfg(test)]
mod tests {
    /// Routes reach the router only through `routes!` in [`super::api`], so each has a
    /// documented handler: a plain axum `.route(...)` / `.nest(...)` here would serve a path the
    /// document does not list. (`tests/openapi.rs` checks the document against the live router.)
    #[test]
    fn the_router_serves_only_documented_handlers() {
        let source = include_str!("mod.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        for bypass in [
            ".route(",
            ".route_service(",
            ".nest(",
            ".nest_service(",
            ".merge(",
        ] {
            assert!(!code.contains(bypass), "the admin router uses {bypass}");
        }
        assert!(code.matches("routes!(").count() >= 17);
    }

    #[test]
    fn every_route_is_in_the_document() {
        let doc = super::openapi_document();
        let paths = doc["paths"].as_object().map(|p| p.len());
        assert_eq!(paths, Some(18));
        let operations: usize = doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.values())
            .filter_map(|item| item.as_object())
            .map(|item| item.len())
            .sum();
        assert_eq!(operations, 27);
    }
}
