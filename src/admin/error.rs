//! The admin API's one error type: every failure answers
//! `{"error":{"code":"...","message":"..."}}` with a stable code and status.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::openapi::{ErrorBody, ErrorDetail};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid admin token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    /// The request body or path could not be accepted; the message names the field.
    #[error("{0}")]
    InvalidBody(String),
    /// A query parameter could not be accepted (a bad type, or out of its documented range);
    /// the message names it.
    #[error("{0}")]
    InvalidQuery(String),
    /// The store failed. The detail is logged once and never sent to the client.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// The password hasher is at capacity: 503 with `Retry-After`, like the proxy's `overloaded`.
    #[error("keygate is busy, try again shortly")]
    Overloaded,
    /// keygate itself failed (a password could not be hashed). Logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidBody(message.into())
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::InvalidBody(_) => "invalid_body",
            Self::InvalidQuery(_) => "invalid_query",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::Overloaded => "overloaded",
            Self::Internal(_) => "internal_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::InvalidBody(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            Self::StoreUnavailable(_) | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client reads: internal details stay in the log.
    fn public_message(&self) -> String {
        match self {
            Self::StoreUnavailable(_) => "the store is unavailable, try again later".to_string(),
            Self::Internal(_) => "internal error".to_string(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => Self::StoreUnavailable(detail),
            StoreError::TimedOut => Self::StoreUnavailable("timed out".into()),
            StoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            StoreError::Conflict(message) => Self::Conflict(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::StoreUnavailable(detail) => {
                tracing::error!(error = %detail, "admin API: store unavailable");
            }
            Self::Internal(detail) => tracing::error!(error = %detail, "admin API: internal error"),
            _ => {}
        }
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.public_message(),
            },
        });
        let status = self.status();
        if matches!(self, Self::Unauthorized) {
            (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else if matches!(self, Self::Overloaded) {
            (status, [(header::RETRY_AFTER, "1")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}

/// The fallback for paths the admin API does not have.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such admin endpoint".to_string())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_codes() {
        let e: ApiError = StoreError::NotFound("key").into();
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            ("not_found", "key not found")
        );
        let e: ApiError = StoreError::Conflict("nope".into()).into();
        assert_eq!(e.status(), StatusCode::CONFLICT);
        let e: ApiError = StoreError::Unavailable("disk I/O error at /secret/path".into()).into();
        assert_eq!(e.code(), "store_unavailable");
        assert!(!e.public_message().contains("/secret/path"));
        let e = ApiError::Internal("argon2: detail".into());
        assert_eq!(
            (e.code(), e.status()),
            ("internal_error", StatusCode::INTERNAL_SERVER_ERROR)
        );
        assert!(!e.public_message().contains("argon2"));
    }
}
