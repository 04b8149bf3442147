//! Regression tests for issue 10 items 3, 4 and 9, through the real binary:
//!
//! - a key update (or a user change) that narrows what a token may do cuts the key's (or
//!   user's) tokens at once; a widening one leaves them working;
//! - token cut-offs are precise to the millisecond: a session or access token made right after
//!   a cut works, one made before it does not;
//! - self-service key creation is bounded: the route's rate limit, a per-user key cap, and a
//!   configured list of scopes users may grant themselves.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::redis_server::RedisServer;
use common::*;
use serde_json::{json, Value};

const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdefghijklmnop";
const PASSWORD: &str = "password123";

/// keygate with login, the self-service key routes, the exchange and the default routes;
/// `keys_extra` goes into the `[keys]` section, `my_keys_extra` into the `/api/keys` route.
fn start_with(keys_extra: &str, my_keys_extra: &str) -> (Echo, Keygate) {
    start_on("", keys_extra, my_keys_extra)
}

/// [`start_with`] on the store `store_toml` names (empty: the embedded SQLite).
fn start_on(store_toml: &str, keys_extra: &str, my_keys_extra: &str) -> (Echo, Keygate) {
    let echo = Echo::start();
    let upstream = echo.addr;
    let kg = Keygate::start_with_config(|s| {
        let secret = s.data_dir.with_file_name("jwt_secret");
        std::fs::write(&secret, JWT_SECRET).expect("secret");
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

[secrets]
pepper = {{ env = "KEYGATE_TEST_PEPPER" }}
admin_token = {{ env = "KEYGATE_TEST_ADMIN_TOKEN" }}

[keys]
prefix = "kg_test_"
{keys_extra}

{store_toml}

[tokens]
secret = {{ file = "{secret}" }}

[upstreams.api]
address = "{upstream}"

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
{my_keys_extra}

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
name = "exchange"
path = "/v1/auth/exchange"
methods = ["POST"]
local = "exchange"
auth = "api_key"

[[routes]]
name = "leads"
path = "/leads/{{*rest}}"
upstream = "api"
auth = "any"
scopes = ["leads:read"]

[[routes]]
name = "projects"
path = "/v1/projects/{{project}}/{{*rest}}"
upstream = "api"
auth = "any"
resources = {{ project = "projects" }}

[[routes]]
name = "v1"
path = "/v1/{{*rest}}"
upstream = "api"
auth = "any"
"#,
            data = s.data_dir.display(),
            public = s.public,
            admin = s.admin,
            ops = s.ops,
            secret = secret.display(),
        )
    });
    (echo, kg)
}

fn start() -> (Echo, Keygate) {
    start_with("", "")
}

fn create_user(kg: &Keygate, account: &str, email: &str, role: &str) -> String {
    let body = json!({"account_id": account, "email": email, "password": PASSWORD, "role": role});
    admin_ok(kg, "POST", "/admin/v1/users", Some(body))["id"]
        .as_str()
        .expect("user id")
        .to_string()
}

