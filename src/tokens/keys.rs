//! Token settings and the key material derived from them once, at start-up.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

use super::error::TokenError;
use super::jwks;
use crate::secret::Secret;

/// Shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: at least the hash output size).
pub const MIN_HS256_SECRET_LEN: usize = 32;
/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The one signing algorithm keygate uses. Verification accepts this algorithm and no other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// HMAC-SHA256 with a shared secret. Tokens can only be verified by keygate itself, and the
    /// JWKS document is empty.
    #[default]
    #[serde(rename = "HS256", alias = "hs256")]
    Hs256,
    /// Ed25519. The public key is published in the JWKS document.
    #[serde(rename = "EdDSA", alias = "eddsa", alias = "EDDSA")]
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256. The public key is published in the JWKS document.
    #[serde(rename = "RS256", alias = "rs256")]
    Rs256,
}

impl Algorithm {
    /// The JOSE name (`alg` header value).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Rs256 => "RS256",
        }
    }

    pub(super) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::Hs256 => jsonwebtoken::Algorithm::HS256,
            Algorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

/// What [`super::Tokens::new`] needs. `Debug` is safe: both key fields are [`Secret`]s.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub algorithm: Algorithm,
    /// `iss` of every token issued and required of every token verified.
    pub issuer: String,
    /// `aud` of every token issued and required of every token verified.
    pub audience: String,
    /// HS256 only: the shared secret, at least [`MIN_HS256_SECRET_LEN`] bytes. Ignored otherwise.
    pub hs256_secret: Option<Secret>,
    /// EdDSA / RS256 only: the private key as PKCS#8 PEM text (`-----BEGIN PRIVATE KEY-----`, as
    /// `openssl genpkey` writes it). The public key is derived from it. Refused with HS256, where
    /// it would suggest upstreams can verify tokens through the JWKS document when they cannot.
    pub private_key_pem: Option<Secret>,
    /// `kid` header of issued tokens and of the published JWK. Required for EdDSA / RS256.
    pub key_id: String,
    /// Lifetime of session tokens (login); whole seconds.
    pub session_ttl: Duration,
    /// Lifetime of access tokens (key exchange); whole seconds.
    pub exchange_ttl: Duration,
}

/// Keys prepared once: signing, verifying, and the public JWK (asymmetric algorithms only).
pub(super) struct KeyMaterial {
    pub(super) encoding: EncodingKey,
    pub(super) decoding: DecodingKey,
    pub(super) jwk: Option<serde_json::Value>,
}

fn config(message: impl Into<String>) -> TokenError {
    TokenError::Config(message.into())
}

pub(super) fn load(settings: &TokenSettings) -> Result<KeyMaterial, TokenError> {
    match settings.algorithm {
        Algorithm::Hs256 => load_hs256(settings),
        Algorithm::EdDsa => load_ed25519(require_pem(settings)?, &settings.key_id),
        Algorithm::Rs256 => load_rsa(require_pem(settings)?, &settings.key_id),
    }
}

fn load_hs256(settings: &TokenSettings) -> Result<KeyMaterial, TokenError> {
    if settings.private_key_pem.is_some() {
        return Err(config(
            "private_key_pem is set but the algorithm is HS256, which signs with hs256_secret and \
             publishes no public key; set the algorithm to EdDSA or RS256, or remove the key",
        ));
    }
    let secret = settings
        .hs256_secret
        .as_ref()
        .ok_or_else(|| config("HS256 needs hs256_secret"))?;
    let bytes = secret.expose().as_bytes();
    if bytes.len() < MIN_HS256_SECRET_LEN {
        return Err(config(format!(
            "hs256_secret is {} bytes; HS256 needs at least {MIN_HS256_SECRET_LEN}",
            bytes.len()
        )));
    }
    Ok(KeyMaterial {
        encoding: EncodingKey::from_secret(bytes),
        decoding: DecodingKey::from_secret(bytes),
        jwk: None,
    })
}

