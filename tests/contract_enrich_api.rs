//! The Enrich API's Authentication page (seed 003) against `config/examples/enrich-api.toml` as
//! shipped: `sk_` keys in `x-api-key` or `Authorization: Bearer`, every error body the page
//! prints compared byte for byte (401 missing or invalid, 401 disabled, 403 suspended, 403
//! organization gone, 429), rotation without downtime, the wallet's balance and history, and
//! credits. Keys are managed as the dashboard would, through the admin API.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use keygate::keys::KeyFormat;
use serde_json::{json, Value};

/// "401 — Missing or invalid key", as the page prints it.
const MISSING_OR_INVALID: &str = r#"{
  "error": "This endpoint requires API key authentication. Provide key via x-api-key header or Authorization: Bearer sk_*"
}"#;

/// "401 — Key disabled".
const DISABLED: &str = r#"{
  "error": "API key is disabled. Re-enable it from the dashboard."
}"#;

/// "403 — Account suspended".
const SUSPENDED: &str = r#"{
  "error": "Your account has been suspended. API access is disabled."
}"#;

/// "403 — Organization not found".
const ORGANIZATION_GONE: &str = r#"{
  "error": "The organization associated with this API key no longer exists"
}"#;

/// "429 — Rate limited".
const RATE_LIMITED: &str = r#"{
  "error": "API key rate limit exceeded"
}"#;

const LOOKUP: &str = "/api/v3/email-validation";
const BATCH_STATUS: &str = "/api/v3/email-validation/batch/batch_abc123";
const BALANCE: &str = "/api/v3/wallets/balance";
const TRANSACTIONS: &str = "/api/v3/wallets/transactions";

fn start() -> (Echo, Keygate) {
    let echo = Echo::start();
    let kg = Keygate::start_profile("enrich-api", echo.addr);
    (echo, kg)
}

/// An organization (account) with `credits`, and a key for it: (account, key id, key).
fn organization(kg: &Keygate, credits: i64) -> (String, String, String) {
    let account = kg.create_account("acme");
    if credits > 0 {
        admin_ok(
            kg,
            "POST",
            &format!("/admin/v1/accounts/{account}/credits"),
            Some(json!({ "delta": credits })),
        );
    }
    let (id, key) = kg.create_key(&account, json!({ "name": "production" }));
    (account, id, key)
}

/// `method path` with the key in the recommended `x-api-key` header.
fn with_x_api_key(kg: &Keygate, method: &str, path: &str, key: &str) -> Resp {
    let body = (method == "POST").then(|| json!({ "email": "jane@example.com" }));
    request(method, &kg.url(path), &[("x-api-key", key)], body.as_ref())
}

