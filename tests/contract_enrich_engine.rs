//! Enrich Engine's "API Key Management" page (seed 004) against
//! `config/examples/enrich-engine.toml` as shipped: `ee_live_` keys of the documented 40
//! characters in `X-API-Key`, the four scopes (403 when one is missing), optional expiry, the
//! key list's names, prefixes, scopes and last-used times, immediate revocation, renaming, and
//! the full key shown only once. The dashboard's steps go through the admin API, as the
//! dashboard's backend would.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use keygate::keys::KeyFormat;
use serde_json::{json, Value};

const LISTS: &str = "/api/external/lists";
const LIST_LEADS: &str = "/api/external/lists/lst_1/leads";
const LEADS: &str = "/api/external/leads";
const LEAD: &str = "/api/external/leads/ld_1";

/// What a client sends, the headers it sends, and the body it must get back.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

/// The profile's bodies (the page names the statuses but prints none; see the profile).
fn unauthorized(message: &str) -> String {
    format!(r#"{{"error": "Unauthorized", "message": "{message}"}}"#)
}

fn forbidden(message: &str) -> String {
    format!(r#"{{"error": "Forbidden", "message": "{message}"}}"#)
}

fn missing_scope(scope: &str) -> String {
    forbidden(&format!("API key is missing the required scope: {scope}"))
}

fn start() -> (Echo, Keygate) {
    let echo = Echo::start();
    let kg = Keygate::start_profile("enrich-engine", echo.addr);
    (echo, kg)
}

/// "Click Create API Key": a named key with scopes (and optionally an expiry); the whole
/// answer, whose `key` is the one time the key is shown.
fn create_key(kg: &Keygate, account: &str, body: Value) -> Value {
    let mut body = body;
    body["account_id"] = json!(account);
    let r = kg.admin("POST", "/admin/v1/keys", Some(body));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

fn plaintext(created: &Value) -> String {
    created["key"].as_str().expect("the key").to_string()
}

fn id(created: &Value) -> String {
    created["id"].as_str().expect("key id").to_string()
}

/// `method path` with `X-API-Key: key`, as the page's troubleshooting spells it.
fn call_as(kg: &Keygate, method: &str, path: &str, key: &str) -> Resp {
    let body = matches!(method, "POST" | "PUT" | "PATCH").then(|| json!({ "name": "Q3" }));
    request(method, &kg.url(path), &[("X-API-Key", key)], body.as_ref())
}

/// "View all keys" for the organization.
fn listed(kg: &Keygate, account: &str) -> Vec<Value> {
    let v = admin_ok(
        kg,
        "GET",
        &format!("/admin/v1/keys?account_id={account}"),
        None,
    );
    v["keys"].as_array().cloned().expect("keys")
}

#[test]
fn a_named_scoped_key_is_shown_once_and_listed_by_name_prefix_scopes_and_last_use() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let created = create_key(
        &kg,
        &account,
        json!({ "name": "GTM Dialer Production", "scopes": ["lists:read"] }),
    );
    let key = plaintext(&created);
    let key_id = id(&created);

    // "API keys follow this format: ee_live_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    assert_eq!(
        key.len(),
        "ee_live_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".len(),
        "{key}"
    );
    assert!(key.starts_with("ee_live_"), "{key}");
    assert!(
        key["ee_live_".len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric()),
        "{key}"
    );

    // "Include your API key in the X-API-Key header"
    let r = call_as(&kg, "GET", LISTS, &key);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["path"], LISTS);
    let headers = &seen["headers"];
    assert_eq!(headers["x-keygate-key-id"], key_id.as_str());
    assert_eq!(headers["x-keygate-key-name"], "GTM Dialer Production");
    assert_eq!(headers["x-keygate-account-id"], account.as_str());
    assert_eq!(headers["x-keygate-scopes"], "lists:read");
    assert!(headers.get("x-api-key").is_none(), "{headers}");
    assert!(!r.body.contains(&key), "the key reached the upstream");
    assert_eq!(echo.hits(), 1);

    // "View all keys - See key names, prefixes, scopes, and last used timestamps"; "You cannot
    // view the full key after creation, only the prefix (e.g., ee_live_abc...)".
    wait_until("the key's last use", Duration::from_secs(10), || {
        listed(&kg, &account)
            .first()
            .is_some_and(|k| k["last_used_at"].is_string())
    });
    let keys = listed(&kg, &account);
    assert_eq!(keys.len(), 1);
    let shown = &keys[0];
    assert_eq!(shown["name"], "GTM Dialer Production");
    assert_eq!(shown["display_prefix"], &key[.."ee_live_abcdef".len()]);
    assert_eq!(shown["scopes"], json!(["lists:read"]));
    assert!(is_rfc3339_utc(&shown["last_used_at"]), "{shown}");
    assert_eq!(shown["expires_at"], Value::Null);
    let one = admin_ok(&kg, "GET", &format!("/admin/v1/keys/{key_id}"), None);
    for view in [shown, &one] {
        assert!(view.get("key").is_none(), "{view}");
        assert!(!view.to_string().contains(&key), "{view}");
    }
}

