//! The real client IP and request ids through the binary (issue 9, items 7 and 8): trusted and
//! untrusted peers are told apart by their source address (127.0.0.2 is the trusted "load
//! balancer", 127.0.0.3 an untrusted client), PROXY protocol v1/v2 headers, the per-IP
//! connection cap, and `X-Request-Id` on every kind of answer.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::*;
use serde_json::Value;

const LB: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

fn routes(dead_upstream: u16) -> String {
    format!(
        r#"
[[routes]]
name = "login"
path = "/api/auth/login"
methods = ["POST"]
local = "login"
auth = "none"
ip_rate_limit = {{ requests = 2, per_seconds = 3600 }}

[[routes]]
name = "jwks"
path = "/.well-known/jwks.json"
local = "jwks"
auth = "none"

[[routes]]
name = "open"
path = "/open/{{*rest}}"
upstream = "api"
auth = "none"

[[routes]]
name = "v1"
path = "/v1/{{*rest}}"
upstream = "api"

[[routes]]
name = "down"
path = "/down"
upstream = "down"
auth = "none"

[upstreams.down]
address = "127.0.0.1:{dead_upstream}"
"#
    )
}

fn start_with(server_toml: &str, listeners_toml: &str) -> (Echo, Keygate) {
    let echo = Echo::start();
    let mut o = Options::new(echo.addr);
    o.routes_toml = routes(free_port());
    o.server_toml = server_toml.into();
    o.listeners_toml = listeners_toml.into();
    let kg = Keygate::start(&o);
    (echo, kg)
}

/// keygate trusting only 127.0.0.2 (and a 10/8 network standing for the balancers' hops).
fn start() -> (Echo, Keygate) {
    start_with("trusted_proxies = [\"127.0.0.2/32\", \"10.0.0.0/8\"]\n", "")
}

fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: keygate\r\n{headers}Connection: close\r\n\r\n")
        .into_bytes()
}

fn login(headers: &str) -> Vec<u8> {
    let body = r#"{"email":"nobody@example.com","password":"wrong password"}"#;
    format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: keygate\r\n{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What the echo upstream received, as header name -> value.
fn upstream_headers(answer: &RawAnswer) -> serde_json::Map<String, Value> {
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()["headers"]
        .as_object()
        .expect("echoed headers")
        .clone()
}

fn header<'a>(h: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a str> {
    h.get(name).and_then(Value::as_str)
}

#[test]
fn an_untrusted_peers_forwarding_headers_are_dropped_and_replaced() {
    let (_echo, kg) = start();
    let spoofed =
        "X-Forwarded-For: 1.1.1.1\r\nX_Forwarded_For: 1.1.1.2\r\nx-forwarded-for: 1.1.1.3\r\n\
                   X-Real-IP: 9.9.9.9\r\nX_Real_Ip: 9.9.9.8\r\nForwarded: for=8.8.8.8\r\n\
                   X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\
                   X_Forwarded_Port: 1\r\nX-Request-Id: chosen-by-client\r\n";
    let answer = raw_from(CLIENT, kg.public, &get("/open/x", spoofed));
    let h = upstream_headers(&answer);
    assert_eq!(header(&h, "x-forwarded-for"), Some("127.0.0.3"), "{h:?}");
    assert_eq!(header(&h, "x-real-ip"), Some("127.0.0.3"), "{h:?}");
    assert_eq!(header(&h, "x-forwarded-proto"), Some("http"), "{h:?}");
    for gone in [
        "x_forwarded_for",
        "x_real_ip",
        "forwarded",
        "x-forwarded-host",
        "x_forwarded_port",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream: {h:?}");
    }
    let id = header(&h, "x-request-id").expect("a request id upstream");
    assert_ne!(id, "chosen-by-client");
    assert_eq!(answer.header("x-request-id"), Some(id), "{answer:?}");
}

#[test]
fn a_spoofed_x_forwarded_for_does_not_escape_the_per_ip_login_limit() {
    let (_echo, kg) = start();
    let statuses: Vec<u16> = ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]
        .iter()
        .map(|ip| {
            let headers = format!("X-Forwarded-For: {ip}\r\nX-Real-IP: {ip}\r\n");
            raw_from(CLIENT, kg.public, &login(&headers)).status
        })
        .collect();
    assert_eq!(statuses, [401, 401, 429, 429], "one client, one bucket");
    // Another client is not throttled by it.
    assert_eq!(
        raw_from(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)),
            kg.public,
            &login("")
        )
        .status,
        401
    );
}

