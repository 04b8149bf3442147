//! The public JWK (RFC 7517) that upstreams use to verify keygate's tokens themselves.
//!
//! Only public parameters are ever written: `x` for Ed25519 (RFC 8037), `n` and `e` for RSA. An
//! HS256 secret is never published, so with HS256 the document is `{"keys": []}`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

/// `{"kty":"OKP","crv":"Ed25519","x":...,"kid":...,"alg":"EdDSA","use":"sig"}`.
pub(super) fn ed25519(public: &[u8; 32], kid: &str) -> Value {
    json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(public),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    })
}

/// `{"kty":"RSA","n":...,"e":...,"kid":...,"alg":"RS256","use":"sig"}`; `n` and `e` are already
/// base64url without padding.
pub(super) fn rsa(n: &str, e: &str, kid: &str) -> Value {
    json!({
        "kty": "RSA",
        "n": n,
        "e": e,
        "kid": kid,
        "alg": "RS256",
        "use": "sig",
    })
}

/// The JWKS document: `{"keys": [...]}`.
pub(super) fn document(jwk: Option<&Value>) -> Value {
    json!({ "keys": jwk.into_iter().cloned().collect::<Vec<_>>() })
}
