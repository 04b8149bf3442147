//! The access log through the real binary: one line per request at `info`, text or JSON, the
//! fields an operator greps for, never a key, and off when `[log] access = false`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn keygate(log_toml: &str) -> (Echo, Keygate) {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.extra_toml = log_toml.to_string();
    let kg = Keygate::start(&opts);
    (echo, kg)
}

/// The access lines in the log so far.
fn access_lines(kg: &Keygate) -> Vec<String> {
    kg.log()
        .lines()
        .filter(|l| l.contains("keygate::access"))
        .map(str::to_string)
        .collect()
}

fn wait_for_access_lines(kg: &Keygate, n: usize) -> Vec<String> {
    wait_until("the access lines", Duration::from_secs(10), || {
        access_lines(kg).len() >= n
    });
    access_lines(kg)
}

#[test]
fn text_access_lines_name_the_request_and_never_the_key() {
    let (echo, kg) = keygate("");
    let account = kg.create_account("acme");
    let (key_id, key) = kg.create_key(&account, json!({ "name": "k" }));
    assert_eq!(
        call(&kg, "/v1/lookup?email=a@b.example&api_key=x", &key).status,
        200
    );
    assert_eq!(call(&kg, "/v1/lookup", "kg_test_not_a_key").status, 401);
    let lines = wait_for_access_lines(&kg, 2);
    let forwarded = &lines[0];
    for field in [
        " INFO ",
        "method=GET",
        "path=\"/v1/lookup\"",
        "route=\"v1\"",
        "status=200",
        "outcome=\"forwarded\"",
        &format!("key_id=\"{key_id}\""),
        &format!("account_id=\"{account}\""),
        &format!("upstream={}", echo.addr),
        "client_ip=127.0.0.1",
        "request_id=",
        "upstream_ms=",
        "total_ms=",
    ] {
        assert!(forwarded.contains(field), "{field} not in {forwarded}");
    }
    let rejected = &lines[1];
    for field in [
        "status=401",
        "outcome=\"malformed_credential\"",
        "route=\"v1\"",
    ] {
        assert!(rejected.contains(field), "{field} not in {rejected}");
    }
    let log = kg.log();
    assert!(!log.contains(&key), "the key is in the log");
    assert!(
        !log.contains("kg_test_not_a_key"),
        "a presented credential is in the log"
    );
    assert!(
        !log.contains("email=a@b.example"),
        "the query string is in the log"
    );
    // stderr is a file here, not a terminal: no colour codes.
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in a log file");
}

#[test]
fn json_access_lines_are_one_object_per_line() {
    let (_echo, kg) = keygate("[log]\nformat = \"json\"\n");
    let account = kg.create_account("acme");
    let (key_id, key) = kg.create_key(&account, json!({ "name": "k" }));
    let r = call(&kg, "/v1/x", &key);
    assert_eq!(r.status, 200);
    let request_id = r.header("x-request-id").expect("x-request-id").to_string();
    let line = wait_for_access_lines(&kg, 1).remove(0);
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["target"], "keygate::access", "{v}");
    assert_eq!(v["level"], "INFO", "{v}");
    assert_eq!(v["route"], "v1", "{v}");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["outcome"], "forwarded", "{v}");
    assert_eq!(v["key_id"], key_id.as_str(), "{v}");
    assert_eq!(v["account_id"], account.as_str(), "{v}");
    assert_eq!(v["path"], "/v1/x", "{v}");
    assert_eq!(v["request_id"], request_id.as_str(), "{v}");
    assert_eq!(v["client_ip"], "127.0.0.1", "{v}");
    assert!(v["total_ms"].as_f64().is_some(), "{v}");
    assert!(v["timestamp"].is_string(), "{v}");
    // Every line of the log is JSON, not just the access lines.
    for l in kg.log().lines().filter(|l| !l.trim().is_empty()) {
        assert!(serde_json::from_str::<Value>(l).is_ok(), "not JSON: {l}");
    }
}

#[test]
fn access_false_writes_no_access_lines() {
    let (_echo, kg) = keygate("[log]\naccess = false\n");
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({ "name": "k" }));
    for _ in 0..3 {
        assert_eq!(call(&kg, "/v1/x", &key).status, 200);
    }
    // Requests are counted once their line would have been written.
    wait_until(
        "the requests to be counted",
        Duration::from_secs(10),
        || metric(&kg, "keygate_requests_total", &[("route", "v1")]) >= 3.0,
    );
    assert!(access_lines(&kg).is_empty(), "{:?}", access_lines(&kg));
}

/// Requests sent while nothing reads keygate's stderr: a pipe holds 64 KiB, a few hundred access
/// lines. Written on the proxy thread, the line after that blocked it, and every request with
/// it (each of these calls fails after 10 s).
const STALLED_REQUESTS: usize = 2_000;

/// Keygate whose stderr is a pipe the test holds (and may never read).
fn with_stderr_pipe() -> (Echo, Keygate, std::process::ChildStderr) {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.stderr_pipe = true;
    let mut kg = Keygate::start(&opts);
    let stderr = kg.take_stderr().expect("stderr pipe");
    (echo, kg, stderr)
}

#[test]
fn a_stalled_log_reader_holds_no_request_back_and_loses_no_line() {
    let (_echo, mut kg, mut stderr) = with_stderr_pipe();
    for i in 0..STALLED_REQUESTS {
        let r = get(&kg.url(&format!("/open/stalled/{i}")), &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    assert_eq!(
        metric(&kg, "keygate_log_lines_dropped_total", &[]),
        0.0,
        "lines dropped with the queue far from full"
    );
    // The reader comes back: every line is there, in order, then the stop's own line (queued
    // lines are written out before the process exits).
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).expect("read stderr");
        text
    });
    kg.signal("-TERM");
    let status = kg
        .wait_exit(Duration::from_secs(20))
        .expect("keygate stopped after SIGTERM");
    assert!(status.success(), "exit status {status}");
    let text = reader.join().expect("reader thread");
    let paths: Vec<usize> = text
        .lines()
        .filter(|l| l.contains("keygate::access"))
        .filter_map(|l| {
            let rest = &l[l.find("path=\"/open/stalled/")? + "path=\"/open/stalled/".len()..];
            rest[..rest.find('"')?].parse().ok()
        })
        .collect();
    assert_eq!(
        paths,
        (0..STALLED_REQUESTS).collect::<Vec<_>>(),
        "access lines missing or out of order"
    );
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.contains("keygate stopped")),
        "the last line is not the stop's: {:?}",
        text.lines().last()
    );
}

/// stderr's reader gone (a log shipper that died): writes fail with a broken pipe, and keygate
/// goes on serving and stops cleanly.
#[test]
fn a_closed_log_pipe_holds_no_request_back() {
    let (_echo, mut kg, stderr) = with_stderr_pipe();
    drop(stderr);
    for i in 0..500 {
        let r = get(&kg.url(&format!("/open/closed/{i}")), &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    kg.signal("-TERM");
    let status = kg
        .wait_exit(Duration::from_secs(20))
        .expect("keygate stopped after SIGTERM");
    assert!(status.success(), "exit status {status}");
}
