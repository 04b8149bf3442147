//! Encrata's "API Key Flow" (seed 000) against `config/examples/encrata.toml` as shipped, as
//! an agent would follow it: log in, create a named key with the session token, operate with the
//! key as a Bearer token; credits (402), a bad body (422), the rate limit (429 + Retry-After),
//! revocation (401) and a suspended account (all keys invalidated), with the error bodies
//! compared byte for byte.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

const PASSWORD: &str = "password123";
const UNAUTHORIZED: &str = "Invalid credentials / expired key";

fn error(code: &str, message: &str) -> String {
    format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#)
}

/// The operator's part: an account with `credits` and a user who can log in.
fn customer(kg: &Keygate, email: &str, credits: i64) -> String {
    let account = kg.create_account("agent-co");
    if credits > 0 {
        admin_ok(
            kg,
            "POST",
            &format!("/admin/v1/accounts/{account}/credits"),
            Some(json!({ "delta": credits })),
        );
    }
    admin_ok(
        kg,
        "POST",
        "/admin/v1/users",
        Some(json!({"account_id": account, "email": email, "password": PASSWORD})),
    );
    account
}

/// "Step 1: Authenticate" -> the session token.
fn login(kg: &Keygate, email: &str) -> String {
    let r = request(
        "POST",
        &kg.url("/api/auth/login"),
        &[],
        Some(&json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["user"]["email"], email);
    assert!(v["user"]["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("usr_")));
    let token = v["token"].as_str().expect("token").to_string();
    // "eyJhbGciOiJIUzI1NiIs...": a JWT signed with HS256.
    let header = token.split('.').next().expect("JWT header");
    let header: Value =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .expect("JWT header JSON");
    assert_eq!(header["alg"], "HS256");
    assert_eq!(token.split('.').count(), 3);
    token
}

/// "Step 2: Create an API key" -> (key id, key).
fn create_key(kg: &Keygate, session: &str, name: &str) -> (String, String) {
    let r = call_with(
        kg,
        "POST",
        "/api/keys",
        Some(session),
        Some(&json!({"name": name})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    assert_eq!(v["name"], name);
    assert!(is_rfc3339_utc(&v["created_at"]), "{v}");
    assert_eq!(v["expires_at"], Value::Null, "no expiry");
    let key = v["key"].as_str().expect("key").to_string();
    // "enc_live_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    assert_eq!(key.len(), "enc_live_".len() + 32, "{key}");
    assert!(key.starts_with("enc_live_"), "{key}");
    assert!(key["enc_live_".len()..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric()));
    (v["id"].as_str().expect("id").to_string(), key)
}

fn lookup(kg: &Keygate, key: &str, body: &Value) -> Resp {
    call_with(kg, "POST", "/api/agent/lookup", Some(key), Some(body))
}

fn credits(kg: &Keygate, key: &str) -> i64 {
    let r = call(kg, "/api/credits", key);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["credits"].as_i64().expect("credits")
}

#[test]
fn the_documented_flow_login_key_lookup() {
    let echo = Echo::start();
    let kg = Keygate::start_profile("encrata", echo.addr);
    customer(&kg, "user@example.com", 3);

    let session = login(&kg, "user@example.com");
    let (_, key) = create_key(&kg, &session, "my-agent-key");

    // "The API key is returned exactly once": the list shows no secret.
    let r = call(&kg, "/api/keys", &session);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains(&key), "{}", r.body);
    assert_eq!(r.json()["keys"][0]["name"], "my-agent-key");

    // "Step 3: Operate" — "Immediate access".
    let target = json!({"email": "target@example.com"});
    let r = lookup(&kg, &key, &target);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["path"], "/api/agent/lookup");
    assert_eq!(seen["body"], target.to_string());
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    assert!(seen["headers"]["x-keygate-key-id"]
        .as_str()
        .is_some_and(|k| k.starts_with("key_")));
    assert_eq!(seen["headers"]["x-keygate-key-name"], "my-agent-key");
    assert_eq!(seen["headers"]["x-keygate-credits-remaining"], "2");
    // "each lookup deducts from your balance"; "agents should check credits periodically".
    assert_eq!(credits(&kg, &key), 2);

    // "All endpoints - email, phone, ...": the same key and price.
    let r = call_with(
        &kg,
        "POST",
        "/api/agent/phone",
        Some(&key),
        Some(&json!({"phone": "+1"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(credits(&kg, &key), 1);

    // "422 Invalid request body — Fix request format": before any credit, never upstream.
    let hits = echo.hits();
    let r = lookup(&kg, &key, &json!({"email": "target"}));
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body,
        r#"{"error":{"code":"invalid_body","message":"Invalid request body","detail":"/email: value is not a \"email\""}}"#
    );
    let r = lookup(&kg, &key, &json!({"mail": "target@example.com"}));
    assert_eq!(
        r.body,
        r#"{"error":{"code":"invalid_body","message":"Invalid request body","detail":"/email: \"email\" is a required property"}}"#
    );
    assert_eq!(echo.hits(), hits);
    assert_eq!(credits(&kg, &key), 1);

    // "Credits exhausted: 402 responses until topped up".
    assert_eq!(lookup(&kg, &key, &target).status, 200);
    let r = lookup(&kg, &key, &target);
    assert_eq!(r.status, 402);
    assert_eq!(
        r.body,
        error("insufficient_credits", "Insufficient credits")
    );
    assert_eq!(echo.hits(), hits + 1);

    // "401 Invalid credentials / expired key" for a wrong password, a missing or unknown key.
    let r = request(
        "POST",
        &kg.url("/api/auth/login"),
        &[],
        Some(&json!({"email": "user@example.com", "password": "wrong"})),
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.body, error("invalid_credentials", UNAUTHORIZED));
    let r = call_with(&kg, "POST", "/api/agent/lookup", None, Some(&target));
    assert_eq!(r.status, 401);
    assert_eq!(r.body, error("missing_credential", UNAUTHORIZED));
    let unknown = format!("enc_live_{}", "x".repeat(32));
    let r = lookup(&kg, &unknown, &target);
    assert_eq!(r.status, 401);
    assert_eq!(r.body, error("invalid_key", UNAUTHORIZED));
    // The session token is for the key endpoints, not for lookups.
    let r = lookup(&kg, &session, &target);
    assert_eq!(r.status, 401, "{}", r.body);
}

#[test]
fn revoked_keys_and_suspended_accounts_answer_401() {
    let echo = Echo::start();
    let kg = Keygate::start_profile("encrata", echo.addr);
    let account = customer(&kg, "ops@example.com", 100);
    let session = login(&kg, "ops@example.com");
    let (id, key) = create_key(&kg, &session, "first");
    let (_, second) = create_key(&kg, &session, "second");
    let target = json!({"email": "target@example.com"});
    assert_eq!(lookup(&kg, &key, &target).status, 200);

    // "Key revoked (dashboard/API): 401 on all subsequent requests".
    let r = call_with(
        &kg,
        "DELETE",
        &format!("/api/keys/{id}"),
        Some(&session),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let hits = echo.hits();
    let r = lookup(&kg, &key, &target);
    assert_eq!(r.status, 401);
    assert_eq!(r.body, error("key_revoked", UNAUTHORIZED));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(echo.hits(), hits);
    assert_eq!(lookup(&kg, &second, &target).status, 200);

    // "Account suspended: All keys invalidated".
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{account}/suspend"),
        Some(json!({"revoke_keys": true})),
    );
    let r = lookup(&kg, &second, &target);
    assert_eq!(r.status, 401);
    assert_eq!(r.body, error("key_revoked", UNAUTHORIZED));
    // Reactivated, the keys stay revoked.
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{account}/reactivate"),
        None,
    );
    assert_eq!(lookup(&kg, &second, &target).status, 401);
}

#[test]
fn a_plain_suspension_also_answers_401() {
    let echo = Echo::start();
    let kg = Keygate::start_profile("encrata", echo.addr);
    let account = customer(&kg, "s@example.com", 10);
    let session = login(&kg, "s@example.com");
    let (_, key) = create_key(&kg, &session, "k");
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{account}/suspend"),
        None,
    );
    let r = lookup(&kg, &key, &json!({"email": "target@example.com"}));
    assert_eq!(r.status, 401);
    assert_eq!(r.body, error("account_suspended", UNAUTHORIZED));
}

#[test]
fn rate_limited_lookups_answer_429_with_retry_after() {
    let echo = Echo::start();
    let kg = Keygate::start_profile("encrata", echo.addr);
    customer(&kg, "r@example.com", 1000);
    let session = login(&kg, "r@example.com");
    let (_, key) = create_key(&kg, &session, "busy");
    let target = json!({"email": "target@example.com"});
    // A burst of 20 at 10 a second: well before 200 requests one is refused.
    let limited = (0..200)
        .map(|_| lookup(&kg, &key, &target))
        .find(|r| r.status == 429)
        .expect("a 429 within 200 lookups");
    assert_eq!(limited.body, error("rate_limited", "Rate limited"));
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry >= 1, "{retry}");
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
}

#[test]
fn check_config_accepts_the_profile() {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("check-config")
        .arg(profile_path("encrata"))
        .env("KEYGATE_PEPPER", "a-pepper-of-enough-length-0123456789")
        .env(
            "KEYGATE_ADMIN_TOKEN",
            "an-admin-token-of-enough-length-0123",
        )
        .output()
        .expect("check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("encrata.toml: ok\n"),
        "{stderr}"
    );
}
