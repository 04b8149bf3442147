//! End-user auth flows through the real binary: login, self-service keys, rotation with grace,
//! JWT exchange and its revocation, algorithm pinning, roles and resource scopes.

mod common;

use std::time::Duration;

use common::redis_server::RedisServer;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdefghijklmnop";

/// Routes as in config/keygate.toml, plus a resource-scoped route; `[tokens]` reads the HS256
/// secret from a file so tests can forge tokens.
fn auth_options(echo: &Echo, secret_file: &std::path::Path) -> Options {
    let mut o = Options::new(echo.addr);
    o.routes_toml = format!(
        r#"
[tokens]
secret = {{ file = "{secret}" }}
issuer = "keygate-test"
audience = "api-test"

[[routes]]
name = "login"
path = "/api/auth/login"
methods = ["POST"]
local = "login"
auth = "none"
ip_rate_limit = {{ requests = 100, per_seconds = 60 }}
rate_limit = {{ requests = 3, per_seconds = 60 }}

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
name = "exchange"
path = "/v1/auth/exchange"
methods = ["POST"]
local = "exchange"
auth = "api_key"
rate_limit = {{ requests = 10, per_seconds = 60 }}

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
        secret = secret_file.display()
    );
    o
}

/// [`auth_options`] with the HS256 secret in a temporary file, kept while the directory lives.
fn options_with_secret(echo: &Echo) -> (Options, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("jwt_secret");
    std::fs::write(&secret, JWT_SECRET).expect("secret");
    (auth_options(echo, &secret), dir)
}

struct Env {
    echo: Echo,
    kg: Keygate,
    _secret_dir: tempfile::TempDir,
}

fn start() -> Env {
    let echo = Echo::start();
    let (opts, dir) = options_with_secret(&echo);
    let kg = Keygate::start(&opts);
    Env {
        echo,
        kg,
        _secret_dir: dir,
    }
}

