//! Suspending an account, through the real binary: plain suspension is reversible (the keys
//! work again on reactivation), `{"revoke_keys": true}` also revokes every key and cuts every
//! token of the account in one call (nothing comes back on reactivation, nor after a restart),
//! on SQLite and on Redis, from the admin API and from `keygate accounts suspend --revoke-keys`.

mod common;

use std::process::Command;

use common::redis_server::RedisServer;
use common::*;
use serde_json::{json, Value};

const A: &str = "/admin/v1";
const PASSWORD: &str = "password123";

/// The default routes, plus login, a session route and the key exchange.
fn options(echo: &Echo, store_toml: &str) -> Options {
    let mut opts = Options::new(echo.addr);
    opts.store_toml = store_toml.to_string();
    opts.routes_toml = format!(
        r#"{DEFAULT_ROUTES}
[[routes]]
name = "login"
path = "/api/auth/login"
methods = ["POST"]
local = "login"
auth = "none"

[[routes]]
name = "my_keys"
path = "/api/keys"
local = "keys"
auth = "session"

[[routes]]
name = "exchange"
path = "/auth/exchange"
methods = ["POST"]
local = "exchange"
auth = "api_key"

[[routes]]
name = "any"
path = "/any/{{*rest}}"
upstream = "api"
auth = "any"
"#
    );
    opts
}

fn exchange(kg: &Keygate, key: &str) -> String {
    let r = call_with(kg, "POST", "/auth/exchange", Some(key), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_string()
}

fn login(kg: &Keygate, email: &str) -> String {
    let body = json!({"email": email, "password": PASSWORD});
    let r = request("POST", &kg.url("/api/auth/login"), &[], Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["token"].as_str().expect("token").to_string()
}

/// An account with a user, three keys (one of them the user's, one disabled), an exchanged
/// token and a session.
struct Holder {
    account: String,
    keys: Vec<(String, String)>,
    token: String,
    session: String,
}

fn holder(kg: &Keygate, name: &str) -> Holder {
    let account = kg.create_account(name);
    let email = format!("{name}@example.com");
    let user = admin_ok(
        kg,
        "POST",
        &format!("{A}/users"),
        Some(json!({"account_id": account, "email": email, "password": PASSWORD, "role": "admin"})),
    )["id"]
        .as_str()
        .expect("user id")
        .to_string();
    let keys = vec![
        kg.create_key(&account, json!({"name": "one"})),
        kg.create_key(&account, json!({"name": "two", "user_id": user})),
        kg.create_key(&account, json!({"name": "three"})),
    ];
    admin_ok(kg, "POST", &format!("{A}/keys/{}/disable", keys[2].0), None);
    let token = exchange(kg, &keys[0].1);
    let session = login(kg, &email);
    for (_, key) in &keys[..2] {
        assert_eq!(call(kg, "/v1/x", key).status, 200);
    }
    assert_eq!(call(kg, "/any/x", &token).status, 200);
    assert_eq!(call(kg, "/api/keys", &session).status, 200);
    Holder {
        account,
        keys,
        token,
        session,
    }
}

fn key_statuses(kg: &Keygate, account: &str) -> Vec<String> {
    let v = admin_ok(kg, "GET", &format!("{A}/keys?account_id={account}"), None);
    v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["status"].as_str().expect("status").to_string())
        .collect()
}

/// After a suspension with `revoke_keys`: every key revoked, the token and session dead, the
/// other account untouched; reactivation brings the account back but none of its keys.
fn assert_revoked_for_good(kg: &Keygate, echo: &Echo, gone: &Holder, other: &Holder) {
    let hits = echo.hits();
    assert_eq!(key_statuses(kg, &gone.account), ["revoked"; 3]);
    for (_, key) in &gone.keys {
        let r = call(kg, "/v1/x", key);
        assert_error(&r, 401, "key_revoked");
    }
    let r = call(kg, "/any/x", &gone.token);
    assert!(r.status == 401 || r.status == 403, "{}", r.body);
    let r = call(kg, "/api/keys", &gone.session);
    assert!(r.status == 401 || r.status == 403, "{}", r.body);
    let r = call_with(kg, "POST", "/auth/exchange", Some(&gone.keys[0].1), None);
    assert_error(&r, 401, "key_revoked");
    assert_eq!(
        echo.hits(),
        hits,
        "nothing of the account reaches the upstream"
    );

    // The other account's key, token and session still work.
    assert_eq!(call(kg, "/v1/x", &other.keys[0].1).status, 200);
    assert_eq!(call(kg, "/any/x", &other.token).status, 200);
    assert_eq!(call(kg, "/api/keys", &other.session).status, 200);
    assert_eq!(
        key_statuses(kg, &other.account),
        ["active", "active", "disabled"]
    );
}

fn suspend_revoking_everything(store_toml: &str) {
    let echo = Echo::start();
    let mut kg = Keygate::start(&options(&echo, store_toml));
    let gone = holder(&kg, "gone");
    let other = holder(&kg, "other");

    let v = admin_ok(
        &kg,
        "POST",
        &format!("{A}/accounts/{}/suspend", gone.account),
        Some(json!({"revoke_keys": true})),
    );
    assert_eq!(v["status"], "suspended");
    assert_eq!(v["id"], gone.account.as_str());
    assert_revoked_for_good(&kg, &echo, &gone, &other);

    // Reactivated: the account is active, its keys stay revoked.
    let v = admin_ok(
        &kg,
        "POST",
        &format!("{A}/accounts/{}/reactivate", gone.account),
        None,
    );
    assert_eq!(v["status"], "active");
    assert_revoked_for_good(&kg, &echo, &gone, &other);

    // Each key's revocation is audited.
    let audit = admin_ok(&kg, "GET", &format!("{A}/audit?limit=200"), None);
    let revoked: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "key.revoke")
        .filter_map(|e| e["target"].as_str())
        .collect();
    for (id, _) in &gone.keys {
        assert!(revoked.contains(&id.as_str()), "{id} in {audit}");
    }

    // And it all survives a restart.
    kg.restart();
    assert_revoked_for_good(&kg, &echo, &gone, &other);
}