fn login(kg: &Keygate, email: &str, password: &str) -> String {
    let r = request(
        "POST",
        &kg.url("/api/auth/login"),
        &[],
        Some(&json!({"email": email, "password": password})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["token"].as_str().expect("token").to_string()
}

fn exchange(kg: &Keygate, key: &str) -> String {
    let r = call_with(kg, "POST", "/v1/auth/exchange", Some(key), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_string()
}

fn mine(kg: &Keygate, method: &str, path: &str, token: &str, body: Option<Value>) -> Resp {
    call_with(kg, method, path, Some(token), body.as_ref())
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .expect("timestamp")
        .to_rfc3339()
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A JWT's claims, read without verifying (the test only looks).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

/// Waits until the wall clock is early in a second, so that a short sequence of calls that
/// follows falls inside one second: with whole-second cut-offs that is exactly the case that
/// refused fresh tokens. Waits at most a second.
fn early_in_a_second() {
    wait_until("the start of a second", Duration::from_secs(2), || {
        chrono::Utc::now().timestamp_subsec_millis() < 100
    });
}

// ---------------------------------------------------------------- item 3: tokens narrow

/// Each narrowing update kills the token exchanged before it, and a token exchanged after it
/// works with the narrower rights.
#[test]
fn a_narrowing_key_update_cuts_the_keys_tokens() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let later = rfc3339(unix_now() + 3600);
    let much_later = rfc3339(unix_now() + 7200);
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "a scope removed",
            json!({"scopes": ["leads:read", "other"]}),
            json!({"scopes": ["other"]}),
        ),
        (
            "a resource id removed",
            json!({"resources": {"projects": ["p1", "p2"]}}),
            json!({"resources": {"projects": ["p2"]}}),
        ),
        (
            "a resource restriction added",
            json!({}),
            json!({"resources": {"projects": ["p2"]}}),
        ),
        (
            "a resource kind restricted",
            json!({"resources": {"teams": ["t1"]}}),
            json!({"resources": {"teams": ["t1"], "projects": ["p2"]}}),
        ),
        (
            "an expiry set",
            json!({}),
            json!({"expires_at": later.clone()}),
        ),
        (
            "the expiry moved earlier",
            json!({"expires_at": much_later}),
            json!({"expires_at": later}),
        ),
        (
            "the expiry moved into the past",
            json!({}),
            json!({"expires_at": rfc3339(unix_now() - 60)}),
        ),
        (
            "the rate limit lowered",
            json!({"rate_limit": {"requests": 100, "per_seconds": 1, "burst": 100}}),
            json!({"rate_limit": {"requests": 1, "per_seconds": 60, "burst": 1}}),
        ),
        (
            "the rate limit's burst lowered",
            json!({"rate_limit": {"requests": 100, "per_seconds": 1, "burst": 100}}),
            json!({"rate_limit": {"requests": 100, "per_seconds": 1, "burst": 2}}),
        ),
        (
            "a rate limit set where the key had none",
            json!({}),
            json!({"rate_limit": {"requests": 1, "per_seconds": 60, "burst": 1}}),
        ),
    ];
    for (what, create, patch) in cases {
        let (id, key) = kg.create_key(&account, create);
        let jwt = exchange(&kg, &key);
        assert_eq!(call(&kg, "/v1/x", &jwt).status, 200, "{what}: works before");
        admin_ok(&kg, "PATCH", &format!("/admin/v1/keys/{id}"), Some(patch));
        let r = call(&kg, "/v1/x", &jwt);
        assert_eq!(r.status, 401, "{what}: the old token is cut: {}", r.body);
    }
}

/// A token exchanged after a narrowing update carries the narrower rights.
#[test]
fn a_token_exchanged_after_a_narrowing_update_has_the_narrower_rights() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let (id, key) = kg.create_key(
        &account,
        json!({"scopes": ["leads:read"], "resources": {"projects": ["p1", "p2"]}}),
    );
    let old = exchange(&kg, &key);
    assert_eq!(call(&kg, "/leads/x", &old).status, 200);
    assert_eq!(call(&kg, "/v1/projects/p1/x", &old).status, 200);
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/keys/{id}"),
        Some(json!({"scopes": [], "resources": {"projects": ["p2"]}})),
    );
    assert_eq!(call(&kg, "/leads/x", &old).status, 401);
    let new = exchange(&kg, &key);
    assert_eq!(call(&kg, "/v1/x", &new).status, 200);
    let r = call(&kg, "/leads/x", &new);
    assert_eq!((r.status, code(&r)), (403, "insufficient_scope".into()));
    let r = call(&kg, "/v1/projects/p1/x", &new);
    assert_eq!((r.status, code(&r)), (403, "resource_forbidden".into()));
    assert_eq!(call(&kg, "/v1/projects/p2/x", &new).status, 200);
}

