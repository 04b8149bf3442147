//! Every limit knob that `check-config` accepts acts on every route kind where it is accepted,
//! through the real binary: `ip_rate_limit` on a keyed route, `rate_limit` on a session route.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use serde_json::json;

/// One `GET` from a chosen loopback source address (127.0.0.2 and friends are distinct client
/// IPs to keygate), over a fresh connection; the status code.
fn get_from(source: [u8; 4], to: SocketAddr, path: &str, key: &str) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stream = rt
        .block_on(socket.connect(to))
        .expect("connect")
        .into_std()
        .expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    exchange(stream, path, key)
}

fn exchange(mut stream: TcpStream, path: &str, key: &str) -> u16 {
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: keygate\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

#[test]
fn ip_rate_limit_applies_on_a_keyed_route() {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = r#"
[[routes]]
name = "v1"
path = "/v1/{*rest}"
upstream = "api"
ip_rate_limit = { requests = 3, per_seconds = 3600 }
"#
    .into();
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");
    let (_, first) = kg.create_key(&account, json!({}));
    let (_, second) = kg.create_key(&account, json!({}));

    // Three requests from one IP, with two different keys: the IP's bucket is shared by both.
    for key in [&first, &second, &first] {
        assert_eq!(get_from([127, 0, 0, 1], kg.public, "/v1/x", key), 200);
    }
    let r = request(
        "GET",
        &kg.url("/v1/x"),
        &[("authorization", &bearer(&second))],
        None,
    );
    assert_eq!(r.status, 429, "the fourth from 127.0.0.1: {}", r.body);
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    assert_eq!(
        echo.hits(),
        3,
        "a limited request never reaches the upstream"
    );
    // Another client IP has its own bucket, with the same key.
    assert_eq!(get_from([127, 0, 0, 2], kg.public, "/v1/x", &second), 200);
    assert_eq!(echo.hits(), 4);
}

const SESSION_ROUTES: &str = r#"
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
rate_limit = { requests = 2, per_seconds = 3600 }
"#;

fn session(kg: &Keygate, account: &str, email: &str) -> String {
    let r = kg.admin(
        "POST",
        "/admin/v1/users",
        Some(json!({"account_id": account, "email": email, "password": "password123"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = request(
        "POST",
        &kg.url("/api/auth/login"),
        &[],
        Some(&json!({"email": email, "password": "password123"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["token"].as_str().expect("token").to_string()
}

#[test]
fn rate_limit_applies_on_a_session_route_per_user() {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = SESSION_ROUTES.into();
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");
    let ann = session(&kg, &account, "ann@example.com");
    let bob = session(&kg, &account, "bob@example.com");
    let list = |token: &str| {
        request(
            "GET",
            &kg.url("/api/keys"),
            &[("authorization", &bearer(token))],
            None,
        )
    };

    for i in 0..2 {
        let r = list(&ann);
        assert_eq!(r.status, 200, "call {i}: {}", r.body);
        assert_eq!(r.header("ratelimit-limit"), Some("2"), "{:?}", r.headers);
    }
    let r = list(&ann);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    // The limit is per user: another user of the same account has a bucket of its own.
    assert_eq!(list(&bob).status, 200);
}
