//! The Enrow document's flow against `config/examples/enrow.toml` as shipped: one key in the
//! `x-api-key` header for every endpoint, the two documented 401 bodies byte for byte (missing
//! and invalid key), account info (credits and webhooks) with the same header, credits taken by
//! lookups (402 when they run out), separate keys per environment, rotation and revocation.

mod common;

use std::process::Command;

use common::*;
use keygate::keys::KeyFormat;
use serde_json::{json, Value};

/// The document's two 401 bodies, as written.
const NOT_VALID: &str = r#"{"message": "This apikey is not valid"}"#;
const NO_KEY: &str = r#"{"message": "No apikey found in the x-api-key headers"}"#;
const WEBHOOK: &str = "https://your-app.com/webhooks/enrow";

fn start() -> (Echo, Keygate) {
    let echo = Echo::start();
    let kg = Keygate::start_profile("enrow", echo.addr);
    (echo, kg)
}

/// An account as the operator's signup makes it: webhooks in its metadata, `credits` bought.
fn account(kg: &Keygate, credits: i64) -> String {
    let v = admin_ok(
        kg,
        "POST",
        "/admin/v1/accounts",
        Some(json!({"name": "acme", "metadata": {"webhooks": [WEBHOOK]}})),
    );
    let id = v["id"].as_str().expect("account id").to_string();
    if credits > 0 {
        admin_ok(
            kg,
            "POST",
            &format!("/admin/v1/accounts/{id}/credits"),
            Some(json!({"delta": credits})),
        );
    }
    id
}