/// Renaming, adding scopes, lifting or widening resources, moving the expiry later or clearing
/// it, and raising the rate limit take nothing away: the token keeps working.
#[test]
fn a_widening_key_update_keeps_the_keys_tokens() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let cases: Vec<(&str, Value, Value)> = vec![
        ("a rename", json!({}), json!({"name": "renamed"})),
        (
            "a scope added",
            json!({"scopes": ["other"]}),
            json!({"scopes": ["other", "leads:read"]}),
        ),
        (
            "the same scopes, reordered",
            json!({"scopes": ["a", "b"]}),
            json!({"scopes": ["b", "a"]}),
        ),
        (
            "a resource id added",
            json!({"resources": {"projects": ["p1"]}}),
            json!({"resources": {"projects": ["p1", "p2"]}}),
        ),
        (
            "a resource kind unrestricted",
            json!({"resources": {"projects": ["p1"], "teams": ["t1"]}}),
            json!({"resources": {"projects": ["p1"]}}),
        ),
        (
            "the resource restriction lifted",
            json!({"resources": {"projects": ["p1"]}}),
            json!({"resources": null}),
        ),
        (
            "the expiry moved later",
            json!({"expires_at": rfc3339(unix_now() + 3600)}),
            json!({"expires_at": rfc3339(unix_now() + 7200)}),
        ),
        (
            "the expiry cleared",
            json!({"expires_at": rfc3339(unix_now() + 3600)}),
            json!({"expires_at": null}),
        ),
        (
            "the rate limit raised",
            json!({"rate_limit": {"requests": 10, "per_seconds": 1, "burst": 10}}),
            json!({"rate_limit": {"requests": 100, "per_seconds": 1, "burst": 100}}),
        ),
    ];
    for (what, create, patch) in cases {
        let (id, key) = kg.create_key(&account, create);
        let jwt = exchange(&kg, &key);
        assert_eq!(call(&kg, "/v1/x", &jwt).status, 200, "{what}: works before");
        admin_ok(&kg, "PATCH", &format!("/admin/v1/keys/{id}"), Some(patch));
        let r = call(&kg, "/v1/x", &jwt);
        assert_eq!(r.status, 200, "{what}: the token still works: {}", r.body);
    }
}

/// A user's role lowered, or the user disabled, cuts the user's sessions and their keys'
/// tokens; a role raised (or a disabled user enabled) cuts nothing.
#[test]
fn a_users_role_lowered_cuts_their_tokens_and_raised_does_not() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let user = create_user(&kg, &account, "u@example.com", "read_only");
    let session = login(&kg, "u@example.com", PASSWORD);
    let r = mine(
        &kg,
        "POST",
        "/api/keys",
        &session,
        Some(json!({"name": "k"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let key = r.json()["key"].as_str().expect("key").to_string();
    let jwt = exchange(&kg, &key);

    // Raised: nothing is cut.
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/users/{user}"),
        Some(json!({"role": "admin"})),
    );
    assert_eq!(mine(&kg, "GET", "/api/keys", &session, None).status, 200);
    assert_eq!(call(&kg, "/v1/x", &jwt).status, 200);

    // Lowered (admin -> member): cut.
    let session = login(&kg, "u@example.com", PASSWORD);
    let jwt = exchange(&kg, &key);
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/users/{user}"),
        Some(json!({"role": "member"})),
    );
    assert_eq!(mine(&kg, "GET", "/api/keys", &session, None).status, 401);
    assert_eq!(call(&kg, "/v1/x", &jwt).status, 401);

    // Lowered to read-only: the permission a token carries narrows, so it is cut.
    let session = login(&kg, "u@example.com", PASSWORD);
    let jwt = exchange(&kg, &key);
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/users/{user}"),
        Some(json!({"role": "read_only"})),
    );
    assert_eq!(mine(&kg, "GET", "/api/keys", &session, None).status, 401);
    assert_eq!(call(&kg, "/v1/x", &jwt).status, 401);
}

// ---------------------------------------------------------------- item 4: sub-second cut-offs

#[test]
fn a_login_right_after_a_password_change_works_and_the_old_session_does_not() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let user = create_user(&kg, &account, "p@example.com", "member");
    let old = login(&kg, "p@example.com", PASSWORD);
    assert_eq!(mine(&kg, "GET", "/api/keys", &old, None).status, 200);
    let new_password = "another-password-456";
    early_in_a_second();
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/users/{user}/password"),
        Some(json!({"password": new_password})),
    );
    let new = login(&kg, "p@example.com", new_password);
    let r = mine(&kg, "GET", "/api/keys", &new, None);
    assert_eq!(r.status, 200, "the fresh session works: {}", r.body);
    let r = mine(&kg, "GET", "/api/keys", &old, None);
    assert_eq!(r.status, 401, "the old session is cut: {}", r.body);
    assert!(
        claims(&new)["iat_ms"].is_i64(),
        "tokens carry a millisecond issue time"
    );
}

