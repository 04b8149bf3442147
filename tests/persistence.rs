//! What survives a crash: keys, their status, last-used times, and generated secrets. Every
//! restart is a SIGKILL, so nothing may depend on a clean shutdown.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Polls the key's `last_used_at` until it is set.
fn wait_last_used(kg: &Keygate, id: &str) -> String {
    let mut at = None;
    wait_until("last_used_at to be set", Duration::from_secs(5), || {
        let r = kg.admin("GET", &format!("/admin/v1/keys/{id}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        at = r.json()["last_used_at"].as_str().map(str::to_string);
        at.is_some()
    });
    at.expect("last_used_at is set")
}

#[test]
fn keys_and_their_state_survive_a_crash() {
    let echo = Echo::start();
    let mut kg = Keygate::start(&Options::new(echo.addr));
    let account = kg.create_account("acme");
    let (id, key) = kg.create_key(&account, json!({ "scopes": ["leads:read"] }));
    let (revoked_id, revoked) = kg.create_key(&account, json!({ "name": "old" }));
    let (disabled_id, disabled) = kg.create_key(&account, json!({ "name": "paused" }));
    let suspended = kg.create_account("suspended");
    let (_, suspended_key) = kg.create_key(&suspended, json!({}));

    // last_used_at starts empty and is set (off the request path) after a use.
    let r = kg.admin("GET", &format!("/admin/v1/keys/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["last_used_at"], Value::Null);
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);
    let used_at = wait_last_used(&kg, &id);
    let parsed = chrono::DateTime::parse_from_rfc3339(&used_at).expect("RFC 3339");
    let age = chrono::Utc::now().signed_duration_since(parsed);
    assert!(
        age.num_seconds().abs() < 300,
        "last_used_at is not recent: {used_at}"
    );

    assert_eq!(call(&kg, "/v1/x", &revoked).status, 200);
    let r = kg.admin("POST", &format!("/admin/v1/keys/{revoked_id}/revoke"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = kg.admin(
        "POST",
        &format!("/admin/v1/keys/{disabled_id}/disable"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = kg.admin(
        "POST",
        &format!("/admin/v1/accounts/{suspended}/suspend"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);

    kg.restart();

    assert_eq!(
        call(&kg, "/v1/x", &key).status,
        200,
        "a key must survive a restart"
    );
    let r = get(&kg.url("/leads/x"), &[("x-api-key", &key)]);
    assert_eq!(r.status, 200, "scopes survive: {}", r.body);
    let r = call(&kg, "/v1/x", &revoked);
    assert_eq!((r.status, code(&r).as_str()), (401, "key_revoked"));
    let r = call(&kg, "/v1/x", &disabled);
    assert_eq!((r.status, code(&r).as_str()), (401, "key_disabled"));
    let r = call(&kg, "/v1/x", &suspended_key);
    assert_eq!((r.status, code(&r).as_str()), (403, "account_suspended"));

    // The recorded time survived too.
    let r = kg.admin("GET", &format!("/admin/v1/keys/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["last_used_at"].is_string(), "{}", r.body);
    // And the revoked key is still revoked in the admin view.
    let r = kg.admin("GET", &format!("/admin/v1/keys/{revoked_id}"), None);
    assert_eq!(r.json()["status"], "revoked", "{}", r.body);

    // A key never used before the crash gets its last-used time after it.
    let r = kg.admin("GET", &format!("/admin/v1/keys/{disabled_id}"), None);
    assert_eq!(r.json()["last_used_at"], Value::Null, "{}", r.body);
    let r = kg.admin(
        "POST",
        &format!("/admin/v1/keys/{disabled_id}/enable"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(call(&kg, "/v1/x", &disabled).status, 200);
    wait_last_used(&kg, &disabled_id);

    // New keys can be created after the restart, next to the old ones.
    let (_, fresh) = kg.create_key(&account, json!({}));
    assert_eq!(call(&kg, "/v1/x", &fresh).status, 200);
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);
}

/// A config with no `[secrets]` section: keygate generates the pepper and the admin token into
/// its data directory and reuses them after a crash.
fn generated_secrets_config(slots: &ConfigSlots, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
[server]
threads = 1
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1
data_dir = "{data}"

[listeners]
public = "{public}"
admin = "{admin}"
ops = "{ops}"

[keys]
prefix = "kg_test_"

[usage]
last_used_interval_seconds = 1

[upstreams.api]
address = "{upstream}"

{routes}
"#,
        data = slots.data_dir.display(),
        public = slots.public,
        admin = slots.admin,
        ops = slots.ops,
        routes = DEFAULT_ROUTES,
    )
}

fn admin_with(kg: &Keygate, token: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
    let auth = format!("Bearer {token}");
    request(
        method,
        &format!("{}{}", kg.admin_url(), path),
        &[("authorization", &auth)],
        body.as_ref(),
    )
}

fn read_secret(kg: &Keygate, name: &str) -> (String, u32) {
    let path = kg.data_dir().join(name);
    let value = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} was not generated: {e}", path.display()));
    let mode = std::fs::metadata(&path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777;
    (value, mode)
}

#[test]
fn generated_secrets_are_private_and_reused_after_a_crash() {
    let echo = Echo::start();
    let mut kg = Keygate::start_with_config(|slots| generated_secrets_config(slots, echo.addr));

    let (pepper, pepper_mode) = read_secret(&kg, "pepper");
    let (token, token_mode) = read_secret(&kg, "admin_token");
    assert_eq!(pepper_mode, 0o600, "pepper file mode");
    assert_eq!(token_mode, 0o600, "admin_token file mode");
    assert!(pepper.trim().len() >= 32, "pepper too short");
    assert!(token.trim().len() >= 32, "admin token too short");
    assert_ne!(pepper, token);
    let token = token.trim().to_string();
    assert!(
        !kg.log().contains(&token),
        "the log must not show the admin token"
    );
    assert!(
        !kg.log().contains(pepper.trim()),
        "the log must not show the pepper"
    );

    // The generated token is the admin token; the harness one is not.
    let r = kg.admin("POST", "/admin/v1/accounts", Some(json!({ "name": "x" })));
    assert_eq!(
        r.status, 401,
        "a token that is not the generated one: {}",
        r.body
    );
    let r = admin_with(
        &kg,
        &token,
        "POST",
        "/admin/v1/accounts",
        Some(json!({ "name": "acme" })),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let account = r.json()["id"].as_str().expect("account id").to_string();
    let r = admin_with(
        &kg,
        &token,
        "POST",
        "/admin/v1/keys",
        Some(json!({ "account_id": account, "name": "k" })),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let key = r.json()["key"].as_str().expect("key").to_string();
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);

    kg.restart();

    // Same files, same values, same modes.
    assert_eq!(read_secret(&kg, "pepper"), (pepper, 0o600));
    let (token_after, mode_after) = read_secret(&kg, "admin_token");
    assert_eq!((token_after.trim(), mode_after), (token.as_str(), 0o600));
    // The key still hashes to the stored value (same pepper) and the old token still works.
    let r = call(&kg, "/v1/x", &key);
    assert_eq!(
        r.status, 200,
        "a key must survive a restart with a generated pepper: {}",
        r.body
    );
    let r = admin_with(
        &kg,
        &token,
        "GET",
        &format!("/admin/v1/accounts/{account}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
}