/// The request as the echo upstream received it.
fn received(r: &Resp) -> Value {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn an_sk_key_in_either_header_reaches_the_api_with_the_callers_identity_and_no_key() {
    let (echo, kg) = start();
    let (account, id, key) = organization(&kg, 10);
    // "Keys start with the sk_ prefix: sk_prod_a1b2c3d4e5f6..."
    assert!(key.starts_with("sk_prod_"), "{key}");
    assert!(
        key["sk_prod_".len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric()),
        "{key}"
    );

    // "x-api-key header (recommended)"
    let r = with_x_api_key(&kg, "POST", LOOKUP, &key);
    let seen = received(&r);
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], LOOKUP);
    assert_eq!(seen["body"], r#"{"email":"jane@example.com"}"#);
    let headers = &seen["headers"];
    assert_eq!(headers["x-keygate-key-id"], id.as_str());
    assert_eq!(headers["x-keygate-account-id"], account.as_str());
    assert_eq!(headers["x-keygate-key-name"], "production");
    assert_eq!(headers["x-keygate-auth-method"], "api_key");
    assert_eq!(headers["x-keygate-credits-remaining"], "9");
    assert!(headers.get("x-api-key").is_none(), "{headers}");
    assert!(!r.body.contains(&key), "the key reached the upstream");
    // The shipped per-key limit, reported on every answer.
    assert_eq!(r.header("ratelimit-limit"), Some("20"));
    assert!(r.header("ratelimit-remaining").is_some());

    // "Authorization: Bearer header"
    let r = request(
        "POST",
        &kg.url(LOOKUP),
        &[("authorization", &bearer(&key))],
        Some(&json!({ "email": "john@example.com" })),
    );
    let seen = received(&r);
    assert_eq!(seen["headers"]["x-keygate-key-id"], id.as_str());
    assert_eq!(seen["headers"]["x-keygate-credits-remaining"], "8");
    assert!(seen["headers"].get("authorization").is_none(), "{}", r.body);
    assert!(!r.body.contains(&key), "the key reached the upstream");

    // Polling a batch is "Free — no credits consumed".
    let seen = received(&with_x_api_key(&kg, "GET", BATCH_STATUS, &key));
    assert_eq!(seen["path"], BATCH_STATUS);
    assert!(seen["headers"].get("x-keygate-credits-remaining").is_none());
    assert_eq!(echo.hits(), 3);

    let r = with_x_api_key(&kg, "GET", BALANCE, &key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, r#"{"success":true,"data":{"balance":8}}"#);
    assert_eq!(echo.hits(), 3, "the wallet is answered by keygate");
}

#[test]
fn every_missing_or_invalid_key_gets_the_documented_401() {
    let (echo, kg) = start();
    let (_, id, key) = organization(&kg, 10);
    let unknown = KeyFormat::new("sk_prod_", 32).generate();
    let typo = format!("{}x", &key[..key.len() - 1]);

    // "Returned when no API key is provided, the key doesn't start with sk_, or the key is
    // invalid."
    let cases: [(&str, Vec<(&str, &str)>); 7] = [
        ("no key", vec![]),
        ("an empty x-api-key", vec![("x-api-key", "")]),
        ("not sk_", vec![("x-api-key", "pk_live_a1b2c3d4e5f6")]),
        (
            "not sk_, as Bearer",
            vec![("authorization", "Bearer ee_live_abc")],
        ),
        ("a typo", vec![("x-api-key", &typo)]),
        ("unknown", vec![("x-api-key", unknown.expose())]),
        (
            "Basic, not Bearer",
            vec![("authorization", "Basic c2tfcHJvZA==")],
        ),
    ];
    for (what, headers) in &cases {
        let r = request("GET", &kg.url(BATCH_STATUS), headers, None);
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.body, MISSING_OR_INVALID, "{what}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    }
    // The same on a paid route and on keygate's own wallet endpoints.
    for (method, path) in [("POST", LOOKUP), ("GET", BALANCE), ("GET", TRANSACTIONS)] {
        let r = request(method, &kg.url(path), &[("x-api-key", &typo)], None);
        assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
        assert_eq!(r.body, MISSING_OR_INVALID, "{method} {path}");
    }
    assert_eq!(echo.hits(), 0, "no refused request reaches the upstream");

    // "Revoke compromised keys immediately": from the next request on, it is an invalid key.
    assert_eq!(with_x_api_key(&kg, "GET", BATCH_STATUS, &key).status, 200);
    admin_ok(&kg, "POST", &format!("/admin/v1/keys/{id}/revoke"), None);
    let r = with_x_api_key(&kg, "GET", BATCH_STATUS, &key);
    assert_eq!((r.status, r.body.as_str()), (401, MISSING_OR_INVALID));
    assert_eq!(echo.hits(), 1);
}

#[test]
fn a_disabled_key_gets_its_own_401_until_it_is_re_enabled() {
    let (echo, kg) = start();
    let (_, id, key) = organization(&kg, 10);
    assert_eq!(with_x_api_key(&kg, "POST", LOOKUP, &key).status, 200);

    // "Returned when the API key has been disabled in the dashboard."
    admin_ok(&kg, "POST", &format!("/admin/v1/keys/{id}/disable"), None);
    for (method, path) in [("POST", LOOKUP), ("GET", BATCH_STATUS), ("GET", BALANCE)] {
        let r = with_x_api_key(&kg, method, path, &key);
        assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
        assert_eq!(r.body, DISABLED, "{method} {path}");
    }
    let r = request(
        "GET",
        &kg.url(BATCH_STATUS),
        &[("authorization", &bearer(&key))],
        None,
    );
    assert_eq!((r.status, r.body.as_str()), (401, DISABLED));
    assert_eq!(echo.hits(), 1);

    // "Re-enable it from the dashboard."
    admin_ok(&kg, "POST", &format!("/admin/v1/keys/{id}/enable"), None);
    assert_eq!(with_x_api_key(&kg, "POST", LOOKUP, &key).status, 200);
    assert_eq!(echo.hits(), 2);
}

#[test]
fn a_suspended_account_and_a_deleted_organization_get_their_403s() {
    let (echo, kg) = start();
    let (account, _, key) = organization(&kg, 10);
    let (_, _, other_key) = organization(&kg, 10);

    // "Returned when the account associated with the API key has been suspended."
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{account}/suspend"),
        None,
    );
    for (method, path) in [("POST", LOOKUP), ("GET", BATCH_STATUS), ("GET", BALANCE)] {
        let r = with_x_api_key(&kg, method, path, &key);
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert_eq!(r.body, SUSPENDED, "{method} {path}");
    }
    assert_eq!(echo.hits(), 0);
    // Another organization's keys are untouched.
    assert_eq!(with_x_api_key(&kg, "POST", LOOKUP, &other_key).status, 200);

    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{account}/reactivate"),
        None,
    );
    assert_eq!(with_x_api_key(&kg, "POST", LOOKUP, &key).status, 200);
    assert_eq!(echo.hits(), 2);

    // "Returned when the organization linked to the API key no longer exists."
    admin_ok(
        &kg,
        "DELETE",
        &format!("/admin/v1/accounts/{account}"),
        None,
    );
    for (method, path) in [("POST", LOOKUP), ("GET", BATCH_STATUS), ("GET", BALANCE)] {
        let r = with_x_api_key(&kg, method, path, &key);
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert_eq!(r.body, ORGANIZATION_GONE, "{method} {path}");
    }
    assert_eq!(echo.hits(), 2);
}

