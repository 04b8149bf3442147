//! Why a token was refused, or why the token settings were.
//!
//! Every verification failure is a 401 for the client; the variants exist so the request path can
//! log and count a stable reason ([`TokenError::code`]). No variant carries the token or any key
//! material, so an error can be logged as it is.

use jsonwebtoken::errors::{Error as JwtError, ErrorKind};

use super::claims::TokenKind;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// [`super::Tokens::new`] refused the settings. The message says which setting and why, and
    /// never includes key material.
    #[error("invalid token settings: {0}")]
    Config(String),
    /// Not a JWT, not one of ours (claims of another shape), or larger than
    /// [`super::MAX_TOKEN_LEN`].
    #[error("token is malformed")]
    Malformed,
    /// The header names an algorithm other than the one configured (`none`, or HS256 presented to
    /// an EdDSA/RS256 verifier: the key-confusion attack).
    #[error("token algorithm is not accepted")]
    InvalidAlgorithm,
    /// The signature does not verify with the configured key.
    #[error("token signature is invalid")]
    InvalidSignature,
    /// `exp` is in the past (see [`super::LEEWAY_SECS`]).
    #[error("token has expired")]
    Expired,
    /// `iss` or `aud` is missing or is not this gateway's.
    #[error("token was issued for another issuer or audience")]
    WrongIssuerOrAudience,
    /// A genuine token of the other kind (a session token where an access token is required, or
    /// the reverse).
    #[error("a {found} token cannot be used where a {expected} token is required")]
    WrongKind {
        expected: TokenKind,
        found: TokenKind,
    },
    /// The header lists `crit` extensions, which keygate implements none of (RFC 7515 4.1.11:
    /// a recipient that does not understand one must refuse the token).
    #[error("token names critical header extensions that are not understood")]
    UnknownCritical,
    /// Signing failed (a key the crypto backend refused at signing time).
    #[error("could not sign token: {0}")]
    Signing(String),
}

impl TokenError {
    /// A stable, short code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Config(_) => "token_config",
            TokenError::Malformed => "token_malformed",
            TokenError::InvalidAlgorithm => "token_algorithm",
            TokenError::InvalidSignature => "token_signature",
            TokenError::Expired => "token_expired",
            TokenError::WrongIssuerOrAudience => "token_issuer_audience",
            TokenError::WrongKind { .. } => "token_kind",
            TokenError::UnknownCritical => "token_crit",
            TokenError::Signing(_) => "token_signing",
        }
    }

    /// Maps a `jsonwebtoken` verification error.
    pub(super) fn from_verification(err: &JwtError) -> Self {
        match err.kind() {
            ErrorKind::InvalidSignature => TokenError::InvalidSignature,
            // A key the backend refuses for this token (e.g. a signature of the wrong length for
            // the curve) is, from the client's side, a signature that does not verify.
            ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::Provider(_) => TokenError::InvalidSignature,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::MissingAlgorithm => TokenError::InvalidAlgorithm,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                TokenError::WrongIssuerOrAudience
            }
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" || claim == "aud" => {
                TokenError::WrongIssuerOrAudience
            }
            _ => TokenError::Malformed,
        }
    }
}
