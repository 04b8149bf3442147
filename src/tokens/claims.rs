//! The claims keygate puts in its JWTs, with short, stable JSON names.
//!
//! | field | claim | meaning |
//! | --- | --- | --- |
//! | `sub` | `sub` | subject: the user id for a session token, the API key id for an access token |
//! | `kind` | `typ` | `"session"` (login) or `"access"` (key exchange) |
//! | `acc` | `acc` | account id |
//! | `usr` | `usr` | user id, when known |
//! | `kid_key` | `key` | id of the API key an access token was exchanged from |
//! | `scopes` | `scp` | scopes granted |
//! | `perm` | `perm` | `"read"` or `"read_write"` |
//! | `res` | `res` | resource restrictions, opaque to this module |
//! | `plan` | `plan` | the account's plan, so a token is limited as its key is |
//! | `rl` | `rl` | the key's own rate-limit override, opaque to this module |
//! | `iat`, `exp` | `iat`, `exp` | issued at / expires at, seconds since the Unix epoch |
//! | `iat_ms` | `iat_ms` | issued at, milliseconds: what token cut-offs compare (see [`super::cutoffs`]) |
//! | `iss`, `aud` | `iss`, `aud` | from [`super::TokenSettings`] |
//! | `jti` | `jti` | random token id (128 bits, hex) |
//!
//! Optional claims are omitted when empty, so a token stays small. Unknown claims are ignored when
//! reading, so adding a claim later does not invalidate tokens already issued.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a token is for. A session token (from login) only opens the key-management endpoints; an
/// access token (from the key exchange) stands in for the API key it was exchanged from. Neither is
/// accepted where the other is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Session,
    Access,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Session => "session",
            TokenKind::Access => "access",
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claims of a keygate JWT, as signed and as returned by [`super::Tokens::verify`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(rename = "typ")]
    pub kind: TokenKind,
    pub acc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usr: Option<String>,
    /// The API key an access token was exchanged from (claim `key`); the request path checks it
    /// against the revoked-key set, so the token dies with its key.
    #[serde(rename = "key", default, skip_serializing_if = "Option::is_none")]
    pub kid_key: Option<String>,
    #[serde(rename = "scp", default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    pub perm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub res: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rl: Option<serde_json::Value>,
    pub iat: i64,
    /// The issue time in milliseconds, for cut-offs precise within a second. Absent on tokens
    /// issued before it existed: see [`Claims::issued_at_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_ms: Option<i64>,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    pub jti: String,
}

impl Claims {
    /// When the token was issued, in milliseconds, as cut-offs compare it: `iat_ms`, or for a
    /// token without it the first millisecond of its `iat` second (conservative: any cut-off
    /// in that second stops it).
    pub fn issued_at_ms(&self) -> i64 {
        self.iat_ms
            .unwrap_or_else(|| super::cutoffs::first_ms_of(self.iat))
    }
}

/// Everything the caller decides about a token; [`super::Tokens::issue`] adds the kind, `iat`,
/// `exp`, `iss`, `aud` and `jti`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimsDraft {
    pub sub: String,
    pub acc: String,
    pub usr: Option<String>,
    /// Becomes the `key` claim.
    pub kid_key: Option<String>,
    pub scopes: Vec<String>,
    pub perm: String,
    pub res: Option<serde_json::Value>,
    pub plan: Option<String>,
    pub rl: Option<serde_json::Value>,
    /// The token must not outlive this instant (seconds since the epoch): an access token ends
    /// no later than the key it was exchanged from (an expiry, or the end of a rotation grace).
    pub not_after: Option<i64>,
}
