//! An upstream that is down or does not answer gets the API's own error format: 502
//! `upstream_unavailable` or 504 `upstream_timeout` through the templates, no `Server: Pingora`,
//! counted under its reason (not `forwarded`), and the credits it cost go back.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn balance(kg: &Keygate, account: &str) -> i64 {
    let r = kg.admin(
        "GET",
        &format!("/admin/v1/accounts/{account}/credits"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["balance"].as_i64().expect("balance")
}

#[test]
fn a_down_or_silent_upstream_answers_in_the_apis_format_and_costs_nothing() {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    // Nothing listens here.
    let down_addr = format!("127.0.0.1:{}", free_port());

    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = format!(
        r#"
[upstreams.down]
address = "{down_addr}"

[upstreams.silent]
address = "{silent_addr}"
read_timeout_ms = 500

[[routes]]
name = "down"
path = "/down/{{*rest}}"
upstream = "down"
cost = 1

[[routes]]
name = "silent"
path = "/silent/{{*rest}}"
upstream = "silent"
cost = 1

[[routes]]
name = "v1"
path = "/v1/{{*rest}}"
upstream = "api"

[errors.upstream_timeout]
body = '{{"error":{{"code":"{{reason}}","detail":"{{message}}"}}}}'
"#
    );
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{account}/credits"),
        Some(json!({"delta": 10})),
    );

    let r = call(&kg, "/down/x", &key);
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"error": {"code": "upstream_unavailable", "message": "The service is unavailable"}})
    );
    assert!(
        r.header("server").is_none_or(|s| !s.contains("Pingora")),
        "{:?}",
        r.headers
    );

    let r = call(&kg, "/silent/x", &key);
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"error": {"code": "upstream_timeout", "detail": "The service did not answer in time"}}),
        "the reason's own template"
    );
    assert!(r.header("server").is_none_or(|s| !s.contains("Pingora")));

    // Counted under their reasons, not as forwarded; the credits went back.
    wait_until("the failures to be counted", Duration::from_secs(5), || {
        metric(
            &kg,
            "keygate_requests_total",
            &[("route", "down"), ("outcome", "upstream_unavailable")],
        ) == 1.0
            && metric(
                &kg,
                "keygate_requests_total",
                &[("route", "silent"), ("outcome", "upstream_timeout")],
            ) == 1.0
    });
    for route in ["down", "silent"] {
        assert_eq!(
            metric(
                &kg,
                "keygate_requests_total",
                &[("route", route), ("outcome", "forwarded")],
            ),
            0.0,
            "{route}"
        );
    }
    assert_eq!(balance(&kg, &account), 10, "nothing charged for no answer");
    // The keygate process and a healthy upstream carry on.
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);
    // Each failure under its upstream and kind; the answered request's upstream time too.
    let errors = |kind| metric(&kg, "keygate_upstream_errors_total", &[("kind", kind)]);
    assert_eq!(errors("connect"), 1.0);
    assert_eq!(errors("timeout"), 1.0);
    assert_eq!(
        metric(
            &kg,
            "keygate_upstream_duration_seconds_count",
            &[("upstream", "api")]
        ),
        1.0
    );
    drop(silent);
}

#[test]
fn upstream_timeouts_are_checked_by_check_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("k.toml");
    std::fs::write(
        &config,
        "[upstreams.bad]\naddress = \"127.0.0.1:9\"\nconnect_timeout_ms = 0\n\n[[routes]]\npath = \"/x\"\nupstream = \"bad\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check-config", "--skip-secrets"])
        .arg(&config)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("upstreams.bad.connect_timeout_ms") && stderr.contains("line 3"),
        "{stderr}"
    );
}
