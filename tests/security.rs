//! Regression tests for holes found by attacking the real binary (issue "Hardening"): each one
//! sends what an attacker would, byte for byte, and checks what the upstream received.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// Sends `request` as written (no client normalises the path or the header names) and returns
/// the status and the body.
fn raw(to: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(to).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn raw_get(to: SocketAddr, path: &str, extra_headers: &str) -> (u16, String) {
    raw(
        to,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: keygate\r\n{extra_headers}Connection: close\r\n\r\n"
        ),
    )
}

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
            .starts_with("keygate_requests_total{outcome=\"invalid_path\",route=\"(none)\"} 9")),
        "{metrics}"
    );
}