/// `method path` with the key in `x-api-key` (the only place the profile reads it) and `body`
/// as JSON.
fn enrow(kg: &Keygate, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> Resp {
    let headers: Vec<(&str, &str)> = key.map(|k| vec![("x-api-key", k)]).unwrap_or_default();
    request(method, &kg.url(path), &headers, body)
}

fn find_single(kg: &Keygate, key: &str) -> Resp {
    enrow(
        kg,
        "POST",
        "/email/find/single",
        Some(key),
        Some(&json!({"fullname": "John Doe", "company_domain": "example.com"})),
    )
}

fn account_info(kg: &Keygate, key: &str) -> Resp {
    enrow(kg, "GET", "/account/info", Some(key), None)
}

fn credits(kg: &Keygate, key: &str) -> i64 {
    let r = account_info(kg, key);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["credits"].as_i64().expect("credits")
}

#[test]
fn one_api_key_in_x_api_key_authenticates_every_endpoint() {
    let (echo, kg) = start();
    let id = account(&kg, 8500);
    let (key_id, key) = kg.create_key(&id, json!({"name": "production"}));
    assert!(key.starts_with("enrow_"), "{key}");

    // "You can retrieve your account information (credits balance and registered webhooks)
    // using the same x-api-key header — no body payload is needed". The document's answer:
    let r = account_info(&kg, &key);
    assert_eq!(r.status, 200, "{}", r.body);
    let documented: Value = serde_json::from_str(
        r#"{
  "credits": 8500,
  "webhooks": ["https://your-app.com/webhooks/enrow"]
}"#,
    )
    .expect("the document's JSON");
    assert_eq!(r.json(), documented);
    assert_eq!(
        r.body, r#"{"credits":8500,"webhooks":["https://your-app.com/webhooks/enrow"]}"#,
        "the document's key order"
    );
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    assert_eq!(echo.hits(), 0, "account info is answered by keygate");

    // The document's request: POST /email/find/single with the key in x-api-key.
    let r = find_single(&kg, &key);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/email/find/single");
    let sent: Value = serde_json::from_str(seen["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(
        sent,
        json!({"fullname": "John Doe", "company_domain": "example.com"})
    );
    let h = &seen["headers"];
    assert_eq!(h["content-type"], "application/json");
    assert!(h.get("x-api-key").is_none(), "the key stays here: {h}");
    assert!(!r.body.contains(&key));
    assert_eq!(h["x-keygate-key-id"], key_id.as_str());
    assert_eq!(h["x-keygate-key-name"], "production");
    assert_eq!(h["x-keygate-account-id"], id.as_str());
    assert_eq!(h["x-keygate-auth-method"], "api_key");
    assert_eq!(h["x-keygate-credits-remaining"], "8499");

    // "The same x-api-key header works for every endpoint — Email Finder, Email Verifier,
    // Phone Finder, and Account info". Header names are case-insensitive.
    for (method, path, header) in [
        ("POST", "/email/verify/single", "x-api-key"),
        ("POST", "/phone/single", "X-API-KEY"),
        ("GET", "/email/find/single?id=abc", "X-Api-Key"),
    ] {
        let body = (method == "POST").then(|| json!({}));
        let r = request(method, &kg.url(path), &[(header, &key)], body.as_ref());
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
    }
    // Each lookup (POST) took one credit; reading a result (GET) took none.
    assert_eq!(credits(&kg, &key), 8497);
    // A lookup the API does not answer 2xx is given back.
    let r = enrow(
        &kg,
        "POST",
        "/email/find/status/500",
        Some(&key),
        Some(&json!({})),
    );
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(credits(&kg, &key), 8497);

    // "A 401 Unauthorized response means your API key is missing or invalid."
    let hits = echo.hits();
    // Well-formed but never issued here, then shapes that are refused before any lookup.
    let unknown = KeyFormat::new("enrow_", 32).generate();
    for (method, path) in [
        ("POST", "/email/find/single"),
        ("GET", "/account/info"),
        ("POST", "/phone/single"),
    ] {
        let body = (method == "POST").then(|| json!({}));
        let r = enrow(&kg, method, path, None, body.as_ref());
        assert_eq!(
            (r.status, r.body.as_str()),
            (401, NO_KEY),
            "{method} {path}"
        );
        for bad in [
            unknown.expose(),
            "YOUR_API_KEY",
            "your_api_key_here",
            &format!("{key}x"),
            &key[..key.len() - 1],
        ] {
            let r = enrow(&kg, method, path, Some(bad), body.as_ref());
            assert_eq!(
                (r.status, r.body.as_str()),
                (401, NOT_VALID),
                "{method} {path} {bad}"
            );
        }
    }
    // "There are no OAuth flows or bearer tokens": a key sent as a Bearer token is no key.
    let r = request(
        "POST",
        &kg.url("/email/find/single"),
        &[("authorization", &bearer(&key))],
        Some(&json!({})),
    );
    assert_eq!((r.status, r.body.as_str()), (401, NO_KEY));
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    assert_eq!(echo.hits(), hits, "no refused request reached the API");
    assert_eq!(credits(&kg, &key), 8497, "refusals cost nothing");
}

#[test]
fn credits_run_out_with_402_and_account_info_follows_the_balance() {
    let (echo, kg) = start();
    let id = account(&kg, 2);
    let (_, key) = kg.create_key(&id, json!({"name": "production"}));
    assert_eq!(find_single(&kg, &key).status, 200);
    assert_eq!(find_single(&kg, &key).status, 200);
    let hits = echo.hits();
    let r = find_single(&kg, &key);
    assert_eq!(r.status, 402, "{}", r.body);
    assert_eq!(r.body, r#"{"message": "You do not have enough credits"}"#);
    assert_eq!(echo.hits(), hits);
    assert_eq!(
        account_info(&kg, &key).body,
        format!(r#"{{"credits":0,"webhooks":["{WEBHOOK}"]}}"#)
    );
    // Reading results stays free; a top-up lets lookups through again.
    assert_eq!(
        enrow(&kg, "GET", "/email/find/single?id=1", Some(&key), None).status,
        200
    );
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{id}/credits"),
        Some(json!({"delta": 1})),
    );
    assert_eq!(find_single(&kg, &key).status, 200);
    assert_eq!(credits(&kg, &key), 0);

    // Webhooks are the account's own: an account registered without any answers null.
    let bare = kg.create_account("bare");
    let (_, other) = kg.create_key(&bare, json!({}));
    assert_eq!(
        account_info(&kg, &other).body,
        r#"{"credits":0,"webhooks":null}"#
    );
}

#[test]
fn separate_keys_per_environment_rotation_and_revocation() {
    let (echo, kg) = start();
    let id = account(&kg, 100);
    // "Create separate API keys for development, staging, and production environments."
    let (dev_id, dev) = kg.create_key(&id, json!({"name": "development"}));
    let (prod_id, prod) = kg.create_key(&id, json!({"name": "production"}));
    let r = find_single(&kg, &dev);
    assert_eq!(r.json()["headers"]["x-keygate-key-name"], "development");
    let r = find_single(&kg, &prod);
    assert_eq!(r.json()["headers"]["x-keygate-key-name"], "production");
    // One account, one balance, whichever key reads it.
    assert_eq!(credits(&kg, &dev), 98);
    assert_eq!(credits(&kg, &prod), 98);

    // "If a key is ever exposed, rotate it": the new key works at once, the old one until it is
    // revoked (or its grace ends), so clients move over without downtime.
    let v = admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/keys/{prod_id}/rotate"),
        Some(json!({"grace_seconds": 3600})),
    );
    let new = v["key"].as_str().expect("new key").to_string();
    assert!(new.starts_with("enrow_"));
    assert_eq!(v["rotated_from"], prod_id.as_str());
    assert_eq!(find_single(&kg, &new).status, 200);
    assert_eq!(find_single(&kg, &prod).status, 200);
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/keys/{prod_id}/revoke"),
        None,
    );
    let hits = echo.hits();
    let r = find_single(&kg, &prod);
    assert_eq!((r.status, r.body.as_str()), (401, NOT_VALID));
    let r = account_info(&kg, &prod);
    assert_eq!((r.status, r.body.as_str()), (401, NOT_VALID));
    assert_eq!(echo.hits(), hits);
    assert_eq!(find_single(&kg, &new).status, 200);

    // "revoke unused keys": a disabled key reads the same as an invalid one; the others work.
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/keys/{dev_id}/disable"),
        None,
    );
    let r = find_single(&kg, &dev);
    assert_eq!((r.status, r.body.as_str()), (401, NOT_VALID));
    assert_eq!(find_single(&kg, &new).status, 200);

    // A suspended account (the reading chosen: 403 in Enrow's shape) and back.
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{id}/suspend"),
        None,
    );
    let r = find_single(&kg, &new);
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, r#"{"message": "This account is suspended"}"#)
    );
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{id}/reactivate"),
        None,
    );
    assert_eq!(find_single(&kg, &new).status, 200);
}

