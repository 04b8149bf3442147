//! Regression tests for the proxy's holes found by attacking the real binary (issue "Hardening",
//! items 1, 7 and 8): identity headers spelled with underscores, refunds decided by the client
//! instead of the upstream, and method-override and URL-rewrite headers. Requests are sent byte
//! for byte as an attacker would write them.

mod common;

use std::io::{Read, Seek, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Map, Value};

fn json_body(status: u16, body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {body}"))
}

// ------------------------------------------------------------ 1. identity through underscores

/// A WSGI upstream (Python's `wsgiref`): CGI-style, it reads `-` and `_` in a header name as the
/// same character, as gunicorn before 22, Puma before its 2024 fix and PHP do. It answers with
/// its `HTTP_*` environ as JSON. Killed on drop.
struct Wsgi {
    addr: SocketAddr,
    child: Child,
}

const WSGI_APP: &str = r#"
import json, sys
from wsgiref.simple_server import make_server, WSGIRequestHandler

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

def app(environ, start_response):
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]

make_server("127.0.0.1", int(sys.argv[1]), app, handler_class=Quiet).serve_forever()
"#;

impl Wsgi {
    fn start() -> Wsgi {
        let port = free_port();
        let mut log = tempfile::tempfile().expect("log file");
        let child = Command::new("python3")
            .arg("-c")
            .arg(WSGI_APP)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.try_clone().expect("log file"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs python3 for its WSGI upstream ({e}); \
                     install it: apt-get install -y python3"
                )
            });
        let mut wsgi = Wsgi {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        };
        let addr = wsgi.addr;
        let child = &mut wsgi.child;
        wait_until("the WSGI upstream", Duration::from_secs(20), || {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                let _ = log.seek(std::io::SeekFrom::Start(0));
                let _ = log.read_to_string(&mut stderr);
                panic!("the WSGI upstream exited early ({status}):\n{stderr}");
            }
            TcpStream::connect(addr).is_ok()
        });
        wsgi
    }
}

impl Drop for Wsgi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Identity and credential headers as a client would forge them for a CGI-style upstream: every
/// name reads as a keygate identity header (or `X-API-Key`) once `_` is read as `-`.
const FORGED: &str = "X_Keygate_Key_Id: FORGED-key\r\n\
X-Keygate_Account-Id: FORGED-account\r\n\
x_keygate_user_id: FORGED-user\r\n\
X_KEYGATE_SCOPES: FORGED-scopes\r\n\
X-Keygate_Auth_Method: FORGED-method\r\n\
X_Keygate-Credits_Remaining: FORGED-credits\r\n\
X-Keygate-Key_Name: FORGED-name\r\n\
X-Keygate-Key-Id: FORGED-plain\r\n\
X_Api_Key: FORGED-api-key\r\n";

/// The `HTTP_X_KEYGATE_*` variables the upstream saw; panics if any carries a forged value, or
/// if a credential header reached it.
fn keygate_vars(status: u16, body: &str) -> Map<String, Value> {
    assert_eq!(status, 200, "{body}");
    let environ = json_body(status, body);
    let environ = environ.as_object().expect("environ object").clone();
    for (name, value) in &environ {
        let value = value.as_str().unwrap_or_default();
        assert!(
            !value.contains("FORGED"),
            "the upstream saw a client value in {name}: {value} (all: {environ:?})"
        );
    }
    for credential in ["HTTP_X_API_KEY", "HTTP_AUTHORIZATION"] {
        assert!(
            !environ.contains_key(credential),
            "{credential} reached the upstream: {environ:?}"
        );
    }
    environ
        .into_iter()
        .filter(|(k, _)| k.starts_with("HTTP_X_KEYGATE_"))
        .collect()
}

