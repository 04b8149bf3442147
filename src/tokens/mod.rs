//! Signed tokens: session JWTs from login and short-lived access JWTs from the key exchange.
//!
//! - A **session** token (login, default 1 h) only opens the key-management endpoints.
//! - An **access** token (key exchange, default 15 min) stands in for the API key it was exchanged
//!   from: its claims carry the key id, account, scopes and permission, so the request path needs
//!   no store read. It dies with its key through the revoked-key set (claim `key`), which is the
//!   caller's job.
//!
//! Security properties:
//!
//! - **One pinned algorithm.** [`Tokens::verify`] accepts exactly the configured algorithm. A
//!   header saying `none`, any other algorithm, or HS256 presented to an EdDSA/RS256 verifier
//!   (the key-confusion attack: an HMAC keyed with the public key) is refused before any
//!   signature check, as [`TokenError::InvalidAlgorithm`].
//! - **Expiry with no leeway** ([`LEEWAY_SECS`] = 0). keygate both issues and verifies, so clock
//!   skew between gateway nodes only shortens or lengthens a token's life by that skew; a leeway
//!   would only add life to every token. A token is refused once `exp < now`.
//! - `iss`, `aud` and `exp` are required and checked; the kind (`typ` claim) must match.
//! - Inputs longer than [`MAX_TOKEN_LEN`] are refused before any decoding; malformed input of any
//!   shape is an error, never a panic.
//! - Keys are loaded, checked (a sign-and-verify probe) and prepared once in [`Tokens::new`]; a
//!   verification does no I/O and no store access.
//! - Tokens and keys never appear in errors or `Debug` output.

mod claims;
pub mod cutoffs;
mod error;
mod jwks;
mod keys;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;

pub use claims::{Claims, ClaimsDraft, TokenKind};
pub use error::TokenError;
pub use keys::{Algorithm, TokenSettings, MIN_HS256_SECRET_LEN, MIN_RSA_BITS};

/// Seconds of grace after `exp`. Zero: see the module documentation.
pub const LEEWAY_SECS: u64 = 0;
/// Longest token [`Tokens::verify`] will look at. keygate's own tokens are well under 2 KiB.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest lifetime accepted for either kind of token.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// `tokenType` of the exchange response.
pub const TOKEN_TYPE: &str = "Bearer";

/// Issues and verifies keygate's JWTs. Build once at start-up and share (`Arc<Tokens>`).
pub struct Tokens {
    algorithm: Algorithm,
    issuer: String,
    audience: String,
    header: Header,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    session_ttl: i64,
    exchange_ttl: i64,
    jwks: serde_json::Value,
    /// The cut-offs known here, so a new token is issued after every one of its subjects'
    /// (see [`cutoffs`]); empty unless [`Tokens::with_cutoffs`] shares the gate's.
    cutoffs: Arc<cutoffs::TokenCutoffs>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("key_id", &self.header.kid)
            .field("session_ttl", &self.session_ttl)
            .field("exchange_ttl", &self.exchange_ttl)
            .finish_non_exhaustive()
    }
}

fn ttl_secs(name: &str, ttl: Duration) -> Result<i64, TokenError> {
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        return Err(TokenError::Config(format!(
            "{name} must be between 1 s and {} s, got {} s",
            MAX_TTL.as_secs(),
            ttl.as_secs()
        )));
    }
    // Bounded by MAX_TTL above, so the conversion cannot fail.
    i64::try_from(ttl.as_secs()).map_err(|_| TokenError::Config(format!("{name} is too large")))
}

