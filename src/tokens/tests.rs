//! Unit tests for `crate::tokens`. The PEMs under `testdata/` are throw-away keys made with
//! `openssl genpkey` for these tests only.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::secret::Secret;

const ED_A: &str = include_str!("testdata/ed25519_a.pem");
const ED_B: &str = include_str!("testdata/ed25519_b.pem");
const RSA_A: &str = include_str!("testdata/rsa2048_a.pem");
const RSA_B: &str = include_str!("testdata/rsa2048_b.pem");
const RSA_1024: &str = include_str!("testdata/rsa1024.pem");
const EC_P256: &str = include_str!("testdata/ec_p256.pem");
const HS_SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";

fn settings(algorithm: Algorithm) -> TokenSettings {
    let (hs256_secret, private_key_pem) = match algorithm {
        Algorithm::Hs256 => (Some(Secret::new(HS_SECRET)), None),
        Algorithm::EdDsa => (None, Some(Secret::new(ED_A))),
        Algorithm::Rs256 => (None, Some(Secret::new(RSA_A))),
    };
    TokenSettings {
        algorithm,
        issuer: "https://keygate.test".into(),
        audience: "keygate-api".into(),
        hs256_secret,
        private_key_pem,
        key_id: "kg-2026-01".into(),
        session_ttl: Duration::from_secs(3600),
        exchange_ttl: Duration::from_secs(900),
    }
}

fn tokens(algorithm: Algorithm) -> Tokens {
    match Tokens::new(settings(algorithm)) {
        Ok(t) => t,
        Err(e) => panic!("{algorithm:?}: {e}"),
    }
}

const ALL: [Algorithm; 3] = [Algorithm::Hs256, Algorithm::EdDsa, Algorithm::Rs256];

fn draft() -> ClaimsDraft {
    ClaimsDraft {
        sub: "key_01HZX".into(),
        acc: "acc_42".into(),
        usr: Some("usr_7".into()),
        kid_key: Some("key_01HZX".into()),
        scopes: vec!["secrets:read".into(), "projects:*".into()],
        perm: "read_write".into(),
        res: Some(json!({"projects": ["p1"], "environments": ["prod"]})),
        ..ClaimsDraft::default()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims as `issue` would write them, for hand-made tokens.
fn claims_for(t: &Tokens, kind: TokenKind) -> Claims {
    let now = now();
    Claims {
        sub: "key_01HZX".into(),
        kind,
        acc: "acc_42".into(),
        usr: None,
        kid_key: Some("key_01HZX".into()),
        scopes: vec![],
        perm: "read".into(),
        res: None,
        plan: None,
        rl: None,
        iat: now,
        iat_ms: None,
        exp: now + 600,
        iss: t.issuer.clone(),
        aud: t.audience.clone(),
        jti: "test".into(),
    }
}

/// Signs arbitrary claims with the instance's own key and header.
fn sign<T: serde::Serialize>(t: &Tokens, claims: &T) -> String {
    jsonwebtoken::encode(&t.header, claims, &t.encoding).expect("sign")
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).expect("json"))
}