#[test]
fn behind_a_trusted_proxy_each_client_has_its_own_login_limit() {
    let (_echo, kg) = start();
    let from = |xff: &str| {
        raw_from(
            LB,
            kg.public,
            &login(&format!("X-Forwarded-For: {xff}\r\n")),
        )
        .status
    };
    // Client A, through the balancer and one more trusted hop (10.0.0.7).
    assert_eq!(from("198.51.100.1, 10.0.0.7"), 401);
    assert_eq!(from("198.51.100.1"), 401);
    assert_eq!(from("198.51.100.1"), 429);
    // Putting B's address in front does not make A's request B's: only the right-most untrusted
    // address counts.
    assert_eq!(from("198.51.100.2, 198.51.100.1"), 429);
    // Client B, behind the same balancer, has its own bucket.
    assert_eq!(from("198.51.100.2"), 401);
    assert_eq!(from("6.6.6.6, 198.51.100.2, 10.0.0.7"), 401);
    assert_eq!(from("198.51.100.2"), 429);
    // The balancer's own requests (no X-Forwarded-For) are its own.
    assert_eq!(raw_from(LB, kg.public, &login("")).status, 401);
}

#[test]
fn a_trusted_proxys_chain_is_extended_and_its_proto_kept() {
    let (_echo, kg) = start();
    let headers = "X-Forwarded-For: 6.6.6.6, 198.51.100.1\r\nX-Forwarded-Proto: https\r\n\
                   X-Forwarded-Host: api.example.com\r\nX_Forwarded_Host: evil.example\r\n\
                   X_Forwarded_For: 7.7.7.7\r\nX-Real-IP: 9.9.9.9\r\n";
    let h = upstream_headers(&raw_from(LB, kg.public, &get("/open/x", headers)));
    assert_eq!(
        header(&h, "x-forwarded-for"),
        Some("6.6.6.6, 198.51.100.1, 127.0.0.2"),
        "{h:?}"
    );
    assert_eq!(header(&h, "x-real-ip"), Some("198.51.100.1"), "{h:?}");
    assert_eq!(header(&h, "x-forwarded-proto"), Some("https"), "{h:?}");
    assert_eq!(
        header(&h, "x-forwarded-host"),
        Some("api.example.com"),
        "{h:?}"
    );
    assert!(!h.contains_key("x_forwarded_host"), "{h:?}");
    assert!(!h.contains_key("x_forwarded_for"), "{h:?}");

    // `Forwarded` (RFC 7239) is read when there is no X-Forwarded-For, and this hop is appended.
    let headers = "Forwarded: for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https\r\n";
    let h = upstream_headers(&raw_from(LB, kg.public, &get("/open/x", headers)));
    assert_eq!(header(&h, "x-real-ip"), Some("2001:db8::1"), "{h:?}");
    assert_eq!(header(&h, "x-forwarded-for"), Some("127.0.0.2"), "{h:?}");
    assert_eq!(
        header(&h, "forwarded"),
        Some("for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https, for=127.0.0.2;proto=http"),
        "{h:?}"
    );

    // Garbage in the chain: the walk stops there, at the last address a trusted proxy wrote.
    let headers =
        "X-Forwarded-For: 198.51.100.1, not-an-ip, 10.0.0.7\r\nX-Forwarded-Proto: gopher\r\n";
    let h = upstream_headers(&raw_from(LB, kg.public, &get("/open/x", headers)));
    assert_eq!(header(&h, "x-real-ip"), Some("10.0.0.7"), "{h:?}");
    assert_eq!(header(&h, "x-forwarded-proto"), Some("http"), "{h:?}");
}

