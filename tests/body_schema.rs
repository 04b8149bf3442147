//! `body_schema` through the real binary: a body that fails the route's JSON Schema is 422
//! `invalid_body` naming the failing field, before any credit is taken and without reaching the
//! upstream; a valid body reaches the upstream byte for byte (Content-Length or chunked, HTTP/1.1
//! or h2c); over the route's limit is 413; `check-config` refuses schemas it cannot use.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["email"],
  "properties": {
    "email": {"type": "string", "format": "email"},
    "tags": {"type": "array", "items": {"type": "string"}}
  }
}"#;

/// Writes the schema beside the test and returns its absolute path.
fn schema_file(dir: &Path) -> String {
    let path = dir.join("lookup.json");
    std::fs::write(&path, SCHEMA).expect("schema");
    path.display().to_string()
}

fn routes(schema: &str) -> String {
    format!(
        r#"
[[routes]]
name = "lookup"
path = "/lookup"
methods = ["POST"]
upstream = "api"
permission = "read"
cost = 1
body_schema = "{schema}"

[[routes]]
name = "plain"
path = "/plain"
methods = ["POST"]
upstream = "api"
permission = "read"
cost = 1
"#
    )
}

struct Fixture {
    echo: Echo,
    kg: Keygate,
    account: String,
    key: String,
    _dir: tempfile::TempDir,
}

fn start(extra: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = Echo::start();
    let mut o = Options::new(echo.addr);
    o.routes_toml = routes(&schema_file(dir.path()));
    o.extra_toml = extra.to_string();
    let kg = Keygate::start(&o);
    let account = kg.create_account("acme");
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{account}/credits"),
        Some(json!({"delta": 100})),
    );
    let (_, key) = kg.create_key(&account, json!({}));
    Fixture {
        echo,
        kg,
        account,
        key,
        _dir: dir,
    }
}

fn balance(f: &Fixture) -> i64 {
    admin_ok(
        &f.kg,
        "GET",
        &format!("/admin/v1/accounts/{}/credits", f.account),
        None,
    )["balance"]
        .as_i64()
        .expect("balance")
}

/// POST `body` as written with `content_type`, Content-Length framing.
fn post(f: &Fixture, path: &str, content_type: &str, body: &str) -> Resp {
    let auth = bearer(&f.key);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let req = http::Request::builder()
        .method("POST")
        .uri(f.kg.url(path))
        .header("authorization", auth)
        .header("content-type", content_type)
        .body(body.to_string())
        .expect("request");
    let mut resp = agent.run(req).expect("post");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Resp {
        status,
        headers,
        body,
    }
}

/// A raw HTTP/1.1 request on its own connection; the whole answer (head and body) as text.
fn raw_exchange(f: &Fixture, head: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(f.kg.public).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(body).expect("body");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).to_string()
}

fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