#[test]
fn a_key_past_its_rate_limit_gets_429_with_retry_after() {
    let (echo, kg) = start();
    let (_, id, key) = organization(&kg, 10);
    // "Returned when the API key has exceeded its rate limit": this key's own limit, two
    // requests and then one an hour.
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/keys/{id}"),
        Some(json!({ "rate_limit": { "requests": 1, "per_seconds": 3600, "burst": 2 } })),
    );
    for _ in 0..2 {
        let r = with_x_api_key(&kg, "GET", BATCH_STATUS, &key);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("ratelimit-limit"), Some("2"));
    }
    for (method, path) in [("GET", BATCH_STATUS), ("POST", LOOKUP)] {
        let r = with_x_api_key(&kg, method, path, &key);
        assert_eq!(r.status, 429, "{method} {path}: {}", r.body);
        assert_eq!(r.body, RATE_LIMITED, "{method} {path}");
        let retry: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("Retry-After in whole seconds: {:?}", r.headers));
        assert!((1..=3600).contains(&retry), "Retry-After {retry}");
        assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    }
    assert_eq!(echo.hits(), 2);
    // A refused lookup is not charged.
    let r = with_x_api_key(&kg, "GET", BALANCE, &key);
    assert_eq!(r.body, r#"{"success":true,"data":{"balance":10}}"#);

    // Another key keeps its own bucket.
    let (_, other) = kg.create_key(&kg.create_account("other"), json!({ "name": "other" }));
    assert_eq!(with_x_api_key(&kg, "GET", BATCH_STATUS, &other).status, 200);
}

