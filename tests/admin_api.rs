//! The admin API against the real binary: auth, accounts, keys, validation, audit, and that
//! every admin change is seen by the very next proxied request. (The OpenAPI document:
//! tests/openapi.rs.)

mod common;
use common::*;

use serde_json::{json, Value};

const A: &str = "/admin/v1";

/// Sends a raw (possibly malformed) body with the admin token.
fn admin_raw(kg: &Keygate, method: &str, path: &str, body: &str) -> Resp {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", kg.admin_url()))
        .header("authorization", bearer(ADMIN_TOKEN))
        .header("content-type", "application/json")
        .body(body.to_string())
        .expect("request");
    let mut resp = agent.run(req).expect("admin request");
    Resp {
        status: resp.status().as_u16(),
        headers: Default::default(),
        body: resp.body_mut().read_to_string().expect("body"),
    }
}

#[test]
fn requests_without_the_admin_token_are_refused() {
    let (_echo, kg) = start();
    let url = format!("{}{A}/accounts", kg.admin_url());
    let cases: [&[(&str, &str)]; 4] = [
        &[],
        &[("authorization", "Bearer wrong-token")],
        &[("authorization", "Bearer test-admin-token-012345678")],
        &[("authorization", "Basic test-admin-token-0123456789")],
    ];
    for headers in cases {
        let r = get(&url, headers);
        let message = assert_error(&r, 401, "unauthorized");
        assert_eq!(message, "missing or invalid admin token");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert!(!r.body.contains(ADMIN_TOKEN));
    }
    // Unknown paths and writes need the token too.
    let r = get(&format!("{}{A}/nope", kg.admin_url()), &[]);
    assert_error(&r, 401, "unauthorized");
    let r = request("POST", &url, &[], Some(&json!({"name": "x"})));
    assert_error(&r, 401, "unauthorized");
    // Nothing was created.
    let r = kg.admin("GET", &format!("{A}/accounts"), None);
    assert_eq!(r.json()["accounts"], json!([]));
}

