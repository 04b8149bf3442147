//! Credits through the real binary: charging, 402 when short, refunds for `charge_on =
//! "success"`, no overspending under concurrency (Redis with two replicas, SQLite), the local
//! balance and transaction endpoints, and the metrics.

mod common;

use std::time::Duration;

use common::redis_server::RedisServer;
use common::*;
use serde_json::{json, Value};

// ------------------------------------------------------------------ helpers

const ROUTES: &str = r#"
[[routes]]
name = "info"
path = "/account/info"
local = "balance"

[[routes]]
name = "wallet"
path = "/wallet"
local = "balance"
body = '{"wallet":{"balance":{balance}}}'

[[routes]]
name = "history"
path = "/account/transactions"
local = "transactions"

[[routes]]
name = "v1"
path = "/v1/{*rest}"
upstream = "api"
cost = 1

[[routes]]
name = "on-success"
path = "/success/{*rest}"
upstream = "api"
cost = 5
charge_on = "success"

[[routes]]
name = "on-request"
path = "/request/{*rest}"
upstream = "api"
cost = 5
charge_on = "request"

[[routes]]
name = "limited"
path = "/limited/{*rest}"
upstream = "api"
rate_limit = { requests = 1, per_seconds = 10, burst = 1 }
"#;

fn options(echo: &Echo) -> Options {
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = ROUTES.into();
    opts
}

fn top_up(kg: &Keygate, account: &str, delta: i64) -> i64 {
    let r = kg.admin(
        "POST",
        &format!("/admin/v1/accounts/{account}/credits"),
        Some(json!({ "delta": delta })),
    );
    assert_eq!(r.status, 200, "top up: {}", r.body);
    r.json()["balance"].as_i64().expect("balance")
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

/// The whole ledger, oldest first, paged through 50 at a time.
fn ledger(kg: &Keygate, account: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/admin/v1/accounts/{account}/transactions?limit=50&after={a}"),
            None => format!("/admin/v1/accounts/{account}/transactions?limit=50"),
        };
        let r = kg.admin("GET", &path, None);
        assert_eq!(r.status, 200, "transactions: {}", r.body);
        let v = r.json();
        let page = v["transactions"].as_array().expect("transactions").clone();
        assert!(page.len() <= 50, "page larger than its limit");
        all.extend(page);
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return all,
        }
        assert!(all.len() < 10_000, "paging does not end");
    }
}

/// `(delta, balance_after)` of each entry.
fn deltas(entries: &[Value]) -> Vec<(i64, i64)> {
    entries
        .iter()
        .map(|e| {
            (
                e["delta"].as_i64().expect("delta"),
                e["balance_after"].as_i64().expect("balance_after"),
            )
        })
        .collect()
}

#[track_caller]
fn assert_rejected(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "expected {code}: {}", r.body);
    assert_eq!(r.json()["error"]["code"], code, "{}", r.body);
}

/// The `x-keygate-credits-remaining` header the upstream received.
#[track_caller]
fn credits_seen_upstream(r: &Resp) -> String {
    let v = r.json();
    v["headers"]["x-keygate-credits-remaining"]
        .as_str()
        .unwrap_or_else(|| panic!("the upstream got no credits header: {}", r.body))
        .to_string()
}

// ------------------------------------------------------------------ charging

#[test]
fn insufficient_credits_402_when_short() {
    let echo = Echo::start();
    let kg = Keygate::start(&options(&echo));
    let account = kg.create_account("acme");
    let (key_id, key) = kg.create_key(&account, json!({}));
    assert_eq!(top_up(&kg, &account, 2), 2);

    for expected in ["1", "0"] {
        let r = call(&kg, "/v1/x", &key);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(credits_seen_upstream(&r), expected);
    }
    assert_eq!(echo.hits(), 2);
    let r = call(&kg, "/v1/x", &key);
    assert_rejected(&r, 402, "insufficient_credits");
    assert_eq!(
        echo.hits(),
        2,
        "the upstream must not see an unpaid request"
    );
    assert_eq!(balance(&kg, &account), 0);

    // Topped up: served again.
    assert_eq!(top_up(&kg, &account, 1), 1);
    let r = call(&kg, "/v1/x", &key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(credits_seen_upstream(&r), "0");
    assert_eq!(echo.hits(), 3);

    // The ledger, oldest first: top-up, two charges, (the 402 charged nothing), top-up, charge.
    let entries = ledger(&kg, &account);
    assert_eq!(
        deltas(&entries),
        [(2, 2), (-1, 1), (-1, 0), (1, 1), (-1, 0)],
        "{entries:?}"
    );
    assert!(entries[0]["key_id"].is_null(), "{entries:?}");
    assert_eq!(entries[1]["key_id"], key_id.as_str());
    assert_eq!(entries[2]["key_id"], key_id.as_str());
    assert!(
        entries.iter().all(|e| e["created_at"].is_string()),
        "{entries:?}"
    );
    let ids: Vec<i64> = entries
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "newest last: {ids:?}");
}

