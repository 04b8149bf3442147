//! Rejection reasons and the responses they turn into.
//!
//! Every rejection has a stable reason code. The config maps each code to a status and a body
//! template so keygate answers in the upstream's own documented error format (Enrow's
//! `{"message": "This apikey is not valid"}`, Enrich's `{"error": "..."}`). Templates are parsed
//! once at load time into pieces; rendering concatenates them with `{reason}`, `{message}` and
//! `{scope}` (see [`template`]).
//!
//! Each reason is declared once, in the `reasons!` table below: its code (also the config key
//! and the metric label), its default status and its default message. The enum, [`Reason::ALL`],
//! the code lookups and the dense [`Reason::index`] that templates and metrics index by are all
//! generated from that one line, so a new reason is one line plus its behaviour.

mod template;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use template::{Detail, Template, Templates, DEFAULT_BODY};

/// Declares every reason: `Variant => ("code", default status, "default message")`.
///
/// The variants are numbered 0.. in declaration order, which is what [`Reason::index`] returns.
macro_rules! reasons {
    ($($variant:ident => ($code:literal, $status:literal, $message:literal),)+) => {
        /// Why keygate refused a request; see the module docs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Reason {
            $($variant,)+
        }

        impl Reason {
            /// How many reasons there are: the length of every per-reason table.
            pub const COUNT: usize = [$($code,)+].len();

            /// Every reason, in declaration order: `Reason::ALL[r.index()] == r`.
            pub const ALL: [Reason; Reason::COUNT] = [$(Reason::$variant,)+];

            /// Every code, in declaration order: `Reason::CODES[r.index()] == r.code()`.
            pub const CODES: [&'static str; Reason::COUNT] = [$($code,)+];

            /// The stable machine code: the config key under `[errors]`, the `{reason}` of a
            /// body and the `outcome` label of `keygate_requests_total`.
            pub const fn code(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)+
                }
            }

            pub const fn default_status(self) -> u16 {
                match self {
                    $(Reason::$variant => $status,)+
                }
            }

            /// The default human message; `{scope}` is filled in where a scope is known.
            pub const fn default_message(self) -> &'static str {
                match self {
                    $(Reason::$variant => $message,)+
                }
            }
        }
    };
}

reasons! {
    MissingCredential => ("missing_credential", 401, "No API key was provided"),
    MalformedCredential => ("malformed_credential", 401, "The API key is not valid"),
    InvalidKey => ("invalid_key", 401, "The API key is not valid"),
    KeyRevoked => ("key_revoked", 401, "The API key has been revoked"),
    KeyDisabled => ("key_disabled", 401, "The API key is disabled"),
    KeyExpired => ("key_expired", 401, "The API key has expired"),
    AccountSuspended => ("account_suspended", 403, "The account is suspended"),
    AccountMissing => ("account_missing", 403, "The account no longer exists"),
    InsufficientScope => ("insufficient_scope", 403, "The API key is missing the required scope {scope}"),
    ReadOnlyKey => ("read_only_key", 403, "The API key is read-only"),
    ResourceForbidden => ("resource_forbidden", 403, "The API key may not access this resource"),
    InsufficientCredits => ("insufficient_credits", 402, "Insufficient credits"),
    RateLimited => ("rate_limited", 429, "Rate limit exceeded"),
    InvalidBody => ("invalid_body", 422, "Invalid request body"),
    StoreUnavailable => ("store_unavailable", 503, "Authentication is temporarily unavailable"),
    RouteNotFound => ("route_not_found", 404, "Not found"),
    InvalidPath => ("invalid_path", 400, "The request path is not canonical"),
    InvalidToken => ("invalid_token", 401, "The token is not valid"),
    TokenExpired => ("token_expired", 401, "The token has expired"),
    InvalidCredentials => ("invalid_credentials", 401, "Invalid credentials"),
    Overloaded => ("overloaded", 503, "The service is busy, try again shortly"),
    UpstreamUnavailable => ("upstream_unavailable", 502, "The service is unavailable"),
    UpstreamTimeout => ("upstream_timeout", 504, "The service did not answer in time"),
    PayloadTooLarge => ("payload_too_large", 413, "The request body is too large"),
    MethodNotAllowed => ("method_not_allowed", 405, "The method is not allowed on this path"),
    MissingOriginal => ("missing_original", 400, "The forward-auth request does not name the request to check"),
}

impl Reason {
    /// The same as [`Reason::code`].
    pub const fn as_str(self) -> &'static str {
        self.code()
    }

    /// A dense index, `0..Reason::COUNT`, for per-reason arrays (templates, metric counters):
    /// the declaration order, so no lookup is needed.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The reason a code names; `None` for an unknown code. Used when the config is read, never
    /// on the request path.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A reason is written as its code, so serde's names cannot drift from the table.
impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

/// Read from its code (the keys of `[errors]`); an unknown code is reported as serde reports an
/// unknown enum variant, with every valid code listed.
impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CodeVisitor;

        impl serde::de::Visitor<'_> for CodeVisitor {
            type Value = Reason;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a reason code")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Reason, E> {
                Reason::from_code(v).ok_or_else(|| E::unknown_variant(v, &Reason::CODES))
            }
        }

        deserializer.deserialize_str(CodeVisitor)
    }
}