#[test]
fn account_lifecycle() {
    let (_echo, kg) = start();
    let r = kg.admin(
        "POST",
        &format!("{A}/accounts"),
        Some(json!({"name": "Acme"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    let created = r.json();
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["name"], "Acme");
    assert_eq!(created["status"], "active");
    assert_eq!(created["plan"], Value::Null);
    assert_eq!(created["credits"], 0);
    assert!(is_rfc3339_utc(&created["created_at"]), "{created}");

    let r = kg.admin("GET", &format!("{A}/accounts/{id}"), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), created);

    let r = kg.admin("POST", &format!("{A}/accounts/{id}/suspend"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "suspended");
    let r = kg.admin("POST", &format!("{A}/accounts/{id}/reactivate"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "active");

    let r = kg.admin("DELETE", &format!("{A}/accounts/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "deleted");
    // A deleted account is gone from the admin API (tests/openapi.rs tries every path).
    for (method, path) in [
        ("POST", format!("{A}/accounts/{id}/reactivate")),
        ("POST", format!("{A}/accounts/{id}/suspend")),
        ("GET", format!("{A}/accounts/{id}")),
    ] {
        let r = kg.admin(method, &path, None);
        assert_error(&r, 404, "not_found");
    }
    // A deleted account gets no new keys.
    let r = kg.admin(
        "POST",
        &format!("{A}/keys"),
        Some(json!({"account_id": id, "name": "k"})),
    );
    assert_error(&r, 409, "conflict");
}

#[test]
fn account_list_pages() {
    let (_echo, kg) = start();
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| kg.create_account(n))
        .collect();

    let r = kg.admin("GET", &format!("{A}/accounts"), None);
    assert_eq!(r.status, 200);
    let all = r.json();
    let listed: Vec<&str> = all["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(listed, ids);
    assert_eq!(all["next"], Value::Null);

    let r = kg.admin("GET", &format!("{A}/accounts?limit=2"), None);
    let page1 = r.json();
    assert_eq!(page1["accounts"].as_array().map(Vec::len), Some(2));
    assert_eq!(page1["accounts"][0]["name"], "a");
    assert_eq!(page1["next"], ids[1]);

    let r = kg.admin(
        "GET",
        &format!("{A}/accounts?limit=2&after={}", ids[1]),
        None,
    );
    let page2 = r.json();
    assert_eq!(page2["accounts"].as_array().map(Vec::len), Some(1));
    assert_eq!(page2["accounts"][0]["id"], ids[2]);
    assert_eq!(page2["next"], Value::Null);
}

#[test]
fn key_plaintext_is_shown_only_at_creation() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let r = kg.admin(
        "POST",
        &format!("{A}/users"),
        Some(json!({"account_id": account, "email": "u@example.com", "password": "password-1"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let user_id = r.json()["id"].as_str().expect("user id").to_string();
    let r = kg.admin(
        "POST",
        &format!("{A}/keys"),
        Some(json!({
            "account_id": account,
            "name": "reader",
            "scopes": ["leads:read", "x.y-z_1"],
            "permission": "read",
            "expires_at": "2099-01-02T03:04:05+01:00",
            "user_id": user_id
        })),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    let plaintext = created["key"].as_str().expect("key").to_string();
    let id = created["id"].as_str().expect("id").to_string();
    assert!(plaintext.starts_with("kg_test_"));
    assert_eq!(created["display_prefix"], plaintext[..14]);
    assert_eq!(created["account_id"], account);
    assert_eq!(created["user_id"], user_id.as_str());
    assert_eq!(created["name"], "reader");
    assert_eq!(created["scopes"], json!(["leads:read", "x.y-z_1"]));
    assert_eq!(created["permission"], "read");
    assert_eq!(created["status"], "active");
    assert_eq!(created["expires_at"], "2099-01-02T02:04:05Z");
    assert!(is_rfc3339_utc(&created["created_at"]));
    assert_eq!(created["last_used_at"], Value::Null);
    assert_eq!(created["rate_limit"], Value::Null);
    assert_eq!(created["resources"], Value::Null);
    assert_eq!(created["rotated_from"], Value::Null);
    assert!(created.get("hash").is_none());

    let r = kg.admin("GET", &format!("{A}/keys/{id}"), None);
    assert_eq!(r.status, 200);
    let got = r.json();
    assert!(got.get("key").is_none(), "{got}");
    assert!(!r.body.contains(&plaintext));
    assert_eq!(got["display_prefix"], created["display_prefix"]);

    let r = kg.admin("GET", &format!("{A}/keys?account_id={account}"), None);
    assert_eq!(r.status, 200);
    assert!(!r.body.contains(&plaintext));
    let list = r.json();
    assert_eq!(list["keys"].as_array().map(Vec::len), Some(1));
    assert!(list["keys"][0].get("key").is_none());
    assert_eq!(list["keys"][0]["id"], id);
    assert_eq!(list["next"], Value::Null);

    // Defaults: no scopes, read_write, no expiry.
    let other = kg.create_account("other");
    let (_, _) = kg.create_key(&other, json!({}));
    let r = kg.admin("GET", &format!("{A}/keys?account_id={other}"), None);
    let k = &r.json()["keys"][0];
    assert_eq!(k["scopes"], json!([]));
    assert_eq!(k["permission"], "read_write");
    assert_eq!(k["expires_at"], Value::Null);
    assert_eq!(k["user_id"], Value::Null);
    // Without a filter, both accounts' keys; paging works on keys too.
    let r = kg.admin("GET", &format!("{A}/keys?limit=1"), None);
    let page = r.json();
    assert_eq!(page["keys"][0]["id"], id);
    assert_eq!(page["next"], id);
}

#[test]
fn key_updates_and_status_changes() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let (id, _) = kg.create_key(&account, json!({"name": "first"}));
    let path = format!("{A}/keys/{id}");

    let r = kg.admin("PATCH", &path, Some(json!({"name": "second"})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["name"], "second");

    let r = kg.admin("PATCH", &path, Some(json!({"scopes": ["a:read", "b"]})));
    assert_eq!(r.json()["scopes"], json!(["a:read", "b"]));
    assert_eq!(r.json()["name"], "second");

    let r = kg.admin(
        "PATCH",
        &path,
        Some(json!({"expires_at": "2090-06-01T00:00:00Z"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["expires_at"], "2090-06-01T00:00:00Z");
    assert_eq!(r.json()["scopes"], json!(["a:read", "b"]));

    // Absent leaves the expiry; explicit null clears it.
    let r = kg.admin("PATCH", &path, Some(json!({"name": "third"})));
    assert_eq!(r.json()["expires_at"], "2090-06-01T00:00:00Z");
    let r = kg.admin("PATCH", &path, Some(json!({"expires_at": null})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["expires_at"], Value::Null);
    assert_eq!(r.json()["name"], "third");

    let r = kg.admin("PATCH", &path, Some(json!({})));
    assert_error(&r, 422, "invalid_body");

    let r = kg.admin("POST", &format!("{path}/disable"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "disabled");
    let r = kg.admin("POST", &format!("{path}/enable"), None);
    assert_eq!(r.json()["status"], "active");
    let r = kg.admin("POST", &format!("{path}/revoke"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "revoked");
    let r = kg.admin("POST", &format!("{path}/enable"), None);
    assert_error(&r, 409, "conflict");
    let r = kg.admin("POST", &format!("{path}/disable"), None);
    assert_error(&r, 409, "conflict");
    let r = kg.admin("GET", &path, None);
    assert_eq!(r.json()["status"], "revoked");
}

#[test]
fn invalid_bodies_are_422_and_name_the_field() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let accounts = format!("{A}/accounts");
    let keys = format!("{A}/keys");

    let r = admin_raw(&kg, "POST", &accounts, r#"{"name": "#);
    assert_error(&r, 422, "invalid_body");
    let r = admin_raw(&kg, "POST", &accounts, "");
    assert_error(&r, 422, "invalid_body");

    let cases: Vec<(&str, Value, &str)> = vec![
        (&accounts, json!({}), "name"),
        (&accounts, json!({"name": "x", "foo": 1}), "foo"),
        (&accounts, json!({"name": 7}), "name"),
        (&accounts, json!({"name": ""}), "name"),
        (&accounts, json!({"name": "   "}), "name"),
        (&accounts, json!({"name": "x".repeat(201)}), "name"),
        (&keys, json!({"account_id": account}), "name"),
        (&keys, json!({"name": "k"}), "account_id"),
        (
            &keys,
            json!({"account_id": account, "name": "k", "scopes": ["bad scope"]}),
            "bad scope",
        ),
        (
            &keys,
            json!({"account_id": account, "name": "k", "scopes": "leads:read"}),
            "scopes",
        ),
        (
            &keys,
            json!({"account_id": account, "name": "k", "permission": "admin"}),
            "permission",
        ),
        (
            &keys,
            json!({"account_id": account, "name": "k", "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            &keys,
            json!({"account_id": account, "name": "k", "secret": true}),
            "secret",
        ),
    ];
    for (path, body, field) in cases {
        let r = kg.admin("POST", path, Some(body.clone()));
        let message = assert_error(&r, 422, "invalid_body");
        assert!(message.contains(field), "{body}: {message}");
    }

    let (id, _) = kg.create_key(&account, json!({}));
    let patches = [
        (json!({"nmae": "x"}), "nmae"),
        (json!({"scopes": ["ok", "not ok"]}), "not ok"),
        (json!({"expires_at": "soon"}), "expires_at"),
        (json!({"name": ""}), "name"),
    ];
    for (body, field) in patches {
        let r = kg.admin("PATCH", &format!("{keys}/{id}"), Some(body.clone()));
        let message = assert_error(&r, 422, "invalid_body");
        assert!(message.contains(field), "{body}: {message}");
    }

    let r = kg.admin("GET", &format!("{keys}?limit=many"), None);
    let message = assert_error(&r, 400, "invalid_query");
    assert!(message.contains("limit"), "{message}");
    // Nothing invalid was written.
    let r = kg.admin("GET", &format!("{keys}/{id}"), None);
    assert_eq!(r.json()["name"], "test key");
}

#[test]
fn unknown_things_are_404() {
    let (_echo, kg) = start();
    let cases = [
        (
            "GET",
            format!("{A}/accounts/acc_missing"),
            "account not found",
        ),
        (
            "POST",
            format!("{A}/accounts/acc_missing/suspend"),
            "account not found",
        ),
        (
            "DELETE",
            format!("{A}/accounts/acc_missing"),
            "account not found",
        ),
        ("GET", format!("{A}/keys/key_missing"), "key not found"),
        (
            "POST",
            format!("{A}/keys/key_missing/revoke"),
            "key not found",
        ),
        ("GET", format!("{A}/nothing-here"), "no such admin endpoint"),
        ("GET", "/".to_string(), "no such admin endpoint"),
    ];
    for (method, path, message) in cases {
        let r = kg.admin(method, &path, None);
        assert_eq!(
            assert_error(&r, 404, "not_found"),
            message,
            "{method} {path}"
        );
    }
    let r = kg.admin(
        "PATCH",
        &format!("{A}/keys/key_missing"),
        Some(json!({"name": "x"})),
    );
    assert_error(&r, 404, "not_found");
    let r = kg.admin(
        "POST",
        &format!("{A}/keys"),
        Some(json!({"account_id": "acc_missing", "name": "k"})),
    );
    assert_eq!(assert_error(&r, 404, "not_found"), "account not found");
    let r = kg.admin("PUT", &format!("{A}/accounts"), None);
    assert_error(&r, 405, "method_not_allowed");
}

#[test]
fn audit_log_records_every_write_without_secrets() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let (key_id, plaintext) = kg.create_key(&account, json!({"scopes": ["leads:read"]}));
    kg.admin(
        "PATCH",
        &format!("{A}/keys/{key_id}"),
        Some(json!({"name": "renamed"})),
    );
    kg.admin("POST", &format!("{A}/keys/{key_id}/revoke"), None);
    kg.admin("POST", &format!("{A}/accounts/{account}/suspend"), None);

    let r = kg.admin("GET", &format!("{A}/audit"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains(&plaintext));
    assert!(!r.body.contains(ADMIN_TOKEN));
    let entries = r.json()["entries"].as_array().expect("entries").clone();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["target"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for expected in [
        ("account.create", account.as_str()),
        ("key.create", key_id.as_str()),
        ("key.update", key_id.as_str()),
        ("key.revoke", key_id.as_str()),
        ("account.suspend", account.as_str()),
    ] {
        assert!(
            actions.contains(&expected),
            "{expected:?} missing in {actions:?}"
        );
    }
    for e in &entries {
        assert_eq!(e["actor"], "admin");
        assert!(is_rfc3339_utc(&e["at"]), "{e}");
        assert!(e["id"].is_i64());
        assert!(e["detail"].is_string());
    }

    let r = kg.admin("GET", &format!("{A}/audit?target={key_id}"), None);
    let only_key = r.json()["entries"].as_array().expect("entries").clone();
    assert_eq!(only_key.len(), 3);
    assert!(only_key.iter().all(|e| e["target"] == key_id.as_str()));
    let r = kg.admin("GET", &format!("{A}/audit?limit=1"), None);
    assert_eq!(r.json()["entries"].as_array().map(Vec::len), Some(1));
    // Nor does the process log carry a secret.
    let log = kg.log();
    assert!(!log.contains(&plaintext) && !log.contains(ADMIN_TOKEN));
}

#[test]
fn admin_changes_apply_to_the_very_next_proxied_request() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let (key_id, key) = kg.create_key(&account, json!({}));
    let r = call(&kg, "/v1/x", &key);
    assert_eq!(r.status, 200, "{}", r.body);
    let hits = echo.hits();

    // Revoke: the cached entry is dropped, so the next request is refused.
    let r = kg.admin("POST", &format!("{A}/keys/{key_id}/revoke"), None);
    assert_eq!(r.status, 200);
    let r = call(&kg, "/v1/x", &key);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "key_revoked");
    assert_eq!(echo.hits(), hits);

    // Account suspension and reactivation.
    let (key_id, key) = kg.create_key(&account, json!({}));
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);
    kg.admin("POST", &format!("{A}/accounts/{account}/suspend"), None);
    let r = call(&kg, "/v1/x", &key);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "account_suspended");
    kg.admin("POST", &format!("{A}/accounts/{account}/reactivate"), None);
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);

    // Disable and enable.
    kg.admin("POST", &format!("{A}/keys/{key_id}/disable"), None);
    let r = call(&kg, "/v1/x", &key);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "key_disabled");
    kg.admin("POST", &format!("{A}/keys/{key_id}/enable"), None);
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);

    // Scopes: the leads route needs leads:read.
    let r = call(&kg, "/leads/1", &key);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "insufficient_scope");
    kg.admin(
        "PATCH",
        &format!("{A}/keys/{key_id}"),
        Some(json!({"scopes": ["leads:read"]})),
    );
    assert_eq!(call(&kg, "/leads/1", &key).status, 200);

    // Expiry set in the past through PATCH, then cleared.
    kg.admin(
        "PATCH",
        &format!("{A}/keys/{key_id}"),
        Some(json!({"expires_at": "2001-01-01T00:00:00Z"})),
    );
    let r = call(&kg, "/v1/x", &key);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "key_expired");
    kg.admin(
        "PATCH",
        &format!("{A}/keys/{key_id}"),
        Some(json!({"expires_at": null})),
    );
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);

    // Rename shows up in the identity headers of the next request.
    kg.admin(
        "PATCH",
        &format!("{A}/keys/{key_id}"),
        Some(json!({"name": "renamed"})),
    );
    let r = call(&kg, "/v1/x", &key);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("renamed"), "{}", r.body);

    // Deleting the account: its keys answer account_missing.
    kg.admin("DELETE", &format!("{A}/accounts/{account}"), None);
    let r = call(&kg, "/v1/x", &key);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "account_missing");
}

const PLANS: &str = r#"
[plans.pro]
key = { requests = 100, per_seconds = 1, burst = 200 }

[plans.team]
account = { requests = 1000, per_seconds = 1 }
"#;

fn start_with_plans() -> (Echo, Keygate) {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.extra_toml = PLANS.into();
    let kg = Keygate::start(&opts);
    (echo, kg)
}

#[test]
fn account_plans_are_set_and_cleared() {
    let (_echo, kg) = start_with_plans();
    let account = kg.create_account("acme");
    let path = format!("{A}/accounts/{account}");

    let r = kg.admin("PATCH", &path, Some(json!({"plan": "pro"})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["plan"], "pro");
    assert_eq!(r.json()["name"], "acme");
    assert_eq!(kg.admin("GET", &path, None).json()["plan"], "pro");
    let r = kg.admin("GET", &format!("{A}/accounts"), None);
    assert_eq!(r.json()["accounts"][0]["plan"], "pro");

    let r = kg.admin("PATCH", &path, Some(json!({"plan": "team"})));
    assert_eq!(r.json()["plan"], "team");

    // Unknown plans and other fields are refused, naming them; nothing changes.
    let message = assert_error(
        &kg.admin("PATCH", &path, Some(json!({"plan": "gold"}))),
        422,
        "invalid_body",
    );
    assert!(
        message.contains("gold") && message.contains("pro"),
        "{message}"
    );
    for (body, field) in [
        (json!({}), "plan"),
        (json!({"name": "x"}), "name"),
        (json!({"plan": 7}), "plan"),
    ] {
        let message = assert_error(
            &kg.admin("PATCH", &path, Some(body.clone())),
            422,
            "invalid_body",
        );
        assert!(message.contains(field), "{body}: {message}");
    }
    assert_eq!(kg.admin("GET", &path, None).json()["plan"], "team");

    let r = kg.admin("PATCH", &path, Some(json!({"plan": null})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["plan"], Value::Null);
    assert_eq!(kg.admin("GET", &path, None).json()["plan"], Value::Null);

    let r = kg.admin(
        "PATCH",
        &format!("{A}/accounts/acc_missing"),
        Some(json!({"plan": "pro"})),
    );
    assert_eq!(assert_error(&r, 404, "not_found"), "account not found");

    let r = kg.admin("GET", &format!("{A}/audit?target={account}"), None);
    let details: Vec<String> = r.json()["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "account.plan")
        .map(|e| e["detail"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        details,
        ["plan team -> none", "plan pro -> team", "plan none -> pro"]
    );
}

#[test]
fn credits_balance_adjust_set_and_transactions() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let credits = format!("{A}/accounts/{account}/credits");
    let transactions = format!("{A}/accounts/{account}/transactions");

    let r = kg.admin("GET", &credits, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"balance": 0}));

    let r = kg.admin(
        "POST",
        &credits,
        Some(json!({"delta": 100, "reason": "initial"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"balance": 100}));
    let r = kg.admin("POST", &credits, Some(json!({"delta": -30})));
    assert_eq!(r.json(), json!({"balance": 70}));
    // Never below zero: 409, and nothing changes.
    let r = kg.admin("POST", &credits, Some(json!({"delta": -71})));
    let message = assert_error(&r, 409, "conflict");
    assert!(message.contains("below zero"), "{message}");
    assert_eq!(
        kg.admin("GET", &credits, None).json(),
        json!({"balance": 70})
    );

    let r = kg.admin(
        "PUT",
        &credits,
        Some(json!({"balance": 5, "reason": "reset"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"balance": 5}));
    // The account view carries the balance too.
    let r = kg.admin("GET", &format!("{A}/accounts/{account}"), None);
    assert_eq!(r.json()["credits"], 5);

    // Invalid bodies name the field.
    for (method, body, field) in [
        ("POST", json!({"delta": 0}), "delta"),
        ("POST", json!({}), "delta"),
        ("POST", json!({"delta": "10"}), "delta"),
        ("POST", json!({"delta": 1.5}), "delta"),
        ("POST", json!({"delta": 1, "reason": ""}), "reason"),
        ("POST", json!({"delta": 1, "memo": "x"}), "memo"),
        ("PUT", json!({"balance": -1}), "balance"),
        (
            "PUT",
            json!({"balance": 9_007_199_254_740_992_i64}),
            "balance",
        ),
        ("PUT", json!({}), "balance"),
    ] {
        let r = kg.admin(method, &credits, Some(body.clone()));
        let message = assert_error(&r, 422, "invalid_body");
        assert!(message.contains(field), "{method} {body}: {message}");
    }
    assert_eq!(
        kg.admin("GET", &credits, None).json(),
        json!({"balance": 5})
    );

    // Transactions, oldest first.
    let r = kg.admin("GET", &transactions, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let all = r.json();
    assert_eq!(all["next"], Value::Null);
    let list = all["transactions"]
        .as_array()
        .expect("transactions")
        .clone();
    let summary: Vec<(i64, &str, i64)> = list
        .iter()
        .map(|t| {
            (
                t["delta"].as_i64().unwrap_or(0),
                t["reason"].as_str().unwrap_or(""),
                t["balance_after"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (100, "initial", 100),
            (-30, "deduction", 70),
            (-65, "reset", 5)
        ]
    );
    for t in &list {
        assert!(t["id"].is_i64(), "{t}");
        assert_eq!(t["key_id"], Value::Null);
        assert!(is_rfc3339_utc(&t["created_at"]), "{t}");
    }

    // Paging: `next` is the last id while pages come back full.
    let r = kg.admin("GET", &format!("{transactions}?limit=2"), None);
    let page1 = r.json();
    assert_eq!(page1["transactions"].as_array().map(Vec::len), Some(2));
    assert_eq!(page1["transactions"][0], list[0]);
    let next = page1["next"].as_str().expect("next").to_string();
    assert_eq!(next, list[1]["id"].to_string());
    let r = kg.admin("GET", &format!("{transactions}?limit=2&after={next}"), None);
    let page2 = r.json();
    assert_eq!(page2["transactions"], json!([list[2].clone()]));
    assert_eq!(page2["next"], Value::Null);
    let r = kg.admin("GET", &format!("{transactions}?after=abc"), None);
    let message = assert_error(&r, 400, "invalid_query");
    assert!(message.contains("after"), "{message}");

    // Unknown accounts.
    for (method, path, body) in [
        ("GET", format!("{A}/accounts/acc_missing/credits"), None),
        (
            "POST",
            format!("{A}/accounts/acc_missing/credits"),
            Some(json!({"delta": 1})),
        ),
        (
            "PUT",
            format!("{A}/accounts/acc_missing/credits"),
            Some(json!({"balance": 1})),
        ),
        (
            "GET",
            format!("{A}/accounts/acc_missing/transactions"),
            None,
        ),
    ] {
        let r = kg.admin(method, &path, body);
        assert_eq!(
            assert_error(&r, 404, "not_found"),
            "account not found",
            "{method} {path}"
        );
    }

    // Every change is audited.
    let r = kg.admin("GET", &format!("{A}/audit?target={account}"), None);
    let actions: Vec<String> = r.json()["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        actions,
        [
            "credits.set",
            "credits.adjust",
            "credits.adjust",
            "account.create"
        ]
    );
}

#[test]
fn key_rate_limits_are_set_and_cleared() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let limit = json!({"requests": 10, "per_seconds": 60, "burst": 20});
    let (id, _) = kg.create_key(&account, json!({"rate_limit": limit}));
    let path = format!("{A}/keys/{id}");
    assert_eq!(kg.admin("GET", &path, None).json()["rate_limit"], limit);
    let r = kg.admin("GET", &format!("{A}/keys?account_id={account}"), None);
    assert_eq!(r.json()["keys"][0]["rate_limit"], limit);

    let other = json!({"requests": 1, "per_seconds": 1, "burst": 1});
    let r = kg.admin("PATCH", &path, Some(json!({"rate_limit": other})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["rate_limit"], other);
    // Other changes leave it.
    let r = kg.admin("PATCH", &path, Some(json!({"name": "renamed"})));
    assert_eq!(r.json()["rate_limit"], other);
    assert_eq!(kg.admin("GET", &path, None).json()["rate_limit"], other);

    let r = kg.admin("PATCH", &path, Some(json!({"rate_limit": null})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["rate_limit"], Value::Null);
    assert_eq!(
        kg.admin("GET", &path, None).json()["rate_limit"],
        Value::Null
    );

    // A key created with `null` has none.
    let (plain, _) = kg.create_key(&account, json!({"rate_limit": null}));
    assert_eq!(
        kg.admin("GET", &format!("{A}/keys/{plain}"), None).json()["rate_limit"],
        Value::Null
    );

    for (body, field) in [
        (
            json!({"requests": 0, "per_seconds": 1, "burst": 1}),
            "rate_limit.requests",
        ),
        (
            json!({"requests": 1, "per_seconds": 0, "burst": 1}),
            "rate_limit.per_seconds",
        ),
        (
            json!({"requests": 1, "per_seconds": 1, "burst": 0}),
            "rate_limit.burst",
        ),
        (json!({"requests": 1, "per_seconds": 1}), "burst"),
        (
            json!({"requests": -1, "per_seconds": 1, "burst": 1}),
            "rate_limit: requests",
        ),
        (json!([1, 1, 1]), "rate_limit"),
        (
            json!({"requests": 1, "per_seconds": 1, "burst": 1, "x": 1}),
            "x",
        ),
        (json!("10/s"), "rate_limit"),
    ] {
        let r = kg.admin("PATCH", &path, Some(json!({"rate_limit": body})));
        let message = assert_error(&r, 422, "invalid_body");
        assert!(message.contains(field), "PATCH {body}: {message}");
        let r = kg.admin(
            "POST",
            &format!("{A}/keys"),
            Some(json!({"account_id": account, "name": "k", "rate_limit": body})),
        );
        let message = assert_error(&r, 422, "invalid_body");
        assert!(message.contains(field), "POST {body}: {message}");
    }
    assert_eq!(
        kg.admin("GET", &path, None).json()["rate_limit"],
        Value::Null
    );
}

#[test]
fn key_resources_are_set_checked_and_cleared() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let res = json!({"projects": ["p1", "p-2.x:y"], "envs": []});
    let (id, _) = kg.create_key(&account, json!({"resources": res}));
    let path = format!("{A}/keys/{id}");
    assert_eq!(kg.admin("GET", &path, None).json()["resources"], res);
    let r = kg.admin("GET", &format!("{A}/keys?account_id={account}"), None);
    assert_eq!(r.json()["keys"][0]["resources"], res);

    // Duplicate ids are dropped, order kept.
    let r = kg.admin(
        "PATCH",
        &path,
        Some(json!({"resources": {"teams": ["b", "a", "b"]}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["resources"], json!({"teams": ["b", "a"]}));
    // Other changes leave them; null clears them.
    let r = kg.admin("PATCH", &path, Some(json!({"name": "renamed"})));
    assert_eq!(r.json()["resources"], json!({"teams": ["b", "a"]}));
    let r = kg.admin("PATCH", &path, Some(json!({"resources": null})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["resources"], Value::Null);
    assert_eq!(
        kg.admin("GET", &path, None).json()["resources"],
        Value::Null
    );
    let (plain, _) = kg.create_key(&account, json!({"resources": null}));
    assert_eq!(
        kg.admin("GET", &format!("{A}/keys/{plain}"), None).json()["resources"],
        Value::Null
    );

    for (body, field) in [
        (json!({"my projects": ["p1"]}), "my projects"),
        (json!({"projects": ["p/1"]}), "p/1"),
        (json!({"projects": [""]}), "resources.projects"),
        (json!({"projects": ["x".repeat(65)]}), "resources.projects"),
        (json!({"": ["p1"]}), "resources"),
        (json!({"projects": "p1"}), "resources"),
        (json!(["p1"]), "resources"),
    ] {
        let r = kg.admin("PATCH", &path, Some(json!({"resources": body})));
        let message = assert_error(&r, 422, "invalid_body");
        assert!(message.contains(field), "PATCH {body}: {message}");
        let r = kg.admin(
            "POST",
            &format!("{A}/keys"),
            Some(json!({"account_id": account, "name": "k", "resources": body})),
        );
        let message = assert_error(&r, 422, "invalid_body");
        assert!(message.contains(field), "POST {body}: {message}");
    }
    assert_eq!(
        kg.admin("GET", &path, None).json()["resources"],
        Value::Null
    );
    let r = kg.admin("GET", &format!("{A}/audit?target={id}"), None);
    assert!(r.body.contains("resources=teams=[b,a]"), "{}", r.body);
}

/// Key metadata: `{}` unless given on create; returned by get and list; replaced whole by a
/// PATCH that names it and kept by one that does not; carried to a rotation's successor;
/// refused when null, not an object or over 16 KiB; audited by field name, never by value.
#[test]
fn key_metadata_on_create_update_rotate_and_lists() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let given = json!({ "customer": "cust-42", "source": { "system": "crm", "ids": [1, 2] } });
    let created = admin_ok(
        &kg,
        "POST",
        &format!("{A}/keys"),
        Some(json!({ "account_id": account, "name": "tagged", "metadata": given })),
    );
    assert_eq!(created["metadata"], given);
    let id = created["id"].as_str().expect("id").to_string();
    let key = format!("{A}/keys/{id}");
    assert_eq!(admin_ok(&kg, "GET", &key, None)["metadata"], given);
    let (plain, _) = kg.create_key(&account, json!({}));
    assert_eq!(
        admin_ok(&kg, "GET", &format!("{A}/keys/{plain}"), None)["metadata"],
        json!({})
    );
    let listed = admin_ok(&kg, "GET", &format!("{A}/keys?account_id={account}"), None);
    assert_eq!(listed["keys"][0]["metadata"], given);
    assert_eq!(listed["keys"][1]["metadata"], json!({}));

    let renamed = admin_ok(&kg, "PATCH", &key, Some(json!({ "name": "renamed" })));
    assert_eq!(renamed["metadata"], given);
    let replaced = json!({ "customer": "cust-43" });
    let patched = admin_ok(&kg, "PATCH", &key, Some(json!({ "metadata": replaced })));
    assert_eq!(patched["metadata"], replaced);
    assert_eq!(patched["name"], "renamed");

    for (body, message) in [
        (
            json!({ "metadata": null }),
            "Failed to deserialize the JSON body into the target type: metadata: invalid type: null, expected a map at line 1 column 16",
        ),
        (
            json!({ "metadata": "c_44" }),
            "Failed to deserialize the JSON body into the target type: metadata: invalid type: string \"c_44\", expected a map at line 1 column 18",
        ),
        (
            json!({ "metadata": { "blob": "x".repeat(16 * 1024) } }),
            "`metadata` must be at most 16384 bytes of JSON (is 16395)",
        ),
    ] {
        let r = kg.admin("PATCH", &key, Some(body.clone()));
        assert_eq!(assert_error(&r, 422, "invalid_body"), message);
        let r = kg.admin(
            "POST",
            &format!("{A}/keys"),
            Some(json!({ "account_id": account, "name": "k", "metadata": body["metadata"] })),
        );
        assert_error(&r, 422, "invalid_body");
    }
    assert_eq!(admin_ok(&kg, "GET", &key, None)["metadata"], replaced);

    let rotated = admin_ok(&kg, "POST", &format!("{key}/rotate"), None);
    assert_eq!(rotated["metadata"], replaced);
    assert_eq!(rotated["old"]["metadata"], replaced);
    let cleared = admin_ok(&kg, "PATCH", &key, Some(json!({ "metadata": {} })));
    assert_eq!(cleared["metadata"], json!({}));

    let audit = admin_ok(&kg, "GET", &format!("{A}/audit?target={id}"), None);
    let details: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.ends_with("metadata=[customer,source]")),
        "{details:?}"
    );
    assert!(details.contains(&"metadata=[customer]"), "{details:?}");
    assert!(details.contains(&"metadata=[]"), "{details:?}");
    assert!(
        !audit.to_string().contains("cust-"),
        "values stay out: {audit}"
    );
}
