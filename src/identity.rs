//! What the upstream is told about the caller.
//!
//! Header values are built once when a credential is loaded into the cache and cloned (a
//! reference-count bump) on each request, so forwarding allocates nothing per request.

use http::HeaderValue;

use crate::store::Credential;

/// How the caller authenticated, as the `auth_method` identity header says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ApiKey,
    Jwt,
}

impl AuthMethod {
    pub fn header_value(self) -> HeaderValue {
        match self {
            AuthMethod::ApiKey => HeaderValue::from_static("api_key"),
            AuthMethod::Jwt => HeaderValue::from_static("jwt"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct IdentityValues {
    pub key_id: Option<HeaderValue>,
    pub key_name: Option<HeaderValue>,
    pub account_id: Option<HeaderValue>,
    pub user_id: Option<HeaderValue>,
    /// Space-separated, as OAuth's `scope` claim.
    pub scopes: Option<HeaderValue>,
}

impl IdentityValues {
    pub fn from_credential(c: &Credential) -> Self {
        // A value that cannot be a header (a control character in a key name) is left out
        // rather than failing the request.
        let v = |s: &str| HeaderValue::from_bytes(s.as_bytes()).ok();
        Self {
            key_id: v(&c.key.id),
            key_name: v(&c.key.name),
            account_id: v(&c.account.id),
            user_id: c.key.user_id.as_deref().and_then(v),
            scopes: v(&c.key.scopes.join(" ")),
        }
    }
}