#[test]
fn every_answer_carries_the_request_id_and_a_trusted_one_is_kept() {
    let (_echo, kg) = start();
    let ids = |answer: &RawAnswer| {
        answer
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no x-request-id: {answer:?}"))
            .to_string()
    };

    // Forwarded: the upstream and the client see the same, generated, id.
    let first = raw_from(CLIENT, kg.public, &get("/open/a", ""));
    let second = raw_from(CLIENT, kg.public, &get("/open/b", ""));
    assert_eq!(
        header(&upstream_headers(&first), "x-request-id"),
        Some(ids(&first).as_str())
    );
    assert_ne!(ids(&first), ids(&second), "ids are unique");

    // A trusted proxy's id is kept, upstream and back.
    let kept = raw_from(
        LB,
        kg.public,
        &get("/open/x", "X-Request-Id: lb-7f3a:req/42\r\n"),
    );
    assert_eq!(ids(&kept), "lb-7f3a:req/42");
    assert_eq!(
        header(&upstream_headers(&kept), "x-request-id"),
        Some("lb-7f3a:req/42")
    );
    // ...unless it is not a short run of visible ASCII.
    let long = "a".repeat(129);
    for bad in [long.as_str(), "has space", "caf\u{e9}"] {
        let answer = raw_from(
            LB,
            kg.public,
            &get("/open/x", &format!("X-Request-Id: {bad}\r\n")),
        );
        assert_ne!(ids(&answer), bad);
        assert_eq!(
            header(&upstream_headers(&answer), "x-request-id"),
            Some(ids(&answer).as_str())
        );
    }
    // An untrusted client's id is replaced.
    let replaced = raw_from(CLIENT, kg.public, &get("/open/x", "X-Request-Id: mine\r\n"));
    assert_ne!(ids(&replaced), "mine");

    // Rejections, local answers, routes not found and upstream failures carry one too.
    let rejected = raw_from(CLIENT, kg.public, &get("/v1/x", ""));
    assert_eq!(rejected.status, 401, "{rejected:?}");
    let local = raw_from(CLIENT, kg.public, &get("/.well-known/jwks.json", ""));
    assert_eq!(local.status, 200, "{local:?}");
    let not_found = raw_from(CLIENT, kg.public, &get("/nowhere", ""));
    assert_eq!(not_found.status, 404, "{not_found:?}");
    let failed = raw_from(CLIENT, kg.public, &get("/down", ""));
    assert_eq!(failed.status, 502, "{failed:?}");
    let kept_on_failure = raw_from(LB, kg.public, &get("/down", "X-Request-Id: lb-1\r\n"));
    assert_eq!(ids(&kept_on_failure), "lb-1");
    let all: Vec<String> = [&rejected, &local, &not_found, &failed]
        .iter()
        .map(|a| ids(a))
        .collect();
    let unique: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "{all:?}");
}

/// Sends `prefix` then a GET of /open/x with `headers` on one connection from `from`.
fn with_prefix(from: IpAddr, to: SocketAddr, prefix: &[u8], headers: &str) -> Vec<u8> {
    let mut s = connect_from(from, to).expect("connect");
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(&get("/open/x", headers));
    s.write_all(&bytes).expect("write");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer
}

fn v2_header(client: SocketAddr, command: ppp::v2::Command) -> Vec<u8> {
    let server: SocketAddr = "127.0.0.1:80".parse().expect("addr");
    let client_addresses = match client {
        SocketAddr::V4(_) => (client, server),
        SocketAddr::V6(_) => (client, "[::1]:80".parse().expect("addr")),
    };
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | command,
        ppp::v2::Protocol::Stream,
        client_addresses,
    )
    .build()
    .expect("v2 header")
}

#[test]
fn proxy_protocol_v1_and_v2_give_the_client_address() {
    // The L4 balancer connects from 127.0.0.2, which is also a trusted L7 proxy here: the PROXY
    // header's address replaces it, so a client's X-Forwarded-For is not believed.
    let (_echo, kg) = start_with(
        "trusted_proxies = [\"127.0.0.2/32\", \"10.0.0.0/8\"]\n",
        "proxy_protocol = true\n",
    );
    let spoof = "X-Forwarded-For: 1.1.1.1\r\n";

    let v1 = with_prefix(
        LB,
        kg.public,
        b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n",
        spoof,
    );
    let h = upstream_headers(&parse_answer(&v1).expect("an answer"));
    assert_eq!(header(&h, "x-real-ip"), Some("198.51.100.9"), "{h:?}");
    assert_eq!(header(&h, "x-forwarded-for"), Some("198.51.100.9"), "{h:?}");

    let v1_ipv6 = with_prefix(LB, kg.public, b"PROXY TCP6 2001:db8::9 ::1 5555 80\r\n", "");
    let h = upstream_headers(&parse_answer(&v1_ipv6).expect("an answer"));
    assert_eq!(header(&h, "x-real-ip"), Some("2001:db8::9"), "{h:?}");

    let client: SocketAddr = "203.0.113.5:40000".parse().expect("addr");
    let v2 = with_prefix(
        LB,
        kg.public,
        &v2_header(client, ppp::v2::Command::Proxy),
        spoof,
    );
    let h = upstream_headers(&parse_answer(&v2).expect("an answer"));
    assert_eq!(header(&h, "x-real-ip"), Some("203.0.113.5"), "{h:?}");

    // A PROXY header naming a trusted proxy (an L7 hop in front of the L4 balancer): its
    // X-Forwarded-For is read.
    let via_trusted = with_prefix(
        LB,
        kg.public,
        &v2_header(
            "10.0.0.9:1234".parse().expect("addr"),
            ppp::v2::Command::Proxy,
        ),
        "X-Forwarded-For: 198.51.100.44\r\n",
    );
    let h = upstream_headers(&parse_answer(&via_trusted).expect("an answer"));
    assert_eq!(header(&h, "x-real-ip"), Some("198.51.100.44"), "{h:?}");
    assert_eq!(
        header(&h, "x-forwarded-for"),
        Some("198.51.100.44, 10.0.0.9"),
        "{h:?}"
    );

    // LOCAL (the balancer's health check): the real peer.
    let local = with_prefix(
        CLIENT,
        kg.public,
        &v2_header(client, ppp::v2::Command::Local),
        "",
    );
    let h = upstream_headers(&parse_answer(&local).expect("an answer"));
    assert_eq!(header(&h, "x-real-ip"), Some("127.0.0.3"), "{h:?}");

    // The PROXY address is what per-IP limits count: two clients through one balancer.
    let login_via = |client: &str| {
        let mut s = connect_from(LB, kg.public).expect("connect");
        let mut bytes = format!("PROXY TCP4 {client} 127.0.0.1 5555 80\r\n").into_bytes();
        bytes.extend_from_slice(&login(""));
        s.write_all(&bytes).expect("write");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        parse_answer(&answer).expect("an answer").status
    };
    assert_eq!(
        [
            login_via("198.51.100.1"),
            login_via("198.51.100.1"),
            login_via("198.51.100.1"),
            login_via("198.51.100.2"),
        ],
        [401, 401, 429, 401]
    );
}