#[test]
fn rotation_keeps_the_old_key_working_until_it_is_revoked() {
    let (echo, kg) = start();
    let (_, old_id, old_key) = organization(&kg, 10);

    // "You can rotate keys from the dashboard without downtime — the old key stays active until
    // you revoke it."
    let rotated = admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/keys/{old_id}/rotate"),
        None,
    );
    let new_key = rotated["key"]
        .as_str()
        .expect("the new key, once")
        .to_string();
    let new_id = rotated["id"].as_str().expect("new id").to_string();
    assert!(new_key.starts_with("sk_prod_") && new_key != old_key);
    assert_eq!(rotated["name"], "production");

    for (key, id) in [(&old_key, &old_id), (&new_key, &new_id)] {
        let seen = received(&with_x_api_key(&kg, "POST", LOOKUP, key));
        assert_eq!(seen["headers"]["x-keygate-key-id"], id.as_str());
    }
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/keys/{old_id}/revoke"),
        None,
    );
    let r = with_x_api_key(&kg, "POST", LOOKUP, &old_key);
    assert_eq!((r.status, r.body.as_str()), (401, MISSING_OR_INVALID));
    assert_eq!(with_x_api_key(&kg, "POST", LOOKUP, &new_key).status, 200);
    assert_eq!(echo.hits(), 3);
}

#[test]
fn the_wallet_shows_balance_and_history_and_an_empty_wallet_gets_402() {
    let (echo, kg) = start();
    let (account, _, key) = organization(&kg, 2);

    assert_eq!(with_x_api_key(&kg, "POST", LOOKUP, &key).status, 200);
    // Charged only when the upstream answers 2xx: a failed lookup gives its credit back.
    let r = with_x_api_key(&kg, "POST", "/api/v3/email-finder/status/500", &key);
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(with_x_api_key(&kg, "POST", LOOKUP, &key).status, 200);

    // Out of credits: 402 in the page's error envelope, and the upstream is not asked.
    let r = with_x_api_key(&kg, "POST", LOOKUP, &key);
    assert_eq!(r.status, 402, "{}", r.body);
    assert_eq!(r.body, "{\n  \"error\": \"Insufficient credits\"\n}");
    let r = with_x_api_key(&kg, "POST", "/api/v3/email-validation/batch", &key);
    assert_eq!(r.status, 402, "a batch needs credits too: {}", r.body);
    assert_eq!(echo.hits(), 3);
    // Reads stay free.
    assert_eq!(with_x_api_key(&kg, "GET", BATCH_STATUS, &key).status, 200);

    // "Get your credit balance"
    let r = with_x_api_key(&kg, "GET", BALANCE, &key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, r#"{"success":true,"data":{"balance":0}}"#);

    // "Get transaction history": the top-up, two charges, and the refund, oldest first.
    let r = request(
        "GET",
        &kg.url(TRANSACTIONS),
        &[("authorization", &bearer(&key))],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .starts_with(r#"{"success":true,"data":{"transactions":[{"#),
        "{}",
        r.body
    );
    let data = &r.json()["data"];
    let items = data["transactions"].as_array().expect("transactions");
    let deltas: Vec<i64> = items.iter().filter_map(|i| i["delta"].as_i64()).collect();
    let sum: i64 = deltas.iter().sum();
    assert_eq!(deltas.first(), Some(&2), "{}", r.body);
    assert_eq!(deltas.iter().filter(|d| **d == -1).count(), 3, "{}", r.body);
    assert_eq!(sum, 0, "{}", r.body);
    assert_eq!(
        items.last().map(|i| i["balance_after"].clone()),
        Some(json!(0))
    );
    assert_eq!(
        data["pagination"],
        json!({ "nextCursor": null, "hasMore": false })
    );

    // Paged: `nextCursor` goes back as `after`.
    let r = with_x_api_key(&kg, "GET", &format!("{TRANSACTIONS}?limit=2"), &key);
    let data = &r.json()["data"];
    assert_eq!(data["transactions"].as_array().map(Vec::len), Some(2));
    assert_eq!(data["pagination"]["hasMore"], true);
    let cursor = data["pagination"]["nextCursor"]
        .as_str()
        .expect("a cursor")
        .to_string();
    let r = with_x_api_key(
        &kg,
        "GET",
        &format!("{TRANSACTIONS}?limit=2&after={cursor}"),
        &key,
    );
    let data = &r.json()["data"];
    assert_eq!(data["transactions"].as_array().map(Vec::len), Some(2));
    let r = with_x_api_key(&kg, "GET", &format!("{TRANSACTIONS}?limit=0"), &key);
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body, "{\n  \"error\": \"Invalid request body\"\n}");

    // The operator's view agrees.
    let v = admin_ok(
        &kg,
        "GET",
        &format!("/admin/v1/accounts/{account}/credits"),
        None,
    );
    assert_eq!(v["balance"], 0);
    assert_eq!(echo.hits(), 4);
}

#[test]
fn a_members_key_carries_the_members_role() {
    let (echo, kg) = start();
    let (account, _, _) = organization(&kg, 10);
    let r = kg.admin(
        "POST",
        "/admin/v1/users",
        Some(json!({
            "account_id": account,
            "email": "viewer@example.com",
            "password": "password123",
            "role": "read_only",
        })),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let user = r.json()["id"].as_str().expect("user id").to_string();
    // "Keys are scoped to your organization and carry member-level permissions."
    let (_, key) = kg.create_key(&account, json!({ "name": "viewer", "user_id": user }));

    let seen = received(&with_x_api_key(&kg, "GET", BATCH_STATUS, &key));
    assert_eq!(seen["headers"]["x-keygate-user-id"], user.as_str());
    let r = with_x_api_key(&kg, "POST", LOOKUP, &key);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.body,
        "{\n  \"error\": \"Your role does not allow this request\"\n}"
    );
    assert_eq!(echo.hits(), 1);
}

#[test]
fn paths_outside_the_api_answer_in_the_same_envelope() {
    let (echo, kg) = start();
    let (_, _, key) = organization(&kg, 10);
    let r = with_x_api_key(&kg, "GET", "/api/v2/email-validation", &key);
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body, "{\n  \"error\": \"Not found\"\n}");
    let r = with_x_api_key(&kg, "OPTIONS", LOOKUP, &key);
    assert_eq!(r.status, 405, "{}", r.body);
    assert_eq!(
        r.body,
        "{\n  \"error\": \"The method is not allowed on this path\"\n}"
    );
    assert_eq!(echo.hits(), 0);
}

