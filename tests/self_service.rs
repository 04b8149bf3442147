//! Self-service key changes go through the same key service as the admin API, through the real
//! binary: they are audited with the user as the actor, validated with the admin API's
//! field-naming messages, and a token cut-off that cannot be written is 503 (in the configured
//! error format) for a user as for an operator.

mod common;

use common::*;
use serde_json::{json, Value};

const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdefghijklmnop";
const PASSWORD: &str = "password123";

/// Login plus the three self-service key routes; `extra` is appended (error templates).
fn start(extra: &str) -> (Echo, Keygate, tempfile::TempDir) {
    let echo = Echo::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("jwt_secret");
    std::fs::write(&secret, JWT_SECRET).expect("secret");
    let mut o = Options::new(echo.addr);
    o.routes_toml = format!(
        r#"
[tokens]
secret = {{ file = "{secret}" }}

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
name = "my_key"
path = "/api/keys/{{key_id}}"
local = "key"
auth = "session"

[[routes]]
name = "my_key_rotate"
path = "/api/keys/{{key_id}}/rotate"
methods = ["POST"]
local = "key_rotate"
auth = "session"

[[routes]]
name = "leads"
path = "/v1/leads/{{*rest}}"
upstream = "api"
scopes = ["leads:read"]

[[routes]]
name = "v1"
path = "/v1/{{*rest}}"
upstream = "api"
"#,
        secret = secret.display()
    );
    o.extra_toml = extra.to_string();
    let kg = Keygate::start(&o);
    (echo, kg, dir)
}