#[test]
fn too_many_requests_is_429_with_retry_after() {
    let (echo, kg) = start();
    let id = account(&kg, 0);
    let (_, key) = kg.create_key(&id, json!({}));
    let first = enrow(&kg, "GET", "/email/find/single?id=1", Some(&key), None);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("ratelimit-limit"), Some("20"));
    // Ten a second in bursts of twenty: a client faster than that is refused within a few
    // hundred requests, however slow the machine is, as long as it beats ten a second.
    let mut refused = None;
    for _ in 0..500 {
        let hits = echo.hits();
        let r = enrow(&kg, "GET", "/email/find/single?id=1", Some(&key), None);
        if r.status == 429 {
            assert_eq!(
                echo.hits(),
                hits,
                "a refused request does not reach the API"
            );
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = refused.expect("a 429 within 500 requests");
    assert_eq!(r.body, r#"{"message": "Too many requests"}"#);
    let retry = r
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
}

/// The profile as shipped passes `check-config` once its secrets are set, and names the one that
/// is missing otherwise.
#[test]
fn check_config_accepts_the_profile() {
    let path = profile_path("enrow");
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |pepper: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keygate"));
        c.arg("check-config")
            .arg(&path)
            .current_dir(dir.path())
            .env("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("KEYGATE_PEPPER");
        if let Some(p) = pepper {
            c.env("KEYGATE_PEPPER", p);
        }
        let out = c.output().expect("run check-config");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (status, text) = run(Some(PEPPER));
    assert_eq!(status, Some(0), "{text}");
    assert!(text.contains(": ok"), "{text}");
    assert!(!text.contains("warning"), "{text}");
    let (status, text) = run(None);
    assert_eq!(status, Some(2), "{text}");
    assert!(text.contains("KEYGATE_PEPPER"), "{text}");
}