#[test]
fn each_endpoint_needs_its_scope_and_a_missing_one_is_403() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    // "If you only need to read lists for a dialer, don't include write scopes."
    let dialer = plaintext(&create_key(
        &kg,
        &account,
        json!({ "name": "dialer", "scopes": ["lists:read"] }),
    ));
    let all = plaintext(&create_key(
        &kg,
        &account,
        json!({
            "name": "sync",
            "scopes": ["lists:read", "lists:write", "leads:read", "leads:write"],
        }),
    ));

    // (method, path, the scope it needs)
    let endpoints = [
        ("GET", LISTS, "lists:read"),
        ("GET", "/api/external/lists/lst_1", "lists:read"),
        ("GET", LIST_LEADS, "lists:read"),
        ("POST", LISTS, "lists:write"),
        ("PATCH", "/api/external/lists/lst_1", "lists:write"),
        ("DELETE", "/api/external/lists/lst_1", "lists:write"),
        ("GET", LEADS, "leads:read"),
        ("GET", LEAD, "leads:read"),
        ("POST", LEADS, "leads:write"),
        ("PUT", LEAD, "leads:write"),
        ("DELETE", LEAD, "leads:write"),
    ];
    let mut forwarded = 0;
    for (method, path, scope) in endpoints {
        let r = call_as(&kg, method, path, &all);
        assert_eq!(
            r.status, 200,
            "{method} {path} with every scope: {}",
            r.body
        );
        assert_eq!(r.json()["method"], method);
        forwarded += 1;

        // "403 Forbidden - Check that the key has the required scopes for the endpoint"
        let r = call_as(&kg, method, path, &dialer);
        if scope == "lists:read" {
            assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
            forwarded += 1;
        } else {
            assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
            assert_eq!(r.body, missing_scope(scope), "{method} {path}");
            assert_eq!(r.header("content-type"), Some("application/json"));
        }
        assert_eq!(echo.hits(), forwarded, "{method} {path}");
    }
}

#[test]
fn only_x_api_key_is_read_and_every_bad_key_is_401() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let key = plaintext(&create_key(
        &kg,
        &account,
        json!({ "name": "dialer", "scopes": ["lists:read"] }),
    ));
    let unknown = KeyFormat::new("ee_live_", 32)
        .with_checksum(false)
        .generate();
    let missing = unauthorized("Missing API key. Send it in the X-API-Key header.");
    let invalid = unauthorized("Invalid API key");

    // "Check the header format: X-API-Key: ee_live_xxx"
    let as_bearer = bearer(&key);
    let cases: [Case; 6] = [
        ("no key", vec![], &missing),
        (
            "a Bearer token instead",
            vec![("authorization", &as_bearer)],
            &missing,
        ),
        (
            "the page's placeholder",
            vec![("X-API-Key", "ee_live_xxxxxxxxxxxxx")],
            &invalid,
        ),
        (
            "another prefix",
            vec![("X-API-Key", "sk_live_0123456789abcdefghijklmnopqrstuv")],
            &invalid,
        ),
        (
            "one character short",
            vec![("X-API-Key", &key[..key.len() - 1])],
            &invalid,
        ),
        ("unknown", vec![("X-API-Key", unknown.expose())], &invalid),
    ];
    for (what, headers, body) in &cases {
        let r = request("GET", &kg.url(LISTS), headers, None);
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.body, *body, "{what}");
    }
    assert_eq!(echo.hits(), 0);
    // Header names are case-insensitive.
    assert_eq!(
        request("GET", &kg.url(LISTS), &[("x-api-key", &key)], None).status,
        200
    );
}

#[test]
fn an_expiration_date_is_optional_and_an_expired_key_is_401() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    // "Optionally set an expiration date"
    let created = create_key(
        &kg,
        &account,
        json!({
            "name": "quarterly export",
            "scopes": ["leads:read"],
            "expires_at": "2099-01-01T00:00:00Z",
        }),
    );
    let (key, key_id) = (plaintext(&created), id(&created));
    assert_eq!(created["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(call_as(&kg, "GET", LEAD, &key).status, 200);

    // "Ensure the key hasn't expired": the date moved to the past.
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/keys/{key_id}"),
        Some(json!({ "expires_at": "2020-01-01T00:00:00Z" })),
    );
    let r = call_as(&kg, "GET", LEAD, &key);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body, unauthorized("API key has expired"));
    assert_eq!(echo.hits(), 1);

    // A past date at creation is refused: such a key could never be used.
    let r = kg.admin(
        "POST",
        "/admin/v1/keys",
        Some(
            json!({ "account_id": account, "name": "late", "expires_at": "2020-01-01T00:00:00Z" }),
        ),
    );
    assert_eq!(r.status, 409, "{}", r.body);
}

