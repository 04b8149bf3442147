//! What the upstream is told about the caller.
//!
//! Header values are made from the cached credential's ids and names when a request is forwarded
//! ([`crate::cache::CachedCredential::identity`]): each shares the bytes the cache holds (a
//! reference-count bump and a validity scan), so forwarding copies and allocates nothing.

use http::HeaderValue;

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