#[test]
fn identity_headers_spelled_with_underscores_never_reach_a_wsgi_upstream() {
    let wsgi = Wsgi::start();
    // The upstream reads `_` as `-` (else this test could not fail): asked directly, it takes an
    // underscored name for a keygate identity header.
    let (status, body) = raw_get(wsgi.addr, "/", "X_Keygate_Key_Id: direct\r\n");
    let environ = json_body(status, &body);
    assert_eq!(environ["HTTP_X_KEYGATE_KEY_ID"], "direct", "{body}");

    let kg = Keygate::start(&Options::new(wsgi.addr));
    let account = kg.create_account("acme");
    let (key_id, key) = kg.create_key(&account, json!({}));

    // Open route: no identity at all.
    let (status, body) = raw_get(kg.public, "/open/x", FORGED);
    let vars = keygate_vars(status, &body);
    assert!(vars.is_empty(), "identity on an open route: {vars:?}");

    // Keyed route: exactly keygate's values.
    let headers = format!("Authorization: Bearer {key}\r\n{FORGED}");
    let (status, body) = raw_get(kg.public, "/v1/x", &headers);
    let vars = keygate_vars(status, &body);
    assert_eq!(vars["HTTP_X_KEYGATE_KEY_ID"], key_id.as_str(), "{vars:?}");
    assert_eq!(
        vars["HTTP_X_KEYGATE_ACCOUNT_ID"],
        account.as_str(),
        "{vars:?}"
    );
    assert_eq!(vars["HTTP_X_KEYGATE_AUTH_METHOD"], "api_key", "{vars:?}");
    assert!(
        !vars.contains_key("HTTP_X_KEYGATE_USER_ID"),
        "an admin-made key has no user: {vars:?}"
    );

    // The credential in `X-API-Key` spelled with underscores is dropped too, with the key in it.
    let headers = format!("X-API-Key: {key}\r\nX_API_KEY: FORGED-second\r\n");
    let (status, body) = raw_get(kg.public, "/v1/x", &headers);
    let vars = keygate_vars(status, &body);
    assert_eq!(vars["HTTP_X_KEYGATE_KEY_ID"], key_id.as_str(), "{vars:?}");
}

/// Two hundred distinct names in the identity namespace, in a mix of spellings: every one is
/// dropped (the strip is one pass over the names, whatever their number), and keygate's own
/// identity headers still arrive.
#[test]
fn hundreds_of_forged_identity_names_are_all_stripped() {
    let wsgi = Wsgi::start();
    let kg = Keygate::start(&Options::new(wsgi.addr));
    let account = kg.create_account("acme");
    let (key_id, key) = kg.create_key(&account, json!({}));
    let mut headers = format!("Authorization: Bearer {key}\r\n");
    for i in 0..200 {
        let name = match i % 3 {
            0 => format!("X-Keygate-Forged-{i}"),
            1 => format!("X_Keygate_Forged_{i}"),
            _ => format!("x-KEYGATE_forged-{i}"),
        };
        headers.push_str(&format!("{name}: FORGED-{i}\r\n"));
    }
    let (status, body) = raw_get(kg.public, "/v1/x", &headers);
    let vars = keygate_vars(status, &body);
    assert!(
        !vars.keys().any(|k| k.starts_with("HTTP_X_KEYGATE_FORGED")),
        "a forged name reached the upstream: {vars:?}"
    );
    assert_eq!(vars["HTTP_X_KEYGATE_KEY_ID"], key_id.as_str(), "{vars:?}");
    assert_eq!(vars["HTTP_X_KEYGATE_AUTH_METHOD"], "api_key", "{vars:?}");
}

// ------------------------------------------------------------ 7. charge_on = "success"

const PAID: &str = r#"
[[routes]]
name = "paid"
path = "/paid/{*rest}"
upstream = "api"
cost = 1
charge_on = "success"
"#;

fn balance(kg: &Keygate, account: &str) -> i64 {
    admin_ok(
        kg,
        "GET",
        &format!("/admin/v1/accounts/{account}/credits"),
        None,
    )["balance"]
        .as_i64()
        .expect("balance")
}

