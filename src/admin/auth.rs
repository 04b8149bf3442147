//! Bearer admin token check for every admin request, compared in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::app::Shared;
use crate::secret::Secret;

/// Middleware: runs the handler only when `Authorization: Bearer <admin token>` matches.
pub async fn require_admin(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    if authorized(&shared.admin_token, req.headers()) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

fn authorized(token: &Secret, headers: &HeaderMap) -> bool {
    let Some(candidate) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()))
    else {
        return false;
    };
    // An empty configured token must never match an empty credential.
    !token.expose().is_empty() && token.ct_eq(candidate)
}

/// The credential of a `Bearer` authorization value (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(header::AUTHORIZATION, v);
        }
        h
    }

    #[test]
    fn accepts_only_the_exact_bearer_token() {
        let token = Secret::new("s3cret-token");
        assert!(authorized(&token, &headers("Bearer s3cret-token")));
        assert!(authorized(&token, &headers("bearer s3cret-token")));
        assert!(!authorized(&token, &headers("Bearer s3cret-toke")));
        assert!(!authorized(&token, &headers("Bearer s3cret-token2")));
        assert!(!authorized(&token, &headers("Basic s3cret-token")));
        assert!(!authorized(&token, &headers("s3cret-token")));
        assert!(!authorized(&token, &headers("Bearer ")));
        assert!(!authorized(&token, &HeaderMap::new()));
    }

    #[test]
    fn an_empty_configured_token_matches_nothing() {
        assert!(!authorized(&Secret::new(""), &headers("Bearer ")));
        assert!(!authorized(&Secret::new(""), &headers("Bearer x")));
    }
}