fn body_of(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// A body of about `size` bytes that the schema accepts, with odd spacing that a re-encoding
/// would lose.
fn valid_body(size: usize) -> String {
    let mut tags = Vec::new();
    let mut len = 40;
    let mut i = 0;
    while len < size {
        let tag = format!("\"t{i:06}\"");
        len += tag.len() + 2;
        tags.push(tag);
        i += 1;
    }
    format!(
        "{{ \"email\" :\"a@b.co\",\n  \"tags\": [{}] }}",
        tags.join(", ")
    )
}

#[test]
fn a_bad_body_is_422_naming_the_field_before_any_charge_or_upstream() {
    let f = start("");
    let (hits, credits) = (f.echo.hits(), balance(&f));

    let r = post(
        &f,
        "/lookup",
        "application/json",
        r#"{"email":"not-an-address"}"#,
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        r.body,
        r#"{"error":{"code":"invalid_body","message":"/email: value is not a \"email\""}}"#
    );
    assert!(
        !r.body.contains("not-an-address"),
        "the value is not echoed"
    );

    let r = post(&f, "/lookup", "application/json", r#"{"tags":["x"]}"#);
    assert_eq!(
        r.body,
        r#"{"error":{"code":"invalid_body","message":"/email: \"email\" is a required property"}}"#
    );
    let r = post(
        &f,
        "/lookup",
        "application/json",
        r#"{"email":"a@b.co","tags":["x",7]}"#,
    );
    assert_eq!(
        r.body,
        r#"{"error":{"code":"invalid_body","message":"/tags/1: value is not of type \"string\""}}"#
    );

    // Not JSON, or declared as something else: 422 as well, saying so.
    let r = post(&f, "/lookup", "application/json", "email=a@b.co");
    assert_eq!(
        r.body,
        r#"{"error":{"code":"invalid_body","message":"the request body is not valid JSON"}}"#
    );
    let r = post(&f, "/lookup", "text/plain", r#"{"email":"a@b.co"}"#);
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        r.body,
        r#"{"error":{"code":"invalid_body","message":"the request body must be JSON (Content-Type: application/json)"}}"#
    );

    assert_eq!(f.echo.hits(), hits, "nothing reached the upstream");
    assert_eq!(balance(&f), credits, "nothing was charged");
    let counted = metric(
        &f.kg,
        "keygate_requests_total",
        &[("outcome", "invalid_body"), ("route", "lookup")],
    );
    assert_eq!(counted, 5.0);
}

#[test]
fn the_detail_slot_of_a_template_gets_the_pointer() {
    let f = start(
        r#"
[errors.invalid_body]
message = "Invalid request body"
body = '{"error":"{message}","detail":"{detail}"}'
"#,
    );
    let r = post(&f, "/lookup", "application/json", r#"{"email":"x"}"#);
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body,
        r#"{"error":"Invalid request body","detail":"/email: value is not a \"email\""}"#
    );
}

#[test]
fn authentication_comes_before_the_body() {
    let f = start("");
    let r = request(
        "POST",
        &f.kg.url("/lookup"),
        &[],
        Some(&json!({"email": "x"})),
    );
    assert_error(&r, 401, "missing_credential");
    let r = request(
        "POST",
        &f.kg.url("/lookup"),
        &[("authorization", "Bearer kg_test_nope")],
        Some(&json!({"email": "x"})),
    );
    assert_error(&r, 401, "malformed_credential");
}

#[test]
fn a_valid_body_reaches_the_upstream_unchanged_and_is_charged_once() {
    let f = start("");
    let credits = balance(&f);
    let mut charged = 0;
    for size in [30, 1_000, 20_000, 60_000] {
        let body = valid_body(size);
        let r = post(&f, "/lookup", "application/json", &body);
        assert_eq!(r.status, 200, "{size}: {}", r.body);
        let seen = r.json();
        assert_eq!(seen["body"].as_str(), Some(body.as_str()), "{size}");
        assert_eq!(seen["headers"]["content-length"], body.len().to_string());
        assert!(seen["headers"].get("authorization").is_none());
        charged += 1;

        // The same body chunked, in small pieces.
        let head = format!(
            "POST /lookup HTTP/1.1\r\nHost: keygate\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n",
            f.key
        );
        let answer = raw_exchange(&f, &head, &chunked(body.as_bytes(), 777));
        assert_eq!(status_of(&answer), 200, "{size} chunked: {answer}");
        let seen: Value = serde_json::from_str(body_of(&answer).trim())
            .or_else(|_| {
                // A chunked answer: take the JSON between the chunk sizes.
                let b = body_of(&answer);
                let start = b.find('{').unwrap_or(0);
                let end = b.rfind('}').map_or(b.len(), |e| e + 1);
                serde_json::from_str(&b[start..end])
            })
            .expect("echo JSON");
        assert_eq!(seen["body"].as_str(), Some(body.as_str()), "{size} chunked");
        charged += 1;
    }
    assert_eq!(balance(&f), credits - charged);
}

#[test]
fn expect_100_continue_gets_its_continue_and_the_upstream_none() {
    let f = start("");
    let body = r#"{"email":"a@b.co"}"#;
    let mut s = TcpStream::connect(f.kg.public).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "POST /lookup HTTP/1.1\r\nHost: keygate\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        f.key,
        body.len()
    );
    s.write_all(head.as_bytes()).expect("head");
    let mut first = [0u8; 25];
    s.read_exact(&mut first).expect("100 Continue");
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).expect("body");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let answer = String::from_utf8_lossy(&rest).to_string();
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(
        answer.contains(r#""body":"{\"email\":\"a@b.co\"}""#),
        "{answer}"
    );
    assert!(!answer.contains("\"expect\""), "{answer}");
}

#[test]
fn a_body_over_the_limit_is_413_and_costs_nothing() {
    let f = start("");
    let (hits, credits) = (f.echo.hits(), balance(&f));
    // Without `max_body_bytes` a schema route buffers at most 64 KiB.
    let body = valid_body(70_000);
    let r = post(&f, "/lookup", "application/json", &body);
    assert_error(&r, 413, "payload_too_large");
    let head = format!(
        "POST /lookup HTTP/1.1\r\nHost: keygate\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n",
        f.key
    );
    let answer = raw_exchange(&f, &head, &chunked(body.as_bytes(), 4096));
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert_eq!(
        body_of(&answer),
        r#"{"error":{"code":"payload_too_large","message":"The request body is too large"}}"#
    );
    assert_eq!(f.echo.hits(), hits);
    assert_eq!(balance(&f), credits);

    // A route without a schema streams larger bodies as before.
    let r = post(&f, "/plain", "application/json", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["body"].as_str(), Some(body.as_str()));
}

#[tokio::test]
async fn over_h2c_a_checked_body_is_forwarded_and_a_bad_one_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = schema_file(dir.path());
    let echo = Echo::start();
    let kg = Keygate::start_with_config(|slots| {
        format!(
            r#"
[server]
data_dir = "{data}"
graceful_shutdown_timeout_seconds = 1

[listeners]
public = "{public}"
admin = "{admin}"
ops = "{ops}"
h2c = true

[secrets]
pepper = {{ env = "KEYGATE_TEST_PEPPER" }}
admin_token = {{ env = "KEYGATE_TEST_ADMIN_TOKEN" }}

[keys]
prefix = "kg_test_"

[upstreams.api]
address = "{upstream}"
{routes}
"#,
            data = slots.data_dir.display(),
            public = slots.public,
            admin = slots.admin,
            ops = slots.ops,
            upstream = echo.addr,
            routes = routes(&schema),
        )
    });
    let account = kg.create_account("acme");
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{account}/credits"),
        Some(json!({"delta": 10})),
    );
    let (_, key) = kg.create_key(&account, json!({}));
    let io = tokio::net::TcpStream::connect(kg.public)
        .await
        .expect("connect");
    let (send, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let auth = bearer(&key);
    for (body, status) in [
        (valid_body(30_000), 200),
        (r#"{"email":"nope"}"#.to_string(), 422),
    ] {
        let mut send = send.clone().ready().await.expect("ready");
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://keygate{}", "/lookup"))
            .header("authorization", auth.as_str())
            .header("content-type", "application/json")
            .body(())
            .expect("request");
        let (response, mut stream) = send.send_request(req, false).expect("send");
        // In two DATA frames.
        let (a, b) = body.as_bytes().split_at(body.len() / 2);
        stream
            .send_data(bytes::Bytes::copy_from_slice(a), false)
            .expect("data");
        stream
            .send_data(bytes::Bytes::copy_from_slice(b), true)
            .expect("data");
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("in time")
            .expect("response");
        assert_eq!(response.status().as_u16(), status);
        let mut data = response.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = data.data().await {
            let chunk = chunk.expect("chunk");
            let _ = data.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        let v: Value = serde_json::from_slice(&got).expect("JSON");
        if status == 200 {
            assert_eq!(v["body"].as_str(), Some(body.as_str()));
        } else {
            assert_eq!(v["error"]["code"], "invalid_body");
        }
    }
    assert_eq!(echo.hits(), 1);
}

/// `keygate check-config FILE` on a config written in a temporary directory: exit status and
/// stderr.
fn check_config(routes: &str, files: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(path, text).expect("file");
    }
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!("[upstreams.api]\naddress = \"127.0.0.1:9\"\n{routes}"),
    )
    .expect("config");
    // From another directory: relative schema paths are the config file's, not the caller's.
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check-config", "--skip-secrets"])
        .arg(&config)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("check-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn check_config_refuses_schemas_it_cannot_use() {
    let route = |extra: &str| {
        format!(
            "[[routes]]\nname = \"lookup\"\npath = \"/lookup\"\nmethods = [\"POST\"]\n\
             upstream = \"api\"\n{extra}\n"
        )
    };
    // Relative to the config's directory: fine.
    let (code, err) = check_config(
        &route("body_schema = \"schemas/lookup.json\""),
        &[("schemas/lookup.json", SCHEMA)],
    );
    assert_eq!(code, 0, "{err}");

    let (code, err) = check_config(&route("body_schema = \"schemas/missing.json\""), &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("line 8: `routes[0].body_schema`: route `lookup`: cannot read")
            && err.contains("missing.json"),
        "{err}"
    );

    let (code, err) = check_config(
        &route("body_schema = \"bad.json\""),
        &[("bad.json", "{not json")],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("route `lookup`:") && err.contains("is not JSON"),
        "{err}"
    );

    let (code, err) = check_config(
        &route("body_schema = \"bad.json\""),
        &[("bad.json", r#"{"type": 12}"#)],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("route `lookup`:") && err.contains("is not a usable JSON Schema"),
        "{err}"
    );

    let (code, err) = check_config(
        &route("body_schema = \"s.json\"\nmax_body_bytes = 100000"),
        &[("s.json", SCHEMA)],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("`routes[0].max_body_bytes`: route `lookup` has a `body_schema`"),
        "{err}"
    );

    let get_only = "[[routes]]\nname = \"read\"\npath = \"/read\"\nmethods = [\"GET\", \"HEAD\"]\n\
                    upstream = \"api\"\nbody_schema = \"s.json\"\n";
    let (code, err) = check_config(get_only, &[("s.json", SCHEMA)]);
    assert_eq!(code, 2);
    assert!(err.contains("route `read` takes only GET or HEAD"), "{err}");

    let local = "[[routes]]\nname = \"info\"\npath = \"/info\"\nlocal = \"balance\"\n\
                 body_schema = \"s.json\"\n";
    let (code, err) = check_config(local, &[("s.json", SCHEMA)]);
    assert_eq!(code, 2);
    assert!(err.contains("route `info` is answered by keygate"), "{err}");
}
