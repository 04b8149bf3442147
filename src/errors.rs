//! Rejection reasons and the responses they turn into.
//!
//! Every rejection has a stable reason code. The config maps each code to a status and a body
//! template so keygate answers in the upstream's own documented error format (Enrow's
//! `{"message": "This apikey is not valid"}`, Enrich's `{"error": "..."}`). Templates are parsed
//! once at load time; rendering fills in `{reason}`, `{message}` and `{scope}`.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    MissingCredential,
    MalformedCredential,
    InvalidKey,
    KeyRevoked,
    KeyDisabled,
    KeyExpired,
    AccountSuspended,
    AccountMissing,
    InsufficientScope,
    ReadOnlyKey,
    ResourceForbidden,
    InsufficientCredits,
    RateLimited,
    InvalidBody,
    StoreUnavailable,
    RouteNotFound,
    InvalidPath,
    InvalidToken,
    TokenExpired,
    InvalidCredentials,
}

impl Reason {
    pub const ALL: [Reason; 20] = [
        Reason::MissingCredential,
        Reason::MalformedCredential,
        Reason::InvalidKey,
        Reason::KeyRevoked,
        Reason::KeyDisabled,
        Reason::KeyExpired,
        Reason::AccountSuspended,
        Reason::AccountMissing,
        Reason::InsufficientScope,
        Reason::ReadOnlyKey,
        Reason::ResourceForbidden,
        Reason::InsufficientCredits,
        Reason::RateLimited,
        Reason::InvalidBody,
        Reason::StoreUnavailable,
        Reason::RouteNotFound,
        Reason::InvalidPath,
        Reason::InvalidToken,
        Reason::TokenExpired,
        Reason::InvalidCredentials,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingCredential => "missing_credential",
            Reason::MalformedCredential => "malformed_credential",
            Reason::InvalidKey => "invalid_key",
            Reason::KeyRevoked => "key_revoked",
            Reason::KeyDisabled => "key_disabled",
            Reason::KeyExpired => "key_expired",
            Reason::AccountSuspended => "account_suspended",
            Reason::AccountMissing => "account_missing",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::ReadOnlyKey => "read_only_key",
            Reason::ResourceForbidden => "resource_forbidden",
            Reason::InsufficientCredits => "insufficient_credits",
            Reason::RateLimited => "rate_limited",
            Reason::InvalidBody => "invalid_body",
            Reason::StoreUnavailable => "store_unavailable",
            Reason::RouteNotFound => "route_not_found",
            Reason::InvalidPath => "invalid_path",
            Reason::InvalidToken => "invalid_token",
            Reason::TokenExpired => "token_expired",
            Reason::InvalidCredentials => "invalid_credentials",
        }
    }

    pub fn default_status(self) -> u16 {
        match self {
            Reason::MissingCredential
            | Reason::MalformedCredential
            | Reason::InvalidKey
            | Reason::KeyRevoked
            | Reason::KeyDisabled
            | Reason::KeyExpired => 401,
            Reason::AccountSuspended
            | Reason::AccountMissing
            | Reason::InsufficientScope
            | Reason::ReadOnlyKey
            | Reason::ResourceForbidden => 403,
            Reason::InsufficientCredits => 402,
            Reason::RateLimited => 429,
            Reason::InvalidBody => 422,
            Reason::StoreUnavailable => 503,
            Reason::RouteNotFound => 404,
            Reason::InvalidPath => 400,
            Reason::InvalidToken | Reason::TokenExpired | Reason::InvalidCredentials => 401,
        }
    }

    /// The default human message; `{scope}` is filled in where a scope is known.
    pub fn default_message(self) -> &'static str {
        match self {
            Reason::MissingCredential => "No API key was provided",
            Reason::MalformedCredential => "The API key is not valid",
            Reason::InvalidKey => "The API key is not valid",
            Reason::KeyRevoked => "The API key has been revoked",
            Reason::KeyDisabled => "The API key is disabled",
            Reason::KeyExpired => "The API key has expired",
            Reason::AccountSuspended => "The account is suspended",
            Reason::AccountMissing => "The account no longer exists",
            Reason::InsufficientScope => "The API key is missing the required scope {scope}",
            Reason::ReadOnlyKey => "The API key is read-only",
            Reason::ResourceForbidden => "The API key may not access this resource",
            Reason::InsufficientCredits => "Insufficient credits",
            Reason::RateLimited => "Rate limit exceeded",
            Reason::InvalidBody => "Invalid request body",
            Reason::StoreUnavailable => "Authentication is temporarily unavailable",
            Reason::RouteNotFound => "Not found",
            Reason::InvalidPath => "The request path is not canonical",
            Reason::InvalidToken => "The token is not valid",
            Reason::TokenExpired => "The token has expired",
            Reason::InvalidCredentials => "Invalid credentials",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The default body: a stable machine code plus a message.
pub const DEFAULT_BODY: &str = r#"{"error":{"code":"{reason}","message":"{message}"}}"#;

/// One reason's prepared response.
#[derive(Debug, Clone)]
pub struct Template {
    pub status: u16,
    pub content_type: String,
    body: String,
    message: String,
}

impl Template {
    pub fn new(status: u16, content_type: String, body: String, message: String) -> Self {
        Self {
            status,
            content_type,
            body,
            message,
        }
    }

    /// Fills the placeholders. Values are JSON-escaped when the body is JSON, so a scope name can
    /// never break the document.
    pub fn render(&self, reason: Reason, detail: &Detail) -> String {
        let json = self.content_type.contains("json");
        let scope = detail.scope.as_deref().unwrap_or("");
        let message = detail
            .message
            .as_deref()
            .unwrap_or(&self.message)
            .replace("{scope}", scope);
        let esc = |s: &str| if json { json_escape(s) } else { s.to_string() };
        self.body
            .replace("{reason}", reason.as_str())
            .replace("{message}", &esc(&message))
            .replace("{scope}", &esc(scope))
    }
}

/// Values a rejection can carry into its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail {
    pub scope: Option<String>,
    /// Replaces the template's message (e.g. which body field was wrong).
    pub message: Option<String>,
}

fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or("")
        .to_string()
}

/// Every reason's template, with defaults for the ones the config leaves out.
#[derive(Debug, Clone)]
pub struct Templates {
    by_reason: HashMap<Reason, Template>,
}

impl Templates {
    pub fn new(overrides: HashMap<Reason, Template>) -> Self {
        let mut by_reason = HashMap::new();
        for reason in Reason::ALL {
            let t = overrides.get(&reason).cloned().unwrap_or_else(|| {
                Template::new(
                    reason.default_status(),
                    "application/json".into(),
                    DEFAULT_BODY.into(),
                    reason.default_message().into(),
                )
            });
            by_reason.insert(reason, t);
        }
        Self { by_reason }
    }

    pub fn get(&self, reason: Reason) -> &Template {
        // `new` fills every reason, so the fallback only guards against future enum growth.
        self.by_reason
            .get(&reason)
            .unwrap_or_else(|| unreachable!("every reason has a template"))
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new(HashMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cover_every_reason() {
        let t = Templates::default();
        for r in Reason::ALL {
            let body = t.get(r).render(r, &Detail::default());
            let v: serde_json::Value = serde_json::from_str(&body).expect("valid json");
            assert_eq!(v["error"]["code"], r.as_str());
        }
        assert_eq!(t.get(Reason::InsufficientCredits).status, 402);
    }

    #[test]
    fn scope_is_named_and_escaped() {
        let t = Templates::default();
        let body = t.get(Reason::InsufficientScope).render(
            Reason::InsufficientScope,
            &Detail {
                scope: Some("leads:\"write\"".into()),
                message: None,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&body).expect("valid json");
        assert_eq!(
            v["error"]["message"],
            "The API key is missing the required scope leads:\"write\""
        );
    }
}