#[test]
fn disable_enable_then_exchange_at_once_gives_a_working_token() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let (id, key) = kg.create_key(&account, json!({}));
    let old = exchange(&kg, &key);
    assert_eq!(call(&kg, "/v1/x", &old).status, 200);
    early_in_a_second();
    admin_ok(&kg, "POST", &format!("/admin/v1/keys/{id}/disable"), None);
    admin_ok(&kg, "POST", &format!("/admin/v1/keys/{id}/enable"), None);
    let new = exchange(&kg, &key);
    let r = call(&kg, "/v1/x", &new);
    assert_eq!(r.status, 200, "the fresh access token works: {}", r.body);
    let r = call(&kg, "/v1/x", &old);
    assert_eq!(r.status, 401, "the old access token is cut: {}", r.body);
    // And the same again, this time across a restart (cut-offs read back from the store).
    let mut kg = kg;
    kg.restart();
    assert_eq!(call(&kg, "/v1/x", &new).status, 200);
    assert_eq!(call(&kg, "/v1/x", &old).status, 401);
}

/// A cut-off written in whole seconds (the format before milliseconds) still cuts every token
/// issued in that second, and a token issued after that second works.
#[test]
fn an_old_whole_second_cutoff_still_cuts_its_whole_second() {
    let (_echo, mut kg) = start();
    let account = kg.create_account("acme");
    let (id, key) = kg.create_key(&account, json!({}));
    let jwt = exchange(&kg, &key);
    let iat = claims(&jwt)["iat"].as_i64().expect("iat");
    kg.kill();
    let db = rusqlite::Connection::open(kg.data_dir().join("keygate.db")).expect("db");
    // As the previous version wrote it: the second only.
    let columns: Vec<String> = db
        .prepare("SELECT name FROM pragma_table_info('token_cutoffs')")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("columns");
    if columns.iter().any(|c| c == "at_ms") {
        db.execute(
            "INSERT INTO token_cutoffs (subject, at, at_ms) VALUES (?1, ?2, NULL)",
            rusqlite::params![id, iat],
        )
        .expect("insert");
    } else {
        db.execute(
            "INSERT INTO token_cutoffs (subject, at) VALUES (?1, ?2)",
            rusqlite::params![id, iat],
        )
        .expect("insert");
    }
    drop(db);
    kg.restart();
    let r = call(&kg, "/v1/x", &jwt);
    assert_eq!(r.status, 401, "issued in the cut second: {}", r.body);
    wait_until("the next second", Duration::from_secs(3), || {
        unix_now() > iat
    });
    let fresh = exchange(&kg, &key);
    assert_eq!(call(&kg, "/v1/x", &fresh).status, 200);
}

/// The same through Redis: a whole-second value in `kg:token_cutoffs` (the older format) cuts
/// its whole second on a replica started later, a token issued after that second works, and new
/// cut-offs are stored in milliseconds.
#[test]
fn an_old_whole_second_cutoff_in_redis_still_cuts_its_whole_second() {
    let redis = RedisServer::start();
    let store = format!("[store]\nbackend = \"redis\"\nurl = \"{}\"\n", redis.url());
    let (_echo, mut kg) = start_on(&store, "", "");
    let account = kg.create_account("acme");
    let (id, key) = kg.create_key(&account, json!({}));
    let jwt = exchange(&kg, &key);
    let iat = claims(&jwt)["iat"].as_i64().expect("iat");
    kg.kill();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-u", &redis.url()])
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    cli(&["HSET", "kg:token_cutoffs", &id, &iat.to_string()]);
    kg.restart();
    let r = call(&kg, "/v1/x", &jwt);
    assert_eq!(r.status, 401, "issued in the cut second: {}", r.body);
    let other = kg.create_account("other");
    let (other_id, _) = kg.create_key(&other, json!({}));
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/keys/{other_id}/disable"),
        None,
    );
    let stored = cli(&["HGET", "kg:token_cutoffs", &other_id]);
    assert!(
        stored.contains('.') && stored.len() > 4,
        "stored in milliseconds: {stored}"
    );
    wait_until("the next second", Duration::from_secs(3), || {
        unix_now() > iat
    });
    let fresh = exchange(&kg, &key);
    assert_eq!(call(&kg, "/v1/x", &fresh).status, 200);
    assert_eq!(call(&kg, "/v1/x", &jwt).status, 401);
}

// ---------------------------------------------------------------- item 9: self-service bounds