/// Replaces one character in the middle of the signature segment.
fn flip_signature_char(token: &str) -> String {
    let sig_start = token.rfind('.').expect("dot") + 1;
    let i = sig_start + (token.len() - sig_start) / 2;
    let mut bytes = token.as_bytes().to_vec();
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ascii")
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn round_trip_each_algorithm_and_kind() {
    for alg in ALL {
        let t = tokens(alg);
        for kind in [TokenKind::Session, TokenKind::Access] {
            let before = now();
            let (token, expires_in) = t.issue(draft(), kind).expect("issue");
            let expected_ttl = match kind {
                TokenKind::Session => 3600,
                TokenKind::Access => 900,
            };
            assert_eq!(expires_in, expected_ttl);
            assert!(looks_like_jwt(&token), "{alg:?}");

            let header = jsonwebtoken::decode_header(&token).expect("header");
            assert_eq!(header.alg, alg.jwt());
            assert_eq!(header.kid.as_deref(), Some("kg-2026-01"));

            let c = t.verify(&token, kind).expect("verify");
            let d = draft();
            assert_eq!(c.kind, kind);
            assert_eq!(c.sub, d.sub);
            assert_eq!(c.acc, d.acc);
            assert_eq!(c.usr, d.usr);
            assert_eq!(c.kid_key, d.kid_key);
            assert_eq!(c.scopes, d.scopes);
            assert_eq!(c.perm, d.perm);
            assert_eq!(c.res, d.res);
            assert_eq!(c.iss, "https://keygate.test");
            assert_eq!(c.aud, "keygate-api");
            assert!(c.iat >= before && c.iat <= now());
            assert_eq!(c.exp - c.iat, expected_ttl);
            assert_eq!(c.jti.len(), 32);
        }
    }
}

#[test]
fn claim_names_are_short_and_stable() {
    let t = tokens(Algorithm::Hs256);
    let (token, _) = t.issue(draft(), TokenKind::Access).expect("issue");
    let payload = token.split('.').nth(1).expect("payload");
    let json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    let mut names: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "acc", "aud", "exp", "iat", "iat_ms", "iss", "jti", "key", "perm", "res", "scp", "sub",
            "typ", "usr"
        ]
    );
    assert_eq!(json["typ"], "access");
    assert_eq!(json["key"], "key_01HZX");
}

#[test]
fn optional_claims_are_omitted_and_tolerated() {
    let t = tokens(Algorithm::Hs256);
    let minimal = ClaimsDraft {
        sub: "usr_7".into(),
        acc: "acc_42".into(),
        perm: "read".into(),
        ..ClaimsDraft::default()
    };
    let (token, _) = t.issue(minimal, TokenKind::Session).expect("issue");
    let payload = token.split('.').nth(1).expect("payload");
    let json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    for absent in ["usr", "key", "scp", "res", "plan", "rl"] {
        assert!(json.get(absent).is_none(), "{absent}");
    }
    let c = t.verify(&token, TokenKind::Session).expect("verify");
    assert!(c.scopes.is_empty() && c.usr.is_none() && c.kid_key.is_none() && c.res.is_none());

    // Unknown claims (added by a later version) do not invalidate a token.
    let mut extra = serde_json::to_value(claims_for(&t, TokenKind::Session)).expect("json");
    extra["future"] = json!(1);
    assert!(t.verify(&sign(&t, &extra), TokenKind::Session).is_ok());
}

#[test]
fn a_token_never_outlives_its_not_after() {
    let t = tokens(Algorithm::Hs256);
    let soon = now() + 60;
    let capped = ClaimsDraft {
        not_after: Some(soon),
        ..draft()
    };
    let (token, expires_in) = t.issue(capped, TokenKind::Access).expect("issue");
    assert!((59..=60).contains(&expires_in), "expires_in {expires_in}");
    let c = t.verify(&token, TokenKind::Access).expect("verify");
    assert_eq!(c.exp, soon);

    // A far cut-off leaves the configured lifetime alone.
    let far = ClaimsDraft {
        not_after: Some(now() + 86_400),
        ..draft()
    };
    let (_, expires_in) = t.issue(far, TokenKind::Access).expect("issue");
    assert_eq!(expires_in, t.ttl_secs(TokenKind::Access));

    // One already past is refused rather than signed dead on arrival.
    let past = ClaimsDraft {
        not_after: Some(now() - 1),
        ..draft()
    };
    assert!(t.issue(past, TokenKind::Access).is_err());
}

#[test]
fn jti_is_unique() {
    let t = tokens(Algorithm::Hs256);
    let (a, _) = t.issue(draft(), TokenKind::Access).expect("issue");
    let (b, _) = t.issue(draft(), TokenKind::Access).expect("issue");
    let ja = t.verify(&a, TokenKind::Access).expect("a").jti;
    let jb = t.verify(&b, TokenKind::Access).expect("b").jti;
    assert_ne!(ja, jb);
}