#[test]
fn with_proxy_protocol_on_a_connection_without_a_valid_header_is_closed() {
    let (echo, kg) = start_with("", "proxy_protocol = true\n");
    for prefix in [
        &b""[..],
        b"PROXY TCP4 not-an-address 127.0.0.1 5555 80\r\n",
        b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\n",
        b"\r\n\r\n\0\r\nQUIT\n\x99",
    ] {
        let answer = with_prefix(CLIENT, kg.public, prefix, "");
        assert!(
            answer.is_empty(),
            "{prefix:?} got an answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert_eq!(echo.hits(), 0, "nothing was forwarded");
    wait_for_metric(
        &kg,
        "keygate_connections_closed_total",
        &[("reason", "proxy_header")],
        4.0,
    );
    // A valid one still works on the same listener.
    let ok = with_prefix(
        CLIENT,
        kg.public,
        b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n",
        "",
    );
    assert_eq!(parse_answer(&ok).expect("an answer").status, 200);
}

#[test]
fn without_proxy_protocol_a_proxy_header_is_not_read() {
    let (echo, kg) = start();
    let answer = with_prefix(
        CLIENT,
        kg.public,
        b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n",
        "",
    );
    // pingora reads "PROXY TCP4 ..." as a (bad) request line.
    let status = parse_answer(&answer).map(|a| a.status);
    assert!(
        status.is_none() || status == Some(400),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(echo.hits(), 0);
}

/// A keep-alive connection from `from` that has served one request (so keygate counted it).
fn held_connection(from: IpAddr, to: SocketAddr) -> Option<std::net::TcpStream> {
    let mut s = connect_from(from, to).ok()?;
    s.write_all(b"GET /open/held HTTP/1.1\r\nHost: keygate\r\n\r\n")
        .ok()?;
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    // The echo answers with a Content-Length; read the head and the body it announces.
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return head.starts_with("HTTP/1.1 200").then_some(s);
            }
        }
    }
}

#[test]
fn trusted_proxies_are_exempt_from_the_per_ip_connection_cap() {
    let (_echo, kg) = start_with(
        "trusted_proxies = [\"127.0.0.2/32\"]\nmax_connections_per_ip = 2\n",
        "",
    );
    // The balancer holds many more connections than the cap, and each serves.
    let lb: Vec<_> = (0..6)
        .map(|i| held_connection(LB, kg.public).unwrap_or_else(|| panic!("LB connection {i}")))
        .collect();
    assert_eq!(lb.len(), 6);
    // An untrusted client gets two, and the third is closed at once.
    let client: Vec<_> = (0..2)
        .map(|i| held_connection(CLIENT, kg.public).unwrap_or_else(|| panic!("client {i}")))
        .collect();
    assert!(
        held_connection(CLIENT, kg.public).is_none(),
        "a third connection from an untrusted client was served"
    );
    wait_for_metric(
        &kg,
        "keygate_connections_closed_total",
        &[("reason", "per_ip_limit")],
        1.0,
    );
    drop(client);
    drop(lb);
}

/// Waits until the metric reaches at least `at_least`.
fn wait_for_metric(kg: &Keygate, name: &str, labels: &[(&str, &str)], at_least: f64) {
    wait_until(
        &format!("{name}{labels:?} >= {at_least}"),
        std::time::Duration::from_secs(10),
        || metric(kg, name, labels) >= at_least,
    );
}