#[test]
fn suspension_with_revoke_keys_revokes_every_key_and_token_on_sqlite() {
    suspend_revoking_everything("");
}

#[test]
fn suspension_with_revoke_keys_revokes_every_key_and_token_on_redis() {
    let redis = RedisServer::start();
    suspend_revoking_everything(&format!(
        "[store]\nbackend = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ));
}

/// Without a body (or with `revoke_keys: false`) suspension parks the keys: refused while
/// suspended, working again on reactivation; tokens made before the suspension stay dead.
#[test]
fn plain_suspension_stays_reversible() {
    let echo = Echo::start();
    let kg = Keygate::start(&options(&echo, ""));
    let h = holder(&kg, "parked");
    for body in [None, Some(json!({"revoke_keys": false}))] {
        let v = admin_ok(
            &kg,
            "POST",
            &format!("{A}/accounts/{}/suspend", h.account),
            body,
        );
        assert_eq!(v["status"], "suspended");
        assert_eq!(
            key_statuses(&kg, &h.account),
            ["active", "active", "disabled"]
        );
        let r = call(&kg, "/v1/x", &h.keys[0].1);
        assert_error(&r, 403, "account_suspended");
        admin_ok(
            &kg,
            "POST",
            &format!("{A}/accounts/{}/reactivate", h.account),
            None,
        );
        for (_, key) in &h.keys[..2] {
            assert_eq!(call(&kg, "/v1/x", key).status, 200);
        }
    }
    assert_eq!(call(&kg, "/any/x", &h.token).status, 403);
    let fresh = exchange(&kg, &h.keys[0].1);
    assert_eq!(call(&kg, "/any/x", &fresh).status, 200);
}

/// A body that is not `{"revoke_keys": bool}` is 422 and changes nothing.
#[test]
fn a_bad_suspend_body_is_422_and_suspends_nothing() {
    let echo = Echo::start();
    let kg = Keygate::start(&options(&echo, ""));
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    for body in [
        json!({"revoke_keys": "yes"}),
        json!({"revoke_keys": null}),
        json!({"revoke": true}),
        json!([true]),
    ] {
        let r = kg.admin(
            "POST",
            &format!("{A}/accounts/{account}/suspend"),
            Some(body.clone()),
        );
        assert_error(&r, 422, "invalid_body");
    }
    let v = admin_ok(&kg, "GET", &format!("{A}/accounts/{account}"), None);
    assert_eq!(v["status"], "active");
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);
}

/// `keygate accounts suspend --revoke-keys` does the same as the API; without the flag the
/// keys are only parked.
#[test]
fn the_cli_flag_revokes_the_keys() {
    let echo = Echo::start();
    let kg = Keygate::start(&options(&echo, ""));
    let cli = |args: &[&str]| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(args)
            .arg("--json")
            .env("KEYGATE_ADMIN_URL", kg.admin_url())
            .env("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("run keygate");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("json output")
    };
    let parked = kg.create_account("parked");
    let (_, parked_key) = kg.create_key(&parked, json!({}));
    let gone = kg.create_account("gone");
    let (_, gone_key) = kg.create_key(&gone, json!({}));

    let v = cli(&["accounts", "suspend", &parked]);
    assert_eq!(v["status"], "suspended");
    let v = cli(&["accounts", "suspend", "--revoke-keys", &gone]);
    assert_eq!(v["status"], "suspended");
    assert_eq!(key_statuses(&kg, &parked), ["active"]);
    assert_eq!(key_statuses(&kg, &gone), ["revoked"]);

    cli(&["accounts", "reactivate", &parked]);
    cli(&["accounts", "reactivate", &gone]);
    assert_eq!(call(&kg, "/v1/x", &parked_key).status, 200);
    assert_error(&call(&kg, "/v1/x", &gone_key), 401, "key_revoked");
}

/// The admin API's document says what the endpoint takes: an optional body with a boolean
/// `revoke_keys` and no other field.
#[test]
fn the_document_describes_the_suspend_body() {
    let (_echo, kg) = start();
    let doc = admin_ok(&kg, "GET", &format!("{A}/openapi.json"), None);
    let body = &doc["paths"]["/admin/v1/accounts/{id}/suspend"]["post"]["requestBody"];
    assert_eq!(body["required"], false, "{body}");
    let schema = &doc["components"]["schemas"]["SuspendAccount"];
    assert_eq!(
        schema["properties"]["revoke_keys"]["type"], "boolean",
        "{schema}"
    );
    assert_eq!(schema["additionalProperties"], false, "{schema}");
}