#[test]
fn exchange_response_shape() {
    let body = token_response("eyJ.x.y", 900);
    assert_eq!(
        body,
        json!({"accessToken": "eyJ.x.y", "expiresIn": 900, "tokenType": "Bearer"})
    );
}

// ---------------------------------------------------------------------------------------------
// Refusals

#[test]
fn alg_none_is_refused() {
    for alg in ALL {
        let t = tokens(alg);
        let claims = b64(&serde_json::to_value(claims_for(&t, TokenKind::Access)).expect("json"));
        let genuine = t.issue(draft(), TokenKind::Access).expect("issue").0;
        let genuine_sig = genuine.rsplit('.').next().expect("sig");
        for header in [
            "eyJhbGciOiJub25lIn0".to_string(), // {"alg":"none"}
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&json!({"alg": "None", "typ": "JWT", "kid": "kg-2026-01"})),
            b64(&json!({"alg": "NONE"})),
        ] {
            for sig in ["", "AAAA", genuine_sig] {
                let token = format!("{header}.{claims}.{sig}");
                assert_eq!(
                    t.verify(&token, TokenKind::Access),
                    Err(TokenError::InvalidAlgorithm),
                    "{alg:?} {token}"
                );
            }
        }
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused_by_asymmetric_verifiers() {
    // The classic key confusion: the attacker knows the public key, signs an HS256 token with it
    // as the HMAC secret, and hopes the verifier picks the algorithm from the header.
    for alg in [Algorithm::EdDsa, Algorithm::Rs256] {
        let t = tokens(alg);
        let jwk = &t.jwks()["keys"][0];
        let mut secrets: Vec<Vec<u8>> = vec![serde_json::to_vec(jwk).expect("jwk")];
        match alg {
            Algorithm::EdDsa => {
                let x = jwk["x"].as_str().expect("x");
                secrets.push(URL_SAFE_NO_PAD.decode(x).expect("x bytes"));
                secrets.push(x.as_bytes().to_vec());
            }
            _ => {
                let n = jwk["n"].as_str().expect("n");
                secrets.push(URL_SAFE_NO_PAD.decode(n).expect("n bytes"));
                secrets.push(n.as_bytes().to_vec());
            }
        }
        let claims = claims_for(&t, TokenKind::Access);
        for secret in secrets {
            let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some("kg-2026-01".into());
            let forged = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret))
                .expect("forge");
            assert_eq!(
                t.verify(&forged, TokenKind::Access),
                Err(TokenError::InvalidAlgorithm),
                "{alg:?}"
            );
        }
    }
}

#[test]
fn any_other_algorithm_is_refused() {
    let hs = tokens(Algorithm::Hs256);
    let ed = tokens(Algorithm::EdDsa);
    let rs = tokens(Algorithm::Rs256);
    let from = |t: &Tokens| t.issue(draft(), TokenKind::Access).expect("issue").0;
    let cases = [
        (&hs, from(&ed)),
        (&hs, from(&rs)),
        (&ed, from(&hs)),
        (&ed, from(&rs)),
        (&rs, from(&hs)),
        (&rs, from(&ed)),
    ];
    for (verifier, token) in cases {
        assert_eq!(
            verifier.verify(&token, TokenKind::Access),
            Err(TokenError::InvalidAlgorithm),
            "{:?}",
            verifier.algorithm()
        );
    }
    // Same family, other hash: HS512 with the right secret is still not HS256.
    let claims = claims_for(&hs, TokenKind::Access);
    let hs512 = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS512),
        &claims,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .expect("hs512");
    assert_eq!(
        hs.verify(&hs512, TokenKind::Access),
        Err(TokenError::InvalidAlgorithm)
    );
}