/// `(delta, reason)` of every ledger entry, oldest first.
fn ledger(kg: &Keygate, account: &str) -> Vec<(i64, String)> {
    let path = format!("/admin/v1/accounts/{account}/transactions?limit=100");
    admin_ok(kg, "GET", &path, None)["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .map(|e| {
            (
                e["delta"].as_i64().expect("delta"),
                e["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until keygate has finished `n` forwarded requests on the `paid` route (answered, or
/// failed at an upstream that is down): a request is counted once its credits are settled
/// (charged for good or refunded).
fn wait_settled(kg: &Keygate, n: usize) {
    let counted = |outcome: &str| {
        metric(
            kg,
            "keygate_requests_total",
            &[("route", "paid"), ("outcome", outcome)],
        )
    };
    wait_until(
        &format!("{n} settled requests"),
        Duration::from_secs(10),
        || {
            counted("forwarded") + counted("upstream_unavailable") + counted("upstream_timeout")
                >= n as f64
        },
    );
}

/// A client that sends its request and hangs up at once.
fn send_and_hang_up(kg: &Keygate, key: &str, path: &str) {
    let mut stream = TcpStream::connect(kg.public).expect("connect");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: keygate\r\nAuthorization: Bearer {key}\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let _ = stream.shutdown(Shutdown::Both);
}

/// A client that reads the status line of the answer, then hangs up.
fn read_status_line_and_hang_up(kg: &Keygate, key: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(kg.public).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: keygate\r\nAuthorization: Bearer {key}\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => break,
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    String::from_utf8_lossy(&line).trim().to_string()
}

/// `charge_on = "success"` gives credits back only when the upstream did not answer 2xx: a client
/// that hangs up, before or after the answer's head, pays for the work the upstream did.
#[test]
fn charge_on_success_is_decided_by_the_upstream_not_by_the_client() {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = PAID.into();
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{account}/credits"),
        Some(json!({ "delta": 100 })),
    );

    const HANG_UPS: usize = 10;
    for _ in 0..HANG_UPS {
        send_and_hang_up(&kg, &key, "/paid/x");
    }
    wait_settled(&kg, HANG_UPS);
    for _ in 0..HANG_UPS {
        let line = read_status_line_and_hang_up(&kg, &key, "/paid/x");
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    }
    wait_settled(&kg, 2 * HANG_UPS);
    let charged = 2 * HANG_UPS as i64;
    let entries = ledger(&kg, &account);
    assert_eq!(balance(&kg, &account), 100 - charged, "{entries:?}");
    assert_eq!(
        entries.iter().filter(|(_, r)| r == "refund").count(),
        0,
        "{entries:?}"
    );
    assert_eq!(
        entries.iter().filter(|(d, _)| *d == -1).count(),
        2 * HANG_UPS,
        "{entries:?}"
    );

    // The upstream fails: refunded, whether the client stays or not.
    let r = call(&kg, "/paid/status/500", &key);
    assert_eq!(r.status, 500, "{}", r.body);
    let line = read_status_line_and_hang_up(&kg, &key, "/paid/status/500");
    assert!(line.starts_with("HTTP/1.1 500"), "{line}");
    wait_settled(&kg, 2 * HANG_UPS + 2);
    let entries = ledger(&kg, &account);
    assert_eq!(balance(&kg, &account), 100 - charged, "{entries:?}");
    assert_eq!(
        entries.iter().filter(|(_, r)| r == "refund").count(),
        2,
        "{entries:?}"
    );

    // An upstream that cannot be reached did no work: refunded.
    let upstream = echo.addr;
    drop(echo);
    wait_until("the upstream to stop", Duration::from_secs(10), || {
        TcpStream::connect(upstream).is_err()
    });
    let r = call(&kg, "/paid/x", &key);
    assert_eq!(r.status, 502, "{}", r.body);
    wait_settled(&kg, 2 * HANG_UPS + 3);
    assert_eq!(balance(&kg, &account), 100 - charged);
}

// ------------------------------------------------------------ 8. method override, rewrite URLs

/// The headers stripped by default, in the spellings a client would try.
const OVERRIDES: &str = "X-HTTP-Method-Override: DELETE\r\n\
X-HTTP-Method: DELETE\r\n\
X-Method-Override: DELETE\r\n\
X_HTTP_Method_Override: DELETE\r\n\
X-Original-URL: /admin/delete-everything\r\n\
X-Rewrite-URL: /admin/delete-everything\r\n\
X_Original_URL: /admin/delete-everything\r\n\
X-Innocent: kept\r\n";

const STRIPPED_BY_DEFAULT: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// The header names the echo upstream received, with `_` read as `-`.
fn echoed_header_names(status: u16, body: &str) -> Vec<String> {
    assert_eq!(status, 200, "{body}");
    let echoed = json_body(status, body);
    echoed["headers"]
        .as_object()
        .expect("headers")
        .keys()
        .map(|k| k.replace('_', "-"))
        .collect()
}

#[test]
fn method_override_and_rewrite_headers_are_stripped_by_default() {
    let echo = Echo::start();
    let kg = Keygate::start(&Options::new(echo.addr));
    let account = kg.create_account("acme");
    let (_, read_only) = kg.create_key(&account, json!({ "permission": "read" }));

    let keyed = format!("Authorization: Bearer {read_only}\r\n{OVERRIDES}");
    for (path, headers) in [("/v1/x", keyed.as_str()), ("/open/x", OVERRIDES)] {
        let (status, body) = raw_get(kg.public, path, headers);
        let names = echoed_header_names(status, &body);
        for stripped in STRIPPED_BY_DEFAULT {
            assert!(
                !names.iter().any(|n| n == stripped),
                "{path}: {stripped} reached the upstream: {body}"
            );
        }
        assert!(names.iter().any(|n| n == "x-innocent"), "{body}");
        assert_eq!(json_body(status, &body)["method"], "GET", "{body}");
    }
}

#[test]
fn an_operator_chooses_the_headers_stripped() {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    // Replaces the default list: this upstream wants method overrides, and no debug header.
    opts.extra_toml = "[forwarding]\nstrip_headers = [\"X-Debug-User\"]\n".into();
    let kg = Keygate::start(&opts);
    let headers = "X-Debug_User: root\r\nX-HTTP-Method-Override: PUT\r\n";
    let (status, body) = raw_get(kg.public, "/open/x", headers);
    let names = echoed_header_names(status, &body);
    assert!(!names.iter().any(|n| n == "x-debug-user"), "{body}");
    assert!(
        names.iter().any(|n| n == "x-http-method-override"),
        "{body}"
    );

    // A name that is not a header name is a configuration error, named with its field.
    let bad = kg.dir.path().join("bad.toml");
    std::fs::write(&bad, "[forwarding]\nstrip_headers = [\"bad header\"]\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("check-config")
        .arg(&bad)
        .output()
        .expect("check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("forwarding.strip_headers"), "{stderr}");
}

/// Rails, Laravel and Symfony read a `_method` query (or form) parameter as the request's
/// method: on a read-only credential it is refused, nothing forwarded and nothing charged.
#[test]
fn a_method_parameter_on_a_read_only_key_is_refused() {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = format!("{}{PAID}", DEFAULT_ROUTES);
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");
    let (_, read_only) = kg.create_key(&account, json!({ "permission": "read" }));
    let (_, read_write) = kg.create_key(&account, json!({}));
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{account}/credits"),
        Some(json!({ "delta": 10 })),
    );

    let refused = [
        "/paid/x?_method=DELETE",
        "/paid/x?a=1&_method=put",
        "/paid/x?%5Fmethod=DELETE",
        "/paid/x?_METHOD=delete",
        "/paid/x?.method=delete",
        "/paid/x?+method=delete",
        "/paid/x?_method",
    ];
    for path in refused {
        let r = call(&kg, path, &read_only);
        assert_error(&r, 403, "read_only_key");
    }
    assert_eq!(echo.hits(), 0, "nothing reached the upstream");
    assert_eq!(balance(&kg, &account), 10, "nothing charged");
    assert_eq!(ledger(&kg, &account).len(), 1, "only the top-up");
    let counted = metric(
        &kg,
        "keygate_requests_total",
        &[("route", "paid"), ("outcome", "read_only_key")],
    );
    assert_eq!(counted, refused.len() as f64);

    // Parameters that only look alike pass, and a key that may write may override.
    for path in ["/v1/x?method=DELETE", "/v1/x?my_method=DELETE"] {
        let r = call(&kg, path, &read_only);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let r = call(&kg, "/v1/x?_method=DELETE", &read_write);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["query"], "_method=DELETE");
}
