//! Last-used times through the real binary: every key used gets its time written (coalesced
//! and batched off the request path), on SQLite and on Redis, and nothing is dropped.

mod common;

use std::time::Duration;

use common::redis_server::RedisServer;
use common::*;
use serde_json::{json, Value};

const KEYS: usize = 120;

fn last_used(kg: &Keygate, id: &str) -> Value {
    let r = kg.admin("GET", &format!("/admin/v1/keys/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["last_used_at"].clone()
}

/// Uses each of many keys once and waits until every one of them shows a last-used time.
fn every_used_key_is_recorded(kg: &Keygate) {
    let account = kg.create_account("spread");
    let keys: Vec<(String, String)> = (0..KEYS)
        .map(|i| kg.create_key(&account, json!({ "name": format!("k{i}") })))
        .collect();
    let (unused_id, _) = kg.create_key(&account, json!({ "name": "never used" }));
    for (_, key) in &keys {
        let r = get(&kg.url("/v1/x"), &[("authorization", &bearer(key))]);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    wait_until(
        "every used key's last_used_at",
        Duration::from_secs(15),
        || keys.iter().all(|(id, _)| last_used(kg, id).is_string()),
    );
    assert_eq!(last_used(kg, &unused_id), Value::Null);
    assert_eq!(metric(kg, "keygate_last_used_dropped_total", &[]), 0.0);
}

#[test]
fn every_used_key_gets_its_last_used_time_on_sqlite() {
    let echo = Echo::start();
    let kg = Keygate::start(&Options::new(echo.addr));
    every_used_key_is_recorded(&kg);
}

#[test]
fn every_used_key_gets_its_last_used_time_on_redis() {
    let echo = Echo::start();
    let redis = RedisServer::start();
    let kg = Keygate::start(&Options::redis(echo.addr, &redis.url()));
    every_used_key_is_recorded(&kg);
}

#[test]
fn a_key_used_again_after_the_interval_moves_forward_and_survives_a_restart() {
    let echo = Echo::start();
    let mut kg = Keygate::start(&Options::new(echo.addr));
    let account = kg.create_account("again");
    let (id, key) = kg.create_key(&account, json!({}));
    let use_key = |kg: &Keygate| {
        let r = get(&kg.url("/v1/x"), &[("authorization", &bearer(&key))]);
        assert_eq!(r.status, 200, "{}", r.body);
    };
    use_key(&kg);
    let mut first = Value::Null;
    wait_until("the first last_used_at", Duration::from_secs(10), || {
        first = last_used(&kg, &id);
        first.is_string()
    });
    // The test interval is 1 s and the times are whole seconds.
    std::thread::sleep(Duration::from_millis(2100));
    use_key(&kg);
    let mut second = Value::Null;
    wait_until("a later last_used_at", Duration::from_secs(10), || {
        second = last_used(&kg, &id);
        second.as_str() > first.as_str()
    });
    kg.restart();
    assert_eq!(last_used(&kg, &id), second);
}