fn create_user(kg: &Keygate, account: &str, email: &str, role: &str) -> String {
    let r = kg.admin(
        "POST",
        "/admin/v1/users",
        Some(
            json!({"account_id": account, "email": email, "password": "password123", "role": role}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().expect("user id").to_string()
}

fn login(kg: &Keygate, email: &str, password: &str) -> Resp {
    request(
        "POST",
        &kg.url("/api/auth/login"),
        &[],
        Some(&json!({"email": email, "password": password})),
    )
}

fn session(kg: &Keygate, email: &str) -> String {
    let r = login(kg, email, "password123");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["token"].as_str().expect("token").to_string()
}

fn with_bearer(method: &str, kg: &Keygate, path: &str, token: &str, body: Option<Value>) -> Resp {
    call_with(kg, method, path, Some(token), body.as_ref())
}

fn forge(claims: Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("forge")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[test]
fn login_then_a_named_key_then_every_call_with_it() {
    let env = start();
    let (echo, kg) = (&env.echo, &env.kg);
    let account = kg.create_account("acme");
    let user = create_user(kg, &account, "Agent@Example.com", "member");

    let r = login(kg, "agent@example.com", "password123");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["user"]["id"], user);
    assert_eq!(v["user"]["email"], "agent@example.com");
    let token = v["token"].as_str().expect("token").to_string();

    let r = with_bearer(
        "POST",
        kg,
        "/api/keys",
        &token,
        Some(json!({"name": "my-agent-key"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    let key = created["key"].as_str().expect("plaintext").to_string();
    assert!(key.starts_with("kg_test_"));
    assert_eq!(created["name"], "my-agent-key");
    assert!(created["created_at"].is_string());

    // The key works on every call; the upstream learns who called.
    let r = with_bearer("GET", kg, "/v1/lookup", &key, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["headers"]["x-keygate-user-id"], user);
    assert_eq!(seen["headers"]["x-keygate-auth-method"], "api_key");

    // Listed without the plaintext; renamed; revoked -> refused on the next call.
    let r = with_bearer("GET", kg, "/api/keys", &token, None);
    let keys = r.json()["keys"].as_array().cloned().unwrap_or_default();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("key").is_none());
    assert!(key.starts_with(keys[0]["display_prefix"].as_str().unwrap_or("-")));
    let id = keys[0]["id"].as_str().expect("id").to_string();
    let r = with_bearer(
        "PATCH",
        kg,
        &format!("/api/keys/{id}"),
        &token,
        Some(json!({"name": "renamed"})),
    );
    assert_eq!(r.json()["name"], "renamed");
    let r = with_bearer("DELETE", kg, &format!("/api/keys/{id}"), &token, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = with_bearer("GET", kg, "/v1/lookup", &key, None);
    assert_eq!((r.status, code(&r)), (401, "key_revoked".into()));

    // Session tokens and keys stay in their lanes; neither reaches the upstream.
    let hits = echo.hits();
    let r = with_bearer("GET", kg, "/v1/lookup", &token, None);
    assert_eq!(
        r.status, 401,
        "a session token is refused on proxied routes"
    );
    let (_, other_key) = kg.create_key(&account, json!({}));
    let r = with_bearer("GET", kg, "/api/keys", &other_key, None);
    assert_eq!((r.status, code(&r)), (401, "invalid_token".into()));
    assert_eq!(echo.hits(), hits);
}

#[test]
fn wrong_credentials_get_one_answer_and_login_is_limited_per_email() {
    let env = start();
    let kg = &env.kg;
    let account = kg.create_account("acme");
    let user = create_user(kg, &account, "a@example.com", "member");
    let unknown = login(kg, "nobody@example.com", "password123");
    let wrong = login(kg, "a@example.com", "not-the-password");
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.body, wrong.body);
    assert_eq!(code(&wrong), "invalid_credentials");
    let r = kg.admin(
        "PATCH",
        &format!("/admin/v1/users/{user}"),
        Some(json!({"status": "disabled"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let disabled = login(kg, "a@example.com", "password123");
    assert_eq!(
        (disabled.status, disabled.body.clone()),
        (401, unknown.body.clone())
    );
    // Three attempts per email per minute (this test's config): the fourth is 429.
    assert_eq!(login(kg, "a@example.com", "password123").status, 401);
    let r = login(kg, "a@example.com", "password123");
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    let r = login(kg, "nobody-else@example.com", "x");
    assert_eq!(r.status, 401, "another email has its own bucket");
    let r = request("POST", &kg.url("/api/auth/login"), &[], None);
    assert_eq!((r.status, code(&r)), (422, "invalid_body".into()));
}

#[test]
fn login_is_limited_per_client_ip_across_emails() {
    let echo = Echo::start();
    let (mut opts, _secret_dir) = options_with_secret(&echo);
    let per_ip = "ip_rate_limit = { requests = 100, per_seconds = 60 }";
    assert!(opts.routes_toml.contains(per_ip));
    opts.routes_toml = opts
        .routes_toml
        .replace(per_ip, "ip_rate_limit = { requests = 4, per_seconds = 60 }");
    let kg = Keygate::start(&opts);
    // Each attempt uses a new email, so only the per-IP bucket (four a minute) can refuse it.
    for i in 0..4 {
        let r = login(&kg, &format!("guess{i}@example.com"), "password123");
        assert_eq!(r.status, 401, "attempt {i}: {}", r.body);
    }
    let r = login(&kg, "guess4@example.com", "password123");
    assert_eq!((r.status, code(&r)), (429, "rate_limited".into()));
    assert!(r.header("retry-after").is_some());
}

#[test]
fn rotation_keeps_the_old_key_until_revoked_or_the_grace_ends() {
    let env = start();
    let kg = &env.kg;
    let account = kg.create_account("acme");
    create_user(kg, &account, "r@example.com", "member");
    let token = session(kg, "r@example.com");
    let r = with_bearer("POST", kg, "/api/keys", &token, Some(json!({"name": "k"})));
    let (old_id, old) = (
        r.json()["id"].as_str().expect("id").to_string(),
        r.json()["key"].as_str().expect("key").to_string(),
    );

    let r = with_bearer(
        "POST",
        kg,
        &format!("/api/keys/{old_id}/rotate"),
        &token,
        Some(json!({})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let new = r.json()["key"].as_str().expect("new key").to_string();
    assert_eq!(r.json()["rotated_from"], old_id);
    assert_eq!(with_bearer("GET", kg, "/v1/x", &old, None).status, 200);
    assert_eq!(with_bearer("GET", kg, "/v1/x", &new, None).status, 200);
    with_bearer("DELETE", kg, &format!("/api/keys/{old_id}"), &token, None);
    assert_eq!(with_bearer("GET", kg, "/v1/x", &old, None).status, 401);
    assert_eq!(with_bearer("GET", kg, "/v1/x", &new, None).status, 200);

    // With a grace period the old key stops by itself.
    let new_id = r.json()["id"].as_str().expect("id").to_string();
    let r = with_bearer(
        "POST",
        kg,
        &format!("/api/keys/{new_id}/rotate"),
        &token,
        Some(json!({"grace_seconds": 1})),
    );
    let newest = r.json()["key"].as_str().expect("newest").to_string();
    assert_eq!(with_bearer("GET", kg, "/v1/x", &new, None).status, 200);
    wait_until(
        "the old key's grace period to end",
        Duration::from_secs(6),
        || {
            let r = with_bearer("GET", kg, "/v1/x", &new, None);
            if r.status == 401 {
                assert_eq!(code(&r), "key_expired");
            }
            r.status == 401
        },
    );
    assert_eq!(with_bearer("GET", kg, "/v1/x", &newest, None).status, 200);
}

#[test]
fn exchange_gives_a_jwt_that_dies_with_its_key() {
    let env = start();
    let (echo, kg) = (&env.echo, &env.kg);
    let account = kg.create_account("acme");
    let (key_id, key) = kg.create_key(
        &account,
        json!({"scopes": ["leads:read"], "permission": "read"}),
    );
    let r = with_bearer("POST", kg, "/v1/auth/exchange", &key, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["expiresIn"], 900);
    assert_eq!(v["tokenType"], "Bearer");
    let jwt = v["accessToken"].as_str().expect("jwt").to_string();

    let r = with_bearer("GET", kg, "/v1/x", &jwt, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let h = &r.json()["headers"];
    assert_eq!(h["x-keygate-auth-method"], "jwt");
    assert_eq!(h["x-keygate-key-id"], key_id);
    assert_eq!(h["x-keygate-account-id"], account);
    assert_eq!(h["x-keygate-scopes"], "leads:read");
    assert!(h.get("authorization").is_none());
    // A read key's token cannot write either.
    let r = with_bearer("POST", kg, "/v1/x", &jwt, Some(json!({})));
    assert_eq!((r.status, code(&r)), (403, "read_only_key".into()));

    // Revoking the key kills the token on the very next request.
    let r = kg.admin("POST", &format!("/admin/v1/keys/{key_id}/revoke"), None);
    assert_eq!(r.status, 200);
    let hits = echo.hits();
    let r = with_bearer("GET", kg, "/v1/x", &jwt, None);
    assert_eq!((r.status, code(&r)), (401, "key_revoked".into()));
    assert_eq!(echo.hits(), hits);

    // Exchange is limited to 10 a minute per key.
    let (_, other) = kg.create_key(&account, json!({}));
    for i in 0..10 {
        let r = with_bearer("POST", kg, "/v1/auth/exchange", &other, None);
        assert_eq!(r.status, 200, "exchange {i}: {}", r.body);
    }
    let r = with_bearer("POST", kg, "/v1/auth/exchange", &other, None);
    assert_eq!((r.status, code(&r)), (429, "rate_limited".into()));
    assert!(r.header("retry-after").is_some());
}

#[test]
fn an_exchanged_token_shares_its_keys_plan_limit_and_ends_with_the_key() {
    let echo = Echo::start();
    let (mut opts, _secret_dir) = options_with_secret(&echo);
    opts.extra_toml = r#"
[plans.starter]
key = { requests = 1, per_seconds = 60, burst = 4 }
"#
    .into();
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");
    let r = kg.admin(
        "PATCH",
        &format!("/admin/v1/accounts/{account}"),
        Some(json!({ "plan": "starter" })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let expires_at = now() + 120;
    let rfc3339 = chrono::DateTime::from_timestamp(expires_at, 0)
        .expect("timestamp")
        .to_rfc3339();
    let (_, key) = kg.create_key(&account, json!({ "expires_at": rfc3339 }));

    // The plan does not lift the exchange's own limit, nor does the exchange eat the plan's.
    let r = with_bearer("POST", &kg, "/v1/auth/exchange", &key, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    // The key expires in two minutes, so its token does too, not in fifteen.
    let expires_in = v["expiresIn"].as_i64().expect("expiresIn");
    assert!((100..=120).contains(&expires_in), "expiresIn {expires_in}");
    let jwt = v["accessToken"].as_str().expect("jwt").to_string();

    // Key and token draw from one bucket of four: two calls each, then both are refused.
    for (i, credential) in [&key, &jwt, &key, &jwt].into_iter().enumerate() {
        let r = with_bearer("GET", &kg, "/v1/x", credential, None);
        assert_eq!(r.status, 200, "call {i}: {}", r.body);
        assert_eq!(r.header("ratelimit-limit"), Some("4"), "call {i}");
    }
    let hits = echo.hits();
    for credential in [&jwt, &key] {
        let r = with_bearer("GET", &kg, "/v1/x", credential, None);
        assert_eq!((r.status, code(&r)), (429, "rate_limited".into()));
    }
    assert_eq!(echo.hits(), hits);
}

#[test]
fn tokens_are_verified_with_the_pinned_algorithm_and_claims() {
    let env = start();
    let (echo, kg) = (&env.echo, &env.kg);
    let account = kg.create_account("acme");
    let (key_id, _) = kg.create_key(&account, json!({}));
    let good = |exp: i64, iss: &str, aud: &str, typ: &str| {
        json!({"sub": key_id, "typ": typ, "acc": account, "key": key_id, "scp": [], "perm": "read_write",
               "iat": now() - 10, "exp": exp, "iss": iss, "aud": aud, "jti": "t1"})
    };
    // Control: a correctly forged token is accepted, so each refusal below is about one thing.
    let valid = forge(
        good(now() + 600, "keygate-test", "api-test", "access"),
        JWT_SECRET,
    );
    assert_eq!(with_bearer("GET", kg, "/v1/x", &valid, None).status, 200);
    let hits = echo.hits();

    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good(now() + 600, "keygate-test", "api-test", "access"))
    );
    let mut flipped = valid.clone();
    let last = flipped.pop().unwrap_or('A');
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    let cases = [
        ("alg none", alg_none),
        (
            "another secret",
            forge(
                good(now() + 600, "keygate-test", "api-test", "access"),
                "some-other-secret-0123456789abcdef",
            ),
        ),
        ("bad signature", flipped),
        (
            "expired",
            forge(
                good(now() - 5, "keygate-test", "api-test", "access"),
                JWT_SECRET,
            ),
        ),
        (
            "wrong iss",
            forge(
                good(now() + 600, "someone-else", "api-test", "access"),
                JWT_SECRET,
            ),
        ),
        (
            "wrong aud",
            forge(
                good(now() + 600, "keygate-test", "other-api", "access"),
                JWT_SECRET,
            ),
        ),
        (
            "session token",
            forge(
                good(now() + 600, "keygate-test", "api-test", "session"),
                JWT_SECRET,
            ),
        ),
        (
            // RFC 7515 4.1.11: an extension marked critical that keygate does not understand.
            "crit header",
            encode(
                &Header {
                    crit: Some(vec!["exp-ext".into()]),
                    ..Header::new(Algorithm::HS256)
                },
                &good(now() + 600, "keygate-test", "api-test", "access"),
                &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
            )
            .expect("forge"),
        ),
    ];
    for (what, token) in &cases {
        let r = with_bearer("GET", kg, "/v1/x", token, None);
        assert_eq!(r.status, 401, "{what}: {}", r.body);
    }
    let expired = with_bearer("GET", kg, "/v1/x", &cases[3].1, None);
    assert_eq!(code(&expired), "token_expired");
    // An access token is not a session token.
    let r = with_bearer("GET", kg, "/api/keys", &valid, None);
    assert_eq!(r.status, 401);
    assert_eq!(echo.hits(), hits, "no refused token reached the upstream");
}

#[test]
fn effective_permission_is_key_and_role_and_demotion_narrows_at_once() {
    let env = start();
    let kg = &env.kg;
    let account = kg.create_account("acme");
    create_user(kg, &account, "ro@example.com", "read_only");
    let ro = session(kg, "ro@example.com");
    let r = with_bearer(
        "POST",
        kg,
        "/api/keys",
        &ro,
        Some(json!({"name": "k", "permission": "read_write"})),
    );
    assert_eq!((r.status, code(&r)), (403, "read_only_key".into()));
    let r = with_bearer("POST", kg, "/api/keys", &ro, Some(json!({"name": "k"})));
    assert_eq!(r.json()["permission"], "read");

    let member = create_user(kg, &account, "m@example.com", "member");
    let token = session(kg, "m@example.com");
    let r = with_bearer("POST", kg, "/api/keys", &token, Some(json!({"name": "rw"})));
    let key = r.json()["key"].as_str().expect("key").to_string();
    assert_eq!(
        with_bearer("POST", kg, "/v1/x", &key, Some(json!({}))).status,
        200
    );
    let r = kg.admin(
        "PATCH",
        &format!("/admin/v1/users/{member}"),
        Some(json!({"role": "read_only"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = with_bearer("POST", kg, "/v1/x", &key, Some(json!({})));
    assert_eq!((r.status, code(&r)), (403, "read_only_key".into()));
    assert_eq!(with_bearer("GET", kg, "/v1/x", &key, None).status, 200);
    // The demoted user's session is cut too.
    assert_eq!(
        with_bearer("GET", kg, "/api/keys", &token, None).status,
        401
    );
}

#[test]
fn resource_scopes_limit_keys_and_their_tokens() {
    let env = start();
    let kg = &env.kg;
    let account = kg.create_account("acme");
    let (_, scoped) = kg.create_key(&account, json!({"resources": {"projects": ["p1"]}}));
    let (_, open) = kg.create_key(&account, json!({}));
    assert_eq!(
        with_bearer("GET", kg, "/v1/projects/p1/secrets", &scoped, None).status,
        200
    );
    let r = with_bearer("GET", kg, "/v1/projects/p2/secrets", &scoped, None);
    assert_eq!((r.status, code(&r)), (403, "resource_forbidden".into()));
    assert_eq!(
        with_bearer("GET", kg, "/v1/projects/p2/secrets", &open, None).status,
        200
    );
    let jwt = with_bearer("POST", kg, "/v1/auth/exchange", &scoped, None).json()["accessToken"]
        .as_str()
        .expect("jwt")
        .to_string();
    let r = with_bearer("GET", kg, "/v1/projects/p1/x", &jwt, None);
    assert_eq!(r.status, 200, "{}\n{}", r.body, kg.log());
    let r = with_bearer("GET", kg, "/v1/projects/p2/x", &jwt, None);
    assert_eq!(r.status, 403, "{}\n{}", r.body, kg.log());
}

#[test]
fn a_revoked_keys_jwt_is_refused_by_every_replica_even_one_started_later() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let (mut opts, _secret_dir) = options_with_secret(&echo);
    opts.store_toml = format!("[store]\nbackend = \"redis\"\nurl = \"{}\"\n", redis.url());
    let a = Keygate::start(&opts);
    let b = Keygate::start(&opts);
    let account = a.create_account("acme");
    let (key_id, key) = a.create_key(&account, json!({}));
    let jwt = with_bearer("POST", &a, "/v1/auth/exchange", &key, None).json()["accessToken"]
        .as_str()
        .expect("jwt")
        .to_string();
    assert_eq!(with_bearer("GET", &b, "/v1/x", &jwt, None).status, 200);
    assert_eq!(
        a.admin("POST", &format!("/admin/v1/keys/{key_id}/revoke"), None)
            .status,
        200
    );
    wait_until(
        "B to refuse the revoked key's JWT",
        Duration::from_secs(5),
        || with_bearer("GET", &b, "/v1/x", &jwt, None).status == 401,
    );
    let c = Keygate::start(&opts);
    let r = with_bearer("GET", &c, "/v1/x", &jwt, None);
    assert_eq!((r.status, code(&r)), (401, "key_revoked".into()));
}

#[test]
fn eddsa_tokens_verify_with_the_published_jwks() {
    let echo = Echo::start();
    let pem =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tokens/testdata/ed25519_a.pem");
    let mut o = Options::new(echo.addr);
    o.routes_toml = format!(
        r#"
[tokens]
algorithm = "EdDSA"
private_key = {{ file = "{}" }}
key_id = "k1"

[[routes]]
path = "/v1/auth/exchange"
methods = ["POST"]
local = "exchange"
auth = "api_key"

[[routes]]
path = "/.well-known/jwks.json"
local = "jwks"
auth = "none"

[[routes]]
path = "/v1/{{*rest}}"
upstream = "api"
auth = "any"
"#,
        pem.display()
    );
    let kg = &Keygate::start(&o);
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    let jwks = get(&kg.url("/.well-known/jwks.json"), &[]).json();
    let jwk = &jwks["keys"][0];
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["kid"], "k1");
    assert!(jwk.get("d").is_none(), "no private part is published");
    let jwt = with_bearer("POST", kg, "/v1/auth/exchange", &key, None).json()["accessToken"]
        .as_str()
        .expect("jwt")
        .to_string();
    // An upstream verifies it with the JWKS alone.
    let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).expect("jwk");
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&parsed).expect("decoding key");
    let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["keygate"]);
    let data = jsonwebtoken::decode::<Value>(&jwt, &decoding, &validation).expect("verifies");
    assert_eq!(data.claims["acc"], account);
    assert_eq!(with_bearer("GET", kg, "/v1/x", &jwt, None).status, 200);
    // HS256 is refused when EdDSA is pinned.
    let hs = forge(
        json!({"sub": "x", "exp": now() + 600}),
        "any-secret-0123456789abcdef0123456789",
    );
    assert_eq!(with_bearer("GET", kg, "/v1/x", &hs, None).status, 401);
}