#[test]
fn bad_signature_is_refused() {
    for alg in ALL {
        let t = tokens(alg);
        let (token, _) = t.issue(draft(), TokenKind::Access).expect("issue");
        assert_eq!(
            t.verify(&flip_signature_char(&token), TokenKind::Access),
            Err(TokenError::InvalidSignature),
            "{alg:?}"
        );

        // Claims changed, signature kept.
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut claims = claims_for(&t, TokenKind::Access);
        claims.perm = "read_write".into();
        claims.acc = "acc_other".into();
        let tampered_payload = b64(&serde_json::to_value(&claims).expect("json"));
        parts[1] = &tampered_payload;
        assert_eq!(
            t.verify(&parts.join("."), TokenKind::Access),
            Err(TokenError::InvalidSignature),
            "{alg:?}"
        );

        // Signature from the other test key of the same algorithm, or missing.
        let other = Tokens::new(TokenSettings {
            hs256_secret: Some(Secret::new("another-secret-of-at-least-32-bytes!")),
            private_key_pem: match alg {
                Algorithm::Hs256 => None,
                Algorithm::EdDsa => Some(Secret::new(ED_B)),
                Algorithm::Rs256 => Some(Secret::new(RSA_B)),
            },
            ..settings(alg)
        })
        .expect("other key");
        let (foreign, _) = other.issue(draft(), TokenKind::Access).expect("issue");
        assert_eq!(
            t.verify(&foreign, TokenKind::Access),
            Err(TokenError::InvalidSignature),
            "{alg:?}"
        );
        let unsigned = &token[..=token.rfind('.').expect("dot")];
        assert!(t.verify(unsigned, TokenKind::Access).is_err(), "{alg:?}");
    }
}

#[test]
fn expired_is_refused() {
    for alg in ALL {
        let t = tokens(alg);
        let mut claims = claims_for(&t, TokenKind::Access);
        claims.iat = now() - 1000;
        claims.exp = now() - 2;
        assert_eq!(
            t.verify(&sign(&t, &claims), TokenKind::Access),
            Err(TokenError::Expired),
            "{alg:?}"
        );
        // Still inside its lifetime: accepted.
        claims.exp = now() + 5;
        assert!(t.verify(&sign(&t, &claims), TokenKind::Access).is_ok());
    }
}

#[test]
fn missing_or_odd_exp_is_refused() {
    let t = tokens(Algorithm::Hs256);
    let mut claims = serde_json::to_value(claims_for(&t, TokenKind::Access)).expect("json");
    claims["exp"] = json!(-5);
    assert!(t.verify(&sign(&t, &claims), TokenKind::Access).is_err());
    claims["exp"] = json!("soon");
    assert_eq!(
        t.verify(&sign(&t, &claims), TokenKind::Access),
        Err(TokenError::Malformed)
    );
    claims.as_object_mut().expect("object").remove("exp");
    assert_eq!(
        t.verify(&sign(&t, &claims), TokenKind::Access),
        Err(TokenError::Malformed)
    );
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    for alg in ALL {
        let t = tokens(alg);
        let other_iss = Tokens::new(TokenSettings {
            issuer: "https://elsewhere.test".into(),
            ..settings(alg)
        })
        .expect("other iss");
        let other_aud = Tokens::new(TokenSettings {
            audience: "another-api".into(),
            ..settings(alg)
        })
        .expect("other aud");
        for issuer in [&other_iss, &other_aud] {
            let (token, _) = issuer.issue(draft(), TokenKind::Access).expect("issue");
            assert_eq!(
                t.verify(&token, TokenKind::Access),
                Err(TokenError::WrongIssuerOrAudience),
                "{alg:?}"
            );
        }
        // Missing iss / aud.
        for claim in ["iss", "aud"] {
            let mut claims = serde_json::to_value(claims_for(&t, TokenKind::Access)).expect("json");
            claims.as_object_mut().expect("object").remove(claim);
            assert!(t.verify(&sign(&t, &claims), TokenKind::Access).is_err());
        }
    }
}

