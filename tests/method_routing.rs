//! Routing by method falls through: a route limited to some methods does not hide a less
//! specific route for the others, and a path whose routes all refuse the method answers 405 with
//! `Allow`, but only to a caller who authenticated (an unauthenticated one gets the usual 401).

mod common;

use common::*;
use serde_json::json;

const ROUTES: &str = r#"
[[routes]]
name = "poll"
path = "/v1/poll/{id}"
methods = ["GET"]
upstream = "api"
scopes = ["poll"]

[[routes]]
name = "poll_delete"
path = "/v1/poll/{id}"
methods = ["DELETE"]
upstream = "api"

[[routes]]
name = "catch_all"
path = "/v1/{*rest}"
upstream = "api"

[[routes]]
name = "reports"
path = "/reports/latest"
methods = ["GET", "HEAD"]
upstream = "api"

[[routes]]
name = "reports_any"
path = "/reports/{id}"
methods = ["PUT"]
upstream = "api"

[[routes]]
name = "status"
path = "/status"
methods = ["GET"]
upstream = "api"
auth = "none"
"#;

fn start_routes() -> (Echo, Keygate) {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = ROUTES.into();
    let kg = Keygate::start(&opts);
    (echo, kg)
}

/// A request on the most specific path with a method only the catch-all takes reaches the
/// upstream through the catch-all, with the catch-all's rules (no `poll` scope needed).
#[test]
fn a_method_the_specific_route_refuses_falls_through_to_the_catch_all() {
    let (echo, kg) = start_routes();
    let account = kg.create_account("acme");
    let (_, plain) = kg.create_key(&account, json!({}));

    // GET is the poll route's: it needs the `poll` scope.
    let r = call_with(&kg, "GET", "/v1/poll/1", Some(&plain), None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(code(&r), "insufficient_scope");
    assert_eq!(echo.hits(), 0);

    // POST is nobody's on /v1/poll/{id}: the catch-all takes it, as the upstream sees.
    let r = call_with(
        &kg,
        "POST",
        "/v1/poll/1",
        Some(&plain),
        Some(&json!({"a": 1})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/v1/poll/1");
    assert_eq!(v["body"], r#"{"a":1}"#);
    assert_eq!(echo.hits(), 1);

    // DELETE is the second route on the same pattern (no scope): config order within a
    // pattern, the method picks.
    let r = call_with(&kg, "DELETE", "/v1/poll/1", Some(&plain), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["method"], "DELETE");
    assert_eq!(echo.hits(), 2);

    // The metrics name the route that answered.
    wait_until("route counters", std::time::Duration::from_secs(5), || {
        metric(
            &kg,
            "keygate_requests_total",
            &[("route", "catch_all"), ("outcome", "forwarded")],
        ) == 1.0
            && metric(
                &kg,
                "keygate_requests_total",
                &[("route", "poll_delete"), ("outcome", "forwarded")],
            ) == 1.0
    });
}

/// When every route on the path refuses the method: 405 with `Allow` listing what the
/// matching routes take, in the configured error format, and the upstream never called.
#[test]
fn no_route_for_the_method_is_405_with_allow_after_authentication() {
    let (echo, kg) = start_routes();
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));

    let r = call_with(&kg, "DELETE", "/reports/latest", Some(&key), None);
    assert_error(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT"), "{:?}", r.headers);

    // The less specific pattern's method goes through.
    let r = call_with(&kg, "PUT", "/reports/latest", Some(&key), Some(&json!({})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["method"], "PUT");
    assert_eq!(echo.hits(), 1);

    // Unauthenticated or with a bad key: the usual 401, nothing about the routes.
    let r = call_with(&kg, "DELETE", "/reports/latest", None, None);
    assert_error(&r, 401, "missing_credential");
    assert_eq!(r.header("allow"), None);
    let r = call_with(
        &kg,
        "DELETE",
        "/reports/latest",
        Some("kg_test_nonsense"),
        None,
    );
    assert_error(&r, 401, "malformed_credential");
    assert_eq!(r.header("allow"), None);

    // An open route needs no authentication, so anybody learns its methods.
    let r = call_with(&kg, "POST", "/status", None, Some(&json!({})));
    assert_error(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET"));

    // A path no route matches stays 404.
    let r = call_with(&kg, "GET", "/elsewhere", Some(&key), None);
    assert_error(&r, 404, "route_not_found");
    assert_eq!(echo.hits(), 1);
}

/// The 405 body follows `[errors]` like every other reason.
#[test]
fn method_not_allowed_takes_the_configured_template() {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = ROUTES.into();
    opts.extra_toml = r#"
[errors.method_not_allowed]
status = 405
body = '{"message":"Method not allowed"}'
"#
    .into();
    let kg = Keygate::start(&opts);
    let r = call_with(&kg, "PATCH", "/status", None, None);
    assert_eq!(r.status, 405);
    assert_eq!(r.body, r#"{"message":"Method not allowed"}"#);
    assert_eq!(r.header("allow"), Some("GET"));
    assert_eq!(echo.hits(), 0);
}
