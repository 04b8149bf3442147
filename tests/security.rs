//! Regression tests for holes found by attacking the real binary (issue "Hardening"): each one
//! sends what an attacker would, byte for byte, and checks what the upstream received.

mod common;

use std::time::Duration;

use common::*;

const PUBLIC_AND_SECRET: &str = r#"
[[routes]]
name = "public"
path = "/public/{*rest}"
upstream = "api"
auth = "none"

[[routes]]
name = "secret"
path = "/secret/{*rest}"
upstream = "api"
"#;

/// Tomcat and Spring read `..;` as `..`, so `/public/..;/secret` on an open route would reach
/// the protected `/secret` there. Such paths, and double-encoded or overlong dots and slashes,
/// are refused with 400 `invalid_path` and never forwarded.
#[test]
fn dot_segments_with_path_parameters_and_odd_encodings_are_refused() {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = PUBLIC_AND_SECRET.into();
    let kg = Keygate::start(&opts);
    for path in [
        "/public/..;/secret/x",
        "/public/%2e%2e;/secret/x",
        "/public/%2E%2e;jsessionid=1/secret/x",
        "/public/x;/..;/..;/secret/x",
        "/public/.;/x",
        "/public/%252e%252e/secret/x",
        "/public/..%252fsecret/x",
        "/public/%c0%ae%c0%ae/secret/x",
        "/public/%e0%80%ae%e0%80%ae/secret/x",
        "/public/%2e%2e%3b/secret/x",
        "/public/%25%32e%25%32e/secret/x",
    ] {
        let (status, body) = raw_get(kg.public, path, "");
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("invalid_path"), "{path}: {body}");
    }
    assert_eq!(echo.hits(), 0, "nothing reached the upstream");
    // Ordinary paths with parameters and escapes still pass.
    for path in ["/public/x;v=1/y", "/public/caf%C3%A9", "/public/..x"] {
        let (status, body) = raw_get(kg.public, path, "");
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert_eq!(echo.hits(), 3);
    let metrics = get(&kg.ops_url("/metrics"), &[]).body;
    assert!(
        metrics.lines().any(|l| l
            .starts_with("keygate_requests_total{outcome=\"invalid_path\",route=\"(none)\"} 11")),
        "{metrics}"
    );
}

const LOGGED_ROUTES: &str = r#"
[[routes]]
name = "login"
path = "/api/auth/login"
methods = ["POST"]
local = "login"
auth = "none"

[[routes]]
name = "exchange"
path = "/v1/auth/exchange"
methods = ["POST"]
local = "exchange"
auth = "api_key"

[[routes]]
name = "v1"
path = "/v1/{*rest}"
upstream = "api"
auth = "any"
"#;

/// A request pingora cannot parse (a header line without a colon), carrying `credential` in
/// both credential headers: at `debug` pingora logs such a request's raw bytes.
fn malformed_with(kg: &Keygate, credential: &str) {
    let (status, _) = raw(
        kg.public,
        &format!(
            "GET /v1/x HTTP/1.1\r\nHost: keygate\r\nAuthorization: Bearer {credential}\r\n\
             X-API-Key: {credential}\r\nthis line has no colon\r\n\r\n"
        ),
    );
    assert_eq!(status, 400);
}

/// With `RUST_LOG=debug`, no key, token, password, pepper or admin token reaches the log, also
/// from pingora's own lines about requests it cannot parse; only an operator who sets
/// `KEYGATE_LOG_PINGORA_WITH_SECRETS=1` gets those (which is how this test knows it would catch
/// the leak).
#[test]
fn debug_logs_carry_no_secrets_unless_the_operator_opts_in() {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = LOGGED_ROUTES.into();
    opts.rust_log = "debug".into();
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, serde_json::json!({}));
    let password = "Pa55word-that-must-not-leak";
    let r = kg.admin(
        "POST",
        "/admin/v1/users",
        Some(serde_json::json!({"account_id": account, "email": "a@example.com", "password": password})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let login = request(
        "POST",
        &kg.url("/api/auth/login"),
        &[],
        Some(&serde_json::json!({"email": "a@example.com", "password": password})),
    );
    assert_eq!(login.status, 200, "{}", login.body);
    let session = login.json()["token"].as_str().expect("session").to_string();
    let exchanged = request(
        "POST",
        &kg.url("/v1/auth/exchange"),
        &[("authorization", &bearer(&key))],
        None,
    );
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    let token = exchanged.json()["accessToken"]
        .as_str()
        .expect("token")
        .to_string();
    for credential in [&key, &token] {
        let r = request("GET", &kg.url("/v1/x"), &[("x-api-key", credential)], None);
        assert_eq!(r.status, 200, "{}", r.body);
        malformed_with(&kg, credential);
    }
    malformed_with(&kg, &session);
    malformed_with(&kg, password);

    // The access lines of those requests are there (they name the request, not its credential)...
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !kg.log().contains("keygate::access") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = kg.log();
    assert!(log.contains("keygate::access"), "no access line: {log}");
    // ... and no secret is.
    for (what, secret) in [
        ("key", key.as_str()),
        ("access token", token.as_str()),
        ("session token", session.as_str()),
        ("password", password),
        ("pepper", PEPPER),
        ("admin token", ADMIN_TOKEN),
    ] {
        assert!(
            !log.contains(secret),
            "the {what} is in the debug log:\n{log}"
        );
    }

    // The opt-in lets pingora's raw lines through: the malformed request above would have leaked.
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = LOGGED_ROUTES.into();
    opts.rust_log = "debug".into();
    opts.env = vec![("KEYGATE_LOG_PINGORA_WITH_SECRETS".into(), "1".into())];
    let leaky = Keygate::start(&opts);
    malformed_with(&leaky, "kg_test_canary_value");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !leaky.log().contains("kg_test_canary_value") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        leaky.log().contains("kg_test_canary_value"),
        "pingora's raw line did not appear with the opt-in: {}",
        leaky.log()
    );
}