#[test]
fn wrong_kind_is_refused() {
    for alg in ALL {
        let t = tokens(alg);
        let (session, _) = t.issue(draft(), TokenKind::Session).expect("issue");
        let (access, _) = t.issue(draft(), TokenKind::Access).expect("issue");
        assert_eq!(
            t.verify(&session, TokenKind::Access),
            Err(TokenError::WrongKind {
                expected: TokenKind::Access,
                found: TokenKind::Session
            })
        );
        assert_eq!(
            t.verify(&access, TokenKind::Session),
            Err(TokenError::WrongKind {
                expected: TokenKind::Session,
                found: TokenKind::Access
            })
        );
    }
    // An unknown kind is not one of ours.
    let t = tokens(Algorithm::Hs256);
    let mut claims = serde_json::to_value(claims_for(&t, TokenKind::Access)).expect("json");
    claims["typ"] = json!("refresh");
    assert_eq!(
        t.verify(&sign(&t, &claims), TokenKind::Access),
        Err(TokenError::Malformed)
    );
}

#[test]
fn garbage_is_refused_without_panicking() {
    let long_dots = format!(
        "{}.{}.{}",
        "a".repeat(4000),
        "b".repeat(4000),
        "c".repeat(2300)
    );
    let long_ok_size = format!(
        "eyJ{}.{}.{}",
        "A".repeat(3000),
        "B".repeat(3000),
        "C".repeat(100)
    );
    let inputs: Vec<String> = vec![
        String::new(),
        "a.b.c".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "..".into(),
        "...".into(),
        ".".into(),
        "eyJhbGciOiJIUzI1NiJ9".into(),
        "eyJhbGciOiJIUzI1NiJ9..".into(),
        "eyJhbGciOiJIUzI1NiJ9.e30.".into(),
        "eyJhbGciOiJIUzI1NiJ9.e30.AAAA".into(),
        "eyJ9.eyJ9.eyJ9".into(),
        "e30.e30.e30".into(),          // {} header: no alg
        "bnVsbA.bnVsbA.bnVsbA".into(), // null
        format!("{}.e30.AAAA", b64(&json!({"alg": 5}))),
        format!("{}.e30.AAAA", b64(&json!({"alg": "HS256", "crit": ["x"]}))),
        "ééé.ééé.ééé".into(),
        "a\0b.c.d".into(),
        "x".repeat(10 * 1024),
        "a.".repeat(5 * 1024),
        long_dots,
        long_ok_size,
        "ek_live_0123456789abcdef".into(),
    ];
    for alg in ALL {
        let t = tokens(alg);
        for input in &inputs {
            for kind in [TokenKind::Session, TokenKind::Access] {
                assert!(t.verify(input, kind).is_err(), "{alg:?} {input:.40}");
            }
        }
        assert_eq!(t.verify("", TokenKind::Access), Err(TokenError::Malformed));
        assert_eq!(
            t.verify("a.b.c", TokenKind::Access),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            t.verify(&"x".repeat(10 * 1024), TokenKind::Access),
            Err(TokenError::Malformed)
        );
    }
}

#[test]
fn claims_of_another_shape_are_malformed() {
    let t = tokens(Algorithm::Hs256);
    #[derive(serde::Serialize)]
    struct Foreign<'a> {
        sub: &'a str,
        exp: i64,
        iss: &'a str,
        aud: &'a str,
    }
    let token = sign(
        &t,
        &Foreign {
            sub: "x",
            exp: now() + 60,
            iss: &t.issuer,
            aud: &t.audience,
        },
    );
    assert_eq!(
        t.verify(&token, TokenKind::Access),
        Err(TokenError::Malformed)
    );
}

// ---------------------------------------------------------------------------------------------
// looks_like_jwt

#[test]
fn looks_like_jwt_shape() {
    for yes in ["a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.abc-_09", "A-_.0.z"] {
        assert!(looks_like_jwt(yes), "{yes}");
    }
    for no in [
        "",
        "abc",
        "a.b",
        "a.b.",
        ".b.c",
        "a..c",
        "a.b.c.d",
        "a.b.c=",
        "a+b.c.d",
        "a/b.c.d",
        "a.b.c ",
        " a.b.c",
        "a.b.c\n",
        "é.b.c",
        "ek_live_abcDEF123",
        "..",
    ] {
        assert!(!looks_like_jwt(no), "{no:?}");
    }
    let t = tokens(Algorithm::EdDsa);
    let (token, _) = t.issue(draft(), TokenKind::Access).expect("issue");
    assert!(looks_like_jwt(&token));
}