#[test]
fn the_key_routes_rate_limit_bounds_self_service_creation() {
    let (_echo, kg) = start_with("", "rate_limit = { requests = 3, per_seconds = 60 }");
    let account = kg.create_account("acme");
    create_user(&kg, &account, "r@example.com", "read_only");
    let session = login(&kg, "r@example.com", PASSWORD);
    for i in 0..3 {
        let r = mine(
            &kg,
            "POST",
            "/api/keys",
            &session,
            Some(json!({"name": "k"})),
        );
        assert_eq!(r.status, 201, "key {i}: {}", r.body);
    }
    let r = mine(
        &kg,
        "POST",
        "/api/keys",
        &session,
        Some(json!({"name": "k"})),
    );
    assert_eq!(
        (r.status, code(&r)),
        (429, "rate_limited".into()),
        "{}",
        r.body
    );
    assert!(r.header("retry-after").is_some());
}

#[test]
fn a_users_key_count_is_capped() {
    let (_echo, kg) = start_with("max_per_user = 3", "");
    let account = kg.create_account("acme");
    let user = create_user(&kg, &account, "c@example.com", "member");
    let session = login(&kg, "c@example.com", PASSWORD);
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = mine(
            &kg,
            "POST",
            "/api/keys",
            &session,
            Some(json!({"name": "k"})),
        );
        assert_eq!(r.status, 201, "key {i}: {}", r.body);
        ids.push(r.json()["id"].as_str().expect("id").to_string());
    }
    let r = mine(
        &kg,
        "POST",
        "/api/keys",
        &session,
        Some(json!({"name": "k"})),
    );
    let message = assert_error(&r, 422, "invalid_body");
    assert!(message.contains("3 keys"), "{message}");
    // Rotating makes a key too.
    let r = mine(
        &kg,
        "POST",
        &format!("/api/keys/{}/rotate", ids[0]),
        &session,
        None,
    );
    assert_error(&r, 422, "invalid_body");
    // A revoked key no longer counts.
    let r = mine(
        &kg,
        "DELETE",
        &format!("/api/keys/{}", ids[0]),
        &session,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = mine(
        &kg,
        "POST",
        "/api/keys",
        &session,
        Some(json!({"name": "k"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // The cap bounds self-service: an operator may still give the user a key.
    let r = kg.admin(
        "POST",
        "/admin/v1/keys",
        Some(json!({"account_id": account, "user_id": user, "name": "ops"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

#[test]
fn the_default_cap_is_a_hundred_keys() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    create_user(&kg, &account, "h@example.com", "member");
    let session = login(&kg, "h@example.com", PASSWORD);
    for i in 0..100 {
        let r = mine(
            &kg,
            "POST",
            "/api/keys",
            &session,
            Some(json!({"name": "k"})),
        );
        assert_eq!(r.status, 201, "key {i}: {}", r.body);
    }
    let r = mine(
        &kg,
        "POST",
        "/api/keys",
        &session,
        Some(json!({"name": "k"})),
    );
    assert_error(&r, 422, "invalid_body");
}

#[test]
fn self_service_scopes_are_bounded_by_the_configured_list() {
    let (_echo, kg) = start_with(r#"self_service_scopes = ["leads:read"]"#, "");
    let account = kg.create_account("acme");
    create_user(&kg, &account, "s@example.com", "read_only");
    let session = login(&kg, "s@example.com", PASSWORD);
    let r = mine(
        &kg,
        "POST",
        "/api/keys",
        &session,
        Some(json!({"name": "k", "scopes": ["leads:read", "admin:all"]})),
    );
    let message = assert_error(&r, 422, "invalid_body");
    assert!(
        message.contains("`scopes`") && message.contains("admin:all"),
        "{message}"
    );
    let r = mine(
        &kg,
        "POST",
        "/api/keys",
        &session,
        Some(json!({"name": "k", "scopes": ["leads:read"]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // Resources are validated as the admin API validates them.
    let r = mine(
        &kg,
        "POST",
        "/api/keys",
        &session,
        Some(json!({"name": "k", "resources": {"projects": ["p/1"]}})),
    );
    let message = assert_error(&r, 422, "invalid_body");
    assert!(message.contains("`resources.projects`"), "{message}");
    // Nothing refused was created.
    let r = mine(&kg, "GET", "/api/keys", &session, None);
    assert_eq!(r.json()["keys"].as_array().map(Vec::len), Some(1));
    // An operator grants any scope.
    let r = kg.admin(
        "POST",
        "/admin/v1/keys",
        Some(json!({"account_id": account, "name": "ops", "scopes": ["admin:all"]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}