#[test]
fn revoking_is_immediate_final_and_touches_no_other_integration() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let dialer = create_key(
        &kg,
        &account,
        json!({ "name": "GTM Dialer", "scopes": ["lists:read"] }),
    );
    let crm = plaintext(&create_key(
        &kg,
        &account,
        json!({ "name": "CRM sync", "scopes": ["lists:read"] }),
    ));
    let (key, key_id) = (plaintext(&dialer), id(&dialer));
    assert_eq!(call_as(&kg, "GET", LISTS, &key).status, 200);

    // "Revoke keys - Immediately disable a key (cannot be undone)"
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/keys/{key_id}/revoke"),
        None,
    );
    let r = call_as(&kg, "GET", LISTS, &key);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body, unauthorized("API key has been revoked"));
    for action in ["enable", "rotate"] {
        let r = kg.admin("POST", &format!("/admin/v1/keys/{key_id}/{action}"), None);
        assert!(!(200..300).contains(&r.status), "{action}: {}", r.body);
    }
    assert_eq!(call_as(&kg, "GET", LISTS, &key).status, 401);

    // "This allows you to revoke access to one integration without affecting others."
    assert_eq!(call_as(&kg, "GET", LISTS, &crm).status, 200);
    assert_eq!(echo.hits(), 2);
    let statuses: Vec<Value> = listed(&kg, &account)
        .iter()
        .map(|k| json!([k["name"], k["status"]]))
        .collect();
    assert!(
        statuses.contains(&json!(["GTM Dialer", "revoked"])),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&json!(["CRM sync", "active"])),
        "{statuses:?}"
    );
}

#[test]
fn renaming_changes_the_display_name_and_nothing_else() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let created = create_key(
        &kg,
        &account,
        json!({ "name": "dialer", "scopes": ["lists:read"] }),
    );
    let (key, key_id) = (plaintext(&created), id(&created));

    // "Rename keys - Update the display name for organization"
    let renamed = admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/keys/{key_id}"),
        Some(json!({ "name": "GTM Dialer Production" })),
    );
    assert_eq!(renamed["name"], "GTM Dialer Production");
    assert_eq!(renamed["display_prefix"], created["display_prefix"]);
    assert_eq!(renamed["scopes"], json!(["lists:read"]));
    assert_eq!(listed(&kg, &account)[0]["name"], "GTM Dialer Production");

    let r = call_as(&kg, "GET", LISTS, &key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["headers"]["x-keygate-key-name"],
        "GTM Dialer Production"
    );
}

#[test]
fn another_organizations_state_and_limits_answer_in_the_same_shape() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let created = create_key(
        &kg,
        &account,
        json!({ "name": "dialer", "scopes": ["lists:read"] }),
    );
    let (key, key_id) = (plaintext(&created), id(&created));
    let r = call_as(&kg, "GET", LISTS, &key);
    assert_eq!(r.header("ratelimit-limit"), Some("20"), "the shipped limit");

    // Past the key's limit: 429 with Retry-After.
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/keys/{key_id}"),
        Some(json!({ "rate_limit": { "requests": 1, "per_seconds": 3600, "burst": 1 } })),
    );
    assert_eq!(call_as(&kg, "GET", LISTS, &key).status, 200);
    let r = call_as(&kg, "GET", LISTS, &key);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(
        r.body,
        r#"{"error": "Too Many Requests", "message": "Rate limit exceeded"}"#
    );
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=3600).contains(&retry), "{retry}");
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/keys/{key_id}"),
        Some(json!({ "rate_limit": null })),
    );
    assert_eq!(call_as(&kg, "GET", LISTS, &key).status, 200);

    // "Verify you're accessing resources in the key's organization"
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{account}/suspend"),
        None,
    );
    let r = call_as(&kg, "GET", LISTS, &key);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body, forbidden("The key's organization is suspended"));
    admin_ok(
        &kg,
        "DELETE",
        &format!("/admin/v1/accounts/{account}"),
        None,
    );
    let r = call_as(&kg, "GET", LISTS, &key);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body, forbidden("The key's organization no longer exists"));

    // Nothing outside lists and leads is exposed.
    let other = plaintext(&create_key(
        &kg,
        &kg.create_account("other"),
        json!({ "name": "x", "scopes": ["lists:read"] }),
    ));
    let r = call_as(&kg, "GET", "/api/external/contacts", &other);
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body, r#"{"error": "Not Found", "message": "Not found"}"#);
    assert_eq!(echo.hits(), 3);
}

#[test]
fn check_config_accepts_the_profile_warning_what_the_documented_format_costs() {
    let path = profile_path("enrich-engine");
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env("KEYGATE_PEPPER", PEPPER)
        .env("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run keygate check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.ends_with(": ok\n"), "{stdout}");
    // The 40-character format has no checksum, and check-config says what that costs.
    assert!(
        stderr.contains("warning: `keys.checksum = false`"),
        "{stderr}"
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("KEYGATE_PEPPER")
        .env_remove("KEYGATE_ADMIN_TOKEN")
        .output()
        .expect("run keygate check-config");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("KEYGATE_PEPPER"), "{stderr}");
}