/// A member of a new account, logged in: (account id, user id, session token).
fn member(kg: &Keygate) -> (String, String, String) {
    let account = kg.create_account("acme");
    let r = kg.admin(
        "POST",
        "/admin/v1/users",
        Some(json!({"account_id": account, "email": "m@example.com", "password": PASSWORD})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let user = r.json()["id"].as_str().expect("user id").to_string();
    let r = request(
        "POST",
        &kg.url("/api/auth/login"),
        &[],
        Some(&json!({"email": "m@example.com", "password": PASSWORD})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()["token"].as_str().expect("token").to_string();
    (account, user, token)
}

fn mine(kg: &Keygate, method: &str, path: &str, token: &str, body: Option<Value>) -> Resp {
    request(
        method,
        &kg.url(path),
        &[("authorization", &bearer(token))],
        body.as_ref(),
    )
}

/// `(actor, action)` of every audit entry about `target`.
fn audit_of(kg: &Keygate, target: &str) -> Vec<(String, String)> {
    let r = kg.admin("GET", &format!("/admin/v1/audit?target={target}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or("").to_string(),
                e["action"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn has(entries: &[(String, String)], actor: &str, action: &str) -> bool {
    entries.iter().any(|(a, b)| a == actor && b == action)
}

#[test]
fn self_service_changes_are_audited_with_the_user_as_actor() {
    let (_echo, kg, _dir) = start("");
    let (_, user, token) = member(&kg);

    let r = mine(&kg, "POST", "/api/keys", &token, Some(json!({"name": "k"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().expect("id").to_string();
    let r = mine(
        &kg,
        "PATCH",
        &format!("/api/keys/{id}"),
        &token,
        Some(json!({"name": "renamed"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = mine(
        &kg,
        "POST",
        &format!("/api/keys/{id}/rotate"),
        &token,
        Some(json!({})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let new_id = r.json()["id"].as_str().expect("new id").to_string();
    let r = mine(&kg, "DELETE", &format!("/api/keys/{id}"), &token, None);
    assert_eq!(r.status, 200, "{}", r.body);

    let old = audit_of(&kg, &id);
    for action in ["key.create", "key.update", "key.rotate", "key.revoke"] {
        assert!(has(&old, &user, action), "{action} by {user}: {old:?}");
    }
    assert!(!old.iter().any(|(a, _)| a == "admin"), "{old:?}");
    let new = audit_of(&kg, &new_id);
    assert!(has(&new, &user, "key.create"), "{new:?}");

    // The same change by an operator names the operator.
    let r = kg.admin("POST", &format!("/admin/v1/keys/{new_id}/revoke"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(has(&audit_of(&kg, &new_id), "admin", "key.revoke"));
}

#[test]
fn self_service_keys_are_validated_like_the_admin_api() {
    let (_echo, kg, _dir) = start("");
    let (account, _, token) = member(&kg);
    let too_many: Vec<String> = (0..101).map(|i| format!("s{i}")).collect();
    let cases = [
        (
            json!({"name": "k", "resources": {"my projects": ["p1"]}}),
            "resources",
        ),
        (
            json!({"name": "k", "resources": {"projects": ["p/1"]}}),
            "resources.projects",
        ),
        (json!({"name": "k", "scopes": too_many}), "scopes"),
        (json!({"name": "k", "scopes": ["bad scope"]}), "scopes"),
        (json!({"name": "   "}), "name"),
    ];
    for (body, field) in cases {
        let mut admin_body = body.clone();
        admin_body["account_id"] = json!(account);
        let r = kg.admin("POST", "/admin/v1/keys", Some(admin_body));
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        let admin_message = r.json()["error"]["message"]
            .as_str()
            .expect("message")
            .to_string();
        assert!(
            admin_message.contains(&format!("`{field}`")),
            "{body}: {admin_message}"
        );

        let r = mine(&kg, "POST", "/api/keys", &token, Some(body.clone()));
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "invalid_body", "{}", r.body);
        assert_eq!(
            r.json()["error"]["message"],
            format!("Invalid request body: {admin_message}"),
            "{body}"
        );
    }
    // A past expiry is the admin API's 409 (a conflict with the clock, which its document
    // cannot state); the self-service API refuses it in its own format, with the same message.
    let past = json!({"name": "k", "expires_at": "2001-01-01T00:00:00Z"});
    let mut admin_body = past.clone();
    admin_body["account_id"] = json!(account);
    let r = kg.admin("POST", "/admin/v1/keys", Some(admin_body));
    let admin_message = assert_error(&r, 409, "conflict");
    assert!(admin_message.contains("`expires_at`"), "{admin_message}");
    let r = mine(&kg, "POST", "/api/keys", &token, Some(past));
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.json()["error"]["message"], admin_message);
    let r = mine(&kg, "GET", "/api/keys", &token, None);
    assert_eq!(r.json()["keys"], json!([]), "nothing refused was created");

    // Accepted values are normalised alike too: duplicate scopes and resource ids dropped.
    let r = mine(
        &kg,
        "POST",
        "/api/keys",
        &token,
        Some(
            json!({"name": "k", "scopes": ["leads:read", "leads:read"], "resources": {"projects": ["p1", "p1"]}}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["scopes"], json!(["leads:read"]));
    assert_eq!(r.json()["resources"], json!({"projects": ["p1"]}));
}

/// Makes every write of a token cut-off fail inside keygate's own SQLite file (the store the
/// binary really uses), until [`heal_cutoffs`].
fn break_cutoffs(kg: &Keygate) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(kg.data_dir().join("keygate.db")).expect("open db");
    db.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    db.execute_batch(
        "CREATE TRIGGER no_cutoff_insert BEFORE INSERT ON token_cutoffs \
           BEGIN SELECT RAISE(ABORT, 'injected failure'); END; \
         CREATE TRIGGER no_cutoff_update BEFORE UPDATE ON token_cutoffs \
           BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .expect("triggers");
    db
}

fn heal_cutoffs(db: &rusqlite::Connection) {
    db.execute_batch("DROP TRIGGER no_cutoff_insert; DROP TRIGGER no_cutoff_update;")
        .expect("drop triggers");
}

#[test]
fn a_failed_token_cut_is_503_for_a_user_as_for_an_operator() {
    let (_echo, kg, _dir) = start(
        r#"
[errors.store_unavailable]
body = '{"oops":"{reason}"}'
"#,
    );
    let (account, user, token) = member(&kg);
    let r = mine(&kg, "POST", "/api/keys", &token, Some(json!({"name": "k"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().expect("id").to_string();
    let key = r.json()["key"].as_str().expect("key").to_string();
    let (admin_key_id, _) = kg.create_key(&account, json!({}));
    assert_eq!(mine(&kg, "GET", "/v1/x", &key, None).status, 200);

    let db = break_cutoffs(&kg);
    let r = mine(&kg, "DELETE", &format!("/api/keys/{id}"), &token, None);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        r.body, r#"{"oops":"store_unavailable"}"#,
        "the configured format"
    );
    let r = kg.admin(
        "POST",
        &format!("/admin/v1/keys/{admin_key_id}/revoke"),
        None,
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "store_unavailable");

    // The revocation itself committed, applies at once, and is audited.
    let r = mine(&kg, "GET", "/v1/x", &key, None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "key_revoked");
    assert!(has(&audit_of(&kg, &id), &user, "key.revoke"));

    // Retrying once the store takes cut-offs again succeeds.
    heal_cutoffs(&db);
    let r = mine(&kg, "DELETE", &format!("/api/keys/{id}"), &token, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "revoked");
}
