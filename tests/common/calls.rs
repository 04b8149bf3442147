//! The calls and checks most test files make: start keygate on the default routes, call it
//! with a key, call the admin API expecting success, and read the error body's shape.

use serde_json::Value;

use super::{bearer, request, Echo, Keygate, Options, Resp};

/// An echo upstream and keygate in front of it on the default routes.
pub fn start() -> (Echo, Keygate) {
    let echo = Echo::start();
    let kg = Keygate::start(&Options::new(echo.addr));
    (echo, kg)
}

/// `method` on the public listener, with `key` (when given) as the bearer credential and `body`
/// (when given) as JSON.
pub fn call_with(
    kg: &Keygate,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Resp {
    let auth = key.map(bearer);
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    request(method, &kg.url(path), &headers, body)
}

/// A GET on the public listener with `key` as the bearer credential.
pub fn call(kg: &Keygate, path: &str, key: &str) -> Resp {
    call_with(kg, "GET", path, Some(key), None)
}

/// An admin API call that must succeed (2xx); its JSON body, or `null` when it has none.
#[track_caller]
pub fn admin_ok(kg: &Keygate, method: &str, path: &str, body: Option<Value>) -> Value {
    let r = kg.admin(method, path, body);
    assert!(
        (200..300).contains(&r.status),
        "{method} {path}: {} {}",
        r.status,
        r.body
    );
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// Asserts an error response's status and `error.code`; returns its `error.message`.
#[track_caller]
pub fn assert_error(r: &Resp, status: u16, code: &str) -> String {
    assert_eq!(r.status, status, "{}", r.body);
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{}", r.body);
    v["error"]["message"].as_str().expect("message").to_string()
}

/// The `error.code` of a response, or `""` when it has none.
pub fn code(r: &Resp) -> String {
    r.json()["error"]["code"].as_str().unwrap_or("").to_string()
}

/// Whether `v` is a string holding an RFC 3339 time in UTC (`...Z`), as the APIs write times.
pub fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok())
}
