//! Request body limits through the binary (issue 9, item 9): a route's `max_body_bytes` (default
//! 10 MiB) answers 413 `payload_too_large` before anything is charged when `Content-Length`
//! says so, and cuts the upstream connection (credit refunded) when a chunked body goes over.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// An upstream that records, per connection, every byte it received until the connection
/// ended, and whether the request's chunked body was complete; it answers 200 to a whole request.
struct Sink {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Sink {
    fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let record = record.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut got = Vec::new();
                    let mut buf = [0u8; 8192];
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        if got.ends_with(b"0\r\n\r\n") {
                            let _ = conn.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                            );
                            break;
                        }
                    }
                    record.lock().expect("lock").push(got);
                });
            }
        });
        Sink { addr, seen }
    }

    fn connections(&self) -> Vec<Vec<u8>> {
        self.seen.lock().expect("lock").clone()
    }
}

fn routes(sink: SocketAddr) -> String {
    format!(
        r#"
[[routes]]
name = "small"
path = "/small"
methods = ["POST"]
upstream = "api"
max_body_bytes = 1024
cost = 1

[[routes]]
name = "cut"
path = "/cut"
methods = ["POST"]
upstream = "sink"
max_body_bytes = 1024
cost = 1

[[routes]]
name = "v1"
path = "/v1/{{*rest}}"
upstream = "api"

[[routes]]
name = "big"
path = "/big"
methods = ["POST"]
upstream = "sink"

[upstreams.sink]
address = "{sink}"
"#
    )
}

struct Setup {
    echo: Echo,
    sink: Sink,
    kg: Keygate,
    account: String,
    key: String,
}

fn setup() -> Setup {
    let echo = Echo::start();
    let sink = Sink::start();
    let mut o = Options::new(echo.addr);
    o.routes_toml = routes(sink.addr);
    let kg = Keygate::start(&o);
    let account = kg.create_account("acme");
    let r = kg.admin(
        "POST",
        &format!("/admin/v1/accounts/{account}/credits"),
        Some(json!({ "delta": 5 })),
    );
    assert_eq!(r.status, 200, "top up: {}", r.body);
    let (_, key) = kg.create_key(&account, json!({}));
    Setup {
        echo,
        sink,
        kg,
        account,
        key,
    }
}

fn balance(kg: &Keygate, account: &str) -> i64 {
    let r = kg.admin(
        "GET",
        &format!("/admin/v1/accounts/{account}/credits"),
        None,
    );
    assert_eq!(r.status, 200, "balance: {}", r.body);
    r.json()["balance"].as_i64().expect("balance")
}

fn with_length(path: &str, key: &str, declared: usize, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: keygate\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A chunked body of `chunks` chunks of `size` bytes each, terminated.
fn chunked(path: &str, key: &str, chunks: usize, size: usize) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: keygate\r\nAuthorization: Bearer {key}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..chunks {
        r.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        r.extend(std::iter::repeat_n(b'x', size));
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

fn assert_too_large(answer: &RawAnswer) {
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(
        answer.json()["error"]["code"],
        json!("payload_too_large"),
        "{answer:?}"
    );
    assert!(answer.header("x-request-id").is_some(), "{answer:?}");
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_anything_is_charged() {
    let s = setup();
    let answer = raw_from(
        CLIENT,
        s.kg.public,
        &with_length("/small", &s.key, 2048, &[b'x'; 2048]),
    );
    assert_too_large(&answer);
    assert_eq!(balance(&s.kg, &s.account), 5, "credits untouched");
    assert_eq!(s.echo.hits(), 0, "nothing forwarded");
    // Before the key is even looked at: the same without a valid key.
    let answer = raw_from(
        CLIENT,
        s.kg.public,
        &with_length("/small", "kg_test_nope", 2048, &[b'x'; 2048]),
    );
    assert_too_large(&answer);
    // A declared body that is never sent is not waited for (the limit is read off the header).
    let answer = raw_from(
        CLIENT,
        s.kg.public,
        &with_length("/small", &s.key, 1 << 30, b""),
    );
    assert_too_large(&answer);

    // At the limit it goes through and is charged.
    let answer = raw_from(
        CLIENT,
        s.kg.public,
        &with_length("/small", &s.key, 1024, &[b'y'; 1024]),
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["body"].as_str().map(str::len), Some(1024));
    assert_eq!(balance(&s.kg, &s.account), 4);
    assert_eq!(
        metric(
            &s.kg,
            "keygate_requests_total",
            &[("route", "small"), ("outcome", "payload_too_large")]
        ),
        3.0
    );
}

#[test]
fn the_default_limit_is_ten_mebibytes() {
    let s = setup();
    let over = raw_from(
        CLIENT,
        s.kg.public,
        &with_length("/v1/x", &s.key, 10 * 1024 * 1024 + 1, b""),
    );
    assert_too_large(&over);
    // Exactly 10 MiB, streamed: forwarded whole.
    let at = raw_from(
        CLIENT,
        s.kg.public,
        &chunked("/big", &s.key, 160, 64 * 1024),
    );
    assert_eq!(at.status, 200, "{}", at.head);
    // One byte more: cut.
    let mut over = chunked("/big", &s.key, 160, 64 * 1024);
    let end = over.len() - b"0\r\n\r\n".len();
    over.splice(end..end, b"1\r\nz\r\n".iter().copied());
    assert_too_large(&raw_from(CLIENT, s.kg.public, &over));
}

#[test]
fn a_chunked_body_over_the_limit_cuts_the_upstream_and_refunds() {
    let s = setup();
    // Under the limit: forwarded whole, charged.
    let ok = raw_from(CLIENT, s.kg.public, &chunked("/cut", &s.key, 4, 256));
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(balance(&s.kg, &s.account), 4);

    // Over it: the upstream got the head and part of the body, then its connection was cut
    // (never the terminating chunk); the client gets 413 and its credit back.
    let over = raw_from(CLIENT, s.kg.public, &chunked("/cut", &s.key, 8, 256));
    assert_too_large(&over);
    wait_until(
        "the sink saw its second connection end",
        Duration::from_secs(10),
        || s.sink.connections().len() >= 2,
    );
    let cut = s
        .sink
        .connections()
        .into_iter()
        .find(|c| !c.ends_with(b"0\r\n\r\n"))
        .expect("a connection that ended before the body did");
    assert!(cut.starts_with(b"POST /cut HTTP/1.1"), "{cut:?}");
    assert!(
        cut.len() < 8 * 256,
        "more than the limit reached the upstream"
    );
    wait_until("the credit is back", Duration::from_secs(10), || {
        balance(&s.kg, &s.account) == 4
    });
    assert_eq!(
        metric(
            &s.kg,
            "keygate_requests_total",
            &[("route", "cut"), ("outcome", "payload_too_large")]
        ),
        1.0
    );
}
