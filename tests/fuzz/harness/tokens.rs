//! Fuzz harness for token verification: [`Tokens::verify`] with an HS256 verifier.
//!
//! Shared by the cargo-fuzz target `tokens` and by `tests/fuzz_replay.rs`. The verifier's secret
//! is random per process, and one genuine token is issued with it at start-up. Input: one
//! selector byte, then, by selector:
//!
//! - `0`: the token text, as a client could send it. Nothing may verify: the secret is unknown.
//! - `1`: edits (3-byte ops: kind, position, byte) applied to the genuine token. Whatever is not
//!   the genuine token, byte for byte, must be refused; the genuine token must verify.
//! - `2`: `header JSON \0 payload JSON`, encoded and signed here with the verifier's secret, so
//!   the fuzzer reaches the claims checks behind the signature. Whatever verifies must name
//!   HS256, carry no `crit`, and have the configured `iss`/`aud`, the expected kind and an `exp`
//!   not in the past.
//!
//! Only the public `Tokens::new` / `issue` / `verify` API is used.

use std::sync::OnceLock;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use keygate::keys::KeyFormat;
use keygate::secret::Secret;
use keygate::tokens::{Algorithm, ClaimsDraft, TokenKind, TokenSettings, Tokens};
use sha2::Sha256;

const ISSUER: &str = "https://keygate.fuzz";
const AUDIENCE: &str = "keygate-api";

struct Fixture {
    tokens: Tokens,
    secret: String,
    genuine: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // 48 random base62 characters from the OS CSPRNG, by way of the key generator.
        let secret = KeyFormat::new("hs", 40).generate().expose().to_string();
        let settings = TokenSettings {
            algorithm: Algorithm::Hs256,
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            hs256_secret: Some(Secret::new(secret.clone())),
            private_key_pem: None,
            key_id: "kg-fuzz".into(),
            session_ttl: Duration::from_secs(3600),
            exchange_ttl: Duration::from_secs(3600),
        };
        let tokens = match Tokens::new(settings) {
            Ok(t) => t,
            Err(e) => panic!("fuzz verifier: {e}"),
        };
        let draft = ClaimsDraft {
            sub: "key_fuzz".into(),
            acc: "acc_fuzz".into(),
            kid_key: Some("key_fuzz".into()),
            scopes: vec!["leads:read".into()],
            perm: "read".into(),
            ..ClaimsDraft::default()
        };
        let genuine = match tokens.issue(draft, TokenKind::Access) {
            Ok((t, _)) => t,
            Err(e) => panic!("fuzz token: {e}"),
        };
        Fixture {
            tokens,
            secret,
            genuine,
        }
    })
}

pub fn run(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    match selector % 3 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            for kind in [TokenKind::Access, TokenKind::Session] {
                assert!(
                    f.tokens.verify(&text, kind).is_err(),
                    "{text:?} verified without the secret"
                );
            }
        }
        1 => {
            let edited = edit(&f.genuine, rest);
            let Ok(text) = std::str::from_utf8(&edited) else {
                return;
            };
            let verdict = f.tokens.verify(text, TokenKind::Access);
            if text == f.genuine {
                assert!(
                    verdict.is_ok(),
                    "the genuine token was refused: {verdict:?}"
                );
            } else {
                assert!(verdict.is_err(), "{text:?}: an edited token verified");
            }
            assert!(f.tokens.verify(text, TokenKind::Session).is_err());
        }
        _ => signed(f, rest),
    }
}

/// Applies 3-byte edits: `kind % 4` is replace, insert, delete, truncate at `position`.
fn edit(token: &str, ops: &[u8]) -> Vec<u8> {
    let mut bytes = token.as_bytes().to_vec();
    for op in ops.chunks_exact(3) {
        let (kind, byte) = (op[0], op[2]);
        let at = usize::from(op[1]) * bytes.len() / 256;
        match kind % 4 {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at.min(bytes.len()), byte),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            3 => bytes.truncate(at),
            _ => {}
        }
    }
    bytes
}

fn signed(f: &Fixture, input: &[u8]) {
    let split = input.iter().position(|&b| b == 0).unwrap_or(input.len());
    let (header, payload) = (&input[..split], input.get(split + 1..).unwrap_or_default());
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(f.secret.as_bytes()) {
        Ok(m) => m,
        Err(e) => panic!("hmac: {e}"),
    };
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    let token = format!("{signing_input}.{signature}");
    for kind in [TokenKind::Access, TokenKind::Session] {
        let Ok(claims) = f.tokens.verify(&token, kind) else {
            continue;
        };
        let header: serde_json::Value = match serde_json::from_slice(header) {
            Ok(v) => v,
            Err(e) => panic!("verified with a header that is not JSON ({e}): {token}"),
        };
        assert_eq!(header["alg"], "HS256", "verified with another alg: {token}");
        assert!(
            header.get("crit").is_none_or(serde_json::Value::is_null),
            "verified with crit: {token}"
        );
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, AUDIENCE);
        assert_eq!(claims.kind, kind);
        assert!(
            claims.exp >= chrono::Utc::now().timestamp(),
            "verified past exp: {token}"
        );
    }
}