#[test]
fn last_used_times_show_in_the_operators_key_list() {
    let (_echo, kg) = start();
    let (account, id, key) = organization(&kg, 10);
    let listed = admin_ok(
        &kg,
        "GET",
        &format!("/admin/v1/keys?account_id={account}"),
        None,
    );
    let keys = listed["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("key").is_none(), "the key is shown once only");
    assert_eq!(keys[0]["last_used_at"], Value::Null);
    assert_eq!(with_x_api_key(&kg, "POST", LOOKUP, &key).status, 200);
    wait_until("last_used_at", Duration::from_secs(10), || {
        admin_ok(&kg, "GET", &format!("/admin/v1/keys/{id}"), None)["last_used_at"].is_string()
    });
}

#[test]
fn check_config_accepts_the_profile_and_names_its_missing_secrets() {
    let path = profile_path("enrich-api");
    let ok = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env("KEYGATE_PEPPER", PEPPER)
        .env("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run keygate check-config");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stdout}{stderr}");
    assert!(stdout.ends_with(": ok\n"), "{stdout}");
    assert!(stderr.is_empty(), "no warnings expected: {stderr}");

    let missing = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("check-config")
        .arg(&path)
        .env_remove("KEYGATE_PEPPER")
        .env_remove("KEYGATE_ADMIN_TOKEN")
        .output()
        .expect("run keygate check-config");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("KEYGATE_PEPPER"), "{stderr}");
    assert!(stderr.contains("KEYGATE_ADMIN_TOKEN"), "{stderr}");
}
