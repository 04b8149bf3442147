mod common;
use common::*;

#[test]
fn starts_and_forwards_an_open_route() {
    let echo = Echo::start();
    let kg = Keygate::start(&Options::new(echo.addr));
    let r = get(&kg.url("/open/ping"), &[("x-keygate-key-id", "spoofed")]);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["path"], "/open/ping");
    assert!(v["headers"].get("x-keygate-key-id").is_none());
    let r = get(&kg.url("/v1/x"), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "missing_credential");
}