fn require_pem(settings: &TokenSettings) -> Result<&[u8], TokenError> {
    let alg = settings.algorithm.as_str();
    if settings.key_id.trim().is_empty() {
        return Err(config(format!(
            "{alg} needs a key_id: it is the `kid` that upstreams look up in the JWKS document"
        )));
    }
    let pem = settings.private_key_pem.as_ref().ok_or_else(|| {
        config(format!(
            "{alg} needs private_key_pem (a PKCS#8 private key in PEM, `-----BEGIN PRIVATE KEY-----`)"
        ))
    })?;
    Ok(pem.expose().as_bytes())
}

/// Says what a PEM that failed to load actually is, when that is recognisable.
fn describe_pem(pem: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("ENCRYPTED PRIVATE KEY") {
        Some("an encrypted private key; decrypt it first (`openssl pkcs8 -in key.pem -out plain.pem`)")
    } else if text.contains("PUBLIC KEY") {
        Some("a public key; the private key is needed (the public key is derived from it)")
    } else if text.contains("CERTIFICATE") {
        Some("a certificate; the private key is needed")
    } else if !text.contains("-----BEGIN ") {
        Some("not PEM text (no `-----BEGIN ...-----` line)")
    } else if EncodingKey::from_rsa_pem(pem).is_ok() {
        Some("an RSA key (use algorithm RS256 for it)")
    } else if EncodingKey::from_ed_pem(pem).is_ok() {
        Some("an Ed25519 key (use algorithm EdDSA for it)")
    } else if EncodingKey::from_ec_pem(pem).is_ok() {
        Some("an EC key, which keygate does not sign with")
    } else {
        None
    }
}

fn not_a_key(wanted: &str, pem: &[u8], cause: Option<String>) -> TokenError {
    let what = describe_pem(pem)
        .map(str::to_string)
        .or(cause)
        .unwrap_or_else(|| "unreadable".to_string());
    config(format!(
        "private_key_pem must be {wanted} as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`); it is {what}"
    ))
}

fn load_ed25519(pem: &[u8], kid: &str) -> Result<KeyMaterial, TokenError> {
    const WANTED: &str = "an Ed25519 private key (`openssl genpkey -algorithm ed25519`)";
    let encoding =
        EncodingKey::from_ed_pem(pem).map_err(|e| not_a_key(WANTED, pem, Some(e.to_string())))?;
    // `from_ed_pem` hands over the PKCS#8 DER; the signer parses it the same way.
    let signing = ed25519_dalek::SigningKey::from_pkcs8_der(encoding.as_bytes())
        .map_err(|e| not_a_key(WANTED, pem, Some(e.to_string())))?;
    let public = signing.verifying_key().to_bytes();
    Ok(KeyMaterial {
        decoding: DecodingKey::from_ed_der(&public),
        jwk: Some(jwks::ed25519(&public, kid)),
        encoding,
    })
}

fn load_rsa(pem: &[u8], kid: &str) -> Result<KeyMaterial, TokenError> {
    const WANTED: &str = "an RSA private key of at least 2048 bits \
        (`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`)";
    let encoding =
        EncodingKey::from_rsa_pem(pem).map_err(|e| not_a_key(WANTED, pem, Some(e.to_string())))?;
    let jwk = Jwk::from_encoding_key(&encoding, jsonwebtoken::Algorithm::RS256)
        .map_err(|e| not_a_key(WANTED, pem, Some(e.to_string())))?;
    let AlgorithmParameters::RSA(params) = jwk.algorithm else {
        return Err(not_a_key(WANTED, pem, None));
    };
    let modulus = URL_SAFE_NO_PAD
        .decode(&params.n)
        .map_err(|e| not_a_key(WANTED, pem, Some(e.to_string())))?;
    let bits = modulus_bits(&modulus);
    if bits < MIN_RSA_BITS {
        return Err(config(format!(
            "private_key_pem is a {bits}-bit RSA key; RS256 needs at least {MIN_RSA_BITS} bits"
        )));
    }
    let decoding = DecodingKey::from_rsa_components(&params.n, &params.e)
        .map_err(|e| not_a_key(WANTED, pem, Some(e.to_string())))?;
    Ok(KeyMaterial {
        jwk: Some(jwks::rsa(&params.n, &params.e, kid)),
        encoding,
        decoding,
    })
}

/// Bit length of a big-endian unsigned integer.
fn modulus_bits(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        Some(first) => (be.len() - first) * 8 - be[first].leading_zeros() as usize,
        None => 0,
    }
}
