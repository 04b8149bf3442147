//! What a [`KeyService`](super::KeyService) operation can fail with. The admin API and the
//! self-service endpoints each map these to their own response shapes, so one refusal reads the
//! same (same field, same message) whichever door the change came through.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A value was refused. `field` names it (`name`, `scopes`, `resources.projects`,
    /// `rate_limit.burst`...; `body` when the request as a whole says nothing); `message` is the
    /// public sentence, which names the field too.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// The target does not exist, or the actor may not see it (a user asking for another
    /// user's key gets the same answer as for a missing one).
    #[error("{0}")]
    NotFound(String),
    /// The change contradicts the target's state (a revoked key rotated, a deleted account
    /// given a key, a duplicate email).
    #[error("{0}")]
    Conflict(String),
    /// The store failed before the change committed. The detail is for the log only.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// The change committed, but the token cut-off that must follow it could not be persisted:
    /// live replicas have applied it, a replica started later would not. Retrying the change is
    /// safe. The detail is for the log only.
    #[error("token cut-off not persisted: {0}")]
    TokenCutFailed(String),
    /// The password hasher is at capacity (a login or password flood): try again shortly.
    #[error("password hashing is at capacity")]
    Overloaded,
    /// keygate itself failed (a password could not be hashed). The detail is for the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field a validation error names, if this is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => Self::StoreUnavailable(detail),
            StoreError::TimedOut => Self::StoreUnavailable("timed out".into()),
            StoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            StoreError::Conflict(message) => Self::Conflict(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_kinds() {
        let e: ServiceError = StoreError::NotFound("key").into();
        assert!(matches!(&e, ServiceError::NotFound(m) if m == "key not found"));
        let e: ServiceError = StoreError::TimedOut.into();
        assert!(matches!(e, ServiceError::StoreUnavailable(_)));
        let e = ServiceError::invalid("scopes", "`scopes` may hold at most 100 entries");
        assert_eq!(e.field(), Some("scopes"));
        assert_eq!(e.to_string(), "`scopes` may hold at most 100 entries");
    }
}