impl Tokens {
    /// Validates the settings, loads and derives the keys, and prepares verification.
    ///
    /// HS256 needs `hs256_secret` of at least [`MIN_HS256_SECRET_LEN`] bytes; EdDSA and RS256
    /// need `private_key_pem` (PKCS#8) and a `key_id`; RSA keys need at least [`MIN_RSA_BITS`].
    pub fn new(settings: TokenSettings) -> Result<Tokens, TokenError> {
        if settings.issuer.trim().is_empty() {
            return Err(TokenError::Config("issuer must not be empty".into()));
        }
        if settings.audience.trim().is_empty() {
            return Err(TokenError::Config("audience must not be empty".into()));
        }
        let session_ttl = ttl_secs("session_ttl", settings.session_ttl)?;
        let exchange_ttl = ttl_secs("exchange_ttl", settings.exchange_ttl)?;
        let material = keys::load(&settings)?;

        let alg = settings.algorithm.jwt();
        let mut header = Header::new(alg);
        if !settings.key_id.is_empty() {
            header.kid = Some(settings.key_id.clone());
        }

        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = false;
        validation.validate_aud = true;
        validation.set_issuer(&[settings.issuer.as_str()]);
        validation.set_audience(&[settings.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);

        let tokens = Tokens {
            algorithm: settings.algorithm,
            issuer: settings.issuer,
            audience: settings.audience,
            header,
            jwks: jwks::document(material.jwk.as_ref()),
            encoding: material.encoding,
            decoding: material.decoding,
            validation,
            session_ttl,
            exchange_ttl,
            cutoffs: Arc::default(),
        };
        tokens.probe()?;
        Ok(tokens)
    }

    /// Shares the cut-offs the request path checks, so every token issued here carries an issue
    /// time after the latest cut-off of its subjects known here: a login or exchange right after
    /// a cut (same millisecond, or a lagging clock) is not refused by that cut.
    pub fn with_cutoffs(mut self, cutoffs: Arc<cutoffs::TokenCutoffs>) -> Self {
        self.cutoffs = cutoffs;
        self
    }

    /// Signs and verifies a throw-away token, so a key the backend cannot use fails at start-up
    /// rather than on the first login.
    fn probe(&self) -> Result<(), TokenError> {
        let draft = ClaimsDraft {
            sub: "keygate-self-test".into(),
            perm: "read".into(),
            ..ClaimsDraft::default()
        };
        let (token, _) = self.issue(draft, TokenKind::Session)?;
        self.verify(&token, TokenKind::Session)
            .map(|_| ())
            .map_err(|e| {
                TokenError::Config(format!(
                    "the configured key cannot verify its own tokens ({})",
                    e.code()
                ))
            })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The longest lifetime of any token this instance issues: a revocation older than this
    /// can no longer stop a valid token.
    pub fn longest_ttl_secs(&self) -> i64 {
        self.session_ttl.max(self.exchange_ttl)
    }

    /// Lifetime in seconds of a token of this kind.
    pub fn ttl_secs(&self, kind: TokenKind) -> i64 {
        match kind {
            TokenKind::Session => self.session_ttl,
            TokenKind::Access => self.exchange_ttl,
        }
    }

    /// Signs a token of `kind` with `iat` = now, `exp` = now + the kind's TTL (or the draft's
    /// `not_after`, when sooner), `iss`/`aud` from the settings and a random 128-bit `jti`. The
    /// header carries the pinned `alg` and the `kid`. `iat_ms` is now in milliseconds, moved just
    /// past the latest cut-off known for the token's subjects when that is later (see
    /// [`cutoffs`]).
    ///
    /// Returns the token and its lifetime in seconds (`expiresIn`).
    pub fn issue(&self, draft: ClaimsDraft, kind: TokenKind) -> Result<(String, i64), TokenError> {
        let now_ms = cutoffs::now_ms();
        let now = now_ms.div_euclid(1000);
        let mut ttl = self.ttl_secs(kind);
        if let Some(not_after) = draft.not_after {
            ttl = ttl.min(not_after.saturating_sub(now));
        }
        if ttl < 1 {
            return Err(TokenError::Signing(
                "the token would be expired when issued".into(),
            ));
        }
        let subjects = [Some(draft.sub.as_str()), Some(draft.acc.as_str())]
            .into_iter()
            .chain([draft.usr.as_deref(), draft.kid_key.as_deref()])
            .flatten();
        let iat_ms = now_ms.max(self.cutoffs.issue_floor(subjects).unwrap_or(0));
        let claims = Claims {
            sub: draft.sub,
            kind,
            acc: draft.acc,
            usr: draft.usr,
            kid_key: draft.kid_key,
            scopes: draft.scopes,
            perm: draft.perm,
            res: draft.res,
            plan: draft.plan,
            rl: draft.rl,
            iat: now,
            iat_ms: Some(iat_ms),
            exp: now.saturating_add(ttl),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: new_jti(),
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        Ok((token, ttl))
    }

    /// Verifies signature (configured algorithm only), `exp`, `iss`, `aud` and kind, and returns
    /// the claims. See [`TokenError`] for the refusals.
    pub fn verify(&self, token: &str, expected: TokenKind) -> Result<Claims, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let data = match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => data,
            Err(err) => {
                let mapped = TokenError::from_verification(&err);
                // A header naming an algorithm the library does not know (`none`, `HS1`, ...)
                // fails to parse; report it as the algorithm refusal it is.
                if mapped == TokenError::Malformed && self.header_names_other_alg(token) {
                    return Err(TokenError::InvalidAlgorithm);
                }
                return Err(mapped);
            }
        };
        if data.header.crit.is_some() {
            return Err(TokenError::UnknownCritical);
        }
        if data.claims.kind != expected {
            return Err(TokenError::WrongKind {
                expected,
                found: data.claims.kind,
            });
        }
        Ok(data.claims)
    }

    /// Only on the error path: whether the header decodes and names an `alg` other than ours.
    fn header_names_other_alg(&self, token: &str) -> bool {
        #[derive(Deserialize)]
        struct AlgOnly {
            alg: Option<serde_json::Value>,
        }
        let Some(segment) = token.split('.').next() else {
            return false;
        };
        let Ok(json) = URL_SAFE_NO_PAD.decode(segment) else {
            return false;
        };
        match serde_json::from_slice::<AlgOnly>(&json) {
            Ok(AlgOnly {
                alg: Some(serde_json::Value::String(alg)),
            }) => alg != self.algorithm.as_str(),
            Ok(AlgOnly { alg: Some(_) }) => true,
            _ => false,
        }
    }

    /// The JWKS document: `{"keys":[{kty, crv/x | n/e, kid, alg, "use":"sig"}]}` for EdDSA and
    /// RS256; `{"keys":[]}` for HS256, whose shared secret is never published.
    pub fn jwks(&self) -> serde_json::Value {
        self.jwks.clone()
    }
}

/// The exchange response body: `{"accessToken", "expiresIn", "tokenType": "Bearer"}`.
pub fn token_response(access_token: &str, expires_in: i64) -> serde_json::Value {
    serde_json::json!({
        "accessToken": access_token,
        "expiresIn": expires_in,
        "tokenType": TOKEN_TYPE,
    })
}

/// Whether `s` has the shape of a compact JWS: three non-empty base64url segments (letters,
/// digits, `-` and `_`; no padding) separated by two dots. Cheap and allocation-free, for telling
/// a JWT from an API key before choosing how to authenticate; it proves nothing about the token.
pub fn looks_like_jwt(s: &str) -> bool {
    let mut dots = 0;
    let mut segment_len = 0usize;
    for b in s.bytes() {
        match b {
            b'.' => {
                if segment_len == 0 || dots == 2 {
                    return false;
                }
                dots += 1;
                segment_len = 0;
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => segment_len += 1,
            _ => return false,
        }
    }
    dots == 2 && segment_len > 0
}

fn new_jti() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}
