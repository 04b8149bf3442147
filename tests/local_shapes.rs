//! Local answers in a provider's documented shape, through the real binary: account metadata
//! set over the admin API, placed by `body` templates as JSON values (Enrow's account info with
//! its webhooks, Enrich-style transactions with a pagination object), on SQLite (across a
//! restart) and on Redis; and `check-config` refusing a `body` that cannot apply.

mod common;

use std::process::Command;

use common::redis_server::RedisServer;
use common::*;
use serde_json::{json, Value};

const ROUTES: &str = r#"
[[routes]]
name = "info"
path = "/account/info"
local = "balance"
body = '{"credits": {balance}, "webhooks": {metadata.webhooks}}'

[[routes]]
name = "wallet"
path = "/v1/wallet/transactions"
local = "transactions"
body = '''
{"success": true,
 "data": {"transactions": {items},
          "pagination": {"next_cursor": {cursor}, "has_more": {has_more}},
          "balance": {balance}, "team": "{metadata.team.name}"}}
'''
"#;

fn options(echo: &Echo) -> Options {
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = ROUTES.into();
    opts
}

fn create_account(kg: &Keygate, body: Value) -> Value {
    let r = kg.admin("POST", "/admin/v1/accounts", Some(body));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

fn top_up(kg: &Keygate, account: &str, delta: i64) {
    let r = kg.admin(
        "POST",
        &format!("/admin/v1/accounts/{account}/credits"),
        Some(json!({ "delta": delta })),
    );
    assert_eq!(r.status, 200, "top up: {}", r.body);
}

/// Enrow's documented account info, byte for byte, then metadata that would break text
/// splicing, still answered as valid JSON holding exactly what was stored.
fn enrow_account_info(kg: &Keygate) {
    let account = create_account(
        kg,
        json!({ "name": "enrow", "metadata": { "webhooks": ["https://your-app.com/webhooks/enrow"] } }),
    );
    assert_eq!(
        account["metadata"],
        json!({ "webhooks": ["https://your-app.com/webhooks/enrow"] })
    );
    let id = account["id"].as_str().expect("id").to_string();
    top_up(kg, &id, 8500);
    let (_, key) = kg.create_key(&id, json!({}));
    let r = call(kg, "/account/info", &key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        r#"{"credits":8500,"webhooks":["https://your-app.com/webhooks/enrow"]}"#
    );

    let tricky = json!({ "webhooks": ["https://a.example/h?q=\"x\"}],{", "\u{2028}\\"] });
    let r = kg.admin(
        "PATCH",
        &format!("/admin/v1/accounts/{id}"),
        Some(json!({ "metadata": tricky })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["metadata"], tricky);
    let r = call(kg, "/account/info", &key);
    let parsed: Value =
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body));
    assert_eq!(
        parsed,
        json!({ "credits": 8500, "webhooks": tricky["webhooks"] })
    );

    // Metadata without the field places null; the balance follows charges.
    let r = kg.admin(
        "PATCH",
        &format!("/admin/v1/accounts/{id}"),
        Some(json!({ "metadata": {} })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    top_up(kg, &id, -500);
    let r = call(kg, "/account/info", &key);
    assert_eq!(r.body, r#"{"credits":8000,"webhooks":null}"#);
}

/// A paged list in the template's shape: items, the cursor to pass as `after`, `has_more`.
fn transactions_with_pagination(kg: &Keygate) -> (String, String) {
    let account = create_account(
        kg,
        json!({ "name": "enrich", "metadata": { "team": { "name": "Growth \"A\"" } } }),
    );
    let id = account["id"].as_str().expect("id").to_string();
    for delta in [10, 20, 30] {
        top_up(kg, &id, delta);
    }
    let (_, key) = kg.create_key(&id, json!({}));
    let r = call(kg, "/v1/wallet/transactions?limit=2", &key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .starts_with(r#"{"success":true,"data":{"transactions":[{"#),
        "the template's order: {}",
        r.body
    );
    let first = r.json();
    let data = &first["data"];
    let items = data["transactions"].as_array().expect("items");
    assert_eq!(
        items.iter().map(|i| i["delta"].clone()).collect::<Vec<_>>(),
        [json!(10), json!(20)]
    );
    assert_eq!(data["pagination"]["has_more"], true);
    assert_eq!(data["balance"], 60);
    assert_eq!(data["team"], "Growth \"A\"");
    let cursor = data["pagination"]["next_cursor"]
        .as_str()
        .expect("a cursor string")
        .to_string();
    let r = call(
        kg,
        &format!("/v1/wallet/transactions?limit=2&after={cursor}"),
        &key,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let data = &r.json()["data"];
    assert_eq!(data["transactions"].as_array().map(Vec::len), Some(1));
    assert_eq!(data["transactions"][0]["delta"], 30);
    assert_eq!(
        data["pagination"],
        json!({ "next_cursor": null, "has_more": false })
    );
    (id, key)
}

#[test]
fn documented_shapes_from_metadata_balance_and_pages_on_sqlite_across_a_restart() {
    let echo = Echo::start();
    let mut kg = Keygate::start(&options(&echo));
    enrow_account_info(&kg);
    let (id, key) = transactions_with_pagination(&kg);
    kg.restart();
    let r = kg.admin("GET", &format!("/admin/v1/accounts/{id}"), None);
    assert_eq!(
        r.json()["metadata"],
        json!({ "team": { "name": "Growth \"A\"" } })
    );
    let r = call(&kg, "/v1/wallet/transactions?limit=1", &key);
    assert_eq!(r.json()["data"]["team"], "Growth \"A\"", "{}", r.body);
    assert_eq!(echo.hits(), 0, "local answers never reach the upstream");
}

#[test]
fn documented_shapes_on_redis() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let mut opts = Options::redis(echo.addr, &redis.url());
    opts.routes_toml = ROUTES.into();
    let kg = Keygate::start(&opts);
    enrow_account_info(&kg);
    transactions_with_pagination(&kg);
}

#[test]
fn metadata_must_be_an_object_within_bounds() {
    let echo = Echo::start();
    let kg = Keygate::start(&options(&echo));
    for bad in [json!([1]), json!("x"), Value::Null] {
        let r = kg.admin(
            "POST",
            "/admin/v1/accounts",
            Some(json!({ "name": "a", "metadata": bad })),
        );
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
    }
    let big = "x".repeat(17 * 1024);
    let r = kg.admin(
        "POST",
        "/admin/v1/accounts",
        Some(json!({ "name": "a", "metadata": { "big": big } })),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("metadata"), "{}", r.body);
    let id = kg.create_account("plain");
    let r = kg.admin("GET", &format!("/admin/v1/accounts/{id}"), None);
    assert_eq!(r.json()["metadata"], json!({}));
    let r = kg.admin(
        "PATCH",
        &format!("/admin/v1/accounts/{id}"),
        Some(json!({})),
    );
    assert_eq!(r.status, 422, "{}", r.body);
}

/// A `body` that cannot shape the answer is a `check-config` error naming the route's line
/// (it used to be accepted and ignored).
#[test]
fn check_config_refuses_a_body_that_cannot_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (route, needle) in [
        (
            "path = \"/v1/auth/exchange\"\nlocal = \"exchange\"\nbody = '{\"token\":1}'",
            "answers a fixed shape",
        ),
        (
            "path = \"/v1/info\"\nlocal = \"balance\"\nbody = '{\"items\":{items}}'",
            "`{items}` is not a placeholder of a `balance` endpoint",
        ),
        (
            "path = \"/v1/info\"\nlocal = \"balance\"\nbody = '{\"credits\":\"{balance} left\"}'",
            "inside a string",
        ),
    ] {
        let config = dir.path().join("keygate.toml");
        std::fs::write(
            &config,
            format!("[upstreams.api]\naddress = \"127.0.0.1:9\"\n\n[[routes]]\n{route}\n"),
        )
        .expect("write config");
        let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("check-config")
            .arg(&config)
            .output()
            .expect("run check-config");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{route}: accepted:\n{text}");
        assert!(
            text.contains("routes[0].body") && text.contains(needle),
            "{route}: {text}"
        );
    }
}
