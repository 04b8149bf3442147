//! The Enkryptify document's flow against `config/examples/enkryptify.toml` as shipped: a user
//! makes an `ek_live_` token on the dashboard's endpoints (shown once), uses it directly as a
//! Bearer token (validation cached), exchanges it for a 15-minute JWT (`{accessToken, expiresIn:
//! 900, tokenType: "Bearer"}`, at most 10 exchanges a minute per token, validated with no store
//! read), and is bound by read vs read-write, by teams / projects / environments and by the
//! user's workspace role. Error bodies are compared byte for byte with the profile's.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use keygate::keys::KeyFormat;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

fn start() -> (Echo, Keygate) {
    let echo = Echo::start();
    let kg = Keygate::start_profile("enkryptify", echo.addr);
    (echo, kg)
}

/// The profile's error body for `code` with `message` (keygate's shape, the document's words).
fn error_body(code: &str, message: &str) -> String {
    format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#)
}

fn user(kg: &Keygate, account: &str, email: &str, role: &str) -> String {
    let r = kg.admin(
        "POST",
        "/admin/v1/users",
        Some(json!({"account_id": account, "email": email, "password": PASSWORD, "role": role})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().expect("user id").to_string()
}

/// The dashboard's login: the session token.
fn login(kg: &Keygate, email: &str) -> String {
    let r = request(
        "POST",
        &kg.url("/v1/auth/login"),
        &[],
        Some(&json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["token"].as_str().expect("token").to_string()
}

/// A token made on the dashboard's Credentials page: (id, plaintext `ek_live_...`).
fn dashboard_token(kg: &Keygate, session: &str, body: Value) -> (String, String) {
    let r = call_with(kg, "POST", "/v1/tokens", Some(session), Some(&body));
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (
        v["id"].as_str().expect("id").to_string(),
        v["key"].as_str().expect("plaintext token").to_string(),
    )
}

fn exchange(kg: &Keygate, token: &str) -> Resp {
    call_with(kg, "POST", "/v1/auth/exchange", Some(token), None)
}

fn jwt(kg: &Keygate, token: &str) -> String {
    let r = exchange(kg, token);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_string()
}

fn store_reads(kg: &Keygate) -> f64 {
    metric(
        kg,
        "keygate_store_call_seconds_count",
        &[("op", "find_credential")],
    )
}

fn cache_hits(kg: &Keygate) -> f64 {
    metric(kg, "keygate_cache_lookups_total", &[("result", "hit")])
}

#[test]
fn a_dashboard_token_is_shown_once_then_used_directly_with_cached_validation() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let user_id = user(&kg, &account, "dev@acme.example", "member");
    let session = login(&kg, "dev@acme.example");

    // "Tokens start with ek_live_ and are shown only once at creation."
    let r = call_with(
        &kg,
        "POST",
        "/v1/tokens",
        Some(&session),
        Some(&json!({"name": "github-actions", "permission": "read_write"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    let token = created["key"].as_str().expect("plaintext").to_string();
    let id = created["id"].as_str().expect("id").to_string();
    assert!(token.starts_with("ek_live_"), "{token}");
    assert_eq!(created["name"], "github-actions");
    assert_eq!(created["permission"], "read_write");
    let listed = call_with(&kg, "GET", "/v1/tokens", Some(&session), None);
    assert_eq!(listed.status, 200, "{}", listed.body);
    let keys = listed.json()["keys"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(keys.len(), 1, "{}", listed.body);
    assert!(keys[0].get("key").is_none(), "{}", listed.body);
    assert!(
        !listed.body.contains(&token),
        "the plaintext is never listed"
    );
    assert_eq!(keys[0]["id"], id.as_str());
    assert_eq!(keys[0]["name"], "github-actions");
    assert_eq!(keys[0]["status"], "active");
    assert!(is_rfc3339_utc(&keys[0]["created_at"]), "{}", listed.body);
    let prefix = keys[0]["display_prefix"].as_str().expect("display_prefix");
    assert!(prefix.starts_with("ek_live_") && token.starts_with(prefix));
    let one = call_with(
        &kg,
        "GET",
        &format!("/v1/tokens/{id}"),
        Some(&session),
        None,
    );
    assert_eq!(one.status, 200, "{}", one.body);
    assert!(!one.body.contains(&token));

    // "Pass the token in the Authorization header on every request".
    let auth = bearer(&token);
    let r = get(&kg.url("/v1/workspace"), &[("authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["path"], "/v1/workspace");
    let h = &seen["headers"];
    assert!(
        h.get("authorization").is_none(),
        "the token stays here: {h}"
    );
    assert!(!r.body.contains(&token));
    assert_eq!(h["x-keygate-key-id"], id.as_str());
    assert_eq!(h["x-keygate-key-name"], "github-actions");
    assert_eq!(h["x-keygate-account-id"], account.as_str());
    assert_eq!(h["x-keygate-user-id"], user_id.as_str());
    assert_eq!(h["x-keygate-auth-method"], "api_key");

    // "The API caches token validation": the next calls are answered from the cache.
    let (reads, hits) = (store_reads(&kg), cache_hits(&kg));
    for _ in 0..3 {
        let r = get(&kg.url("/v1/workspace"), &[("authorization", &auth)]);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(store_reads(&kg), reads, "no store read for a cached token");
    assert_eq!(cache_hits(&kg), hits + 3.0);

    // Refusals, in the profile's bodies, and none reaches the API.
    let before = echo.hits();
    let r = get(&kg.url("/v1/workspace"), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        error_body(
            "missing_credential",
            "Every Enkryptify API request must be authenticated"
        )
    );
    // The Authorization header is the one place a token is read from.
    let r = get(&kg.url("/v1/workspace"), &[("x-api-key", &token)]);
    assert_eq!((r.status, code(&r)), (401, "missing_credential".into()));
    let r = get(
        &kg.url("/v1/workspace"),
        &[("authorization", "Bearer ek_live_xxxxx")],
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        error_body("malformed_credential", "The API token is not valid")
    );
    let unknown = KeyFormat::new("ek_live_", 32).generate();
    let r = call(&kg, "/v1/workspace", unknown.expose());
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        error_body("invalid_key", "The API token is not valid")
    );
    // A session token is for the dashboard's endpoints only.
    let r = get(
        &kg.url("/v1/workspace"),
        &[("authorization", &bearer(&session))],
    );
    assert_eq!((r.status, code(&r)), (401, "invalid_token".into()));
    let r = request(
        "POST",
        &kg.url("/v1/auth/login"),
        &[],
        Some(&json!({"email": "dev@acme.example", "password": "wrong"})),
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        error_body("invalid_credentials", "Invalid credentials")
    );
    assert_eq!(echo.hits(), before);

    // Rotation: a new token with the same rights; the old one works until it is revoked.
    let r = call_with(
        &kg,
        "POST",
        &format!("/v1/tokens/{id}/rotate"),
        Some(&session),
        Some(&json!({"grace_seconds": 3600})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let rotated = r.json();
    let new_token = rotated["key"].as_str().expect("new token").to_string();
    assert!(new_token.starts_with("ek_live_"));
    assert_eq!(rotated["rotated_from"], id.as_str());
    assert_eq!(rotated["permission"], "read_write");
    assert_eq!(call(&kg, "/v1/workspace", &token).status, 200);
    assert_eq!(call(&kg, "/v1/workspace", &new_token).status, 200);

    // Revocation from the dashboard: refused on the very next request.
    let r = call_with(
        &kg,
        "DELETE",
        &format!("/v1/tokens/{id}"),
        Some(&session),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let before = echo.hits();
    let r = call(&kg, "/v1/workspace", &token);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        error_body("key_revoked", "The API token has been revoked")
    );
    assert_eq!(echo.hits(), before);
    assert_eq!(call(&kg, "/v1/workspace", &new_token).status, 200);
}

#[test]
fn the_exchange_gives_a_15_minute_jwt_validated_statelessly_and_limited_to_10_a_minute() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let (key_id, token) = kg.create_key(&account, json!({"name": "high-volume"}));
    assert!(token.starts_with("ek_live_"));

    // `curl -X POST .../v1/auth/exchange -H "Authorization: Bearer ek_live_xxxxx"`
    let r = exchange(&kg, &token);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("ratelimit-limit"), Some("10"));
    assert_eq!(r.header("ratelimit-remaining"), Some("9"));
    let access = r.json()["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_string();
    assert_eq!(
        r.body,
        format!(r#"{{"accessToken":"{access}","expiresIn":900,"tokenType":"Bearer"}}"#)
    );
    assert!(access.starts_with("eyJ"), "{access}");
    // A JWT for 15 minutes, signed with the profile's secret, for this token's key.
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["enkryptify-api"]);
    validation.set_issuer(&["enkryptify"]);
    let claims = jsonwebtoken::decode::<Value>(
        &access,
        &jsonwebtoken::DecodingKey::from_secret(PROFILE_JWT_SECRET.as_bytes()),
        &validation,
    )
    .expect("the JWT verifies")
    .claims;
    assert_eq!(
        claims["exp"]
            .as_i64()
            .zip(claims["iat"].as_i64())
            .map(|(e, i)| e - i),
        Some(900)
    );
    assert_eq!(claims["acc"], account.as_str());

    // "Send the JWT in the Authorization header for subsequent calls". "The JWT is validated
    // statelessly with no database hit per request": no store read, not even a cache lookup.
    let lookups = |kg: &Keygate| metric(kg, "keygate_cache_lookups_total", &[]);
    let (reads, looked) = (store_reads(&kg), lookups(&kg));
    for _ in 0..3 {
        let r = call(&kg, "/v1/workspace", &access);
        assert_eq!(r.status, 200, "{}", r.body);
        let h = &r.json()["headers"];
        assert_eq!(h["x-keygate-auth-method"], "jwt");
        assert_eq!(h["x-keygate-key-id"], key_id.as_str());
        assert_eq!(h["x-keygate-account-id"], account.as_str());
        assert!(h.get("authorization").is_none(), "{h}");
    }
    assert_eq!(store_reads(&kg), reads);
    assert_eq!(lookups(&kg), looked);

    // Only an ek_live_ token is exchanged, not a JWT.
    let r = exchange(&kg, &access);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        error_body("malformed_credential", "The API token is not valid")
    );

    // "The exchange endpoint is rate-limited to 10 requests per minute per token".
    for i in 2..=10 {
        let r = exchange(&kg, &token);
        assert_eq!(r.status, 200, "exchange {i}: {}", r.body);
        assert_eq!(
            r.header("ratelimit-remaining"),
            Some((10 - i).to_string().as_str()),
            "exchange {i}"
        );
    }
    let hits = echo.hits();
    let r = exchange(&kg, &token);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body, error_body("rate_limited", "Rate limit exceeded"));
    let retry = r
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .expect("Retry-After in seconds");
    // The window counts in 60 slots and errs on refusing: at most one slot (a second) late.
    assert!((1..=61).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    // Per token: another token exchanges, and the limit is the exchange's, not the API's.
    let (_, other) = kg.create_key(&account, json!({"name": "other"}));
    assert_eq!(exchange(&kg, &other).status, 200);
    assert_eq!(call(&kg, "/v1/workspace", &token).status, 200);
    assert_eq!(call(&kg, "/v1/workspace", &access).status, 200);
    assert_eq!(echo.hits(), hits + 2, "exchanges never reach the API");

    // Revoking the ek_live_ token ends its JWTs at once, stateless as they are.
    let r = kg.admin("POST", &format!("/admin/v1/keys/{key_id}/revoke"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(&kg, "/v1/workspace", &access);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        error_body("key_revoked", "The API token has been revoked")
    );
}

#[test]
fn when_expires_in_runs_out_the_jwt_is_refused_and_a_new_exchange_is_needed() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    // A token that itself expires in a few seconds: its JWT dies no later.
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(3);
    let (_, short) = kg.create_key(
        &account,
        json!({"name": "short", "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}),
    );
    let r = exchange(&kg, &short);
    assert_eq!(r.status, 200, "{}", r.body);
    let expires_in = r.json()["expiresIn"].as_i64().expect("expiresIn");
    assert!((1..=3).contains(&expires_in), "expiresIn {expires_in}");
    let access = r.json()["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_string();
    // The JWT's `exp` is its token's expiry: in that very second the token's own expiry may
    // answer first (key_expired), then the JWT's (token_expired).
    let expired = error_body(
        "token_expired",
        "The JWT has expired: when expiresIn runs out, exchange again",
    );
    let key_expired = error_body("key_expired", "The API token has expired");
    wait_until("the JWT to expire", Duration::from_secs(10), || {
        let r = call(&kg, "/v1/workspace", &access);
        match r.status {
            200 => false,
            401 if r.body == key_expired => false,
            _ => {
                assert_eq!((r.status, r.body.as_str()), (401, expired.as_str()));
                true
            }
        }
    });
    // The expired ek_live_ token cannot be exchanged again; a live one can.
    let r = exchange(&kg, &short);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        error_body("key_expired", "The API token has expired")
    );
    let (_, live) = kg.create_key(&account, json!({"name": "live"}));
    let fresh = jwt(&kg, &live);
    assert_eq!(call(&kg, "/v1/workspace", &fresh).status, 200);
}

#[test]
fn effective_permission_is_the_tokens_permission_and_scope_and_the_users_role() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let member = user(&kg, &account, "member@acme.example", "member");
    let session = login(&kg, "member@acme.example");
    let read_only_body = error_body(
        "read_only_key",
        "Write operations are rejected for read-only tokens",
    );
    let forbidden_body = error_body(
        "resource_forbidden",
        "The token's scope does not include this team, project or environment",
    );

    // "Permission: read or read-write. Write operations are rejected for read-only tokens."
    let (_, read) = dashboard_token(&kg, &session, json!({"name": "ro", "permission": "read"}));
    let (_, write) = dashboard_token(
        &kg,
        &session,
        json!({"name": "rw", "permission": "read_write"}),
    );
    let secret = json!({"key": "DATABASE_URL", "value": "postgres://..."});
    assert_eq!(call(&kg, "/v1/workspace", &read).status, 200);
    let hits = echo.hits();
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = call_with(
            &kg,
            method,
            "/v1/projects/p1/secrets",
            Some(&read),
            Some(&secret),
        );
        assert_eq!(r.status, 403, "{method}: {}", r.body);
        assert_eq!(r.body, read_only_body, "{method}");
    }
    let read_jwt = jwt(&kg, &read);
    let r = call_with(
        &kg,
        "POST",
        "/v1/projects/p1/secrets",
        Some(&read_jwt),
        Some(&secret),
    );
    assert_eq!((r.status, r.body.as_str()), (403, read_only_body.as_str()));
    assert_eq!(echo.hits(), hits, "no write reached the API");
    let r = call_with(
        &kg,
        "POST",
        "/v1/projects/p1/secrets",
        Some(&write),
        Some(&secret),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["body"], secret.to_string());

    // "Scope: full workspace or limited to specific teams / projects / environments."
    let (_, scoped) = dashboard_token(
        &kg,
        &session,
        json!({"name": "prod-only", "permission": "read",
               "resources": {"projects": ["my-project"], "environments": ["production"]}}),
    );
    let scoped_jwt = jwt(&kg, &scoped);
    for credential in [&scoped, &scoped_jwt] {
        for (path, status) in [
            ("/v1/projects/my-project", 200),
            ("/v1/projects/my-project/environments", 200),
            ("/v1/projects/my-project/environments/production", 200),
            (
                "/v1/projects/my-project/environments/production/secrets",
                200,
            ),
            ("/v1/projects/my-project/environments/staging", 403),
            ("/v1/projects/my-project/environments/staging/secrets", 403),
            ("/v1/projects/other-project", 403),
            (
                "/v1/projects/other-project/environments/production/secrets",
                403,
            ),
            // Teams are not limited on this token.
            ("/v1/teams/platform", 200),
        ] {
            let r = call(&kg, path, credential);
            assert_eq!(r.status, status, "{path}: {}", r.body);
            if status == 403 {
                assert_eq!(r.body, forbidden_body, "{path}");
            }
        }
    }
    let (_, team) = dashboard_token(
        &kg,
        &session,
        json!({"name": "platform", "resources": {"teams": ["platform"]}}),
    );
    assert_eq!(call(&kg, "/v1/teams/platform/members", &team).status, 200);
    let r = call(&kg, "/v1/teams/sales/members", &team);
    assert_eq!((r.status, r.body.as_str()), (403, forbidden_body.as_str()));
    assert_eq!(call(&kg, "/v1/projects/any/secrets", &team).status, 200);

    // "the underlying user's workspace role": lowering it narrows the user's tokens at once,
    // and cuts the JWTs they were exchanged for.
    let write_jwt = jwt(&kg, &write);
    let r = kg.admin(
        "PATCH",
        &format!("/admin/v1/users/{member}"),
        Some(json!({"role": "read_only"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call_with(
        &kg,
        "POST",
        "/v1/projects/p1/secrets",
        Some(&write),
        Some(&secret),
    );
    assert_eq!((r.status, r.body.as_str()), (403, read_only_body.as_str()));
    assert_eq!(call(&kg, "/v1/workspace", &write).status, 200);
    assert_eq!(call(&kg, "/v1/workspace", &write_jwt).status, 401);
    let narrowed = jwt(&kg, &write);
    let r = call_with(
        &kg,
        "POST",
        "/v1/projects/p1/secrets",
        Some(&narrowed),
        Some(&secret),
    );
    assert_eq!((r.status, r.body.as_str()), (403, read_only_body.as_str()));

    // A read-only user cannot make a read-write token on the dashboard.
    user(&kg, &account, "viewer@acme.example", "read_only");
    let viewer = login(&kg, "viewer@acme.example");
    let r = call_with(
        &kg,
        "POST",
        "/v1/tokens",
        Some(&viewer),
        Some(&json!({"name": "rw", "permission": "read_write"})),
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body,
        error_body(
            "read_only_key",
            "A read-only user cannot create a read-write key"
        )
    );
}

/// The profile as shipped passes `check-config` once its three secrets are set, and names the
/// one that is missing otherwise.
#[test]
fn check_config_accepts_the_profile() {
    let path = profile_path("enkryptify");
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |jwt_secret: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keygate"));
        c.arg("check-config")
            .arg(&path)
            .current_dir(dir.path())
            .env("KEYGATE_PEPPER", PEPPER)
            .env("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("KEYGATE_JWT_SECRET");
        if let Some(s) = jwt_secret {
            c.env("KEYGATE_JWT_SECRET", s);
        }
        let out = c.output().expect("run check-config");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (status, text) = run(Some(PROFILE_JWT_SECRET));
    assert_eq!(status, Some(0), "{text}");
    assert!(text.contains(": ok"), "{text}");
    assert!(!text.contains("warning"), "{text}");
    let (status, text) = run(None);
    assert_eq!(status, Some(2), "{text}");
    assert!(text.contains("KEYGATE_JWT_SECRET"), "{text}");
}