// ---------------------------------------------------------------------------------------------
// JWKS

#[test]
fn jwks_is_empty_for_hs256() {
    assert_eq!(tokens(Algorithm::Hs256).jwks(), json!({"keys": []}));
}

#[test]
fn jwks_verifies_tokens_for_upstreams() {
    for alg in [Algorithm::EdDsa, Algorithm::Rs256] {
        let t = tokens(alg);
        let doc = t.jwks();
        let keys = doc["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 1);
        let jwk = &keys[0];
        assert_eq!(jwk["kid"], "kg-2026-01");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], alg.as_str());
        match alg {
            Algorithm::EdDsa => {
                assert_eq!(jwk["kty"], "OKP");
                assert_eq!(jwk["crv"], "Ed25519");
                assert_eq!(jwk["x"].as_str().expect("x").len(), 43);
            }
            _ => {
                assert_eq!(jwk["kty"], "RSA");
                assert_eq!(jwk["e"], "AQAB");
                let n = URL_SAFE_NO_PAD
                    .decode(jwk["n"].as_str().expect("n"))
                    .expect("n b64");
                assert_eq!(n.len(), 256);
            }
        }
        // Nothing private is published.
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(jwk.get(private).is_none(), "{alg:?} publishes {private}");
        }

        // An upstream: parse the document, pick the key by the token's kid, verify.
        let set: JwkSet = serde_json::from_value(doc.clone()).expect("JwkSet");
        let (token, _) = t.issue(draft(), TokenKind::Access).expect("issue");
        let kid = jsonwebtoken::decode_header(&token)
            .expect("header")
            .kid
            .expect("kid");
        let key = DecodingKey::from_jwk(set.find(&kid).expect("kid in set")).expect("from_jwk");
        let mut validation = Validation::new(alg.jwt());
        validation.set_issuer(&["https://keygate.test"]);
        validation.set_audience(&["keygate-api"]);
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).expect("upstream");
        assert_eq!(data.claims["acc"], "acc_42");

        // And the published key does not verify another key's token.
        let other = Tokens::new(TokenSettings {
            private_key_pem: Some(Secret::new(if alg == Algorithm::EdDsa {
                ED_B
            } else {
                RSA_B
            })),
            ..settings(alg)
        })
        .expect("other");
        let (foreign, _) = other.issue(draft(), TokenKind::Access).expect("issue");
        assert!(jsonwebtoken::decode::<serde_json::Value>(&foreign, &key, &validation).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Settings

fn config_error(s: TokenSettings) -> String {
    match Tokens::new(s) {
        Err(TokenError::Config(msg)) => msg,
        Err(other) => panic!("expected a config error, got {other:?}"),
        Ok(_) => panic!("expected a config error, got Ok"),
    }
}

#[test]
fn hs256_settings_are_checked() {
    let msg = config_error(TokenSettings {
        hs256_secret: None,
        ..settings(Algorithm::Hs256)
    });
    assert!(msg.contains("hs256_secret"), "{msg}");

    let msg = config_error(TokenSettings {
        hs256_secret: Some(Secret::new("x".repeat(31))),
        ..settings(Algorithm::Hs256)
    });
    assert!(msg.contains("31 bytes") && msg.contains("32"), "{msg}");
    assert!(Tokens::new(TokenSettings {
        hs256_secret: Some(Secret::new("x".repeat(32))),
        ..settings(Algorithm::Hs256)
    })
    .is_ok());

    let msg = config_error(TokenSettings {
        private_key_pem: Some(Secret::new(ED_A)),
        ..settings(Algorithm::Hs256)
    });
    assert!(msg.contains("private_key_pem"), "{msg}");

    // Without a kid, HS256 tokens simply carry none.
    let t = Tokens::new(TokenSettings {
        key_id: String::new(),
        ..settings(Algorithm::Hs256)
    })
    .expect("no kid");
    let (token, _) = t.issue(draft(), TokenKind::Access).expect("issue");
    assert!(jsonwebtoken::decode_header(&token)
        .expect("h")
        .kid
        .is_none());
}

#[test]
fn asymmetric_settings_are_checked_with_clear_messages() {
    for alg in [Algorithm::EdDsa, Algorithm::Rs256] {
        let msg = config_error(TokenSettings {
            private_key_pem: None,
            ..settings(alg)
        });
        assert!(msg.contains("private_key_pem"), "{msg}");

        let msg = config_error(TokenSettings {
            key_id: " ".into(),
            ..settings(alg)
        });
        assert!(msg.contains("key_id"), "{msg}");

        let msg = config_error(TokenSettings {
            private_key_pem: Some(Secret::new("hello")),
            ..settings(alg)
        });
        assert!(msg.contains("not PEM"), "{msg}");

        let msg = config_error(TokenSettings {
            private_key_pem: Some(Secret::new(EC_P256)),
            ..settings(alg)
        });
        assert!(msg.contains("EC key"), "{msg}");

        let public = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n";
        let msg = config_error(TokenSettings {
            private_key_pem: Some(Secret::new(public)),
            ..settings(alg)
        });
        assert!(msg.contains("public key"), "{msg}");
    }

    let msg = config_error(TokenSettings {
        private_key_pem: Some(Secret::new(RSA_A)),
        ..settings(Algorithm::EdDsa)
    });
    assert!(msg.contains("Ed25519") && msg.contains("RSA key"), "{msg}");

    let msg = config_error(TokenSettings {
        private_key_pem: Some(Secret::new(ED_A)),
        ..settings(Algorithm::Rs256)
    });
    assert!(msg.contains("RSA") && msg.contains("Ed25519 key"), "{msg}");

    let msg = config_error(TokenSettings {
        private_key_pem: Some(Secret::new(RSA_1024)),
        ..settings(Algorithm::Rs256)
    });
    assert!(msg.contains("1024-bit") && msg.contains("2048"), "{msg}");

    // A mangled body inside valid armour.
    let mangled = ED_A.replacen("MC4CAQAw", "MC4CAQEw", 1);
    assert!(matches!(
        Tokens::new(TokenSettings {
            private_key_pem: Some(Secret::new(mangled)),
            ..settings(Algorithm::EdDsa)
        }),
        Err(TokenError::Config(_))
    ));
}

#[test]
fn common_settings_are_checked() {
    for alg in ALL {
        assert!(config_error(TokenSettings {
            issuer: "".into(),
            ..settings(alg)
        })
        .contains("issuer"));
        assert!(config_error(TokenSettings {
            audience: " ".into(),
            ..settings(alg)
        })
        .contains("audience"));
        assert!(config_error(TokenSettings {
            session_ttl: Duration::ZERO,
            ..settings(alg)
        })
        .contains("session_ttl"));
        assert!(config_error(TokenSettings {
            exchange_ttl: MAX_TTL + Duration::from_secs(1),
            ..settings(alg)
        })
        .contains("exchange_ttl"));
    }
}

#[test]
fn nothing_secret_in_debug_or_errors() {
    for alg in ALL {
        let s = settings(alg);
        let t = tokens(alg);
        let (token, _) = t.issue(draft(), TokenKind::Access).expect("issue");
        let printed = format!("{s:?} {t:?}");
        assert!(!printed.contains(HS_SECRET), "{printed}");
        assert!(!printed.contains("PRIVATE KEY"), "{printed}");
        assert!(!printed.contains(&token));
        let err = t.verify(&flip_signature_char(&token), TokenKind::Access);
        let shown = format!(
            "{err:?} {}",
            err.as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        assert!(!shown.contains(&token[..20]), "{shown}");
    }
    for bad in ["x".repeat(31), "hunter2".into()] {
        let msg = config_error(TokenSettings {
            hs256_secret: Some(Secret::new(bad.clone())),
            ..settings(Algorithm::Hs256)
        });
        assert!(!msg.contains(&bad), "{msg}");
    }
}

#[test]
fn algorithm_names_parse_from_config() {
    #[derive(serde::Deserialize)]
    struct C {
        alg: Algorithm,
    }
    for (text, alg) in [
        ("HS256", Algorithm::Hs256),
        ("EdDSA", Algorithm::EdDsa),
        ("RS256", Algorithm::Rs256),
        ("eddsa", Algorithm::EdDsa),
    ] {
        let c: C = serde_json::from_value(json!({ "alg": text })).expect(text);
        assert_eq!(c.alg, alg);
    }
    assert!(serde_json::from_value::<C>(json!({"alg": "none"})).is_err());
    assert_eq!(Algorithm::default(), Algorithm::Hs256);
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary input never panics and is never accepted.
    #[test]
    fn arbitrary_input_is_refused(s in ".{0,300}", dotted in "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,90}") {
        let t = tokens(Algorithm::Hs256);
        prop_assert!(t.verify(&s, TokenKind::Access).is_err());
        prop_assert!(t.verify(&dotted, TokenKind::Access).is_err());
    }

    /// Any single-character change to a genuine token makes it invalid.
    #[test]
    fn any_single_change_is_refused(pos in any::<prop::sample::Index>(), replacement in "[A-Za-z0-9_.=+/-]") {
        let t = tokens(Algorithm::EdDsa);
        let (token, _) = t.issue(draft(), TokenKind::Access).expect("issue");
        let i = pos.index(token.len());
        let mut changed = token.clone().into_bytes();
        changed[i] = replacement.as_bytes()[0];
        prop_assume!(changed != token.as_bytes());
        let changed = String::from_utf8(changed).expect("ascii");
        prop_assert!(t.verify(&changed, TokenKind::Access).is_err());
    }
}

#[test]
fn a_token_with_critical_extensions_is_refused() {
    let t = tokens(Algorithm::Hs256);
    let claims = claims_for(&t, TokenKind::Access);
    let key = EncodingKey::from_secret(HS_SECRET.as_bytes());
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    let plain = jsonwebtoken::encode(&header, &claims, &key).expect("sign");
    assert!(t.verify(&plain, TokenKind::Access).is_ok(), "control");
    for crit in [vec!["b64".to_string()], vec!["exp-ext".to_string()], vec![]] {
        header.crit = Some(crit.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key).expect("sign");
        assert_eq!(
            t.verify(&token, TokenKind::Access),
            Err(TokenError::UnknownCritical),
            "{crit:?}"
        );
    }
}

#[test]
fn tokens_carry_a_millisecond_issue_time_after_every_known_cut() {
    let cutoffs = std::sync::Arc::new(super::cutoffs::TokenCutoffs::new());
    let t = tokens(Algorithm::Hs256).with_cutoffs(cutoffs.clone());
    let draft = || ClaimsDraft {
        sub: "usr_1".into(),
        acc: "acc_1".into(),
        usr: Some("usr_1".into()),
        perm: "member".into(),
        ..ClaimsDraft::default()
    };
    let (token, _) = t.issue(draft(), TokenKind::Session).expect("issue");
    let claims = t.verify(&token, TokenKind::Session).expect("verify");
    let ms = claims.iat_ms.expect("iat_ms");
    assert_eq!(ms.div_euclid(1000), claims.iat, "the same instant");
    assert_eq!(claims.issued_at_ms(), ms);

    // A cut-off later than this clock (another replica's, or this very millisecond): the next
    // token is issued just after it, so the cut does not stop it.
    let cut = super::cutoffs::now_ms() + 5_000;
    cutoffs.record("acc_1", cut);
    let (token, _) = t.issue(draft(), TokenKind::Session).expect("issue");
    let claims = t.verify(&token, TokenKind::Session).expect("verify");
    assert_eq!(claims.iat_ms, Some(cut + 1));
    assert!(!cutoffs.is_cut("acc_1", claims.issued_at_ms()));

    // A token without `iat_ms` counts from the start of its `iat` second.
    let old = Claims {
        iat_ms: None,
        ..claims
    };
    assert_eq!(old.issued_at_ms(), old.iat * 1000);
}