#[test]
fn charge_on_success_refunds_non_2xx() {
    let echo = Echo::start();
    let kg = Keygate::start(&options(&echo));
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    assert_eq!(top_up(&kg, &account, 100), 100);

    // The upstream fails: reserved while in flight, given back when the request is done.
    let r = call(&kg, "/success/status/500", &key);
    assert_eq!(
        r.status, 500,
        "the upstream's answer is passed on: {}",
        r.body
    );
    assert_eq!(r.json()["path"], "/success/status/500");
    assert_eq!(credits_seen_upstream(&r), "95");
    wait_until("the refund", Duration::from_secs(5), || {
        balance(&kg, &account) == 100
    });

    // The upstream succeeds: charged for good.
    let r = call(&kg, "/success/status/200", &key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(credits_seen_upstream(&r), "95");
    assert_eq!(balance(&kg, &account), 95);

    // `charge_on = "request"`: a failing upstream keeps the charge.
    let r = call(&kg, "/request/status/500", &key);
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(credits_seen_upstream(&r), "90");
    // A later refunded request: once its refund is in, any refund of the one before would be too.
    let r = call(&kg, "/success/status/503", &key);
    assert_eq!(r.status, 503, "{}", r.body);
    wait_until("the second refund", Duration::from_secs(5), || {
        ledger(&kg, &account).len() == 7
    });
    assert_eq!(balance(&kg, &account), 90);

    let entries = ledger(&kg, &account);
    assert_eq!(
        deltas(&entries),
        [
            (100, 100),
            (-5, 95), // on-success, 500
            (5, 100), // its refund
            (-5, 95), // on-success, 200
            (-5, 90), // on-request, 500: kept
            (-5, 85), // on-success, 503
            (5, 90),  // its refund
        ],
        "{entries:?}"
    );
    assert_eq!(entries[2]["reason"], "refund", "{entries:?}");
    assert_eq!(entries[6]["reason"], "refund", "{entries:?}");
    assert_eq!(echo.hits(), 4);
}

// ------------------------------------------------------------------ no overspending

/// 1000 concurrent requests (50 threads x 20) spread over `replicas`, on an account with exactly
/// 100 credits and a route costing 1.
fn no_overspend(replicas: &[&Keygate], echo: &Echo) {
    let admin = replicas[0];
    let account = admin.create_account("acme");
    let (_, key) = admin.create_key(&account, json!({}));
    assert_eq!(top_up(admin, &account, 100), 100);
    let urls: Vec<String> = replicas.iter().map(|kg| kg.url("/v1/x")).collect();
    let hits_before = echo.hits();

    let threads: Vec<_> = (0..50)
        .map(|t| {
            let urls = urls.clone();
            let auth = bearer(&key);
            // One kept-alive client per thread: 1000 fresh connections from 50 threads can
            // outrun keygate's per-IP connection count on a loaded machine, which then turns
            // new ones away (that limit is tests/security_exhaustion.rs's business, not this).
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .into();
                (0..20)
                    .map(|i| {
                        let req = http::Request::get(&urls[(t * 20 + i) % urls.len()])
                            .header("authorization", &auth)
                            .body(())
                            .expect("request");
                        let mut resp = agent.run(req).expect("request to keygate");
                        let body = resp.body_mut().read_to_string().unwrap_or_default();
                        (resp.status().as_u16(), body)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<(u16, String)> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let short = answers
        .iter()
        .filter(|a| a.0 == 402 && a.1.contains("insufficient_credits"))
        .count();
    let other: Vec<_> = answers
        .iter()
        .filter(|a| a.0 != 200 && a.0 != 402)
        .take(3)
        .collect();
    println!(
        "{} replica(s): {ok} x 200, {short} x 402, others {other:?}",
        replicas.len()
    );
    assert_eq!(ok, 100, "exactly the credits' worth is served");
    assert_eq!(short, 900, "the rest is refused for credits: {other:?}");
    assert_eq!(
        echo.hits() - hits_before,
        100,
        "the upstream saw the paid ones only"
    );
    assert_eq!(balance(admin, &account), 0);
    for kg in replicas {
        assert_eq!(balance(kg, &account), 0);
    }

    let entries = ledger(admin, &account);
    assert_eq!(entries.len(), 101, "one top-up and 100 charges");
    assert_eq!(deltas(&entries[..1]), [(100, 100)]);
    assert!(entries[1..].iter().all(|e| e["delta"] == -1), "{entries:?}");
    let sum: i64 = entries
        .iter()
        .map(|e| e["delta"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(sum, 0);
    // Every balance_after is distinct and the running sum: no two charges read the same balance.
    let mut running = 0;
    for e in &entries {
        running += e["delta"].as_i64().unwrap_or(0);
        assert_eq!(e["balance_after"].as_i64(), Some(running), "{e}");
    }
}

#[test]
fn no_overspend_two_replicas_redis() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let mut opts = Options::redis(echo.addr, &redis.url());
    opts.routes_toml = ROUTES.into();
    let a = Keygate::start(&opts);
    let b = Keygate::start(&opts);
    no_overspend(&[&a, &b], &echo);
}

#[test]
fn no_overspend_sqlite() {
    let echo = Echo::start();
    let kg = Keygate::start(&options(&echo));
    no_overspend(&[&kg], &echo);
}

// ------------------------------------------------------------------ local endpoints

#[test]
fn local_balance_and_transactions_endpoints() {
    let echo = Echo::start();
    let kg = Keygate::start(&options(&echo));
    let acme = kg.create_account("acme");
    let (_, acme_key) = kg.create_key(&acme, json!({}));
    let other = kg.create_account("other");
    let (_, other_key) = kg.create_key(&other, json!({}));
    top_up(&kg, &acme, 7);
    top_up(&kg, &other, 3);
    assert_eq!(call(&kg, "/v1/x", &other_key).status, 200);

    // Default body, Enrow's shape.
    let r = call(&kg, "/account/info", &acme_key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.contains("application/json")),
        "{:?}",
        r.headers
    );
    assert_eq!(r.json(), json!({ "credits": 7 }));
    assert_eq!(
        call(&kg, "/account/info", &other_key).json(),
        json!({ "credits": 2 })
    );
    // A custom body.
    let r = call(&kg, "/wallet", &acme_key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({ "wallet": { "balance": 7 } }));
    // Reading the balance costs nothing.
    assert_eq!(balance(&kg, &acme), 7);

    // The caller's own ledger only.
    let r = call(&kg, "/account/transactions", &acme_key);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        deltas(v["transactions"].as_array().expect("list")),
        [(7, 7)],
        "{v}"
    );
    let r = call(&kg, "/account/transactions", &other_key);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        deltas(v["transactions"].as_array().expect("list")),
        [(3, 3), (-1, 2)],
        "{v}"
    );
    // Paged.
    let r = call(&kg, "/account/transactions?limit=1", &other_key);
    let v = r.json();
    assert_eq!(
        deltas(v["transactions"].as_array().expect("list")),
        [(3, 3)],
        "{v}"
    );
    let next = v["next"].as_str().expect("a next cursor").to_string();
    let v = call(
        &kg,
        &format!("/account/transactions?limit=1&after={next}"),
        &other_key,
    )
    .json();
    assert_eq!(
        deltas(v["transactions"].as_array().expect("list")),
        [(-1, 2)],
        "{v}"
    );

    assert_eq!(echo.hits(), 1, "local endpoints never reach the upstream");

    // A key is needed.
    let r = get(&kg.url("/account/info"), &[]);
    assert_rejected(&r, 401, "missing_credential");
    let r = get(&kg.url("/account/transactions"), &[]);
    assert_rejected(&r, 401, "missing_credential");
    assert_eq!(echo.hits(), 1);
}

// ------------------------------------------------------------------ metrics

#[test]
fn metrics_count_rate_limited_insufficient_credits_and_charges() {
    let echo = Echo::start();
    let kg = Keygate::start(&options(&echo));
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    top_up(&kg, &account, 1);

    assert_eq!(call(&kg, "/limited/x", &key).status, 200);
    assert_rejected(&call(&kg, "/limited/x", &key), 429, "rate_limited");
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);
    assert_rejected(&call(&kg, "/v1/x", &key), 402, "insufficient_credits");

    let requests = "keygate_requests_total";
    assert_eq!(
        metric(
            &kg,
            requests,
            &[("outcome", "rate_limited"), ("route", "limited")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &kg,
            requests,
            &[("outcome", "insufficient_credits"), ("route", "v1")]
        ),
        1.0
    );
    assert_eq!(
        metric(&kg, requests, &[("outcome", "forwarded"), ("route", "v1")]),
        1.0
    );
    assert_eq!(metric(&kg, "keygate_credits_charged_total", &[]), 1.0);
}
